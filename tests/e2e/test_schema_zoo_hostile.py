"""Schema zoo, hostile cases: schemas the zoo does not hold, each dumped from a production database and
driven through the same core (``run_core``) with the ``stream`` and ``trigger`` engines.

- identifiers at PostgreSQL's 63-byte limit, two masked tables sharing their first 62 bytes, a long
  multi-byte name, the same long name in two schemas, the same table name in two schemas with other rules;
- multi-level sub-partitioning with a partition attached with another column order and dropped columns;
- dropped columns before masked ones, a masked column added later with a DEFAULT;
- in-place masking (a condition) of a table without a primary key holding duplicate rows;
- a masked column in a primary key referenced by a foreign key from another masked table;
- masked column names of 63 bytes (two sharing 62), a ``<col>_md5`` at the limit, a multi-byte one; a
  table without a primary key with duplicate rows on load; a three-level inheritance tree masked in place;
- a GENERATED ALWAYS identity, arrays, an enum, bytea and jsonb masked on load and in place;
- columns differing only by case (DuckDB, the stream engine's, folds case) and DuckDB keywords;
- a column name holding a newline (a COPY statement over several lines).
"""

# ruff: noqa: S608  (test fixtures: SQL of fixed test identifiers)

from __future__ import annotations

import functools
import sys

import pytest

from tests.e2e import hard_dataset
from tests.e2e.hard_dataset import find_originals, production_dump
from tests.e2e.test_schema_zoo import _fetch, run_core

pytest.importorskip("duckdb")


@pytest.fixture(autouse=True)
def _only_this_tests_databases(staging_pg16, monkeypatch):
    """``find_originals`` searches the databases this test creates (every database of a run is new: a
    counter names them), not those other tests left on the shared server: tests/pii's ``chinook_gate``
    holds Chinook's originals by design, and failed these tests when run before them."""
    before = hard_dataset.database_names(staging_pg16)
    here = sys.modules[__name__]
    monkeypatch.setattr(here, "find_originals", functools.partial(find_originals, skip_databases=before))


L63 = "a" * 62 + "x"
L63B = "a" * 62 + "y"
LUTF = "é" * 31 + "z"  # 63 bytes


HOSTILE_SQL = f"""
CREATE SCHEMA billing;
CREATE TABLE public.users (id int PRIMARY KEY, junk1 text, email text NOT NULL, junk2 int, name text);
ALTER TABLE public.users DROP COLUMN junk1;
ALTER TABLE public.users DROP COLUMN junk2;
ALTER TABLE public.users ADD COLUMN phone text DEFAULT '+33 6 11 22 33 44';
INSERT INTO public.users (id, email, name, phone)
    SELECT g, 'pub.user' || g || '@prod-corp.test', 'Pubname' || g, '+33 6 55 00 00 ' || lpad(g::text, 2, '0')
    FROM generate_series(1, 20) g;
CREATE TABLE billing.users (id int PRIMARY KEY, email text, iban text, plan text);
INSERT INTO billing.users SELECT g, 'bill.user' || g || '@prod-corp.test', 'FR76IBANSECRET' || g, 'gold'
    FROM generate_series(1, 20) g;

CREATE TABLE "{L63}" (id int PRIMARY KEY, email text, kept text);
CREATE TABLE "{L63B}" (id int PRIMARY KEY, email text, kept text);
CREATE TABLE billing."{L63}" (id int PRIMARY KEY, email text, kept text);
CREATE TABLE "{LUTF}" (id int PRIMARY KEY, email text, kept text);
INSERT INTO "{L63}" SELECT g, 'long.x' || g || '@prod-corp.test', 'k' || g FROM generate_series(1, 10) g;
INSERT INTO "{L63B}" SELECT g, 'long.y' || g || '@prod-corp.test', 'k' || g FROM generate_series(1, 10) g;
INSERT INTO billing."{L63}" SELECT g, 'long.b' || g || '@prod-corp.test', 'k' || g FROM generate_series(1, 10) g;
INSERT INTO "{LUTF}" SELECT g, 'long.u' || g || '@prod-corp.test', 'k' || g FROM generate_series(1, 10) g;

CREATE TABLE ev (id int NOT NULL, region text NOT NULL, at date NOT NULL, email text, kept text)
    PARTITION BY LIST (region);
CREATE TABLE ev_eu PARTITION OF ev FOR VALUES IN ('eu') PARTITION BY RANGE (at);
CREATE TABLE ev_eu_2024 PARTITION OF ev_eu FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE ev_eu_2025 (junk int, kept text, email text, at date NOT NULL, region text NOT NULL, id int NOT NULL);
ALTER TABLE ev_eu_2025 DROP COLUMN junk;
ALTER TABLE ev_eu ATTACH PARTITION ev_eu_2025 FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE ev_us (kept text, junk int, email text, id int NOT NULL, at date NOT NULL, region text NOT NULL);
ALTER TABLE ev_us DROP COLUMN junk;
ALTER TABLE ev ATTACH PARTITION ev_us FOR VALUES IN ('us');
INSERT INTO ev SELECT g, (ARRAY['eu', 'us'])[1 + g % 2], DATE '2024-03-01' + (g * 20), 'ev' || g || '@prod-corp.test',
    'kept' || g FROM generate_series(1, 30) g;

CREATE TABLE logs (email text, kind text, detail text);
INSERT INTO logs SELECT 'log' || (g % 4) || '@prod-corp.test', CASE WHEN g % 3 = 0 THEN 'test' ELSE 'real' END,
    'same' FROM generate_series(1, 24) g;

CREATE TABLE accounts (email text PRIMARY KEY, name text);
CREATE TABLE memberships (id int PRIMARY KEY, account_email text REFERENCES accounts (email) ON UPDATE CASCADE,
    note text);
INSERT INTO accounts SELECT 'acct' || g || '@prod-corp.test', 'Acctname' || g FROM generate_series(1, 10) g;
INSERT INTO memberships SELECT g, 'acct' || (1 + g % 10) || '@prod-corp.test', 'n' || g FROM generate_series(1, 20) g;
"""

