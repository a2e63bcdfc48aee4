"""PII detectors: by column name (tokenised) and by content (regexes plus checksums).

No Airflow, no database: pure functions over names and sampled strings, so they are unit-testable
and reusable.

Column names are *tokenised* before matching: split on any non-alphanumeric character and on
camelCase boundaries, lower-cased, and joined with ``_`` (``userEmail`` -> ``user_email``,
``IPAddress`` -> ``ip_address``). Name patterns then match whole tokens, so ``phone_number``,
``user_email``, ``birth_date`` and ``password_digest`` are caught, which the original gem's
``\\b(...)\\b`` patterns missed (``\\b`` treats ``_`` as a word character).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

SEVERITIES = ("low", "medium", "high")
_SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}


def severity_rank(severity: str) -> int:
    return _SEVERITY_RANK.get(severity, 0)


def max_severity(severities: Iterable[str]) -> str:
    best = "low"
    for severity in severities:
        if severity_rank(severity) > severity_rank(best):
            best = severity
    return best


def _check_severity(severity: str) -> str:
    if severity not in _SEVERITY_RANK:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    return severity


# --------------------------------------------------------------------------------------------------
# Column names
# --------------------------------------------------------------------------------------------------

_CAMEL_1 = re.compile(r"([A-Z]+)([A-Z][a-z])")
_CAMEL_2 = re.compile(r"([a-z0-9])([A-Z])")
_NON_ALNUM = re.compile(r"[^A-Za-z0-9]+")


def tokenize_name(name: str) -> list[str]:
    """``"userEmail"`` -> ``["user", "email"]``; ``"IPAddress"`` -> ``["ip", "address"]``; a word glued
    in lower case is split as its camelCase spelling would be (:func:`unglued`): ``"nationalidnumber"``
    -> ``["national", "id", "number"]``."""
    spaced = _CAMEL_2.sub(r"\1_\2", _CAMEL_1.sub(r"\1_\2", name))
    return [part for token in _NON_ALNUM.split(spaced) if token for part in unglued(token.lower())]


#: the short words a glued name is split into besides the name detectors' own words of four letters
#: or more (shorter ones such as ``age``, ``pin`` or ``tin`` hide in too many words: ``postage``)
_GLUE_SHORT_WORDS = frozenset(
    {"id", "ids", "num", "no", "nr", "ip", "by", "of", "tax", "vat", "key", "day", "uid", "otp", "mfa", "totp"}
)  # fmt: skip
#: words of the names a glued name is made of that no name detector holds
_GLUE_EXTRA_WORDS = frozenset(
    {
        "hash", "salt", "digest", "number", "code", "line", "status", "type", "date", "month", "year",
        "first", "last", "middle", "given", "family", "full", "display", "user", "home", "work", "business",
        "primary", "billing", "shipping", "contact", "person", "customer", "employee", "client", "owner",
        "holder", "member", "approval", "expiry", "remote", "current", "sign", "signin", "verified",
        "confirmed", "unconfirmed", "encrypted", "reset", "recovery", "backup", "confirmation",
        "invitation", "auth", "authentication", "provider", "external", "value", "address", "addresses",
        "login", "logon", "account", "private", "public", "access", "refresh", "session", "national",
        "social", "security", "identity", "alternate", "additional", "emergency", "personal", "mobile",
        "email",
    }
)  # fmt: skip


@functools.cache
def _glue_vocabulary() -> frozenset[str]:
    words = {w for p in DEFAULT_NAME_PATTERNS for w in re.findall(r"[a-z]+", p.regex) if len(w) >= 4}
    return frozenset(words | _GLUE_SHORT_WORDS | _GLUE_EXTRA_WORDS)


@functools.lru_cache(maxsize=16384)
def unglued(token: str) -> tuple[str, ...]:
    """A lower-case token split into the words it glues together, as its camelCase spelling would
    be: SQL Server schemas ported to PostgreSQL lower-case their PascalCase names (AdventureWorks'
    ``NationalIDNumber`` is ``nationalidnumber``, ``PasswordHash`` ``passwordhash``, ``AddressLine1``
    ``addressline1``), and legacy schemas write ``postalcode``, ``phonenumber``. Only when every part
    is a word of the name detectors (or of :data:`_GLUE_EXTRA_WORDS`), the fewest parts; trailing
    digits stay with the last part (``address``, ``line1``); a word of its own is kept whole."""
    stem = token.rstrip("0123456789")
    vocabulary = _glue_vocabulary()
    if len(stem) < 5 or not stem.isascii() or not stem.isalpha() or stem in vocabulary:
        return (token,)
    # best[i]: the fewest words that make stem[:i], and the split that gives them
    best: list[tuple[str, ...] | None] = [()] + [None] * len(stem)
    for end in range(2, len(stem) + 1):
        for start in range(max(0, end - 24), end - 1):
            head = best[start]
            if head is not None and stem[start:end] in vocabulary:
                candidate = (*head, stem[start:end])
                if best[end] is None or len(candidate) < len(best[end]):  # type: ignore[arg-type]
                    best[end] = candidate
    parts = best[len(stem)]
    if parts is None or len(parts) < 2:
        return (token,)
    return (*parts[:-1], parts[-1] + token[len(stem) :])


def normalize_name(name: str) -> str:
    """Tokens joined with ``_``: the string name patterns are matched against."""
    return "_".join(tokenize_name(name))


def _tokens(words: str) -> str:
    """Alternation of token sequences, bounded by token edges: ``"email|e_mail"``."""
    return rf"(?:^|_)(?:{words})(?:_|$)"


@dataclass(frozen=True)
class NamePattern:
    """A column-name detector. ``regex`` is searched in the normalised name (see module doc)."""

    name: str  # e.g. "contact.email"
    regex: str
    category: str
    severity: str
    # Only match when the *table* name holds one of these tokens (for ambiguous names like ``name``).
    table_tokens: tuple[str, ...] = ()
    compiled: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_severity(self.severity)
        object.__setattr__(self, "compiled", re.compile(self.regex, re.IGNORECASE))

    def matches(self, normalized_column: str, table_tokens: Sequence[str] = ()) -> bool:
        if not self.compiled.search(normalized_column):
            return False
        if not self.table_tokens:
            return True
        if self.table_tokens is _PERSON_TABLES:
            return is_people_table(table_tokens)
        return any(token in self.table_tokens for token in table_tokens)


#: last tokens of a table *about* people, not of them: ASP.NET's ``AspNetUserTokens`` (whose ``Name``
#: is "AuthenticatorKey"), ``user_roles``, ``customer_groups``, ``member_settings``
_ABOUT_PEOPLE_TOKENS = frozenset(
    {
        "token", "tokens", "role", "roles", "claim", "claims", "permission", "permissions", "group", "groups",
        "setting", "settings", "preference", "preferences", "type", "types", "category", "categories",
        "tag", "tags", "scope", "scopes", "provider", "providers", "plan", "plans", "level", "levels",
        "status", "statuses", "state", "states", "right", "rights", "policy", "policies", "template",
        "templates", "feature", "features", "flag", "flags", "option", "options", "segment", "segments",
        "attribute", "attributes", "attr", "attrs", "meta", "metadata", "property", "properties",
        "field", "fields", "label", "labels",
        # a configuration or a mapping of accounts (Keycloak's user_federation_config, _mapper)
        "config", "configs", "configuration", "configurations", "mapper", "mappers",
    }
)  # fmt: skip


def is_people_table(table_tokens: Sequence[str]) -> bool:
    """Whether a table of these name tokens (:func:`tokenize_name`; the token ``person`` added by
    :func:`table_of_people`) holds people: one of its tokens names people (``users``,
    ``customer_profiles``), unless its last one says the table is about something of theirs
    (``user_roles``, ``AspNetUserTokens``)."""
    tokens = list(table_tokens)
    if "person" in tokens:
        return True
    if tokens and tokens[-1] in _ABOUT_PEOPLE_TOKENS:
        return False
    return any(token in _PERSON_TABLES for token in tokens)


_PERSON_TABLES = (
    "user",
    "users",
    "customer",
    "customers",
    "client",
    "clients",
    "employee",
    "employees",
    "person",
    "persons",
    "people",
    "member",
    "members",
    "contact",
    "contacts",
    "profile",
    "profiles",
    "patient",
    "patients",
    "account",
    "accounts",
    "author",
    "authors",
    "guest",
    "guests",
    "student",
    "students",
    "driver",
    "drivers",
    "owner",
    "owners",
    "tenant",
    "tenants",
    "subscriber",
    "subscribers",
    "applicant",
    "applicants",
    "candidate",
    "candidates",
    "staff",
    "staffs",
    "worker",
    "workers",
    "volunteer",
    "volunteers",
    "teacher",
    "teachers",
    # an address's name is the addressee's (pretix's invoiceaddress.name_cached, an order's billing address)
    "address",
    "addresses",
    "invoiceaddress",
    "billingaddress",
    "shippingaddress",
    "useraddress",
    # French (Scalingo's own market): utilisateur, adhérent, salarié, employé, élève, étudiant...
    "utilisateur",
    "utilisateurs",
    "adherent",
    "adherents",
    "membre",
    "membres",
    "personne",
    "personnes",
    "salarie",
    "salaries",
    "employe",
    "employes",
    "eleve",
    "eleves",
    "etudiant",
    "etudiants",
    "candidat",
    "candidats",
    "locataire",
    "locataires",
    "proprietaire",
    "proprietaires",
    "benevole",
    "benevoles",
    "beneficiaire",
    "beneficiaires",
    "abonne",
    "abonnes",
    "inscrit",
    "inscrits",
)

# (name, token regex, category, severity). Documented in docs/rules.md, "PII scan detectors".
DEFAULT_NAME_PATTERNS: tuple[NamePattern, ...] = (
    # identity
    NamePattern(
        "identity.national_id",
        _tokens(
            r"ssn|nir|social_security|tax_id|tax_number|tin|vat_number|vat_id|vat_no|vatin|passport|passport_number"
            r"|driver_license|drivers_license|driving_licence|driving_license|national_id|id_card"
            r"|identity_card|identity_number|securite_sociale|secu|num_secu|numero_secu"
            r"|identification_id|identification_number|id_number|ssnid|ssn_id"
            # German Steuer-ID, Italian codice fiscale, Spanish NIF/DNI, Dutch BSN, Polish PESEL,
            # Brazilian CPF, a UK National Insurance number
            r"|steuer_id|steuerid|steuernummer|steuer_nummer|steueridentifikationsnummer|codice_fiscale"
            r"|nif|dni|bsn|pesel|cpf|national_insurance|national_insurance_number|ni_number"
            # an identity document's number (Spanish NIE, Decidim's id documents)
            r"|nie|id_document_number|identity_document_number|numero_documento|numero_de_documento"
        ),
        "identity",
        "high",
    ),
    # a person's account at a login provider (OmniAuth's users.provider + users.uid, devise_token_auth's
    # uid, which is the e-mail address): it names them at Google, Facebook, GitHub...
    NamePattern(
        "identity.provider_uid",
        r"(?:^|_)(?:google|facebook|fb|github|gitlab|twitter|apple|linkedin|microsoft|azure|okta|auth0"
        r"|keycloak|omniauth|sso|openid|oidc)_(?:uid|id|user_id|sub|subject)(?:_|$)"
        r"|(?:^|_)provider_(?:account_id|user_id|uid|sub|key)(?:_|$)",  # Auth.js, ASP.NET Identity
        "identity",
        "medium",
    ),
    # a text `uid` in a table of people or of their login identities (Devise/OmniAuth's users.uid,
    # Mastodon's identities(provider, uid)): the person's id at the provider
    NamePattern(
        "identity.provider_uid_in_person_table",
        r"^uid$",
        "identity",
        "medium",
        (*_PERSON_TABLES, "identity", "identities", "authentication", "authentications", "omniauth"),
    ),
    # the person's id at a single sign-on provider, in its records (Discourse's
    # single_sign_on_records.external_id)
    NamePattern(
        "identity.sso_external_id",
        r"^(?:external_id|external_uid|external_user_id)$",
        "identity",
        "medium",
        ("sso", "saml", "oauth", "oidc", "single"),
    ),
    # the account's id at the identity provider a user logs in through (Keycloak's
    # federated_identity.federated_user_id, a Google subject "1432770171830197216"; its broker_link)
    NamePattern(
        "identity.sso_external_id",
        r"^(?:federated_user_id|broker_user_id|idp_user_id|idp_subject|federated_subject)$",
        "identity",
        "medium",
    ),
    # contact
    NamePattern("contact.email", _tokens(r"e_?mail|emails|mail|courriel|correo"), "contact", "high"),
    NamePattern(
        "contact.phone",
        _tokens(r"phone|phones|telephone|tel|mobile|cellphone|msisdn|portable|telefon|telefono|handy"),
        "contact",
        "high",
    ),
    NamePattern("contact.fax", _tokens(r"fax"), "contact", "medium"),
    NamePattern(
        "contact.address",
        _tokens(
            r"address|addresses|addr|street|street_address|address_line(?:_?\d)?|line_?\d|address_?\d|addr_?\d"
            r"|street_?\d|adresse|adresses|rue|strasse|direccion"
        ),
        "contact",
        "high",
    ),
    NamePattern(
        "contact.postal_code",
        _tokens(r"postal_code|post_code|postal|postcode|zip_code|zipcode|zip|plz"),
        "contact",
        "medium",
    ),
    NamePattern(
        "contact.city",
        _tokens(r"city|town|birthplace|birth_place|ville|commune|localite|ciudad|stadt"),
        "contact",
        "low",
    ),
    NamePattern("contact.country", _tokens(r"country|pays"), "contact", "low"),
    # where a person lives, as they typed it (Chatwoot's contacts.location "Chauvet-sur-Mer, France",
    # Discourse's user_profiles.location): a city at least
    NamePattern(
        "contact.location_in_person_table",
        r"^(?:location|user_location|home_location|locality|hometown|home_town|residence|lieu_de_residence)$",
        "contact",
        "low",
        _PERSON_TABLES,
    ),
    NamePattern("location.geo", _tokens(r"latitude|longitude|lat|lng|lon|geolocation"), "location", "medium"),
    # personal
    NamePattern(
        "personal.name",
        _tokens(
            r"first_name|last_name|full_name|middle_name|maiden_name|given_name|family_name|surname"
            r"|firstname|lastname|fullname|givenname|familyname|maiden|nickname|nick_name|display_name|displayname"
            r"|username|user_name|contact_name|customer_name|client_name|holder_name|cardholder_name"
            r"|owner_name|patient_name|employee_name|member_name|billing_name|shipping_name|recipient_name"
            # French, German, Spanish: prénom, nom de famille / de naissance / d'usage, Vorname...
            r"|prenom|prenoms|nom_famille|nom_de_famille|nom_naissance|nom_usage|nom_complet|vorname"
            r"|nachname|apellido|apellidos"
            # a person's full name by another name (Odoo's complete_name), a relative's, an emergency contact's
            r"|complete_name|spouse_name|spouse_complete_name|emergency_contact|emergency_contact_name|next_of_kin"
            # the name of a person by their role, and its cached copy (pretix's attendee_name_cached)
            r"|(?:attendee|payer|buyer|purchaser|sender|participant|passenger|beneficiary|invitee|speaker"
            r"|guest|student|tenant|signatory|invoice_to|addressee|person|user"
            # who wrote, reported, asked for or reviewed something (a webhook attachment's author_name)
            r"|author|reporter|assignee|requester|submitter|reviewer|commenter)_name(?:_cached)?"
            r"|payer|payer_name"
        ),
        "personal",
        "high",
    ),
    # a login is a person's handle (JHipster's jhi_user.login "jdupont12"); it does not make its table
    # one of people (a server's SSH login)
    NamePattern(
        "personal.login", _tokens(r"user_login|login_name|login_id|loginid") + r"|^login$", "personal", "high"
    ),
    # who did it: the login or name of the user who created or changed a row (Spring Data's
    # @CreatedBy, JHipster's created_by / last_modified_by, its audit events' principal, PaperTrail's
    # whodunnit); a text column only (a number there is a user id)
    NamePattern(
        "personal.actor",
        _tokens(
            r"created_by|updated_by|modified_by|last_modified_by|deleted_by|changed_by|performed_by"
            r"|whodunnit"
        )
        + r"|^principal$",
        "personal",
        "medium",
    ),
    # the number of a person's identity document, in a table (or a JSON object) about people
    # (Decidim's users.extended_data {"phone", "document_number"}); elsewhere an invoice's number
    NamePattern(
        "identity.document_number_in_person_table",
        r"^(?:document_number|document_no|doc_number|numero_document)$",
        "identity",
        "high",
        _PERSON_TABLES,
    ),
    NamePattern(
        "personal.name_in_person_table",
        r"^(?:name|names|nom|noms|nombre|name_cached|full_name_cached)$",
        "personal",
        "medium",
        _PERSON_TABLES,
    ),
    # the company of a person, or of a person's address (Solidus' spree_addresses.company: a sole
    # trader's business is often named after them, "Plomberie Dupont")
    NamePattern(
        "personal.company_in_person_table",
        r"^(?:company|company_name|companyname|organization|organisation|organization_name|employer"
        r"|employer_name|societe|raison_sociale|entreprise|firma|firmenname|empresa)$",
        "personal",
        "medium",
        _PERSON_TABLES,
    ),
    # the cardholder's name on a stored card (Spree / Solidus spree_credit_cards.name, django-oscar's
    # payment_bankcard.name)
    NamePattern(
        "personal.cardholder_name",
        r"^(?:name|names|name_on_card|holder|holder_name)$",
        "personal",
        "high",
        ("card", "cards", "creditcard", "creditcards", "bankcard", "bankcards"),
    ),
    NamePattern(
        "personal.birth",
        _tokens(r"birth|birthday|birthdate|birth_date|dob|date_of_birth|naissance|geburtsdatum|nacimiento"),
        "personal",
        "high",
    ),
    NamePattern("personal.age", _tokens(r"age"), "personal", "low"),
    # a person's picture (a bytea, or the URL or key of a stored file): a face is personal data
    NamePattern(
        "personal.photo",
        _tokens(r"avatar|avatar_url|profile_picture|profile_photo|profile_image|headshot|selfie|mugshot"),
        "personal",
        "medium",
    ),
    NamePattern(
        "personal.photo_in_person_table",
        _tokens(r"picture|pictures|photo|photos|portrait|image|photo_url|picture_url|image_url"),
        "personal",
        "medium",
        _PERSON_TABLES,
    ),
    NamePattern(
        "personal.demographic",
        _tokens(
            r"gender|sex|nationality|ethnicity|religion|marital|marital_status|sexe|nationalite|civilite"
            # a person's demographics as one document (AdventureWorks' person.demographics survey XML:
            # birth date, income, marital status, children)
            r"|demographic|demographics"
            r"|situation_familiale"
        ),
        "personal",
        "medium",
    ),
    # financial
    NamePattern(
        "financial.card",
        _tokens(
            r"credit_card|card_number|cardnumber|cc_number|card_last_?4|pan|cvv|cvc|cvv2|card_cvc"
            r"|card_expiry|expiry_date"
        ),
        "financial",
        "high",
    ),
    NamePattern(
        "financial.bank",
        _tokens(r"iban|iban_last_?4|bic|swift|account_number|bank_account|routing_number|sort_code|rib"),
        "financial",
        "high",
    ),
    NamePattern("financial.income", _tokens(r"salary|income|wage|wages"), "financial", "medium"),
    NamePattern(
        "financial.processor_id",
        r"(?:^|_)(?:stripe|paypal|braintree|adyen|mangopay|gocardless)_(?:customer|account|card|source|payment_method|payer|mandate)"
        r"|(?:^|_)gateway_(?:customer|payment)_profile_id$",  # Spree / Solidus credit cards: cus_..., pm_...
        "financial",
        "medium",
    ),
    # the person's customer id at a payment processor, in a table of people (Laravel Cashier's
    # users.stripe_id "cus_...", Pay's pay_customers.processor_id): Stripe holds their name and card
    NamePattern(
        "financial.processor_id_in_person_table",
        _tokens(
            r"(?:stripe|paypal|braintree|adyen|mangopay|gocardless|paddle|mollie|chargebee|recurly|processor)_id"
        ),
        "financial",
        "medium",
        _PERSON_TABLES,
    ),
    # auth / secrets
    NamePattern(
        "auth.secret",
        _tokens(
            r"password|passwords|passwd|pwd|passphrase|secret|secrets|token|tokens|api_key|apikey|access_key"
            r"|private_key|secret_key|otp|otp_secret|oauth|credential|credentials|jwt|session_key|pin"
            # a key mailed to someone to act as them (Discourse's invites.invite_key)
            r"|invite_key|invitation_key|activation_key|confirmation_key|reset_key|unlock_key"
            # a session's anti-forgery token (Mattermost's sessions.props {"csrf": ...})
            r"|csrf|xsrf"
        ),
        "auth",
        "high",
    ),
    # the value of a row of a tokens table (ASP.NET Identity's AspNetUserTokens.Value: the authenticator
    # key), of a secrets or credentials table
    NamePattern(
        "auth.secret_in_token_table",
        r"^(?:value|values|data)$",
        "auth",
        "high",
        # ... and of a second factor (Discourse's user_second_factors.data: the TOTP secret)
        (
            "token",
            "tokens",
            "secret",
            "secrets",
            "credential",
            "credentials",
            "factor",
            "factors",
            "otp",
            "totp",
            "mfa",
        ),
    ),
    # what a web framework's session store keeps for a visitor (Django's session_data, the data or
    # payload of a Rails, Laravel or Flask sessions table): who is logged in, and what the session
    # remembers of them, encoded (base64, signed, compressed), so no value content can show it
    NamePattern("auth.session_data", _tokens(r"session_data|sessiondata|session_payload"), "auth", "high"),
    NamePattern(
        "auth.session_data_in_session_table",
        r"^(?:data|payload)$",
        "auth",
        "high",
        ("session", "sessions"),
    ),
    # network
    NamePattern(
        "network.ip",
        _tokens(r"ip|ips|ip_address|ipaddress|ipaddr|ip_addr|ipv4|ipv6|remote_ip|mac_address"),
        "network",
        "medium",
    ),
    NamePattern("network.user_agent", _tokens(r"user_agent|useragent"), "network", "low"),
    # medical
    NamePattern(
        "medical.health",
        _tokens(
            r"diagnosis|diagnoses|medical|prescription|health|disease|allergy|allergies|blood_type"
            r"|insurance_number|social_insurance"
            # French: antécédents, diagnostic, pathologie, ordonnance, allergie, maladie, groupe sanguin
            r"|antecedents|antecedent|diagnostic|diagnostics|pathologie|pathologies|ordonnance|ordonnances"
            r"|allergie|allergies|maladie|maladies|groupe_sanguin"
        ),
        "medical",
        "high",
    ),
    NamePattern("medical.insurance", _tokens(r"insurance|mutuelle"), "medical", "medium"),
    # biometric
    NamePattern(
        "biometric.data",
        _tokens(r"fingerprint|retina|iris|face_id|faceprint|dna|biometric|biometrics|voiceprint"),
        "biometric",
        "high",
    ),
)


def name_pattern_from_dict(item: Mapping[str, object]) -> NamePattern:
    """A rules-file entry ``{pattern, category, severity}`` -> :class:`NamePattern`.

    A pattern made only of letters, digits and ``_`` is a token sequence (``"siren"``,
    ``"loyalty_card"``) matched on token boundaries; anything else is a regex searched in the
    normalised name.
    """
    pattern = str(item["pattern"])
    category = str(item.get("category") or "custom")
    severity = _check_severity(str(item.get("severity") or "high"))
    regex = _tokens(re.escape(pattern.lower())) if re.fullmatch(r"[A-Za-z0-9_]+", pattern) else pattern
    return NamePattern(f"{category}.{pattern}", regex, category, severity)


# What a column's type lets it hold, for the name detectors (``column_kind``): ``text`` holds anything;
# a ``boolean``, ``number``, ``temporal`` or ``key`` (uuid) column cannot hold an e-mail, a phone number
# written out, a password or an address; ``other`` (bytea, arrays, ...) may hold anything.
COLUMN_KINDS = ("text", "boolean", "number", "temporal", "key", "other")
# Last tokens that say a column is *about* the thing its name starts with, not the thing: the key of
# another row (``address_id``), a count (``emails_count``), an instant (``reset_password_sent_at``).
QUALIFIER_TOKENS = (
    "id", "ids", "uuid", "uuids", "guid", "fk", "pk", "ref", "count", "counts", "counter", "counters", "at", "on",
    "size", "sizes", "version", "width", "height", "bytes",  # Paperclip's avatar_file_size integer
)  # fmt: skip
# Last tokens of a number or uuid column that is the key of another row (``bank_account_id``)
_REFERENCE_TOKENS = ("id", "ids", "uuid", "uuids", "guid", "fk", "pk", "ref")
# Categories whose name still describes the person whatever follows it (``birth_year``, ``salary_cents``,
# ``gender_code``, ``latitude_e6``): never cleared by the column's type.
_KEPT_WHATEVER_THE_TYPE = ("identity", "financial", "medical", "biometric", "location")
_KEPT_DETECTORS = ("personal.birth", "personal.age", "personal.demographic")
# Tokens that make an age in a name a bound, a setting about ages (``min_status_age``, ``max_age``)
_BOUND_TOKENS = frozenset({"min", "max", "minimum", "maximum", "limit", "limits", "threshold"})
# What no number can be, whatever its name ends with: an e-mail address, a street address, a city or
# country, a person's name (``num_orders_as_billing_address integer`` counts orders). A phone number, a
# postal code or a card number can be stored as one; a picture's large object has a number too (oid).
_NEVER_A_NUMBER = (
    "contact.email",
    "contact.address",
    "contact.city",
    "contact.country",
    "personal.name",
    "personal.name_in_person_table",
    "personal.cardholder_name",
)
# Last tokens of a text column that is a template or a format *for* what its name starts with
# (``email_body_template``, ``address_format``): what it holds is judged by its content.
TEMPLATE_TOKENS = (
    "template",
    "templates",
    "tpl",
    "format",
    "formats",
    "theme",
    "themes",
    "layout",
    "layouts",
)
# Last tokens of a text column that holds a part of an e-mail, not an address (``email_subject``,
# ``email_body``): what it says is judged by its content (an address, a phone, a copied name).
EMAIL_PART_TOKENS = (
    "subject",
    "body",
    "html",
    "text",
    "content",
    "contents",
    "message",
    "footer",
    "header",
    "signature",
)


# a display name of a thing, not of a person (ASP.NET Identity's ``ProviderDisplayName``: "Google")
_THING_NAME_RE = re.compile(
    r"(?:^|_)(?:provider|product|role|group|plan|team|org|organization|organisation|company|app|application"
    r"|category|service|device|project|workspace|store|shop|site|brand"
    # a custom field's label (Chatwoot's custom_attribute_definitions.attribute_display_name "Date of birth")
    r"|attribute|field|column|property|option|setting|label|metric|event|report)_display_name$"
)
# Last tokens of a text column that names the kind of a secret, not the secret (OAuth's ``token_type``
# "Bearer", ``grant_type``, ``token_scope``): what it holds is judged by its content.
SECRET_KIND_TOKENS = (
    "type", "types", "kind", "scope", "scopes", "method", "methods", "url", "urls", "uri", "uris",
    "endpoint", "endpoints", "counter", "ttl", "lifetime",
)  # fmt: skip
# Tokens after a secret's name that make the column a setting about secrets, not one (Keycloak's
# realm.access_token_lifespan integer, otp_policy_digits, password_policy "length(8)",
# reset_credentials_flow): what it holds is judged by its content.
SECRET_SETTING_TOKENS = frozenset(
    {
        "policy", "policies", "lifespan", "life", "lifetime", "ttl", "timeout", "expiry", "expiration",
        "period", "window", "digits", "length", "size", "alg", "algorithm", "algorithms", "flow", "flows",
        "reuse", "max", "min", "limit", "limits", "interval", "duration", "attempts", "retries", "version",
        "enabled", "required", "rotation",
    }
)  # fmt: skip
# Last tokens of a text column (or JSON key) holding a category *about* what its name starts with, not
# that thing: ``address_type`` "billing", ``phone_type`` "mobile", Stripe's
# ``checks.address_postal_code_check`` "pass", ``email_status`` "bounced"
ABOUT_VALUE_TOKENS = (
    "type", "types", "kind", "check", "checks", "status", "statuses", "result", "results",
)  # fmt: skip  # not "verified": a key phone_verified may hold the verified number


def column_kind(typname: str, category: str, text_like: bool) -> str:
    """The :data:`COLUMN_KINDS` entry of a column from its base type's ``typname`` and ``typcategory``."""
    if text_like:
        return "text"
    if typname == "bool":
        return "boolean"
    if category == "N":
        return "number"
    if category in ("D", "T"):
        return "temporal"
    if typname == "uuid":
        return "key"
    return "other"


