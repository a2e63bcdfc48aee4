"""A ``fixed`` value that cannot be stored in its column is refused when planning from the archive alone,
before anything is touched: not a label of the archive's enum, not a whole number (or out of range) for
an integer, not a boolean, a UUID or a number; a value that fits is planned (and so is a type that
cannot be decided without a server: the load casts it)."""

from __future__ import annotations

import pytest

from scalingo_staging_sync.anonymize.planner import PlanError, fixed_value_problem
from scalingo_staging_sync.anonymize.transformers import ColumnInfo
from scalingo_staging_sync.inventory import plan_from_archive

from .conftest import rules_from

DB = """
CREATE TYPE mood AS ENUM ('happy', 'sad', 'Not Sure');
CREATE TABLE people (id int PRIMARY KEY, feeling mood, score smallint, active boolean, ref uuid,
                     ratio numeric(5, 2), note text, seen date);
INSERT INTO people VALUES (1, 'happy', 3, true, gen_random_uuid(), 1.5, 'x', '2024-01-01');
"""


def _plan(dump, tools, columns: str):
    return plan_from_archive(
        dump,
        rules_from(f"source_app: p\nanonymization_tables:\n  - table: people\n    columns: {columns}\n"),
        tools=tools,
    )


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        ("{feeling: {transformer: fixed, value: angry}}", "fixed value 'angry' is not a label of enum"),
        ("{feeling: {transformer: fixed, value: not sure}}", "'happy', 'sad', 'Not Sure'"),
        ("{score: {transformer: fixed, value: abc}}", "fixed value 'abc' is not a whole number"),
        ("{score: {transformer: fixed, value: 40000}}", "fixed value '40000' is out of range for"),
        ("{active: {transformer: fixed, value: maybe}}", "fixed value 'maybe' is not a boolean"),
        ("{ref: {transformer: fixed, value: 1234}}", "fixed value '1234' is not a UUID"),
        ("{ratio: {transformer: fixed, value: one}}", "fixed value 'one' is not a number"),
    ],
)
def test_a_fixed_value_that_does_not_fit_is_refused_from_the_archive(archives, columns, expected):
    dump, tools = archives.make(DB)
    with pytest.raises(PlanError) as err:
        _plan(dump, tools, columns)
    assert expected in str(err.value)
    assert "use a value of the column's type" in str(err.value)


def test_fixed_values_that_fit_are_planned(archives):
    dump, tools = archives.make(DB)
    plan = _plan(
        dump,
        tools,
        "{feeling: {transformer: fixed, value: Not Sure}, score: {transformer: fixed, value: -7},"
        " active: {transformer: fixed, value: false}, ref: {transformer: fixed, value: "
        "'00000000-0000-0000-0000-000000000000'}, ratio: {transformer: fixed, value: 0.5},"
        " seen: {transformer: fixed, value: 'Jan 1 2020'}}",
    )
    (item,) = plan.items
    assert set(item["masked_columns"]) == {"feeling", "score", "active", "ref", "ratio", "seen"}


def test_undecidable_types_are_left_to_the_load():
    info = ColumnInfo("seen", "date", "date")
    assert fixed_value_problem(info, "not a date at all") is None  # the server's cast decides
    assert fixed_value_problem(ColumnInfo("b", "boolean", "bool"), "o") is not None  # ambiguous on/off
    assert fixed_value_problem(ColumnInfo("b", "boolean", "bool"), "Y") is None
