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


def test_a_condition_on_a_partitioned_table_verifies(prod_pg, staging_pg16, tmp_path):
    """A conditional rule on a partitioned table, planned from the archive per leaf, one partition wholly
    outside the condition, and the same actors in kept and masked rows. Before, verification failed a
    valid run twice: the partition no row of the condition reaches had "no residual-value proof", and
    the parent's statistics, which cover the kept rows too, were said to list "sampled original
    value(s)" that no ANALYZE could clear."""
    prod_pg.create_database("cond_partitions_prod")
    prod_pg.execute(
        """
        CREATE TABLE events (id int, occurred_at date NOT NULL, actor_email text) PARTITION BY RANGE (occurred_at);
        CREATE TABLE events_2026_01 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2026-02-01');
        CREATE TABLE events_2026_03 PARTITION OF events FOR VALUES FROM ('2026-03-01') TO ('2026-04-01');
        INSERT INTO events SELECT g, date '2026-01-01' + (g % 28), 'actor' || (g % 3) || '@corp.test'
            FROM generate_series(1, 300) g;
        INSERT INTO events SELECT g, date '2026-03-01' + (g % 28), 'actor' || (g % 3) || '@corp.test'
            FROM generate_series(301, 600) g;
        """,
        "cond_partitions_prod",
    )
    dump = prod_pg.pg_dump("cond_partitions_prod", tmp_path / "cond.pgsql")
    prod_pg.drop_database("cond_partitions_prod")
    staging_pg16.create_database("cond_partitions")
    try:
        target = target_of(staging_pg16, "cond_partitions")
        tools = find_pg_tools(staging_pg16.bin_dir)
        run_pg_restore(dump, target, section="pre-data", tools=tools)
        rules = rules_from(
            """
            source_app: prod
            anonymization_tables:
              - table: events
                condition: "occurred_at >= '2026-02-01'"
                columns: {actor_email: email}
            """
        )
        items = plan_anonymization(target, rules, dump_path=str(dump), tools=tools)
        results = [run_table_plan(i, target, SALT, dump_path=str(dump), tools=tools) for i in items]
        rows = {r["table"]: r["rows"] for r in results}
        assert rows == {"public.events_2026_01": 0, "public.events_2026_03": 300}
        staging_pg16.execute(
            "ANALYZE events; ANALYZE events_2026_01; ANALYZE events_2026_03", "cond_partitions"
        )
        report = verify_residuals(target, results, SALT, raise_on_failure=False)
        assert report["passed"], [t["problems"] for t in report["tables"]]
        kept = staging_pg16.execute(
            "SELECT count(*) FROM events WHERE actor_email LIKE '%@corp.test'", "cond_partitions"
        )
        assert kept == [(300,)]  # January's rows, outside the condition, as they were
    finally:
        staging_pg16.drop_database("cond_partitions")


def test_on_a_database_a_ruled_table_below_another_ruled_table_is_refused(staging_pg16):
    """The catalog path (no archive: an existing database masked in place) runs one UPDATE per rule,
    and an UPDATE reaches every partition and inheritance child: a child or partition with its own rule
    under a ruled table would be masked twice. The plan refuses it, naming both rules; a child without
    a rule of its own is masked by its parent's UPDATE, as before."""
    import pytest

    from scalingo_staging_sync.anonymize.planner import PlanError

    staging_pg16.create_database("ruled_below")
    staging_pg16.execute(
        """
        CREATE TABLE person (id int PRIMARY KEY, email text);
        CREATE TABLE staff (badge text) INHERITS (person);
        CREATE TABLE contractor () INHERITS (staff);
        CREATE TABLE visit (id int, region text, email text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
        CREATE TABLE visit_eu PARTITION OF visit FOR VALUES IN ('eu');
        """,
        "ruled_below",
    )
    target = target_of(staging_pg16, "ruled_below")
    rules = rules_from(
        """
        source_app: prod
        anonymization_tables:
          - table: person
            columns: {email: email}
          - table: contractor
            columns: {email: hash}
          - table: visit
            columns: {email: email}
          - table: visit_eu
            columns: {email: hash}
        """
    )
    with pytest.raises(PlanError) as err:
        plan_anonymization(target, rules)
    problems = str(err.value)
    assert (
        "anonymization_tables[1].table: public.contractor has its own rule, but anonymization_tables[0]"
        in problems
    )
    assert "ancestor public.person" in problems
    assert "anonymization_tables[3].table: public.visit_eu has its own rule" in problems
    only_parents = rules_from(
        """
        source_app: prod
        anonymization_tables:
          - table: person
            columns: {email: email}
          - table: visit
            columns: {email: email}
        """
    )
    assert sorted(i["table"] for i in plan_anonymization(target, only_parents)) == [
        "public.person",
        "public.visit",
    ]
