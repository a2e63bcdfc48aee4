"""In-place masking of an inheritance parent whose children have their own plan items (the archive plan
emits one per child): the parent's UPDATE is ``UPDATE ONLY``, so each child row is masked exactly once,
by its own item. Real PostgreSQL, a real archive planned with ``inventory.plan_from_archive``."""

from __future__ import annotations

import pytest
from psycopg import sql

from scalingo_staging_sync.anonymize.executor import RetryPolicy, run_table_plan
from scalingo_staging_sync.anonymize.planner import PlanError
from scalingo_staging_sync.anonymize.strategies import register_strategy, unregister_strategy
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


@pytest.fixture
def inheritance_archive(db, tmp_path):
    """An archive with a parent (people) whose inheritance child (vip_people) becomes its own item."""
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
    return pg, target, pg.pg_dump(target.dbname, tmp_path / "inherit.pgsql")


def test_parent_update_does_not_mask_children_twice(inheritance_archive):
    pg, target, dump = inheritance_archive
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


CUSTOM_RULES = """
source_app: prod
anonymization_tables:
  - table: people
    strategy: {strategy}
  - table: control
    condition: "id > 0"
    columns:
      email: email
"""


@pytest.fixture
def custom_strategies():
    @register_strategy("test_people_map")
    def people_map(ctx):
        return {"email": ctx.mask("email", "email")}

    @register_strategy("test_people_stmt", columns=["email"])
    def people_stmt(ctx):
        return sql.SQL("UPDATE {} SET email = {}").format(ctx.update_target, ctx.mask("email", "email"))

    @register_strategy("test_people_stmt_no_only", columns=["email"])
    def people_stmt_no_only(ctx):
        return sql.SQL("UPDATE {} SET email = {}").format(ctx.table, ctx.mask("email", "email"))

    yield
    for name in ("test_people_map", "test_people_stmt", "test_people_stmt_no_only"):
        unregister_strategy(name)


@pytest.mark.parametrize("strategy", ["test_people_map", "test_people_stmt"])
def test_custom_strategy_on_a_parent_masks_each_child_row_once(
    inheritance_archive, custom_strategies, strategy
):
    pg, target, dump = inheritance_archive
    plan = plan_from_archive(
        dump, rules_from(CUSTOM_RULES.format(strategy=strategy)), tools=find_pg_tools(str(pg.bin_dir))
    )
    items = {i["table"]: i for i in plan.items}
    assert items["public.people"].get("children_planned") is True
    results = {
        name: run_table_plan(item, target, SALT, retry=RetryPolicy(attempts=1))
        for name, item in items.items()
    }
    assert results["public.people"]["rows"] == 1  # ONLY: the parent's own row
    child = pg.execute("SELECT email FROM ONLY vip_people", target.dbname)[0][0]
    once = pg.execute("SELECT email FROM control", target.dbname)[0][0]
    assert child != "grace.child@example.org"
    assert child == once, "the child's row was masked twice (the custom UPDATE reached it)"


def test_whole_statement_that_would_reach_the_children_is_refused_by_the_plan(
    inheritance_archive, custom_strategies
):
    pg, target, dump = inheritance_archive
    rules = rules_from(CUSTOM_RULES.format(strategy="test_people_stmt_no_only"))
    with pytest.raises(PlanError, match=r"test_people_stmt_no_only.*public\.people.*ctx\.update_target"):
        plan_from_archive(dump, rules, tools=find_pg_tools(str(pg.bin_dir)))
    # nothing ran: the database still holds the originals
    assert pg.execute("SELECT email FROM ONLY vip_people", target.dbname)[0][0] == "grace.child@example.org"