HOSTILE_RULES = f"""
source_app: hostile
anonymization_tables:
  - table: public.users
    columns: {{email: email, name: last_name, phone: phone}}
  - table: billing.users
    columns: {{email: email, iban: {{transformer: hash, length: 24}}}}
  - table: '"{L63}"'
    columns: {{email: email}}
  - table: '"{L63B}"'
    columns: {{email: email}}
  - table: 'billing."{L63}"'
    columns: {{email: email}}
  - table: '"{LUTF}"'
    columns: {{email: email}}
  - table: ev
    columns: {{email: email}}
  - table: logs
    condition: "kind <> 'test'"
    columns: {{email: email}}
  - table: accounts
    columns: {{email: email, name: last_name}}
  - table: memberships
    columns: {{account_email: email}}
pii_scan:
  on_unmasked: fail
  allow:
    - column: public.logs.email
      reason: "test rows kept on purpose"
verification:
  enabled: true
"""

ORIGINALS = [
    "pub.user",
    "Pubname",
    "+33 6 55",
    "bill.user",
    "IBANSECRET",
    "long.x",
    "long.y",
    "long.b",
    "long.u",
    "ev1@",
    "acct",
    "Acctname",
]


@pytest.fixture(scope="module")
def hostile_dump(prod_pg, tmp_path_factory):
    path = tmp_path_factory.mktemp("hostile") / "hostile.pgsql"
    return production_dump(prod_pg, path, "schema_zoo_hostile_prod", HOSTILE_SQL)


