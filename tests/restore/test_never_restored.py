"""What a backup may hold that a staging copy must never get, plan or no plan: user mappings (another
server's user and password) and subscriptions (the publisher's connection string; replication of
production's rows). The foreign server and its foreign tables are restored; without a mapping they
cannot reach the server."""

from __future__ import annotations

import pytest
from restore_helpers import superuser_target, unique_db

from scalingo_staging_sync.restore.api import restore
from scalingo_staging_sync.restore.errors import RestoreError
from scalingo_staging_sync.restore.pgtools import find_pg_tools
from scalingo_staging_sync.restore.toc import read_toc
from scalingo_staging_sync.testing.postgres import pg_bin_dir

SECRET = "prod-replication-pa55word"

SOURCE_SQL = """
CREATE TABLE person (id int PRIMARY KEY, email text);
INSERT INTO person VALUES (1, 'jane@corp.test');
CREATE FOREIGN DATA WRAPPER bench_fdw;
CREATE SERVER prod_server FOREIGN DATA WRAPPER bench_fdw OPTIONS (host 'prod.example', dbname 'prod');
CREATE USER MAPPING FOR CURRENT_USER SERVER prod_server OPTIONS (user 'reader', password 'prod-replication-pa55word');
CREATE USER MAPPING FOR PUBLIC SERVER prod_server OPTIONS (user 'public_reader', password 'prod-replication-pa55word');
CREATE FOREIGN TABLE remote_person (id int, email text) SERVER prod_server;
CREATE TABLE contact (id int, email text);
INSERT INTO contact VALUES (1, 'john@corp.test');
CREATE FOREIGN TABLE remote_contact () INHERITS (contact) SERVER prod_server;
CREATE PUBLICATION everything FOR TABLE person;
CREATE SUBSCRIPTION from_prod CONNECTION 'host=prod.example dbname=prod user=rep password=prod-replication-pa55word'
    PUBLICATION everything WITH (connect = false, enabled = false, create_slot = false, slot_name = NONE);
COMMENT ON SUBSCRIPTION from_prod IS 'replica of production';
"""


@pytest.fixture(params=[16, 18], ids=["pg_dump-16", "pg_dump-18"])
def source(request, tmp_path_factory):
    pg = request.getfixturevalue(f"staging_pg{request.param}")
    name = unique_db("creds_source")
    pg.create_database(name)
    pg.execute(SOURCE_SQL, name)
    dump = pg.pg_dump(name, tmp_path_factory.mktemp("creds") / f"{name}.pgsql")
    descs = {e.desc for e in read_toc(dump, find_pg_tools(pg_bin_dir(pg.version)))}
    assert {"USER MAPPING", "SUBSCRIPTION", "FOREIGN TABLE"} <= descs, descs
    return pg, dump


def _restored(pg, db) -> dict:
    return {
        "rows": pg.execute("SELECT count(*) FROM person", db)[0][0],
        "servers": [r[0] for r in pg.execute("SELECT srvname::text FROM pg_foreign_server", db)],
        "foreign_tables": pg.execute("SELECT count(*) FROM pg_foreign_table", db)[0][0],
        "user_mappings": pg.execute("SELECT count(*) FROM pg_user_mappings", db)[0][0],
        "subscriptions": pg.execute(
            "SELECT count(*) FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid "
            "WHERE d.datname = current_database()",
            db,
        )[0][0],
    }


@pytest.mark.parametrize("sectioned", [False, True], ids=["whole", "by-section"])
def test_user_mappings_and_subscriptions_are_never_restored(source, sectioned):
    pg, dump = source
    db = unique_db("staging_creds")
    pg.create_database(db)
    target = superuser_target(pg, db)  # a superuser could create both: only the restore's choice stops it
    tools = find_pg_tools(pg_bin_dir(pg.version))
    if sectioned:
        outs = [
            restore(dump, target, section=s, mode="in_place", tools=tools)
            for s in ("pre-data", "data", "post-data")
        ]
        skipped = [s for out in outs for s in out["skipped"]]
    else:
        skipped = restore(dump, target, mode="in_place", tools=tools)["skipped"]
    assert _restored(pg, db) == {
        "rows": 1,
        "servers": ["prod_server"],
        "foreign_tables": 2,
        "user_mappings": 0,
        "subscriptions": 0,
    }
    assert sum("USER MAPPING" in s and "credentials for another server" in s for s in skipped) == 2
    assert any("SUBSCRIPTION" in s and "publisher's credentials" in s for s in skipped)
    assert any("COMMENT" in s and "describes a subscription" in s for s in skipped)
    assert not any(SECRET in s for s in skipped)


def test_a_plain_dump_holding_them_is_refused_before_anything_is_touched(source, tmp_path):
    pg, dump = source
    plain = pg.pg_dump(dump.stem, tmp_path / "plain.sql", fmt="p", extra=["--no-owner", "--no-privileges"])
    db = unique_db("staging_plain")
    pg.create_database(db)
    with pytest.raises(RestoreError, match=r"holds subscription entries .* user mapping entries"):
        restore(plain, superuser_target(pg, db), mode="in_place", tools=find_pg_tools(pg_bin_dir(pg.version)))
    assert pg.execute("SELECT count(*) FROM pg_class WHERE relname = 'person'", db)[0][0] == 0