def _about_not_the_thing(pattern: NamePattern, normalized: str, kind: str) -> bool:
    """True when a ``kind`` column whose name ``pattern`` matched cannot hold what the pattern names,
    and the category is not one that describes the person whatever follows:

    - a boolean or an instant (``email_verified``, ``is_shipping_country``, Auth.js's ``emailVerified
      timestamp``);
    - a number, for what no number can be (:data:`_NEVER_A_NUMBER`: ``num_orders_as_billing_address``);
    - a number or a uuid whose match stops before the name's last token, when that token qualifies it
      (``_id``, ``_count``);
    - a text whose match stops before its last token, when that token makes it a template or a format
      (``email_body_template``, ``address_format``), for an e-mail a part of one (``email_subject``),
      for a secret its kind (``token_type``): its content is still scanned."""
    if pattern.name == "personal.age" and _BOUND_TOKENS.intersection(normalized.split("_")):
        return True  # a threshold about ages (Mastodon's min_status_age, a cache's max_age)
    if pattern.name in ("identity.provider_uid_in_person_table", "personal.actor", "personal.login"):
        return kind != "text"  # a uuid `uid` is the app's own public id of the row, not a provider's
    if pattern.category in _KEPT_WHATEVER_THE_TYPE or pattern.name in _KEPT_DETECTORS:
        # ... except the key of another row holding a person's account (Odoo's hr_employee.bank_account_id
        # integer: the account's number is in that row). A gender_id or a diagnosis_id is the key of a
        # category, and tells it: those stay flagged
        last = normalized.rsplit("_", 1)[-1]
        return (
            pattern.category == "financial"
            and kind in ("number", "key")
            and last in _REFERENCE_TOKENS
            and not any(m.end() == len(normalized) for m in pattern.compiled.finditer(normalized))
        )
    if kind in ("boolean", "temporal"):  # a flag or an instant about it (Auth.js's emailVerified)
        return True
    if pattern.name == "personal.name" and _THING_NAME_RE.search(normalized):
        return True  # a thing's display name (ASP.NET's ProviderDisplayName "Google")
    if kind == "number" and pattern.name in _NEVER_A_NUMBER:
        return True
    matches = list(pattern.compiled.finditer(normalized))
    if any(m.end() == len(normalized) for m in matches):
        return False  # named for what it is: ``tax_id``, ``phone`` (a number stored as one)
    if pattern.category == "auth" and matches:
        after = normalized[matches[-1].end() :].split("_")
        if SECRET_SETTING_TOKENS.intersection(after):
            return True  # a setting about secrets: ``access_token_lifespan``, ``password_policy``
    last = normalized.rsplit("_", 1)[-1]
    if kind in ("text", "other"):
        return (
            last in TEMPLATE_TOKENS
            or (pattern.name == "contact.email" and last in EMAIL_PART_TOKENS)
            or (pattern.category == "auth" and last in SECRET_KIND_TOKENS)
            or (
                last in ABOUT_VALUE_TOKENS
                and pattern.category not in _KEPT_WHATEVER_THE_TYPE
                and pattern.name not in _KEPT_DETECTORS  # marital_status is the status itself
            )
        )
    return last in QUALIFIER_TOKENS


