"""The table-name value type: parsing, quoting, round trip, errors that say how to fix the name."""

from __future__ import annotations

import pytest

from scalingo_staging_sync.errors import SyncError, TransientError, is_retryable
from scalingo_staging_sync.tablename import TableName, TableNameError, parse_table_names


@pytest.mark.parametrize(
    ("text", "schema", "name"),
    [
        ("users", "public", "users"),
        ("  users ", "public", "users"),
        ("crm.sessions", "crm", "sessions"),
        ('crm."a.b"', "crm", "a.b"),
        ('"My S"."Order Items"', "My S", "Order Items"),
        ("Order Items", "public", "Order Items"),
        ('x."q""q"', "x", 'q"q'),
        ("Ünïcødé_" * 7, "public", "Ünïcødé_" * 7),
    ],
)
def test_parse_and_round_trip(text, schema, name):
    parsed = TableName.parse(text)
    assert (parsed.schema, parsed.name) == (schema, name)
    assert TableName.parse(str(parsed)) == parsed
    assert TableName.parse(parsed.key) == parsed


@pytest.mark.parametrize(
    ("bad", "hint"),
    [
        ("a.b.c", "3 dot-separated"),
        ("", "empty"),
        ('"x', "unterminated"),
        ("a.", "empty part"),
        ('a"b', "double quote"),
    ],
)
def test_bad_names_are_refused_with_a_hint(bad, hint):
    with pytest.raises(TableNameError, match=hint):
        TableName.parse(bad)


def test_bare_name_is_public_only():
    assert TableName.parse("sessions") != TableName.parse("crm.sessions")
    assert TableName.parse("sessions") == TableName("public", "sessions")


def test_other_shapes_and_list_dedupe():
    assert TableName.parse(("s", "t")) == TableName("s", "t")
    assert TableName.parse({"schema": "s", "name": "t"}) == TableName("s", "t")
    assert parse_table_names(["a", "public.a", "b"]) == [TableName("public", "a"), TableName("public", "b")]
    with pytest.raises(TableNameError, match="exclude_tables"):
        parse_table_names(["ok", "a.b.c"], what="exclude_tables")


def test_identifier_quotes_every_part():
    from psycopg import sql

    assert TableName.parse('x."a""b"').identifier() == sql.Identifier("x", 'a"b')


def test_error_root_and_retryable_flag():
    assert not is_retryable(SyncError("bad input"))
    assert is_retryable(TransientError("server restarting"))
    assert is_retryable(SyncError("x", retryable=True))
    assert isinstance(TableNameError("x"), SyncError)
    assert is_retryable(OSError("unknown errors count as retryable"))
