"""The archive's inventory and classification, on real pg_dump 16 and 18 archives built per test, and
the restore honouring the classification (nothing excluded or dropped ever loads)."""

from __future__ import annotations

import json

import pytest

from scalingo_staging_sync.anonymize.planner import PlanError, keeps_unique
from scalingo_staging_sync.anonymize.transformers import ColumnInfo, all_transformers
from scalingo_staging_sync.inventory import (
    ArchivePlan,
    InventoryError,
    build_inventory,
    plan_from_archive,
)
from scalingo_staging_sync.inventory.build import _check_descs
from scalingo_staging_sync.restore.runner import run_pg_restore
from scalingo_staging_sync.restore.toc import parse_toc_line
from scalingo_staging_sync.tablename import TableName

from .conftest import query, rules_from

VERSIONS = pytest.mark.parametrize("version", [16, 18], ids=["pg_dump16", "pg_dump18"])

LO_DB = """
CREATE TABLE docs (id int PRIMARY KEY, owner_email text, scan oid);
INSERT INTO docs VALUES (1, 'alice@corp.example', lo_from_bytea(424242, 'PASSPORT alice 12AB34567'));
SELECT lo_from_bytea(424243, 'payslip bob');
COMMENT ON LARGE OBJECT 424242 IS 'passport of alice';
"""


def classes_of(plan: ArchivePlan) -> dict[tuple[str, str | None], str]:
    return {(c.desc, str(c.table) if c.table else None): c.cls for c in plan.classification}


@VERSIONS
def test_large_objects_dropped_by_default(archives, fresh_db, version):
    dump, tools = archives.make(LO_DB, version)
    inv = build_inventory(dump, tools)
    assert inv.large_object_count == 2
    lo_entries = [e for e in inv.data_entries if e.is_large_object]
    assert lo_entries, "the archive's large-object entries are inventoried"
    plan = plan_from_archive(dump, rules_from("source_app: p\n"), tools=tools)
    assert plan.large_objects == {"policy": "drop", "count": 2}
    for c in plan.classification:
        if c.desc in {"BLOB", "BLOBS", "BLOB METADATA"}:
            assert c.cls == "dropped" and "large_objects: keep" in c.reason
    assert {e.dump_id for e in lo_entries} <= set(plan.skip_dump_ids)
    assert set(inv.large_object_dependents) <= set(plan.skip_dump_ids)  # the COMMENT on the object

    target = fresh_db(version)
    result = run_pg_restore(dump, target, section="all", tools=tools, skip_dump_ids=plan.skip_dump_ids)
    assert query(target, "SELECT count(*) FROM pg_largeobject_metadata") == [(0,)]
    assert query(target, "SELECT count(*) FROM pg_largeobject") == [(0,)]
    assert query(target, "SELECT count(*) FROM docs") == [(1,)]
    assert sum("left out by the archive plan" in s for s in result.skipped) >= 3  # LOs + comment


@VERSIONS
def test_large_objects_kept_on_request_are_scanned(archives, fresh_db, version):
    dump, tools = archives.make(LO_DB, version)
    plan = plan_from_archive(dump, rules_from("source_app: p\nlarge_objects: keep\n"), tools=tools)
    assert plan.large_objects == {"policy": "keep", "count": 2}
    lo = [c for c in plan.classification if c.desc in {"BLOB", "BLOBS", "BLOB METADATA"}]
    assert lo and all(c.cls == "scanned" for c in lo)
    assert not {c.dump_id for c in lo} & set(plan.skip_dump_ids)

    target = fresh_db(version)
    run_pg_restore(dump, target, section="all", tools=tools, skip_dump_ids=plan.skip_dump_ids)
    assert query(target, "SELECT count(*) FROM pg_largeobject_metadata") == [(2,)]
    assert query(target, "SELECT convert_from(lo_get(424242), 'UTF8')") == [("PASSPORT alice 12AB34567",)]


def test_large_objects_key_validated():
    from scalingo_staging_sync.anonymize.rules import RulesError

    with pytest.raises(RulesError, match="large_objects"):
        rules_from("source_app: p\nlarge_objects: maybe\n")
    assert rules_from("source_app: p\n").large_objects == "drop"


