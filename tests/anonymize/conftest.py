"""Fixtures of the anonymization tests: a fresh database per test, the salt, a rules helper."""

from __future__ import annotations

import textwrap

import pytest
from pg_helpers import new_database

from scalingo_staging_sync.anonymize.executor import RetryPolicy, run_table_plan
from scalingo_staging_sync.anonymize.planner import plan_anonymization
from scalingo_staging_sync.anonymize.rules import parse_rules_text
from scalingo_staging_sync.pgconn import PgTarget

SALT = "test-salt-for-anonymization-0123456789"


@pytest.fixture(autouse=True)
def salt_env(monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_SCALINGO_STAGING_SYNC_SALT", SALT)
    return SALT


def target_of(pg, dbname: str) -> PgTarget:
    return PgTarget(host=pg.host, port=pg.port, user=pg.user, dbname=dbname)


@pytest.fixture
def db(staging_pg16):
    """(pg, PgTarget) of a new empty database on the PG16 staging server."""
    with new_database(staging_pg16, "anon") as name:
        yield staging_pg16, target_of(staging_pg16, name)


@pytest.fixture
def db_any(staging_pg):
    """Same, on each staging version (16 and 18)."""
    with new_database(staging_pg, "anonv") as name:
        yield staging_pg, target_of(staging_pg, name)


def rules_from(yaml_text: str):
    return parse_rules_text(textwrap.dedent(yaml_text))


def anonymize(target: PgTarget, yaml_text: str, **kwargs):
    """Plan the rules against ``target`` and run every item in place; returns the results."""
    rules = rules_from(yaml_text)
    items = plan_anonymization(target, rules)
    retry = kwargs.pop("retry", RetryPolicy(attempts=2, base_delay_s=0.05))
    return [
        run_table_plan(item, target, SALT, retry=retry, email_domain=rules.email_domain, **kwargs)
        for item in items
    ]


def execute(target: PgTarget, statement: str, params=None):
    with target.connect() as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def assert_verified(target: PgTarget, result) -> None:
    """Residual-value verification of one table's result passes."""
    from scalingo_staging_sync.verification import verify_table

    with target.connect(autocommit=True) as conn:
        check = verify_table(conn, result, SALT)
    assert check.passed, check.problems


def assert_in_place_gives(pg, setup_sql: str, yaml_text: str, rows_of, loaded) -> None:
    """``setup_sql`` in a new database of ``pg``, masked in place by ``yaml_text``: ``rows_of`` (which
    checks and returns a database's rows) gives ``loaded`` byte for byte, and verification passes."""
    with new_database(pg, "inplace") as name:
        other = target_of(pg, name)
        execute(other, setup_sql)
        (in_place,) = anonymize(other, yaml_text)
        assert in_place["mode"] == "in_place"
        assert rows_of(other) == loaded  # byte-identical on load and in place
        assert_verified(other, in_place)


def rows_without(target: PgTarget, query: str, originals) -> list:
    """The rows of ``query``, once none of ``originals`` is found in any of them."""
    import json

    rows = execute(target, query)
    text = json.dumps(rows, ensure_ascii=False)
    for original in originals:
        assert original not in text, original
    return rows