def detect_by_name(
    column: str,
    table: str = "",
    patterns: Sequence[NamePattern] = DEFAULT_NAME_PATTERNS,
    *,
    kind: str = "text",
) -> list[NamePattern]:
    """Name patterns that match ``column`` (of ``table``). ``kind`` (:func:`column_kind`): a column
    whose type cannot hold text is not flagged by a pattern it is only *about*: ``address_id integer``
    (the key of an address), ``emails_count``, ``reset_password_sent_at timestamp``, ``email_verified
    boolean``, ``num_orders_as_billing_address integer``; nor a text that is a template or a format
    for it (``email_body_template``) or a part of an e-mail (``email_subject``), whose content is still
    scanned. A pattern whose match takes the last token in still counts (``tax_id``,
    ``phone_number bigint``), and so do identity, financial, medical, biometric, location, birth, age
    and demographic names (``birth_year``, ``salary_cents``)."""
    normalized = normalize_name(column)
    table_tokens = tokenize_name(table)
    found = [
        p
        for p in patterns
        if p.matches(normalized, table_tokens) and not _about_not_the_thing(p, normalized, kind)
    ]
    if found and _names_a_thing(normalized, table_tokens):
        found = [p for p in found if p.name != "personal.name"]
    if any(p.name == "contact.address" for p in found) and any(
        p.name in _ADDRESS_PARTS and re.search(f"(?:{p.regex})$", normalized, re.IGNORECASE) for p in found
    ):  # EF Core's owned types: BillingAddress_City is the address's city, not a street line
        found = [p for p in found if p.name != "contact.address"]
    return found


