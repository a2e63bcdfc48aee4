"""A table whose primary key is itself masked (a session token, an e-mail used as the key) and whose
other columns are masked too: the residual proof cannot be keyed by unmasked columns. The executor
records each sampled row under its masked key (computed on the server with the masking expressions),
so verification finds every sampled row and proves no original survived, on load and in place."""

from __future__ import annotations

from pg_helpers import new_database

from scalingo_staging_sync.anonymize.executor import run_table_plan
from scalingo_staging_sync.anonymize.planner import plan_anonymization
from scalingo_staging_sync.restore.pgtools import find_pg_tools
from scalingo_staging_sync.restore.runner import run_pg_restore
from scalingo_staging_sync.verification import verify_table

from .conftest import SALT, anonymize, execute, rules_from

SESSIONS = """
CREATE TABLE sessions (token text PRIMARY KEY, email text NOT NULL);
INSERT INTO sessions SELECT 'token-' || g || '-' || md5(g::text), 'user' || g || '@corp.test'
FROM generate_series(1, 40) g;
"""
RULES = """
source_app: p
anonymization_tables:
  - table: sessions
    columns: {token: hash, email: email}
"""


def _verify(target, result):
    with target.connect(autocommit=True) as conn:
        check = verify_table(conn, result, SALT)
    assert check.passed, check.problems
    assert check.keys_sampled == check.keys_found == 40
    assert check.columns["token"]["checked"] == 40 and check.columns["email"]["checked"] == 40


def test_masked_primary_key_proven_on_load(db_any, prod_pg, tmp_path):
    pg, target = db_any
    tools = find_pg_tools(pg.bin_dir)
    with new_database(prod_pg, "mkey") as source:
        prod_pg.execute(SESSIONS, source)
        dump = prod_pg.pg_dump(source, tmp_path / "sessions.pgsql")
    run_pg_restore(dump, target, section="pre-data", tools=tools)
    (item,) = plan_anonymization(target, rules_from(RULES), dump_path=str(dump), tools=tools)
    assert item["mode"] == "on_load" and item["key_columns"] == ["token"]
    assert any("finds each sampled row by its masked key" in w for w in item["warnings"])

    result = run_table_plan(item, target, SALT, dump_path=str(dump), tools=tools)

    assert execute(target, "SELECT count(*) FROM sessions WHERE token LIKE 'token-%'") == [(0,)]
    _verify(target, result)


def test_masked_primary_key_proven_in_place(db_any):
    _pg, target = db_any
    execute(target, SESSIONS)
    (result,) = anonymize(target, RULES)
    assert result["proof"]["key_columns"] == ["token"]
    _verify(target, result)