PARTITIONED_DB = """
CREATE TABLE audit_log (id int, at date NOT NULL, actor_email text, ip text) PARTITION BY RANGE (at);
CREATE TABLE audit_2024 PARTITION OF audit_log FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE audit_2025 PARTITION OF audit_log FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')
    PARTITION BY LIST (id);
CREATE TABLE audit_2025_a PARTITION OF audit_2025 FOR VALUES IN (1, 2);
CREATE TABLE audit_2025_b PARTITION OF audit_2025 DEFAULT;
CREATE TABLE notes (id int PRIMARY KEY, body text);
INSERT INTO audit_log VALUES (1, '2024-02-02', 'a@corp.example', '10.0.0.1'),
                             (2, '2025-02-02', 'b@corp.example', '10.0.0.2'),
                             (9, '2025-03-03', 'c@corp.example', '10.0.0.3');
INSERT INTO notes VALUES (1, 'hello');
"""


@VERSIONS
def test_excluding_a_partitioned_parent_excludes_every_partition(archives, fresh_db, version):
    dump, tools = archives.make(PARTITIONED_DB, version)
    inv = build_inventory(dump, tools)
    parent = TableName.parse("audit_log")
    assert inv.tables[parent].kind == "partitioned table"
    assert set(inv.descendants(parent)) == {
        TableName.parse(n) for n in ("audit_2024", "audit_2025", "audit_2025_a", "audit_2025_b")
    }
    assert inv.ancestors(TableName.parse("audit_2025_a")) == [
        TableName.parse("audit_2025"),
        TableName.parse("audit_log"),
    ]
    plan = plan_from_archive(dump, rules_from("source_app: p\nexclude_tables: [audit_log]\n"), tools=tools)
    classes = classes_of(plan)
    for leaf in ("public.audit_2024", "public.audit_2025_a", "public.audit_2025_b"):
        assert classes[("TABLE DATA", leaf)] == "excluded"
    assert classes[("TABLE DATA", "public.notes")] == "scanned"
    assert "public.audit_2025_a" in plan.excluded_tables and "public.notes" in plan.scanned_tables

    target = fresh_db(version)
    run_pg_restore(dump, target, section="all", tools=tools, skip_dump_ids=plan.skip_dump_ids)
    assert query(target, "SELECT count(*) FROM audit_log") == [(0,)]
    assert query(target, "SELECT count(*) FROM notes") == [(1,)]


def test_restore_api_takes_the_plan(archives, staging_pg16):
    """``restore(..., plan=)``: the archive plan's JSON (as XCom carries it) is honoured end to end."""
    from scalingo_staging_sync.pgconn import PgTarget
    from scalingo_staging_sync.restore.api import restore
    from scalingo_staging_sync.restore.errors import RestoreError

    dump, tools = archives.make(PARTITIONED_DB, 16)
    plan = plan_from_archive(dump, rules_from("source_app: p\nexclude_tables: [audit_log]\n"), tools=tools)
    staging_pg16.create_database("inv_api_target")
    try:
        target = PgTarget(
            host=staging_pg16.host, port=staging_pg16.port, user="postgres", dbname="inv_api_target"
        )
        out = restore(dump, target, mode="in_place", tools=tools, plan=json.loads(json.dumps(plan.to_json())))
        assert query(target, "SELECT count(*) FROM audit_log") == [(0,)]
        assert "public.audit_2025_b" in out["excluded"]
        assert any("archive plan: excluded" in s for s in out["skipped"])
        # the plan's skip_dump_ids are positions in this archive's TOC: another archive is refused
        # before anything is touched
        other, _ = archives.make(PARTITIONED_DB + "CREATE TABLE extra (id int);", 16)
        staging_pg16.create_database("inv_api_other")
        other_target = PgTarget(
            host=staging_pg16.host, port=staging_pg16.port, user="postgres", dbname="inv_api_other"
        )
        with pytest.raises(RestoreError, match=r"archive plan was made from another archive"):
            restore(other, other_target, mode="in_place", tools=tools, plan=plan.to_json())
        assert query(other_target, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]
    finally:
        staging_pg16.drop_database("inv_api_target")
        staging_pg16.drop_database("inv_api_other")


INHERIT_DB = """
CREATE TABLE people (id int PRIMARY KEY, email text NOT NULL, name text);
CREATE TABLE vip_people (level int) INHERITS (people);
CREATE TABLE vvip_people (perks text) INHERITS (vip_people);
INSERT INTO people VALUES (1, 'p@corp.example', 'Pat');
INSERT INTO vip_people VALUES (2, 'v@corp.example', 'Val', 3);
INSERT INTO vvip_people VALUES (3, 'w@corp.example', 'Wes', 5, 'spa');
"""


