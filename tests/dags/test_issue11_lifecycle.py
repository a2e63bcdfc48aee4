"""Issue 11 through real Airflow runs of the reference DAG (dag.test), real embedded PostgreSQL, the fake
Scalingo API over HTTP: the gate refuses before anything is touched (staging snapshot compared, in swap
mode and in place with a role that has Scalingo's grants), cleanup proves its result or fails loudly
(Slack and the audit say so), promote survives a kill, and a dry run lists every check."""

from __future__ import annotations

import json
import secrets
import threading
from pathlib import Path

import pytest
from airflow_helpers import task_states
from reference_helpers import audit_report, drop_employee_rule, run_reference, use_scalingo_role, write_rules

SALT_ENV = "AIRFLOW_VAR_SCALINGO_STAGING_SYNC_SALT"
COMPOSE_PLACEHOLDER = "change-me-to-a-long-random-secret"
UNPROVEN = "staging may hold unmasked production data"

pytestmark = pytest.mark.airflow


# ----------------------------------------------------------------------------------------- fixtures
@pytest.fixture
def box(box, monkeypatch):
    """The sandbox of tests/conftest.py, with a fresh salt and no ``CONTAINER`` in the environment."""
    monkeypatch.setenv(SALT_ENV, secrets.token_urlsafe(48))
    monkeypatch.delenv("CONTAINER", raising=False)
    return box


@pytest.fixture(params=["swap", "in_place"])
def mode(request, box, monkeypatch) -> str:
    if request.param == "in_place":
        use_scalingo_role(box, monkeypatch)
    return request.param


# ----------------------------------------------------------------------------------------- helpers
def snapshot(box) -> dict:
    """The whole staging cluster: every database (and its comment, where promote records its steps),
    every table in it and its exact rows (count and a hash of every row)."""
    from psycopg import sql

    out: dict = {}
    for db, comment in box.staging.execute(
        "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database"
        " WHERE NOT datistemplate ORDER BY 1"
    ):
        content = {}
        with box.staging.connect(db) as conn:
            tables = conn.execute(
                "SELECT table_schema, table_name FROM information_schema.tables"
                " WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
            ).fetchall()
            for schema, name in tables:
                query = sql.SQL(
                    "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {} t"
                ).format(sql.Identifier(schema, name))
                content[f"{schema}.{name}"] = conn.execute(query).fetchone()
        out[db] = {"tables": content, "comment": comment}
    return out


def _failed_checks(report: dict) -> list[str]:
    return [c["name"] for c in report["safety"]["checks"] if not c["passed"]]


def _writes_to_scalingo(box) -> list:
    """Requests that could change anything on Scalingo: scaling, one-off containers, restarts, backups."""
    auth = ("/exchange", "/token")  # tokens are requested with POST, and change nothing
    return [r for r in box.fake.requests if r.method != "GET" and not r.path.endswith(auth)]


def _set_role_limit(box, limit: int) -> None:
    box.staging.execute(f"ALTER ROLE app_user CONNECTION LIMIT {int(limit)}")


