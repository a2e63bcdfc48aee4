"""Fixtures of the inventory tests: a small database built per test on the production server (PG16),
dumped by pg_dump 16 or by pg_dump 18 (``--statistics`` for 18), and fresh staging databases."""

from __future__ import annotations

import itertools
import subprocess
import textwrap
from pathlib import Path

import pytest

from scalingo_staging_sync.anonymize.rules import parse_rules_text
from scalingo_staging_sync.pgconn import PgTarget
from scalingo_staging_sync.restore.pgtools import find_pg_tools
from scalingo_staging_sync.testing.postgres import pg_bin_dir

_counter = itertools.count()


def rules_from(yaml_text: str):
    return parse_rules_text(textwrap.dedent(yaml_text))


class Archives:
    """``make(sql, version)`` -> (archive path, the pg tools of that version)."""

    def __init__(self, prod_pg, tmp_path: Path) -> None:
        self.prod_pg = prod_pg
        self.tmp_path = tmp_path
        self.dbs: list[str] = []

    def make(self, sql: str, version: int = 16, statistics: bool = False):
        name = f"inv_{next(_counter)}"
        self.prod_pg.create_database(name)
        self.dbs.append(name)
        self.prod_pg.execute(textwrap.dedent(sql), dbname=name)
        out = self.tmp_path / f"{name}_pg{version}.dump"
        cmd = [str(pg_bin_dir(version) / "pg_dump"), "-Fc", "-f", str(out)]
        if statistics:
            cmd.append("--statistics")
        cmd += ["-d", self.prod_pg.conninfo(name)]
        subprocess.run(cmd, check=True, capture_output=True)
        return out, find_pg_tools(pg_bin_dir(version))


@pytest.fixture
def archives(prod_pg, tmp_path):
    made = Archives(prod_pg, tmp_path)
    yield made
    for name in made.dbs:
        prod_pg.drop_database(name)


@pytest.fixture
def fresh_db(staging_pg16, staging_pg18):
    """``fresh_db(version)`` -> PgTarget of a new empty database on the staging server of ``version``."""
    made: list[tuple[object, str]] = []

    def make(version: int) -> PgTarget:
        pg = staging_pg16 if version == 16 else staging_pg18
        name = f"invr_{next(_counter)}"
        pg.create_database(name)
        made.append((pg, name))
        return PgTarget(host=pg.host, port=pg.port, user=pg.user, dbname=name)

    yield make
    for pg, name in made:
        pg.drop_database(name)


def query(target: PgTarget, sql: str, params=None) -> list[tuple]:
    with target.connect(autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()
