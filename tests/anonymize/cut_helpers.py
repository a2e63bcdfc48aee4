"""Shared by the tests of outputs cut to a ``varchar(n)`` (test_truncated_address, test_truncated_words):
the same originals masked through the on-load trigger, the in-place UPDATE and the stream engine, which
must all give the same bytes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from pg_helpers import copy_text_in, copy_text_out
from psycopg import sql

from scalingo_staging_sync.anonymize.planner import read_table
from scalingo_staging_sync.anonymize.salt import key_settings
from scalingo_staging_sync.anonymize.sql import column_expressions, trigger_statements, update_statement


def set_session_key(conn, key: str) -> None:
    """The session settings the masking expressions read the key ``key`` from."""
    for setting, value in key_settings(key).items():
        conn.execute("SELECT set_config(%s, %s, false)", (setting, value))


def mask_every_way(
    conn,
    ddl: str,
    specs: Mapping[str, Any],
    copy_text: bytes,
    key: str,
    *,
    stream: bool = False,
    arrow_folding: bool = False,
) -> list[tuple]:
    """Load ``copy_text`` (columns ``id`` and those of ``specs``) through the on-load trigger (table
    ``by_trigger``) and mask it in place with the UPDATE (table ``src``), tables made by ``ddl`` (``{}``
    is the table's name): both give the same bytes. With ``stream``, the stream engine (``arrow_folding``
    or not) masks it too, to the same bytes, loaded into ``by_stream``. All mask with ``key`` (set in
    the session). Returns the rows masked (of ``by_stream`` with ``stream``), by id."""
    if stream:
        pytest.importorskip("duckdb")
        from scalingo_staging_sync.anonymize import stream as stream_engine

        if arrow_folding and not stream_engine.arrow_folding_available():
            pytest.skip("pyarrow is not installed")
    set_session_key(conn, key)
    conn.execute(sql.SQL(ddl).format(sql.Identifier("src")))
    conn.execute(sql.SQL(ddl).format(sql.Identifier("by_trigger")))
    cat = read_table(conn, "public", "by_trigger")
    create_fn, create_trigger, _drop = trigger_statements("public", "by_trigger", specs, cat.columns, conn)
    conn.execute(create_fn)
    conn.execute(create_trigger)
    copy_text_in(conn, "by_trigger", copy_text)
    copy_text_in(conn, "src", copy_text)
    assert copy_text_out(conn, "src") == copy_text
    conn.execute(update_statement("public", "src", column_expressions(specs, cat.columns)))
    by_trigger = copy_text_out(conn, "by_trigger")
    assert copy_text_out(conn, "src") == by_trigger
    table = "by_trigger"
    if stream:
        from scalingo_staging_sync.tablename import TableName

        table = "by_stream"
        conn.execute(sql.SQL(ddl).format(sql.Identifier(table)))
        with stream_engine.StreamMasker(
            TableName("public", table), specs, cat.columns, ["id", *specs], key, arrow_folding=arrow_folding
        ) as m:
            masked = b"".join([*m.feed(copy_text), *m.finish()])
        assert masked == by_trigger
        copy_text_in(conn, table, masked)
    return conn.execute(sql.SQL("SELECT * FROM {} ORDER BY id").format(sql.Identifier(table))).fetchall()