# ----------------------------------------------------------------------------------------- the gate
def test_gate_refusals_leave_staging_exactly_as_it_was_then_a_good_run_succeeds(
    dag, box, mode, tmp_path, monkeypatch
):
    """Each refused run fails at the safety gate with staging exactly as it was (every database, table,
    row) and no write to Scalingo (maintenance on: a scaling call would show); then a good run succeeds.
    In in_place mode this is issue 11's "Done when" (no salt, the compose placeholder salt)."""

    def maintenance(rules):
        rules["restore"] = {"mode": "auto", "maintenance": True, "keep_previous": False}

    monkeypatch.setenv("SCALINGO_STAGING_SYNC_RULES", str(write_rules(tmp_path, maintenance)))
    other = "chinook-review"  # an app whose own database is another one of the same server
    box.fake.add_app(other)
    box.fake.add_addon(other, host=box.staging.host, port=box.staging.port, database="review")
    good_salt = secrets.token_urlsafe(48)
    before = snapshot(box)

    seeds_rules = write_rules(
        tmp_path, lambda r: (maintenance(r), r.update(seeds=["seeds/missing.sql"])), "seeds.yaml"
    )
    (tmp_path / "a-file").write_text("not a directory")
    refusals = {  # what: (run conf, environment (None: unset), the one check that must fail)
        "no salt": ({}, {SALT_ENV: None}, "salt_valid"),
        "compose placeholder salt": ({}, {SALT_ENV: COMPOSE_PLACEHOLDER}, "salt_valid"),
        "target app bound to another database": (
            {"target_app": other, "confirm_target": other},
            {},
            "target_app_bound_to_staging",
        ),
        "$APP is the target": (
            {},
            {"APP": box.target_app, "CONTAINER": "web-1"},
            "target_app_not_own_container",
        ),
        "missing seed file": ({}, {"SCALINGO_STAGING_SYNC_RULES": str(seeds_rules)}, "seed_files_readable"),
        "no client tools": (
            {},
            {"SCALINGO_STAGING_SYNC_PG_BIN": str(tmp_path / "no-bin")},
            "pg_client_tools",
        ),
        "download dir not writable": (
            {},
            {"SCALINGO_STAGING_SYNC_DOWNLOAD_DIR": str(tmp_path / "a-file" / "downloads")},
            "download_dir_writable",
        ),
        "unknown backup": ({"backup": "no-such-backup"}, {}, "backup_available"),
    }
    for what, (conf, env, check) in refusals.items():
        with monkeypatch.context() as m:
            for key, value in env.items():
                if value is None:
                    m.delenv(key, raising=False)
                else:
                    m.setenv(key, value)
            dag_run = run_reference(dag, box, **conf)
        states = task_states(dag_run)
        assert str(dag_run.state) == "failed", (what, states)
        assert states["safety_gate"] == "failed", (what, states)
        assert states["fetch_backup"] == "upstream_failed", (what, states)
        assert states["cleanup"] == "success" and states["audit_report"] == "success", (what, states)
        report = audit_report(box, dag_run)
        assert report["result"] == "failed" and report["stopped_at"] == "safety_gate", what
        assert _failed_checks(report) == [check], (what, _failed_checks(report))
        failed = {c["name"]: c["detail"] for c in report["safety"]["checks"] if not c["passed"]}
        assert all(len(detail) > 20 for detail in failed.values()), failed  # each says how to fix it
        assert snapshot(box) == before, f"{what}: staging changed"
        assert not _writes_to_scalingo(box), f"{what}: {_writes_to_scalingo(box)}"
        assert not box.fake.requests_to("/archive"), what
    # no salt value reached the audit
    assert COMPOSE_PLACEHOLDER not in json.dumps(report)

    monkeypatch.setenv(SALT_ENV, good_salt)
    formation = {c["name"]: c["amount"] for c in box.fake.apps[box.target_app].containers}
    dag_run = run_reference(dag, box)
    states = task_states(dag_run)
    assert str(dag_run.state) == "success", states
    report = audit_report(box, dag_run)
    assert report["promotion"]["mode"] == mode
    assert report["cleanup"]["proven"] is True and report["staging_may_hold_unmasked_data"] is False
    emails = box.staging.execute("SELECT email FROM customer", box.staging_db)
    assert len(emails) == 59 and all(e[0].endswith("@example.com") for e in emails)
    assert {c["name"]: c["amount"] for c in box.fake.apps[box.target_app].containers} == formation
    if mode == "in_place":
        assert box.fake.requests_to("/scale"), "maintenance scaled the app (after the gate passed)"


