"""A starter rules file from a PII scan (``scalingo-staging-sync scan --suggest-rules``). No Airflow here.

Every finding of the scan becomes either

* a column rule with a suggested transformer, chosen from the detectors that fired (name and content)
  and checked against the column's catalog entry the way the planner checks it (type, ``varchar(n)``,
  NOT NULL, unique index), with a YAML comment saying why; or
* for a json/jsonb column, a ``json`` rule on the paths of its sampled documents that hold personal
  data (:func:`json_path_specs`); or
* for a column flagged by its content only (free text holding e-mails...), ``null`` or a constant; or
* a ``pii_scan.allow`` entry with a reason, for a column judged clean: a finding whose only detectors
  are name matches on categories that do not single out a person (``contact.country``); or
* a ``# REVIEW`` comment, when no built-in transformer fits the column: that column stays unmasked
  and the scan keeps failing on it (fail closed) until a rule is written.

The file is meant to be reviewed, then used: it passes ``validate`` and ``load_rules``.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from scalingo_staging_sync.pii import DEFAULT_SAMPLE_ROWS
from scalingo_staging_sync.pii.detectors import describes_a_person, normalize_name
from scalingo_staging_sync.pii.scanner import (
    STATUS_ALLOWED,
    Finding,
    ScanReport,
    documents_with_flagged_keys,
    json_text_shape,
)
from scalingo_staging_sync.tablename import TableName

#: name-detector categories judged clean on their own, with the reason written in the allow-list
CLEAN_CATEGORIES: dict[str, str] = {
    "contact.country": "a country alone does not single out a person (judged clean by --suggest-rules; "
    "mask it with `fixed` if your rows are few per country)",
}

# detector (name pattern or content pattern) -> (transformer spec, why)
_BY_DETECTOR: dict[str, tuple[dict[str, Any], str]] = {
    "contact.email": ({"transformer": "email"}, "e-mail address: keyed e-mail on the reserved domain"),
    "email": ({"transformer": "email"}, "values look like e-mail addresses"),
    "contact.phone": ({"transformer": "phone"}, "phone number: keyed +999 number"),
    "contact.fax": ({"transformer": "phone"}, "fax number: keyed +999 number"),
    "phone_fr": ({"transformer": "phone"}, "values look like French phone numbers"),
    "phone_e164": ({"transformer": "phone"}, "values look like international phone numbers"),
    "contact.address": ({"transformer": "address"}, "postal address line"),
    "contact.postal_code": ({"transformer": "postal_code"}, "postal code"),
    "contact.city": ({"transformer": "city"}, "city: a fictional town"),
    "contact.location_in_person_table": (
        {"transformer": "city"},
        "where a person lives, as typed: a fictional town",
    ),
    "personal.name_in_person_table": ({"transformer": "full_name"}, "a `name` column in a table of people"),
    "personal.cardholder_name": ({"transformer": "full_name"}, "the cardholder's name on a stored card"),
    "personal.company_in_person_table": (
        {"transformer": "company"},
        "a person's company (a sole trader's is named after them): a company name from the built-in lists",
    ),
    "personal.birth": ({"transformer": "date_shift"}, "birth data"),
    "personal.photo": (
        {"transformer": "null"},
        "a person's picture: removed (`fixed` if the column is NOT NULL)",
    ),
    "personal.photo_in_person_table": (
        {"transformer": "null"},
        "a picture in a table of people: removed (`fixed` if the column is NOT NULL)",
    ),
    "identity.national_id": ({"transformer": "hash"}, "national identifier: keyed hash"),
    "identity.document_number_in_person_table": (
        {"transformer": "hash"},
        "the number of a person's identity document: keyed hash",
    ),
    "financial.card": ({"transformer": "hash"}, "payment card data: keyed hash"),
    "card_number": ({"transformer": "hash"}, "values pass the card-number Luhn check"),
    "financial.bank": ({"transformer": "hash"}, "bank account data: keyed hash"),
    "iban": ({"transformer": "hash"}, "values are valid IBANs"),
    "financial.processor_id": ({"transformer": "hash"}, "payment processor id: keyed hash"),
    "financial.processor_id_in_person_table": (
        {"transformer": "hash"},
        "the person's customer id at a payment processor: keyed hash",
    ),
    "personal.login": (
        {"transformer": "hash", "length": 16},
        "a login, a person's handle: keyed hash (16 characters, as a user name's)",
    ),
    "personal.actor": (
        {
            "transformer": "hash",
            "length": 16,
        },  # the length of a user name's (_name_spec): equal logins stay equal
        "who created or changed the row (a login, a name): keyed hash, the same as the login's",
    ),
    "personal.demographic": (
        {"transformer": "null"},
        "gender, nationality, marital status...: removed (a hash would not be one of the values the app accepts)",
    ),
    "identity.provider_uid": ({"transformer": "hash"}, "the person's id at a login provider: keyed hash"),
    "identity.provider_uid_in_person_table": (
        {"transformer": "hash"},
        "a `uid` in a table of people (OmniAuth's id at the login provider, devise_token_auth's e-mail): keyed hash",
    ),
    "identity.sso_external_id": (
        {"transformer": "hash"},
        "the person's id at a single sign-on provider: keyed hash (the same in every table)",
    ),
    "auth.secret": ({"transformer": "hash"}, "secret or credential: keyed hash"),
    "auth.random_key": (
        {"transformer": "hash"},
        "random tokens under the name `key` in a table of people (a key mailed to confirm or cancel): keyed hash",
    ),
    "auth.session_data": (
        {"transformer": "null"},
        "a session store's data (who is logged in and what the session remembers): removed",
    ),
    "auth.session_data_in_session_table": (
        {"transformer": "null"},
        "the data of a sessions table (who is logged in and what the session remembers): removed",
    ),
    "network.ip": (
        {"transformer": "ip"},
        "IP address: a keyed address of the same family in a reserved range",
    ),
    "ipv4": ({"transformer": "ip"}, "values are IP addresses: keyed addresses in a reserved range"),
    "ipv6": ({"transformer": "ip"}, "values are IP addresses: keyed addresses in a reserved range"),
    "jwt": ({"transformer": "hash"}, "values look like JSON Web Tokens"),
    "api_secret": (
        {"transformer": "hash"},
        "values are a service's credentials (a live API key, a private key)",
    ),
    "url_credential": (
        {"transformer": "null"},
        "URLs holding a credential (a token in the query, a password): cleared, so staging does not "
        "call production's endpoints with production's secrets",
    ),
}

#: a content detector that matched fewer than this share of a column's sampled values is weak evidence:
#: beside a name detector it is ignored (2 bcrypt hashes of 1000 looking like phone numbers do not make
#: encrypted_password a phone column); alone, the column is left for review instead of cleared (a
#: checksum column with one phone-like value of 1000 must not be nulled unseen)
WEAK_CONTENT_SHARE = 0.01
#: share of a named column's sampled values a content detector must match to decide its transformer
#: over the name's
NAMED_CONTENT_SHARE = 0.5

# order of preference when several detectors fired: the most specific output first (a secret, named
# so, is hashed whatever its values look like)
_PRIORITY = (
    "auth.secret",
    "contact.email",
    "email",
    "personal.name",
    "personal.name_in_person_table",
    "personal.cardholder_name",
    "contact.phone",
    "contact.fax",
    "phone_fr",
    "phone_e164",
    "contact.address",
    "contact.postal_code",
    "contact.city",
    "contact.location_in_person_table",
    "personal.birth",
)


@dataclass
class Suggestion:
    column_id: str  # schema.table.column
    table: TableName
    column: str
    finding: str  # the scan's reason text (detectors, sampled counts)
    spec: dict[str, Any] | None = None  # transformer spec, or None
    why: str = ""
    allow_reason: str | None = None  # set when judged clean
    review: str | None = None  # set when no transformer fits
    #: set for a generated column whose sources are all masked: PostgreSQL recomputes it (a comment)
    recomputed_from: list[str] | None = None
    #: the kinds of the finding's reasons (name, content, json_key, copy)
    reason_kinds: tuple[str, ...] = ()
    #: the table rule's condition: only the rows of a table of settings that hold a secret are masked
    condition: str | None = None
    #: why the rows outside ``condition`` keep their values (a ``pii_scan.allow`` entry)
    outside_reason: str | None = None


@dataclass
class SuggestedRules:
    suggestions: list[Suggestion] = field(default_factory=list)

    @property
    def masked(self) -> list[Suggestion]:
        return [s for s in self.suggestions if s.spec is not None]

    @property
    def allowed(self) -> list[Suggestion]:
        return [s for s in self.suggestions if s.allow_reason is not None]

    @property
    def review(self) -> list[Suggestion]:
        return [s for s in self.suggestions if s.review is not None]

    @property
    def recomputed(self) -> list[Suggestion]:
        return [s for s in self.suggestions if s.recomputed_from is not None]


def _name_spec(column: str) -> tuple[dict[str, Any], str]:
    tokens = set(re.split(r"[^a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", column).lower()))
    if tokens & {"first", "given", "firstname", "givenname", "prenom", "prenoms", "vorname"}:
        return {"transformer": "first_name"}, "first name: a name from the built-in list"
    if tokens & {
        "last", "family", "surname", "lastname", "familyname", "maiden",
        "famille", "naissance", "usage", "nachname", "apellido", "apellidos",
    }:  # fmt: skip
        return {"transformer": "last_name"}, "last name: a name from the built-in list"
    if tokens & {"username", "nickname", "nick", "user"}:
        return {"transformer": "hash", "length": 16}, "user name or handle: keyed hash"
    return {"transformer": "full_name"}, "person name: '<first> <last>' from the built-in lists"


def _by_priority(detectors: Iterable[str]) -> list[str]:
    """``detectors`` in :data:`_PRIORITY` order, the others after them in their own order."""
    return sorted(detectors, key=lambda d: _PRIORITY.index(d) if d in _PRIORITY else len(_PRIORITY))


#: a ``mac`` token in a column or key name: a MAC address, not an IP or street address
_MAC_RE = re.compile(r"(?:^|_)mac(?:_|$)")


def _no_street_for_a_network_address(detectors: list[str], name: str) -> list[str]:
    """``detectors`` without ``contact.address`` where "address" names an IP or MAC address (a column or
    a JSON key ``ip_address``, ``ipAddress``, ``mac_address``; IP addresses found in the values): no
    street line."""
    if _MAC_RE.search(normalize_name(name)) or {"network.ip", "ipv4", "ipv6"} & set(detectors):
        return [d for d in detectors if d != "contact.address"]
    return detectors


#: last name tokens of a column holding a digest of what its name starts with (a hash of the e-mail)
_DIGEST_TOKENS = frozenset({"hash", "digest", "sha1", "sha256", "sha512", "md5", "checksum"})


def _detector_spec(detector: str, name: str) -> tuple[dict[str, Any], str] | None:
    """The transformer spec (a copy) and why that ``detector``, fired on the column or JSON key
    ``name``, suggests, or None."""
    if normalize_name(name).rsplit("_", 1)[-1] in _DIGEST_TOKENS:  # Mastodon's canonical_email_hash
        return {"transformer": "hash"}, "a digest of personal data (still a pseudonym): keyed hash"
    if detector == "personal.name":
        return _name_spec(name)
    if detector == "personal.name_in_person_table" and normalize_name(name) in ("nom", "noms"):
        return {"transformer": "last_name"}, "`nom` in a table of people: the family name (beside `prenom`)"
    if detector == "personal.birth" and {"place", "city", "lieu", "ville", "town"} & set(
        normalize_name(name).split("_")
    ):
        return {"transformer": "city"}, "place of birth: a fictional town"
    if detector == "network.ip" and _MAC_RE.search(normalize_name(name)):
        return {"transformer": "hash"}, "MAC address: keyed hash"
    if detector in _BY_DETECTOR:
        spec, why = _BY_DETECTOR[detector]
        return dict(spec), why
    return None


def _names_copied(finding: Finding, sampled: int) -> bool:
    """Whether ``finding`` is only a copy of people's names in at least half of the sampled values (no
    e-mail) of a column named for names (``name``, ``names``): django-oscar's ``payment_bankcard.name``,
    the cardholder's, is better masked as a name than cleared."""
    if [r["kind"] for r in finding.reasons] != ["copy"]:
        return False
    copy = finding.reasons[0]
    named = {"name", "names"} & set(normalize_name(finding.column).split("_"))
    return bool(named) and not copy.get("emails") and int(copy.get("names") or 0) * 2 >= sampled


