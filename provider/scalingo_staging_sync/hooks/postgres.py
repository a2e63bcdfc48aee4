"""Airflow ``postgres`` connection -> :class:`~scalingo_staging_sync.pgconn.PgTarget`.

The staging target is a standard postgres connection (default ``staging_db``); its ``schema`` field is
the database. ``database`` overrides it (e.g. the scratch database ``<db>__incoming``).
"""

from __future__ import annotations

from scalingo_staging_sync.pgconn import PgTarget
from scalingo_staging_sync.secrets import mask_secret

DEFAULT_STAGING_CONN_ID = "staging_db"
_LIBPQ_EXTRAS = (
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "connect_timeout",
    "application_name",
    "options",
)


def pg_target_from_connection(
    conn_id: str = DEFAULT_STAGING_CONN_ID, database: str | None = None
) -> PgTarget:
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    if conn.conn_type not in ("postgres", "postgresql", None, ""):
        raise ValueError(
            f"connection {conn_id!r} has type {conn.conn_type!r}; the staging target must be a 'postgres' connection"
        )
    dbname = database or conn.schema
    if not dbname:
        raise ValueError(
            f"connection {conn_id!r} names no database: set its 'schema' field (Database) to the staging database"
        )
    if not conn.host:
        raise ValueError(f"connection {conn_id!r} has no host: set it to the staging server's host")
    if conn.password:
        mask_secret(conn.password)
    extra = conn.extra_dejson or {}
    options = {k: str(extra[k]) for k in _LIBPQ_EXTRAS if extra.get(k) not in (None, "")}
    return PgTarget(
        host=conn.host,
        port=int(conn.port or 5432),
        user=conn.login or None,
        password=conn.password or None,
        dbname=dbname,
        options=options,
    )
