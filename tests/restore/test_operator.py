"""PgRestoreOperator in a real Airflow ``dag.test()``; maintenance mode against the fake Scalingo API."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from airflow_helpers import sync_dag
from restore_helpers import SCALINGO_ROLE, make_scalingo_db, tables_of, unique_db

from scalingo_staging_sync.restore import targets
from scalingo_staging_sync.restore.api import restore
from scalingo_staging_sync.restore.errors import RestoreError
from scalingo_staging_sync.restore.pgtools import PG_BIN_ENV, find_pg_tools
from scalingo_staging_sync.testing.fake_scalingo import FakeScalingoAPI
from scalingo_staging_sync.testing.postgres import pg_bin_dir

APP = "my-staging"


@pytest.fixture
def fake_scalingo(tmp_path, monkeypatch):
    with FakeScalingoAPI(workdir=tmp_path / "fake", operation_polls=0) as server:
        server.add_app(APP)
        conn = json.loads(server.airflow_conn_json())
        conn["extra"].update(backoff_s=0.01, backoff_max_s=0.05)
        monkeypatch.setenv("AIRFLOW_CONN_SCALINGO_DEFAULT", json.dumps(conn))
        yield server


def _formation(fake) -> dict:
    return {c["name"]: c["amount"] for c in fake.apps[APP].containers}


def test_operator_phases_in_dag_test_with_maintenance(
    airflow_db, chinook_dump, staging_pg16, fake_scalingo, monkeypatch, tmp_path
):
    from airflow.sdk import DAG, DagRunState, task

    from scalingo_staging_sync.operators import (
        PgRestoreOperator,
        PromoteStagingOperator,
        StagingCleanupOperator,
    )

    pg = staging_pg16
    db = unique_db("scalingo")
    make_scalingo_db(pg, db)
    monkeypatch.setenv("AIRFLOW_CONN_STAGING_DB", pg.airflow_conn_json(db, user=SCALINGO_ROLE))
    monkeypatch.setenv(PG_BIN_ENV, str(pg_bin_dir(16)))
    seen: dict = {}
    out_file = tmp_path / "xcom.json"
    common = {"dump_path": str(chinook_dump), "maintenance": True, "target_app": APP}
    with DAG("sss_restore_phases", schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
        pre = PgRestoreOperator(task_id="pre_data", section="pre-data", **common)
        data = PgRestoreOperator(task_id="data", section="data", exclude_tables=["customer"], **common)
        post = PgRestoreOperator(
            task_id="post_data", section="post-data", exclude_tables=["customer"], **common
        )

        @task
        def check_scaled_down(restored: dict) -> None:
            seen["during"] = _formation(fake_scalingo)
            Path(str(out_file)).write_text(json.dumps(restored))

        promote = PromoteStagingOperator(task_id="promote", maintenance=True)
        cleanup = StagingCleanupOperator(task_id="cleanup", maintenance=True)
        checked = check_scaled_down(data.output)
        pre >> data >> checked >> post >> promote >> cleanup.as_teardown(setups=pre)

    sync_dag(dag, tmp_path / "empty-dags")
    run = dag.test()
    assert run.state == DagRunState.SUCCESS
    xcom = json.loads(out_file.read_text())
    assert xcom["database"] == db and xcom["mode"] == "in_place" and xcom["section"] == "data"
    assert xcom["excluded"] == ["public.customer"]
    assert xcom["tables"]["public.track"]["rows"] == 3503 and xcom["tables"]["public.track"]["bytes"] > 0
    assert "warnings" in xcom and xcom["duration_s"] >= 0
    assert seen["during"] == {"web": 0, "worker": 0}  # unmasked data: app stopped
    assert _formation(fake_scalingo) == {"web": 2, "worker": 1}  # back after promote
    assert pg.execute("SELECT count(*) FROM invoice", db) == [(412,)]  # verified: teardown kept it
    assert targets.read_state(make_target(pg, db))["status"] == "verified"


def make_target(pg, db):
    from scalingo_staging_sync.pgconn import PgTarget

    return PgTarget(host=pg.host, port=pg.port, user=SCALINGO_ROLE, dbname=db)


def test_maintenance_failure_wipes_and_scales_back(chinook_dump, staging_pg18, fake_scalingo, tmp_path):
    from scalingo_staging_sync.hooks.scalingo import ScalingoHook

    pg = staging_pg18
    db = unique_db("scalingo")
    target = make_scalingo_db(pg, db)
    data = bytearray(chinook_dump.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
    corrupt = tmp_path / "corrupt.pgsql"
    corrupt.write_bytes(bytes(data))
    hook = ScalingoHook()
    tools = find_pg_tools(pg_bin_dir(18))
    with pytest.raises(RestoreError):
        restore(corrupt, target, section="pre-data+data", tools=tools, scaler=hook, app=APP)
    assert tables_of(pg, db) == set()
    assert _formation(fake_scalingo) == {"web": 2, "worker": 1}
    assert targets.read_state(target)["status"] == "wiped"
