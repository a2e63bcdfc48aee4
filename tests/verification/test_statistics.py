"""Statistics and materialized views after masking, on PostgreSQL 16 and 18: verification reads
``pg_stats`` (and extended statistics) for the sampled originals; ``analyze_masked`` makes it pass;
materialized views are refreshed from masked data in dependency order."""

from __future__ import annotations

import subprocess

import pytest
from pg_helpers import new_database

from scalingo_staging_sync.anonymize.executor import run_table_plan
from scalingo_staging_sync.anonymize.postload import (
    PostLoadError,
    analyze_masked,
    finalize_masked_data,
    matview_refresh_order,
    refresh_materialized_views,
)
from scalingo_staging_sync.pgconn import PgTarget
from scalingo_staging_sync.tablename import TableName
from scalingo_staging_sync.verification import ResidualValueError, verify_residuals

SALT = "test-salt-for-statistics-0123456789"


@pytest.fixture
def target(staging_pg):
    with new_database(staging_pg, "stats") as name:
        yield PgTarget(host=staging_pg.host, port=staging_pg.port, user=staging_pg.user, dbname=name)


def run(target: PgTarget, statement: str):
    with target.connect() as conn:
        cur = conn.execute(statement)
        return cur.fetchall() if cur.description else []


def item(name: str, columns: dict, key=("id",)) -> dict:
    return {
        "table": f"public.{name}", "schema": "public", "name": name, "mode": "in_place", "columns": columns,
        "strategy": None, "condition": None, "query": None, "key_columns": list(key),
        "masked_columns": list(columns), "warnings": [],
    }  # fmt: skip


PEOPLE = """
-- no autovacuum: an ANALYZE it ran after the masking UPDATE would replace the statistics under test
CREATE TABLE people (id int PRIMARY KEY, email text, city text, plan text) WITH (autovacuum_enabled = false);
INSERT INTO people SELECT g, 'person' || g || '@corp.test',
    (ARRAY['Lyon', 'Nantes', 'Brest'])[1 + g % 3], (ARRAY['free', 'pro'])[1 + g % 2]
FROM generate_series(1, 150) g;
CREATE STATISTICS people_city_plan (mcv) ON city, plan FROM people;
"""


def test_pg_stats_with_originals_fail_verification_until_analyzed(target):
    run(target, PEOPLE)
    run(target, "ANALYZE people")  # as autovacuum might have done before the in-place UPDATE
    spec = {"email": {"transformer": "email"}, "city": {"transformer": "city"}}
    result = run_table_plan(item("people", spec), target, SALT)

    report = verify_residuals(target, [result], SALT, raise_on_failure=False)
    assert not report["passed"]
    table = report["tables"][0]
    assert table["survived_columns"] == []  # the rows themselves are masked...
    assert table["stats_survived_columns"] == ["city", "email"]  # ...their statistics are not
    assert (
        table["stats"]["email"]["survived"] > 0 and table["stats"]["city"]["survived"] >= 3
    )  # MCV (+ extended MCV)
    assert any("pg_stats of public.people.email" in f for f in report["failures"])
    assert "corp.test" not in str(report) and "Lyon" not in str(report)  # counts, never values
    with pytest.raises(ResidualValueError, match="ANALYZE the masked data"):
        verify_residuals(target, [result], SALT)

    analyzed = analyze_masked(target)
    assert analyzed["analyzed"] == ["public.people"]
    report = verify_residuals(target, [result], SALT)
    assert report["passed"]
    assert report["tables"][0]["stats"]["email"]["checked"] > 0  # the check did look at pg_stats


def test_extended_statistics_are_read_too(target):
    run(target, PEOPLE)
    run(target, "ANALYZE people")
    result = run_table_plan(item("people", {"city": {"transformer": "city"}}), target, SALT)
    run(target, "DELETE FROM pg_statistic WHERE starelid = 'people'::regclass")  # only pg_stats_ext left
    report = verify_residuals(target, [result], SALT, raise_on_failure=False)
    assert report["tables"][0]["stats_survived_columns"] == ["city"]


def test_parent_statistics_are_read_for_a_partition(target):
    run(
        target,
        """
        CREATE TABLE ev (id int, region text, email text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
        CREATE TABLE ev_eu PARTITION OF ev FOR VALUES IN ('eu');
        INSERT INTO ev SELECT g, 'eu', 'p' || g || '@corp.test' FROM generate_series(1, 80) g;
        ANALYZE ev;
        DELETE FROM pg_statistic WHERE starelid = 'ev_eu'::regclass;
        """,
    )
    leaf = dict(item("ev_eu", {"email": {"transformer": "email"}}, key=("id", "region")))
    result = run_table_plan(leaf, target, SALT)
    report = verify_residuals(target, [result], SALT, raise_on_failure=False)
    assert report["tables"][0]["stats_survived_columns"] == ["email"]  # found in the parent's statistics
    analyze_masked(target)
    assert verify_residuals(target, [result], SALT)["passed"]