@pytest.mark.parametrize(
    ("engine", "scalingo_role"), [("stream", False), ("trigger", False), ("stream", True)]
)
def test_hostile_schema(hostile_dump, staging_pg16, engine, scalingo_role):
    out = run_core(hostile_dump, staging_pg16, HOSTILE_RULES, engine, scalingo_role=scalingo_role)
    db = out["db"]
    try:
        assert out["verification"]["passed"] and out["scan"].passed
        assert find_originals(staging_pg16, ORIGINALS) == []
        q = _fetch
        assert q(staging_pg16, db, "SELECT count(*) FROM public.users WHERE email LIKE '%@example.com'") == [
            (20,)
        ]
        assert q(
            staging_pg16, db, "SELECT count(*), min(plan) FROM billing.users WHERE email LIKE '%@example.com'"
        ) == [(20, "gold")]
        for schema, name in [("public", L63), ("public", L63B), ("billing", L63), ("public", LUTF)]:
            rows = q(staging_pg16, db, f'SELECT id, email, kept FROM "{schema}"."{name}" ORDER BY id')
            assert [(r[0], r[2]) for r in rows] == [(g, f"k{g}") for g in range(1, 11)], name
            assert all(r[1].endswith("@example.com") for r in rows), name
        rows = q(staging_pg16, db, "SELECT id, region, at::text, email, kept FROM ev ORDER BY id")
        assert [(r[0], r[4]) for r in rows] == [(g, f"kept{g}") for g in range(1, 31)]
        assert all(r[3].endswith("@example.com") for r in rows)
        rows = q(staging_pg16, db, "SELECT email, kind, detail FROM logs ORDER BY kind, email")
        assert len(rows) == 24
        assert all(e.endswith("@example.com") for e, k, _ in rows if k == "real")
        assert all(e.endswith("@prod-corp.test") for e, k, _ in rows if k == "test")
        rows = q(
            staging_pg16,
            db,
            "SELECT count(*) FROM memberships m JOIN accounts a ON a.email = m.account_email",
        )
        assert rows == [(20,)]
    finally:
        staging_pg16.drop_database(db)


C63 = "c" * 62 + "1"
C63B = "c" * 62 + "2"
M59 = "m" * 59
COLS_SQL = f"""
CREATE TABLE wide_cols (id int PRIMARY KEY, "{C63}" text, "{C63B}" text, "{M59}" text, "{M59}_md5" text, kind text,
    "{"é" * 31}z" text);
INSERT INTO wide_cols SELECT g, 'colone' || g || '@prod-corp.test', 'coltwo' || g || '@prod-corp.test', 'colfour' || g, md5('colfour' || g),
    CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END, 'colthree' || g FROM generate_series(1, 12) g;
CREATE TABLE wide_cols_cond (LIKE wide_cols);
INSERT INTO wide_cols_cond SELECT * FROM wide_cols;
CREATE TABLE nopk (email text, name text, kind text);
INSERT INTO nopk SELECT 'dup' || (g % 3) || '@prod-corp.test', 'Dupname' || (g % 3), 'k' || (g % 2) FROM generate_series(1, 12) g;
CREATE TABLE parent_p (id int, email text);
CREATE TABLE child_c (extra text) INHERITS (parent_p);
CREATE TABLE grandchild_g (more text) INHERITS (child_c);
INSERT INTO parent_p SELECT g, 'par' || g || '@prod-corp.test' FROM generate_series(1, 5) g;
INSERT INTO child_c SELECT g, 'chi' || g || '@prod-corp.test', 'e' FROM generate_series(6, 10) g;
INSERT INTO grandchild_g SELECT g, 'gra' || g || '@prod-corp.test', 'e', 'm' FROM generate_series(11, 15) g;
"""
COLS_RULES = f"""
source_app: hostile
anonymization_tables:
  - table: wide_cols
    columns: {{{C63}: email, {C63B}: email, {"é" * 31}z: hash, {M59}: hash}}
  - table: wide_cols_cond
    condition: "kind = 'a' OR kind = 'b'"
    columns: {{{C63}: email, {C63B}: email, {"é" * 31}z: hash, {M59}: hash}}
  - table: nopk
    columns: {{email: email, name: last_name}}
  - table: parent_p
    condition: "id > 0"
    columns: {{email: email}}
pii_scan:
  on_unmasked: fail
verification:
  enabled: true
"""


@pytest.mark.parametrize("engine", ["stream", "trigger"])
def test_long_column_names_no_key_and_inheritance(prod_pg, staging_pg16, tmp_path, engine):
    dump = production_dump(prod_pg, tmp_path / "cols.pgsql", "schema_zoo_hostile_cols", COLS_SQL)
    out = run_core(dump, staging_pg16, COLS_RULES, engine)
    try:
        assert out["verification"]["passed"] and out["scan"].passed
        assert (
            find_originals(
                staging_pg16,
                ["colone", "coltwo", "colthree", "colfour", "dup", "Dupname", "par", "chi", "gra"],
            )
            == []
        )
        assert _fetch(staging_pg16, out["db"], "SELECT count(*) FROM nopk") == [(12,)]
        assert _fetch(staging_pg16, out["db"], "SELECT count(*) FROM parent_p") == [(15,)]
    finally:
        staging_pg16.drop_database(out["db"])


