"""Slack message builders: pure functions, no Airflow, no network (English; Slack mrkdwn).

Per-table labels come from the rules file (``translation`` of each ``anonymization_tables`` entry):
``labels_from_rules(raw_rules)`` -> ``{"public.users": "Users", ...}``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

PHASE_LABELS = {
    "safety_gate": "Safety checks",
    "fetch_backup": "Backup download",
    "restore_schema": "Schema restore",
    "plan_anonymization": "Anonymization plan",
    "anonymize_table": "Anonymization",
    "prepare_masking": "Masking triggers",
    "load_data": "Data load (masked on the way in)",
    "restore_post_data": "Indexes and constraints",
    "finalize_masked_data": "Materialized views and statistics from masked data",
    "pii_scan": "PII scan",
    "verify_anonymization": "Residual-value verification",
    "run_seeds": "Seeds",
    "promote": "Promotion",
    "post_sync_commands": "Post-sync commands",
    "audit_report": "Audit report",
    "cleanup": "Cleanup",
}
_MAX_TABLE_LINES = 15


def format_duration(seconds: float | None) -> str:
    from scalingo_staging_sync.audit.writers import format_duration as _format_duration

    return _format_duration(seconds, missing="?", sep=" ")


def phase_label(task_id: str) -> str:
    return PHASE_LABELS.get(task_id.split(".")[-1], task_id.replace("_", " ").capitalize())


def _qualified(table: str) -> str:
    return table if "." in table else f"public.{table}"


def labels_from_rules(raw_rules: Mapping[str, Any] | None) -> dict[str, str]:
    """``translation`` of each ``anonymization_tables`` entry, keyed by ``schema.table``."""
    labels: dict[str, str] = {}
    for entry in (raw_rules or {}).get("anonymization_tables") or []:
        if isinstance(entry, Mapping) and entry.get("table") and entry.get("translation"):
            labels[_qualified(str(entry["table"]))] = str(entry["translation"])
    return labels


def table_label(table: str, labels: Mapping[str, str] | None = None) -> str:
    labels = labels or {}
    return labels.get(_qualified(table)) or labels.get(table) or table


def start_message(
    source_app: str | None = None,
    target_app: str | None = None,
    *,
    run_id: str | None = None,
    dry_run: bool = False,
) -> str:
    lines = [f":rocket: *Staging sync started*{' (dry run)' if dry_run else ''}"]
    lines.append(f"• Source: {source_app or '?'} → Target: {target_app or '?'}")
    if run_id:
        lines.append(f"• Run: `{run_id}`")
    return "\n".join(lines)


def phase_message(task_id: str, duration_s: float | None = None, detail: str | None = None) -> str:
    text = f":white_check_mark: {phase_label(task_id)} done in {format_duration(duration_s)}"
    return f"{text} — {detail}" if detail else text


def table_message(table: str, rows: int | None, labels: Mapping[str, str] | None = None) -> str:
    return f"✓ {table_label(table, labels)}: {rows if rows is not None else '?'} rows anonymized"


def success_message(
    summary: Mapping[str, Any] | None = None,
    *,
    source_app: str | None = None,
    target_app: str | None = None,
    tables: Iterable[Mapping[str, Any]] | None = None,
    labels: Mapping[str, str] | None = None,
    dry_run: bool = False,
    seeds_run: int | None = None,
) -> str:
    """Summary: tables, rows, PII findings, verification, total time; per-table lines with labels.

    Only states what happened (the original gem claimed anonymization and seeds even when skipped).
    """
    summary = summary or {}
    title = (
        ":white_check_mark: *Staging sync succeeded*" if not dry_run else ":memo: *Staging sync dry run done*"
    )
    lines = [title, f"• Source: {source_app or '?'} → Target: {target_app or '?'}"]
    if summary.get("tables") is not None:
        lines.append(f"• Tables anonymized: {summary.get('tables')} ({summary.get('rows', 0)} rows)")
    if summary.get("pii_findings") is not None:
        lines.append(
            f"• PII findings: {summary.get('pii_findings')} ({summary.get('pii_unmasked', 0)} unmasked)"
        )
    verified = summary.get("verification_passed")
    if verified is not None:
        lines.append(f"• Residual-value verification: {'passed' if verified else 'FAILED'}")
    if seeds_run:
        lines.append(f"• Seeds run: {seeds_run}")
    if summary.get("total_duration_s") is not None:
        lines.append(f"• Total time: {format_duration(summary.get('total_duration_s'))}")
    table_list = [t for t in tables or [] if t.get("rows") is not None]
    for table in table_list[:_MAX_TABLE_LINES]:
        lines.append("  " + table_message(str(table.get("table")), table.get("rows"), labels))
    if len(table_list) > _MAX_TABLE_LINES:
        lines.append(f"  … and {len(table_list) - _MAX_TABLE_LINES} more tables")
    return "\n".join(lines)


#: how :class:`~scalingo_staging_sync.restore.targets.CleanupNotProvenError` messages start
UNPROVEN_MARKER = "staging may hold unmasked production data"


def failure_message(
    task_id: str | None,
    *,
    error: str | None = None,
    log_url: str | None = None,
    target_app: str | None = None,
    run_id: str | None = None,
) -> str:
    error = " ".join(str(error).split()) if error else error
    unproven = bool(error and UNPROVEN_MARKER in error)
    lines = [":x: *Staging sync failed*"]
    if unproven:
        # a cleanup that could not prove its result: the one failure that needs a human now
        lines[0] = ":rotating_light: *Staging sync failed: staging may hold unmasked production data*"
    if task_id:
        lines.append(f"• Failed task: `{task_id}` ({phase_label(task_id)})")
    if target_app:
        lines.append(f"• Target: {target_app}")
    if run_id:
        lines.append(f"• Run: `{run_id}`")
    if error:
        limit = 2000 if unproven else 500  # the unproven-cleanup message ends with the command to run
        lines.append(f"• Error: {error[:limit]}{'…' if len(error) > limit else ''}")
    if log_url:
        lines.append(f"• Log: <{log_url}|open the task log>")
    if unproven:
        lines.append(
            "Run the command above once the staging server accepts connections, or trigger the DAG again: "
            "its safety gate finishes the cleanup before anything else."
        )
    else:
        lines.append("Nothing was promoted unless the failing task came after promotion.")
    return "\n".join(lines)


def _success_from(data: Mapping[str, Any], labels: Mapping[str, str] | None, *, dry_run: bool = False) -> str:
    """The success summary of the summary, apps and tables in ``data`` (an audit report, or the
    keyword arguments of a ``success`` event)."""
    return success_message(
        data.get("summary"),
        source_app=data.get("source_app"),
        target_app=data.get("target_app"),
        tables=data.get("tables"),
        labels=labels,
        dry_run=dry_run,
    )


def report_message(report: Mapping[str, Any], labels: Mapping[str, str] | None = None) -> str:
    """Message from an audit report: success summary, or where it stopped."""
    if report.get("result") in ("success", "dry_run"):
        return _success_from(report, labels, dry_run=report.get("result") == "dry_run")
    stopped = report.get("stopped_at")
    lines = [
        f":x: *Staging sync failed* at {phase_label(stopped) if stopped else 'an unknown step'}",
        f"• Target: {report.get('target_app') or '?'}",
    ]
    unmasked = ((report.get("pii_scan") or {}).get("unmasked")) or []
    if unmasked:
        shown = ", ".join(unmasked[:10]) + (f" (+{len(unmasked) - 10} more)" if len(unmasked) > 10 else "")
        lines.append(f"• Unmasked PII columns: {shown}")
    for failure in ((report.get("verification") or {}).get("failures") or [])[:5]:
        lines.append(f"• Verification: {failure}")
    lines.append("Audit report written; staging was not promoted with this data.")
    return "\n".join(lines)


def build_event_message(event: str, **kwargs: Any) -> str:
    """``start`` | ``phase`` | ``table`` | ``success`` | ``report`` | ``failure`` -> message text."""
    labels = kwargs.get("labels")
    if event == "start":
        conf = kwargs.get("conf") or {}
        return start_message(
            kwargs.get("source_app") or conf.get("source_app"),
            kwargs.get("target_app") or conf.get("target_app"),
            run_id=kwargs.get("run_id"),
            dry_run=bool(kwargs.get("dry_run", conf.get("dry_run"))),
        )
    if event == "phase":
        return phase_message(kwargs["task_id"], kwargs.get("duration_s"), kwargs.get("detail"))
    if event == "table":
        return table_message(kwargs["table"], kwargs.get("rows"), labels)
    if event in ("success", "report") and kwargs.get("report"):
        return report_message(kwargs["report"], labels)
    if event == "success":
        return _success_from(kwargs, labels)
    if event == "failure":
        return failure_message(
            kwargs.get("task_id"),
            error=kwargs.get("error"),
            log_url=kwargs.get("log_url"),
            target_app=kwargs.get("target_app"),
            run_id=kwargs.get("run_id"),
        )
    raise ValueError(f"unknown Slack event {event!r}")
