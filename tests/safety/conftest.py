"""Fixtures of the preflight tests: the fake Scalingo API over HTTP with a source app (PostgreSQL addon,
finished backup) and a target app whose own PostgreSQL addon is the staging database; staging databases
in both restore modes (a role with Scalingo's grants for in_place, a CREATEDB owner for swap)."""

from __future__ import annotations

import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "restore"))

from restore_helpers import make_scalingo_db, unique_db  # noqa: E402

from scalingo_staging_sync.pgconn import PgTarget  # noqa: E402
from scalingo_staging_sync.scalingo.client import ScalingoClient  # noqa: E402
from scalingo_staging_sync.settings import RunSettings  # noqa: E402
from scalingo_staging_sync.testing.fake_scalingo import FakeScalingoAPI  # noqa: E402

SOURCE_APP = "shop"
TARGET_APP = "shop-staging"
SWAP_OWNER = "sss_preflight_owner"


@dataclass
class Env:
    pg: object
    fake: FakeScalingoAPI
    client: ScalingoClient
    staging: PgTarget
    mode: str
    settings: RunSettings
    salt: str
    pg_bin_dir: str
    environ: dict = field(default_factory=dict)

    def snapshot(self) -> dict:
        """Everything a run could have touched in staging."""
        db = self.staging.dbname
        tables = self.pg.execute(
            "SELECT schemaname || '.' || tablename FROM pg_tables WHERE schemaname NOT IN"
            " ('pg_catalog', 'information_schema') ORDER BY 1",
            db,
        )
        rows = self.pg.execute("SELECT id, email FROM customer ORDER BY id", db)
        dbs = self.pg.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", params=(db + "%",))
        return {"tables": tables, "rows": rows, "databases": sorted(r[0] for r in dbs)}

    def writes_to_scalingo(self) -> list[str]:
        return [
            f"{r.method} {r.path}" for r in self.fake.requests if r.method != "GET" and "/token" not in r.path
        ]


def _staging(pg, mode: str) -> PgTarget:
    if mode == "in_place":
        db = unique_db("scalingo")
        target = make_scalingo_db(pg, db)
    else:
        db = unique_db("swap")
        with pg.connect() as conn:
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (SWAP_OWNER,)).fetchone():
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB").format(sql.Identifier(SWAP_OWNER)))
        pg.create_database(db, owner=SWAP_OWNER)
        target = PgTarget(host=pg.host, port=pg.port, user=SWAP_OWNER, dbname=db)
    with target.connect() as conn:  # what the staging app has today
        conn.execute("CREATE TABLE customer (id int PRIMARY KEY, email text)")
        conn.execute("INSERT INTO customer VALUES (1, 'masked-1@example.com'), (2, 'masked-2@example.com')")
    return target


@pytest.fixture(params=["in_place", "swap"])
def env(request, staging_pg16, tmp_path):
    mode = request.param
    staging = _staging(staging_pg16, mode)
    rules = tmp_path / "rules.yaml"
    rules.write_text("source_app: shop\n")
    (tmp_path / "seeds").mkdir()
    (tmp_path / "seeds" / "users.sql").write_text("INSERT INTO customer VALUES (99, 'seed@example.com');\n")
    with FakeScalingoAPI(workdir=tmp_path / "fake") as fake:
        fake.add_app(SOURCE_APP)
        fake.add_addon(SOURCE_APP, version="16.9.0-1")
        fake.add_backup(SOURCE_APP)
        fake.add_app(TARGET_APP)
        fake.add_addon(TARGET_APP, host=staging.host, port=staging.port, database=staging.dbname)
        client = ScalingoClient(
            fake.api_token,
            auth_url=fake.url,
            api_url=fake.url,
            db_api_url=fake.url,
            backoff_s=0.01,
            backoff_max_s=0.05,
            max_attempts=2,
        )
        settings = RunSettings(
            run_id="manual__2026-12-02T07:00:00",
            rules_file=str(rules),
            rules_sha256=None,
            source_app=SOURCE_APP,
            target_app=TARGET_APP,
            seeds=("seeds/users.sql",),
            download_dir=str(tmp_path / "downloads" / "run"),
            restore_mode=mode,
        )
        yield Env(
            pg=staging_pg16,
            fake=fake,
            client=client,
            staging=staging,
            mode=mode,
            settings=settings,
            salt=secrets.token_urlsafe(48),
            pg_bin_dir=str(staging_pg16.bin_dir),
        )
        client.close()