TYPES_SQL = """
CREATE TYPE mood AS ENUM ('happy', 'sad');
CREATE TABLE idents (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, email varchar(255), kind text,
    emails text[], feeling mood, secret bytea, doc jsonb);
INSERT INTO idents (email, kind, emails, feeling, secret, doc)
    SELECT 'ident' || g || '@prod-corp.test', CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END,
    ARRAY['arr' || g || '@prod-corp.test', 'arrb' || g || '@prod-corp.test'], 'happy', convert_to('bytesecret' || g, 'UTF8'),
    jsonb_build_object('email', 'json' || g || '@prod-corp.test', 'n', g) FROM generate_series(1, 12) g;
CREATE TABLE idents_cond (LIKE idents INCLUDING IDENTITY);
INSERT INTO idents_cond OVERRIDING SYSTEM VALUE SELECT * FROM idents;
CREATE VIEW idents_v AS SELECT id, lower(email) AS mail FROM idents;
"""
TYPES_RULES = """
source_app: hostile
anonymization_tables:
  - table: idents
    columns:
      email: email
      emails: "null"
      feeling: {transformer: fixed, value: sad}
      secret: "null"
      doc: {transformer: json, paths: {email: email}}
  - table: idents_cond
    condition: "kind IN ('a', 'b')"
    columns:
      email: email
      emails: "null"
      feeling: {transformer: fixed, value: sad}
      secret: "null"
      doc: {transformer: json, paths: {email: email}}
pii_scan:
  on_unmasked: fail
verification:
  enabled: true
"""


@pytest.mark.parametrize("engine", ["stream", "trigger"])
def test_identity_arrays_enums_bytea_json(prod_pg, staging_pg16, tmp_path, engine):
    dump = production_dump(prod_pg, tmp_path / "types.pgsql", "schema_zoo_hostile_types", TYPES_SQL)
    out = run_core(dump, staging_pg16, TYPES_RULES, engine)
    try:
        assert out["verification"]["passed"] and out["scan"].passed
        assert find_originals(staging_pg16, ["ident", "arr", "bytesecret", "json"]) == []
        assert _fetch(staging_pg16, out["db"], "SELECT count(*), min(feeling::text) FROM idents_cond") == [
            (12, "sad")
        ]
    finally:
        staging_pg16.drop_database(out["db"])


CASE_SQL = """
CREATE TABLE "Contacts" (id int PRIMARY KEY, "Email" text, email text, "EMAIL" text, "Name" text, name text,
    "pivot" text, "qualify" text);
INSERT INTO "Contacts" SELECT g, 'upper' || g || '@prod-corp.test', 'lower' || g || '@prod-corp.test',
    'keep' || g || '@internal.test', 'Uppername' || g, 'keptname' || g, 'pivotsecret' || g, 'qualkept' || g FROM generate_series(1, 12) g;
"""
CASE_RULES = """
source_app: hostile
anonymization_tables:
  - table: '"Contacts"'
    columns:
      Email: email
      email: {transformer: hash, length: 20}
      Name: last_name
      pivot: hash
pii_scan:
  on_unmasked: warn
verification:
  enabled: true
"""


@pytest.mark.parametrize("engine", ["stream", "trigger"])
def test_columns_differing_only_by_case(prod_pg, staging_pg16, tmp_path, engine):
    dump = production_dump(prod_pg, tmp_path / "case.pgsql", "schema_zoo_hostile_case", CASE_SQL)
    out = run_core(dump, staging_pg16, CASE_RULES, engine)
    try:
        assert out["verification"]["passed"]
        assert find_originals(staging_pg16, ["upper", "lower", "Uppername", "pivotsecret"]) == []
        rows = _fetch(
            staging_pg16, out["db"], 'SELECT id, "EMAIL", name, qualify FROM "Contacts" ORDER BY id'
        )
        assert rows == [(g, f"keep{g}@internal.test", f"keptname{g}", f"qualkept{g}") for g in range(1, 13)]
    finally:
        staging_pg16.drop_database(out["db"])


