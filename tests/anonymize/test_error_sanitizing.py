"""No row contents in errors: a constraint violation while masking gives an error naming the SQLSTATE,
table, constraint and column, and neither its message, the logs, nor a formatted traceback hold a
value of the failing row (PostgreSQL's ``DETAIL: Failing row contains (...)``)."""

from __future__ import annotations

import logging
import traceback

import psycopg
import pytest

from scalingo_staging_sync.anonymize.executor import AnonymizationError, RetryPolicy, run_table_plan
from scalingo_staging_sync.pgerrors import describe_pg_error, redact_server_text, sanitized
from scalingo_staging_sync.restore.pgtools import find_pg_tools
from scalingo_staging_sync.restore.runner import run_pg_restore

from .conftest import SALT, execute, target_of
from .test_trigger_safety import plan_item

SECRET_NOTE = "Zoltan-Original-Secret-4417"
SECRET_EMAIL = "zoltan.original@corp.test"

TABLE = """
CREATE TABLE people (
    id int PRIMARY KEY,
    email text NOT NULL CONSTRAINT people_email_corp CHECK (email LIKE '%@corp.test'),
    note text
);
INSERT INTO people VALUES (1, 'zoltan.original@corp.test', 'Zoltan-Original-Secret-4417');
"""


def _assert_clean(exc: BaseException, caplog) -> None:
    from scalingo_staging_sync.notifications.messages import failure_message

    texts = {
        "slack": failure_message("anonymize_table", error=str(exc)),
        "str": str(exc),
        "repr": repr(exc),
        "traceback": "".join(traceback.format_exception(exc)),
        "logs": caplog.text,
    }
    for where, text in texts.items():
        for value in (SECRET_NOTE, SECRET_EMAIL, "Failing row", "zoltan"):
            assert value not in text, f"{value!r} found in {where}: {text}"
    assert exc.__context__ is None and exc.__cause__ is None


def test_check_violation_in_place_is_sanitized(db_any, caplog):
    _pg, target = db_any
    execute(target, TABLE)
    item = plan_item("public", "people", {"email": {"transformer": "email"}}, mode="in_place")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AnonymizationError) as info:
        run_table_plan(item, target, SALT, retry=RetryPolicy(attempts=2, base_delay_s=0.01))
    exc = info.value
    _assert_clean(exc, caplog)
    assert exc.sqlstate == "23514" and exc.condition == "CheckViolation"
    assert (exc.schema, exc.table, exc.constraint) == ("public", "people", "people_email_corp")
    assert "SQLSTATE 23514" in str(exc) and "people_email_corp" in str(exc) and "public.people" in str(exc)
    # and what to do about it
    assert "a masked value likely breaks it" in str(exc) and "`fixed` value, an `email` `domain`" in str(exc)
    assert exc.retryable is False
    # nothing was changed: the transaction rolled back
    assert execute(target, "SELECT email FROM people") == [(SECRET_EMAIL,)]


def test_check_violation_on_load_is_sanitized(staging_pg, tmp_path, caplog):
    staging_pg.create_database("errsan_src")
    staging_pg.create_database("errsan_dst")
    try:
        staging_pg.execute(TABLE, "errsan_src")
        dump = staging_pg.pg_dump("errsan_src", tmp_path / "errsan.dump")
        tools = find_pg_tools(staging_pg.bin_dir)
        target = target_of(staging_pg, "errsan_dst")
        run_pg_restore(dump, target, section="pre-data", tools=tools)
        item = plan_item("public", "people", {"email": {"transformer": "email"}})
        caplog.set_level(logging.DEBUG)
        with pytest.raises(AnonymizationError) as info:
            run_table_plan(
                item, target, SALT, dump_path=str(dump), tools=tools, retry=RetryPolicy(attempts=1)
            )
        _assert_clean(info.value, caplog)
        assert "people_email_corp" in str(info.value)
        assert "a masked value likely breaks it" in str(info.value)
        assert not execute(target, "SELECT 1 FROM pg_trigger WHERE tgname LIKE 'zz_sss_mask_%'")
    finally:
        staging_pg.drop_database("errsan_src")
        staging_pg.drop_database("errsan_dst")


def test_unique_and_input_errors_describe_names_only(db_any):
    _pg, target = db_any
    execute(target, "CREATE TABLE u (id int PRIMARY KEY, n int)")
    execute(target, "INSERT INTO u VALUES (1, 1)")
    with target.connect() as conn:
        with pytest.raises(psycopg.errors.UniqueViolation) as dup:
            conn.execute("INSERT INTO u VALUES (1, 2)")
        assert "Key (id)=(1)" in str(dup.value)  # what PostgreSQL says...
        text = describe_pg_error(dup.value)  # ...and what we say
        assert text == "SQLSTATE 23505 (UniqueViolation), table public.u, constraint u_pkey"
        with pytest.raises(psycopg.errors.InvalidTextRepresentation) as bad:
            conn.execute("SELECT 'Original Value'::int")
        assert "Original" not in describe_pg_error(bad.value)

        def boom():
            conn.execute("INSERT INTO u VALUES (1, 3)")

        with pytest.raises(AnonymizationError) as info:
            sanitized(boom, "test", error_cls=AnonymizationError)
        assert info.value.__context__ is None and "Key (id)" not in "".join(
            traceback.format_exception(info.value)
        )


def test_redact_server_text():
    stderr = (
        'COPY failed for table "people": ERROR:  new row for relation "people" violates check constraint "c"\n'
        "DETAIL:  Failing row contains (1, secret@x, Bob).\n"
        'CONTEXT:  COPY people, line 1: "1\tsecret@x\tBob"\n'
        'invalid input syntax for type integer: "Bob"\n'
        "Command was: COPY people (id, email) FROM stdin;\n1\tsecret@x"
    )
    out = redact_server_text(stderr)
    assert "secret" not in out and "Bob" not in out
    assert 'violates check constraint "c"' in out and "<value withheld>" in out