#: name tokens of a column holding one identifier per row, built from a person's name by the app (a
#: slug "jean-dupont", a handle, an uploaded file's name): copies there are hashed, not cleared, so
#: the values stay distinct and the same in every table (friendly_id's users.slug and its history)
_IDENTIFIER_TOKENS = frozenset(
    {"slug", "slugs", "permalink", "handle", "username", "login", "nickname", "filename", "file_name"}
)


#: an identifier made of names is short (a document without a space is not one)
_IDENTIFIER_MAX_CHARS = 255


def _one_word(value: str) -> bool:
    """A value an identifier could be: one word (no white space) of at most
    :data:`_IDENTIFIER_MAX_CHARS` characters, not a JSON document."""
    text = value.strip()
    return (
        bool(text)
        and len(text) <= _IDENTIFIER_MAX_CHARS
        and not any(ch.isspace() for ch in text)
        and text[0] not in "{["
    )


def _copied_identifier(
    finding: Finding, info: Any, catalog: Any, values: Sequence[str] | None = None
) -> dict[str, Any] | None:
    """A keyed hash for a column whose only finding is copies of people's names or e-mail addresses
    and that is named as an identifier (users.slug "jean-dupont") or whose sampled ``values`` are all
    one word each (Matrix user ids "@julie.martin:example.org" in Synapse's ``events.sender``,
    ``room_memberships.user_id``...: the key of a person in a hundred tables), or None. The same
    keyed hash in every table keeps equal values equal, so the tables still join."""
    if [r["kind"] for r in finding.reasons] != ["copy"] or info.category != "string":
        return None
    tokens = set(normalize_name(finding.column).split("_"))
    present = [v for v in values or () if v and v.strip()]
    one_word = bool(present) and all(_one_word(v) for v in present)  # compact JSON: no identifier
    if not (tokens & _IDENTIFIER_TOKENS or normalize_name(finding.column) in _IDENTIFIER_TOKENS or one_word):
        return None
    spec = _hash_for(info)
    return spec if _fits(spec, info, catalog) else None


