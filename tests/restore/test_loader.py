"""The data section's loader: each table's rows with COPY FREEZE, in the transaction that truncates it.

Real archives (pg_dump 16 and 18) restored into the embedded servers; the loader's result is
compared with what pg_restore itself loads from the same archive.
"""

from __future__ import annotations

import threading

import pytest
from psycopg import sql

from scalingo_staging_sync.restore.copytext import parse_copy_line
from scalingo_staging_sync.restore.errors import RestoreError
from scalingo_staging_sync.restore.loader import load_table_data
from scalingo_staging_sync.restore.pgtools import find_pg_tools
from scalingo_staging_sync.restore.runner import run_pg_restore
from scalingo_staging_sync.restore.toc import read_toc
from scalingo_staging_sync.tablename import TableName
from tests.restore.restore_helpers import make_scalingo_db, superuser_target, unique_db

SOURCE_SQL = r"""
CREATE SCHEMA "Mixed Case";
CREATE TABLE "Mixed Case"."Order.Items" (id int PRIMARY KEY, "Note ""q"" x" text, qty int);
CREATE TABLE people (id bigint PRIMARY KEY, name text, email varchar(40), born date, tags text[], doc jsonb);
CREATE TABLE empty_one (id int);
CREATE TABLE parted (id int, region text) PARTITION BY LIST (region);
CREATE TABLE parted_eu PARTITION OF parted FOR VALUES IN ('eu');
CREATE TABLE parted_us PARTITION OF parted FOR VALUES IN ('us');
INSERT INTO "Mixed Case"."Order.Items" VALUES (1, E'tab\there', 2), (2, NULL, 3), (3, '', 4);
INSERT INTO people
SELECT g,
       CASE g % 5 WHEN 0 THEN E'Zoë \\ backslash' WHEN 1 THEN E'new\nline' WHEN 2 THEN E'car\rriage'
                  WHEN 3 THEN 'Ünïcødé 名前 🙂' ELSE NULL END,
       'p' || g || '@example.org', date '1970-01-01' + g, ARRAY['a\b', E'c\td', NULL],
       jsonb_build_object('k', g, 's', E'q"\\')
FROM generate_series(1, 5000) g;
INSERT INTO parted VALUES (1, 'eu'), (2, 'us'), (3, 'eu');
"""


def _fingerprint(pg, db: str) -> dict[str, tuple]:
    tables = {
        "people": "SELECT count(*), md5(string_agg(t::text, '|' ORDER BY id)) FROM people t",
        "items": 'SELECT count(*), md5(string_agg(t::text, \'|\' ORDER BY id)) FROM "Mixed Case"."Order.Items" t',
        "empty": "SELECT count(*) FROM empty_one",
        "parted": "SELECT count(*), md5(string_agg(t::text, '|' ORDER BY id)) FROM parted t",
    }
    return {name: pg.execute(q, db)[0] for name, q in tables.items()}


def _schema_only(pg, dump, tools, prefix: str = "loader") -> tuple[str, object]:
    """A fresh database on ``pg`` holding the archive's pre-data section: ``(name, superuser target)``."""
    db = unique_db(prefix)
    pg.create_database(db)
    target = superuser_target(pg, db)
    run_pg_restore(dump, target, section="pre-data", tools=tools)
    return db, target


@pytest.fixture(scope="module")
def source_dump(prod_pg, tmp_path_factory):
    db = unique_db("loader_src")
    prod_pg.create_database(db)
    prod_pg.execute(SOURCE_SQL, db)
    path = prod_pg.pg_dump(db, tmp_path_factory.mktemp("loader") / "src.pgc")
    return db, path


def test_copy_line_is_parsed_into_names_not_executed():
    table, cols = parse_copy_line('COPY "Mixed Case"."Order.Items" (id, "Note ""q"" x", qty) FROM stdin;')
    assert table == TableName("Mixed Case", "Order.Items") and cols == ["id", 'Note "q" x', "qty"]
    assert parse_copy_line("COPY public.t  FROM stdin;") == (TableName("public", "t"), [])
    for bad in ("COPY t (a) FROM stdin;", "COPY public.t (a) FROM stdin; DROP TABLE x;", "SELECT 1;"):
        with pytest.raises(ValueError):
            parse_copy_line(bad)