#: last tokens of a table of things (not of people): its display name or nickname is the thing's
#: (Mastodon's ``tags.display_name`` "#Caturday", ``webauthn_credentials.nickname`` "YubiKey")
_THING_TABLE_TOKENS = frozenset(
    {
        "tag", "tags", "category", "categories", "label", "labels", "role", "roles", "group", "groups",
        "plan", "plans", "feature", "features", "template", "templates", "type", "types", "status",
        "statuses", "scope", "scopes", "provider", "providers", "product", "products", "item", "items",
        "channel", "channels", "list", "lists", "emoji", "emojis", "badge", "badges", "permission",
        "permissions", "level", "levels", "segment", "segments", "app", "apps", "application",
        "applications", "site", "sites", "store", "stores", "brand", "brands", "service", "services",
        "device", "devices", "credential", "credentials", "webhook", "webhooks", "filter", "filters",
        "rule", "rules", "instance", "instances", "domain", "domains", "server", "servers", "key", "keys",
        "definition", "definitions", "field", "fields", "attribute", "attributes", "option", "options",
    }
)  # fmt: skip
_THING_NAME_COLUMNS = frozenset({"display_name", "displayname", "nickname", "nick", "name_display"})


def _names_a_thing(normalized: str, table_tokens: Sequence[str]) -> bool:
    """Whether the column is the display name or nickname of a table of things (its last token, the
    token ``person`` that :func:`table_of_people` may add left aside)."""
    tokens = [t for t in table_tokens if t != "person"] or list(table_tokens)
    return normalized in _THING_NAME_COLUMNS and bool(tokens) and tokens[-1] in _THING_TABLE_TOKENS