def test_dry_run_is_the_preflight_lists_every_check_and_changes_nothing(dag, box, capfd):
    from scalingo_staging_sync.preflight import CHECKS

    # what an interrupted run left: a scratch database; a dry run reports it and leaves it
    box.staging.execute(f'CREATE DATABASE "{box.staging_db}__incoming"')
    before = snapshot(box)
    dag_run = run_reference(dag, box, dry_run=True, confirm_target=None)
    captured = capfd.readouterr()
    printed = captured.out + captured.err
    states = task_states(dag_run)
    assert states["safety_gate"] == "success", states
    # a dry run reads: it fetches and plans the archive (read only), then stops before the restore
    assert states["fetch_backup"] == "success" and states["dry_run_stop"] == "success", states
    assert states["restore_schema"] == "skipped", states
    report = audit_report(box, dag_run)
    names = [c["name"] for c in report["safety"]["checks"]]
    assert names == ["rules_file_valid", *[c for c in CHECKS if c != "manual_run_confirmed"]]
    assert all(c["passed"] for c in report["safety"]["checks"]), report["safety"]["checks"]
    recovery = report["safety"]["recovery"]
    assert recovery["dry_run"] is True
    assert any("__incoming" in item for item in recovery["found"]), recovery
    assert all(a.startswith("would ") for a in recovery["actions"]), recovery
    assert snapshot(box) == before, "a dry run changed staging"
    assert not _writes_to_scalingo(box)
    assert "DRY RUN (every check passed)" in printed
    for name in names:
        assert f"] {name}: " in printed, f"the dry run did not print check {name}"


# ----------------------------------------------------------------------------------------- cleanup
def test_cleanup_reconnects_while_the_server_refuses_the_role_then_proves_the_wipe(
    dag, box, tmp_path, monkeypatch
):
    use_scalingo_role(box, monkeypatch)
    monkeypatch.setenv("SCALINGO_STAGING_SYNC_RULES", str(write_rules(tmp_path, drop_employee_rule)))
    timers: list[threading.Timer] = []

    def refuse_for_a_while(context):  # the role's connection limit reached while cleanup starts
        _set_role_limit(box, 0)
        timer = threading.Timer(3.0, _set_role_limit, args=(box, -1))
        timer.start()
        timers.append(timer)

    monkeypatch.setattr(dag.get_task("cleanup"), "pre_execute", refuse_for_a_while, raising=False)
    dag_run = run_reference(dag, box)
    for timer in timers:
        timer.join()
    states = task_states(dag_run)
    assert str(dag_run.state) == "failed", states
    assert states["pii_scan"] == "failed" and states["cleanup"] == "success", states
    tables = box.staging.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'", box.staging_db
    )
    assert tables == [], f"unverified production data left in staging: {tables}"
    cleanup = audit_report(box, dag_run)["cleanup"]
    assert cleanup["proven"] is True
    assert cleanup["database"]["wiped"] is True and cleanup["database"]["attempts"] >= 2, cleanup