def test_the_plan_names_them_before_anything_is_restored(source):
    """The archive plan (the CLI's ``plan``, the dry run) lists each entry the restore will leave out."""
    from scalingo_staging_sync.anonymize.rules import parse_rules_text
    from scalingo_staging_sync.inventory import plan_from_archive
    from scalingo_staging_sync.inventory.plan import plan_lines

    pg, dump = source
    rules = parse_rules_text(
        "source_app: shop-prod\nanonymization_tables:\n  - table: public.person\n    columns:\n      email: email\n"
    )
    plan = plan_from_archive(dump, rules, tools=find_pg_tools(pg_bin_dir(pg.version)))
    lines = [line for line in plan_lines(plan.to_json()) if "not restored (" in line]
    assert any("USER MAPPING public SERVER prod_server" in line for line in lines), lines
    assert sum("USER MAPPING" in line and "credentials for another server" in line for line in lines) == 2
    assert any(line.startswith("warning: SUBSCRIPTION from_prod: not restored (") for line in lines), lines
    assert any(
        "COMMENT" in line and "from_prod" in line and "describes a subscription" in line for line in lines
    )
    assert not any(SECRET in line for line in plan_lines(plan.to_json()))


def _foreign_table_data(entries, table: str):
    """The TABLE DATA entry ``pg_dump --include-foreign-data`` writes for a foreign table. The embedded
    servers have no foreign-data wrapper that can be read (no contrib), so no dump here can hold one:
    the entry is the line such a dump lists, next to the real archive's entries."""
    from scalingo_staging_sync.restore.toc import TocEntry

    dump_id = max(e.dump_id for e in entries) + 1
    raw = f"{dump_id}; 0 0 TABLE DATA public {table} postgres"
    return TocEntry(dump_id, 0, 0, "TABLE DATA", "public", table, "postgres", raw, f"public {table}")


def test_the_data_of_a_foreign_table_is_never_restored_nor_planned(source):
    """``pg_dump --include-foreign-data``: loading a foreign table's rows would write them into the
    foreign server through its wrapper. The restore leaves the entry out, plan or no plan, and the
    archive plan classifies it as dropped, with the reason."""
    from scalingo_staging_sync.anonymize.rules import parse_rules_text
    from scalingo_staging_sync.inventory import build_inventory
    from scalingo_staging_sync.inventory.model import DataEntry
    from scalingo_staging_sync.inventory.plan import classify, plan_inventory
    from scalingo_staging_sync.restore.runner import select_entries
    from scalingo_staging_sync.restore.toc import FOREIGN_TABLE_DATA

    pg, dump = source
    tools = find_pg_tools(pg_bin_dir(pg.version))
    entries = read_toc(dump, tools)
    remote = _foreign_table_data(entries, "remote_person")
    selection = select_entries([*entries, remote])
    assert (remote, FOREIGN_TABLE_DATA) in selection.skipped
    assert remote not in selection.kept and ("public", "remote_person") not in selection.loaded_tables
    assert ("public", "person") in selection.loaded_tables

    inv = build_inventory(dump, tools)
    rules = parse_rules_text("source_app: shop-prod\nanonymization_tables: []\n")
    plan = plan_inventory(inv, rules)
    entry = DataEntry(remote.dump_id, "TABLE DATA", remote.table_name, remote.tag, "data")
    dropped = classify(entry, inv, excluded={}, masked_by={})
    assert (dropped.cls, dropped.reason) == ("dropped", FOREIGN_TABLE_DATA)
    assert not any(c["table"] == "public.remote_person" for c in plan.to_json()["classification"])


def test_a_rule_on_a_foreign_table_is_refused_and_a_parent_rule_leaves_its_foreign_child(source):
    """A foreign table's rows live on the foreign server: a rule that names one is refused before
    anything is restored (an in-place UPDATE would write there). A rule on a parent whose inheritance
    child is foreign masks the parent's own rows, with ``UPDATE ONLY``, and names the child."""
    from scalingo_staging_sync.anonymize.planner import PlanError
    from scalingo_staging_sync.anonymize.rules import parse_rules_text
    from scalingo_staging_sync.inventory import plan_from_archive

    pg, dump = source
    tools = find_pg_tools(pg_bin_dir(pg.version))
    rule = "source_app: shop-prod\nanonymization_tables:\n  - table: {}\n    columns:\n      email: email\n"
    with pytest.raises(
        PlanError, match=r"anonymization_tables\[0\]\.table: public\.remote_person is a foreign table"
    ):
        plan_from_archive(dump, parse_rules_text(rule.format("public.remote_person")), tools=tools)
    plan = plan_from_archive(dump, parse_rules_text(rule.format("public.contact")), tools=tools).to_json()
    (item,) = [i for i in plan["items"] if i["table"] == "public.contact"]
    assert item["children_planned"] is True
    assert not any(i["table"] == "public.remote_contact" for i in plan["items"])
    assert any("public.remote_contact is a foreign table below public.contact" in w for w in plan["warnings"])
