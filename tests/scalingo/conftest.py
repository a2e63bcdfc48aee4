"""Fixtures for the Scalingo client / hook / operator tests: a started fake Scalingo API server and
a core client pointed at it (fast backoff so retry tests stay quick)."""

from __future__ import annotations

import pytest
from scalingo_helpers import APP, make_client

from scalingo_staging_sync.testing.fake_scalingo import FakeScalingoAPI


@pytest.fixture
def fake(tmp_path):
    with FakeScalingoAPI(workdir=tmp_path / "fake") as server:
        yield server


@pytest.fixture
def fake_app(fake, chinook_dump):
    """An app with one PostgreSQL addon (new backups wrap the Chinook dump) and a Redis addon."""
    fake.add_app(APP)
    fake.add_addon(APP, provider_id="redis")
    addon = fake.add_addon(APP, dump_path=chinook_dump, version="16.9.0-1", new_backup_polls=2)
    return addon


@pytest.fixture
def client(fake):
    with make_client(fake) as c:
        yield c


@pytest.fixture
def scalingo_conn(fake, monkeypatch):
    """AIRFLOW_CONN_SCALINGO_DEFAULT pointing at the fake server (fast retries via extras)."""
    import json

    conn = json.loads(fake.airflow_conn_json())
    conn["extra"].update(backoff_s=0.01, backoff_max_s=0.05)
    monkeypatch.setenv("AIRFLOW_CONN_SCALINGO_DEFAULT", json.dumps(conn))
    return conn