def test_materialized_views_refreshed_in_dependency_order_from_masked_data(target):
    run(
        target,
        """
        CREATE TABLE people (id int PRIMARY KEY, email text);
        INSERT INTO people SELECT g, 'p' || g || '@corp.test' FROM generate_series(1, 20) g;
        CREATE MATERIALIZED VIEW z_first AS SELECT id, email FROM people WITH NO DATA;
        CREATE VIEW middle AS SELECT id, email FROM z_first;
        CREATE MATERIALIZED VIEW a_second AS SELECT email FROM middle WITH NO DATA;
        CREATE SCHEMA "Other";
        CREATE MATERIALIZED VIEW "Other"."b third" AS SELECT count(*) AS n FROM a_second WITH NO DATA;
        """,
    )
    with target.connect() as conn:
        order = matview_refresh_order(conn)
    assert order == [
        TableName("public", "z_first"),
        TableName("public", "a_second"),
        TableName("Other", "b third"),
    ]
    run_table_plan(item("people", {"email": {"transformer": "email"}}), target, SALT)
    result = finalize_masked_data(target)
    assert result["materialized_views"]["refreshed"] == ["public.z_first", "public.a_second", "Other.b third"]
    assert "public.a_second" in result["analyze"]["analyzed"]
    emails = [r[0] for r in run(target, "SELECT email FROM a_second")]
    assert len(emails) == 20 and all(e.endswith("@example.com") for e in emails)
    assert run(target, 'SELECT n FROM "Other"."b third"') == [(20,)]
    # a subset keeps the dependency order
    assert refresh_materialized_views(target, [TableName("public", "a_second"), "z_first"])["refreshed"] == [
        "public.z_first",
        "public.a_second",
    ]


def test_statistics_of_tables_emptied_after_analyze_are_removed(target):
    run(
        target,
        """
        CREATE TABLE sessions (id int PRIMARY KEY, token text, ip text);
        INSERT INTO sessions SELECT g, 'tok' || (g % 4), '10.0.0.' || (g % 3) FROM generate_series(1, 60) g;
        CREATE STATISTICS sessions_tok_ip (mcv) ON token, ip FROM sessions;
        CREATE TABLE kept (id int, city text);
        INSERT INTO kept SELECT g, 'Masked' FROM generate_series(1, 10) g;
        CREATE TABLE logins (id int, email text);
        INSERT INTO logins SELECT g, 'p' || (g % 5) || '@corp.test' FROM generate_series(1, 40) g;
        ANALYZE sessions, kept, logins;
        DELETE FROM sessions;  -- e.g. a custom strategy that empties the table
        TRUNCATE logins;
        """,
    )
    result = analyze_masked(target)
    assert result["cleared"] == ["public.logins", "public.sessions"]  # ANALYZE alone keeps the originals
    assert run(target, "SELECT count(*) FROM pg_stats WHERE tablename = 'logins'") == [(0,)]
    assert run(target, "SELECT count(*) FROM pg_stats WHERE tablename = 'sessions'") == [(0,)]
    assert run(
        target,
        "SELECT count(*) FROM pg_stats_ext WHERE tablename = 'sessions' AND most_common_vals IS NOT NULL",
    ) == [(0,)]
    assert run(target, "SELECT count(*) FROM pg_stats WHERE tablename = 'kept'") == [(2,)]