@VERSIONS
def test_ruled_parent_gives_items_to_its_inheritance_children(archives, version):
    dump, tools = archives.make(INHERIT_DB, version)
    rules = rules_from(
        """
        source_app: p
        anonymization_tables:
          - table: people
            columns: {email: email, name: first_name}
        """
    )
    plan = plan_from_archive(dump, rules, tools=tools)
    tables = [i["table"] for i in plan.items]
    assert tables == ["public.people", "public.vip_people", "public.vvip_people"]
    for item in plan.items:
        assert item["columns"]["email"]["transformer"] == "email"
        assert item["masked_columns"] == ["email", "name"]
        assert set(item) - {"children_planned"} == {
            "table", "schema", "name", "mode", "columns", "strategy", "condition", "query",
            "key_columns", "masked_columns", "warnings",
        }  # fmt: skip
    assert plan.items[0]["children_planned"] is True  # the parent's in-place UPDATE is UPDATE ONLY
    assert "inheritance child of public.people" in plan.items[2]["warnings"][-1]
    classes = classes_of(plan)
    for t in tables:
        assert classes[("TABLE DATA", t)] == "masked"
    assert "public.vvip_people.email" in plan.masked_columns


SAME_NAME_DB = """
CREATE SCHEMA crm;
CREATE TABLE sessions (id int PRIMARY KEY, token text, ip text);
CREATE TABLE crm.sessions (id int PRIMARY KEY, token text, user_email text);
INSERT INTO sessions VALUES (1, 'tok-public', '10.0.0.1');
INSERT INTO crm.sessions VALUES (1, 'tok-crm', 'c@corp.example');
"""


@VERSIONS
def test_bare_exclusion_beside_a_ruled_table_of_the_same_name(archives, fresh_db, version):
    dump, tools = archives.make(SAME_NAME_DB, version)
    rules = rules_from(
        """
        source_app: p
        exclude_tables: [sessions]
        anonymization_tables:
          - table: crm.sessions
            columns: {user_email: email, token: {transformer: hash}}
        """
    )
    plan = plan_from_archive(dump, rules, tools=tools)
    assert [i["table"] for i in plan.items] == ["crm.sessions"]
    classes = classes_of(plan)
    assert classes[("TABLE DATA", "public.sessions")] == "excluded"
    assert classes[("TABLE DATA", "crm.sessions")] == "masked"
    assert plan.excluded_tables == ["public.sessions"]

    target = fresh_db(version)
    run_pg_restore(dump, target, section="all", tools=tools, skip_dump_ids=plan.skip_dump_ids)
    assert query(target, "SELECT count(*) FROM public.sessions") == [(0,)]
    assert query(target, "SELECT count(*) FROM crm.sessions") == [(1,)]


NON_ASCII = "é" * 30  # 60 bytes in UTF-8
assert len(NON_ASCII.encode()) == 60
NAMES_DB = """
CREATE SCHEMA "Sales Dept";
CREATE TABLE "Sales Dept"."Order.Items" (id int PRIMARY KEY, "Buyer Email" varchar(80) UNIQUE, note text);
CREATE TABLE "MixedCase" ("Id" int PRIMARY KEY, "FullName" text);
CREATE TABLE "{NON_ASCII}" (id int PRIMARY KEY, "{NON_ASCII}" text);
INSERT INTO "Sales Dept"."Order.Items" VALUES (1, 'b@corp.example', 'n');
INSERT INTO "MixedCase" VALUES (1, 'Ann Lee');
INSERT INTO "{NON_ASCII}" VALUES (1, 'secret');
""".replace("{NON_ASCII}", NON_ASCII)