NEWLINE_SQL = """
CREATE TABLE "newline" (id int PRIMARY KEY, "e
mail" text, "no
te" text, "x"")
FROM stdin;
y" text);
INSERT INTO "newline" SELECT g, 'nlmail' || g || '@prod-corp.test', 'kept note ' || g, 'nlsecret' || g FROM generate_series(1, 12) g;
CREATE TABLE plain (id int PRIMARY KEY, "no
te" text, email text);
INSERT INTO plain SELECT g, 'plain note ' || g, 'plainmail' || g || '@prod-corp.test' FROM generate_series(1, 12) g;
"""
NEWLINE_RULES = """
source_app: hostile
anonymization_tables:
  - table: newline
    columns:
      "e\\nmail": email
      "x\\")\\nFROM stdin;\\ny": hash
  - table: plain
    columns: {email: email}
pii_scan:
  on_unmasked: warn
verification:
  enabled: true
"""


@pytest.mark.parametrize("engine", ["stream", "trigger"])
def test_names_holding_a_newline(prod_pg, staging_pg16, tmp_path, engine):
    """A quoted column name holding a newline (and even ``") FROM stdin;`` on a line of its
    own): pg_dump writes the COPY statement over several lines. Before the fix, the on-load proof read
    only its first line and failed with ``ValueError: substring not found`` before the data section."""
    dump = production_dump(prod_pg, tmp_path / "newline.pgsql", "schema_zoo_hostile_newline", NEWLINE_SQL)
    out = run_core(dump, staging_pg16, NEWLINE_RULES, engine)
    try:
        assert out["verification"]["passed"]
        assert find_originals(staging_pg16, ["nlmail", "nlsecret", "plainmail"]) == []
        rows = _fetch(staging_pg16, out["db"], 'SELECT id, "no\nte" FROM newline ORDER BY id')
        assert rows == [(g, f"kept note {g}") for g in range(1, 13)]
        rows = _fetch(staging_pg16, out["db"], 'SELECT id, "no\nte" FROM plain ORDER BY id')
        assert rows == [(g, f"plain note {g}") for g in range(1, 13)]
    finally:
        staging_pg16.drop_database(out["db"])


def test_a_table_name_holding_a_newline_is_refused_from_the_archive(prod_pg, staging_pg16, tmp_path):
    """``pg_restore -l`` prints a newline of a table's name as a space. Before the fix, the pre-data
    created ``"new<LF>line"``, then the data section looked for ``"new line"`` and failed with
    ``relation "public.new line" does not exist``, even for a table no rule names. Now the archive plan
    refuses it, naming the table and how to fix it, before anything is written."""
    from scalingo_staging_sync.inventory.model import InventoryError

    dump = production_dump(
        prod_pg,
        tmp_path / "newline_table.pgsql",
        "schema_zoo_hostile_newline_table",
        'CREATE TABLE "new\nline" (id int PRIMARY KEY, note text);'
        "INSERT INTO \"new\nline\" VALUES (1, 'x');"
        "CREATE TABLE t (id int PRIMARY KEY, email text); INSERT INTO t VALUES (1, 'nl@prod-corp.test');",
    )
    rules = "source_app: x\nanonymization_tables:\n  - table: t\n    columns: {email: email}\n"
    with pytest.raises(InventoryError) as err:
        run_core(dump, staging_pg16, rules, "stream")
    assert "'public.new\\nline'" in str(err.value) and "RENAME" in str(err.value), str(err.value)
    assert find_originals(staging_pg16, ["nl@prod-corp.test"]) == []


INHERIT_SQL = """
CREATE TABLE p (id int PRIMARY KEY, email text, kind text);
CREATE TABLE c (phone text) INHERITS (p);
CREATE TABLE m (extra text) INHERITS (p);
CREATE TABLE g (more text) INHERITS (m);
CREATE TABLE ref (id int PRIMARY KEY, email text);
INSERT INTO p SELECT g, 'inh' || g || '@prod-corp.test', 'a' FROM generate_series(1, 5) g;
INSERT INTO c SELECT g, 'inh' || g || '@prod-corp.test', 'a', '+33 6 12 00 00 0' || g FROM generate_series(6, 9) g;
INSERT INTO m SELECT g, 'inh' || g || '@prod-corp.test', 'a', 'x' FROM generate_series(10, 14) g;
INSERT INTO g SELECT g, 'inh' || g || '@prod-corp.test', 'a', 'x', 'y' FROM generate_series(15, 19) g;
INSERT INTO ref SELECT g, 'inh' || g || '@prod-corp.test' FROM generate_series(1, 19) g;
"""
INHERIT_RULES = """
source_app: hostile
anonymization_tables:
  - table: p
    condition: "kind = 'a'"
    columns: {email: email}
  - table: c
    columns: {phone: phone, email: {transformer: hash, length: 20}}
  - table: ref
    columns: {email: email}
pii_scan:
  on_unmasked: fail
verification:
  enabled: true
"""


