"""Load progress from pg_stat_progress_copy, on real PostgreSQL and a real pg_restore.

The loads are made slow on purpose (a trigger that sleeps 1 ms per row), so that several polls land
inside the COPY whatever the machine's speed: a few thousand rows take seconds, and the monitor polls
every 0.2 s.
"""

from __future__ import annotations

import logging
import re
import time

import pytest
from restore_helpers import superuser_target, unique_db

from scalingo_staging_sync.pgconn import PgTarget
from scalingo_staging_sync.restore import progress as progress_mod
from scalingo_staging_sync.restore.api import restore
from scalingo_staging_sync.restore.pgtools import find_pg_tools
from scalingo_staging_sync.restore.progress import INTERVAL_ENV, CopyProgress, interval_from_env
from scalingo_staging_sync.testing.postgres import pg_bin_dir

LOGGER = progress_mod.log.name
LINE_RE = re.compile(
    r"^load progress: (?P<table>.+): (?P<rows>\d+) rows, (?P<bytes>[\d.]+) (?P<unit>B|KiB|MiB|GiB)"
    r"(?P<rate>, (?P<rows_rate>\d+) rows/s, [\d.]+ (B|KiB|MiB|GiB)/s)?$"
)
UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}

SLOW_TRIGGER = """
CREATE OR REPLACE FUNCTION public.slow_copy() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN PERFORM pg_sleep(0.001); RETURN NEW; END $$;
"""


def _slow(table_sql: str) -> str:
    return (
        f"CREATE TRIGGER slow BEFORE INSERT ON {table_sql} FOR EACH ROW EXECUTE FUNCTION public.slow_copy();"
    )


def progress_lines(caplog) -> list[dict]:
    out = []
    for record in caplog.records:
        if record.name != LOGGER:
            continue
        match = LINE_RE.match(record.getMessage())
        if match:
            d = match.groupdict()
            out.append(
                {
                    "table": d["table"],
                    "rows": int(d["rows"]),
                    "bytes": float(d["bytes"]) * UNITS[d["unit"]],
                    "rate": d["rate"] is not None,
                }
            )
    return out


def test_pg_restore_data_section_logs_rows_and_bytes_per_table(
    prod_pg, staging_pg16, tmp_path, monkeypatch, caplog
):
    src = unique_db("progress_src")
    prod_pg.create_database(src)
    prod_pg.execute(
        "CREATE TABLE big (id int PRIMARY KEY, payload text);"
        "INSERT INTO big SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 3000) g;"
        'CREATE SCHEMA "Sales Dept"; CREATE TABLE "Sales Dept"."Order.Lines" (id int, note text);'
        'INSERT INTO "Sales Dept"."Order.Lines" SELECT g, \'n\' || g FROM generate_series(1, 1500) g;',
        src,
    )
    dump_file = prod_pg.pg_dump(src, tmp_path / "progress.pgsql")
    db = unique_db("progress_dst")
    staging_pg16.create_database(db)
    target = superuser_target(staging_pg16, db)
    tools = find_pg_tools(pg_bin_dir(staging_pg16.version))
    restore(dump_file, target, section="pre-data", mode="in_place", tools=tools)
    staging_pg16.execute(
        SLOW_TRIGGER + _slow("public.big") + _slow('"Sales Dept"."Order.Lines"'),
        db,
    )

    monkeypatch.setenv(INTERVAL_ENV, "0.2")
    caplog.set_level(logging.INFO, logger=LOGGER)
    out = restore(dump_file, target, section="data", mode="in_place", tools=tools, jobs=2)
    assert out["tables"]["public.big"]["rows"] == 3000

    lines = progress_lines(caplog)
    by_table: dict[str, list[dict]] = {}
    for line in lines:
        by_table.setdefault(line["table"], []).append(line)
    # both tables, named in canonical TableName form (a dot in a name is quoted)
    assert set(by_table) == {"public.big", 'Sales Dept."Order.Lines"'}, [
        r.getMessage() for r in caplog.records
    ]
    big = by_table["public.big"]
    assert len(big) >= 2
    rows = [line["rows"] for line in big]
    assert rows == sorted(rows) and rows[-1] > rows[0], rows
    assert 0 < rows[-1] <= 3000
    assert all(line["bytes"] > 0 for line in big[1:])
    assert any(line["rate"] for line in big[1:]), "a second poll of the same COPY gives rates"
    # no progress line is left running: the monitor stops with pg_restore
    assert not [t for t in progress_mod.threading.enumerate() if t.name.startswith("copy-progress-")]


def test_copy_progress_reads_a_copy_from_stdin_on_another_connection(staging_pg16, caplog):
    db = unique_db("progress_copy")
    staging_pg16.create_database(db)
    staging_pg16.execute(SLOW_TRIGGER + "CREATE TABLE t (id int, v text);" + _slow("t"), db)
    target = superuser_target(staging_pg16, db)
    caplog.set_level(logging.INFO, logger=LOGGER)
    with CopyProgress(target, interval_s=0.2) as monitor:
        with target.connect() as conn, conn.cursor() as cur:
            with cur.copy("COPY t (id, v) FROM STDIN") as copy:
                for i in range(2000):
                    copy.write_row((i, "x" * 100))
    assert monitor.polls >= 2 and monitor.error is None
    seen = [s for s in monitor.samples if s.table == "public.t"]
    assert len(seen) >= 2 and seen[-1].rows > seen[0].rows
    assert seen[-1].bytes > seen[0].bytes > 0
    assert seen[0].to_json().keys() == {"table", "rows", "bytes", "bytes_total"}
    assert len(progress_lines(caplog)) == len(monitor.samples)


def test_monitor_never_fails_the_load(caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    nowhere = PgTarget(host="127.0.0.1", port=1, dbname="nope", user="u", password="s3cret-pw")
    with CopyProgress(nowhere, interval_s=0.1) as monitor:
        deadline = time.monotonic() + 60
        while monitor.error is None and time.monotonic() < deadline:
            time.sleep(0.05)
    assert monitor.error and "cannot connect" in monitor.error
    assert caplog.text.count("no reading") == 1  # said once, not at every poll
    assert "s3cret-pw" not in caplog.text


def test_interval_from_env(monkeypatch, caplog):
    monkeypatch.delenv(INTERVAL_ENV, raising=False)
    assert interval_from_env() == 5.0
    monkeypatch.setenv(INTERVAL_ENV, "0")
    assert interval_from_env() == 0.0
    monitor = CopyProgress(PgTarget(host="x", dbname="y"))
    assert monitor.start()._thread is None  # 0 turns it off
    monkeypatch.setenv(INTERVAL_ENV, "soon")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert interval_from_env() == 5.0
    assert "'soon'" in caplog.text and INTERVAL_ENV in caplog.text


@pytest.mark.parametrize("n", [0, 512, 5 * 1024**2])
def test_human_bytes(n):
    text = progress_mod.human_bytes(n)
    assert text in {"0 B", "512 B", "5.0 MiB"}
