"""The ``json`` transformer masks values inside json/jsonb documents, at keys and in every element of
arrays, on load (in the masking trigger, planned from the archive) and in place, with the same bytes
either way; documents without the paths, JSON nulls and SQL NULLs are left as they are; the residual
proof and verification pass; bad nested rules are refused when the rules file is validated."""

from __future__ import annotations

import json

import pytest
from pg_helpers import new_database

from scalingo_staging_sync.anonymize.executor import run_table_plan
from scalingo_staging_sync.anonymize.planner import plan_anonymization
from scalingo_staging_sync.anonymize.rules import RulesError, parse_rules_text
from scalingo_staging_sync.restore.pgtools import find_pg_tools
from scalingo_staging_sync.restore.runner import run_pg_restore
from scalingo_staging_sync.verification import verify_table

from .conftest import (
    SALT,
    anonymize,
    assert_in_place_gives,
    assert_verified,
    execute,
    rows_without,
    rules_from,
)

PROFILES = r"""
CREATE TABLE profiles (id int PRIMARY KEY, prefs jsonb, legacy json, contacts jsonb);
INSERT INTO profiles VALUES
 (1, '{"email": "alice.martin@corp.test", "phones": ["+33 6 12 34 56 78", "06 98 76 54 32"],
       "contact": {"name": "Alice"}, "theme": "dark",
       "addresses": [{"line": "12 rue de la Paix", "zip": "75002"}, {"zip": "69001"}]}',
     '{"email": "alice.martin@corp.test", "n": 1}',
     '[{"email": "carol.smith@corp.test", "phone": "+44 7700 900123"}, {"phone": "+44 7700 900456"}, "x"]'),
 (2, '{"email": "bob\t\"quoted\"\\back@corp.test", "phones": [], "contact": {"name": "Élodie"}}',
     '{"other": true}', '{"email": "dave@corp.test"}'),
 (3, '{"theme": "light"}', '{}', '[]'),
 (4, '{"email": null, "phones": null}', NULL, NULL),
 (5, NULL, '[1, 2]', '[null, {"email": null}]');
"""
ORIGINALS = [
    "alice.martin",
    "+33 6 12",
    "06 98 76",
    '"Alice"',
    "rue de la Paix",
    "bob",
    "Élodie",
    "carol",
    "7700 900",
    "75002",
    "69001",
]
RULES = """
source_app: p
email_domain: staging.test
anonymization_tables:
  - table: profiles
    columns:
      prefs:
        transformer: json
        paths:
          email: email
          phones.*: phone
          contact.name: first_name
          addresses.*.line: address
          addresses.*.zip: postal_code
      legacy:
        transformer: json
        paths: {email: email}
      contacts:
        transformer: json
        paths:
          "*.email": email
          "*.phone": phone
"""


def _check_masked(target):
    query = "SELECT id, prefs::text, legacy::text, contacts::text FROM profiles ORDER BY id"
    rows = rows_without(target, query, ORIGINALS)
    by_id = {r[0]: r for r in rows}
    alice = json.loads(by_id[1][1])
    assert alice["email"].endswith("@staging.test") and alice["theme"] == "dark"
    assert len(alice["phones"]) == 2 and all(p.startswith("+999") for p in alice["phones"])
    # two paths under the same array both hold (the second step starts from the first's result)
    (first, second) = alice["addresses"]
    assert set(first) == {"line", "zip"} and set(second) == {"zip"}
    assert first["zip"].isdigit() and len(first["zip"]) == 5 and second["zip"].isdigit()
    assert json.loads(by_id[1][2])["email"].endswith("@staging.test")
    assert json.loads(by_id[2][1])["phones"] == []
    carol = json.loads(by_id[1][3])
    assert carol[0]["email"].endswith("@staging.test") and carol[0]["phone"].startswith("+999")
    assert carol[1]["phone"].startswith("+999") and carol[2] == "x"
    assert json.loads(by_id[2][3]) == {"email": "dave@corp.test"}  # not an array: '*' does not apply
    assert by_id[3][1:] == ('{"theme": "light"}', "{}", "[]")
    assert by_id[4][1:] == ('{"email": null, "phones": null}', None, None)
    assert by_id[5][1:] == (None, "[1, 2]", '[null, {"email": null}]')
    # json stays json (its text is jsonb's normal form once masked)
    types = execute(target, "SELECT pg_typeof(prefs)::text, pg_typeof(legacy)::text FROM profiles LIMIT 1")
    assert types == [("jsonb", "json")]
    return rows