def _fallback(info: Any, values: Sequence[str] | None = None) -> tuple[dict[str, Any] | None, str]:
    """A value that removes the data when no specific transformer fits. A NOT NULL text column whose
    sampled ``values`` are all JSON objects (arrays) gets an empty one, so the app still decodes it
    (Laravel's ``notifications.data``); '' would not be a document."""
    if not info.not_null:
        return {"transformer": "null"}, "no specific transformer fits this column: NULL"
    if info.base_type == "tsvector":  # Discourse's user_search_data.search_data: the app rebuilds it
        return {
            "transformer": "fixed",
            "value": "",
        }, "a search index of personal data: emptied (reindex staging)"
    if info.category == "string":
        shape = json_text_shape(values or ())
        if shape is not None and (info.max_length is None or info.max_length >= 2):
            kind = "object" if shape == "{}" else "array"
            return {"transformer": "fixed", "value": shape}, (
                f"NOT NULL text column holding JSON documents: an empty {kind}"
            )
        return {"transformer": "fixed", "value": ""}, "NOT NULL column, no specific transformer fits: ''"
    if info.category == "number":
        return {"transformer": "fixed", "value": 0}, "NOT NULL number column: 0"
    if info.category == "date":
        return {"transformer": "date_shift"}, "NOT NULL date column: shifted"
    if info.category == "json":  # pretix's checkoutsession.session_data jsonb NOT NULL
        return {"transformer": "fixed", "value": "{}"}, "NOT NULL json column: an empty object"
    if info.base_type == "uuid":  # refused by the planner where the column is unique
        return {"transformer": "fixed", "value": _NIL_UUID}, "NOT NULL uuid column: the nil UUID"
    return None, ""


_NIL_UUID = "00000000-0000-0000-0000-000000000000"


def _text_documents(values: Sequence[str]) -> list[Any] | None:
    """The parsed documents of a text column's sampled whole ``values`` when every non-empty one is a
    JSON object or array, else None."""
    present = [v for v in values if v and v.strip()]
    if not present or json_text_shape(present) is None:
        return None
    try:
        return [json.loads(v) for v in present]
    except ValueError:
        return None


def _fits(spec: Mapping[str, Any], info: Any, catalog: Any) -> bool:
    """Whether the planner would accept ``spec`` on this column: the planner's own column check (the
    transformer's type check, NOT NULL, unique keys with enough hash bits, depended-on columns) and its
    domain's CHECK constraints: an output a CHECK rejects (``email`` under ``CHECK (VALUE LIKE
    '%@corp.test')``), or that it cannot be evaluated on without a server (a keyed hash), is not
    suggested; the planner would refuse the first and warn that the second may fail the load. The
    same for a table CHECK on the column alone (AdventureWorks' ``upper(gender) = ANY (...)``), except
    for a shifted date: a range CHECK (``birthdate >= '1930-01-01'``) is named in the rule's comment
    (:func:`_date_check_note`) instead, since no date transformer's output can be evaluated."""
    from scalingo_staging_sync.anonymize.planner import _check_columns, _check_constraint_problems

    specs = {info.name: spec}
    doubts: list[str] = []
    table_doubts: list[str] = []
    return (
        not _check_columns(None, catalog, specs, info.name)
        and not _check_constraint_problems(catalog, specs, info.name, doubts, table_doubts)
        and not doubts
        and (not table_doubts or spec.get("transformer") == "date_shift")
    )


def _date_check_note(spec: Mapping[str, Any], info: Any, catalog: Any) -> str:
    """For a ``date_shift`` on a column under a table CHECK: what to check by hand."""
    if spec.get("transformer") != "date_shift" or catalog is None:
        return ""
    names = [n for n, _d in catalog.column_checks(info.name)]
    if not names:
        return ""
    return (
        f"; CHECK {', '.join(names)} bounds it: a date shifted out of its range fails the load "
        "(lower max_days, or mask it another way)"
    )


def _hash_for(info: Any) -> dict[str, Any]:
    """A keyed hash that fits the column: hex, or base64url where a varchar(11) to (15) holds too few hex
    characters to keep a unique index (AdventureWorks' nationalidnumber varchar(15): 90 bits, not 60)."""
    length = 32
    if info.max_length is not None:
        length = max(8, min(32, info.max_length))
    if 11 <= length < 16:
        return {"transformer": "hash", "encoding": "base64url", "length": length}
    return {"transformer": "hash", "length": length}


#: share of a column's sampled values that must be only an e-mail address (a phone number, an IP
#: address) for a column named for nothing to be masked as one
WHOLE_VALUE_SHARE = 0.9


#: content detectors that find a secret: beside a key/value finding, they come from the same rows
_SECRET_CONTENT = ("api_secret", "jwt")


def _secret_rows(finding: Finding, info: Any, catalog: Any, s: Suggestion) -> bool:
    """A table of settings whose secrets sit in the rows of some keys (Keycloak's ``component_config``:
    ``bindCredential``, ``privateKey``): its value column is hashed in those rows only (the table
    rule's condition), and the other rows, settings the staging app needs (an LDAP URL, a key's
    size), are allowed outside it. Not when the column holds anything else a detector found (an
    e-mail address in an SMTP configuration): then the whole column is masked, as any."""
    kv = [r for r in finding.reasons if r["kind"] == "key_value"]
    if not kv or info.category != "string":
        return False
    if any(r["kind"] != "key_value" and r.get("detector") not in _SECRET_CONTENT for r in finding.reasons):
        return False
    spec = _hash_for(info)
    if not _fits(spec, info, catalog):
        return False
    keys = sorted({k for r in kv for k in r["keys"]})
    column = '"' + kv[0]["key_column"].replace('"', '""') + '"'
    literals = ", ".join("'" + k.replace("'", "''") + "'" for k in keys)
    s.spec = spec
    s.condition = f"{column} IN ({literals})"
    s.why = (
        f"a table of settings: the values of {', '.join(keys)} are secrets, keyed hash in those rows only "
        "(the rule's condition; review the keys)"
    )
    s.outside_reason = (
        f"a table of settings: the rows outside the rule's condition ({s.condition}) hold settings the "
        "staging app needs, not secrets"
    )
    return True


def _deciding_content(finding: Finding) -> set[str]:
    """The content detectors of a named ``finding`` that match at least :data:`NAMED_CONTENT_SHARE`
    of its sampled values and have a whole-value form: they decide its transformer over the name's
    when the values are only that content."""
    if not any(r["kind"] == "name" for r in finding.reasons):
        return set()
    sampled = max(int(finding.sampled_values or 0), 1)
    return {
        r["detector"]
        for r in finding.reasons
        if r["kind"] == "content"
        and r["detector"] in _WHOLE_VALUE
        and r.get("matches", 0) / sampled >= NAMED_CONTENT_SHARE
    }


def _whole_value_spec(
    finding: Finding, values: Sequence[str] | None, info: Any, catalog: Any
) -> tuple[dict[str, Any], str] | None:
    """The transformer of a content detector whose match is the whole value in nearly all the sampled
    ``values`` of a column named for nothing (ahoy_email's ``ahoy_messages.to``: recipients' e-mail
    addresses, masked as e-mail addresses so they stay the same as the users' own), or None."""
    from scalingo_staging_sync.pii.detectors import detect_in_value

    present = [v.strip() for v in values or () if v and v.strip()]
    if not present:
        return None
    content = {r["detector"] for r in finding.reasons if r["kind"] == "content"}
    for detector in _by_priority(content):
        whole = _WHOLE_VALUE.get(detector)
        if whole is None or detector not in _BY_DETECTOR:
            continue
        hits = sum(1 for v in present if whole.fullmatch(v) and detector in detect_in_value(v))
        if hits >= WHOLE_VALUE_SHARE * len(present):
            spec, why = _BY_DETECTOR[detector]
            spec = _hash_for(info) if spec["transformer"] == "hash" else dict(spec)
            fitting = _fitting(spec, info, catalog)
            if fitting is not None:
                why = why if fitting == spec else _unique_why(fitting)
                return fitting, f"{hits} of {len(present)} sampled values are only that: {why}"
    return None