def test_cleanup_that_cannot_recover_fails_loudly_then_the_next_run_finishes_it(
    dag, box, tmp_path, monkeypatch
):
    from scalingo_staging_sync.testing.slack_receiver import SlackReceiver

    use_scalingo_role(box, monkeypatch)

    def slack_and_unmasked(rules):
        drop_employee_rule(rules)
        rules["slack_conn_id"] = "slack_test"

    monkeypatch.setenv("SCALINGO_STAGING_SYNC_RULES", str(write_rules(tmp_path, slack_and_unmasked)))
    cleanup_task = dag.get_task("cleanup")
    monkeypatch.setattr(cleanup_task, "pre_execute", lambda context: _set_role_limit(box, 0), raising=False)
    monkeypatch.setattr(cleanup_task, "connect_attempts", 3)
    monkeypatch.setattr(cleanup_task, "connect_base_delay_s", 0.2)
    monkeypatch.setattr(cleanup_task, "connect_max_delay_s", 0.5)
    with SlackReceiver() as slack:
        monkeypatch.setenv("AIRFLOW_CONN_SLACK_TEST", slack.airflow_conn_json())
        dag_run = run_reference(dag, box)
        texts = slack.texts()
    _set_role_limit(box, -1)
    states = task_states(dag_run)
    assert str(dag_run.state) == "failed", states
    assert states["cleanup"] == "failed", states  # never swallowed
    assert states["audit_report"] == "success", states
    # staging does hold the unmasked rows: the failure says so, and what to run
    assert box.staging.execute("SELECT count(*) FROM employee", box.staging_db) == [(8,)]
    alarm = [t for t in texts if UNPROVEN in t]
    assert alarm, texts
    assert "`cleanup`" in alarm[0] and "scalingo_staging_sync.restore.targets recover" in alarm[0]
    assert "PGPASSWORD='<password" in alarm[0]  # the command, never the password
    report = audit_report(box, dag_run)
    assert report["staging_may_hold_unmasked_data"] is True
    assert report["cleanup"]["proven"] is False
    assert report["cleanup"]["warning"].startswith(UNPROVEN)
    assert "recover --mode in_place" in report["cleanup"]["database"]["run"]
    assert "cleanup" in report["failed_tasks"]
    from scalingo_staging_sync.audit.writers import safe_filename

    text = (
        Path(box.env["SCALINGO_STAGING_SYNC_AUDIT_DIR"]) / f"{safe_filename(dag_run.run_id)}.txt"
    ).read_text()
    assert "NOT PROVEN: " + UNPROVEN in text

    # the next run's gate finishes the job first (wipes the unverified data), then the run succeeds
    prod_emails = {r[0] for r in box.prod.execute("SELECT email FROM employee", box.source_db)}
    monkeypatch.setattr(cleanup_task, "pre_execute", lambda context: None, raising=False)
    monkeypatch.setenv("SCALINGO_STAGING_SYNC_RULES", str(write_rules(tmp_path, name="good.yaml")))
    dag_run = run_reference(dag, box)
    assert str(dag_run.state) == "success", task_states(dag_run)
    recovery = audit_report(box, dag_run)["safety"]["recovery"]
    assert any("unmasked" in item for item in recovery["found"]), recovery
    assert recovery["wiped"] is True and recovery["proven"] is True
    emails = {r[0] for r in box.staging.execute("SELECT email FROM employee", box.staging_db)}
    assert len(emails) == 8 and not emails & prod_emails


# ----------------------------------------------------------------------------------------- promote
def test_run_killed_after_promotes_first_rename_then_a_new_run_loses_no_copy(dag, box, monkeypatch):
    """The state a kill after the first rename of promote leaves (live renamed aside, the verified
    scratch marked ``promoting`` but not yet in place; the core test's simulation) and no teardown ran
    (the worker died). A new run's gate completes the interrupted promote, then the run succeeds."""
    from scalingo_staging_sync.restore import targets

    db = box.staging_db

    def killed_after_first_rename(context):
        with box.staging.connect("postgres") as conn:
            targets._terminate(conn, db)
            targets._set_marker(conn, f"{db}__incoming", {"state": "promoting", "live": db})
            targets._rename(conn, db, f"{db}__previous")
        raise RuntimeError("worker killed (simulated) after the first rename of promote")

    def worker_dead(context):
        raise RuntimeError("worker killed (simulated): the teardown never ran")

    with monkeypatch.context() as m:
        m.setattr(dag.get_task("promote"), "pre_execute", killed_after_first_rename, raising=False)
        m.setattr(dag.get_task("cleanup"), "pre_execute", worker_dead, raising=False)
        dag_run = run_reference(dag, box)
    assert str(dag_run.state) == "failed"
    databases = {r[0] for r in box.staging.execute("SELECT datname FROM pg_database")}
    assert db not in databases and {f"{db}__incoming", f"{db}__previous"} <= databases
    # no copy lost so far: the old staging in __previous, the verified copy in __incoming
    assert box.staging.execute("SELECT count(*) FROM previous_staging_marker", f"{db}__previous") == [(1,)]
    verified_first = box.staging.execute("SELECT email FROM customer ORDER BY 1", f"{db}__incoming")

    dag_run = run_reference(dag, box)
    states = task_states(dag_run)
    assert str(dag_run.state) == "success", states
    recovery = audit_report(box, dag_run)["safety"]["recovery"]
    assert any("complete the interrupted promote" in a for a in recovery["actions"]), recovery
    databases = {r[0] for r in box.staging.execute("SELECT datname FROM pg_database")}
    assert db in databases and f"{db}__incoming" not in databases
    emails = box.staging.execute("SELECT email FROM customer ORDER BY 1", db)
    assert len(emails) == 59 and all(e[0].endswith("@example.com") for e in emails)
    # the copy the killed run had verified was live until this run's copy replaced it (keep_previous
    # is off in these rules: __previous is dropped only once the new live database exists)
    assert verified_first and f"{db}__previous" not in databases