#: what an address is made of besides its street: named last (``billing_address_city``), the column is that
_ADDRESS_PARTS = ("contact.city", "contact.postal_code", "contact.country")

#: name detectors whose column makes its table one of people, whatever the table is called
PERSON_COLUMN_DETECTORS = ("contact.email", "contact.phone", "personal.name", "personal.birth")


def table_of_people(table: str, columns: Iterable[tuple[str, str]]) -> str:
    """The table name the name detectors judge ``table``'s columns with: ``table``, plus the token
    ``person`` when one of its ``(column, kind)`` is named as a person's e-mail, phone, name or birth
    date (:data:`PERSON_COLUMN_DETECTORS`). Its rows then describe people whatever it is called, and
    its ``name`` and ``picture`` are theirs: django-oscar's ``reviews_productreview.name`` (an
    anonymous reviewer's, next to their ``email``), as a JSON object with an e-mail key."""
    for column, kind in columns:
        if any(p.name in PERSON_COLUMN_DETECTORS for p in detect_by_name(column, table, kind=kind)):
            return f"{table} person"
    return table


#: a column named ``key`` in a table of people whose values are random tokens: a key mailed to the
#: person to confirm or cancel something (django-oscar's ``customer_productalert.key``), a credential of
#: production: whoever holds it acts as that person there
RANDOM_KEY_DETECTOR = "auth.random_key"
_RANDOM_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{16,}")


def random_key_reason(column: str, table_context: str, values: Iterable[Any]) -> dict[str, Any] | None:
    """The ``auth.random_key`` reason of ``column`` (a name reason: the name and the values together),
    or None. Only a column named ``key`` or ``keys`` in a table of people (``table_context`` from
    :func:`table_of_people`) whose non-empty sampled ``values`` are at least 80 % random tokens (16 or
    more letters, digits, ``-`` or ``_``, not all digits nor all letters), 90 % of them distinct: a
    settings table's ``key`` (``site_name``) is not one, nor a storage key outside a table of people
    (Active Storage's ``blobs.key``, which the staging app needs to find its files)."""
    if normalize_name(column) not in ("key", "keys"):
        return None
    if not is_people_table(tokenize_name(table_context)):
        return None
    texts = [str(v).strip() for v in values if v is not None and str(v).strip()]
    tokens = [t for t in texts if _RANDOM_TOKEN_RE.fullmatch(t) and not t.isdigit() and not t.isalpha()]
    if not tokens or len(tokens) * 5 < len(texts) * 4 or len(set(tokens)) * 10 < len(tokens) * 9:
        return None
    return {
        "kind": "name",
        "detector": RANDOM_KEY_DETECTOR,
        "category": "auth",
        "severity": "high",
        "matches": len(tokens),
    }


_KEY_PART_RE = re.compile(r"[A-Za-z0-9]+")


def is_a_random_key(key: str) -> bool:
    """Whether a JSON key holds a random token (16 or more letters and digits, both, in one run): a
    key id (Synapse's ``keys`` ``{"ed25519:tTu6otp1MZ3MRxSz0YZQyJDIrzW4bIpSx...": ...}``), a hash. It
    is data, not a name: split as camelCase, its letters make words by chance (``...bIpSx...``:
    ``ip``)."""
    return any(
        len(part) >= 16 and not part.isdigit() and not part.isalpha() for part in _KEY_PART_RE.findall(key)
    )


#: keys that make the JSON object holding them the description of a person (its "name" is a name)
PERSON_KEY_RE = re.compile(
    r"(?i)e[-_]?mail|email_address|first_?name|last_?name|given_?name|family_?name|surname|birth_?date"
    r"|date_of_birth|phone|phone_number|mobile"
)


def describes_a_person(document: Mapping[str, Any]) -> bool:
    """Whether a JSON object's keys say it describes a person (an e-mail, a phone, a birth date, a first,
    last, given or family name): its ``name`` and ``picture`` are then that person's, as in a table of
    people (a login provider's profile)."""
    return any(PERSON_KEY_RE.fullmatch(str(k)) for k in document)


#: string values of a setting (a flag, a switch) rather than of what its key is named for
FLAG_LITERALS = frozenset({"0", "1", "true", "false", "t", "f", "yes", "no", "y", "n", "on", "off"})
#: an instant written out (ISO 8601): when something about a secret or an address happened
_INSTANT_RE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?")


