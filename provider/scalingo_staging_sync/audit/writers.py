"""Write the audit report as ``<run id>.json`` and ``<run id>.txt``, atomically (no Airflow)."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scalingo_staging_sync.secrets import redact

AUDIT_DIR_ENV = "SCALINGO_STAGING_SYNC_AUDIT_DIR"
_RULE = "=" * 80


def default_audit_dir(configured: str | os.PathLike | None = None) -> Path:
    """``configured`` (rules ``audit_dir``), else ``$SCALINGO_STAGING_SYNC_AUDIT_DIR``, else
    ``$AIRFLOW_HOME/scalingo_staging_sync/audit`` (``AIRFLOW_HOME`` defaults to ``~/airflow``)."""
    if configured:
        return Path(configured).expanduser()
    if os.environ.get(AUDIT_DIR_ENV):
        return Path(os.environ[AUDIT_DIR_ENV]).expanduser()
    home = os.environ.get("AIRFLOW_HOME") or str(Path.home() / "airflow")
    return Path(home).expanduser() / "scalingo_staging_sync" / "audit"


def safe_filename(run_id: str) -> str:
    """A run id as a file name: ``manual__2026-01-01T00:00:00+00:00`` -> ``manual__2026-01-01T00_00_00_00_00``."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", run_id or "").strip("._-")
    return name[:150] or "run"


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def render_json(report: Mapping[str, Any]) -> str:
    return redact(json.dumps(report, indent=2, sort_keys=False, default=str)) + "\n"


def format_duration(seconds: Any, *, missing: str = "-", sep: str = "") -> str:
    """``12.3s``, ``4m05s``, ``1h02m03s`` (``sep=" "``: ``4m 05s``); ``missing`` when unknown."""
    if seconds is None:
        return missing
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{sep}{minutes:02d}m{sep}{sec:02d}s" if hours else f"{minutes}m{sep}{sec:02d}s"


