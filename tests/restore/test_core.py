"""Restore core against real PostgreSQL 16/18 servers and real pg_dump archives."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from restore_helpers import make_scalingo_db, superuser_target, tables_of, unique_db

from scalingo_staging_sync.anonymize.planner import archive_primary_keys
from scalingo_staging_sync.pgconn import PgTarget
from scalingo_staging_sync.restore import dump as dumpmod
from scalingo_staging_sync.restore import targets
from scalingo_staging_sync.restore.api import restore
from scalingo_staging_sync.restore.errors import (
    DumpFormatError,
    DumpTooNewError,
    MissingExtensionError,
    RestoreError,
    TargetError,
)
from scalingo_staging_sync.restore.pgtools import PG_BIN_ENV, find_pg_tools
from scalingo_staging_sync.restore.runner import StderrParser, run_pg_restore, stream_table_copy
from scalingo_staging_sync.restore.toc import read_toc
from scalingo_staging_sync.tablename import TableName
from scalingo_staging_sync.testing.postgres import pg_bin_dir

CHINOOK_TABLES = {
    f"public.{t}"
    for t in (
        "album artist customer employee genre invoice invoice_line media_type playlist playlist_track track".split()
    )
}
PG15_BIN = Path("/usr/lib/postgresql/15/bin")


def _marker(pg, db):
    pg.execute("CREATE TABLE live_marker (x int); INSERT INTO live_marker VALUES (42)", db)


def _marked_target(pg) -> tuple[str, PgTarget]:
    """A new database holding the previous-staging marker, and a superuser target on it."""
    db = unique_db()
    pg.create_database(db)
    _marker(pg, db)
    return db, superuser_target(pg, db)


def _has_marker(pg, db) -> bool:
    return pg.execute("SELECT x FROM live_marker", db) == [(42,)]


# ---------------------------------------------------------------------------------------------- dumps


def test_header_toc_keys_and_copy_stream(chinook_dump, tmp_path, prod_pg, chinook_prod):
    header = dumpmod.read_dump_header(chinook_dump)
    assert (header.format, header.archive_version[:2], header.dump_major) == ("custom", (1, 15), 16)
    assert header.server_version.startswith("16.")
    tools = find_pg_tools(pg_bin_dir(16))
    entries = read_toc(chinook_dump, tools)
    assert {e.qualified for e in entries if e.desc == "TABLE DATA"} == CHINOOK_TABLES
    pks = archive_primary_keys(chinook_dump, tools)
    assert pks["public.playlist_track"] == ["playlist_id", "track_id"]
    assert pks["public.customer"] == ["customer_id"]
    stream = stream_table_copy(chinook_dump, "artist", tools)
    assert next(stream).startswith("COPY public.artist (artist_id, name) FROM stdin;")
    assert next(stream).split("\t")[0] == "1"
    stream.close()  # early stop kills pg_restore
    rows = list(stream_table_copy(chinook_dump, "public.track", tools))
    assert len(rows) == 1 + 3503

    plain = prod_pg.pg_dump(chinook_prod, tmp_path / "c.sql", fmt="p")
    assert dumpmod.read_dump_header(plain).format == "plain"
    tar = prod_pg.pg_dump(chinook_prod, tmp_path / "c.tar", fmt="t")
    assert dumpmod.read_dump_header(tar).format == "tar"
    junk = tmp_path / "junk.pgsql"
    junk.write_bytes(b"hello, not a dump")
    with pytest.raises(DumpFormatError):
        dumpmod.read_dump_header(junk)


def test_stderr_parser_separates_harmless_errors():
    parser = StderrParser(total=2, ids=[10, 11])
    for line in [
        "pg_restore: processing item 10 TABLE album",
        "pg_restore: from TOC entry 10; 1259 1 TABLE public album someone",
        'pg_restore: error: could not execute query: ERROR:  role "someone" does not exist',
        "Command was: ALTER TABLE public.album OWNER TO someone;",
        "pg_restore: processing item 11 FK CONSTRAINT invoice invoice_customer_id_fkey",
        "pg_restore: from TOC entry 11; 2606 2 FK CONSTRAINT public invoice invoice_customer_id_fkey x",
        'pg_restore: error: could not execute query: ERROR:  insert or update on table "invoice" violates',
        "pg_restore: warning: errors ignored on restore: 2",
    ]:
        parser.feed(line)
    parser.close()
    assert parser.done == 2
    assert [i.harmless for i in parser.issues] == ["missing role", None]
    fatal = parser.fatal()
    assert len(fatal) == 1 and "FK CONSTRAINT" in fatal[0].toc_entry


# ------------------------------------------------------------------------------------ tool versions


@pytest.mark.skipif(not (PG15_BIN / "pg_restore").exists(), reason="Debian PostgreSQL 15 tools not installed")
def test_dump_newer_than_pg_restore_is_refused_before_anything(chinook_dump, staging_pg16, monkeypatch):
    db, target = _marked_target(staging_pg16)
    with pytest.raises(DumpTooNewError) as err:
        restore(chinook_dump, target, pg_bin_dir=str(PG15_BIN), mode="in_place")
    msg = str(err.value)
    assert "dump made by PostgreSQL 16 needs pg_restore >= 16" in msg and PG_BIN_ENV in msg
    monkeypatch.setenv(PG_BIN_ENV, str(PG15_BIN))
    with pytest.raises(DumpTooNewError):
        restore(chinook_dump, target, mode="swap")
    assert _has_marker(staging_pg16, db)
    assert not staging_pg16.database_exists(db + "__incoming")


# ------------------------------------------------------------------------------------ swap / phases


def test_swap_by_phases_then_promote(chinook_dump, staging_pg):
    db, target = _marked_target(staging_pg)
    tools = find_pg_tools(pg_bin_dir(staging_pg.version))
    pre = restore(chinook_dump, target, section="pre-data", tools=tools)
    assert pre["mode"] == "swap" and pre["database"] == f"{db}__incoming"
    scratch = pre["database"]
    assert tables_of(staging_pg, scratch) == CHINOOK_TABLES
    # pre-data creates no index: anonymization runs before indexes exist
    assert staging_pg.execute("SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'", scratch) == [
        (0,)
    ]
    data = restore(chinook_dump, target, section="data", tools=tools)
    assert data["tables"]["public.track"]["rows"] == 3503
    assert data["tables"]["public.invoice"]["bytes"] > 0
    post = restore(chinook_dump, target, section="post-data", tools=tools)
    assert post["database"] == scratch and post["warnings"] == []
    assert (
        staging_pg.execute("SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'", scratch)[0][0] >= 22
    )
    assert _has_marker(staging_pg, db)  # live untouched until promotion
    out = targets.promote(target, "swap", keep_previous=True)
    assert out["previous"] == f"{db}__previous"
    assert staging_pg.execute("SELECT count(*) FROM track", db) == [(3503,)]
    assert _has_marker(staging_pg, f"{db}__previous")
    assert not staging_pg.database_exists(scratch)
    # second run, previous copy dropped this time
    restore(chinook_dump, target, section="all", tools=tools)
    targets.promote(target, "swap", keep_previous=False)
    assert not staging_pg.database_exists(f"{db}__previous")
    assert staging_pg.execute("SELECT count(*) FROM invoice_line", db) == [(2240,)]


def test_swap_promote_with_target_in_use(chinook_dump, staging_pg18):
    pg = staging_pg18
    db = unique_db()
    pg.create_database(db)
    target = superuser_target(pg, db)
    restore(chinook_dump, target, section="all", mode="swap", tools=find_pg_tools(pg_bin_dir(18)))
    blocker = pg.connect(db)
    blocker.execute("SELECT 1")
    with pytest.raises(TargetError, match="in use"):
        targets.promote(target, "swap", terminate=False)
    assert pg.database_exists(f"{db}__incoming")  # nothing half-done
    targets.promote(target, "swap")  # ends the session
    with pytest.raises(psycopg.OperationalError):
        blocker.execute("SELECT 1")
    blocker.close()
    assert pg.execute("SELECT count(*) FROM artist", db) == [(275,)]


# ------------------------------------------------------------------------------------ in place


def test_in_place_with_exactly_scalingo_grants(chinook_dump, staging_pg):
    db = unique_db("scalingo")
    target = make_scalingo_db(staging_pg, db)
    assert targets.resolve_mode(target, "auto") == "in_place"
    with target.connect() as conn:  # what the app had in staging before
        conn.execute("CREATE TABLE old_app_table (id int); INSERT INTO old_app_table VALUES (1)")
        conn.execute("CREATE TABLE album (stale int)")
    tools = find_pg_tools(pg_bin_dir(staging_pg.version))
    for section in ("pre-data", "data", "post-data"):
        out = restore(chinook_dump, target, section=section, tools=tools)
        assert out["mode"] == "in_place" and out["database"] == db
    assert tables_of(staging_pg, db) == CHINOOK_TABLES
    assert staging_pg.execute("SELECT count(*) FROM customer", db) == [(59,)]
    owner = staging_pg.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'track'", db)
    assert owner == [("scalingo_stg_user",)]
    assert targets.read_state(target)["status"] == "unmasked"
    # teardown before verification -> fail closed: wiped
    out = targets.cleanup(target, "in_place")
    assert out["wiped"] and tables_of(staging_pg, db) == set()
    # a full run, verified (promote), survives the teardown
    restore(chinook_dump, target, section="all", tools=tools)
    targets.promote(target, "in_place")
    assert targets.cleanup(target, "auto")["wiped"] is False
    assert staging_pg.execute("SELECT count(*) FROM track", db) == [(3503,)]


def test_exclude_referenced_table_skips_its_fks(chinook_dump, staging_pg16, caplog):
    pg = staging_pg16
    db = unique_db("scalingo")
    target = make_scalingo_db(pg, db)
    tools = find_pg_tools(pg_bin_dir(16))
    results = [
        restore(chinook_dump, target, section=s, exclude_tables=["customer"], tools=tools)
        for s in ("pre-data", "data", "post-data")
    ]
    assert results[1]["excluded"] == ["public.customer"]
    assert "public.customer" not in results[1]["tables"]
    assert any("invoice_customer_id_fkey" in s for s in results[2]["skipped"])
    assert "FK to excluded table" in caplog.text
    assert pg.execute("SELECT count(*) FROM customer", db) == [(0,)]
    assert pg.execute("SELECT count(*) FROM invoice", db) == [(412,)]
    fks = {r[0] for r in pg.execute("SELECT conname FROM pg_constraint WHERE contype = 'f'", db)}
    assert "invoice_customer_id_fkey" not in fks and "invoice_line_invoice_id_fkey" in fks
    # names are exact, never regexes: "invoice.*" matches nothing, and is refused as no table
    with pytest.raises(RestoreError, match=r"exclude_tables invoice\.\*, exclude_tables public\.invoic"):
        restore(
            chinook_dump, target, section="all", exclude_tables=["invoice.*", "public.invoic"], tools=tools
        )
    assert pg.execute("SELECT count(*) FROM invoice", db) == [(412,)]


# ------------------------------------------------------------------------------------ bad dumps


def _truncated(src: Path, dst: Path, fraction: float = 0.7) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def _corrupt_middle(src: Path, dst: Path) -> Path:
    data = bytearray(src.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = b"\xff" * 64
    dst.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize("mode", ["swap", "in_place"])
def test_truncated_and_corrupt_dumps_leave_staging_untouched(chinook_dump, staging_pg16, tmp_path, mode):
    pg = staging_pg16
    db, target = _marked_target(pg)
    tools = find_pg_tools(pg_bin_dir(16))
    truncated = _truncated(chinook_dump, tmp_path / "truncated.pgsql")
    with pytest.raises(DumpFormatError, match="truncated"):
        restore(truncated, target, mode=mode, tools=tools)
    header_broken = tmp_path / "header.pgsql"
    header_broken.write_bytes(chinook_dump.read_bytes()[:5] + b"\x09\x09" + chinook_dump.read_bytes()[7:])
    with pytest.raises(DumpFormatError):
        restore(header_broken, target, mode=mode, tools=tools)
    corrupt = _corrupt_middle(chinook_dump, tmp_path / "corrupt.pgsql")
    with pytest.raises(DumpFormatError, match="corrupt"):
        restore(corrupt, target, mode=mode, tools=tools, verify="full")
    assert _has_marker(pg, db)
    assert not pg.database_exists(f"{db}__incoming")
    # without the full check, the corruption surfaces during the restore: fail closed
    with pytest.raises(RestoreError):
        restore(corrupt, target, mode=mode, tools=tools)
    assert not pg.database_exists(f"{db}__incoming")
    if mode == "swap":
        assert _has_marker(pg, db)
    else:
        assert tables_of(pg, db) == set()  # wiped: no half-restored production data
        assert targets.read_state(target)["status"] == "wiped"


# ------------------------------------------------------------------------------------ interruptions


def test_run_killed_between_sections_then_clean_run(chinook_dump, staging_pg18):
    pg = staging_pg18
    db, target = _marked_target(pg)
    tools = find_pg_tools(pg_bin_dir(18))
    restore(chinook_dump, target, section="pre-data+data", mode="swap", tools=tools)
    # ... the worker dies here: no post-data, no promote, no teardown. A stale scratch remains.
    assert pg.database_exists(f"{db}__incoming")
    pg.execute("CREATE TABLE stale_from_killed_run (x int)", f"{db}__incoming")
    restore(chinook_dump, target, section="pre-data", mode="swap", tools=tools)  # drops the stale one
    assert "public.stale_from_killed_run" not in tables_of(pg, f"{db}__incoming")
    restore(chinook_dump, target, section="data", mode="swap", tools=tools)
    restore(chinook_dump, target, section="post-data", mode="swap", tools=tools)
    targets.promote(target, "swap", keep_previous=False)
    assert tables_of(pg, db) == CHINOOK_TABLES

    # in place: killed after data -> the teardown (or next start) wipes the unmasked data
    db2 = unique_db("scalingo")
    target2 = make_scalingo_db(pg, db2)
    restore(chinook_dump, target2, section="pre-data+data", tools=tools)
    assert targets.cleanup(target2)["wiped"]
    assert tables_of(pg, db2) == set()


def test_interrupted_pg_restore_is_killed_and_cleaned(chinook_dump, staging_pg16):
    pg = staging_pg16
    db = unique_db()
    pg.create_database(db)
    target = superuser_target(pg, db)

    def boom(done, total, current):
        if done >= 3:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        restore(
            chinook_dump,
            target,
            section="all",
            mode="swap",
            progress=boom,
            jobs=1,
            tools=find_pg_tools(pg_bin_dir(16)),
        )
    assert not pg.database_exists(f"{db}__incoming")


# ------------------------------------------------------------------------------------ names


def test_quotes_spaces_and_capitals(prod_pg, staging_pg, tmp_path):
    src = unique_db("Prod Src")
    prod_pg.create_database(src)
    prod_pg.execute(
        'CREATE SCHEMA "Sales Dept";'
        'CREATE TABLE "Order Items" (id int PRIMARY KEY, "Label" text);'
        "INSERT INTO \"Order Items\" SELECT g, 'x' || g FROM generate_series(1, 10) g;"
        'CREATE TABLE "Sales Dept"."Big ""Q"" Table" (id int PRIMARY KEY, item int REFERENCES "Order Items");'
        'INSERT INTO "Sales Dept"."Big ""Q"" Table" SELECT g, g FROM generate_series(1, 5) g;',
        src,
    )
    dump_file = prod_pg.pg_dump(src, tmp_path / "quoted.pgsql")
    tools = find_pg_tools(pg_bin_dir(staging_pg.version))
    pks = archive_primary_keys(dump_file, tools)
    big = str(TableName("Sales Dept", 'Big "Q" Table'))  # the canonical key: 'Sales Dept."Big ""Q"" Table"'
    assert pks == {"public.Order Items": ["id"], big: ["id"]}
    db = 'Stag "ing" db ' + unique_db("X")
    staging_pg.create_database(db)
    target = superuser_target(staging_pg, db)
    out = restore(
        dump_file, target, section="pre-data+data", mode="swap", tools=tools, exclude_tables=["Order Items"]
    )
    assert out["excluded"] == ["public.Order Items"]
    assert out["tables"] == {big: {"rows": 5, "bytes": out["tables"][big]["bytes"]}}
    post = restore(
        dump_file, target, section="post-data", mode="swap", tools=tools, exclude_tables=["Order Items"]
    )
    assert any("Big" in s and "FK to excluded" in s for s in post["skipped"])
    targets.promote(target, "swap")
    assert staging_pg.execute('SELECT count(*) FROM "Sales Dept"."Big ""Q"" Table"', db) == [(5,)]
    assert staging_pg.execute('SELECT count(*) FROM "Order Items"', db) == [(0,)]
    rows = list(stream_table_copy(dump_file, '"Sales Dept"."Big ""Q"" Table"', tools))
    assert len(rows) == 6


# ------------------------------------------------------------------------------------ plain SQL


def test_plain_sql_dump_through_psql(prod_pg, chinook_prod, staging_pg16, tmp_path):
    pg = staging_pg16
    plain = prod_pg.pg_dump(chinook_prod, tmp_path / "chinook.sql", fmt="p", extra=["--no-owner", "--no-acl"])
    db = unique_db("scalingo")
    target = make_scalingo_db(pg, db)
    tools = find_pg_tools(pg_bin_dir(16))
    out = restore(plain, target, section="pre-data", tools=tools)
    assert out["format"] == "plain" and any("sections do not apply" in w for w in out["warnings"])
    assert out["tables"]["public.track"]["rows"] == 3503
    noop = restore(plain, target, section="post-data", tools=tools)
    assert "does not apply" in noop["warnings"][0]
    with pytest.raises(RestoreError, match="exclude_tables"):
        restore(plain, target, exclude_tables=["customer"], tools=tools)
    broken = tmp_path / "broken.sql"
    broken.write_text(plain.read_text() + "\nSELECT * FROM no_such_table;\n")
    with pytest.raises(RestoreError, match="ON_ERROR_STOP|no_such_table|first error"):
        restore(broken, target, section="all", tools=tools)
    assert tables_of(pg, db) == set()  # fail closed


# ------------------------------------------------------------------------------------ extensions


@pytest.fixture
def fake_postgis_on_pg16():
    """A stand-in 'postgis' extension installed in the embedded PG16 only (PG18 lacks it, like both
    lack the real PostGIS): lets production dump a database that needs postgis."""
    ext_dir = pg_bin_dir(16).parent / "share" / "postgresql" / "extension"
    if not ext_dir.exists():
        ext_dir = pg_bin_dir(16).parent / "share" / "extension"
    control, script = ext_dir / "postgis.control", ext_dir / "postgis--0.0.1.sql"
    if control.exists():
        pytest.skip("a postgis extension is really installed")
    control.write_text("default_version = '0.0.1'\nrelocatable = false\nschema = public\n")
    script.write_text(
        "CREATE TABLE spatial_ref_sys (srid int PRIMARY KEY, auth_name text);\n"
        "SELECT pg_catalog.pg_extension_config_dump('spatial_ref_sys', 'WHERE srid > 900000');\n"
        "INSERT INTO spatial_ref_sys VALUES (4326, 'EPSG');\n"
    )
    try:
        yield
    finally:
        control.unlink(missing_ok=True)
        script.unlink(missing_ok=True)


def test_missing_extension_is_refused_before_anything(prod_pg, staging_pg18, tmp_path, fake_postgis_on_pg16):
    src = unique_db("gis")
    prod_pg.create_database(src)
    prod_pg.execute(
        "CREATE EXTENSION postgis; INSERT INTO spatial_ref_sys VALUES (900001, 'custom');"
        "CREATE TABLE places (id int PRIMARY KEY, srid int)",
        src,
    )
    dump_file = prod_pg.pg_dump(src, tmp_path / "gis.pgsql")
    tools = find_pg_tools(pg_bin_dir(18))
    entries = read_toc(dump_file, tools)
    assert dumpmod.extensions(entries) == ["postgis"]
    db = unique_db()
    staging_pg18.create_database(db)
    _marker(staging_pg18, db)
    for mode in ("swap", "in_place"):
        with pytest.raises(MissingExtensionError, match="postgis"):
            restore(dump_file, superuser_target(staging_pg18, db), mode=mode, tools=tools)
    assert _has_marker(staging_pg18, db) and not staging_pg18.database_exists(f"{db}__incoming")
    # the config rows the extension marked for dumping are extension config: kept by the selection
    data = {e.qualified for e in entries if e.desc == "TABLE DATA"}
    assert "public.spatial_ref_sys" in data and not any(
        e.desc == "TABLE" and e.tag == "spatial_ref_sys" for e in entries
    )


def test_run_pg_restore_contract_only_and_exclude_data(chinook_dump, staging_pg18):
    pg = staging_pg18
    db = unique_db()
    pg.create_database(db)
    target = superuser_target(pg, db)
    tools = find_pg_tools(pg_bin_dir(18))
    run_pg_restore(chinook_dump, target, section="pre-data", tools=tools)
    res = run_pg_restore(
        chinook_dump, target, section="data", tools=tools, exclude_data=["public.customer", "track"]
    )
    assert set(res.excluded_data) == {"public.customer", "public.track"}
    assert pg.execute("SELECT count(*) FROM track", db) == [(0,)]
    res = run_pg_restore(chinook_dump, target, section="data", tools=tools, only_data=["track"])
    assert res.tables == ["public.track"] and res.entries_done == res.entries_total
    assert pg.execute("SELECT count(*) FROM track", db) == [(3503,)]
    run_pg_restore(chinook_dump, target, section="post-data", tools=tools, exclude_tables=["customer"])
    # duplicate keys now: track is referenced by invoice_line, so it is not truncated (no FREEZE)
    with pytest.raises(RestoreError, match=r"data of public\.track \(TOC entry \d+\) failed: SQLSTATE 23505"):
        run_pg_restore(chinook_dump, target, section="data", tools=tools, only_data=["track"])


def test_data_section_refuses_tables_that_already_hold_rows(chinook_dump, staging_pg):
    """A table loaded (masked) by an earlier step, then the data section of the same archive: its rows
    would be replaced by the archive's original ones. The section refuses before loading anything,
    names the table and the fix; leaving it out with exclude_data loads the rest and keeps its rows."""
    db, target = _marked_target(staging_pg)
    tools = find_pg_tools(pg_bin_dir(staging_pg.version))
    scratch = restore(chinook_dump, target, section="pre-data", tools=tools)["database"]
    staging_pg.execute(
        "INSERT INTO customer (customer_id, first_name, last_name, email) VALUES (1, 'M', 'M', 'masked@example.com')",
        scratch,
    )
    with pytest.raises(RestoreError, match=r"already hold rows.*public\.customer.*exclude_data") as err:
        restore(chinook_dump, target, section="data", tools=tools)
    assert "public.track" not in str(err.value)
    assert _has_marker(staging_pg, db)  # live staging untouched
    scratch = restore(chinook_dump, target, section="pre-data", tools=tools)["database"]
    staging_pg.execute(
        "INSERT INTO customer (customer_id, first_name, last_name, email) VALUES (1, 'M', 'M', 'masked@example.com')",
        scratch,
    )
    data = restore(chinook_dump, target, section="data", tools=tools, exclude_data=["customer"])
    assert data["tables"]["public.track"]["rows"] == 3503
    assert staging_pg.execute("SELECT email FROM customer", scratch) == [("masked@example.com",)]


def test_an_exclusion_naming_no_table_of_the_archive_is_refused_before_anything_is_touched(
    chinook_dump, staging_pg
):
    """``exclude_tables=["invoice_lines"]`` (a typo of invoice_line) would restore the data it meant to
    keep out: refused, naming the argument and the name, before the target is touched."""
    db, target = _marked_target(staging_pg)
    tools = find_pg_tools(pg_bin_dir(staging_pg.version))
    with pytest.raises(RestoreError, match=r"exclude_tables public\.invoice_lines.*exclude_data crm\.x"):
        restore(
            chinook_dump,
            target,
            section="pre-data",
            tools=tools,
            exclude_tables=["invoice_lines"],
            exclude_data=["crm.x"],
        )
    assert not staging_pg.database_exists(f"{db}__incoming")
    assert _has_marker(staging_pg, db)


def _chinook_plan(chinook_dump, tools, rules_yaml: str):
    import textwrap

    from scalingo_staging_sync.anonymize.rules import parse_rules_text
    from scalingo_staging_sync.inventory import plan_from_archive

    rules = parse_rules_text(textwrap.dedent(rules_yaml))
    return plan_from_archive(str(chinook_dump), rules, tools=tools).to_json()


def test_in_place_rules_that_only_the_tables_refuse_are_found_before_staging_is_wiped(
    chinook_dump, staging_pg
):
    """In place, the pre-data restore wipes staging: a condition that parses but does not compile, a
    fixed value a date column refuses and an inline query with an error (none of which the archive-only
    planning can judge) are found first, in a rolled-back rehearsal: every problem named at once, the
    previous staging data and its state untouched. Good rules restore as before."""
    db = unique_db("scalingo")
    target = make_scalingo_db(staging_pg, db)
    with target.connect() as conn:  # what the app had in staging before
        conn.execute("CREATE TABLE old_app_table (id int); INSERT INTO old_app_table VALUES (1)")
    tools = find_pg_tools(pg_bin_dir(staging_pg.version))
    bad = _chinook_plan(
        chinook_dump,
        tools,
        """
        source_app: chinook-production
        anonymization_tables:
          - table: customer
            condition: "support_rep_id > 'abc'"
            columns: {email: email}
          - table: employee
            columns: {birth_date: {transformer: fixed, value: "not a date"}, email: email}
          - table: invoice
            query: "UPDATE public.invoice SET billing_adress = NULL"
        """,
    )
    from scalingo_staging_sync.anonymize.rehearsal import RehearsalError

    with pytest.raises(RehearsalError) as err:
        restore(chinook_dump, target, section="pre-data", tools=tools, plan=bad)
    message = str(err.value)
    assert "public.customer: condition \"support_rep_id > 'abc'\"" in message and "integer" in message
    assert "public.employee.birth_date" in message and "'not a date'" in message
    assert "public.invoice: its query does not compile" in message and "billing_adress" in message
    assert "staging keeps its data" in message
    assert staging_pg.execute("SELECT id FROM old_app_table", db) == [(1,)]
    assert tables_of(staging_pg, db) == {"public.old_app_table"}
    assert targets.read_state(target) is None  # never marked as holding unmasked data

    good = _chinook_plan(
        chinook_dump,
        tools,
        """
        source_app: chinook-production
        anonymization_tables:
          - table: customer
            condition: "support_rep_id > 3"
            columns: {email: email}
          - table: employee
            columns: {birth_date: {transformer: fixed, value: "1970-01-01"}, email: email}
        """,
    )
    out = restore(chinook_dump, target, section="pre-data", tools=tools, plan=good)
    assert out["mode"] == "in_place" and tables_of(staging_pg, db) == CHINOOK_TABLES


def test_the_gate_does_not_take_another_runs_scratch_database_in_use_for_a_leftover(staging_pg):
    """A scratch database with a session open on it is another run restoring into the same staging:
    the leftovers recovery refuses to drop it and says why; once nobody uses it, it is a leftover."""
    db, target = _marked_target(staging_pg)
    scratch = targets.create_scratch(target)
    with scratch.connect() as other_run:
        other_run.execute("SELECT 1")
        with pytest.raises(TargetError, match=rf"{db}__incoming has 1 open session.*one at a time"):
            targets.recover_leftovers(target)
        assert staging_pg.database_exists(scratch.dbname)
    out = targets.recover_leftovers(target)
    assert out["found"] and not staging_pg.database_exists(scratch.dbname)
    assert _has_marker(staging_pg, db)


def test_promote_refuses_a_scratch_database_another_run_created(chinook_dump, staging_pg):
    """Run A verified its copy; run B then replaced the scratch database with its own (two runs on one
    staging). A's promote must not make B's unverified copy live: the scratch records the run that made
    it, and a promote by another run is refused, nothing renamed."""
    db, target = _marked_target(staging_pg)
    tools = find_pg_tools(pg_bin_dir(staging_pg.version))
    restore(chinook_dump, target, section="pre-data", tools=tools, owner="sync/run-b")
    with pytest.raises(TargetError, match=r"created by run sync/run-b, not by this run \(sync/run-a\)"):
        targets.promote(target, "swap", owner="sync/run-a")
    assert _has_marker(staging_pg, db) and staging_pg.database_exists(f"{db}__incoming")
    out = targets.promote(target, "swap", owner="sync/run-b", keep_previous=False)
    assert out["mode"] == "swap" and not _has_marker_table(staging_pg, db)


def test_in_place_the_first_runs_promote_and_teardown_leave_a_second_runs_restore_to_it(
    chinook_dump, staging_pg
):
    """Two runs on one staging database, in place: run B restored staging again after run A had. A's
    promote must not mark B's (unmasked) data verified, and A's teardown neither wipes B's work nor
    marks it verified; B's own teardown (B failed) wipes it. Before, A's teardown (verified: its
    promote had passed) marked B's restore verified, and B's failed-run teardown then left its unmasked
    data in staging."""
    db = unique_db("scalingo")
    target = make_scalingo_db(staging_pg, db)
    tools = find_pg_tools(pg_bin_dir(staging_pg.version))
    restore(chinook_dump, target, section="all", tools=tools, owner="sync/run-a")
    restore(chinook_dump, target, section="pre-data", tools=tools, owner="sync/run-b")
    with pytest.raises(TargetError, match=r"restored by run sync/run-b, not by this run \(sync/run-a\)"):
        targets.promote(target, "in_place", owner="sync/run-a")
    out = targets.cleanup(target, "in_place", verified=True, owner="sync/run-a")
    assert not out["wiped"] and any("restored by run sync/run-b: left to that run" in f for f in out["found"])
    assert targets.read_state(target)["status"] == "unmasked"
    assert tables_of(staging_pg, db) == CHINOOK_TABLES  # B's restore untouched
    out = targets.cleanup(target, "in_place", owner="sync/run-b")  # B failed: its own teardown
    assert out["wiped"] and tables_of(staging_pg, db) == set()
    # without owners (operators used outside a DAG run, a state of an earlier version): as before
    restore(chinook_dump, target, section="all", tools=tools)
    targets.promote(target, "in_place", owner="sync/run-c")
    assert targets.read_state(target)["status"] == "verified"


def test_swap_the_first_runs_teardown_leaves_a_second_runs_scratch_database_to_it(chinook_dump, staging_pg):
    """Run B is restoring into the scratch database while run A's teardown runs: A leaves it (B's
    cleanup, or the next gate once B is gone, drops it); B's teardown drops it."""
    db, target = _marked_target(staging_pg)
    tools = find_pg_tools(pg_bin_dir(staging_pg.version))
    restore(chinook_dump, target, section="pre-data", tools=tools, owner="sync/run-b")
    out = targets.cleanup(target, "swap", verified=None, owner="sync/run-a")
    assert not out["dropped_scratch"] and staging_pg.database_exists(f"{db}__incoming")
    assert any("of run sync/run-b: left to that run" in f for f in out["found"])
    out = targets.cleanup(target, "swap", verified=None, owner="sync/run-b")
    assert out["dropped_scratch"] and not staging_pg.database_exists(f"{db}__incoming")
    assert _has_marker(staging_pg, db)


