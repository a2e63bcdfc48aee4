"""The audit report of one run: a JSON-serialisable dict built from the tasks' results (no Airflow).

Everything that goes in is whitelisted or scrubbed: keys that name secrets (password, token, salt,
URLs, DSNs, proofs) are dropped, strings pass through :func:`scalingo_staging_sync.secrets.redact`,
and PII findings carry column names and counts only. Raw values never reach the report.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from scalingo_staging_sync.secrets import redact

FORMAT = "scalingo-staging-sync/audit/v1"
FAILED_STATES = ("failed", "upstream_failed")
_SECRET_KEY = re.compile(
    r"pass(word|wd)?$|secret|token|salt|auth|cookie|credential|api_?key|private|dsn|conninfo|url$|uri$"
    r"|signature|^proof$|^values$|^samples?$|^sample_values$|^condition$|^query$|^env(ironment)?$",
    re.IGNORECASE,
)
_BACKUP_KEYS = {
    "id": ("id", "backup_id"),
    "name": ("name",),
    "created_at": ("created_at",),
    "size": ("size", "size_bytes"),
    "sha256": ("sha256", "checksum"),
    "pg_version": ("pg_version", "server_version", "postgresql_version", "dump_server_version"),
    "status": ("status",),
}


#: mappings keyed by names from the database, not by field names: their keys are kept (a masked column
#: named ``encrypted_password`` or ``reset_password_token`` must show in the report), their values scrubbed
_NAME_KEYED = frozenset({"columns"})


def scrub(value: Any, _depth: int = 0, _names: bool = False) -> Any:
    """Drop secret-looking keys (recursively; not the column names of a ``columns`` mapping) and redact
    registered secrets from strings."""
    if _depth > 12:
        return None
    if isinstance(value, Mapping):
        return {
            str(k): scrub(v, _depth + 1, str(k) in _NAME_KEYED and isinstance(v, Mapping))
            for k, v in value.items()
            if _names or not _SECRET_KEY.search(str(k))
        }
    if isinstance(value, list | tuple | set):
        return [scrub(v, _depth + 1) for v in value]
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, int | float | bool) or value is None:
        return value
    return redact(str(value))


def _pick(source: Mapping[str, Any] | None, mapping: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for target, names in mapping.items():
        for name in names:
            if source and source.get(name) not in (None, ""):
                out[target] = scrub(source[name])
                break
    return out


def _qualified(table: str) -> str:
    return table if "." in table else f"public.{table}"


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [value]
    return [v for v in value if v is not None]


def _rules_of(plan_item: Mapping[str, Any] | None) -> dict[str, Any]:
    if not plan_item:
        return {}
    columns = plan_item.get("columns") or {}
    return {
        "strategy": plan_item.get("strategy"),
        "columns": {
            str(c): (spec.get("transformer") if isinstance(spec, Mapping) else str(spec))
            for c, spec in columns.items()
        },
        "has_condition": bool(plan_item.get("condition")),
        "inline_query": bool(plan_item.get("query")),
        "warnings": scrub(list(plan_item.get("warnings") or [])),
    }


def _restore_rows(restore: Any) -> dict[str, int]:
    """Per-table rows from restore results: ``{"tables": {t: rows}}`` or ``{"table_rows": {...}}``."""
    rows: dict[str, int] = {}
    for result in _as_list(
        restore.values() if isinstance(restore, Mapping) and _is_task_map(restore) else restore
    ):
        if not isinstance(result, Mapping):
            continue
        for key in ("table_rows", "tables", "rows_per_table"):
            value = result.get(key)
            if isinstance(value, Mapping):
                for table, n in value.items():
                    if isinstance(n, int | float):
                        rows[_qualified(str(table))] = int(n)
                    elif isinstance(n, Mapping) and isinstance(n.get("rows"), int | float):
                        rows[_qualified(str(table))] = int(n["rows"])
    return rows


def _masked_on_worker(restore: Any) -> set[str]:
    """Tables the stream engine masked (the data load's ``masked_on_worker``)."""
    if not isinstance(restore, Mapping):
        return set()
    results = restore.values() if _is_task_map(restore) else [restore]
    return {
        _qualified(str(t))
        for result in results
        if isinstance(result, Mapping)
        for t in result.get("masked_on_worker") or []
    }


def _is_task_map(value: Mapping[str, Any]) -> bool:
    """``{"restore_schema": {...}, "load_data": {...}}`` (task id -> result)."""
    return (
        bool(value) and all(isinstance(v, Mapping | None) for v in value.values()) and "tables" not in value
    )


def _compact_finding(finding: Mapping[str, Any]) -> dict[str, Any]:
    column = finding.get("column_id") or ".".join(
        str(finding.get(k)) for k in ("schema", "table", "column") if finding.get(k)
    )
    return {
        "column": column,
        "severity": finding.get("severity"),
        "reason": finding.get("reason"),
        "status": finding.get("status"),
        "sample_count": finding.get("sample_count", 0),
        "sampled_values": finding.get("sampled_values", 0),
        "allow_reason": finding.get("allow_reason"),
    }


def _pii_section(pii: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not pii:
        return None
    findings = [_compact_finding(f) for f in pii.get("findings") or []]
    return scrub(
        {
            "passed": pii.get("passed"),
            "on_unmasked": pii.get("on_unmasked"),
            "tables_scanned": pii.get("tables_scanned"),
            "columns_scanned": pii.get("columns_scanned"),
            "rows_sampled": pii.get("rows_sampled"),
            "sample_rows": pii.get("sample_rows"),
            "duration_s": pii.get("duration_s"),
            "counts": pii.get("counts") or {},
            "unmasked": list(pii.get("unmasked") or []),
            "errors": pii.get("errors") or {},
            "findings": findings,
        }
    )


def _phases(
    phases: Sequence[str] | None,
    task_states: Mapping[str, Any] | None,
    phase_durations: Mapping[str, Any] | None,
) -> list[dict[str, Any]]:
    task_states = task_states or {}
    phase_durations = phase_durations or {}
    order = list(dict.fromkeys([*(phases or []), *task_states, *phase_durations]))
    out = []
    for task_id in order:
        state = task_states.get(task_id)
        duration = phase_durations.get(task_id)
        if state is None and duration is None:
            continue
        out.append(
            {
                "task_id": task_id,
                "state": str(state) if state is not None else None,
                "duration_s": round(float(duration), 3) if duration is not None else None,
            }
        )
    return out


def classification_section(archive_plan: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What the archive held and what became of it: counts per class, the excluded tables, the large
    objects policy, and every dropped entry with its reason (no row content: names and reasons only)."""
    if not archive_plan:
        return None
    entries = [c for c in archive_plan.get("classification") or [] if isinstance(c, Mapping)]

    def brief(c: Mapping[str, Any]) -> dict[str, Any]:
        return {"desc": c.get("desc"), "table": c.get("table"), "dump_id": c.get("dump_id"),
                "reason": c.get("reason")}  # fmt: skip

    return {
        "summary": dict(archive_plan.get("summary") or {}),
        "masked_tables": sorted(
            {str(c["table"]) for c in entries if c.get("class") == "masked" and c.get("table")}
        ),
        "excluded_tables": list(archive_plan.get("excluded_tables") or []),
        "scanned_tables": list(archive_plan.get("scanned_tables") or []),
        "large_objects": dict(archive_plan.get("large_objects") or {}),
        "materialized_views": list(archive_plan.get("materialized_views") or []),
        "dropped": [brief(c) for c in entries if c.get("class") == "dropped"],
        "excluded": [brief(c) for c in entries if c.get("class") == "excluded"],
        "warnings": list(archive_plan.get("warnings") or []),
    }


def build_report(
    *,
    run_id: str,
    dag_id: str | None = None,
    settings: Mapping[str, Any] | None = None,
    checks: Iterable[Mapping[str, Any]] | None = None,
    backup: Mapping[str, Any] | None = None,
    rules_sha256: str | None = None,
    restore: Any = None,
    plan: Iterable[Mapping[str, Any]] | None = None,
    tables: Iterable[Mapping[str, Any]] | None = None,
    pii: Mapping[str, Any] | None = None,
    verification: Mapping[str, Any] | None = None,
    seeds: Any = None,
    promotion: Any = None,
    commands: Any = None,
    cleanup: Any = None,
    recovery: Mapping[str, Any] | None = None,
    task_states: Mapping[str, Any] | None = None,
    phase_durations: Mapping[str, Any] | None = None,
    phases: Sequence[str] | None = None,
    labels: Mapping[str, str] | None = None,
    generated_at: datetime | None = None,
    archive_plan: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble the audit report (see docs/operators.md, "Audit report"). ``archive_plan``: the
    ``ArchivePlan.to_json()`` of the run (its classification summary and dropped entries are recorded)."""
    settings = settings or {}
    generated = (generated_at or datetime.now(timezone.utc)).isoformat()
    check_list = [
        {"name": c.get("name"), "passed": bool(c.get("passed")), "detail": c.get("detail")}
        for c in _as_list(checks if checks is not None else settings.get("checks"))
    ]
    plan_by_table = {_qualified(str(p.get("table"))): p for p in _as_list(plan) if p.get("table")}
    verification = verification or {}
    verified = {
        _qualified(str(t.get("table"))): t for t in verification.get("tables") or [] if t.get("table")
    }
    restored_rows = _restore_rows(restore)
    streamed = _masked_on_worker(restore)

    table_rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for result in _as_list(tables):
        if not isinstance(result, Mapping) or not result.get("table"):
            continue
        name = _qualified(str(result["table"]))
        seen.add(name)
        check = verified.get(name)
        table_rows.append(
            {
                "table": name,
                "label": (labels or {}).get(name),
                "mode": result.get("mode"),
                # on load: masked on the worker (stream engine) or by the table's trigger
                "engine": ("stream" if name in streamed else "trigger")
                if result.get("mode") == "on_load"
                else None,
                "rows": result.get("rows"),
                "rows_restored": restored_rows.get(name),
                "duration_s": result.get("duration_s"),
                "masked_columns": list(result.get("masked_columns") or []),
                "rules": _rules_of(plan_by_table.get(name)),
                "proof_rows": len((result.get("proof") or {}).get("rows") or []),
                "verification": None
                if check is None
                else {
                    "passed": check.get("passed"),
                    "rows_found": check.get("rows_found"),
                    "keys_sampled": check.get("keys_sampled"),
                    "keys_found": check.get("keys_found"),
                    "columns": check.get("columns"),
                    "problems": check.get("problems"),
                },
            }
        )
    for name, item in plan_by_table.items():  # planned but no result: the run stopped before it
        if name not in seen:
            table_rows.append(
                {"table": name, "label": (labels or {}).get(name), "mode": item.get("mode"), "rows": None,
                 "rules": _rules_of(item), "verification": None, "note": "no anonymization result"}
            )  # fmt: skip

    phase_list = _phases(phases, task_states, phase_durations)
    failed = [p["task_id"] for p in phase_list if p["state"] == "failed"]
    upstream_failed = [p["task_id"] for p in phase_list if p["state"] == "upstream_failed"]
    if failed or upstream_failed:
        result, stopped_at = "failed", (failed or upstream_failed)[0]
    elif verification and verification.get("passed") is False:
        result, stopped_at = "failed", "verification"
    elif pii and pii.get("passed") is False and pii.get("on_unmasked", "fail") == "fail":
        result, stopped_at = "failed", "pii_scan"
    elif settings.get("dry_run"):
        result, stopped_at = "dry_run", None
    else:
        result, stopped_at = "success", None
    total_duration = sum(p["duration_s"] or 0.0 for p in phase_list)
    pii_section = _pii_section(pii)

    report = {
        "format": FORMAT,
        "generated_at": generated,
        "run_id": run_id,
        "dag_id": dag_id,
        "source_app": settings.get("source_app"),
        "target_app": settings.get("target_app"),
        "dry_run": bool(settings.get("dry_run")),
        "result": result,
        "stopped_at": stopped_at,
        # the tasks that failed, and apart from them those that did not run because one upstream failed
        "failed_tasks": failed,
        "upstream_failed_tasks": upstream_failed,
        "backup": _pick(backup, _BACKUP_KEYS),
        "rules": {"sha256": rules_sha256 or settings.get("rules_sha256")},
        "safety": {
            "passed": all(c["passed"] for c in check_list) if check_list else None,
            "checks": check_list,
            # what an interrupted earlier run left, and what the gate did about it (recover_leftovers)
            "recovery": recovery,
        },
        "tables": table_rows,
        "classification": classification_section(archive_plan),
        "pii_scan": pii_section,
        "verification": None
        if not verification
        else {
            "enabled": verification.get("enabled", True),
            "passed": verification.get("passed"),
            "failures": list(verification.get("failures") or []),
        },
        "seeds": seeds,
        "promotion": promotion,
        "post_sync_commands": commands,
        "cleanup": cleanup,
        # the cleanup could not prove that staging holds no unmasked data (its message says what to run)
        "staging_may_hold_unmasked_data": bool(
            isinstance(cleanup, Mapping) and cleanup.get("proven") is False
        ),
        "phases": phase_list,
        "summary": {
            "tables": len([t for t in table_rows if t.get("rows") is not None]),
            "rows": sum(int(t["rows"] or 0) for t in table_rows),
            "pii_findings": len((pii_section or {}).get("findings") or []),
            "pii_unmasked": len((pii_section or {}).get("unmasked") or []),
            "verification_passed": (verification or {}).get("passed"),
            "total_duration_s": round(total_duration, 3),
        },
    }
    return scrub(report)
