"""Masking triggers that cannot be bypassed or confused, on PostgreSQL 16 and 18:

* ``ENABLE ALWAYS``: a loading session with ``session_replication_role=replica`` in its connection
  options still masks;
* partitions and inheritance children of a ruled table are covered at install time, and a child's
  own plan item keeps its own trigger whatever the install order;
* names are hashes of the qualified table name: two 60-byte non-ASCII names sharing their first
  bytes get distinct triggers and functions, and dropping one leaves the other working.
"""

from __future__ import annotations

import itertools

import pytest
from psycopg import sql

from scalingo_staging_sync.anonymize.executor import (
    AnonymizationError,
    drop_masking_trigger,
    finish_on_load,
    install_masking_trigger,
    prepare_on_load,
)
from scalingo_staging_sync.anonymize.salt import derive_key, key_settings, target_with_key
from scalingo_staging_sync.anonymize.sql import trigger_function_name, trigger_name
from scalingo_staging_sync.pgconn import PgTarget
from scalingo_staging_sync.restore.pgtools import find_pg_tools
from scalingo_staging_sync.restore.runner import run_pg_restore

from .conftest import SALT, execute, target_of

_n = itertools.count()
REPLICA = {"options": "-c session_replication_role=replica"}


def plan_item(schema: str, name: str, columns: dict, key_columns=("id",), mode: str = "on_load") -> dict:
    """A CONTRACTS plan item, written out (independent of the planner)."""
    return {
        "table": f"{schema}.{name}",
        "schema": schema,
        "name": name,
        "mode": mode,
        "columns": columns,
        "strategy": None,
        "condition": None,
        "query": None,
        "key_columns": list(key_columns),
        "masked_columns": list(columns),
        "warnings": [],
    }


def with_options(target: PgTarget, options: dict) -> PgTarget:
    from dataclasses import replace

    return replace(target, options={**target.options, **options})


@pytest.fixture
def source_and_target(staging_pg, tmp_path):
    """(pg, build) where build(sql) makes a source database from ``sql``, dumps it, restores its
    pre-data into a new target database and returns (dump path, target, tools)."""
    made: list[str] = []

    def build(ddl: str):
        i = next(_n)
        src, dst = f"trg_src_{i}", f"trg_dst_{i}"
        staging_pg.create_database(src)
        staging_pg.create_database(dst)
        made.extend([src, dst])
        staging_pg.execute(ddl, src)
        dump = staging_pg.pg_dump(src, tmp_path / f"{src}.dump")
        tools = find_pg_tools(staging_pg.bin_dir)
        target = target_of(staging_pg, dst)
        run_pg_restore(dump, target, section="pre-data", tools=tools)
        return str(dump), target, tools

    yield staging_pg, build
    for name in made:
        staging_pg.drop_database(name)


PEOPLE = """
CREATE TABLE people (id int PRIMARY KEY, email text NOT NULL, note text);
CREATE TABLE vip_people (level int) INHERITS (people);
CREATE TABLE archived_vip () INHERITS (vip_people);
INSERT INTO people SELECT g, 'person' || g || '@corp.test', 'n' FROM generate_series(1, 50) g;
INSERT INTO vip_people SELECT g, 'vip' || g || '@corp.test', 'v', 1 FROM generate_series(100, 120) g;
INSERT INTO archived_vip SELECT g, 'old' || g || '@corp.test', 'a', 2 FROM generate_series(200, 210) g;
"""


def _emails(target: PgTarget) -> list[str]:
    return [r[0] for r in execute(target, "SELECT email FROM people")]


def test_replica_role_in_connection_options_still_masks_parent_and_children(source_and_target):
    pg, build = source_and_target
    dump, target, tools = build(PEOPLE)
    replica = with_options(target, REPLICA)
    item = plan_item("public", "people", {"email": {"transformer": "email"}})

    prepared = prepare_on_load(item, replica, SALT, dump, tools=tools)
    assert sorted(prepared["covered_tables"]) == ["public.archived_vip", "public.people", "public.vip_people"]
    rows = execute(
        target,
        "SELECT c.relname, t.tgenabled::text FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
        " WHERE t.tgname LIKE 'zz_sss_mask_%' ORDER BY 1",
    )
    assert rows == [("archived_vip", "A"), ("people", "A"), ("vip_people", "A")]

    # the shared data load: every table's rows, in a replica-role session (PGOPTIONS) carrying the key
    run_pg_restore(dump, target_with_key(replica, derive_key(SALT)), section="data", tools=tools)
    result = finish_on_load(item, replica, prepared)
    emails = _emails(target)
    assert len(emails) == 50 + 21 + 11
    assert all(e.endswith("@example.com") for e in emails), emails[:3]
    assert not execute(target, "SELECT 1 FROM pg_trigger WHERE tgname LIKE 'zz_sss_mask_%'")
    assert result["rows"] == 50  # the parent's own rows (children are their own plan items)