def test_pg_dump_18_statistics_archive(staging_pg18, tmp_path):
    """An archive made with ``pg_dump --statistics`` (PostgreSQL 18) carries the originals' MCV lists
    and histograms: restored as they are, verification finds them; after ANALYZE on the masked data
    it passes. (The restore itself leaves STATISTICS DATA out; this checks the net behind it.)"""
    from scalingo_staging_sync.anonymize.executor import finish_on_load, prepare_on_load
    from scalingo_staging_sync.anonymize.salt import derive_key, target_with_key
    from scalingo_staging_sync.restore.pgtools import find_pg_tools
    from scalingo_staging_sync.restore.runner import run_pg_restore

    pg = staging_pg18
    pg.create_database("stats18_src")
    pg.create_database("stats18_dst")
    try:
        pg.execute(PEOPLE + "ANALYZE people;", "stats18_src")
        dump = pg.pg_dump("stats18_src", tmp_path / "stats18.dump", extra=["--statistics"])
        tools = find_pg_tools(pg.bin_dir)
        target = PgTarget(host=pg.host, port=pg.port, user=pg.user, dbname="stats18_dst")
        run_pg_restore(dump, target, section="pre-data", tools=tools)
        spec = {"email": {"transformer": "email"}, "city": {"transformer": "city"}}
        plan = dict(item("people", spec), mode="on_load")
        prepared = prepare_on_load(plan, target, SALT, str(dump), tools=tools)
        run_pg_restore(dump, target_with_key(target, derive_key(SALT)), section="data", tools=tools)
        result = finish_on_load(plan, target, prepared)
        run_pg_restore(dump, target, section="post-data", tools=tools)
        # the restore leaves STATISTICS DATA out; put the archive's statistics in by hand, as a restore
        # by other means would, to check the net behind it
        stats_sql = tmp_path / "stats.sql"
        subprocess.run(
            [tools.path("pg_restore"), "--statistics-only", "-f", str(stats_sql), str(dump)], check=True
        )
        assert "pg_restore_attribute_stats" in stats_sql.read_text()
        pg.psql_file(stats_sql, "stats18_dst")
        assert run(target, "SELECT count(*) FROM people WHERE email LIKE '%corp.test'") == [(0,)]
        report = verify_residuals(target, [result], SALT, raise_on_failure=False)
        assert report["tables"][0]["stats_survived_columns"] == ["city", "email"]

        analyze_masked(target)
        assert verify_residuals(target, [result], SALT)["passed"]
    finally:
        pg.drop_database("stats18_src")
        pg.drop_database("stats18_dst")


def test_parallel_analyze_covers_every_relation_largest_first(target):
    run(
        target,
        """
        CREATE TABLE small (id int PRIMARY KEY, email text);
        INSERT INTO small SELECT g, 's' || g || '@corp.test' FROM generate_series(1, 10) g;
        CREATE TABLE big (id int PRIMARY KEY, email text);
        INSERT INTO big SELECT g, 'b' || g || '@corp.test' FROM generate_series(1, 20000) g;
        CREATE TABLE ev (id int, region text, note text) PARTITION BY LIST (region);
        CREATE TABLE ev_eu PARTITION OF ev FOR VALUES IN ('eu');
        CREATE TABLE ev_us PARTITION OF ev FOR VALUES IN ('us');
        INSERT INTO ev SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, 'n' || g
            FROM generate_series(1, 5000) g;
        CREATE TABLE emptied (id int, email text) WITH (autovacuum_enabled = false);
        INSERT INTO emptied SELECT g, 'e' || g || '@corp.test' FROM generate_series(1, 50) g;
        ANALYZE emptied;
        DELETE FROM emptied;
        CREATE MATERIALIZED VIEW mv AS SELECT id, email FROM small;
        """,
    )
    result = analyze_masked(target, jobs=3)
    assert result["jobs"] == 3
    # the partitioned root counts its partitions (ev: 5000 rows, more pages than small and mv)
    assert result["analyzed"][:2] == ["public.big", "public.ev"]
    assert sorted(result["analyzed"]) == [
        "public.big",
        "public.emptied",
        "public.ev",
        "public.mv",
        "public.small",
    ]
    assert result["cleared"] == ["public.emptied"]  # the stale statistics of the emptied table
    analyzed = {
        name
        for (name,) in run(
            target, "SELECT DISTINCT tablename::text FROM pg_stats WHERE schemaname = 'public'"
        )
    }
    assert {"big", "small", "mv", "ev", "ev_eu", "ev_us"} <= analyzed  # partitions through their root
    assert "emptied" not in analyzed


def test_a_parallel_analyze_that_fails_names_the_table(target):
    run(
        target,
        """
        CREATE FUNCTION boom(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS 'BEGIN RETURN i; END';
        CREATE TABLE fine (id int PRIMARY KEY, v text);
        INSERT INTO fine SELECT g, 'v' || g FROM generate_series(1, 2000) g;
        CREATE TABLE "Broken" (id int);
        INSERT INTO "Broken" SELECT g FROM generate_series(1, 100) g;
        CREATE INDEX broken_boom ON "Broken" (boom(id));
        CREATE OR REPLACE FUNCTION boom(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE
            AS 'BEGIN RAISE EXCEPTION ''secret-%'', i; END';
        """,
    )
    with pytest.raises(PostLoadError, match=r"analyze public\.Broken failed") as raised:
        analyze_masked(target, jobs=2)
    assert "secret-" not in str(raised.value)  # the server's message quotes a value: withheld