@VERSIONS
def test_quoted_mixed_case_and_long_non_ascii_names(archives, version):
    dump, tools = archives.make(NAMES_DB, version)
    inv = build_inventory(dump, tools)
    order = TableName("Sales Dept", "Order.Items")
    assert order in inv.tables
    assert inv.tables[order].columns["Buyer Email"].max_length == 80
    assert TableName("public", NON_ASCII) in inv.tables
    rules = rules_from(
        f"""
        source_app: p
        anonymization_tables:
          - table: '"Sales Dept"."Order.Items"'
            columns: {{"Buyer Email": {{transformer: hash}}}}
          - table: MixedCase
            columns: {{FullName: full_name}}
          - table: {NON_ASCII}
            columns: {{"{NON_ASCII}": {{transformer: fixed, value: x}}}}
        """
    )
    plan = plan_from_archive(dump, rules, tools=tools)
    assert [i["table"] for i in plan.items] == [
        'Sales Dept."Order.Items"',
        "public.MixedCase",
        f"public.{NON_ASCII}",
    ]
    assert [TableName.parse(i["table"]) for i in plan.items] == [
        order, TableName("public", "MixedCase"), TableName("public", NON_ASCII)
    ]  # fmt: skip
    assert plan.items[0]["schema"] == "Sales Dept" and plan.items[0]["name"] == "Order.Items"
    classes = classes_of(plan)
    assert classes[("TABLE DATA", str(order))] == "masked"
    assert classes[("TABLE DATA", f"public.{NON_ASCII}")] == "masked"
    # a wrong case is not silently matched: it is refused with a suggestion
    with pytest.raises(PlanError, match=r"public\.mixedcase is not a table.*did you mean public\.MixedCase"):
        plan_from_archive(
            dump,
            rules_from(
                "source_app: p\nanonymization_tables:\n  - {table: mixedcase, columns: {FullName: null}}\n"
            ),
            tools=tools,
        )


UNIQUE_DB = """
CREATE TABLE accounts (id int PRIMARY KEY, login text, email text, nick text, bio text);
CREATE UNIQUE INDEX accounts_login_idx ON accounts (login);
ALTER TABLE accounts ADD CONSTRAINT accounts_email_key UNIQUE (email);
CREATE TABLE staff_accounts (badge text) INHERITS (accounts);
CREATE UNIQUE INDEX staff_nick_idx ON staff_accounts (lower(nick));
"""


@VERSIONS
def test_unique_column_under_non_unique_transformer_refused_at_planning(archives, version):
    dump, tools = archives.make(UNIQUE_DB, version)
    inv = build_inventory(dump, tools)
    keys = {k.name: k for k in inv.tables[TableName.parse("accounts")].unique_keys}
    assert keys["accounts_login_idx"].kind == "unique index"  # from post-data
    assert keys["accounts_email_key"].kind == "unique constraint"
    assert inv.tables[TableName.parse("staff_accounts")].unique_keys[0].expression
    rules = rules_from(
        """
        source_app: p
        anonymization_tables:
          - table: accounts
            columns: {login: first_name, nick: first_name}
        """
    )
    with pytest.raises(PlanError) as info:
        plan_from_archive(dump, rules, tools=tools)
    assert not info.value.retryable
    text = str(info.value)
    assert (
        "anonymization_tables[0].columns.login: transformer 'first_name' does not keep values unique" in text
    )
    assert "accounts_login_idx" in text
    # the child's own unique index (on an expression of nick) is checked too
    assert "nick is in unique index staff_nick_idx of public.staff_accounts" in text


@VERSIONS
def test_uniqueness_follows_the_transformer_registry(archives, version):
    """Every registered string transformer: planning a UNIQUE text column is refused exactly when the
    registry says the transformer (with these options) does not keep values unique."""
    dump, tools = archives.make("CREATE TABLE u (id int PRIMARY KEY, v text UNIQUE);", version)
    info = ColumnInfo(name="v", type_sql="text", base_type="text")
    checked = 0
    for name, transformer in sorted(all_transformers().items()):
        if "string" not in transformer.categories and "*" not in transformer.categories:
            continue
        if transformer.required_options or transformer.depends_on({}):
            continue
        for options in ({}, {"length": 8}) if name == "hash" else ({},):
            spec = {"transformer": name, **options}
            rules = rules_from(
                f"source_app: p\nanonymization_tables:\n  - {{table: u, columns: {{v: {json.dumps(spec)}}}}}\n"
            )
            refused = False
            try:
                plan_from_archive(dump, rules, tools=tools)
            except PlanError as exc:
                refused = "does not keep values unique" in str(exc)
            assert refused == (not keeps_unique(transformer, options, info)), (name, options)
            checked += 1
    assert checked >= 5


@VERSIONS
def test_column_typo_refused_at_planning(archives, version):
    dump, tools = archives.make(INHERIT_DB, version)
    rules = rules_from(
        """
        source_app: p
        anonymization_tables:
          - table: people
            columns: {emial: email}
          - table: peeple
            columns: {email: email}
        """
    )
    with pytest.raises(PlanError) as info:
        plan_from_archive(dump, rules, tools=tools)
    assert info.value.errors[0] == "anonymization_tables[0].columns.emial: no such column in public.people"
    assert info.value.errors[1].startswith("anonymization_tables[1].table: public.peeple is not a table")
    assert len(info.value.errors) == 2  # not repeated for the children


