"""Issue 13 "done when": `scalingo-staging-sync scan --suggest-rules` on production Chinook gives a first
rules file that passes `validate` and makes a full reference-DAG run succeed without edits (real Airflow
run through the sandbox: embedded PostgreSQL, fake Scalingo API over HTTP)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import run_cli

from scalingo_staging_sync.testing.sandbox import SOURCE_APP, start_sandbox

REPO = Path(__file__).resolve().parents[2]
CUSTOMERS = "SELECT customer_id, first_name, last_name, email, phone, address FROM customer ORDER BY 1"

pytestmark = pytest.mark.airflow


def test_suggested_rules_run_the_reference_dag_to_success(airflow_db, tmp_path_factory, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    box = start_sandbox(tmp_path_factory.mktemp("suggest-sandbox"))
    try:
        rules = box.base_dir / "suggested.yaml"
        scan = run_cli(
            "scan",
            "--dsn",
            box.prod.conninfo(box.source_db),
            "--suggest-rules",
            str(rules),
            "--source-app",
            SOURCE_APP,
        )
        assert scan.returncode in (0, 1), scan.stderr  # 1: the production scan has findings (it should)
        assert rules.is_file(), scan.stdout + scan.stderr
        validate = run_cli("validate", str(rules))
        assert validate.returncode == 0, validate.stdout + validate.stderr

        for key, value in {**box.env, "SCALINGO_STAGING_SYNC_RULES": str(rules)}.items():
            monkeypatch.setenv(key, value)
        bag = DagBag(dag_folder=str(REPO / "dags"))
        assert not bag.import_errors, bag.import_errors
        dag = bag.get_dag("scalingo_staging_sync")
        prod = box.prod.execute(CUSTOMERS, box.source_db)
        run = dag.test(
            run_conf={
                "target_app": box.target_app,
                "confirm_target": box.target_app,
                "dry_run": False,
                "backup": "latest",
                "exclude_tables": [],
                "source_app": None,
                "rules_file": None,
            }
        )
        states = {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in run.get_task_instances()}
        assert str(run.state) == "success", states

        staged = {row[0]: row for row in box.staging.execute(CUSTOMERS, box.staging_db)}
        assert len(staged) == len(prod) == 59
        for original in prod:
            masked = staged[original[0]]
            assert masked[3] != original[3]  # e-mails masked by the suggested rules
        audit = sorted(Path(box.env["SCALINGO_STAGING_SYNC_AUDIT_DIR"]).glob("*.json"))[-1]
        report = json.loads(audit.read_text())
        assert report["result"] == "success"
        assert report["pii_scan"]["counts"]["unmasked"] == 0
    finally:
        box.stop()
