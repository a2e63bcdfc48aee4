"""A fresh, empty database on an embedded PostgreSQL server for one test. A plain module: pytest puts
tests/ on sys.path (tests/conftest.py), so any test directory imports it as ``pg_helpers``."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager

_counter = itertools.count()


@contextmanager
def new_database(pg, prefix: str) -> Iterator[str]:
    """Create ``<prefix>_<n>`` (a name unique in this test run) on ``pg``; drop it after the block."""
    name = f"{prefix}_{next(_counter)}"
    pg.create_database(name)
    yield name
    pg.drop_database(name)


def copy_text_out(conn, table: str) -> bytes:
    """The COPY text of ``public.<table>`` (a table with an ``id`` column), in ``id`` order."""
    from psycopg import sql

    buf = bytearray()
    query = sql.SQL("COPY (SELECT * FROM {} ORDER BY id) TO STDOUT").format(sql.Identifier(table))
    with conn.cursor().copy(query) as cp:
        for chunk in cp:
            buf += chunk
    return bytes(buf)


def copy_text_in(conn, table: str, data: bytes) -> None:
    """``COPY <table> FROM STDIN`` of the COPY text ``data``."""
    from psycopg import sql

    with conn.cursor().copy(sql.SQL("COPY {} FROM STDIN").format(sql.Identifier(table))) as cp:
        cp.write(data)