@pytest.mark.parametrize("version", [16, 18])
def test_same_rows_as_pg_restore_and_frozen(prod_pg, staging_pg16, staging_pg18, source_dump, version):
    """Every value (NULLs, empty strings, tabs, newlines, backslashes, non-ASCII, arrays, jsonb) and
    every table (quoted names, empty, partitions) arrive as pg_restore loads them; the ordinary
    tables' rows are frozen: a snapshot taken before the load already sees them."""
    pg = staging_pg16 if version == 16 else staging_pg18
    src_db, dump = source_dump
    tools = find_pg_tools(str(pg.bin_dir))
    by_tool, tool_target = _schema_only(pg, dump, tools, "by_tool")
    by_loader, loader_target = _schema_only(pg, dump, tools, "by_loader")
    run_pg_restore(dump, tool_target, section="data", tools=tools, freeze=False)
    # a repeatable-read snapshot of by_loader, taken before its load: frozen rows are visible to it
    with pg.connect(by_loader, autocommit=False) as old:
        old.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        old.execute("SELECT 1").fetchone()  # the snapshot, and no lock on a table
        res = run_pg_restore(dump, loader_target, section="data", tools=tools, jobs=2)
        assert old.execute("SELECT count(*) FROM people").fetchone() == (5000,)
        old.rollback()
    assert _fingerprint(pg, by_loader) == _fingerprint(pg, by_tool) == _fingerprint(prod_pg, src_db)
    assert res.entries_done == res.entries_total
    assert {tuple(t) for t in res.table_names} >= {
        ("public", "people"),
        ("Mixed Case", "Order.Items"),
        ("public", "parted_eu"),
        ("public", "empty_one"),
    }


def test_without_freeze_an_older_snapshot_sees_nothing(staging_pg16, source_dump):
    """The control for the test above: pg_restore's plain COPY is invisible to an older snapshot."""
    pg = staging_pg16
    _, dump = source_dump
    tools = find_pg_tools(str(pg.bin_dir))
    db, target = _schema_only(pg, dump, tools)
    with pg.connect(db, autocommit=False) as old:
        old.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        old.execute("SELECT 1").fetchone()  # the snapshot, and no lock on a table
        run_pg_restore(dump, target, section="data", tools=tools, freeze=False)
        assert old.execute("SELECT count(*) FROM people").fetchone() == (0,)
        old.rollback()
    assert pg.execute("SELECT count(*) FROM people", db) == [(5000,)]


def test_a_scalingo_role_loads_frozen_and_triggers_fire(staging_pg16, source_dump):
    """The app role Scalingo hands out (not superuser, not the database owner) can truncate and
    freeze the tables it created, and a BEFORE INSERT trigger (as the masking one) sees every row."""
    pg = staging_pg16
    _, dump = source_dump
    tools = find_pg_tools(str(pg.bin_dir))
    db = unique_db()
    target = make_scalingo_db(pg, db)
    run_pg_restore(dump, target, section="pre-data", tools=tools)
    with target.connect() as conn:
        conn.execute(
            "CREATE FUNCTION mask_people() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN NEW.name := 'masked'; NEW.email := 'm' || NEW.id || '@example.com'; RETURN NEW; END$$;"
            "CREATE TRIGGER mask BEFORE INSERT ON people FOR EACH ROW EXECUTE FUNCTION mask_people()"
        )
    entries = [e for e in read_toc(dump, tools) if e.desc == "TABLE DATA"]
    loaded = {t.table: t for t in load_table_data(dump, target, entries, tools=tools, jobs=2)}
    people = loaded[TableName("public", "people")]
    assert people.rows == 5000 and people.frozen
    assert loaded[TableName("Mixed Case", "Order.Items")].frozen  # a quoted schema and name
    assert loaded[TableName("public", "parted_eu")].frozen  # a leaf partition is an ordinary table
    assert pg.execute("SELECT count(*) FROM people WHERE name IS DISTINCT FROM 'masked'", db) == [(0,)]
    assert pg.execute("SELECT count(*) FROM people WHERE email NOT LIKE 'm%@example.com'", db) == [(0,)]


def test_load_via_partition_root_is_loaded_without_freeze(prod_pg, staging_pg16, source_dump, tmp_path):
    pg = staging_pg16
    src_db, _ = source_dump
    dump = prod_pg.pg_dump(src_db, tmp_path / "root.pgc", extra=["--load-via-partition-root"])
    tools = find_pg_tools(str(pg.bin_dir))
    db, target = _schema_only(pg, dump, tools)
    entries = [e for e in read_toc(dump, tools) if e.desc == "TABLE DATA"]
    loaded = {t.table: t for t in load_table_data(dump, target, entries, tools=tools)}
    eu = loaded[TableName("public", "parted_eu")]
    assert not eu.frozen and eu.rows == 2
    assert pg.execute("SELECT count(*) FROM parted_eu", db) == [(2,)]
    assert pg.execute("SELECT count(*) FROM parted", db) == [(3,)]
    assert loaded[TableName("public", "people")].frozen