def test_generated_column_refused_and_derived_recomputed(archives):
    dump, tools = archives.make(
        """
        CREATE TABLE users (id int PRIMARY KEY, email text, email_md5 text,
                            up text GENERATED ALWAYS AS (upper(email)) STORED);
        """
    )
    inv = build_inventory(dump, tools)
    assert inv.tables[TableName.parse("users")].columns["up"].generated
    with pytest.raises(PlanError, match=r"columns\.up: generated column"):
        plan_from_archive(
            dump,
            rules_from("source_app: p\nanonymization_tables:\n  - {table: users, columns: {up: null}}\n"),
            tools=tools,
        )
    plan = plan_from_archive(
        dump,
        rules_from("source_app: p\nanonymization_tables:\n  - {table: users, columns: {email: email}}\n"),
        tools=tools,
    )
    assert plan.items[0]["columns"]["email_md5"] == {"transformer": "md5_of", "column": "email"}


def test_statistics_data_dropped(archives, fresh_db):
    dump, tools = archives.make(
        """
        CREATE TABLE clients (id int PRIMARY KEY, email text) WITH (autovacuum_enabled = false);
        INSERT INTO clients SELECT g, 'client' || g || '@corp.example' FROM generate_series(1, 200) g;
        ANALYZE clients;
        """,
        18,
        statistics=True,
    )
    inv = build_inventory(dump, tools)
    stats = [e for e in inv.data_entries if e.desc == "STATISTICS DATA"]
    assert {str(e.table) for e in stats} >= {"public.clients", "public.clients_pkey"}
    plan = plan_from_archive(dump, rules_from("source_app: p\n"), tools=tools)
    for c in plan.classification:
        if c.desc == "STATISTICS DATA":
            assert c.cls == "dropped" and "ANALYZE" in c.reason
    assert {e.dump_id for e in stats} <= set(plan.skip_dump_ids)

    target = fresh_db(18)
    run_pg_restore(dump, target, section="all", tools=tools, skip_dump_ids=plan.skip_dump_ids)
    assert query(target, "SELECT count(*) FROM clients") == [(200,)]
    assert query(target, "SELECT count(*) FROM pg_stats WHERE tablename = 'clients'") == [(0,)]
    # restore(..., analyze=True): statistics computed from the data as restored, after post-data
    from scalingo_staging_sync.restore.api import restore

    analyzed = fresh_db(18)
    out = restore(dump, analyzed, mode="in_place", tools=tools, plan=plan.to_json(), analyze=True)
    assert "analyze_s" in out
    assert query(
        analyzed, "SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relname = 'clients'"
    ) == [(True,)]
    # and without a plan they do not come back either: the restore itself never keeps STATISTICS DATA
    control = fresh_db(18)
    run_pg_restore(dump, control, section="all", tools=tools)
    assert query(control, "SELECT count(*) FROM clients") == [(200,)]
    assert query(control, "SELECT count(*) FROM pg_stats WHERE tablename = 'clients'") == [(0,)]


@VERSIONS
def test_materialized_view_data_dropped_and_listed(archives, fresh_db, version):
    dump, tools = archives.make(
        """
        CREATE TABLE people (id int PRIMARY KEY, email text);
        INSERT INTO people VALUES (1, 'p@corp.example');
        CREATE MATERIALIZED VIEW people_emails AS SELECT email FROM people;
        """,
        version,
    )
    plan = plan_from_archive(dump, rules_from("source_app: p\n"), tools=tools)
    assert plan.materialized_views == ["public.people_emails"]
    assert classes_of(plan)[("MATERIALIZED VIEW DATA", "public.people_emails")] == "dropped"
    target = fresh_db(version)
    run_pg_restore(dump, target, section="all", tools=tools, skip_dump_ids=plan.skip_dump_ids)
    assert query(target, "SELECT relispopulated FROM pg_class WHERE relname = 'people_emails'") == [(False,)]


CHINOOK_RULES = """
source_app: prod
anonymization_tables:
  - table: customer
    columns: {first_name: first_name, last_name: last_name, address: address, phone: phone, fax: null,
              email: email}
  - table: employee
    strategy: user_anonymization
"""