#: a setting's choice under a key named for an e-mail address (Mattermost's notify props
#: ``{"email": "default", "email_threads": "all"}``): one lower-case word, which no address is
_SETTING_WORD_RE = re.compile(r"[a-z]+(?:_[a-z]+)*")
#: fewer digits than this cannot be a phone number (a version: Mattermost's ``mobile_version``)
_PHONE_MIN_DIGITS = 6


def is_a_setting_or_time_for(pattern: NamePattern, value: str) -> bool:
    """Whether ``value`` cannot be what a key ``pattern`` names (an e-mail address, a phone, a street
    address, a name or a secret) holds, being a setting or a time about that: a flag's literal
    (:data:`FLAG_LITERALS`, Decidim's ``notification_settings`` ``{"email_on_assigned_proposals":
    "1"}``) or an instant (a user's version ``{"password_updated_at": "2023-10-06T20:23:55.206"}``);
    under an e-mail key, one lower-case word (``"default"``, ``"all"``); under a phone key, fewer than
    six digits (``"mobile_version": "2.30.0"``). A category, a code ("1" for a gender), a birth date
    still count."""
    if not (pattern.category in ("contact", "auth") or pattern.name.startswith("personal.name")):
        return False
    text = value.strip()
    if text.lower() in FLAG_LITERALS or _INSTANT_RE.fullmatch(text) is not None:
        return True
    if pattern.name == "contact.email":
        return _SETTING_WORD_RE.fullmatch(text) is not None
    if pattern.name == "contact.phone":
        return sum(ch.isdigit() for ch in text) < _PHONE_MIN_DIGITS
    return False


@functools.lru_cache(maxsize=8192)
def json_key_patterns(
    key: str, person: bool = False, patterns: tuple[NamePattern, ...] = DEFAULT_NAME_PATTERNS
) -> tuple[NamePattern, ...]:
    """The name patterns a JSON key matches, judged as a column name (in an object describing a person
    or not): the scan's keys, its rare-key listing and suggest's paths all read keys so. None for a
    key holding a random token (:func:`is_a_random_key`). Cached: the same keys come back in every
    document of a column."""
    if is_a_random_key(key):
        return ()
    return tuple(detect_by_name(key, "person" if person else "", patterns))


def json_key_findings(
    document: Any, patterns: Sequence[NamePattern] = DEFAULT_NAME_PATTERNS
) -> list[tuple[tuple[str, ...], NamePattern]]:
    """``(path, pattern)`` of each non-empty string value of a parsed JSON document whose key a high
    severity name pattern flags (``first_name``, ``password``, ``iban``; ``name`` in an object that
    describes a person): personal data no content detector can see. Paths as lists of
    segments (keys, ``*`` for array elements)."""
    out: list[tuple[tuple[str, ...], NamePattern]] = []

    def walk(value: Any, path: list[str], person: bool) -> None:
        if isinstance(value, Mapping):
            person = describes_a_person(value)
            for k, v in value.items():
                walk(v, [*path, str(k)], person)
        elif isinstance(value, list):
            for v in value:
                walk(v, [*path, "*"], person)
        elif (
            isinstance(value, str)
            and value.strip()
            and (key := next((s for s in reversed(path) if s != "*"), None))
        ):
            # an element of an array is named by the array's key (``cc_emails: ["a@b.c"]``)
            for p in json_key_patterns(key, person, tuple(patterns)):
                if p.category == "auth" and (len(value) < 16 or " " in value.strip()):
                    continue  # a page token, a short code: a secret is long and has no space
                if is_a_setting_or_time_for(p, value):
                    continue  # Decidim's notification_settings {"email_on_moderations": "1"}
                if p.severity == "high" or p.table_tokens:
                    out.append((tuple(path), p))

    walk(document, [], False)
    return out


# --------------------------------------------------------------------------------------------------
# Content
# --------------------------------------------------------------------------------------------------


def luhn_valid(digits: str) -> bool:
    """Luhn checksum of a digit string (card numbers)."""
    if not digits.isdigit():
        return False
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


# Lengths of IBANs by country (ISO 13616 registry, SWIFT release; the common and all SEPA ones).
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


def iban_valid(candidate: str) -> bool:
    """ISO 13616 check: known country, its length, and the mod-97 checksum equal to 1."""
    iban = re.sub(r"[\s-]", "", candidate).upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]+", iban):
        return False
    expected = IBAN_LENGTHS.get(iban[:2])
    if expected is None or len(iban) != expected:
        return False
    rearranged = iban[4:] + iban[:4]
    number = "".join(str(int(char, 36)) for char in rearranged)
    return int(number) % 97 == 1


def iban_candidate_valid(candidate: str) -> bool:
    """A regex candidate may run past the IBAN (a following code or word after a space or a dash):
    check the expected length. An IBAN glued to more letters or digits is not one: a 32-character hex
    digest or a random token whose first characters happen to pass mod-97 (about one in a few hundred
    of them) is not flagged."""
    compact = re.sub(r"[\s-]", "", candidate).upper()
    expected = IBAN_LENGTHS.get(compact[:2])
    if expected is None or len(compact) < expected or not iban_valid(compact[:expected]):
        return False
    seen = 0
    for index, char in enumerate(candidate):
        if char.isalnum():
            seen += 1
            if seen == expected:
                rest = candidate[index + 1 :]
                return not rest or rest[0] in " -\t"
    return False


_CARD_PREFIX = re.compile(
    r"^(?:4\d{12}(?:\d{3}){0,2}"  # Visa 13/16/19
    r"|5[1-5]\d{14}|2(?:2[2-9][1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720)\d{12}"  # Mastercard
    r"|3[47]\d{13}"  # Amex
    r"|6(?:011|5\d\d)\d{12,15}|64[4-9]\d{13}"  # Discover
    r"|35(?:2[89]|[3-8]\d)\d{12,15}"  # JCB
    r"|3(?:0[0-5]|[68]\d)\d{11,16}"  # Diners
    r"|(?:5018|5020|5038|5893|6304|6759|676[1-3])\d{8,15})$"  # Maestro
)


#: how a card number is written in groups: fours (the last group shorter, 13 to 19 digits), or
#: American Express's and Diners Club's 4-6-5 and 4-6-4
_CARD_GROUPS = re.compile(r"\d{4}(?:([ -])\d{4}){2}(?:\1\d{4})?(?:\1\d{1,4})?|\d{4}([ -])\d{6}\2\d{4,5}")


def card_number_valid(candidate: str) -> bool:
    """A known card brand prefix and length, and a valid Luhn checksum; written in one run of digits
    or in a card's groups (``4111 1111 1111 1111``, ``3782 822463 10005``): digits grouped otherwise
    are an order number or a UUID's digits (``R412916409-1889``, ``65-0783-8862-6642-30``)."""
    digits = re.sub(r"[\s-]", "", candidate)
    if digits != candidate and not _CARD_GROUPS.fullmatch(candidate):
        return False
    return bool(_CARD_PREFIX.match(digits)) and luhn_valid(digits)


def _ipv4_valid(candidate: str) -> bool:
    parts = candidate.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) <= 255 and (p == "0" or p[0] != "0") for p in parts)


def _ipv6_valid(candidate: str) -> bool:
    """A valid IPv6 address with a digit in it: ``::`` alone (Ruby's ``Admin::User``, a C++ scope)
    and hex words (``dead::beef``) are not an address anyone has."""
    import ipaddress

    address = candidate.split("/")[0]
    if not any(ch.isdigit() for ch in address):
        return False
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        return False
    return True


def _e164_valid(candidate: str) -> bool:
    digits = re.sub(r"[\s().-]", "", candidate)
    return bool(re.fullmatch(r"\+[1-9]\d{7,14}", digits))


