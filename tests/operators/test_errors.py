"""One error mapping: a non-retryable SyncError fails the task at once (no retry spent), a retryable one
is retried by Airflow. Real dag.test runs with retries=2."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from airflow_helpers import sync_dag

pytestmark = pytest.mark.airflow


def _run(dag, tmp_path):
    sync_dag(dag, tmp_path / "empty-dags")
    run = dag.test()
    return {ti.task_id: ti for ti in run.get_task_instances()}


def test_non_retryable_error_fails_without_spending_retries(airflow_db, tmp_path, monkeypatch):
    from airflow.sdk import DAG

    from scalingo_staging_sync.operators import PlanAnonymizationOperator

    monkeypatch.setenv(
        "AIRFLOW_CONN_STAGING_DB", '{"conn_type": "postgres", "host": "127.0.0.1", "schema": "x"}'
    )
    bad_rules = tmp_path / "rules.yaml"
    bad_rules.write_text("anonymization_tables: [{table: customer, columns: {email: no_such_transformer}}]\n")
    args = {"retries": 2, "retry_delay": timedelta(seconds=0)}
    with DAG("sss_non_retryable", schedule=None, start_date=datetime(2026, 1, 1), default_args=args) as dag:
        PlanAnonymizationOperator(task_id="plan", rules_file=str(bad_rules))
    tis = _run(dag, tmp_path)
    assert str(tis["plan"].state) == "failed"
    assert tis["plan"].try_number == 1  # failed at once: the rules cannot get better by retrying


def test_retryable_error_is_retried(airflow_db, tmp_path):
    from airflow.sdk import DAG, BaseOperator

    from scalingo_staging_sync.errors import TransientError
    from scalingo_staging_sync.operators._base import maps_sync_errors

    class Flaky(BaseOperator):
        @maps_sync_errors
        def execute(self, context):
            raise TransientError("server restarting")

    args = {"retries": 2, "retry_delay": timedelta(seconds=0)}
    with DAG("sss_retryable", schedule=None, start_date=datetime(2026, 1, 1), default_args=args) as dag:
        Flaky(task_id="flaky")
    tis = _run(dag, tmp_path)
    assert str(tis["flaky"].state) == "failed"
    assert tis["flaky"].try_number == 3  # 1 + 2 retries
