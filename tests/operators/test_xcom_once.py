"""The PII scan and the cleanup store their result once: as ``return_value`` when the task succeeds, under
their own key (``pii_scan``, ``cleanup``) only when it fails (a failed task has no ``return_value``; the
reference DAG's audit reads ``return_value or key``). Real ``dag.test()`` runs; the failing paths are run
in tests/pii/test_pii_operator_dag.py and tests/dags/test_issue15_operators.py."""

from __future__ import annotations

import pytest
from airflow_helpers import session_task_states, stored_xcom, sync_dag

pytestmark = pytest.mark.airflow


def test_a_successful_scan_and_cleanup_store_their_result_once(airflow_db, tmp_path):
    from airflow.sdk import DAG

    from scalingo_staging_sync.operators import PiiScanOperator, StagingCleanupOperator

    download_dir = tmp_path / "downloads" / "run-1"
    download_dir.mkdir(parents=True)
    (download_dir / "prod.pgsql").write_bytes(b"dump")
    with DAG("tidy_xcom_once", schedule=None) as dag:
        PiiScanOperator(task_id="pii_scan", enabled=False)  # disabled: no database needed
        StagingCleanupOperator(task_id="cleanup", mode="", download_dir=str(download_dir))
    sync_dag(dag, tmp_path / "dags", bundle_path=tmp_path / "dags")
    run = dag.test()
    assert str(run.state) == "success", session_task_states(run)

    assert stored_xcom(run, "pii_scan") == {"enabled": False, "counts": {}, "unmasked": [], "findings": []}
    assert stored_xcom(run, "pii_scan", "pii_scan") is None

    cleanup = stored_xcom(run, "cleanup")
    assert cleanup["removed"] == str(download_dir) and not download_dir.exists()
    assert cleanup["proven"] is None and cleanup["backup"]["errors"] == []
    assert stored_xcom(run, "cleanup", "cleanup") is None