def test_every_data_entry_of_chinook_classified(chinook_dump):
    from scalingo_staging_sync.restore.pgtools import find_pg_tools
    from scalingo_staging_sync.restore.toc import read_toc
    from scalingo_staging_sync.testing.postgres import pg_bin_dir

    tools = find_pg_tools(pg_bin_dir(16))
    inv = build_inventory(chinook_dump, tools)
    toc = read_toc(chinook_dump, tools)
    data_ids = {e.dump_id for e in read_toc(chinook_dump, tools, section="data")}
    plan = plan_from_archive(chinook_dump, rules_from(CHINOOK_RULES), tools=tools, inventory=inv)
    classified = {c.dump_id for c in plan.classification}
    assert data_ids <= classified
    assert {e.dump_id for e in toc if e.desc in ("TABLE DATA", "SEQUENCE SET")} <= classified
    assert len(classified) == len(plan.classification)
    table_data = [c for c in plan.classification if c.desc == "TABLE DATA"]
    assert len(table_data) == len(inv.tables) == 11
    assert {str(c.table) for c in table_data if c.cls == "masked"} == {"public.customer", "public.employee"}
    assert plan.summary == {"masked": 2, "excluded": 0, "scanned": len(plan.classification) - 2, "dropped": 0}
    # and the plan's JSON is exactly JSON, and round-trips
    data = json.loads(json.dumps(plan.to_json()))
    assert ArchivePlan.from_json(data).to_json() == data
    assert set(data) >= {
        "items", "classification", "masked_columns", "excluded_tables", "scanned_tables",
        "large_objects", "materialized_views", "skip_dump_ids", "summary",
    }  # fmt: skip
    assert "public.customer.email" in data["masked_columns"]


def test_unknown_data_carrying_entry_fails_closed():
    entries = [
        parse_toc_line("2579; 0 16412 TABLE DATA public t postgres"),
        parse_toc_line("2600; 0 0 FANCY NEW DATA public t postgres"),
    ]
    with pytest.raises(InventoryError, match="FANCY NEW DATA public t"):
        _check_descs(entries, {2579, 2600}, "x.dump")
    # a known desc that is not data, found in the data section, fails closed too
    entries = [parse_toc_line("2601; 1259 1 TABLE public t postgres")]
    with pytest.raises(InventoryError, match="in the data section"):
        _check_descs(entries, {2601}, "x.dump")


def test_query_rule_on_a_partitioned_parent_runs_once_and_covers_every_partition(archives):
    dump, tools = archives.make(PARTITIONED_DB)
    rules = rules_from(
        """
        source_app: p
        anonymization_tables:
          - table: audit_log
            query: UPDATE public.audit_log SET actor_email = NULL, ip = NULL
        """
    )
    plan = plan_from_archive(dump, rules, tools=tools)
    assert [i["table"] for i in plan.items] == ["public.audit_log"]
    classes = classes_of(plan)
    for leaf in ("public.audit_2024", "public.audit_2025_a", "public.audit_2025_b"):
        assert classes[("TABLE DATA", leaf)] == "masked"


def test_rule_under_an_excluded_parent_is_refused(archives):
    dump, tools = archives.make(PARTITIONED_DB)
    rules = rules_from(
        """
        source_app: p
        exclude_tables: [audit_log]
        anonymization_tables:
          - table: audit_2024
            columns: {ip: null}
        """
    )
    with pytest.raises(
        PlanError, match=r"anonymization_tables\[0\]\.table: public\.audit_2024 has a rule but"
    ):
        plan_from_archive(dump, rules, tools=tools)


def test_an_excluded_partition_of_a_ruled_parent_gets_no_plan_item(archives):
    dump, tools = archives.make(PARTITIONED_DB)
    rules = rules_from(
        """
        source_app: p
        exclude_tables: [audit_2024]
        anonymization_tables:
          - table: audit_log
            columns: {ip: null}
        """
    )
    plan = plan_from_archive(dump, rules, tools=tools)
    tables = {i["table"] for i in plan.items}
    # its data never loads, so it has nothing to mask and no proof to stream from the archive
    assert "public.audit_2024" not in tables
    assert {"public.audit_2025_a", "public.audit_2025_b"} <= tables
    classes = classes_of(plan)
    assert classes[("TABLE DATA", "public.audit_2024")] == "excluded"
    assert classes[("TABLE DATA", "public.audit_2025_a")] == "masked"


