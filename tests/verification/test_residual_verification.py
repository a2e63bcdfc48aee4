"""Residual-value verification against real PostgreSQL."""

from __future__ import annotations

import json

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
    assert "verification query failed (SQLSTATE 42P01 (UndefinedTable)" in report["failures"][1]