@pytest.mark.parametrize(
    ("engine", "scalingo_role"), [("stream", False), ("trigger", False), ("stream", True)]
)
def test_inheritance_descendants_with_items_of_their_own_are_masked_once(
    prod_pg, staging_pg16, tmp_path, engine, scalingo_role
):
    """A parent masked in place (a condition) whose inheritance descendants are items of their own: a
    child with its own rule (masked on load) and a grandchild under a child that takes the parent's rule.
    Before the fix, the parent's UPDATE reached the child with its own rule (its hashed e-mails were
    masked again with the parent's ``email``), and the middle child's UPDATE reached the grandchild (its
    e-mails masked twice: ``email(email(x))``, no longer the output the same address gets in every other
    table). With the fix each is masked once, by its own item; the parent's proof samples only its own
    rows (a child masked on load before it would otherwise read as "still holds the original")."""
    dump = production_dump(prod_pg, tmp_path / "inherit.pgsql", "schema_zoo_hostile_inherit", INHERIT_SQL)
    out = run_core(dump, staging_pg16, INHERIT_RULES, engine, scalingo_role=scalingo_role)
    try:
        assert out["verification"]["passed"] and out["scan"].passed
        assert find_originals(staging_pg16, ["inh", "+33 6 12"]) == []
        ref = dict(_fetch(staging_pg16, out["db"], "SELECT id, email FROM ref"))
        rows = _fetch(
            staging_pg16, out["db"], "SELECT tableoid::regclass::text, id, email FROM p ORDER BY id"
        )
        assert len(rows) == 19
        for table, id_, email in rows:
            if table == "c":  # its own rule, once
                assert len(email) == 20 and all(ch in "0123456789abcdef" for ch in email), (table, id_, email)
            else:  # the parent's rule, once: the output the same address gets in ref
                assert email == ref[id_], (table, id_, email)
    finally:
        staging_pg16.drop_database(out["db"])


SUBPART_SQL = """
CREATE TABLE sp (id int, region text, at date, email text, kind text) PARTITION BY LIST (region);
CREATE TABLE sp_eu PARTITION OF sp FOR VALUES IN ('eu') PARTITION BY RANGE (at);
CREATE TABLE sp_eu_2024 PARTITION OF sp_eu FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE sp_us PARTITION OF sp FOR VALUES IN ('us');
INSERT INTO sp SELECT g, (ARRAY['eu', 'us'])[1 + g % 2], DATE '2024-03-01' + g, 'sp' || g || '@prod-corp.test', 'a'
    FROM generate_series(1, 10) g;
"""
SUBPART_PARENT = "  - table: sp\n{condition}    columns: {{email: email}}\n"
SUBPART_OWN = "  - table: sp_eu\n    columns: {email: {transformer: hash, length: 20}}\n"


@pytest.mark.parametrize(
    ("order", "condition"), [("own first", ""), ("parent first", "    condition: \"kind = 'a'\"\n")]
)
def test_a_sub_partitioned_table_with_its_own_rule_under_a_ruled_parent(
    prod_pg, staging_pg16, tmp_path, order, condition
):
    """``sp`` (ruled) -> ``sp_eu`` (partitioned, a rule of its own) -> ``sp_eu_2024``. Before the fix, the
    leaf got two plan items, one with each rule, so it was masked twice: which rule won depended on the
    rules' order and mode (with a condition on ``sp``, its in-place UPDATE masked the leaf's hashes
    again with ``email``). Now the leaf takes its nearest ruled ancestor's rule, once."""
    dump = production_dump(prod_pg, tmp_path / "subpart.pgsql", "schema_zoo_hostile_subpart", SUBPART_SQL)
    parent = SUBPART_PARENT.format(condition=condition)
    rules = "source_app: hostile\nanonymization_tables:\n" + (
        SUBPART_OWN + parent if order == "own first" else parent + SUBPART_OWN
    )
    out = run_core(dump, staging_pg16, rules, "stream")
    try:
        tables = [i["table"] for i in out["plan"]["items"]]
        assert sorted(tables) == ["public.sp_eu_2024", "public.sp_us"], tables
        assert out["verification"]["passed"] and out["scan"].passed
        assert find_originals(staging_pg16, ["@prod-corp.test"]) == []
        for table, email in _fetch(staging_pg16, out["db"], "SELECT tableoid::regclass::text, email FROM sp"):
            if table == "sp_eu_2024":
                assert len(email) == 20 and "@" not in email, (table, email)
            else:
                assert email.endswith("@example.com"), (table, email)
    finally:
        staging_pg16.drop_database(out["db"])