def _check_values(info: Any, catalog: Any) -> list[tuple[dict[str, Any], str]]:
    """``fixed`` values from the string constants of the CHECK constraints on the column alone (its
    domain's, its table's): AdventureWorks' ``CHECK (upper(gender) = ANY (ARRAY['M', 'F']))`` on a
    ``NOT NULL`` column rejects '', and accepts 'M'. The caller keeps the first the CHECKs accept."""
    from scalingo_staging_sync.anonymize.planner import _domain_check_expression, check_equality_values

    if catalog is None:
        return []
    expressions = [_domain_check_expression(d) for _n, d in catalog.column_checks(info.name)]
    expressions += [e for _d, _n, e in catalog.domain_checks.get(info.name, ())]
    values = dict.fromkeys(v for e in expressions for v in check_equality_values(e))
    return [
        ({"transformer": "fixed", "value": v}, "NOT NULL column under a CHECK: a value the CHECK accepts")
        for v in values
    ]


def _unique_why(spec: Mapping[str, Any]) -> str:
    from scalingo_staging_sync.anonymize.transformers import options_of, options_text

    return (
        f"under a unique index: {spec['transformer']} with {options_text(options_of(spec))}, which keeps "
        "distinct values "
        "distinct (its output range differs: see the transformer's reference)"
    )


def _fitting(spec: Mapping[str, Any], info: Any, catalog: Any) -> dict[str, Any] | None:
    """``spec`` when the planner would accept it on this column, else its form that keeps distinct
    values distinct when that one fits (``ip`` with ``unique: true`` under Mastodon's unique
    ``ip_blocks.ip``), else None."""
    if _fits(spec, info, catalog):
        return dict(spec)
    from scalingo_staging_sync.anonymize.transformers import get_transformer

    name = spec.get("transformer")
    options = get_transformer(name).unique_options if isinstance(name, str) else None
    if options:
        variant = {**spec, **options}
        if _fits(variant, info, catalog):
            return variant
    return None


def suggest_for(
    finding: Finding,
    catalog: Any,
    documents: Sequence[Any] | None = None,
    values: Sequence[str] | None = None,
    copies: Any = None,
) -> Suggestion:
    """The suggestion for one finding; ``catalog`` is :class:`~..planner.TableCatalog` (or None);
    ``documents``: sampled values of a json/jsonb column, parsed (see :func:`json_path_specs`);
    ``values``: sampled values of a text column found by its content alone; ``copies``: the scan's
    :class:`~..pii.scanner.CopyIndex` (JSON keys holding copies of people's names)."""
    table = TableName(finding.schema, finding.table)
    s = Suggestion(finding.qualified_name, table, finding.column, finding.reason)
    s.reason_kinds = tuple(r["kind"] for r in finding.reasons)
    if finding.status == STATUS_ALLOWED and finding.allow_reason:
        # allowed by the scan itself (a migration tool's bookkeeping) or by the --rules allow-list
        s.allow_reason = finding.allow_reason
        return s
    detectors = [r["detector"] for r in finding.reasons]
    names = [r for r in finding.reasons if r["kind"] == "name"]
    if names and len(names) == len(finding.reasons) and all(r["detector"] in CLEAN_CATEGORIES for r in names):
        s.allow_reason = "; ".join(dict.fromkeys(CLEAN_CATEGORIES[r["detector"]] for r in names))
        return s
    info = catalog.columns.get(finding.column) if catalog is not None else None
    if info is None:
        s.review = "not an ordinary table column (a materialized view?): mask its source table instead"
        return s
    if info.generated:
        s.review = "generated column: it is recomputed from its sources; mask those"
        return s
    if _secret_rows(finding, info, catalog, s):
        return s
    in_text = info.category == "string" and not documents and values is not None
    if in_text:  # a text column holding JSON documents (a Rails `serialize` column): masked at its paths
        documents = _text_documents(values)
    if documents and info.category in ("json", "string"):
        paths, problem = json_path_specs(documents, copies)
        if paths and not problem:
            spec = {"transformer": "json", "paths": paths}
            if _fits(spec, info, catalog):
                s.spec = spec
                s.why = (
                    f"JSON documents{' in text' if in_text else ''}: the values at {', '.join(paths)} look "
                    f"like personal data in the {len(documents)} sampled documents (other keys are kept; "
                    "review the paths)"
                )
                return s
        if problem and not in_text:  # in text, the whole value can still be cleared (below)
            s.review = f"{problem}: write a query or a json rule by hand; until then the scan fails on it"
            return s
    candidates: list[tuple[dict[str, Any], str]] = []
    sampled = max(int(finding.sampled_values or 0), 1)
    weak = [
        r
        for r in finding.reasons
        if r["kind"] == "content" and r.get("matches", 0) / sampled < WEAK_CONTENT_SHARE
    ]
    if names:  # the name says what the column is: look-alike values in under half the sampled ones
        # do not override it (Mastodon's identities.uid: an e-mail address for some providers)
        detectors = [
            r["detector"]
            for r in finding.reasons
            if r["kind"] != "content" or r.get("matches", 0) / sampled >= NAMED_CONTENT_SHARE
        ]
        # ... nor do values that only hold it in a longer text (a session's JSON holding an e-mail
        # address is no e-mail address): the content decides when it is the whole of most values
        present = [v.strip() for v in values or () if v and v.strip()]
        if present:
            detectors = [
                d
                for d in detectors
                if d not in _deciding_content(finding)
                or sum(1 for v in present if _WHOLE_VALUE[d].fullmatch(v))
                >= NAMED_CONTENT_SHARE * len(present)
            ]
        detectors = _no_street_for_a_network_address(detectors, finding.column)
        # IP addresses in under half of the values (version numbers in a user agent): not an IP column
        ips = sum(r.get("matches", 0) for r in finding.reasons if r["detector"] in ("ipv4", "ipv6"))
        if ips * 2 < sampled:
            detectors = [d for d in detectors if d not in ("ipv4", "ipv6")]
    elif weak and len(weak) == len(finding.reasons):
        matched = ", ".join(f"{r['detector']} {r.get('matches', 0)}" for r in weak)
        s.review = (
            f"only a few of {sampled} sampled values matched ({matched}) and the name says nothing: personal "
            "data in some values (free text), or look-alikes (a checksum, a code)? Mask it (null, fixed, a "
            "query) or allow it with a reason; until then the scan fails on it"
        )
        return s
    if not names:  # found by content only: free text that holds e-mails, phones...: cleared, not reshaped
        whole_spec = _whole_value_spec(finding, values, info, catalog)
        if whole_spec is not None:  # ... unless each value is only that: reshaped as that
            s.spec, s.why = whole_spec
            return s
        if _names_copied(finding, sampled) and _fits({"transformer": "full_name"}, info, catalog):
            s.spec = {"transformer": "full_name"}  # a cardholder's `name`: names, reshaped as names
            s.why = (
                "a column named for names whose values are mostly copies of the masked people's names: "
                "a full name from the built-in lists"
            )
            return s
        identifier = _copied_identifier(finding, info, catalog, values)
        if identifier is not None:
            s.spec = identifier
            s.why = (
                "an identifier made of people's names (a slug, a handle, a file name): keyed hash, "
                "distinct values stay distinct and equal ones equal in every table"
            )
            return s
        spec, why = _fallback(info, values)
        if spec is not None and _fits(spec, info, catalog):
            s.spec, s.why = spec, f"free text holding personal data (the name says nothing): {why}"
            return s
        # the content was not the whole value (checked above): an e-mail transformer would turn every
        # value into an address (GoTrue's identities.provider_id, an e-mail in 2 % of its rows); a
        # keyed hash keeps distinct values distinct where clearing cannot (unique, NOT NULL)
        detectors = [r["detector"] for r in finding.reasons if r["kind"] != "content"]
    for detector in _by_priority(detectors):
        chosen = _detector_spec(detector, finding.column)
        if chosen is not None:
            spec, why = chosen
            if detector in _BY_DETECTOR and spec["transformer"] == "hash" and "length" not in spec:
                spec = _hash_for(info)
            candidates.append((spec, why))
    if info.category == "date" and not any(c[0]["transformer"] == "date_shift" for c in candidates):
        candidates.append(({"transformer": "date_shift"}, "date tied to a person: shifted by up to a year"))
    if info.category == "string" and json_text_shape(values or ()) is not None:
        # JSON documents in a NOT NULL text column (Keycloak's sessions' data): an empty document the
        # app can still parse, before a hash it cannot
        candidates.append(_fallback(info, values))
    if info.category == "string":
        candidates.append((_hash_for(info), "keyed hash (a unique-safe fallback)"))
    candidates.append(_fallback(info, values))
    candidates += _check_values(info, catalog)
    for spec, why in candidates:
        fitting = _fitting(spec, info, catalog) if spec is not None else None
        if fitting is not None:
            s.spec = fitting
            s.why = (why if fitting == spec else _unique_why(fitting)) + _date_check_note(
                fitting, info, catalog
            )
            return s
    s.review = (
        f"no built-in transformer fits {info.type_sql}{' NOT NULL' if info.not_null else ''}: "
        "write a rule (a custom strategy or a query) before the first run; until then the scan fails on it"
    )
    return s