@pytest.fixture
def on_load(db_any, prod_pg, tmp_path):
    pg, target = db_any
    tools = find_pg_tools(pg.bin_dir)
    with new_database(prod_pg, "jsonsrc") as source:
        prod_pg.execute(PROFILES, source)
        dump = prod_pg.pg_dump(source, tmp_path / "profiles.pgsql")
    run_pg_restore(dump, target, section="pre-data", tools=tools)
    (item,) = plan_anonymization(target, rules_from(RULES), dump_path=str(dump), tools=tools)
    assert item["mode"] == "on_load"
    result = run_table_plan(item, target, SALT, dump_path=str(dump), tools=tools)
    return target, result


def test_json_paths_masked_on_load_and_in_place_identically(on_load, staging_pg16):
    target, result = on_load
    assert_verified(target, result)
    assert_in_place_gives(staging_pg16, PROFILES, RULES, _check_masked, _check_masked(target))


@pytest.mark.parametrize(
    ("paths", "expected"),
    [
        ("{'a..b': email}", "paths.a..b: path 'a..b'"),
        ("{x: nope}", "paths.x: unknown transformer 'nope'"),
        ("{x: {transformer: md5_of, column: c}}", "paths.x: transformer 'md5_of' reads other columns"),
        ("{x: {transformer: hash, lenght: 8}}", "paths.x.lenght: unknown option of transformer 'hash'"),
        ("{x: date_shift}", "paths.x: transformer 'date_shift' does not apply to type text"),
        ("{x: json}", "paths.x: json inside json"),
        ("{x: {transformer: hash, length: abc}}", "paths.x.length: 'abc' is not of type 'integer'"),
        ("{x: {transformer: fixed}}", "paths.x: 'value' is a required property"),
        ("{}", "paths"),
    ],
)
def test_bad_nested_rules_refused_at_validation(paths, expected):
    text = f"source_app: p\nanonymization_tables:\n  - table: t\n    columns:\n      doc: {{transformer: json, paths: {paths}}}\n"
    with pytest.raises(RulesError) as err:
        parse_rules_text(text)
    assert expected in str(err.value)


def test_json_refused_on_a_column_of_another_type(db):
    """json/jsonb and text columns (tests/anonymize/test_json_text_columns.py) take it; a number does not."""
    _pg, target = db
    execute(target, "CREATE TABLE notes (id int PRIMARY KEY, body int)")
    from scalingo_staging_sync.anonymize.planner import PlanError

    with pytest.raises(
        PlanError,
        match="transformer 'json' does not apply to type integer \\(accepts json, string columns\\)",
    ):
        anonymize(
            target,
            "source_app: p\nanonymization_tables:\n  - table: notes\n    columns:\n      body: {transformer: json, paths: {a: email}}\n",
        )


def test_a_quoted_path_names_a_key_that_holds_a_dot(db):
    """``'"owner.email"'`` is the key ``owner.email``, not the key ``email`` inside ``owner``: only the
    first is masked, verification passes, and the PII scan's view of what the rule leaves agrees."""
    from scalingo_staging_sync.pii.scanner import strip_json_paths

    _pg, target = db
    execute(
        target,
        """CREATE TABLE accounts (id int PRIMARY KEY, doc jsonb);
        INSERT INTO accounts VALUES (1, '{"owner.email": "ann@corp.test", "owner": {"email": "kept@corp.test"},
                                         "a\\"b": "x@corp.test"}')""",
    )
    rules = """
source_app: p
anonymization_tables:
  - table: accounts
    columns:
      doc: {transformer: json, paths: {'"owner.email"': email, '"a""b"': email}}
"""
    (item,) = anonymize(target, rules)
    (doc,) = execute(target, "SELECT doc FROM accounts")[0]
    assert doc["owner"] == {"email": "kept@corp.test"}
    assert doc["owner.email"].startswith("u") and doc["owner.email"] != "ann@corp.test"
    assert doc['a"b'].startswith("u") and doc['a"b'] != "x@corp.test"
    with target.connect(autocommit=True) as conn:
        assert verify_table(conn, item, SALT).passed
    left = json.loads(strip_json_paths(json.dumps(doc), ['"owner.email"', '"a""b"']))
    assert left == {"owner.email": None, "owner": {"email": "kept@corp.test"}, 'a"b': None}