def render_text(report: Mapping[str, Any]) -> str:
    """Human-readable report, same content as the JSON."""
    lines = [_RULE, "SCALINGO STAGING SYNC - AUDIT REPORT", _RULE]
    lines += [
        f"Run:            {report.get('run_id')}"
        + (f"  (DAG {report['dag_id']})" if report.get("dag_id") else ""),
        f"Generated:      {report.get('generated_at')}",
        f"Source -> target: {report.get('source_app') or '?'} -> {report.get('target_app') or '?'}",
        f"RESULT:         {str(report.get('result')).upper()}"
        + (f" (stopped at {report['stopped_at']})" if report.get("stopped_at") else ""),
        "",
    ]
    summary = report.get("summary") or {}
    lines += [
        "SUMMARY",
        f"  Tables anonymized:   {summary.get('tables')}",
        f"  Rows:                {summary.get('rows')}",
        f"  PII findings:        {summary.get('pii_findings')} ({summary.get('pii_unmasked')} unmasked)",
        f"  Verification passed: {_yes_no(summary.get('verification_passed'))}",
        f"  Total duration:      {format_duration(summary.get('total_duration_s'))}",
        "",
        "BACKUP",
    ]
    backup = report.get("backup") or {}
    for key in ("id", "name", "created_at", "size", "sha256", "pg_version", "status"):
        if key in backup:
            lines.append(f"  {key + ':':<12} {backup[key]}")
    if not backup:
        lines.append("  (none)")
    lines += [
        "",
        f"RULES FILE SHA-256: {(report.get('rules') or {}).get('sha256') or '-'}",
        "",
        "SAFETY CHECKS",
    ]
    safety = report.get("safety") or {}
    for check in safety.get("checks") or []:
        lines.append(
            f"  [{'PASS' if check.get('passed') else 'FAIL'}] {check.get('name')}: {check.get('detail') or ''}"
        )
    if not safety.get("checks"):
        lines.append("  (none recorded)")
    lines += ["", "TABLES"]
    for table in report.get("tables") or []:
        verification = table.get("verification") or {}
        rules = table.get("rules") or {}
        how = (
            rules.get("strategy")
            or ", ".join(f"{c}:{t}" for c, t in (rules.get("columns") or {}).items())
            or "-"
        )
        status = "-" if not verification else ("PASSED" if verification.get("passed") else "FAILED")
        label = f" [{table['label']}]" if table.get("label") else ""
        lines.append(
            f"  {table.get('table')}{label}: mode {table.get('mode')}, rows {table.get('rows')}"
            f" (restored {table.get('rows_restored') if table.get('rows_restored') is not None else '-'}),"
            f" {format_duration(table.get('duration_s'))}, verification {status}"
        )
        lines.append(f"      rules: {how}" + (" (with condition)" if rules.get("has_condition") else ""))
        for problem in verification.get("problems") or []:
            lines.append(f"      ! {problem}")
        if table.get("note"):
            lines.append(f"      note: {table['note']}")
    if not report.get("tables"):
        lines.append("  (none)")
    lines += ["", "ARCHIVE CLASSIFICATION"]
    classification = report.get("classification")
    if classification:
        lines.append(f"  {classification.get('summary')}")
        lines.append(f"  excluded tables: {', '.join(classification.get('excluded_tables') or []) or 'none'}")
        lines.append(f"  large objects: {classification.get('large_objects')}")
        for entry in classification.get("dropped") or []:
            what = f"{entry.get('desc')} {entry.get('table') or ''}".strip()
            lines.append(f"  DROPPED   {what}: {entry.get('reason')}")
        for entry in classification.get("excluded") or []:
            lines.append(f"  EXCLUDED  {entry.get('table')}: {entry.get('reason')}")
    else:
        lines.append("  (no archive plan)")
    lines += ["", "PII SCAN"]
    pii = report.get("pii_scan")
    if pii:
        lines.append(
            f"  {pii.get('tables_scanned')} tables, {pii.get('columns_scanned')} columns, "
            f"{pii.get('rows_sampled')} rows sampled; counts {pii.get('counts')}"
        )
        for finding in pii.get("findings") or []:
            allow = f" - allowed: {finding['allow_reason']}" if finding.get("allow_reason") else ""
            lines.append(
                f"  {str(finding.get('status')).upper():<9} {str(finding.get('severity')):<6} "
                f"{finding.get('column')}: {finding.get('reason')}{allow}"
            )
        for table, error in (pii.get("errors") or {}).items():
            lines.append(f"  ERROR     {table}: could not be scanned ({error})")
    else:
        lines.append("  (not run)")
    lines += ["", "VERIFICATION"]
    verification = report.get("verification")
    if verification:
        lines.append(f"  passed: {_yes_no(verification.get('passed'))}")
        lines += [f"  ! {failure}" for failure in verification.get("failures") or []]
    else:
        lines.append("  (not run)")
    lines += ["", "CLEANUP"]
    cleanup = report.get("cleanup") or {}
    database = cleanup.get("database") or {}
    if report.get("staging_may_hold_unmasked_data"):
        lines.append(f"  !! NOT PROVEN: {cleanup.get('warning') or database.get('error')}")
    elif database.get("error"):
        lines.append(f"  ! failed: {database['error']}")
    elif database:
        lines.append(
            f"  proven: {_yes_no(database.get('proven'))}; scratch dropped: "
            f"{_yes_no(database.get('dropped_scratch'))}; wiped: {_yes_no(database.get('wiped'))}; "
            f"attempts: {database.get('attempts', '-')}"
        )
    else:
        lines.append("  (nothing restored)" if cleanup else "  (not run)")
    recovery = (report.get("safety") or {}).get("recovery") or {}
    if recovery.get("found") or recovery.get("error"):
        lines += ["", "LEFTOVERS OF AN EARLIER RUN (safety gate)"]
        lines += [f"  found: {item}" for item in recovery.get("found") or []]
        lines += [
            f"  {'would do' if recovery.get('dry_run') else 'did'}: {a}"
            for a in recovery.get("actions") or []
        ]
        if recovery.get("error"):
            lines.append(f"  ! {recovery['error']}")
    lines += ["", "PHASES"]
    for phase in report.get("phases") or []:
        lines.append(
            f"  {phase.get('task_id'):<28} {str(phase.get('state')):<16} {format_duration(phase.get('duration_s'))}"
        )
    lines += [_RULE, ""]
    return redact("\n".join(lines))


def _yes_no(value: Any) -> str:
    return "-" if value is None else ("YES" if value else "NO")


def write_report(report: Mapping[str, Any], audit_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """Write ``<run id>.json`` and ``<run id>.txt`` into the audit dir; return both paths."""
    directory = default_audit_dir(audit_dir)
    base = safe_filename(str(report.get("run_id") or "run"))
    json_path, text_path = directory / f"{base}.json", directory / f"{base}.txt"
    _atomic_write(json_path, render_json(report))
    _atomic_write(text_path, render_text(report))
    return {"json": str(json_path), "text": str(text_path)}
