"""The reference DAG end to end: real Airflow runs (dag.test), real embedded PostgreSQL 16 production
(Chinook) and staging, the fake Scalingo API over HTTP, the shipped Chinook rules file."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from airflow_helpers import stored_xcom, task_states
from reference_helpers import (
    DAGS,
    audit_report,
    drop_employee_rule,
    run_masked_to_success,
    run_reference,
    use_scalingo_role,
    write_rules,
)

pytestmark = pytest.mark.airflow


def _databases(box) -> set[str]:
    return {r[0] for r in box.staging.execute("SELECT datname FROM pg_database")}


def _previous_staging_intact(box) -> bool:
    rows = box.staging.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'previous_staging_marker'",
        box.staging_db,
    )
    return rows[0][0] == 1


def test_success_swaps_in_an_anonymized_verified_copy(dag, box):
    # every customer masked, untouched data (invoice_line) copied as is
    dag_run, prod_customers = run_masked_to_success(dag, box)
    # constraints and indexes came back after masking
    fks = box.staging.execute(
        "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND connamespace = 'public'::regnamespace",
        box.staging_db,
    )[0][0]
    assert fks >= 10
    # the previous staging copy was replaced and no scratch database is left
    assert not _previous_staging_intact(box)
    assert not any(name.endswith("__incoming") for name in _databases(box))
    # no seeds in this run: the gate skipped run_seeds, and promote still ran; post_sync_commands is
    # never skipped beforehand (it carries a failure before it into the run's state)
    states = task_states(dag_run)
    assert states["run_seeds"] == "skipped" and states["post_sync_commands"] == "success", states
    assert states["promote"] == "success" and states["cleanup"] == "success", states

    # the backup the preflight checked ("latest" then) is pinned by id, and it is the one fetched
    checked = stored_xcom(dag_run, "safety_gate", "preflight")["facts"]["backup"]["id"]
    assert stored_xcom(dag_run, "safety_gate", "settings")["backup"] == checked
    assert stored_xcom(dag_run, "fetch_backup")["backup_id"] == checked

    report = audit_report(box)
    assert report["result"] == "success"
    assert report["cleanup"]["database"]["wiped"] is False  # promoted: nothing to wipe, recorded
    assert [p["task_id"] for p in report["phases"]][-1] == "cleanup"
    assert {t["table"] for t in report["tables"]} == {"public.customer", "public.employee", "public.invoice"}
    assert all(t["verification"]["passed"] for t in report["tables"])
    assert report["pii_scan"]["counts"]["unmasked"] == 0
    text = json.dumps(report)
    for original in prod_customers[:5]:
        assert original[3] not in text  # no raw e-mail of production in the audit


def test_dry_run_prints_the_plan_and_skips_everything(dag, box):
    dag_run = run_reference(dag, box, dry_run=True, confirm_target=None)  # a dry run needs no confirmation
    states = task_states(dag_run)
    assert states["safety_gate"] == "success"
    # the dry run reads and plans the archive (read only), then stops before anything is restored
    assert states["fetch_backup"] == "success" and states["plan_anonymization"] == "success"
    assert states["dry_run_stop"] == "success"
    skipped = {t for t, s in states.items() if s == "skipped"}
    assert {"restore_schema", "load_data", "promote", "pii_scan"} <= skipped
    assert states["cleanup"] == "success" and states["audit_report"] == "success"
    assert _previous_staging_intact(box)
    assert _databases(box) == {"postgres", "template0", "template1", box.staging_db}
    assert not [r for r in box.fake.requests_to("/backups") if r.method == "POST"], "no new backup asked"
    downloads = Path(box.env["SCALINGO_STAGING_SYNC_DOWNLOAD_DIR"])
    assert not downloads.exists() or not any(downloads.rglob("*.pgsql")), "cleanup removes the download"
    report = audit_report(box)
    assert report["dry_run"] is True
    assert report["classification"]["summary"]["masked"] >= 3


def test_production_looking_target_fails_and_touches_nothing(dag, box, monkeypatch):
    monkeypatch.setenv("APP", "shop-production")
    dag_run = run_reference(dag, box, confirm_target="shop-production", target_app="shop-production")
    states = task_states(dag_run)
    assert str(dag_run.state) == "failed"
    assert states["safety_gate"] == "failed"
    assert states["fetch_backup"] == "upstream_failed"
    assert _previous_staging_intact(box)
    # the preflight only read (backup lookup); nothing was created or downloaded
    assert not [r for r in box.fake.requests_to("/backups") if r.method != "GET"]
    assert not box.fake.requests_to("/archive")
    # the refused run still leaves an audit that names the failed check
    report = audit_report(box)
    assert report["result"] != "success"
    failed = [c["name"] for c in report["safety"]["checks"] if not c["passed"]]
    assert "target_app_not_production" in failed


def test_wrong_confirmation_fails(dag, box):
    dag_run = run_reference(dag, box, confirm_target="someone-else")
    assert str(dag_run.state) == "failed"
    assert task_states(dag_run)["safety_gate"] == "failed"
    assert _previous_staging_intact(box)


def test_pii_gate_failure_keeps_previous_staging_and_leaves_no_scratch(dag, box, tmp_path, monkeypatch):
    monkeypatch.setenv("SCALINGO_STAGING_SYNC_RULES", str(write_rules(tmp_path, drop_employee_rule)))
    dag_run = run_reference(dag, box)
    states = task_states(dag_run)
    assert str(dag_run.state) == "failed", states
    assert states["pii_scan"] == "failed", states
    assert states["promote"] == "upstream_failed"
    assert states["cleanup"] == "success"
    assert _previous_staging_intact(box)
    assert not any(name.endswith("__incoming") for name in _databases(box))
    report = audit_report(box)
    assert report["result"] != "success"
    unmasked = report["pii_scan"]["unmasked"]
    assert any(c.startswith("public.employee.") for c in unmasked), unmasked
    assert "pii_scan" in (report.get("stopped_at") or "") or "pii_scan" in report.get("failed_tasks", [])


def test_invalid_params_are_rejected_before_the_run(dag, box):
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):
        dag.test(run_conf={"dry_run": "yes please"})
    with pytest.raises(ParamValidationError):
        dag.test(run_conf={"exclude_tables": "invoice"})
    assert _previous_staging_intact(box)


def test_dag_parsing_is_cheap_and_reads_nothing(tmp_path):
    """Parse the DAG file in a fresh interpreter with no connections, a missing rules file and the
    network made unusable: it must import without touching any of them, quickly."""
    probe = textwrap.dedent(
        f"""
        import os, socket, time, builtins
        os.environ["SCALINGO_STAGING_SYNC_RULES"] = "/nonexistent/rules.yaml"
        opened = []
        real_open = builtins.open
        def spy_open(file, *a, **k):
            opened.append(str(file))
            return real_open(file, *a, **k)
        def no_network(*a, **k):
            raise AssertionError("network access while parsing the DAG")
        socket.socket.connect = no_network
        from airflow.sdk import DAG  # Airflow's own import cost is not the DAG's
        import scalingo_staging_sync.operators  # noqa: F401
        builtins.open = spy_open
        started = time.perf_counter()
        import importlib.util
        spec = importlib.util.spec_from_file_location("ref_dag", {str(DAGS / "scalingo_staging_sync.py")!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        elapsed = time.perf_counter() - started
        builtins.open = real_open
        read = [f for f in opened if f.endswith((".yaml", ".yml", ".json", ".sql", ".pgsql"))]
        print(elapsed, len(module.dag.tasks), read)
        """
    )
    out = (
        subprocess.run(
            [sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            check=True,
            env={**__import__("os").environ, "AIRFLOW_HOME": str(tmp_path)},
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    elapsed, n_tasks, read = out.split(" ", 2)
    assert int(n_tasks) == 18
    assert read == "[]"
    assert float(elapsed) < 5.0  # generous bound for a loaded CI machine; typically well under 1 s


def test_dag_parsing_imports_only_what_the_tasks_are_built_from(tmp_path):
    """Every task process parses the DAG file again (under the LocalExecutor, once per task): the
    modules a task needs only when it runs (the PII scanner and its detectors, the audit, the archive
    extraction, the anonymize and restore cores, the database and HTTP libraries) are imported by that
    task's ``execute``, not by the parse (they made it about 25 ms longer)."""
    probe = textwrap.dedent(
        f"""
        import sys
        from airflow.sdk import DAG  # noqa: F401
        before = set(sys.modules)
        import runpy
        runpy.run_path({str(DAGS / "scalingo_staging_sync.py")!r})
        print(" ".join(sorted(set(sys.modules) - before)))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env={**__import__("os").environ, "AIRFLOW_HOME": str(tmp_path)},
    ).stdout.split()
    assert "scalingo_staging_sync.operators.pii_scan" in out  # the probe saw the parse
    not_at_parse = (
        "scalingo_staging_sync.pii.scanner",
        "scalingo_staging_sync.pii.detectors",
        "scalingo_staging_sync.audit",
        "scalingo_staging_sync.scalingo.archive",
        "scalingo_staging_sync.anonymize",
        "scalingo_staging_sync.restore",
        "psycopg",
        "pglast",
        "duckdb",
        "requests",
        "pydantic",
    )
    assert [m for m in out if m.startswith(not_at_parse)] == []


@pytest.fixture
def scalingo_like_role(box, monkeypatch):
    """Staging reached with a role granted what a Scalingo Shared Resources addon grants: no CREATEDB,
    not the database owner, ALL on the database and CREATE on public; the app's own tables are its."""
    return use_scalingo_role(box, monkeypatch)


def _maintenance_rules(tmp_path, mutate=None):
    def change(rules):
        rules["restore"] = {"mode": "auto", "maintenance": True, "keep_previous": False}
        if mutate:
            mutate(rules)

    return write_rules(tmp_path, change)


def _formation(box) -> dict[str, int]:
    return {c["name"]: c["amount"] for c in box.fake.apps[box.target_app].containers}


def test_in_place_with_scalingo_grants_and_maintenance(dag, box, scalingo_like_role, tmp_path, monkeypatch):
    before = _formation(box)
    monkeypatch.setenv("SCALINGO_STAGING_SYNC_RULES", str(_maintenance_rules(tmp_path)))
    dag_run = run_reference(dag, box)
    states = task_states(dag_run)
    assert str(dag_run.state) == "success", states
    report = audit_report(box)
    assert report["promotion"]["mode"] == "in_place"
    emails = box.staging.execute("SELECT email FROM customer", box.staging_db)
    assert len(emails) == 59 and all(e[0].endswith("@example.com") for e in emails)
    assert not any(name.endswith("__incoming") for name in _databases(box))
    scale_bodies = [r for r in box.fake.requests_to("/scale")]
    assert len(scale_bodies) >= 2, "maintenance scales the app down, then back"
    assert _formation(box) == before


def test_in_place_failure_wipes_unmasked_data_and_restores_the_app(
    dag, box, scalingo_like_role, tmp_path, monkeypatch
):
    before = _formation(box)
    monkeypatch.setenv("SCALINGO_STAGING_SYNC_RULES", str(_maintenance_rules(tmp_path, drop_employee_rule)))
    dag_run = run_reference(dag, box)
    states = task_states(dag_run)
    assert str(dag_run.state) == "failed", states
    assert states["pii_scan"] == "failed" and states["cleanup"] == "success"
    tables = box.staging.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'", box.staging_db
    )
    assert tables == [], f"unverified production data left in staging: {tables}"
    assert _formation(box) == before
    # the audit is written after cleanup and records its outcome
    cleanup = audit_report(box)["cleanup"]["database"]
    assert cleanup["wiped"] is True and cleanup["mode"] == "in_place"


def _run_with_slack(dag, box, tmp_path, monkeypatch, mutate):
    """A run with the rules changed by ``mutate`` and Slack messages posted to a local webhook recorder
    (connection ``slack_test``); returns the run and the texts posted."""
    from scalingo_staging_sync.testing.slack_receiver import SlackReceiver

    def with_slack(rules):
        mutate(rules)
        rules["slack_conn_id"] = "slack_test"

    monkeypatch.setenv("SCALINGO_STAGING_SYNC_RULES", str(write_rules(tmp_path, with_slack)))
    with SlackReceiver() as slack:
        monkeypatch.setenv("AIRFLOW_CONN_SLACK_TEST", slack.airflow_conn_json())
        dag_run = run_reference(dag, box)
        texts = slack.texts()
    return dag_run, texts


def test_seeds_post_sync_commands_and_slack(dag, box, tmp_path, monkeypatch):
    (tmp_path / "seeds").mkdir()
    (tmp_path / "seeds" / "demo_user.sql").write_text(
        "INSERT INTO employee (employee_id, last_name, first_name, email) "
        "VALUES (1000, 'Demo', 'Admin', 'admin@example.com');"
    )

    def options(rules):
        rules["seeds"] = ["seeds/demo_user.sql"]
        rules["post_sync_commands"] = ["bundle exec rails db:migrate"]

    dag_run, texts = _run_with_slack(dag, box, tmp_path, monkeypatch, options)
    assert str(dag_run.state) == "success", task_states(dag_run)
    states = task_states(dag_run)
    assert states["run_seeds"] == "success" and states["post_sync_commands"] == "success", states
    # seeds ran on the anonymized copy before it was promoted
    assert box.staging.execute(
        "SELECT first_name FROM employee WHERE employee_id = 1000", box.staging_db
    ) == [("Admin",)]
    # post-sync commands ran as detached one-off containers in the target app
    assert [r["command"] for r in box.fake.runs] == ["bundle exec rails db:migrate"]
    assert all(r["detached"] for r in box.fake.runs)
    [outcome] = stored_xcom(dag_run, "post_sync_commands")
    assert outcome["command"] == "bundle exec rails db:migrate"
    assert outcome["result"]["status"] == "done" and outcome["result"]["container_id"].startswith("ct-")
    assert outcome["result"]["operation_id"]
    # Slack: start, phases with durations, success summary with the per-table labels
    joined = "\n".join(texts)
    assert box.target_app in texts[0]
    assert any(t.startswith(":white_check_mark: Backup download done in ") for t in texts)
    assert any("PII scan done in" in t for t in texts)
    assert "succeeded" in texts[-1] and "Tables anonymized: 3" in texts[-1]
    assert "Customers: 59 rows" in joined  # translation label of public.customer


def test_failure_message_names_the_task_and_links_its_log(dag, box, tmp_path, monkeypatch):
    dag_run, texts = _run_with_slack(dag, box, tmp_path, monkeypatch, drop_employee_rule)
    assert str(dag_run.state) == "failed"
    failure = [t for t in texts if "pii_scan" in t]
    assert failure, texts
    assert "http" in failure[0]  # link to the task log


def test_missing_rules_file_refuses_the_run(dag, box, tmp_path, monkeypatch):
    monkeypatch.setenv("SCALINGO_STAGING_SYNC_RULES", str(tmp_path / "nope.yaml"))
    dag_run = run_reference(dag, box)
    assert str(dag_run.state) == "failed"
    assert task_states(dag_run)["safety_gate"] == "failed"
    assert _previous_staging_intact(box)
    assert not box.fake.requests_to("/backups")


_FINGERPRINTS = {
    "customer": "SELECT count(*), md5(string_agg(x::text, '|' ORDER BY 1)) FROM customer x",
    "employee": "SELECT count(*), md5(string_agg(x::text, '|' ORDER BY 1)) FROM employee x",
    "invoice": "SELECT count(*), md5(string_agg(x::text, '|' ORDER BY 1)) FROM invoice x",
}


def _staged_tables(box) -> dict[str, tuple]:
    return {t: box.staging.execute(q, box.staging_db)[0] for t, q in _FINGERPRINTS.items()}


def test_stream_and_trigger_engines_stage_the_same_bytes(dag, box, monkeypatch):
    """The default engine masks Chinook's on-load tables on the worker (DuckDB is installed here); the
    trigger engine, chosen in the config section, gives the same staging tables, byte for byte."""
    dag_run, _prod = run_masked_to_success(dag, box)
    load = stored_xcom(dag_run, "load_data")
    assert stored_xcom(dag_run, "safety_gate", "settings")["masking_engine"] == "auto"
    assert "public.customer" in load["masked_on_worker"], load.get("masked_on_worker")
    engines = {t["table"]: t["engine"] for t in audit_report(box, dag_run)["tables"]}
    assert engines["public.customer"] == "stream", engines
    streamed = _staged_tables(box)

    monkeypatch.setenv("AIRFLOW__SCALINGO_STAGING_SYNC__MASKING_ENGINE", "trigger")
    dag_run, _prod = run_masked_to_success(dag, box)
    assert stored_xcom(dag_run, "safety_gate", "settings")["masking_engine"] == "trigger"
    assert "masked_on_worker" not in stored_xcom(dag_run, "load_data")
    report = audit_report(box, dag_run)
    assert {t["engine"] for t in report["tables"] if t["mode"] == "on_load"} == {"trigger"}
    assert _staged_tables(box) == streamed
    assert all(count > 0 for count, _digest in streamed.values())


def test_every_task_that_runs_the_postgresql_tools_is_given_the_pg_bin_dir_setting():
    """``[scalingo_staging_sync] pg_bin_dir`` reaches every task with a ``pg_bin_dir`` argument: a task
    left without it runs whatever ``pg_restore`` is first on the worker's PATH (an older one fails on
    the archive, after the gate checked the configured tools)."""
    from scalingo_staging_sync.example_dags.reference import build_reference_dag, setting

    dag = build_reference_dag()
    expected = setting("pg_bin_dir")
    with_tools = [t for t in dag.tasks if "pg_bin_dir" in t.template_fields]
    assert {t.task_id for t in with_tools} >= {"plan_anonymization", "prepare_masking", "restore_schema"}
    wrong = {
        t.task_id: value
        for t in with_tools
        if (value := (t.partial_kwargs if hasattr(t, "partial_kwargs") else vars(t)).get("pg_bin_dir"))
        != expected
    }
    assert not wrong, f"tasks not given the pg_bin_dir setting: {wrong}"


def test_a_run_with_no_masked_table_verifies_nothing_and_passes(dag, box, tmp_path, monkeypatch):
    """No table masked (the mapped masking tasks are skipped): verification is given [] and passes; it
    refuses only None, what a misspelt task id gives."""

    def nothing_masked(rules):
        rules["anonymization_tables"] = []
        rules["pii_scan"] = {"enabled": False}

    monkeypatch.setenv("SCALINGO_STAGING_SYNC_RULES", str(write_rules(tmp_path, nothing_masked)))
    dag_run = run_reference(dag, box)
    states = task_states(dag_run)
    assert states["verify_anonymization"] == "success", states
    assert stored_xcom(dag_run, "verify_anonymization")["tables"] == []
