"""Residual-value verification against real PostgreSQL."""

from __future__ import annotations

import json
import time

import psycopg
import pytest

from scalingo_staging_sync.fingerprint import ALGORITHM, fingerprint
from scalingo_staging_sync.pgconn import PgTarget
from scalingo_staging_sync.testing.postgres import load_chinook
from scalingo_staging_sync.verification import ResidualValueError, verify_residuals

SALT = "test-salt-0123456789abcdef"


@pytest.fixture()
def chinook_verify(staging_pg16):
    return load_chinook(staging_pg16, "chinook_verify")


def _target(pg, db) -> PgTarget:
    return PgTarget(host=pg.host, port=pg.port, user=pg.user, dbname=db)


def _proof(pg, db, table, key_columns, columns, limit=200):
    """What AnonymizeTableOperator records: fingerprints of originals for sampled keys."""
    select = ", ".join(f"{c}::text" for c in [*key_columns, *columns])
    rows = pg.execute(f"SELECT {select} FROM {table} ORDER BY 1 LIMIT {limit}", db)  # noqa: S608 - test
    out = []
    for row in rows:
        key, values = list(row[: len(key_columns)]), row[len(key_columns) :]
        out.append(
            {
                "key": key,
                "values": {
                    c: fingerprint(SALT, v) for c, v in zip(columns, values, strict=True) if v is not None
                },
            }
        )
    return {"algorithm": ALGORITHM, "key_columns": key_columns, "rows": out}


def test_verification_passes_when_every_row_changed(staging_pg16, chinook_verify):
    db = chinook_verify
    proof = _proof(staging_pg16, db, "customer", ["customer_id"], ["email", "last_name"])
    staging_pg16.execute(
        "UPDATE customer SET email = 'user' || customer_id || '@example.com', last_name = 'X'", db
    )
    result = {
        "table": "public.customer",
        "mode": "in_place",
        "rows": 59,
        "masked_columns": ["email", "last_name"],
        "proof": proof,
    }
    report = verify_residuals(_target(staging_pg16, db), [result], SALT, {"public.customer": 59})
    assert report["passed"]
    table = report["tables"][0]
    assert table["keys_found"] == table["keys_sampled"] == 59
    assert table["columns"]["email"] == {"checked": 59, "survived": 0}


def test_verification_catches_a_too_narrow_condition(staging_pg16, chinook_verify):
    db = chinook_verify
    proof = _proof(staging_pg16, db, "customer", ["customer_id"], ["email", "phone"])
    # the rule's condition only matched some rows: the others keep their real email; phone untouched
    staging_pg16.execute(
        "UPDATE customer SET email = 'masked' || customer_id || '@example.com' WHERE country = 'USA'", db
    )
    result = {
        "table": "public.customer",
        "mode": "in_place",
        "rows": 13,
        "masked_columns": ["email", "phone"],
        "proof": proof,
    }
    with pytest.raises(ResidualValueError) as excinfo:
        verify_residuals(_target(staging_pg16, db), [result], SALT)
    message = str(excinfo.value)
    assert "public.customer.email" in message and "public.customer.phone" in message
    report = excinfo.value.report.to_dict()
    assert report["tables"][0]["columns"]["email"]["survived"] == 59 - 13
    # the report names columns and counts, never values
    raw_email = staging_pg16.execute("SELECT email FROM customer WHERE country <> 'USA' LIMIT 1", db)[0][0]
    assert raw_email not in json.dumps(report) and raw_email not in message


def test_row_count_mismatch_fails(staging_pg16, chinook_verify):
    db = chinook_verify
    staging_pg16.execute("DELETE FROM invoice_line WHERE invoice_line_id > 2000", db)
    result = {
        "table": "invoice_line",
        "mode": "on_load",
        "rows": 2240,
        "masked_columns": [],
        "proof": {"algorithm": ALGORITHM, "key_columns": ["invoice_line_id"], "rows": []},
    }
    report = verify_residuals(_target(staging_pg16, db), [result], SALT, raise_on_failure=False)
    assert not report["passed"]
    assert "2000 differs from the 2240 rows the anonymizer loaded" in report["failures"][0]


