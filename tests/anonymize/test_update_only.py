"""In-place masking of an inheritance parent whose children have their own plan items (the archive plan
emits one per child): the parent's UPDATE is ``UPDATE ONLY``, so each child row is masked exactly once,
by its own item. Real PostgreSQL, a real archive planned with ``inventory.plan_from_archive``."""

from __future__ import annotations

from scalingo_staging_sync.anonymize.executor import RetryPolicy, run_table_plan
from scalingo_staging_sync.inventory import plan_from_archive
from scalingo_staging_sync.restore.pgtools import find_pg_tools

from .conftest import SALT, rules_from

RULES = """
source_app: prod
anonymization_tables:
  - table: people
    condition: "id > 0"
    columns:
      email: email
  - table: control
    condition: "id > 0"
    columns:
      email: email
"""


def test_parent_update_does_not_mask_children_twice(db, tmp_path):
    pg, target = db
    pg.execute(
        "CREATE TABLE people (id int PRIMARY KEY, email text NOT NULL);"
        "CREATE TABLE vip_people (tier int) INHERITS (people);"
        "CREATE TABLE control (id int PRIMARY KEY, email text NOT NULL);"
        "INSERT INTO people VALUES (1, 'ada.parent@example.org');"
        "INSERT INTO vip_people VALUES (2, 'grace.child@example.org', 1);"
        "INSERT INTO control VALUES (2, 'grace.child@example.org');",
        target.dbname,
    )
    dump = pg.pg_dump(target.dbname, tmp_path / "inherit.pgsql")
    plan = plan_from_archive(dump, rules_from(RULES), tools=find_pg_tools(str(pg.bin_dir)))
    items = {i["table"]: i for i in plan.items}
    assert set(items) == {"public.people", "public.vip_people", "public.control"}
    assert items["public.people"]["mode"] == "in_place"
    assert items["public.people"].get("children_planned") is True
    assert not items["public.control"].get("children_planned")

    results = {
        name: run_table_plan(item, target, SALT, retry=RetryPolicy(attempts=1))
        for name, item in items.items()
    }
    assert results["public.people"]["rows"] == 1  # ONLY: the parent's own row
    assert results["public.vip_people"]["rows"] == 1

    child = pg.execute("SELECT email FROM ONLY vip_people", target.dbname)[0][0]
    once = pg.execute("SELECT email FROM control", target.dbname)[0][0]
    assert child != "grace.child@example.org"
    assert child == once, "the child's row was masked twice (parent UPDATE without ONLY + its own item)"
