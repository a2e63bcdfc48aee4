"""AuditReportOperator: the run's JSON/Markdown audit report, written after cleanup."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from scalingo_staging_sync.operators._base import (
    as_list,
    as_mapping,
    as_mapping_list,
    as_str,
    maps_sync_errors,
)

_FIELDS = (
    "settings",
    "preflight",
    "backup",
    "restore",
    "plan",
    "archive_plan",
    "tables",
    "pii",
    "verification",
    "seeds",
    "promotion",
    "commands",
    "cleanup",
    "phases",
    "audit_dir",
)


def task_states(context: Any) -> tuple[dict[str, str], dict[str, float]]:
    """State and duration of each task of this run, mapped tasks folded (worst state wins)."""
    ti = context["ti"]
    dag_run = context["dag_run"]
    try:
        crumbs = ti.get_task_breadcrumbs(dag_id=dag_run.dag_id, run_id=dag_run.run_id)
    except Exception:  # noqa: BLE001 - an older SDK: the report says less
        return {}, {}
    rank = {"failed": 3, "upstream_failed": 2, "skipped": 1, "success": 0}
    states: dict[str, str] = {}
    durations: dict[str, float] = {}
    for crumb in crumbs:
        task_id, state = crumb["task_id"], str(crumb["state"])
        if rank.get(state, 0) >= rank.get(states.get(task_id, "success"), 0):
            states[task_id] = state
        durations[task_id] = durations.get(task_id, 0.0) + float(crumb.get("duration") or 0.0)
    return states, durations


class AuditReportOperator(BaseOperator):
    """Write the audit report of the run (:mod:`scalingo_staging_sync.audit`). Use it as the last
    teardown, after cleanup, so the report records the cleanup outcome.

    Every argument is templated and may be None (a step that did not run):
    ``settings`` (gate ``settings``), ``preflight`` (gate ``preflight``), ``backup``, ``restore``
    (``{task_id: restore result}``), ``plan``, ``tables`` (masking results), ``pii``, ``verification``,
    ``seeds``, ``promotion``, ``commands``, ``cleanup``, ``phases`` (task ids in run order),
    ``audit_dir`` (else settings' ``audit_dir``, then the config section).

    XCom ``return_value``: the report (``result``, ``summary``, ``safety.checks``, ``tables``,
    ``pii_scan``, ``cleanup``, ...); files ``<audit_dir>/<run_id>.json`` and ``.txt``.
    """

    template_fields: Sequence[str] = _FIELDS
    ui_color = "#d5dbdb"

    def __init__(self, **kwargs: Any) -> None:
        values = {name: kwargs.pop(name, None) for name in _FIELDS}
        super().__init__(**kwargs)
        for name, value in values.items():
            setattr(self, name, value)

    @maps_sync_errors
    def execute(self, context: Any) -> dict:
        from scalingo_staging_sync import config
        from scalingo_staging_sync.audit import build_and_write_report

        states, durations = task_states(context)
        settings = as_mapping(self.settings, "settings") or {}
        preflight = as_mapping(self.preflight, "preflight") or {}
        restore = as_mapping(self.restore, "restore") or {}
        restore = {k: as_mapping(v, k) for k, v in restore.items()}
        pii = as_mapping(self.pii, "pii")
        report = build_and_write_report(
            audit_dir=as_str(self.audit_dir) or settings.get("audit_dir") or config.get("audit_dir"),
            run_id=context["dag_run"].run_id,
            dag_id=context["dag_run"].dag_id,
            labels=settings.get("translations") or {},
            settings=settings,
            checks=preflight.get("checks") or settings.get("checks") or [],
            backup=as_mapping(self.backup, "backup"),
            restore=restore,
            plan=as_mapping_list(self.plan, "plan"),
            archive_plan=as_mapping(self.archive_plan, "archive_plan"),
            tables=as_mapping_list(self.tables, "tables"),
            pii=pii if pii is None or pii.get("enabled", True) else pii,
            verification=as_mapping(self.verification, "verification"),
            seeds=as_list(self.seeds, "seeds"),
            promotion=as_mapping(self.promotion, "promotion"),
            commands=as_list(self.commands, "commands"),
            cleanup=as_mapping(self.cleanup, "cleanup"),
            recovery=(preflight.get("facts") or {}).get("recovery"),
            task_states=states,
            phase_durations=durations,
            phases=[str(p) for p in as_list(self.phases, "phases")],
        )
        return report
