"""How to reach a PostgreSQL database: one value shared by psycopg and the libpq client tools.

Passwords never go on a command line: client tools get them through ``PGPASSWORD`` in their
environment (see :meth:`PgTarget.libpq_env`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

#: libpq connection keywords and the environment variables that carry them to the client tools
LIBPQ_ENV = {
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL",
    "sslcrldir": "PGSSLCRLDIR",
    "sslcompression": "PGSSLCOMPRESSION",
    "sslsni": "PGSSLSNI",
    "sslnegotiation": "PGSSLNEGOTIATION",
    "ssl_min_protocol_version": "PGSSLMINPROTOCOLVERSION",
    "ssl_max_protocol_version": "PGSSLMAXPROTOCOLVERSION",
    "requiressl": "PGREQUIRESSL",
    "gssencmode": "PGGSSENCMODE",
    "gsslib": "PGGSSLIB",
    "krbsrvname": "PGKRBSRVNAME",
    "requirepeer": "PGREQUIREPEER",
    "require_auth": "PGREQUIREAUTH",
    "channel_binding": "PGCHANNELBINDING",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "application_name": "PGAPPNAME",
    "options": "PGOPTIONS",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "load_balance_hosts": "PGLOADBALANCEHOSTS",
    "client_encoding": "PGCLIENTENCODING",
    "service": "PGSERVICE",
    "passfile": "PGPASSFILE",
    "hostaddr": "PGHOSTADDR",
    "tcp_user_timeout": None,
    "keepalives": None,
    "keepalives_idle": None,
    "keepalives_interval": None,
    "keepalives_count": None,
}


@dataclass(frozen=True)
class PgTarget:
    """A database on a server: host (or unix-socket directory), port, role, password, database."""

    host: str
    dbname: str
    port: int = 5432
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    options: dict[str, str] = field(default_factory=dict)  # extra libpq keywords: sslmode, ...

    def with_dbname(self, dbname: str) -> PgTarget:
        return replace(self, dbname=dbname)

    def conninfo(self) -> str:
        from psycopg.conninfo import make_conninfo

        kwargs: dict[str, Any] = {"host": self.host, "port": self.port, "dbname": self.dbname, **self.options}
        if self.user:
            kwargs["user"] = self.user
        if self.password:
            kwargs["password"] = self.password
        return make_conninfo(**kwargs)

    def connect(self, autocommit: bool = True, **kwargs: Any):
        import psycopg

        return psycopg.connect(self.conninfo(), autocommit=autocommit, **kwargs)

    def libpq_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for pg_restore / psql: PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, ..."""
        env = dict(os.environ if base is None else base)
        env.update({"PGHOST": self.host, "PGPORT": str(self.port), "PGDATABASE": self.dbname})
        if self.user:
            env["PGUSER"] = self.user
        if self.password:
            env["PGPASSWORD"] = self.password
        for key, value in self.options.items():
            if LIBPQ_ENV.get(key):
                env[LIBPQ_ENV[key]] = str(value)
        return env

    def describe(self) -> str:
        """Safe for logs: no password."""
        return f"{self.user or '?'}@{self.host}:{self.port}/{self.dbname}"


#: the timeouts pg_restore turns off in each of its sessions (``_doSetFixedOutputState``), with the
#: first server version (``server_version_num``) that knows each
RESTORE_TIMEOUTS = (
    ("statement_timeout", 0),
    ("lock_timeout", 0),
    ("idle_in_transaction_session_timeout", 0),
    ("transaction_timeout", 170000),
)


def turn_off_timeouts(conn: Any) -> None:
    """Turn off for the session of the psycopg connection ``conn`` the timeouts pg_restore turns off
    in its own: the staging role's (``ALTER ROLE ... SET statement_timeout``, set for its application,
    which in place is the role restoring) would cancel a batch step, such as a large table's COPY or
    the refresh of a large materialized view."""
    from psycopg import sql

    known = [setting for setting, since in RESTORE_TIMEOUTS if conn.info.server_version >= since]
    conn.execute(  # one round trip
        sql.SQL("SELECT {}").format(
            sql.SQL(", ").join(sql.SQL("set_config({}, '0', false)").format(sql.Literal(s)) for s in known)
        )
    )