def test_restore_schema_failing_midway_is_still_proven_clean_and_the_app_scaled_back(
    dag, box, tmp_path, monkeypatch
):
    """restore_schema fails after it marked staging "unmasked" and scaled the app down (in place, a table
    it cannot replace). It pushes no result, yet the cleanup teardown ("auto" after a passed gate, where it
    used to leave the database alone) proves that staging holds nothing unverified, and the app has its
    containers back when the run ends."""
    use_scalingo_role(box, monkeypatch)

    def maintenance(rules):
        rules["restore"] = {"mode": "auto", "maintenance": True, "keep_previous": False}

    monkeypatch.setenv("SCALINGO_STAGING_SYNC_RULES", str(write_rules(tmp_path, maintenance)))
    # an object of another role where the dump creates one: pg_restore fails, after the in-place wipe
    box.staging.execute("CREATE TABLE public.album (note text)", box.staging_db)
    formation = {c["name"]: c["amount"] for c in box.fake.apps[box.target_app].containers}
    dag_run = run_reference(dag, box)
    states = task_states(dag_run)
    assert str(dag_run.state) == "failed", states
    assert states["restore_schema"] == "failed" and states["cleanup"] == "success", states
    assert box.fake.requests_to("/scale"), "maintenance scaled the app down before the restore"
    assert {c["name"]: c["amount"] for c in box.fake.apps[box.target_app].containers} == formation
    cleanup = audit_report(box, dag_run)["cleanup"]
    assert cleanup["proven"] is True and cleanup["database"]["mode"] == "auto", cleanup
    assert cleanup["database"]["state"] == "wiped", cleanup  # read back from the state table: proven
    owned = box.staging.execute(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'public' AND pg_get_userbyid(c.relowner) = 'app_user'",
        box.staging_db,
    )
    assert owned == [(0,)]


def test_gate_refuses_when_it_cannot_reach_staging_to_finish_leftovers(dag, box, monkeypatch):
    """The gate's first step (finish what an earlier run left) needs staging: unreachable, the run is
    refused at no_leftover_state with the reason, never taken for "nothing left"."""
    use_scalingo_role(box, monkeypatch)
    before = snapshot(box)
    _set_role_limit(box, 0)
    try:
        dag_run = run_reference(dag, box)
    finally:
        _set_role_limit(box, -1)
    states = task_states(dag_run)
    assert str(dag_run.state) == "failed" and states["safety_gate"] == "failed", states
    report = audit_report(box, dag_run)
    assert _failed_checks(report) == ["no_leftover_state"], report["safety"]["checks"]
    detail = next(c["detail"] for c in report["safety"]["checks"] if c["name"] == "no_leftover_state")
    assert "finishing what an earlier run left failed" in detail and "app_user" in detail, detail
    assert report["safety"]["recovery"]["attempted"] is True and report["safety"]["recovery"]["error"]
    assert snapshot(box) == before
    assert not _writes_to_scalingo(box)
