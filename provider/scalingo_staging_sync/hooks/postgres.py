"""Airflow ``postgres`` connection -> :class:`~scalingo_staging_sync.pgconn.PgTarget`, through ``PostgresHook``.

The staging target is a standard postgres connection (default ``staging_db``); its ``schema`` field is
the database, ``database`` overrides it (e.g. the scratch database ``<db>__incoming``). The postgres
provider's ``PostgresHook`` reads the connection, so what it supports keeps working: login, SSL modes
and the other libpq keywords given as extras (``sslmode``, ``sslrootcert``, ``target_session_attrs``,
...), IAM / cloud auth tokens (``iam: true``). The libpq keywords reach psycopg through the conninfo and
pg_restore / psql through their environment (``PGSSLMODE``, ...), never their command line.
"""

from __future__ import annotations

from typing import Any

from scalingo_staging_sync.errors import SyncError
from scalingo_staging_sync.pgconn import LIBPQ_ENV, PgTarget
from scalingo_staging_sync.secrets import mask_secret

DEFAULT_STAGING_CONN_ID = "staging_db"


class StagingConnectionError(SyncError, ValueError):
    """The staging connection is unusable as configured (not retryable: fix the connection)."""

    retryable = False


def pg_target_from_connection(
    conn_id: str = DEFAULT_STAGING_CONN_ID, database: str | None = None
) -> PgTarget:
    """The staging target described by Airflow connection ``conn_id`` (read through ``PostgresHook``)."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    hook = PostgresHook(postgres_conn_id=conn_id)
    conn = hook.get_connection(conn_id)
    if conn.conn_type not in ("postgres", "postgresql", None, ""):
        raise StagingConnectionError(
            f"connection {conn_id!r} has type {conn.conn_type!r}; the staging target must be a 'postgres' connection"
        )
    extra: dict[str, Any] = dict(conn.extra_dejson or {})
    login, password, port = conn.login, conn.password, conn.port
    if extra.get("iam"):
        login, password, port = hook.get_iam_token(conn)
    dbname = database or conn.schema
    if not dbname:
        raise StagingConnectionError(
            f"connection {conn_id!r} names no database: set its 'schema' field (Database) to the staging database"
        )
    if not conn.host:
        raise StagingConnectionError(
            f"connection {conn_id!r} has no host: set it to the staging server's host"
        )
    if password:
        mask_secret(str(password))
    options: dict[str, str] = {}
    unknown: list[str] = []
    for key, value in extra.items():
        if key in hook.ignored_extra_options or key == "iam" or value in (None, ""):
            continue
        if key in LIBPQ_ENV:
            options[key] = str(value)
        else:
            unknown.append(key)
    if unknown:
        raise StagingConnectionError(
            f"connection {conn_id!r}: extras {sorted(unknown)} are not libpq connection keywords that the "
            f"client tools can receive through their environment; use only {sorted(LIBPQ_ENV)}"
        )
    return PgTarget(
        host=conn.host,
        port=int(port or 5432),
        user=login or None,
        password=password or None,
        dbname=dbname,
        options=options,
    )