def test_a_broken_archive_leaves_the_table_empty_and_names_it(staging_pg16, source_dump, tmp_path):
    """pg_restore fails half-way through a table's data: nothing of that table is committed."""
    pg = staging_pg16
    _, dump = source_dump
    data = dump.read_bytes()
    broken = tmp_path / "broken.pgc"
    broken.write_bytes(data[: int(len(data) * 0.6)])  # the TOC is whole, the data is cut
    tools = find_pg_tools(str(pg.bin_dir))
    db, target = _schema_only(pg, dump, tools)
    people = [e for e in read_toc(dump, tools) if e.desc == "TABLE DATA" and e.tag == "people"]
    with pytest.raises(RestoreError, match=r"public\.people") as info:
        load_table_data(broken, target, people, tools=tools)
    assert "example.org" not in str(info.value)
    assert pg.execute("SELECT count(*) FROM people", db) == [(0,)]


def test_the_first_failure_stops_the_others(staging_pg16, source_dump):
    """A table that cannot load (a column of another type) fails the load; no thread is left behind."""
    pg = staging_pg16
    _, dump = source_dump
    tools = find_pg_tools(str(pg.bin_dir))
    db, target = _schema_only(pg, dump, tools)
    pg.execute("ALTER TABLE people ALTER COLUMN born TYPE int USING 0", db)
    before = threading.active_count()
    with pytest.raises(RestoreError, match=r"public\.people .*SQLSTATE 22P02.*column born") as info:
        run_pg_restore(dump, target, section="data", tools=tools, jobs=2)
    assert "1970" not in str(info.value)
    assert pg.execute("SELECT count(*) FROM people", db) == [(0,)]
    assert threading.active_count() <= before


def _entry(dump_id: int, tag: str):
    from scalingo_staging_sync.restore.toc import parse_toc_line

    return parse_toc_line(f"{dump_id}; 0 0 TABLE DATA public {tag} postgres")