def _geo_valid(candidate: str) -> bool:
    """A ``geo:`` URI's latitude and longitude in range, both with decimals (a place, not ``geo:0,0``)."""
    lat, _, lon = candidate[4:].partition(",")
    try:
        latitude, longitude = float(lat), float(lon)
    except ValueError:
        return False
    return "." in lat and "." in lon and -90 <= latitude <= 90 and -180 <= longitude <= 180


@dataclass(frozen=True)
class ContentPattern:
    """A content detector: a regex, optionally confirmed by a checksum over each candidate match."""

    name: str
    regex: str
    severity: str
    validator: object = None  # Callable[[str], bool] | None
    hint: str | None = None  # a substring every match contains (cheap pre-filter)
    needs_digit: bool = False  # every match contains a digit (cheap pre-filter)
    #: a case-sensitive regex every value holding a match matches too, cheaper than ``regex``: searched first
    prefilter: str | None = None
    compiled: re.Pattern = field(init=False, repr=False, compare=False)
    compiled_prefilter: re.Pattern | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_severity(self.severity)
        object.__setattr__(self, "compiled", re.compile(self.regex, re.IGNORECASE))
        object.__setattr__(self, "compiled_prefilter", re.compile(self.prefilter) if self.prefilter else None)

    def matches(self, value: str) -> bool:
        if self.compiled_prefilter is not None and self.compiled_prefilter.search(value) is None:
            return False
        validator = self.validator
        for match in self.compiled.finditer(value):
            if validator is None or validator(match.group(0)):  # type: ignore[operator]
                return True
        return False


_B = r"(?<![\w@.+-])"  # left edge: not glued to another token
#: :data:`DEFAULT_CONTENT_PATTERNS`' ``street_address``: French (number, street type, name, 5-digit postal
#: code, town), German and Swiss (a name ending in a street type, number, 4- or 5-digit postal code,
#: town), English (number, capitalised words, street type, then a UK postcode or a US state and ZIP)
_STREET_ADDRESS = (
    r"(?-i:"
    r"(?<![\w])\d{1,4}(?:\s?(?:bis|ter))?,?\s+(?i:rue|avenue|av\.|boulevard|bd|chemin|all[ée]e|impasse|place|quai"
    r"|route|cours|square|passage)\s+[^\n,;]{2,50}?,?\s+\d{5}\s+[A-ZÀ-Ý]"
    r"|(?<![\w])[A-ZÄÖÜ][\wäöüß.-]*(?:stra(?:ß|ss)e|Stra(?:ß|ss)e|str\.|Str\.|gasse|Gasse|weg|Weg|allee|Allee|platz"
    r"|Platz|ring|Ring|damm|Damm|ufer|Ufer)\s+\d{1,4}\s?[a-z]?(?:\s?[-/]\s?\d{1,4}[a-z]?)?,?\s+\d{4,5}\s+[A-ZÄÖÜ]"
    r"|(?<![\w])\d{1,5}[a-z]?\s+(?:[A-Z][a-z]+\s){1,3}(?:Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Drive|Dr|Boulevard"
    r"|Blvd|Court|Ct|Way|Place|Close|Crescent|Terrace|Gardens)\.?,\s+(?:[A-Z][\w ]{1,30},\s*)?"
    r"(?:[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2}|[A-Z]{2}\s\d{5})"
    r")"
)
_E = r"(?![\w@])"  # right edge

DEFAULT_CONTENT_PATTERNS: tuple[ContentPattern, ...] = (
    ContentPattern(
        "email",
        r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}(?![A-Za-z0-9-])",
        "high",
        hint="@",
    ),
    ContentPattern(
        "phone_fr",
        _B + r"(?:(?:\+|00)33[\s.-]?(?:\(0\)[\s.-]?)?|0)[1-9](?:[\s.-]?\d{2}){4}" + r"(?![\w])",
        "high",
        needs_digit=True,
    ),
    ContentPattern(
        "phone_e164",
        _B + r"\+[1-9][\d\s().-]{6,20}\d" + r"(?!\d)",
        "medium",
        _e164_valid,
        hint="+",
        needs_digit=True,
    ),
    ContentPattern(
        "iban",
        _B + r"[A-Z]{2}\d{2}(?:[ -]?[A-Z0-9]){11,30}" + _E,
        "high",
        iban_candidate_valid,
        needs_digit=True,
    ),
    ContentPattern(
        "card_number",
        r"(?<![\w/-])\d(?:[ -]?\d){12,18}(?![\w-])",  # not after '/': a URL's snowflake id (Mastodon)
        "high",
        card_number_valid,
        needs_digit=True,
    ),
    ContentPattern(
        "ipv4",
        r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])",
        "medium",
        _ipv4_valid,
        hint=".",
        needs_digit=True,
    ),
    ContentPattern(
        "ipv6",
        r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])",
        "medium",
        _ipv6_valid,
        hint=":",
    ),
    ContentPattern(
        "jwt",
        r"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
        "high",
        hint="eyJ",
    ),
    # a production credential of a well-known service, by its documented prefix (Stripe's live secret,
    # restricted and webhook keys, AWS access key ids, GitHub, GitLab, Slack, Google, SendGrid,
    # OpenAI), or a PEM private key: kept in a settings table (Solidus' spree_payment_methods
    # preferences hold the Stripe key as YAML), a staging copy would charge real cards with it
    ContentPattern(
        "api_secret",
        r"(?<![\w-])(?:[sr]k_live_[0-9a-z]{16,}|whsec_[0-9a-z+/=]{24,}|akia[0-9a-z]{16}(?![0-9a-z])"
        r"|gh[pousr]_[0-9a-z]{36,}|github_pat_[0-9a-z_]{40,}|glpat-[0-9a-z_-]{20,}|xox[abposr]-[0-9a-z-]{10,}"
        r"|aiza[0-9a-z_-]{35}|sg\.[0-9a-z_-]{16,}\.[0-9a-z_-]{16,}|sk-(?:proj-)?[0-9a-z_-]{32,}"
        r"|-----begin (?:rsa |ec |dsa |openssh |encrypted )?private key-----"
        # a Google OAuth client secret; an RSA private key in base64 DER without its PEM armour, as
        # Keycloak keeps its realms' signing keys (PKCS#1 "MIIEogIBAAKCAQEA...", PKCS#8 "MIIEvQIBADAN...")
        r"|gocspx-[0-9a-z_-]{20,}|mii[a-z0-9]{3}ibaakcaqea|mii[a-z0-9]{3}ibadanbgkqhkig9w0baqefaasc"
        # a Firebase Cloud Messaging registration token: a phone's push address, which with the app's
        # server key sends it notifications (Mattermost's sessions.deviceid "android_rn-v2:<token>",
        # Synapse's pushers.pushkey; URL-safe base64, or with + and / as some clients write it)
        r"|[0-9a-z_+/-]{11,}:apa91b[0-9a-z_+/=-]{100,})",
        "high",
    ),
    # a postal address written out in free text (a message giving a delivery address, a location's
    # description, a bio): a number, a street, a postal code and a town, in the French, German or
    # English way ("14 rue des Vinaigriers, 75010 Paris", "Roggestraße 58/27, 33464 Essen", "2 Jones
    # Road, E6J 3JB"): case-sensitive where capitals mark the names
    ContentPattern(
        "street_address",
        _STREET_ADDRESS,
        "medium",
        needs_digit=True,
        # each form ends with a postal code: 4-5 digits and a town's capital, a UK postcode, a US ZIP
        prefilter=r"\d{4,5}\s+[A-ZÀ-ÝÄÖÜ]|\d[A-Z]{2}(?![a-z])|[A-Z]{2}\s\d{5}",
    ),
    # a place as a geo URI (RFC 5870): where a person shared their location from (Matrix's location
    # events, "geo:48.8765,2.18967;u=12"), a delivery point
    ContentPattern(
        "geo_uri",
        r"(?<![\w.-])geo:-?\d{1,2}(?:\.\d+)?,-?\d{1,3}(?:\.\d+)?",
        "medium",
        _geo_valid,
        hint="geo:",
        needs_digit=True,
    ),
    # a URL carrying a credential: a password in its user info (AdventureWorks' vendor web service URLs
    # https://user:secret@edi...), or a token, key, secret or signature of 16+ characters in its query
    # (Chatwoot's webhooks and bots: ...?token=9f625c...): a staging copy would call production's
    # endpoints with production's secrets
    ContentPattern(
        "url_credential",
        r"(?<![\w.+-])[a-z][a-z0-9+.-]{1,15}://[^\s/?#@:]{1,64}:[^\s/?#@]{3,}@[^\s/?#@]+"
        r"|[?&](?:access_token|auth_token|api_key|apikey|token|secret|client_secret|password|passwd|pwd|key"
        r"|sig|signature|x-amz-signature)=[0-9a-z_.~%+-]{16,}",
        "high",
    ),
)


