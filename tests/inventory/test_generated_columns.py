"""STORED generated columns computed from masked columns (``full_name`` from the masked first and last
names, a tsvector over them): PostgreSQL recomputes them from the masked values, so the plan lists them
with the masked columns (the PII scan then counts them as masked instead of failing the run on them).
One that also reads an unmasked column copies it: not listed, and the warning says which column."""

from __future__ import annotations

import pytest

from scalingo_staging_sync.anonymize.planner import plan_anonymization
from scalingo_staging_sync.inventory import build_inventory, plan_from_archive
from scalingo_staging_sync.tablename import TableName

from .conftest import query, rules_from

PEOPLE = """
CREATE TABLE people (
    id int PRIMARY KEY,
    first_name text NOT NULL,
    last_name text NOT NULL,
    nickname text,
    full_name text GENERATED ALWAYS AS (first_name || ' ' || last_name) STORED,
    search tsvector GENERATED ALWAYS AS (to_tsvector('simple', first_name || ' ' || last_name)) STORED,
    handle text GENERATED ALWAYS AS (lower(first_name) || '.' || nickname) STORED
);
INSERT INTO people (id, first_name, last_name, nickname) VALUES (1, 'Ada', 'Lovelace', 'countess');
"""
RULES = """
source_app: p
anonymization_tables:
  - table: people
    columns: {first_name: first_name, last_name: last_name}
"""


def _check(item: dict) -> None:
    assert item["masked_columns"] == ["first_name", "last_name", "full_name", "search"]
    assert "handle" not in item["masked_columns"]
    warnings = "\n".join(item["warnings"])
    assert "handle: generated column that also reads unmasked column(s) nickname" in warnings
    assert "full_name: generated column, recomputed by PostgreSQL from the masked values" in warnings
    assert "full_name is not masked" not in warnings  # a generated full_name needs no rule


@pytest.mark.parametrize("version", [16, 18], ids=["pg_dump16", "pg_dump18"])
def test_archive_plan_lists_generated_columns_of_masked_columns(archives, version):
    dump, tools = archives.make(PEOPLE, version)
    column = build_inventory(dump, tools).tables[TableName.parse("people")].columns["handle"]
    assert column.generated_from == ("first_name", "nickname")
    plan = plan_from_archive(dump, rules_from(RULES), tools=tools)
    _check(plan.items[0])
    assert "public.people.full_name" in plan.masked_columns
    assert "public.people.handle" not in plan.masked_columns


def test_catalog_plan_lists_generated_columns_of_masked_columns(fresh_db):
    target = fresh_db(16)
    with target.connect(autocommit=True) as conn:
        conn.execute(PEOPLE)
    (item,) = plan_anonymization(target, rules_from(RULES))
    _check(item)
    assert query(target, "SELECT full_name FROM people") == [("Ada Lovelace",)]
