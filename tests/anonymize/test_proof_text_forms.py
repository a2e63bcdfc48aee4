"""The residual proof of a table masked on load fingerprints its originals as the archive writes them,
and verification reads the masked values back from staging. Both must be the same text for the same
value, or a surviving original goes unnoticed: a ``timestamptz`` is written in the production session's
TimeZone (``pg_dump`` does not set it), ``+05:30`` here, and read back in UTC. The executor reads each
sampled original of such a column through the staging server in the styles verification uses, before
it fingerprints it."""

from __future__ import annotations

import psycopg
import pytest
from pg_helpers import new_database
from psycopg import sql

from scalingo_staging_sync.anonymize.executor import run_table_plan
from scalingo_staging_sync.anonymize.planner import plan_anonymization
from scalingo_staging_sync.restore.pgtools import find_pg_tools
from scalingo_staging_sync.restore.runner import run_pg_restore
from scalingo_staging_sync.testing.postgres import pg_bin_dir
from scalingo_staging_sync.verification import verify_residuals

from .conftest import SALT, execute, rules_from

VISITS = """
CREATE TABLE visits (id int PRIMARY KEY, email text NOT NULL, seen_at timestamptz, seen_on date);
INSERT INTO visits
SELECT g, 'visitor' || g || '@corp.test', timestamptz '2024-03-01 10:15:00+00' + g * interval '7 hours 3 minutes',
       date '2024-03-01' + g
FROM generate_series(1, 40) g;
"""
RULES = """
source_app: p
anonymization_tables:
  - table: visits
    columns: {email: email, seen_at: date_shift, seen_on: date_shift}
"""


@pytest.fixture
def kolkata_dump(prod_pg, tmp_path):
    """A dump of ``visits`` made in a production database whose TimeZone is Asia/Kolkata (+05:30), and
    the production values of ``seen_at``."""
    with new_database(prod_pg, "tzprod") as source:
        prod_pg.execute(VISITS, source)
        with prod_pg.connect(source) as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET timezone TO 'Asia/Kolkata'").format(sql.Identifier(source))
            )
        dump = prod_pg.pg_dump(source, tmp_path / "visits.pgsql")
        originals = prod_pg.execute("SELECT id, seen_at FROM visits ORDER BY id", source)
    return dump, originals


def _restore_and_mask(pg, target, dump):
    tools = find_pg_tools(pg.bin_dir)
    run_pg_restore(dump, target, section="pre-data", tools=tools)
    (item,) = plan_anonymization(target, rules_from(RULES), dump_path=str(dump), tools=tools)
    assert item["mode"] == "on_load"
    return run_table_plan(item, target, SALT, dump_path=str(dump), tools=tools)


def test_the_dump_writes_timestamptz_in_productions_time_zone(kolkata_dump):
    # the premise: the archive's text is not what a UTC session prints
    dump, _ = kolkata_dump
    from scalingo_staging_sync.restore.runner import stream_table_copy

    lines = stream_table_copy(str(dump), "public.visits", find_pg_tools(pg_bin_dir(16)))
    try:
        next(lines)  # the COPY header
        first = next(lines)
    finally:
        lines.close()
    assert "+05:30" in first


def test_a_surviving_timestamptz_original_is_caught_whatever_productions_time_zone(db_any, kolkata_dump):
    pg, target = db_any
    dump, originals = kolkata_dump
    result = _restore_and_mask(pg, target, dump)
    assert {c for r in result["proof"]["rows"] for c in r["values"]} == {"email", "seen_at", "seen_on"}

    report = verify_residuals(target, [result], SALT)
    assert report["tables"][0]["columns"]["seen_at"] == {"checked": 40, "survived": 0}

    # a masking defect that left production's instants in place: verification must see every one
    with psycopg.connect(target.conninfo(), autocommit=True) as conn:
        conn.execute("SET timezone TO 'America/Los_Angeles'")  # the values are instants: any zone
        with conn.cursor() as cur:
            cur.executemany("UPDATE visits SET seen_at = %s WHERE id = %s", [(at, i) for i, at in originals])
    report = verify_residuals(target, [result], SALT, raise_on_failure=False)
    assert not report["passed"]
    assert report["tables"][0]["columns"]["seen_at"] == {"checked": 40, "survived": 40}
    assert report["tables"][0]["columns"]["seen_on"] == {"checked": 40, "survived": 0}
    assert report["failures"] == [
        "public.visits: column public.visits.seen_at still holds 40 of 40 sampled original values"
    ]
    assert execute(target, "SELECT count(*) FROM visits WHERE email LIKE 'visitor%'") == [(0,)]