def content_pattern_from_dict(item: Mapping[str, object]) -> ContentPattern:
    """A rules-file entry ``{name, regex, severity}`` -> :class:`ContentPattern` (case-insensitive)."""
    return ContentPattern(
        str(item["name"]), str(item["regex"]), _check_severity(str(item.get("severity") or "high"))
    )


#: a value that is only a UUID: its digits can look like a phone or a card number, it is neither
UUID_RE = re.compile(r"\{?[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}\}?")


def is_uuid(value: str) -> bool:
    """Whether ``value`` is only a UUID: its digits can look like a phone or a card number, it is
    neither (the content detectors skip it)."""
    return len(value) <= 40 and UUID_RE.fullmatch(value.strip()) is not None


#: tokens of a column named for a product's code (a GTIN/EAN barcode, an ISBN, a SKU): its digits are
#: an article number, not a card or a phone number, whatever checksum they happen to pass
_PRODUCT_CODE_TOKENS = frozenset(
    {"gtin", "gtin13", "gtin14", "ean", "ean13", "upc", "isbn", "isbn13", "barcode", "sku", "mpn", "asin"}
)
_NUMBER_DETECTORS = frozenset({"card_number", "phone_fr", "phone_e164", "iban"})


#: last tokens of a column holding an encoding of something else (Mastodon's media ``blurhash``, whose
#: base-83 alphabet has '@' and '.': "x@K.lV" reads as an e-mail address)
#: (not "signature" nor "digest": an e-mail signature, a newsletter digest hold addresses and phones)
_ENCODED_TOKENS = frozenset({"blurhash", "thumbhash", "hash", "checksum", "fingerprint"})


def content_ignored_by_name(column: str, detector: str) -> bool:
    """Whether the column's name says its values are not what the content detector ``detector`` sees
    in them: Solidus' ``spree_variants.gtin`` (one in ten GTIN-13 passes the card-number Luhn check),
    Mastodon's ``media_attachments.blurhash`` (an image's placeholder, read as e-mail addresses)."""
    tokens = normalize_name(column).split("_")
    if detector in _NUMBER_DETECTORS and _PRODUCT_CODE_TOKENS & set(tokens):
        return True
    return detector in ("email", *_NUMBER_DETECTORS) and tokens[-1] in _ENCODED_TOKENS


def detect_in_value(value: str, patterns: Sequence[ContentPattern] = DEFAULT_CONTENT_PATTERNS) -> list[str]:
    """Names of the content detectors that match ``value`` (none for a value that is a UUID)."""
    if is_uuid(value):
        return []
    return [p.name for p in patterns if p.matches(value)]


def build_patterns(
    extra: Mapping[str, object] | None = None,
) -> tuple[tuple[NamePattern, ...], tuple[ContentPattern, ...]]:
    """Defaults plus ``pii_scan.patterns`` from the rules file: ``{names: [...], content: [...]}``."""
    names = list(DEFAULT_NAME_PATTERNS)
    content = list(DEFAULT_CONTENT_PATTERNS)
    for item in (extra or {}).get("names") or []:  # type: ignore[union-attr]
        names.append(name_pattern_from_dict(item))
    for item in (extra or {}).get("content") or []:  # type: ignore[union-attr]
        content.append(content_pattern_from_dict(item))
    return tuple(names), tuple(content)


#: the bookkeeping tables of schema-migration tools, by name, with every column the tool creates: the
#: app's migration tool reads them when it starts (Liquibase runs again a changeset whose id, author
#: or file name it no longer finds), and what they hold comes from the app's source (its developers as
#: changesets' authors, the database role that ran a migration), not from its users
MIGRATION_TABLES: dict[str, tuple[str, frozenset[str]]] = {
    "databasechangelog": (
        "Liquibase",
        frozenset(
            {
                "id", "author", "filename", "dateexecuted", "orderexecuted", "exectype", "md5sum",
                "description", "comments", "tag", "liquibase", "contexts", "labels", "deployment_id",
            }
        ),
    ),
    "flyway_schema_history": (
        "Flyway",
        frozenset(
            {
                "installed_rank", "version", "description", "type", "script", "checksum", "installed_by",
                "installed_on", "execution_time", "success",
            }
        ),
    ),
}  # fmt: skip
MIGRATION_TABLES["schema_version"] = MIGRATION_TABLES["flyway_schema_history"]  # Flyway before 5


def migration_bookkeeping(table: str, columns: Iterable[str]) -> str | None:
    """Why a table is a schema-migration tool's bookkeeping (:data:`MIGRATION_TABLES`: its name, and
    no column the tool does not create), or None. Such a table is kept as it is: masking it would make
    the staging app's migration tool run the migrations again, or refuse to start."""
    known = MIGRATION_TABLES.get(table.lower())
    if known is None:
        return None
    tool, tool_columns = known
    if not {c.lower() for c in columns} <= tool_columns:
        return None
    return (
        f"{tool}'s migration bookkeeping: written from the app's source, read by {tool} when the app "
        "starts (masked, the migrations would run again); kept as is"
    )


#: the two columns of a table of settings or attributes, one row per setting (Keycloak's
#: ``component_config(name, value)``, ``identity_provider_config``, WordPress' ``wp_options(option_name,
#: option_value)``, Rails settings' ``settings(var, value)``)
KEY_VALUE_KEY_COLUMNS = (
    "name",
    "key",
    "var",
    "option_name",
    "setting",
    "setting_name",
    "config_key",
    "param_name",
)
KEY_VALUE_VALUE_COLUMNS = ("value", "val", "option_value", "setting_value", "config_value", "param_value")
KEY_VALUE_DETECTOR = "auth.secret_in_key_value_row"
#: a reference to a secret kept elsewhere (Keycloak's vault ``${vault.smtp_password}``, an env var)
_SECRET_REFERENCE_RE = re.compile(r"\$\{[^}]+\}|%\([^)]+\)s|\$[A-Z_][A-Z0-9_]*")


def key_value_columns(columns: Sequence[str]) -> tuple[str, str] | None:
    """``(key column, value column)`` of a table of settings (:data:`KEY_VALUE_KEY_COLUMNS`,
    :data:`KEY_VALUE_VALUE_COLUMNS`), or None."""
    lowered = {c.lower(): c for c in columns}
    key = next((lowered[k] for k in KEY_VALUE_KEY_COLUMNS if k in lowered), None)
    value = next((lowered[v] for v in KEY_VALUE_VALUE_COLUMNS if v in lowered), None)
    return (key, value) if key and value else None


def secret_keys(rows: Iterable[tuple[Any, Any]]) -> list[str]:
    """The keys of the ``(key, value)`` rows of a table of settings whose key is named for a secret
    (``bindCredential``, ``clientSecret``, ``smtp_password``: the name detectors' ``auth.secret``) and
    whose value is set: not empty, not a flag's literal, not a reference to a secret kept elsewhere
    (``${vault.smtp_password}``). Sorted, each once."""
    found: set[str] = set()
    for key, value in rows:
        if not isinstance(key, str) or not isinstance(value, str) or not value.strip():
            continue
        if value.strip().lower() in FLAG_LITERALS or _SECRET_REFERENCE_RE.fullmatch(value.strip()):
            continue
        if any(p.name == "auth.secret" for p in detect_by_name(key)):
            found.add(key)
    return sorted(found)
