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