def test_composite_keys_and_other_schema(staging_pg16):
    db = "verify_composite"
    staging_pg16.create_database(db)
    staging_pg16.execute(
        """CREATE SCHEMA "Crm"; CREATE TABLE "Crm"."Contact Book" (org int, n text, "e-mail" text, PRIMARY KEY (org, n));
           INSERT INTO "Crm"."Contact Book" SELECT g % 3, 'n' || g, 'p' || g || '@gmail.com' FROM generate_series(1, 30) g;""",
        db,
    )
    rows = staging_pg16.execute('SELECT org::text, n, "e-mail" FROM "Crm"."Contact Book"', db)
    proof = {
        "algorithm": ALGORITHM,
        "key_columns": ["org", "n"],
        "rows": [{"key": [o, n], "values": {"e-mail": fingerprint(SALT, e)}} for o, n, e in rows],
    }
    result = {
        "table": "Crm.Contact Book",
        "mode": "on_load",
        "rows": 30,
        "masked_columns": ["e-mail"],
        "proof": proof,
    }
    with pytest.raises(ResidualValueError, match=r"Crm\.Contact Book\.e-mail"):
        verify_residuals(_target(staging_pg16, db), [result], SALT)
    staging_pg16.execute('UPDATE "Crm"."Contact Book" SET "e-mail" = NULL WHERE org = 0', db)
    staging_pg16.execute("""UPDATE "Crm"."Contact Book" SET "e-mail" = md5("e-mail") WHERE org <> 0""", db)
    assert verify_residuals(_target(staging_pg16, db), [result], SALT)["passed"]
    # a wrong salt cannot prove anything: fingerprints never match, but keys are found
    assert verify_residuals(_target(staging_pg16, db), [result], "other-salt")["passed"]


def test_missing_proof_and_missing_table_fail(staging_pg16, chinook_verify):
    db = chinook_verify
    no_proof = {
        "table": "public.employee",
        "mode": "on_load",
        "rows": 8,
        "masked_columns": ["email"],
        "proof": None,
    }
    missing = {"table": "public.nope", "mode": "on_load", "rows": 1, "masked_columns": ["x"], "proof": None}
    report = verify_residuals(_target(staging_pg16, db), [no_proof, missing], SALT, raise_on_failure=False)
    assert not report["passed"]
    assert "no residual-value proof" in report["failures"][0]
    assert "give the table a primary key, leave one such column unmasked, or exclude" in report["failures"][0]
    assert "verification query failed (SQLSTATE 42P01 (UndefinedTable)" in report["failures"][1]


def test_a_table_without_primary_key_is_read_once_not_once_per_key(staging_pg16):
    """Sampled keys of a table without primary key (keyed by its unmasked columns, without an index)
    are looked up in one join, one scan of the table, not one scan per key: on a large log table, 200
    scans took minutes. Counted from the table's statistics: the row count and the lookup, nothing more."""
    db = "verify_nopk_scans"
    staging_pg16.create_database(db)
    staging_pg16.execute(
        "CREATE TABLE logs (at timestamptz, actor text, email text);"
        "INSERT INTO logs SELECT timestamptz '2024-01-01' + g * interval '1 minute', 'actor' || (g % 7),"
        " 'u' || g || '@corp.test' FROM generate_series(1, 5000) g",
        db,
    )
    rows = staging_pg16.execute("SELECT at::text, actor, email FROM logs ORDER BY at LIMIT 200", db)
    proof = {
        "algorithm": ALGORITHM,
        "key_columns": ["at", "actor"],
        "rows": [{"key": [a, b], "values": {"email": fingerprint(SALT, e)}} for a, b, e in rows],
    }
    staging_pg16.execute("UPDATE logs SET email = md5(email) WHERE at > '2024-01-01 01:00+00'", db)

    def seq_scans_once_settled(expected: int | None = None) -> int:
        # a session's statistics reach pg_stat_user_tables when it ends, a moment after it closed
        deadline, last = time.monotonic() + 10, None
        while time.monotonic() < deadline:
            count = staging_pg16.execute(
                "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'logs'", db
            )
            if (expected is not None and count[0][0] == expected) or (
                expected is None and count[0][0] == last
            ):
                return count[0][0]
            last = count[0][0]
            time.sleep(0.3)
        return last

    before = seq_scans_once_settled(2)  # the sample's SELECT and the UPDATE
    assert before == 2
    result = {
        "table": "public.logs",
        "mode": "on_load",
        "rows": 5000,
        "masked_columns": ["email"],
        "proof": proof,
    }
    report = verify_residuals(
        _target(staging_pg16, db), [result], SALT, raise_on_failure=False, check_stats=False
    )
    # the first hour's 60 rows kept their original email: found, by key, through the single scan
    assert report["tables"][0]["keys_found"] == 200
    assert report["tables"][0]["columns"]["email"] == {"checked": 200, "survived": 60}
    deadline = time.monotonic() + 10
    while seq_scans_once_settled() == before and time.monotonic() < deadline:  # not flushed yet
        time.sleep(0.2)
    assert seq_scans_once_settled() - before == 2  # count(*) and the lookup (one per key before: 201)
    staging_pg16.drop_database(db)