def test_units_largest_first_small_tables_together():
    from scalingo_staging_sync.restore.loader import BATCH_TABLES, SMALL_TABLE, plan_units

    big, huge = _entry(1, "big"), _entry(2, "huge")
    small = [_entry(10 + i, f"s{i}") for i in range(BATCH_TABLES + 5)]
    sizes = {1: SMALL_TABLE * 2, 2: SMALL_TABLE * 10, **{10 + i: 100 + i for i in range(BATCH_TABLES + 5)}}
    units = plan_units([*small, big, huge], sizes)
    assert units[0] == [huge] and units[1] == [big]  # largest first, each alone
    assert [len(u) for u in units[2:]] == [BATCH_TABLES, 5]  # the small ones share pg_restore runs
    assert sorted(e.dump_id for u in units for e in u) == sorted(sizes)
    # medium tables fill a unit up to SMALL_TABLE bytes
    medium = [_entry(100 + i, f"m{i}") for i in range(5)]
    units = plan_units(medium, {100 + i: SMALL_TABLE // 2 for i in range(5)})
    assert [len(u) for u in units] == [2, 2, 1]
    # no sizes (an archive written to a pipe): one table per unit, in the archive's order
    assert plan_units(small[:3], {}) == [[small[0]], [small[1]], [small[2]]]


@pytest.mark.parametrize("fmt", ["c", "d", "t"])
def test_data_sizes_of_each_archive_format(prod_pg, source_dump, tmp_path, fmt):
    from scalingo_staging_sync.restore.dump import data_sizes

    src_db, _ = source_dump
    dump = prod_pg.pg_dump(src_db, tmp_path / f"src.{fmt}", fmt=fmt)
    tools = find_pg_tools(str(prod_pg.bin_dir))
    data = {e.tag: e.dump_id for e in read_toc(dump, tools) if e.desc == "TABLE DATA"}
    sizes = data_sizes(dump)
    assert set(data.values()) <= set(sizes)
    # people (5000 rows) outweighs the three-row tables
    assert sizes[data["people"]] > 10 * sizes[data["Order.Items"]] > 0


@pytest.mark.parametrize("fmt", ["d", "t"])
def test_directory_and_tar_archives_load_the_same_rows(prod_pg, staging_pg16, source_dump, tmp_path, fmt):
    src_db, _ = source_dump
    dump = prod_pg.pg_dump(src_db, tmp_path / f"src.{fmt}", fmt=fmt)
    pg = staging_pg16
    tools = find_pg_tools(str(pg.bin_dir))
    db, target = _schema_only(pg, dump, tools)
    run_pg_restore(dump, target, section="data", tools=tools, jobs=2)
    assert _fingerprint(pg, db) == _fingerprint(prod_pg, src_db)


def test_an_archive_without_offsets_loads_table_by_table(prod_pg, staging_pg16, source_dump, tmp_path):
    """pg_dump -Fc writing to a pipe cannot go back to write the data offsets: no sizes, the tables
    load one per pg_restore in the archive's order, with the same rows."""
    import subprocess

    from scalingo_staging_sync.restore.dump import data_sizes

    src_db, _ = source_dump
    piped = tmp_path / "piped.pgc"
    with piped.open("wb") as fh:
        proc = subprocess.Popen(
            [str(prod_pg.bin_dir / "pg_dump"), "-Fc", "-d", prod_pg.conninfo(src_db)], stdout=subprocess.PIPE
        )
        for block in iter(lambda: proc.stdout.read(1 << 16), b""):
            fh.write(block)
        assert proc.wait() == 0
    assert data_sizes(piped) == {}
    pg = staging_pg16
    tools = find_pg_tools(str(pg.bin_dir))
    db, target = _schema_only(pg, piped, tools)
    run_pg_restore(piped, target, section="data", tools=tools, jobs=2)
    assert _fingerprint(pg, db) == _fingerprint(prod_pg, src_db)


def test_many_small_tables_share_pg_restore_runs(prod_pg, staging_pg16, tmp_path):
    """150 small tables (a typical app schema): loaded in a few batches, each table in its own
    transaction and frozen, every row as in production."""
    from scalingo_staging_sync.restore.dump import data_sizes
    from scalingo_staging_sync.restore.loader import plan_units

    src = unique_db("many_src")
    prod_pg.create_database(src)
    prod_pg.execute(
        "DO $$BEGIN FOR i IN 1..150 LOOP EXECUTE format("
        "'CREATE TABLE t%s AS SELECT g AS id, md5(g::text) || E''\\t\\\\'' AS v FROM generate_series(1, %s) g', i, i);"
        " END LOOP; END$$",
        src,
    )
    dump = prod_pg.pg_dump(src, tmp_path / "many.pgc")
    pg = staging_pg16
    tools = find_pg_tools(str(pg.bin_dir))
    entries = [e for e in read_toc(dump, tools) if e.desc == "TABLE DATA"]
    assert len(plan_units(entries, data_sizes(dump))) <= 4
    db, target = _schema_only(pg, dump, tools)
    loaded = load_table_data(dump, target, entries, tools=tools, jobs=2)
    assert len(loaded) == 150 and all(t.frozen for t in loaded)
    assert {t.table.name: t.rows for t in loaded} == {f"t{i}": i for i in range(1, 151)}
    for i in (1, 2, 64, 65, 150):  # across the batches
        query = sql.SQL("SELECT count(*), md5(string_agg(v, '|' ORDER BY id)) FROM {}").format(
            sql.Identifier(f"t{i}")
        )
        with pg.connect(db) as a, prod_pg.connect(src) as b:
            assert a.execute(query).fetchall() == b.execute(query).fetchall()


@pytest.mark.parametrize("block", [1, 2, 3, 5, 4096])
def test_terminators_split_across_blocks(prod_pg, staging_pg16, source_dump, monkeypatch, block):
    """The COPY text read in blocks of 1, 2, 3, 5 bytes: a terminator (and the next table's COPY
    line) split between two blocks is still found, every table gets exactly its rows."""
    import scalingo_staging_sync.restore.copytext as copytext
    import scalingo_staging_sync.restore.loader as loader

    monkeypatch.setattr(loader, "BLOCK", block)  # the COPY data's blocks
    monkeypatch.setattr(copytext, "BLOCK", block)  # the reads that look for the COPY lines
    src_db, dump = source_dump
    pg = staging_pg16
    tools = find_pg_tools(str(pg.bin_dir))
    db, target = _schema_only(pg, dump, tools)
    run_pg_restore(dump, target, section="data", tools=tools, jobs=2)
    assert _fingerprint(pg, db) == _fingerprint(prod_pg, src_db)


def test_data_sizes_of_a_pg18_archive(staging_pg18, tmp_path):
    """Archive 1.16 (pg_dump 17 and 18) adds a relkind to each TOC entry: still read."""
    from scalingo_staging_sync.restore.dump import data_sizes, read_dump_header

    pg = staging_pg18
    db = unique_db("sizes18")
    pg.create_database(db)
    pg.execute(
        "CREATE TABLE big AS SELECT g FROM generate_series(1, 50000) g; CREATE TABLE tiny (id int)", db
    )
    dump = pg.pg_dump(db, tmp_path / "v18.pgc")
    assert read_dump_header(dump).archive_version >= (1, 16, 0)
    tools = find_pg_tools(str(pg.bin_dir))
    data = {e.tag: e.dump_id for e in read_toc(dump, tools) if e.desc == "TABLE DATA"}
    sizes = data_sizes(dump)
    assert sizes[data["big"]] > 100 * max(1, sizes[data["tiny"]])