#: values read per column by :func:`suggest_rules` (whole, drawn from the whole table): five times the
#: scan's sample, so that a key in a few documents of a thousand (Synapse's room names in
#: ``event_json``, 40 of 6,376 events) has been seen; the run's gate samples as many as the scan
JSON_SAMPLE_ROWS = 5 * DEFAULT_SAMPLE_ROWS


def suggest_rules(
    conn: Any, report: ScanReport, *, json_sample_rows: int = JSON_SAMPLE_ROWS, copies: Any = None
) -> SuggestedRules:
    """One :class:`Suggestion` per finding of ``report`` (scanned through ``conn``). A json/jsonb
    column's documents are sampled again (``json_sample_rows``, whole: the scan's samples are cut) to
    find the paths that hold personal data (with ``copies``, the scan's
    :class:`~..pii.scanner.CopyIndex`, also those holding copies of people's names and e-mails); a
    text column found by its content alone, to see whether its values are only that content."""
    from scalingo_staging_sync.anonymize.planner import read_table

    catalogs: dict[tuple[str, str], Any] = {}
    out = SuggestedRules()
    for finding in sorted(report.findings, key=lambda f: (f.schema, f.table, f.column)):
        key = (finding.schema, finding.table)
        if key not in catalogs:
            catalogs[key] = read_table(conn, *key)
        info = catalogs[key].columns.get(finding.column) if catalogs[key] is not None else None
        documents = values = None
        if info is not None and info.category == "json" and not finding.allow_reason:
            documents = _sample_documents(conn, finding, json_sample_rows)
        elif (
            info is not None
            and info.category in ("string", "inet")
            and not finding.allow_reason
            and (
                # found by its content, copies or keys alone: is each value that content (an address
                # column), or text holding it, or a JSON document to mask at its paths?
                all(r["kind"] != "name" for r in finding.reasons)
                # named, and a content detector that could decide the transformer over the name's: is
                # each value that content, or text holding it (Keycloak's sessions' data: JSON)?
                or bool(_deciding_content(finding))
                # copies of people's names only: identifiers made of them (one word each), or text?
                or all(r["kind"] == "copy" for r in finding.reasons)
                # keys of JSON documents held as text: masked at their paths
                or any(r["kind"] == "json_key" for r in finding.reasons)
            )
        ):
            values = _sample_texts(conn, finding, json_sample_rows)
            if json_text_shape(values or ()) is not None:  # JSON documents in text: and those of rare keys
                values += documents_with_flagged_keys(
                    conn, finding.schema, finding.table, finding.column, seen=values
                )
        out.suggestions.append(suggest_for(finding, catalogs[key], documents, values, copies))
    _recomputed(out, catalogs)
    _conditions_alone(out)
    _implied_references(conn, out, catalogs, report.schemas)
    _foreign_key_partners(conn, out, catalogs)
    return out


def _take_rule(
    conn: Any,
    out: SuggestedRules,
    catalogs: dict[tuple[str, str], Any],
    by_column: dict[tuple[TableName, str], Suggestion],
    table: TableName,
    column: str,
    source: Suggestion,
    why: str,
) -> bool:
    """``source``'s rule for ``table.column`` (a new suggestion when it has none), with ``why``; False
    when the column cannot take it (the planner names that)."""
    from scalingo_staging_sync.anonymize.planner import read_table

    key = (table.schema, table.name)
    if key not in catalogs:
        catalogs[key] = read_table(conn, *key)
    info = catalogs[key].columns.get(column) if catalogs[key] is not None else None
    if info is None or not _fits(source.spec, info, catalogs[key]):
        return False
    s = by_column.get((table, column))
    if s is None:
        s = Suggestion(
            column_id=f"{table}.{column}", table=table, column=column, finding="no finding of its own"
        )
        out.suggestions.append(s)
        by_column[(table, column)] = s
    s.spec, s.review, s.allow_reason = dict(source.spec or {}), None, None
    s.why = why
    return True


#: an implied reference: sampled values of a column compared with the masked keys', and the fewest
#: characters each must have (a short value, "admin", could be anything's)
_REFERENCE_SAMPLE = 200
_REFERENCE_MIN_CHARS = 6


def _implied_references(
    conn: Any, out: SuggestedRules, catalogs: dict[tuple[str, str], Any], schemas: Sequence[str] = ()
) -> None:
    """A column without a foreign key whose values are those of a key masked with a keyed ``hash`` gets
    the same rule: Synapse names its people by ids in a hundred tables with few foreign keys, and a
    table too small for the scan to see copies of names in it (``user_reports.user_id``, 5 rows)
    kept them. The key: a single-column primary key or unique index of a string column; the column:
    a text column with no suggestion of its own, whose sampled non-empty values (up to 200) are all
    the key's and each of 6 characters or more, among the tables the scan reads (``schemas``, all when
    empty; not a partition: its root's rule covers it). A query that fails is skipped."""
    from psycopg import sql

    from scalingo_staging_sync.pii.scanner import list_tables

    keys = []
    for s in out.masked:
        catalog = catalogs.get((s.table.schema, s.table.name))
        if s.condition is not None or (s.spec or {}).get("transformer") != "hash" or catalog is None:
            continue
        info = catalog.columns.get(s.column)
        unique = catalog.primary_key == [s.column] or any(
            cols == [s.column] for _n, cols in catalog.unique_indexes
        )
        if info is not None and info.category == "string" and unique:
            keys.append(s)
    if not keys:
        return
    by_column = {(s.table, s.column): s for s in out.suggestions}
    try:
        tables = list_tables(conn, list(schemas) or None)
    except Exception:  # noqa: BLE001 - no inference: the scan and the planner still judge the columns
        return
    columns = [
        (t.schema, t.name, c.name)
        for t in tables
        if t.relkind == "r" and t.root is None
        for c in t.columns
        if c.type_name == "text" or c.type_name.startswith("character varying")
    ]
    for schema, table_name, column in columns:
        table = TableName(schema, table_name)
        if (table, column) in by_column:
            continue
        value = sql.SQL("s.v")
        found = [
            sql.SQL("count(*) FILTER (WHERE EXISTS (SELECT 1 FROM {} k WHERE k.{} = {}))").format(
                sql.Identifier(key.table.schema, key.table.name), sql.Identifier(key.column), value
            )
            for key in keys
        ]
        query = sql.SQL(
            "SELECT count(*), count(*) FILTER (WHERE length(s.v) < {}), {} FROM "
            "(SELECT {} AS v FROM ONLY {} WHERE {} IS NOT NULL AND {} <> '' LIMIT {}) AS s"
        ).format(
            sql.Literal(_REFERENCE_MIN_CHARS),
            sql.SQL(", ").join(found),
            sql.Identifier(column),
            sql.Identifier(schema, table_name),
            sql.Identifier(column),
            sql.Identifier(column),
            sql.Literal(_REFERENCE_SAMPLE),
        )
        try:
            with conn.transaction():
                total, short, *hits = conn.execute(query).fetchone()
        except Exception:  # noqa: BLE001 - skipped: the scan and the planner still judge the column
            continue
        if not total or short:
            continue
        source = next((key for key, n in zip(keys, hits, strict=True) if n == total), None)
        if source is not None:
            _take_rule(
                conn,
                out,
                catalogs,
                by_column,
                table,
                column,
                source,
                f"its values are {source.column_id}'s (no foreign key says so): masked alike, so they "
                "still match",
            )


