"""Slack message builders (pure) and the notify helper against a local webhook recorder."""

from __future__ import annotations

import pytest

from scalingo_staging_sync.notifications.messages import (
    build_event_message,
    failure_message,
    format_duration,
    labels_from_rules,
    phase_message,
    report_message,
    start_message,
    success_message,
)
from scalingo_staging_sync.testing.slack_receiver import SlackReceiver


def test_builders():
    assert start_message("app-prod", "app-staging", run_id="r1") == (
        ":rocket: *Staging sync started*\n• Source: app-prod → Target: app-staging\n• Run: `r1`"
    )
    assert phase_message("pii_scan", 2.04) == ":white_check_mark: PII scan done in 2.0s"
    assert phase_message("restore_schema", 3725) == ":white_check_mark: Schema restore done in 1h 02m 05s"
    assert format_duration(125) == "2m 05s"
    labels = labels_from_rules(
        {
            "anonymization_tables": [
                {"table": "users", "strategy": "user_anonymization", "translation": "Utilisateurs"}
            ]
        }
    )
    assert labels == {"public.users": "Utilisateurs"}
    text = success_message(
        {"tables": 2, "rows": 1200, "pii_findings": 7, "pii_unmasked": 0, "verification_passed": True,
         "total_duration_s": 754},
        source_app="p", target_app="s",
        tables=[{"table": "public.users", "rows": 1000}, {"table": "public.phones", "rows": 200}],
        labels=labels,
    )  # fmt: skip
    assert "*Staging sync succeeded*" in text and "Tables anonymized: 2 (1200 rows)" in text
    assert "PII findings: 7 (0 unmasked)" in text and "Total time: 12m 34s" in text
    assert "✓ Utilisateurs: 1000 rows anonymized" in text and "✓ public.phones: 200 rows" in text
    assert "Seeds" not in text  # only what happened is claimed
    failure = failure_message("pii_scan", error="PII scan found 2 unmasked column(s)", log_url="http://x/log")
    assert "`pii_scan` (PII scan)" in failure and "<http://x/log|open the task log>" in failure
    report = {"result": "failed", "stopped_at": "verify_anonymization", "target_app": "s",
              "pii_scan": {"unmasked": []}, "verification": {"failures": ["public.users: column public.users.email still holds 3 of 200"]}}  # fmt: skip
    text = report_message(report)
    assert "failed* at Residual-value verification" in text and "public.users.email" in text
    with pytest.raises(ValueError):
        build_event_message("nope")


def test_notify_posts_to_webhook(monkeypatch):
    from scalingo_staging_sync.notifications.slack import notify, send_event

    with SlackReceiver() as slack:
        monkeypatch.setenv("AIRFLOW_CONN_SLACK_UNIT", slack.airflow_conn_json())
        assert notify("slack_unit", "hello")
        assert send_event("slack_unit", "start", conf={"source_app": "a", "target_app": "b"})
        assert not send_event(None, "start")  # no connection: Slack off
        assert slack.texts() == ["hello", ":rocket: *Staging sync started*\n• Source: a → Target: b"]
        assert slack.posts[0].path == "/services/T000/B000/XXX"
        slack.status = 500
        assert notify("slack_unit", "boom") is False  # errors are swallowed, never raised
    assert notify("slack_missing_conn", "x") is False


def test_unproven_cleanup_failure_says_staging_may_hold_unmasked_data_and_keeps_the_command():
    from scalingo_staging_sync.pgconn import PgTarget
    from scalingo_staging_sync.restore.targets import _not_proven

    target = PgTarget(
        host="/a/very/long/socket/directory/" + "x" * 300, port=5432, user="app", dbname="staging"
    )
    error = str(_not_proven(target, "in_place", ConnectionError("too many connections for role")))
    text = failure_message("cleanup", error=error, log_url="http://x/log")
    assert text.startswith(
        ":rotating_light: *Staging sync failed: staging may hold unmasked production data*"
    )
    assert "python -m scalingo_staging_sync.restore.targets recover --mode in_place" in text  # not cut
    assert "trigger the DAG again" in text and "Nothing was promoted" not in text
    ordinary = failure_message("pii_scan", error="x" * 800)
    assert ordinary.startswith(":x: *Staging sync failed*") and "x" * 501 not in ordinary