MULTI_SQL = """
CREATE TABLE p1 (id int PRIMARY KEY, email text);
CREATE TABLE p2 (id int PRIMARY KEY, phone text);
CREATE TABLE c2 (x text) INHERITS (p1, p2);
INSERT INTO p1 VALUES (1, 'multi1@prod-corp.test');
INSERT INTO p2 VALUES (2, '+33 6 98 00 00 02');
INSERT INTO c2 SELECT g, 'multi' || g || '@prod-corp.test', '+33 6 98 00 00 ' || lpad(g::text, 2, '0'), 'x'
    FROM generate_series(3, 8) g;
"""
MULTI_RULES = """
source_app: hostile
anonymization_tables:
  - table: p1
    columns: {email: email}
  - table: p2
    columns: {phone: phone}
"""


@pytest.mark.parametrize("engine", ["stream", "trigger"])
def test_multiple_inheritance_from_two_ruled_tables(prod_pg, staging_pg16, tmp_path, engine):
    """``c2`` inherits from ``p1`` (ruled: email) and ``p2`` (ruled: phone). Before the fix it got one plan
    item from each parent, and the run failed only at the verification, after the whole load, with
    ``none of the 1 sampled keys was found after anonymization``, which named neither the cause nor the
    fix. Now the archive plan refuses it, naming the table and how to fix it; with a rule of its own for
    both columns the run passes."""
    from scalingo_staging_sync.anonymize.planner import PlanError

    dump = production_dump(prod_pg, tmp_path / "multi.pgsql", "schema_zoo_hostile_multi", MULTI_SQL)
    with pytest.raises(PlanError) as err:
        run_core(dump, staging_pg16, MULTI_RULES, engine)
    assert "public.c2 inherits from several ruled tables" in str(err.value), str(err.value)
    own = MULTI_RULES + "  - table: c2\n    columns: {email: email, phone: phone}\n"
    out = run_core(dump, staging_pg16, own, engine)
    try:
        assert [i["table"] for i in out["plan"]["items"]].count("public.c2") == 1
        assert out["verification"]["passed"] and out["scan"].passed
        assert find_originals(staging_pg16, ["multi", "+33 6 98"]) == []
    finally:
        staging_pg16.drop_database(out["db"])


def test_a_query_on_a_parent_whose_child_has_its_own_rule_is_warned_about(prod_pg, tmp_path):
    """A query rule on an inheritance parent reaches the rows of a child that has its own rule (masked
    twice, the query's output overriding the child's rule). The plan now says so; before, nothing did."""
    from scalingo_staging_sync.anonymize.rules import parse_rules_text
    from scalingo_staging_sync.inventory import plan_from_archive
    from scalingo_staging_sync.restore.pgtools import find_pg_tools
    from scalingo_staging_sync.testing.postgres import pg_bin_dir

    dump = production_dump(
        prod_pg,
        tmp_path / "query.pgsql",
        "schema_zoo_hostile_query",
        "CREATE TABLE qp (id int PRIMARY KEY, email text); CREATE TABLE qc (phone text) INHERITS (qp);"
        "INSERT INTO qc VALUES (2, 'q2@prod-corp.test', '+33 6 98 00 00 02');",
    )
    rules = parse_rules_text(
        "source_app: hostile\nanonymization_tables:\n"
        "  - table: qp\n    query: \"UPDATE qp SET email = 'x' || id || '@example.com'\"\n"
        "  - table: qc\n    columns: {email: {transformer: hash, length: 20}, phone: phone}\n"
    )
    plan = plan_from_archive(str(dump), rules, tools=find_pg_tools(pg_bin_dir(16))).to_json()
    assert any(
        "public.qc has its own rule" in w and "UPDATE ONLY public.qp" in w for w in plan["warnings"]
    ), plan["warnings"]
