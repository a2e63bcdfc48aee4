"""Partitioned tables: each leaf partition's rows load through its own masking trigger."""

from __future__ import annotations

from scalingo_staging_sync.anonymize.executor import run_table_plan
from scalingo_staging_sync.anonymize.planner import plan_anonymization
from scalingo_staging_sync.restore.pgtools import find_pg_tools
from scalingo_staging_sync.restore.runner import run_pg_restore
from scalingo_staging_sync.verification import verify_residuals

from .conftest import SALT, rules_from, target_of


def test_partitioned_table_is_planned_per_leaf_and_masked_on_load(prod_pg, staging_pg16, tmp_path):
    prod_pg.create_database("partitioned_prod")
    prod_pg.execute(
        """
        CREATE TABLE people (id int, region text, email text NOT NULL, PRIMARY KEY (id, region))
            PARTITION BY LIST (region);
        CREATE TABLE people_eu PARTITION OF people FOR VALUES IN ('eu');
        CREATE TABLE people_us PARTITION OF people FOR VALUES IN ('us');
        INSERT INTO people SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, 'person' || g || '@corp.test'
            FROM generate_series(1, 500) g;
        """,
        "partitioned_prod",
    )
    dump = prod_pg.pg_dump("partitioned_prod", tmp_path / "partitioned.pgsql")
    staging_pg16.create_database("partitioned_staging")
    target = target_of(staging_pg16, "partitioned_staging")
    tools = find_pg_tools(staging_pg16.bin_dir)
    run_pg_restore(dump, target, section="pre-data", tools=tools)

    rules = rules_from(
        """
        source_app: prod
        anonymization_tables:
          - table: people
            columns: {email: email}
        """
    )
    items = plan_anonymization(target, rules, dump_path=str(dump), tools=tools)
    assert sorted(i["table"] for i in items) == ["public.people_eu", "public.people_us"]
    assert all(i["mode"] == "on_load" for i in items)
    results = [run_table_plan(i, target, SALT, dump_path=str(dump), tools=tools) for i in items]
    assert sum(r["rows"] for r in results) == 500
    emails = staging_pg16.execute("SELECT email FROM people", "partitioned_staging")
    assert len(emails) == 500 and all(e.endswith("@example.com") for (e,) in emails)
    report = verify_residuals(target, results, SALT)
    assert report["passed"]