def _foreign_key_partners(conn: Any, out: SuggestedRules, catalogs: dict[tuple[str, str], Any]) -> None:
    """Both sides of a foreign key masked alike: a column referencing a masked key (or referenced by a
    masked column) gets the same rule, so the masked values still match (Synapse's
    ``thread_subscriptions.user_id``, ``REFERENCES users (name)``, in a table too empty for the scan
    to find anything); where both are masked differently, the referencing side takes the referenced
    side's rule. The planner refuses a foreign key masked on one side only, naming it; a rule the
    other column cannot take (too short a ``varchar``) is left for it to name."""
    from scalingo_staging_sync.anonymize.planner import read_foreign_keys

    try:
        keys = read_foreign_keys(conn)
    except Exception:  # noqa: BLE001 - the planner names what the rules miss
        return
    by_column = {(s.table, s.column): s for s in out.suggestions}

    def masked(s: Suggestion | None) -> bool:
        return s is not None and s.spec is not None and s.condition is None

    def take(table: TableName, column: str, source: Suggestion, fk: str) -> bool:
        why = f"foreign key {fk} to {source.column_id}: masked alike, so the masked values still match"
        return _take_rule(conn, out, catalogs, by_column, table, column, source, why)

    # a chain of keys (a -> b -> c) takes as many rounds as it has links; bounded, so that a column
    # referencing two keys masked differently cannot swing between their rules for ever
    for _round in range(len(keys) + 1):
        changed = False
        for fk in keys:
            child, parent = fk.table, fk.references
            for column, ref_column in zip(fk.columns, fk.ref_columns, strict=False):
                mine, theirs = by_column.get((child, column)), by_column.get((parent, ref_column))
                if masked(theirs) and (not masked(mine) or mine.spec != theirs.spec):
                    changed |= take(child, column, theirs, fk.name)
                elif masked(mine) and not masked(theirs) and (theirs is None or theirs.condition is None):
                    changed |= take(parent, ref_column, mine, fk.name)
        if not changed:
            break


def _conditions_alone(out: SuggestedRules) -> None:
    """A condition is the whole table rule's: beside another masked column of the same table it would
    leave that one unmasked outside it, so the table's secret rows are masked in the whole column."""
    masked: dict[TableName, int] = {}
    for s in out.masked:
        masked[s.table] = masked.get(s.table, 0) + 1
    for s in out.masked:
        if s.condition is not None and masked[s.table] > 1:
            s.condition = s.outside_reason = None
            s.why += "; the whole column, since other columns of the table are masked too"


def _recomputed(out: SuggestedRules, catalogs: Mapping[tuple[str, str], Any]) -> None:
    """A generated column left for review whose sources the suggested rules all mask is recomputed
    from the masked values (GoTrue's ``auth.identities.email``, from ``identity_data``; the planner
    lists it with the masked columns): a comment, not a review. One flagged by its name alone whose
    sources hold nothing the scan found (AdventureWorks' ``customer.accountnumber``, ``'AW' ||
    lpad(customerid)``) holds nothing more than they do: allowed, with that reason."""
    masked: dict[tuple[str, str], set[str]] = {}
    for s in out.masked:
        masked.setdefault((s.table.schema, s.table.name), set()).add(s.column)
    found = {(s.table.schema, s.table.name, s.column) for s in out.suggestions}
    for s in out.suggestions:
        if s.review is None or catalogs.get((s.table.schema, s.table.name)) is None:
            continue
        catalog = catalogs[(s.table.schema, s.table.name)]
        info = catalog.columns.get(s.column)
        sources = list(catalog.generated_from.get(s.column) or [])
        if info is not None and info.generated and sources:
            if set(sources) <= masked.get((s.table.schema, s.table.name), set()):
                s.review, s.recomputed_from = None, sources
            elif (
                s.reason_kinds
                and all(kind == "name" for kind in s.reason_kinds)
                and not any((s.table.schema, s.table.name, c) in found for c in sources)
            ):
                s.review = None
                s.allow_reason = (
                    f"generated from {', '.join(sources)}, in which the scan found no personal data: "
                    "it holds nothing more than they do"
                )


def _sample_texts(conn: Any, finding: Finding, rows: int) -> list[str]:
    """Whole values of the finding's column, drawn from the whole table as the scan draws its sample
    (not its first rows: a key or a form that only the newest rows hold would get no rule)."""
    from scalingo_staging_sync.pii.scanner import sample_column

    return sample_column(conn, finding.schema, finding.table, finding.column, rows)


def _sample_documents(conn: Any, finding: Finding, rows: int) -> list[Any]:
    """The sampled documents, and those holding a key a name detector flags that may be rare
    (:func:`~..pii.scanner.documents_with_flagged_keys`)."""
    texts = _sample_texts(conn, finding, rows)
    texts += documents_with_flagged_keys(conn, finding.schema, finding.table, finding.column, seen=texts)
    return [json.loads(text) for text in texts]


#: a flagged value this long or longer makes another value of its document that quotes it a path
#: (shorter ones, "Paris", "true", are in too many texts by chance)
_COPIED_MIN_CHARS = 8


#: content detectors whose match is the whole value, when the value is only that: masked with the
#: detector's transformer; any other match inside a JSON string (free text) is cleared (JSON null)
_WHOLE_VALUE = {
    "email": re.compile(r"[^\s\"'<>()\[\]{},;]+@[^\s\"'<>()\[\]{},;@]+"),  # not ["a@b.c"]: JSON
    "phone_fr": re.compile(r"[+0-9 ().-]+"),
    "phone_e164": re.compile(r"[+0-9 ().-]+"),
    "iban": re.compile(r"[A-Za-z0-9 ]+"),
    "card_number": re.compile(r"[0-9 -]+"),
    "ipv4": re.compile(r"[0-9.]+(?:/\d{1,2})?"),
    "ipv6": re.compile(r"[0-9A-Fa-f:.]+(?:/\d{1,3})?"),
    "jwt": re.compile(r"\S+"),
    "api_secret": re.compile(r"\S+"),
}


def _key_holds_personal_data(key: str, copies: Any) -> bool:
    """Whether a JSON object's key is personal data: an e-mail address, or (with the scan's
    :class:`~..pii.scanner.CopyIndex`) a copy of a person's name or e-mail address (a Matrix id
    keying a map of direct chats, a signature)."""
    from scalingo_staging_sync.pii.detectors import detect_in_value

    if "email" in detect_in_value(key):
        return True
    if copies is None:
        return False
    n_emails, n_names, _ = copies.matches([key])
    return bool(n_emails or n_names)


