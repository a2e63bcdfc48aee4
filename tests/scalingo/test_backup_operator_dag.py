"""ScalingoBackupOperator inside a real ``dag.test()`` run, connection from AIRFLOW_CONN_SCALINGO_DEFAULT."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from airflow_helpers import sync_dag
from scalingo_helpers import APP

from scalingo_staging_sync.scalingo.download import sha256_file

pytestmark = pytest.mark.airflow


def _run_dag(dag_id: str, tmp_path: Path, **op_kwargs):
    from airflow.sdk import DAG, task

    from scalingo_staging_sync.operators import ScalingoBackupOperator

    result_file = tmp_path / f"{dag_id}.json"
    with DAG(dag_id, schedule=None, start_date=datetime(2026, 1, 1), catchup=False) as dag:
        backup = ScalingoBackupOperator(
            task_id="backup",
            app="{{ params.app }}",
            download_dir=str(tmp_path / "dl"),
            poll_interval=0.05,
            params={"app": APP},
            **op_kwargs,
        )

        @task
        def record(info: dict) -> None:
            Path(str(result_file)).write_text(json.dumps(info))

        record(backup.output)

    sync_dag(dag, tmp_path / "empty-dags")
    run = dag.test()
    return run, (json.loads(result_file.read_text()) if result_file.exists() else None)


def test_dag_test_latest(airflow_db, fake, fake_app, scalingo_conn, chinook_dump, tmp_path):
    from airflow.sdk import DagRunState

    newest = fake.add_backup(APP, chinook_dump, age=timedelta(hours=1))
    fake.add_backup(APP, chinook_dump, status="running")
    run, info = _run_dag("sss_backup_latest", tmp_path)
    assert run.state == DagRunState.SUCCESS
    assert info["backup_id"] == newest.id
    assert info["sha256"] == sha256_file(newest.archive)
    assert Path(info["dump_path"]).read_bytes() == chinook_dump.read_bytes()


def test_dag_test_new_backup_deferrable(airflow_db, fake, fake_app, scalingo_conn, tmp_path):
    from airflow.sdk import DagRunState

    run, info = _run_dag("sss_backup_new_deferred", tmp_path, backup="new", deferrable=True)
    assert run.state == DagRunState.SUCCESS
    created = fake.backup(info["backup_id"])
    assert created.method == "manual" and created.status == "done"
    assert info["dump_format"] == "custom" and info["pg_major"] == 16


def test_dag_test_fails_on_unknown_app(airflow_db, fake, fake_app, scalingo_conn, tmp_path):
    from airflow.sdk import DAG, DagRunState

    from scalingo_staging_sync.operators import ScalingoBackupOperator

    with DAG("sss_backup_ghost", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
        ScalingoBackupOperator(
            task_id="backup", app="ghost-app", download_dir=str(tmp_path / "dl"), retries=0
        )
    sync_dag(dag, tmp_path / "empty-dags")
    assert dag.test().state == DagRunState.FAILED
