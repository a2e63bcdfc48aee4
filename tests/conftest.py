"""Shared test infrastructure: Airflow environment (set before anything imports airflow),
embedded PostgreSQL servers (PG 16 "production", PG 16 and PG 18 staging targets), the Chinook
dump, and the fake Scalingo API server."""

from __future__ import annotations

import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# --- Airflow environment: must be set before the first `import airflow` -------------------------
REPO_ROOT = Path(__file__).resolve().parent.parent
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="sss-airflow-home-"))
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO_ROOT / "dags")
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ["AIRFLOW__CORE__TEST_CONNECTION"] = "Enabled"
os.environ.setdefault("SCALINGO_STAGING_SYNC_AUDIT_DIR", str(_AIRFLOW_HOME / "audit"))

import pytest  # noqa: E402

from scalingo_staging_sync.testing.postgres import (  # noqa: E402
    EmbeddedPostgres,
    load_chinook,
    start_embedded_postgres,
)


@pytest.fixture(autouse=True)
def _package_log_level():
    """The command line run in-process (click's CliRunner) quiets the package's logger for the rest of
    the process, as a command should; the next tests would lose its warnings (caplog sees nothing)."""
    import logging

    logger = logging.getLogger("scalingo_staging_sync")
    level = logger.level
    yield
    logger.setLevel(level)


@pytest.fixture(scope="session")
def airflow_db():
    """A fresh Airflow metadata database (SQLite), once per test run."""
    from airflow.utils import db

    db.resetdb()
    return _AIRFLOW_HOME


@pytest.fixture(scope="session")
def pg_base_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pg")


@pytest.fixture(scope="session")
def prod_pg(pg_base_dir) -> EmbeddedPostgres:
    """PostgreSQL 16 playing the production server that produces dumps."""
    pg = start_embedded_postgres(16, pg_base_dir)
    yield pg
    pg.stop()


@pytest.fixture(scope="session")
def staging_pg16(pg_base_dir) -> EmbeddedPostgres:
    pg = start_embedded_postgres(16, pg_base_dir)
    yield pg
    pg.stop()


@pytest.fixture(scope="session")
def staging_pg18(pg_base_dir) -> EmbeddedPostgres:
    pg = start_embedded_postgres(18, pg_base_dir)
    yield pg
    pg.stop()


@pytest.fixture(params=[16, 18], ids=["staging-pg16", "staging-pg18"])
def staging_pg(request) -> EmbeddedPostgres:
    """Each staging target version in turn."""
    return request.getfixturevalue(f"staging_pg{request.param}")


@pytest.fixture(scope="session")
def chinook_prod(prod_pg) -> str:
    """The Chinook sample database loaded into the production server; returns its name."""
    return load_chinook(prod_pg, "chinook")


@pytest.fixture(scope="session")
def chinook_dump(prod_pg, chinook_prod, tmp_path_factory) -> Path:
    """A real ``pg_dump -Fc`` archive of Chinook made by PostgreSQL 16."""
    out = tmp_path_factory.mktemp("dumps") / "chinook.pgsql"
    return prod_pg.pg_dump(chinook_prod, out)


@pytest.fixture
def box(tmp_path_factory, monkeypatch):
    """A started sandbox (``scalingo_staging_sync.testing.sandbox``: embedded PostgreSQL production with
    Chinook and staging, the fake Scalingo API over HTTP) with its environment set; stopped afterwards."""
    from scalingo_staging_sync.testing.sandbox import start_sandbox

    sandbox = start_sandbox(tmp_path_factory.mktemp("sandbox"))
    for key, value in sandbox.env.items():
        monkeypatch.setenv(key, value)
    yield sandbox
    sandbox.stop()


# ---------------------------------------------------------------- object storage (issue 15)
# A real S3-compatible server (moto in server mode) on 127.0.0.1, reached through an Airflow ``aws``
# connection given as an ``AIRFLOW_CONN_<ID>`` env var.
CONN_ID = "sss_test_s3"


@dataclass
class Bucket:
    server: Any
    name: str
    conn_id: str

    @property
    def url(self) -> str:
        return f"s3://{self.name}"

    def keys(self, prefix: str = "") -> list[str]:
        return self.server.keys(self.name, prefix)


@pytest.fixture(scope="session")
def s3_server():
    from scalingo_staging_sync.testing.s3 import MotoS3Server

    with MotoS3Server() as server:
        os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = server.conn_json()
        yield server
        os.environ.pop(f"AIRFLOW_CONN_{CONN_ID.upper()}", None)


@pytest.fixture
def s3_bucket(s3_server) -> Bucket:
    """A fresh private bucket on the moto server, and the connection id that reaches it."""
    name = f"sss-{uuid.uuid4().hex[:10]}"
    s3_server.create_bucket(name)
    return Bucket(s3_server, name, CONN_ID)