@dataclass
class _DocumentValues:
    """One document's string values, as :func:`json_path_specs` walks it."""

    #: values given a path (stripped, case-folded; long enough to be quoted) -> their transformer
    flagged: dict[str, str] = field(default_factory=dict)
    #: the other string values and their paths
    plain: list[tuple[str, list[str]]] = field(default_factory=list)


def json_path_specs(documents: Sequence[Any], copies: Any = None) -> tuple[dict[str, str], str | None]:
    """The ``json`` transformer's ``paths`` for sampled documents: each string value whose key's name
    (as a column name would be judged) or content looks like personal data gets a path (keys joined
    by '.', ``*`` for the elements of an array) and a transformer of a text value: the key's name
    decides first (``email`` -> email, ``first_name`` -> first_name...), then a content match that
    is the whole value (an e-mail address -> email, an IBAN -> hash), else ``null`` (free text
    holding personal data is cleared). A key holding '.' is quoted (``"owner.email"``). Returns
    ``(paths, problem)``: ``problem`` names what a path cannot express (a key "" or "*", personal data
    at the document's root, three nested arrays). With ``copies`` (the scan's
    :class:`~..pii.scanner.CopyIndex`), a value holding a copy of a person's name or e-mail address
    gets a path too, under a key named for nothing (an analytics event's ``{"query": "Jean Dupont"}``,
    a notification's message naming its author): ``full_name`` when the value is that name alone,
    else ``null``."""
    from scalingo_staging_sync.anonymize.transformers import ColumnInfo, get_transformer, json_path_text
    from scalingo_staging_sync.fingerprint import MAX_PHRASE_WORDS, words
    from scalingo_staging_sync.pii.detectors import (
        detect_in_value,
        is_a_setting_or_time_for,
        json_key_patterns,
    )

    text = ColumnInfo(name="value", type_sql="text", base_type="text")
    found: dict[str, list[str]] = {}  # path -> the transformer chosen for each value seen there
    seen: dict[str, int] = {}  # path -> string values seen there, flagged or not
    by_content: dict[str, set[str]] = {}  # path -> transformers chosen for a value wholly that
    keys_at: dict[tuple[str, ...], set[str]] = {}  # path of an object -> the keys seen in it
    as_list: dict[str, list[str]] = {}  # path text -> its keys
    problems: list[str] = []
    personal_keys: dict[str, bool] = {}  # key -> whether it is personal data (the same keys recur)

    def personal_key(key: str) -> bool:
        if key not in personal_keys:
            personal_keys[key] = _key_holds_personal_data(key, copies)
        return personal_keys[key]

    def leaf(value: str, path: list[str], unnamable: bool, person: bool, document: _DocumentValues) -> None:
        key = next((p for p in reversed(path) if p != "*"), "")
        # in an object that describes a person, "name" and "picture" are that person's, as in a table
        # of people (a login provider's profile: {"email", "given_name", "name", "picture"})
        names = (
            [p.name for p in json_key_patterns(key, person) if not is_a_setting_or_time_for(p, value)]
            if key
            else []
        )
        content = detect_in_value(value)
        copied = ""
        if path and not unnamable:
            seen[json_path_text(path)] = seen.get(json_path_text(path), 0) + 1
            as_list[json_path_text(path)] = list(path)
        if not names and not content:
            n_emails, n_names, _ = copies.matches([value]) if copies is not None else (0, 0, [])
            if not n_emails and not n_names:
                if path and not unnamable and path.count("*") <= 2:
                    document.plain.append((value, path))
                return
            alone = n_names and not n_emails and 2 <= len(words(value)) <= MAX_PHRASE_WORDS
            # an identifier made of a name (a Matrix id "@julie.martin:server" in an event's sender):
            # the keyed hash the columns holding it get, so that equal ids stay equal; other text, and
            # a URL holding a slug, cleared
            identifier = not n_emails and _one_word(value) and "/" not in value
            copied = "full_name" if alone else "hash" if identifier else "null"
        if not path:
            problems.append("the document itself is a string holding personal data")
            return
        if unnamable or path.count("*") > 2:
            problems.append(f"the value under {path!r} cannot be named by a json path")
            return
        spec = copied
        for detector in _by_priority(_no_street_for_a_network_address(names, key)):
            chosen = _detector_spec(detector, key)
            if chosen is not None:
                spec = chosen[0]["transformer"]
                break
        if not spec and content:
            whole = [d for d in content if d in _WHOLE_VALUE and _WHOLE_VALUE[d].fullmatch(value.strip())]
            spec = _BY_DETECTOR[whole[0]][0]["transformer"] if whole else "null"
            if whole:
                by_content.setdefault(json_path_text(path), set()).add(spec)
        spec = spec or "null"
        if spec != "null" and get_transformer(spec).check(text, {}):
            spec = "null"  # does not apply to a text value (a birth date: date_shift)
        found.setdefault(json_path_text(path), []).append(spec)
        if len(value.strip()) >= _COPIED_MIN_CHARS:
            document.flagged[value.strip().casefold()] = spec

    def walk(value: Any, path: list[str], unnamable: bool, person: bool, document: _DocumentValues) -> None:
        if isinstance(value, dict):
            if not unnamable:
                keys_at.setdefault(tuple(path), set()).update(str(k) for k in value)
            held = next((str(k) for k in value if personal_key(str(k))), None)
            if held is not None:  # a path masks values, never keys (Matrix's m.direct {"@ann:server": [...]})
                where = f"under {json_path_text(path)!r}" if path else "at its root"
                problems.append(f"a key of the documents {where} holds personal data (a key is never masked)")
            person = describes_a_person(value)
            for k, v in value.items():  # a key "" or "*" has no path (quoted, "*" is not a key)
                walk(v, [*path, str(k)], unnamable or str(k) in ("", "*"), person, document)
        elif isinstance(value, list):
            for v in value:
                walk(v, [*path, "*"], unnamable, person, document)
        elif isinstance(value, str):
            leaf(value, path, unnamable, person, document)

    for parsed in documents:
        values = _DocumentValues()
        walk(parsed, [], False, False, values)
        # a value quoting another of the same document's flagged values is as personal: a webhook
        # attachment's fallback "Nouveau ticket de Alain Gimenez" beside its author_name
        for value, path in values.plain:
            folded = value.strip().casefold()
            quoted = next((f for f in values.flagged if f in folded), None)
            if quoted is not None:
                found.setdefault(json_path_text(path), []).append(
                    values.flagged[quoted] if folded == quoted else "null"
                )
    if problems:
        return {}, problems[0]
    # a path seen with several transformers (an e-mail here, free text there): the one most often
    # chosen, null on a tie (it clears whatever the value is)
    paths: dict[str, str] = {}
    for path, specs in sorted(found.items()):
        ranked = sorted(set(specs), key=lambda t: (-specs.count(t), t != "null"))
        paths[path] = ranked[0]
        if ranked[0] in by_content.get(path, ()) and specs.count(ranked[0]) * 2 < seen.get(path, 0):
            # wholly an e-mail address in under half of the values seen there (GoTrue's identity_data
            # "sub": a provider's user id, an address for some): a keyed hash, not an address for all
            paths[path] = "hash"
    _every_locale(paths, as_list, keys_at)
    return dict(sorted(paths.items())), None