def _has_marker_table(pg, db) -> bool:
    return bool(pg.execute("SELECT to_regclass('public.live_marker') IS NOT NULL", db)[0][0])


def test_a_promote_retried_after_its_swap_committed_finishes_instead_of_failing(chinook_dump, staging_pg):
    """The swap committed, then the promote failed (dropping ``__previous`` lost its connection): the
    retry of the same run's promote finds its own copy live, finishes (drops ``__previous``) and
    succeeds. Another run's promote still finds nothing to promote."""
    db, target = _marked_target(staging_pg)
    tools = find_pg_tools(pg_bin_dir(staging_pg.version))
    restore(chinook_dump, target, section="all", tools=tools, owner="sync/run-a")

    def lost_connection(step):
        if step == "swapped":
            raise psycopg.OperationalError("server closed the connection unexpectedly")

    with pytest.raises(psycopg.OperationalError):
        targets.promote(target, "swap", owner="sync/run-a", keep_previous=False, step_hook=lost_connection)
    assert staging_pg.database_exists(f"{db}__previous")
    with pytest.raises(TargetError, match="nothing to promote"):
        targets.promote(target, "swap", owner="sync/run-b", keep_previous=False)
    out = targets.promote(target, "swap", owner="sync/run-a", keep_previous=False)
    assert out["database"] == db and out["previous"] is None and out["retried"] is True
    assert not staging_pg.database_exists(f"{db}__previous")
    assert staging_pg.execute("SELECT count(*) FROM track", db) == [(3503,)]
