"""Storage fixtures: a real S3-compatible server (moto in server mode) on 127.0.0.1, reached through an
Airflow ``aws`` connection given as an ``AIRFLOW_CONN_<ID>`` env var."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from scalingo_staging_sync.testing.s3 import MotoS3Server

CONN_ID = "sss_test_s3"


@dataclass
class Bucket:
    server: MotoS3Server
    name: str
    conn_id: str

    @property
    def url(self) -> str:
        return f"s3://{self.name}"

    def keys(self, prefix: str = "") -> list[str]:
        return self.server.keys(self.name, prefix)


@pytest.fixture(scope="session")
def s3_server():
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


@pytest.fixture
def make_dump():
    """``make_dump(path, size, seed=0)``: see :func:`write_fake_dump`."""
    return write_fake_dump


def write_fake_dump(path: Path, size: int, seed: int = 0) -> Path:
    """A file shaped like a pg_dump custom archive (``PGDMP`` magic + pseudo-random bytes)."""
    import random

    rnd = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(b"PGDMP")
        left = size - 5
        while left > 0:
            n = min(left, 1 << 20)
            fh.write(rnd.randbytes(n))
            left -= n
    return path