#: language codes a translations map is keyed by (Decidim's {"ca": ..., "es": ...}, Mobility's, i18n's):
#: ISO 639-1 codes of languages apps are translated into, without those that are common words or
#: names of other keys (``id``, ``to``, ``or``, ``as``, ``in``, ``is``, ``at``, ``on``...)
_LANGUAGES = frozenset(
    """
    af am ar az bg bn br bs ca co cs cy da de el en eo es et eu fa fi fr fy ga gd gl gu ha he hi hr ht hu
    hy ig it ja jv ka kk km kn ko ku ky la lb lo lt lv mg mi mk ml mn mr ms mt nb ne nl nn no oc pa pl ps
    pt ro ru rw sd si sk sl sm sn sq sr st su sv sw ta te tg th tk tl tr tt ug uk ur uz vi wo xh yi yo
    zh zu
    """.split()
)
_REGION_RE = re.compile(r"(?:[-_](?:[A-Z]{2}|[A-Za-z]{4}))?")


def _is_language(key: str) -> bool:
    """``key`` is a language code, with a region or a script (``pt_BR``, ``zh-Hant``) or without."""
    return key[:2] in _LANGUAGES and _REGION_RE.fullmatch(key[2:]) is not None


#: a key suffixed with a language code (Decidim's content blocks' settings: body_ca, body_es)
_LOCALE_SUFFIX_RE = re.compile(r"(.+)_([a-z]{2}(?:[-_](?:[A-Z]{2}|[A-Za-z]{4}))?)")


def _translations(prefix: tuple[str, ...], keys_at: Mapping[tuple[str, ...], set[str]]) -> list[list[str]]:
    """The members of a translations map at ``prefix``: its language-code keys, and the language-code
    keys of a sibling object made of those only (Decidim's ``machine_translations``: ``{"ca": ...,
    "machine_translations": {"es": ...}}``), as key lists; [] when it has fewer than two."""
    keys = keys_at.get(prefix, set())
    languages = {k for k in keys if _is_language(k)}
    nested = []
    for k in sorted(keys - languages):
        inner = keys_at.get((*prefix, k), set())
        if inner and all(_is_language(x) for x in inner):
            nested.append(k)
            languages |= inner
    # every language seen in the map stands for the nested one too, and the other way round (a path
    # missing in a document is left as it is)
    members = [[lang] for lang in sorted(languages)] + [
        [k, lang] for k in nested for lang in sorted(languages)
    ]
    return members if len(languages) >= 2 else []


def _every_locale(
    paths: dict[str, str], as_list: Mapping[str, list[str]], keys_at: Mapping[tuple[str, ...], set[str]]
) -> None:
    """A path through one language of a translations map stands for every language seen there:
    Decidim's comments hold the same free text under ``ca``, ``es``, ``en`` and
    ``machine_translations.*``, its content blocks under ``body_ca``, ``body_es``, and the sampled
    documents quoted an e-mail address under one or two of them only."""
    from scalingo_staging_sync.anonymize.transformers import json_path_text

    for text, spec in list(paths.items()):
        path = as_list.get(text)
        if not path:
            continue
        for i in range(len(path)):
            prefix = tuple(path[:i])
            members = _translations(prefix, keys_at)
            width = next((len(m) for m in members if path[i : i + len(m)] == m), 0)
            if width:
                variants = [[*prefix, *m, *path[i + width :]] for m in members]
            else:
                suffixed = _LOCALE_SUFFIX_RE.fullmatch(path[i])
                if suffixed is None:
                    continue
                stem = suffixed.group(1)
                if not _is_language(suffixed.group(2)):
                    continue
                siblings = sorted(
                    k
                    for k in keys_at.get(prefix, set())
                    if (m := _LOCALE_SUFFIX_RE.fullmatch(k)) is not None
                    and m.group(1) == stem
                    and _is_language(m.group(2))
                )
                if len(siblings) < 2:
                    continue
                variants = [[*prefix, k, *path[i + 1 :]] for k in siblings]
            for variant in variants:
                paths.setdefault(json_path_text(variant), spec)
            break


_PLAIN_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _key(text: str) -> str:
    return (
        text
        if _PLAIN_RE.fullmatch(text)
        and text.lower() not in ("null", "true", "false", "yes", "no", "on", "off")
        else json.dumps(text)
    )


def _scalar(value: Any) -> str:
    return json.dumps(value)  # JSON scalars are valid YAML flow scalars


def _comment(text: str) -> str:
    return " ".join(text.split())


def render_rules_yaml(
    suggested: SuggestedRules,
    *,
    source_app: str,
    target_app: str | None = None,
    database: str = "",
    generated_at: _dt.datetime | None = None,
) -> str:
    """The starter rules file (YAML with comments)."""
    when = (generated_at or _dt.datetime.now(_dt.timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Starter anonymization rules written by `scalingo-staging-sync scan --suggest-rules`",
        f"# from a PII scan of {database or 'the database'} on {when}.",
        "# Review every entry, then check it with `scalingo-staging-sync validate <this file>`.",
        "# Each rule's comment gives the scan's finding (detectors and sampled matches) and why that",
        "# transformer was chosen; `scalingo-staging-sync transformers` lists them all.",
        f"source_app: {_scalar(source_app)}",
        f"target_app: {_scalar(target_app)}" if target_app else "# target_app: my-staging-app",
        "",
    ]
    by_table: dict[str, list[Suggestion]] = {}
    for s in suggested.masked:
        by_table.setdefault(str(s.table), []).append(s)
    if by_table:
        lines.append("anonymization_tables:")
        for table, items in by_table.items():
            lines.append(f"  - table: {_scalar(table)}")
            condition = next((s.condition for s in items if s.condition), None)
            if condition:
                lines.append(f"    condition: {_scalar(condition)}")
            lines.append("    columns:")
            for s in items:
                lines.append(f"      # {_comment(s.finding)} -> {_comment(s.why)}")
                spec = dict(s.spec or {})
                name = spec.pop("transformer")
                if spec:
                    opts = ", ".join(f"{_key(k)}: {_scalar(v)}" for k, v in spec.items())
                    lines.append(f"      {_key(s.column)}: {{transformer: {name}, {opts}}}")
                else:
                    lines.append(f"      {_key(s.column)}: {name}")
    else:
        lines.append("anonymization_tables: []")
    lines.append("")
    for s in suggested.review:
        lines.append(f"# REVIEW {s.column_id} ({_comment(s.finding)}): {_comment(s.review or '')}")
    if suggested.review:
        lines.append("")
    for s in suggested.recomputed:
        lines.append(
            f"# {s.column_id} ({_comment(s.finding)}): generated from {', '.join(s.recomputed_from or [])}, "
            "masked above: PostgreSQL recomputes it from the masked values (the PII gate counts it as masked)"
        )
    if suggested.recomputed:
        lines.append("")
    lines.append("pii_scan:")
    lines.append("  on_unmasked: fail")
    outside = [s for s in suggested.masked if s.outside_reason]
    if suggested.allowed or outside:
        lines.append("  allow:")
        for s in suggested.allowed:
            lines.append(f"    - column: {_scalar(s.column_id)}")
            lines.append(f"      reason: {_scalar(_comment(s.finding) + ': ' + (s.allow_reason or ''))}")
        for s in outside:
            lines.append(f"    - column: {_scalar(s.column_id)}")
            lines.append(f"      reason: {_scalar(_comment(s.outside_reason or ''))}")
    else:
        lines.append("  allow: []")
    return "\n".join(lines) + "\n"


def summary_lines(suggested: SuggestedRules) -> Sequence[str]:
    return [
        f"{len(suggested.masked)} column(s) masked, {len(suggested.allowed)} allowed as clean, "
        f"{len(suggested.review)} to review by hand"
    ]