def test_direct_insert_in_replica_session_is_masked(source_and_target):
    pg, build = source_and_target
    _dump, target, _tools = build(PEOPLE)
    item = plan_item("public", "people", {"email": {"transformer": "email"}})
    with target.connect() as conn:
        install_masking_trigger(conn, item)
    with with_options(target, REPLICA).connect() as conn:
        assert conn.execute("SHOW session_replication_role").fetchone()[0] == "replica"
        for name, value in key_settings(derive_key(SALT)).items():
            conn.execute("SELECT set_config(%s, %s, false)", (name, value))
        conn.execute("INSERT INTO archived_vip (id, email, note) VALUES (1, 'Deep.Child@corp.test', 'x')")
        assert conn.execute("SELECT email FROM archived_vip").fetchone()[0].endswith("@example.com")


@pytest.mark.parametrize("child_first", [False, True], ids=["parent-first", "child-first"])
def test_child_plan_item_keeps_its_own_trigger(source_and_target, child_first):
    pg, build = source_and_target
    _dump, target, _tools = build(PEOPLE)
    parent = plan_item("public", "people", {"email": {"transformer": "email"}})
    child = plan_item(
        "public", "vip_people", {"email": {"transformer": "email"}, "note": {"transformer": "null"}}
    )
    with target.connect() as conn:
        for item in [child, parent] if child_first else [parent, child]:
            install_masking_trigger(conn, item)
        functions = dict(
            conn.execute(
                "SELECT c.relname, p.proname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
                " JOIN pg_proc p ON p.oid = t.tgfoid WHERE t.tgname LIKE 'zz_sss_mask_%'"
            ).fetchall()
        )
    assert functions == {
        "people": trigger_function_name("public", "people"),
        "vip_people": trigger_function_name("public", "vip_people"),
        "archived_vip": trigger_function_name("public", "vip_people"),  # its nearest ruled ancestor
    }
    with target.connect() as conn:
        drop_masking_trigger(conn, parent)  # the parent's function goes, the child's triggers stay
        left = conn.execute(
            "SELECT tgrelid::regclass::text FROM pg_trigger WHERE tgname LIKE 'zz_sss_mask_%' ORDER BY 1"
        )
        assert [r[0] for r in left.fetchall()] == ["archived_vip", "vip_people"]


def test_partitioned_parent_item_covers_its_leaves(source_and_target):
    pg, build = source_and_target
    _dump, target, _tools = build(
        """
        CREATE TABLE events (id int, region text, email text) PARTITION BY LIST (region);
        CREATE TABLE events_eu PARTITION OF events FOR VALUES IN ('eu') PARTITION BY LIST (id);
        CREATE TABLE events_eu_1 PARTITION OF events_eu FOR VALUES IN (1);
        CREATE TABLE events_us PARTITION OF events FOR VALUES IN ('us');
        """
    )
    item = plan_item("public", "events", {"email": {"transformer": "email"}})
    with target.connect() as conn:
        covered = install_masking_trigger(conn, item)
    assert sorted(covered) == ["public.events_eu_1", "public.events_us"]
    with with_options(target, REPLICA).connect() as conn:
        conn.execute("SELECT set_config(%s, %s, false)", ("scalingo_staging_sync.key", derive_key(SALT)))
        conn.execute("INSERT INTO events VALUES (1, 'eu', 'a@corp.test'), (2, 'us', 'b@corp.test')")
        assert all(e.endswith("@example.com") for (e,) in conn.execute("SELECT email FROM events"))


def test_long_non_ascii_names_get_distinct_triggers(db_any):
    pg, target = db_any
    common = "é" * 29  # 58 bytes in UTF-8
    first, second = common + "_a", common + "_b"  # 60 bytes each, the same first 58
    assert len(first.encode()) == 60
    for table in (first, second):
        assert len(trigger_function_name("public", table).encode()) <= 63
        assert len(trigger_name("public", table).encode()) <= 63
    assert trigger_function_name("public", first) != trigger_function_name("public", second)
    assert trigger_function_name("public", first) != trigger_function_name("other", first)
    items = []
    with target.connect() as conn:
        for table in (first, second):
            conn.execute(
                sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, email text)").format(sql.Identifier(table))
            )
            items.append(plan_item("public", table, {"email": {"transformer": "email"}}))
            install_masking_trigger(conn, items[-1])
        assert (
            conn.execute("SELECT count(*) FROM pg_proc WHERE proname LIKE '_sss_mask_%'").fetchone()[0] == 2
        )
        drop_masking_trigger(conn, items[0])
        left = conn.execute(
            "SELECT tgrelid::regclass::text FROM pg_trigger WHERE tgname LIKE 'zz_sss_mask_%'"
        )
        assert [r[0] for r in left.fetchall()] == [f'"{second}"']
        conn.execute("SELECT set_config(%s, %s, false)", ("scalingo_staging_sync.key", derive_key(SALT)))
        ids = {t: sql.Identifier(t) for t in (first, second)}
        for t in (second, first):
            conn.execute(sql.SQL("INSERT INTO {} VALUES (1, 'x@corp.test')").format(ids[t]))
        email = {t: conn.execute(sql.SQL("SELECT email FROM {}").format(ids[t])).fetchone()[0] for t in ids}
        assert email[second].endswith("@example.com")
        assert email[first] == "x@corp.test"  # its trigger is gone


def test_missing_table_is_a_clear_error(db_any):
    _pg, target = db_any
    with target.connect() as conn, pytest.raises(AnonymizationError, match="public.nope does not exist"):
        install_masking_trigger(conn, plan_item("public", "nope", {"email": {"transformer": "email"}}))