def test_a_partitions_own_rule_must_mask_what_its_parents_rule_masks(archives):
    """A partition's rule replaces its parent's for its rows: one that leaves out a column the parent
    masks would leave that column unmasked in the partition. It is refused, named; one that masks the
    same columns (maybe otherwise) is used, with a warning."""
    dump, tools = archives.make(PARTITIONED_DB)
    partial = rules_from(
        """
        source_app: p
        anonymization_tables:
          - table: audit_log
            columns: {actor_email: email, ip: null}
          - table: audit_2024
            columns: {ip: null}
        """
    )
    with pytest.raises(
        PlanError,
        match=r"anonymization_tables\[1\]\.table: public\.audit_2024 has its own rule, which replaces "
        r"public\.audit_log's \(anonymization_tables\[0\]\) for its rows but does not mask actor_email",
    ):
        plan_from_archive(dump, partial, tools=tools)
    whole = rules_from(
        """
        source_app: p
        anonymization_tables:
          - table: audit_log
            columns: {actor_email: email, ip: null}
          - table: audit_2024
            columns: {actor_email: null, ip: null}
        """
    )
    plan = plan_from_archive(dump, whole, tools=tools)
    assert any("public.audit_2024 has its own rule" in w for w in plan.warnings)
    own = next(i for i in plan.items if i["table"] == "public.audit_2024")
    assert sorted(own["masked_columns"]) == ["actor_email", "ip"]


def test_a_condition_with_a_subquery_plans_and_a_qualified_missing_column_is_refused(archives):
    """Planning from the archive checks a condition's columns against its table: not the columns a
    subquery reads from another table (``id`` of notes), which were refused as missing; and a column
    qualified by the table's name is checked too (``audit_log.nope`` passed)."""
    dump, tools = archives.make(PARTITIONED_DB)
    ok = rules_from(
        """
        source_app: p
        anonymization_tables:
          - table: audit_log
            condition: "id IN (SELECT id FROM public.notes WHERE body <> '') AND ip IS NOT NULL"
            columns: {actor_email: email}
        """
    )
    plan = plan_from_archive(dump, ok, tools=tools)
    assert "public.audit_2024" in {i["table"] for i in plan.items}
    bad = rules_from(
        """
        source_app: p
        anonymization_tables:
          - table: audit_log
            condition: "audit_log.nope > 1"
            columns: {actor_email: email}
        """
    )
    with pytest.raises(
        PlanError, match=r"condition: column audit_log\.nope does not exist in public\.audit_log"
    ):
        plan_from_archive(dump, bad, tools=tools)


def test_pii_allow_entries_that_name_no_column_of_the_archive_are_refused(archives):
    """An allow-list entry that matches nothing would be accepted and then ignored: refused at planning,
    each one named, while entries for tables, partitions, patterns, views and large objects plan."""
    dump, tools = archives.make(
        """
        CREATE SCHEMA crm;
        CREATE TABLE crm."Order.Items" (id int PRIMARY KEY, note text);
        CREATE TABLE people (id int PRIMARY KEY, email text, notes text);
        CREATE TABLE events (id int, at date, label text) PARTITION BY RANGE (at);
        CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
        CREATE MATERIALIZED VIEW people_emails AS SELECT email FROM people;
        """
    )
    good = """
        source_app: p
        pii_scan:
          allow:
            - public.people.notes
            - {column: public.events_2026.label, reason: partition}
            - events.label
            - crm."Order.Items".note
            - public.*.notes
            - public.people.*
            - public.people_emails.email
            - pg_catalog.pg_largeobject.data
        """
    plan_from_archive(dump, rules_from(good), tools=tools)  # every entry names something: plans
    bad = """
        source_app: p
        pii_scan:
          allow:
            - public.people.notes
            - public.peoples.notes
            - {column: public.people.nots, reason: typo}
            - public.*.nothing_like_this
            - public.people_emailz.email
        """
    with pytest.raises(PlanError) as info:
        plan_from_archive(dump, rules_from(bad), tools=tools)
    errors = [e for e in info.value.errors if e.startswith("pii_scan.allow")]
    assert [e.split(":")[0] for e in errors] == [f"pii_scan.allow[{i}]" for i in (1, 2, 3, 4)], errors
    assert "'public.peoples.notes' names no column of this archive" in errors[0]
    assert "'public.people.nots'" in errors[1] and "remove the entry" in errors[1]
