"""Audit report: content, files, atomic writes, no secrets and no raw PII."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from scalingo_staging_sync.audit import build_and_write_report, build_report, safe_filename, write_report
from scalingo_staging_sync.secrets import mask_secret

RAW_EMAIL = "alice.martin@gmail.com"
PASSWORD = "s3cr3t-db-password-xyz"
TOKEN = "tk-us-abcdefghijklmnopqrstuvwxyz"
SALT = "salt-very-secret-123456"


def _inputs():
    mask_secret(TOKEN)
    return dict(
        run_id="manual__2026-11-26T04:09:45.123+00:00",
        dag_id="scalingo_staging_sync",
        settings={
            "source_app": "my-prod",
            "target_app": "my-staging",
            "rules_sha256": "ab" * 32,
            "password": PASSWORD,
            "salt": SALT,
            "checks": [
                {"name": "target_not_production", "passed": True, "detail": "my-staging is not production"}
            ],
        },
        backup={
            "id": "bk-1",
            "created_at": "2026-11-26T01:00:00Z",
            "size": 123456,
            "sha256": "cd" * 32,
            "pg_version": "16.4",
            "download_url": f"https://s3.example/bk?X-Amz-Signature={TOKEN}",
            "dump_path": "/tmp/x.pgsql",
        },
        restore={
            "restore_schema": {"database": "app__incoming", "conninfo": f"password={PASSWORD}"},
            "load_data": {"table_rows": {"public.customer": 59, "invoice": 412}},
        },
        plan=[
            {
                "table": "public.customer",
                "schema": "public",
                "name": "customer",
                "mode": "on_load",
                "columns": {"email": {"transformer": "email", "domain": "example.com"}},
                "strategy": None,
                "condition": f"email <> '{RAW_EMAIL}'",
                "query": None,
                "masked_columns": ["email"],
            }
        ],
        tables=[
            {
                "table": "public.customer",
                "mode": "on_load",
                "rows": 59,
                "duration_s": 0.4,
                "masked_columns": ["email"],
                "proof": {
                    "algorithm": "hmac-sha256/128",
                    "key_columns": ["customer_id"],
                    "rows": [{"key": ["1"], "values": {"email": "f" * 32}}],
                },
            }
        ],  # fmt: skip
        pii={
            "passed": False,
            "on_unmasked": "fail",
            "tables_scanned": 12,
            "columns_scanned": 64,
            "rows_sampled": 3000,
            "counts": {"masked": 1, "allowed": 0, "unmasked": 1},
            "unmasked": ["public.employee.email"],
            "findings": [
                {
                    "schema": "public",
                    "table": "employee",
                    "column": "email",
                    "column_id": "public.employee.email",
                    "severity": "high",
                    "reason": "name:contact.email",
                    "status": "unmasked",
                    "sample_count": 8,
                    "sampled_values": 8,
                    "values": [RAW_EMAIL],
                },
            ],
        },  # fmt: skip
        verification={
            "passed": True,
            "failures": [],
            "tables": [
                {
                    "table": "public.customer",
                    "passed": True,
                    "rows_found": 59,
                    "keys_sampled": 1,
                    "keys_found": 1,
                    "columns": {"email": {"checked": 1, "survived": 0}},
                    "problems": [],
                }
            ],
        },  # fmt: skip
        task_states={
            "safety_gate": "success",
            "restore_schema": "success",
            "pii_scan": "failed",
            "promote": "upstream_failed",
        },
        phase_durations={"safety_gate": 1.5, "restore_schema": 12.25, "pii_scan": 2.0},
        phases=("safety_gate", "restore_schema", "pii_scan", "promote"),
        labels={"public.customer": "Customers"},
        generated_at=datetime(2026, 11, 26, 5, 0, tzinfo=timezone.utc),
    )


def test_report_content():
    report = build_report(**_inputs())
    assert report["result"] == "failed" and report["stopped_at"] == "pii_scan"
    assert report["failed_tasks"] == ["pii_scan"]  # promote did not run: it is not a failed task
    assert report["upstream_failed_tasks"] == ["promote"]
    assert report["backup"] == {
        "id": "bk-1",
        "created_at": "2026-11-26T01:00:00Z",
        "size": 123456,
        "sha256": "cd" * 32,
        "pg_version": "16.4",
    }
    assert report["rules"]["sha256"] == "ab" * 32
    assert report["safety"]["passed"] is True
    table = report["tables"][0]
    assert table["rows"] == 59 and table["rows_restored"] == 59 and table["label"] == "Customers"
    assert table["rules"]["columns"] == {"email": "email"} and table["rules"]["has_condition"] is True
    assert table["verification"]["passed"] is True
    assert report["pii_scan"]["findings"][0]["column"] == "public.employee.email"
    assert report["phases"][1] == {"task_id": "restore_schema", "state": "success", "duration_s": 12.25}
    assert report["summary"]["total_duration_s"] == 15.75
    assert report["summary"]["pii_unmasked"] == 1


def test_success_result():
    inputs = _inputs()
    inputs["task_states"] = {k: "success" for k in inputs["task_states"]}
    inputs["pii"]["passed"] = True
    assert build_report(**inputs)["result"] == "success"


def test_files_written_atomically_without_secrets_or_pii(tmp_path):
    report = build_and_write_report(audit_dir=tmp_path / "audit", **_inputs())
    json_path, text_path = report["files"]["json"], report["files"]["text"]
    assert json_path.endswith("manual__2026-11-26T04_09_45.123_00_00.json")
    assert text_path.endswith("manual__2026-11-26T04_09_45.123_00_00.txt")
    assert sorted(p.name for p in (tmp_path / "audit").iterdir()) == [
        "manual__2026-11-26T04_09_45.123_00_00.json",
        "manual__2026-11-26T04_09_45.123_00_00.txt",
    ]  # no temp file left
    json_text = open(json_path, encoding="utf-8").read()
    text = open(text_path, encoding="utf-8").read()
    assert json.loads(json_text)["run_id"] == "manual__2026-11-26T04:09:45.123+00:00"
    assert "AUDIT REPORT" in text and "RESULT:         FAILED (stopped at pii_scan)" in text
    assert "UNMASKED  high   public.employee.email" in text
    for content in (json_text, text, json.dumps(report)):
        for secret in (RAW_EMAIL, PASSWORD, TOKEN, SALT, "f" * 32, "X-Amz-Signature", "/tmp/x.pgsql"):
            assert secret not in content


def test_default_dir_from_env_and_overwrite(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALINGO_STAGING_SYNC_AUDIT_DIR", str(tmp_path / "env-audit"))
    report = build_report(run_id="scheduled/../../etc", settings={})
    files = write_report(report)
    assert files["json"] == str(tmp_path / "env-audit" / "scheduled_.._.._etc.json")
    files = write_report(report)  # rewriting the same run replaces, never appends or collides
    assert json.loads(open(files["json"]).read())["run_id"] == "scheduled/../../etc"
    assert safe_filename("") == "run" and safe_filename("...") == "run"
    monkeypatch.delenv("SCALINGO_STAGING_SYNC_AUDIT_DIR")
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    assert write_report(report)["text"].startswith(str(tmp_path / "home" / "scalingo_staging_sync" / "audit"))


def test_masked_columns_named_like_secrets_stay_in_the_report():
    """Secret-looking keys are dropped from the report, but the keys of a ``columns`` mapping are column
    names: users.encrypted_password and reset_password_token vanished from the rules and the verification
    of their table, so an auditor could not see what masked them or whether they were checked."""
    from scalingo_staging_sync.audit.report import scrub

    table = {
        "table": "public.users",
        "rules": {"columns": {"encrypted_password": {"transformer": "hash"}, "reset_password_token": None}},
        "verification": {"columns": {"encrypted_password": {"checked": 200, "survived": 0}}},
        "password": "s3cret",
        "query": "UPDATE users SET x = 1",
    }
    out = scrub({"tables": [table]})["tables"][0]
    assert out["rules"]["columns"] == {
        "encrypted_password": {"transformer": "hash"},
        "reset_password_token": None,
    }
    assert out["verification"]["columns"] == {"encrypted_password": {"checked": 200, "survived": 0}}
    assert "password" not in out and "query" not in out  # the report's own secret-looking fields still go
