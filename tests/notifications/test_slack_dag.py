"""Slack notifier callbacks in a real ``dag.test()`` run, posting to a local webhook recorder."""

from __future__ import annotations

import pytest
from airflow_helpers import sync_dag

from scalingo_staging_sync.testing.slack_receiver import SlackReceiver

pytestmark = pytest.mark.airflow


def _build_dag(dag_id: str, fail: bool):
    from airflow.sdk import DAG, task

    from scalingo_staging_sync.audit import build_and_write_report
    from scalingo_staging_sync.notifications.slack import SyncSlackNotifier

    labels = {"public.users": "Utilisateurs"}
    common = {"slack_conn_id": "slack_test", "source_app": "app-prod", "target_app": "app-staging"}
    with DAG(
        dag_id,
        schedule=None,
        on_success_callback=SyncSlackNotifier(event="success", labels=labels, **common),
        on_failure_callback=SyncSlackNotifier(event="failure", **common),
        default_args={
            "on_success_callback": SyncSlackNotifier(event="phase", **common),
            "on_failure_callback": SyncSlackNotifier(event="failure", **common),
        },
    ) as dag:

        @task(on_execute_callback=SyncSlackNotifier(event="start", **common))
        def safety_gate():
            return True

        @task
        def pii_scan():
            if fail:
                raise RuntimeError(
                    "PII scan found 1 unmasked column(s) holding personal data: public.employee.email"
                )
            return {"passed": True}

        @task
        def audit_report(**context):
            return build_and_write_report(
                run_id=context["run_id"],
                settings={"source_app": "app-prod", "target_app": "app-staging"},
                tables=[{"table": "public.users", "rows": 42, "mode": "on_load"}],
                pii={"passed": True, "findings": [{"column_id": "public.users.email", "status": "masked"}]},
                verification={"passed": True},
                task_states={"safety_gate": "success", "pii_scan": "success"},
                phase_durations={"safety_gate": 1.0, "pii_scan": 2.0},
            )

        safety_gate() >> pii_scan() >> audit_report()
    return dag


@pytest.fixture()
def slack(monkeypatch):
    with SlackReceiver() as receiver:
        monkeypatch.setenv("AIRFLOW_CONN_SLACK_TEST", receiver.airflow_conn_json())
        yield receiver


def test_start_phases_success(airflow_db, slack, tmp_path):
    dag = _build_dag("sss_slack_success", fail=False)
    sync_dag(dag, tmp_path, bundle_path=tmp_path)
    run = dag.test()
    assert str(run.state) == "success"
    texts = slack.texts()
    assert texts[0].startswith(":rocket: *Staging sync started*")
    assert "app-prod → Target: app-staging" in texts[0]
    assert any(t.startswith(":white_check_mark: Safety checks done in") for t in texts)
    assert any(t.startswith(":white_check_mark: PII scan done in") for t in texts)
    success = texts[-1]
    assert "*Staging sync succeeded*" in success, texts
    assert "Tables anonymized: 1 (42 rows)" in success and "✓ Utilisateurs: 42 rows anonymized" in success
    assert "PII findings: 1 (0 unmasked)" in success and "Total time: 3.0s" in success


def test_failure_names_task_and_log(airflow_db, slack, tmp_path):
    dag = _build_dag("sss_slack_failure", fail=True)
    sync_dag(dag, tmp_path, bundle_path=tmp_path)
    run = dag.test()
    assert str(run.state) == "failed"
    failures = [t for t in slack.texts() if t.startswith(":x:")]
    assert len(failures) == 2, slack.texts()  # the task's callback, then the DAG's
    for text in failures:
        assert "Failed task: `pii_scan` (PII scan)" in text
        assert "open the task log>" in text and "pii_scan" in text.split("Log: <")[1]
    assert "public.employee.email" in failures[0]  # the task-level callback has the exception
    assert not any("succeeded" in t for t in slack.texts())
