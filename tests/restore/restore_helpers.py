"""Helpers for the restore tests: staging databases, a role with exactly Scalingo's grants."""

from __future__ import annotations

import itertools

import pytest
from psycopg import sql

from scalingo_staging_sync.pgconn import PgTarget
from scalingo_staging_sync.restore.pgtools import find_pg_tools
from scalingo_staging_sync.testing.postgres import EmbeddedPostgres, pg_bin_dir

SCALINGO_ROLE = "scalingo_stg_user"
_counter = itertools.count()


def unique_db(prefix: str = "staging") -> str:
    return f"{prefix}_{next(_counter)}"


def superuser_target(pg: EmbeddedPostgres, dbname: str) -> PgTarget:
    return PgTarget(host=pg.host, port=pg.port, user=pg.user, dbname=dbname)


def make_scalingo_db(pg: EmbeddedPostgres, dbname: str) -> PgTarget:
    """A database as Scalingo Shared Resources hands it out: the app role has ALL on the database and
    CREATE on public, is neither superuser nor the database owner, and has no CREATEDB."""
    with pg.connect() as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (SCALINGO_ROLE,)).fetchone()
        if not exists:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE").format(
                    sql.Identifier(SCALINGO_ROLE)
                )
            )
    pg.create_database(dbname)  # owned by postgres
    with pg.connect() as conn:
        conn.execute(
            sql.SQL("GRANT ALL ON DATABASE {} TO {}").format(
                sql.Identifier(dbname), sql.Identifier(SCALINGO_ROLE)
            )
        )
    with pg.connect(dbname) as conn:
        conn.execute(
            sql.SQL("GRANT CREATE, USAGE ON SCHEMA public TO {}").format(sql.Identifier(SCALINGO_ROLE))
        )
    return PgTarget(host=pg.host, port=pg.port, user=SCALINGO_ROLE, dbname=dbname)


def tables_of(pg: EmbeddedPostgres, dbname: str) -> set[str]:
    rows = pg.execute(
        "SELECT schemaname || '.' || tablename FROM pg_tables WHERE schemaname NOT IN "
        "('pg_catalog', 'information_schema', '_scalingo_staging_sync')",
        dbname,
    )
    return {r[0] for r in rows}


@pytest.fixture
def tools_for():
    def _tools(pg: EmbeddedPostgres):
        return find_pg_tools(pg_bin_dir(pg.version))

    return _tools