def test_the_databases_own_statement_timeout_does_not_bound_verification(staging_pg16):
    """The staging role or database may set a statement_timeout for its application; verification turns
    it off in its session, as pg_restore does (a large table's count(*) would be cancelled)."""
    from psycopg import sql

    db = "verify_timeouts"
    staging_pg16.create_database(db)
    staging_pg16.execute(
        "CREATE TABLE logs (at timestamptz, actor text, email text);"
        "INSERT INTO logs SELECT timestamptz '2024-01-01' + g * interval '1 minute', 'actor' || (g % 7),"
        " md5(g::text) FROM generate_series(1, 300000) g",
        db,
    )
    rows = staging_pg16.execute("SELECT at::text, actor FROM logs ORDER BY at LIMIT 50", db)
    proof = {
        "algorithm": ALGORITHM,
        "key_columns": ["at", "actor"],
        "rows": [{"key": [a, b], "values": {"email": fingerprint(SALT, "u@corp.test")}} for a, b in rows],
    }
    with staging_pg16.connect(db) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET statement_timeout = '10ms'").format(sql.Identifier(db)))
    target = _target(staging_pg16, db)
    with target.connect() as conn, pytest.raises(psycopg.errors.QueryCanceled):  # the premise
        conn.execute("SELECT count(*) FROM logs WHERE email LIKE '%x%'")
    result = {
        "table": "public.logs",
        "mode": "on_load",
        "rows": 300000,
        "masked_columns": ["email"],
        "proof": proof,
    }
    assert verify_residuals(target, [result], SALT)["passed"]
    staging_pg16.drop_database(db)


def test_keys_of_fixed_length_types_are_found(staging_pg16):
    """``char(n)`` and ``bit(n)`` keys: cast to their own type, modifiers included (``character`` alone
    is one character: every key would be cut to its first one and none found)."""
    db = "verify_fixed_keys"
    staging_pg16.create_database(db)
    staging_pg16.execute(
        "CREATE TABLE offices (country char(3), flags bit(3), email text, PRIMARY KEY (country, flags));"
        "INSERT INTO offices SELECT 'C' || lpad(g::text, 2, '0'), (g % 8)::bit(3), 'office' || g || '@corp.test'"
        " FROM generate_series(1, 40) g",
        db,
    )
    rows = staging_pg16.execute("SELECT country::text, flags::text, email FROM offices", db)
    proof = {
        "algorithm": ALGORITHM,
        "key_columns": ["country", "flags"],
        "rows": [{"key": [c, f], "values": {"email": fingerprint(SALT, e)}} for c, f, e in rows],
    }
    staging_pg16.execute("UPDATE offices SET email = md5(email) WHERE country > 'C20'", db)
    result = {
        "table": "public.offices",
        "mode": "on_load",
        "rows": 40,
        "masked_columns": ["email"],
        "proof": proof,
    }
    report = verify_residuals(_target(staging_pg16, db), [result], SALT, raise_on_failure=False)
    assert report["tables"][0]["keys_found"] == 40
    assert report["tables"][0]["columns"]["email"] == {"checked": 40, "survived": 20}
    staging_pg16.drop_database(db)