def test_sql_grows_linearly_with_the_number_of_paths():
    """Each path names the document once: 24 paths under two arrays make SQL about 24 times one path's,
    not 2^24 times (the document so far is not repeated in both branches of a CASE)."""
    from psycopg import sql

    from scalingo_staging_sync.anonymize import transformers as tr

    column = tr.ColumnInfo("doc", "jsonb", "jsonb")

    def size(paths):
        expr = tr.get_transformer("json").expression(
            sql.Identifier("doc"), tr.BuildContext(column, {"paths": paths})
        )
        return len(expr.as_string(None))

    one = size({"a.*.k0": "email"})
    many = size({f"{arr}.*.k{i}": "email" for arr in ("a", "b") for i in range(12)})
    assert many < 30 * one, (one, many)


def test_pii_scan_judges_what_a_json_rule_leaves(on_load):
    """A json rule masks only its paths: the PII scan strips them from each sampled document and judges
    the rest. Row 2's ``contacts`` is an object, not the array ``*.email`` expects, so its e-mail was
    left as it is: the scan flags that column (content:email) while the masked paths raise nothing."""
    from scalingo_staging_sync.pii.scanner import (
        masked_columns_from_plan,
        partially_masked_from_plan,
        scan_target,
    )

    target, result = on_load
    items = [result["plan"]] if "plan" in result else []
    if not items:
        (item,) = plan_anonymization(target, rules_from(RULES))
        items = [item]
    kwargs = {
        "masked_columns": masked_columns_from_plan(items),
        "partially_masked": partially_masked_from_plan(items),
    }
    assert kwargs["partially_masked"]["public.profiles.contacts"] == ["*.email", "*.phone"]
    report = scan_target(target, **kwargs)
    assert [f.qualified_name for f in report.unmasked] == ["public.profiles.contacts"]
    (finding,) = report.unmasked
    assert {r["detector"] for r in finding.reasons if r["kind"] == "content"} == {"email"}
    statuses = {f.qualified_name: f.status for f in report.findings}
    assert statuses.get("public.profiles.prefs", "masked") == "masked"

    execute(target, "UPDATE profiles SET contacts = '[]' WHERE id = 2")
    assert scan_target(target, **kwargs).passed


def test_the_values_at_a_path_are_what_the_json_rule_masks():
    """One walker for the json rule's paths (its skip check, and the proofs' phrases of the names it
    masks): keys, '*' for every element, a number for one element; a missing path gives nothing."""
    from scalingo_staging_sync.anonymize.transformers import json_path_segments, json_values_at

    doc = {"owner": {"email": "a@x.test"}, "people": [{"name": "Ann Lee"}, {"name": "Bo Wu"}, {"x": 1}]}
    assert list(json_values_at(doc, json_path_segments("owner.email"))) == ["a@x.test"]
    assert list(json_values_at(doc, json_path_segments("people.*.name"))) == ["Ann Lee", "Bo Wu"]
    assert list(json_values_at(doc, json_path_segments("people.1.name"))) == ["Bo Wu"]
    assert list(json_values_at(doc, json_path_segments("people.7.name"))) == []
    assert list(json_values_at(doc, json_path_segments("owner.phone"))) == []


def test_an_empty_string_at_a_path_stays_empty_as_in_a_column(db):
    """'' at a path is what '' in a column is: nothing to mask. The transformers that keep '' in a
    column (``keeps_empty``) keep it inside a document too, so an app's "no pending change" marker stays
    one; those that do not (``fixed``) still replace it. A document whose only masked value is '' passes
    verification (it is left as it was); the other paths of the same document are masked."""
    _pg, target = db
    execute(
        target,
        """CREATE TABLE identities (id int PRIMARY KEY, data jsonb);
        INSERT INTO identities VALUES
          (1, '{"email": "", "phone": "", "name": "", "note": ""}'),
          (2, '{"email": "", "phone": "+33 6 12 34 56 78", "name": "Zoé Lefèvre", "note": "x"}'),
          (3, '{"emails": ["", "ann@corp.test"]}')""",
    )
    rules = """
source_app: p
anonymization_tables:
  - table: identities
    columns:
      data:
        transformer: json
        paths: {email: email, phone: phone, name: full_name, note: {transformer: fixed, value: "-"}, "emails.*": email}
"""
    (item,) = anonymize(target, rules)
    docs = dict(execute(target, "SELECT id, data FROM identities ORDER BY id"))
    assert docs[1] == {"email": "", "phone": "", "name": "", "note": "-"}
    assert docs[2]["email"] == "" and docs[2]["note"] == "-"
    assert docs[2]["phone"].startswith("+999") and docs[2]["name"] not in ("", "Zoé Lefèvre")
    assert docs[3]["emails"][0] == "" and docs[3]["emails"][1] not in ("", "ann@corp.test")
    with target.connect(autocommit=True) as conn:
        check = verify_table(conn, item, SALT)
    assert check.passed, check.problems
