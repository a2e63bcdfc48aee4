"""Task callables of the reference DAG (``dags/scalingo_staging_sync.py``): thin Airflow adapters.

Each function reads the Airflow context (params, XCom of earlier tasks, connections), calls the core,
and returns a small JSON-serialisable value. Imports of the core happen inside the functions, so
parsing the DAG stays cheap. The DAG's run settings are resolved once, by ``safety_gate``, and every
later task reads them from its XCom (``settings()``).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

GATE_TASK = "safety_gate"
BACKUP_TASK = "fetch_backup"
SCHEMA_TASK = "restore_schema"
PLAN_TASK = "plan_anonymization"
PREPARE_TASK = "prepare_masking"
ANONYMIZE_TASK = "anonymize_table"
DATA_TASK = "load_data"
POST_DATA_TASK = "restore_post_data"
PII_TASK = "pii_scan"
VERIFY_TASK = "verify_anonymization"
SEEDS_TASK = "run_seeds"
PROMOTE_TASK = "promote"
COMMANDS_TASK = "post_sync_commands"
AUDIT_TASK = "audit_report"
CLEANUP_TASK = "cleanup"
PHASES = (
    GATE_TASK,
    BACKUP_TASK,
    SCHEMA_TASK,
    PLAN_TASK,
    PREPARE_TASK,
    DATA_TASK,
    ANONYMIZE_TASK,
    POST_DATA_TASK,
    PII_TASK,
    VERIFY_TASK,
    SEEDS_TASK,
    PROMOTE_TASK,
    COMMANDS_TASK,
)
DOWNLOAD_DIR_ENV = "SCALINGO_STAGING_SYNC_DOWNLOAD_DIR"


class RunConfigurationError(ValueError):
    """A param or setting of the run is wrong; raised before anything is touched."""


# ----------------------------------------------------------------------------- context helpers
def _context() -> dict:
    from airflow.sdk import get_current_context

    return get_current_context()


def _pull(task_id: str, key: str = "return_value", context: dict | None = None) -> Any:
    ctx = context or _context()
    return ctx["ti"].xcom_pull(task_ids=task_id, key=key)


def settings(context: dict | None = None) -> dict:
    """The run settings resolved by the safety gate."""
    value = _pull(GATE_TASK, key="settings", context=context)
    if not isinstance(value, dict):
        raise RunConfigurationError("the safety gate did not record run settings; did it run and pass?")
    return value


def _merge_excludes(rule_excludes: list[str], param_excludes: list[str]) -> list[str]:
    merged: list[str] = []
    for name in [*rule_excludes, *param_excludes]:
        name = name.strip()
        if name and name not in merged:
            merged.append(name)
    return merged


# ----------------------------------------------------------------------------- 1. safety gate
def resolve_settings(params: dict, rules: Any, rules_path: Path, run_id: str) -> dict:
    """Everything later tasks need, from params (first), the rules file, and the environment."""
    source_app = (params.get("source_app") or rules.source_app or "").strip() or None
    target_app = (params.get("target_app") or rules.target_app or os.environ.get("APP") or "").strip() or None
    backup = str(params.get("backup") or "latest").strip()
    restore = rules.restore
    download_root = os.environ.get(DOWNLOAD_DIR_ENV) or str(
        Path(tempfile.gettempdir()) / "scalingo_staging_sync"
    )
    safe_run = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)
    return {
        "source_app": source_app,
        "target_app": target_app,
        "backup": backup,
        "addon_id": None,
        "dry_run": bool(params.get("dry_run")),
        "rules_file": str(rules_path),
        "rules_sha256": rules.sha256,
        "exclude_tables": _merge_excludes(
            list(rules.exclude_tables), list(params.get("exclude_tables") or [])
        ),
        "download_dir": str(Path(download_root) / safe_run),
        "restore_mode": restore.get("mode", "auto"),
        "keep_previous": bool(restore.get("keep_previous", True)),
        "restore_jobs": restore.get("jobs"),
        "maintenance": bool(restore.get("maintenance", False)),
        "parallel_connections": int(rules.parallel_connections),
        "retry_attempts": int(rules.retry.get("attempts", 3)),
        "retry_base_delay_s": float(rules.retry.get("base_delay_s", 1.0)),
        "email_domain": rules.email_domain,
        "pii_enabled": bool(rules.pii_scan.get("enabled", True)),
        "pii_allow": list(rules.pii_scan.get("allow", [])),
        "pii_on_unmasked": rules.pii_scan.get("on_unmasked", "fail"),
        "pii_patterns": rules.pii_scan.get("patterns") or {},
        "pii_sample_rows": int(rules.pii_scan.get("sample_rows", 1000)),
        "verification_enabled": bool(rules.verification.get("enabled", True)),
        "seeds": list(rules.seeds),
        "post_sync_commands": list(rules.post_sync_commands),
        "slack_conn_id": params.get("slack_conn_id") or rules.slack_conn_id,
        "translations": {
            entry.get("table"): entry.get("translation")
            for entry in rules.raw.get("anonymization_tables", [])
            if entry.get("translation")
        },
        "audit_dir": rules.audit_dir,
        "started_at": time.time(),
    }


def safety_gate(scalingo_conn_id: str = "scalingo_default", staging_conn_id: str = "staging_db", **_: Any):
    """Short-circuit gate: fails the run on any failed check; returns False on a dry run (all skipped)."""
    from scalingo_staging_sync import safety
    from scalingo_staging_sync.anonymize.rules import load_rules, resolve_rules_path
    from scalingo_staging_sync.hooks.postgres import pg_target_from_connection

    ctx = _context()
    params = dict(ctx["params"])
    dag_run = ctx["dag_run"]
    checks: list[safety.CheckResult] = []

    try:
        rules_path = (
            resolve_rules_path((params.get("rules_file") or "").strip() or None).expanduser().resolve()
        )
        rules = load_rules(rules_path)
        checks.append(safety.CheckResult("rules_file_valid", True, f"{rules_path} is valid"))
    except Exception as exc:
        checks.append(safety.CheckResult("rules_file_valid", False, str(exc)))
        _log_checks(checks)
        safety.enforce(checks)
        raise  # pragma: no cover - enforce always raises here

    conf = resolve_settings(params, rules, rules_path, dag_run.run_id)
    ctx["ti"].xcom_push(key="settings", value=conf)
    patterns = rules.production_patterns
    checks.append(safety.check_target_app_not_production(conf["target_app"], patterns["apps"]))

    try:
        target = pg_target_from_connection(staging_conn_id)
        target_host = target.host
    except Exception as exc:
        target, target_host = None, None
        checks.append(safety.CheckResult("staging_connection_readable", False, str(exc)))
    checks.append(safety.check_target_host_not_production(target_host, patterns["hosts"]))

    resource_ids: list[str] = []
    addon: dict = {}
    if conf["source_app"]:
        try:
            from scalingo_staging_sync.hooks.scalingo import ScalingoHook

            addon = ScalingoHook(scalingo_conn_id=scalingo_conn_id).get_postgresql_addon(conf["source_app"])
            resource_ids = [str(addon[k]) for k in ("resource_id", "id") if addon.get(k)]
            conf["addon_id"] = addon.get("id")
            checks.append(
                safety.CheckResult(
                    "source_addon_found",
                    True,
                    f"source app {conf['source_app']!r} has addon {addon.get('id')!r}",
                )
            )
        except Exception as exc:
            checks.append(safety.CheckResult("source_addon_found", False, f"{type(exc).__name__}: {exc}"))
    checks.append(
        safety.check_target_is_not_source(conf["source_app"], conf["target_app"], target_host, resource_ids)
    )
    run_is_manual = str(getattr(dag_run, "run_type", "")).lower().endswith("manual")
    checks.append(
        safety.check_confirmation(
            run_is_manual, bool(rules.require_confirmation), params.get("confirm_target"), conf["target_app"]
        )
    )
    _log_checks(checks)
    conf["checks"] = [c.to_dict() for c in checks]
    ctx["ti"].xcom_push(key="settings", value=conf)
    safety.enforce(checks)
    _notify(conf, "start", conf=conf, run_id=dag_run.run_id)

    if conf["dry_run"]:
        _print_dry_run_plan(conf, rules, scalingo_conn_id, target, addon)
        return False
    return conf


def _log_checks(checks: list) -> None:
    for check in checks:
        log.info("safety check %-28s %s  %s", check.name, "PASS" if check.passed else "FAIL", check.detail)


def _print_dry_run_plan(conf: dict, rules: Any, scalingo_conn_id: str, target: Any, addon: dict) -> None:
    backup_desc = conf["backup"]
    if conf["backup"] == "latest" and addon:
        try:
            from scalingo_staging_sync.hooks.scalingo import ScalingoHook

            backup = ScalingoHook(scalingo_conn_id=scalingo_conn_id).latest_done_backup(
                conf["source_app"], addon["id"]
            )
            backup_desc = f"latest done backup {backup.get('id')} ({backup.get('created_at')}, {backup.get('size')} bytes)"
        except Exception as exc:  # a dry run reports, it does not fail on a lookup
            backup_desc = f"latest done backup (lookup failed: {exc})"
    mode = conf["restore_mode"]
    if target is not None and mode == "auto":
        try:
            from scalingo_staging_sync.restore.targets import resolve_mode

            mode = f"auto -> {resolve_mode(target, 'auto')}"
        except Exception as exc:
            mode = f"auto (could not check the role: {exc})"
    lines = [
        "DRY RUN: nothing will be changed. The run would:",
        f"  take backup: {backup_desc} of app {conf['source_app']!r}",
        f"  restore into: {target.describe() if target else '?'} (mode {mode})",
        f"  exclude data of: {conf['exclude_tables'] or 'nothing'}",
        "  anonymize:",
    ]
    for index, entry in enumerate(rules.raw.get("anonymization_tables", [])):
        how = (
            f"strategy {entry['strategy']}"
            if entry.get("strategy")
            else "inline query"
            if entry.get("query")
            else f"columns {sorted((entry.get('columns') or {}).keys())}"
        )
        cond = f" where ({entry['condition']})" if entry.get("condition") else ""
        lines.append(f"    [{index}] {entry.get('table')}: {how}{cond}")
    lines.append(
        f"  PII scan: {'on, ' + conf['pii_on_unmasked'] + ' on unmasked' if conf['pii_enabled'] else 'off'}"
    )
    lines.append(
        f"  seeds: {conf['seeds'] or 'none'}; post-sync commands: {conf['post_sync_commands'] or 'none'}"
    )
    for line in lines:
        log.info("%s", line)


# ----------------------------------------------------------------------------- 4. plan
def _working_target(staging_conn_id: str, context: dict | None = None):
    from scalingo_staging_sync.hooks.postgres import pg_target_from_connection

    restored = _pull(SCHEMA_TASK, context=context) or {}
    return pg_target_from_connection(staging_conn_id, database=restored.get("database"))


def _load_rules_of_run(conf: dict):
    from scalingo_staging_sync.anonymize.rules import load_rules

    return load_rules(conf["rules_file"])


def plan_anonymization(staging_conn_id: str) -> list[dict]:
    from scalingo_staging_sync.anonymize.planner import plan_anonymization as plan
    from scalingo_staging_sync.restore.pgtools import find_pg_tools

    ctx = _context()
    conf = settings(ctx)
    backup = _pull(BACKUP_TASK, context=ctx) or {}
    items = plan(
        _working_target(staging_conn_id, ctx),
        _load_rules_of_run(conf),
        dump_path=backup.get("dump_path"),
        tools=find_pg_tools(),
    )
    excluded = set(conf["exclude_tables"])
    items = [i for i in items if i["table"] not in excluded and i["name"] not in excluded]
    masked_columns = [f"{i['table']}.{c}" for i in items for c in i.get("masked_columns", [])]
    ctx["ti"].xcom_push(key="masked_columns", value=masked_columns)
    ctx["ti"].xcom_push(key="masked_tables", value=[i["table"] for i in items])
    for item in items:
        log.info(
            "plan %s: mode %s, masked columns %s", item["table"], item["mode"], item.get("masked_columns")
        )
    return items


# ----------------------------------------------------------------------------- 8.-11.
def run_seeds(staging_conn_id: str) -> list[dict]:
    from scalingo_staging_sync.seeds import resolve_seed_paths
    from scalingo_staging_sync.seeds import run_seeds as run

    ctx = _context()
    conf = settings(ctx)
    if not conf["seeds"]:
        log.info("no seeds in the rules file")
        return []
    paths = resolve_seed_paths(conf["seeds"], conf["rules_file"])
    return run(_working_target(staging_conn_id, ctx), paths)


def post_sync_commands(scalingo_conn_id: str) -> list[dict]:
    ctx = _context()
    conf = settings(ctx)
    commands = conf["post_sync_commands"]
    if not commands:
        log.info("no post-sync commands in the rules file")
        return []
    if not conf["target_app"]:
        raise RunConfigurationError("post_sync_commands need a target app: set the target_app param or APP")
    from scalingo_staging_sync.hooks.scalingo import ScalingoHook

    hook = ScalingoHook(scalingo_conn_id=scalingo_conn_id)
    results = []
    for command in commands:
        log.info("running %r as a detached one-off container in %s", command, conf["target_app"])
        started = time.monotonic()
        outcome = hook.run_detached(conf["target_app"], command)
        results.append(
            {
                "command": command,
                "duration_s": round(time.monotonic() - started, 1),
                "result": _short(outcome),
            }
        )
    return results


def _short(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: value[k] for k in ("id", "state", "status", "exit_code") if k in value}
    return str(value)[:200]


# ----------------------------------------------------------------------------- 12.-13. teardowns
def _task_states(ctx: dict) -> tuple[dict[str, str], dict[str, float]]:
    """State and duration of each task of this run, mapped tasks folded (worst state wins, durations added)."""
    ti = ctx["ti"]
    dag_run = ctx["dag_run"]
    states: dict[str, str] = {}
    try:
        crumbs = ti.get_task_breadcrumbs(dag_id=dag_run.dag_id, run_id=dag_run.run_id)
    except Exception as exc:  # pragma: no cover - older SDKs
        log.warning("cannot read task states: %s", exc)
        return states, {}
    rank = {"failed": 3, "upstream_failed": 2, "skipped": 1, "success": 0}
    durations: dict[str, float] = {}
    for crumb in crumbs:
        task_id, state = crumb["task_id"], str(crumb["state"])
        if rank.get(state, 0) >= rank.get(states.get(task_id, "success"), 0):
            states[task_id] = state
        durations[task_id] = durations.get(task_id, 0.0) + float(crumb.get("duration") or 0.0)
    return states, durations


def audit_report() -> dict:
    from scalingo_staging_sync.audit import build_and_write_report

    ctx = _context()
    states, durations = _task_states(ctx)
    conf = _pull(GATE_TASK, key="settings", context=ctx) or {}
    report = build_and_write_report(
        audit_dir=conf.get("audit_dir"),
        run_id=ctx["dag_run"].run_id,
        dag_id=ctx["dag_run"].dag_id,
        labels=conf.get("translations") or {},
        settings=conf,
        checks=conf.get("checks", []),
        backup=_pull(BACKUP_TASK, context=ctx),
        restore={t: _pull(t, context=ctx) for t in (SCHEMA_TASK, DATA_TASK, POST_DATA_TASK)},
        plan=_pull(PLAN_TASK, context=ctx),
        tables=_as_list(_pull(ANONYMIZE_TASK, context=ctx)),
        pii=_pull(PII_TASK, context=ctx) or _pull(PII_TASK, key="pii_scan", context=ctx),
        verification=_pull(VERIFY_TASK, context=ctx) or _pull(VERIFY_TASK, key="verification", context=ctx),
        seeds=_pull(SEEDS_TASK, context=ctx),
        promotion=_pull(PROMOTE_TASK, context=ctx),
        commands=_pull(COMMANDS_TASK, context=ctx),
        task_states=states,
        phase_durations=durations,
        phases=PHASES,
    )
    if conf:
        outcome = report.get("result")
        _notify(conf, "success" if outcome == "success" else "report", report=report)
    return report


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, dict):
        return [value]
    return list(value)


def cleanup(staging_conn_id: str, scalingo_conn_id: str) -> dict:
    """Teardown: drop the scratch database (or wipe an unverified in-place restore), scale the target
    app back after maintenance, remove downloaded files. Runs whatever happened, also after a dry run,
    and never turns a failed run green (teardowns do not decide the run's state)."""
    import shutil

    from scalingo_staging_sync.operators.restore import cleanup_staging

    ctx = _context()
    conf = _pull(GATE_TASK, key="settings", context=ctx) or {}
    restored = _pull(SCHEMA_TASK, context=ctx) or {}
    promoted = _pull(PROMOTE_TASK, context=ctx)
    done: dict[str, Any] = {}
    errors: list[str] = []
    if restored:  # something was restored: make sure no scratch copy or unverified data is left
        try:
            done["database"] = cleanup_staging(
                staging_conn_id,
                mode=restored.get("mode", "auto"),
                verified=True if promoted else None,
                scalingo_conn_id=scalingo_conn_id if conf.get("maintenance") else None,
            )
        except Exception as exc:
            errors.append(f"database cleanup: {exc}")
            log.exception("database cleanup failed")
    download_dir = conf.get("download_dir")
    if download_dir and Path(download_dir).exists():
        shutil.rmtree(download_dir, ignore_errors=True)
        done["removed"] = download_dir
    if errors:
        raise RuntimeError("; ".join(errors))
    return done


# ----------------------------------------------------------------------------- Slack
def _notify(run_settings: dict, event: str, **kwargs: Any) -> None:
    conn_id = run_settings.get("slack_conn_id") if isinstance(run_settings, dict) else None
    if not conn_id:
        return
    try:
        from scalingo_staging_sync.notifications.slack import send_event

        kwargs.setdefault("labels", run_settings.get("translations") or {})
        kwargs.setdefault("source_app", run_settings.get("source_app"))
        kwargs.setdefault("target_app", run_settings.get("target_app"))
        send_event(conn_id, event, **kwargs)
    except Exception as exc:  # Slack must never break or fail a run
        log.warning("Slack notification %r not sent: %s", event, exc)


def notify_phase_done(context: dict) -> None:
    """Task success callback: one Slack message per finished phase (not per mapped table)."""
    ti = context["ti"]
    if ti.task_id not in PHASES or ti.task_id == GATE_TASK or getattr(ti, "map_index", -1) not in (-1, None):
        return
    run_settings = ti.xcom_pull(task_ids=GATE_TASK, key="settings") or {}
    if not run_settings.get("slack_conn_id"):
        return
    from scalingo_staging_sync.notifications.slack import _duration

    _notify(run_settings, "phase", task_id=ti.task_id, duration_s=_duration(ti))


def notify_task_failure(context: dict) -> None:
    """Task failure callback: Slack message naming the failing task, with a link to its log."""
    ti = context["ti"]
    conf = dict(ti.xcom_pull(task_ids=GATE_TASK, key="settings") or {})
    conf.setdefault("slack_conn_id", (context.get("params") or {}).get("slack_conn_id"))
    if not conf.get("slack_conn_id"):
        return
    _notify(
        conf,
        "failure",
        task_id=ti.task_id,
        log_url=getattr(ti, "log_url", None),
        error=str(context.get("exception") or "")[:500],
    )
