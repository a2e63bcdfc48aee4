"""SafetyGateOperator: the run's preflight, and the one place where its settings are resolved."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.python import PythonOperator, ShortCircuitOperator

from scalingo_staging_sync.errors import SyncError
from scalingo_staging_sync.operators._base import as_bool, as_mapping, as_str, sync_errors

log = logging.getLogger(__name__)

SETTINGS_KEY = "settings"
#: the key of an operator's return value in XCom (Airflow's XCOM_RETURN_KEY)
RETURN_KEY = "return_value"
PREFLIGHT_KEY = "preflight"
RULES_SUFFIXES = (".yaml", ".yml", ".json")


class RulesFileChoiceError(SyncError, ValueError):
    """The rules_file param names no reviewed rules file of the rules folder."""

    retryable = False


def list_rules_files(folder: str | None) -> list[str]:
    """Names of the rules files directly in ``folder`` (sorted). Cheap: one directory listing, no read."""
    if not folder:
        return []
    try:
        entries = list(Path(folder).expanduser().iterdir())
    except OSError:
        return []
    return sorted(e.name for e in entries if e.suffix in RULES_SUFFIXES and e.is_file())


def resolve_rules_choice(choice: str | None, folder: str | None, default_file: str | None) -> Path:
    """The rules file of the run: ``choice`` (a file name of ``folder``), else ``default_file``."""
    if choice:
        if not folder:
            raise RulesFileChoiceError(
                f"rules_file {choice!r} was chosen but no rules folder is configured: set "
                "[scalingo_staging_sync] rules_folder"
            )
        if choice not in list_rules_files(folder):
            raise RulesFileChoiceError(
                f"rules_file {choice!r} is not a rules file of the rules folder {folder!r}; "
                f"choose one of {list_rules_files(folder)}"
            )
        return (Path(folder).expanduser() / choice).resolve()
    from scalingo_staging_sync.anonymize.rules import resolve_rules_path

    return resolve_rules_path(default_file).expanduser().resolve()


class GateConfigError(SyncError, ValueError):
    """An argument of the gate cannot be used (bad input: not retryable)."""

    retryable = False


def import_callable(path: str) -> Any:
    """``"package.module:function"`` (or ``"package.module.function"``) -> the callable."""
    import importlib

    module_name, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    try:
        value = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise GateConfigError(
            f"download_checker {path!r} cannot be imported ({exc}): give 'package.module:function'"
        ) from None
    if not callable(value):
        raise GateConfigError(f"download_checker {path!r} is not callable")
    return value


class SafetyGateOperator(ShortCircuitOperator):
    """Resolve the run settings and run the preflight checks; fail the run on any failed check.

    Reads the run's params (``context["params"]``: source_app, target_app, backup, exclude_tables,
    dry_run, confirm_target, slack_conn_id, rules_file), the rules file and the ``[scalingo_staging_sync]``
    config section, builds :class:`~scalingo_staging_sync.settings.RunSettings` once and runs
    :func:`~scalingo_staging_sync.preflight.run_preflight`. A dry run logs the plan and the checks and
    short-circuits (every downstream task is skipped; teardowns still run).

    :param scalingo_conn_id: Scalingo connection (source addon lookup).
    :param staging_conn_id: postgres connection of the staging database.
    :param params_override: values that replace the run's params (templated; for use outside the
        reference DAG's form).
    :param download_checker: proves an object-storage download location writable:
        ``checker(url, conn_id) -> detail`` (a callable or its import path ``"pkg.module:function"``).
        Default: ``scalingo_staging_sync.storage.probe_writable`` when the storage module has it.
    :param dry_run_skips: task ids, each directly downstream of the gate, that a dry run skips; the
        other downstream tasks then run on a dry run. Default (None): a dry run skips what a
        ``ShortCircuitOperator`` skips (``ignore_downstream_trigger_rules``). The reference DAG skips
        only ``gate_passed``, which guards the restore, so the backup is fetched while the gate's
        marker is settled (one scheduler transition less before the download).
    :param skip_when_empty: ``{task_id: setting}``: a task downstream of the gate (at any depth) that a
        run skips when that run setting is empty (``RunSettings`` field, e.g. ``seeds``), so a step with
        nothing to do costs no task start and, under a scheduler, no scheduling loop. A skipped task
        passes no failure on, so each named task must have a task after it that is not a teardown,
        and every such task must wait directly for what the named task waits for (and accept the skip:
        ``trigger_rule="none_failed_min_one_success"``), as the reference DAG's ``promote`` does for
        ``run_seeds``; else the gate fails before any check, naming what is missing.

    Before the checks, leftovers of an interrupted run are finished
    (:func:`~scalingo_staging_sync.restore.targets.recover_leftovers`: scratch database dropped,
    half-done promote completed or reverted, unverified in-place data wiped); a dry run only reports
    them. The outcome is in the preflight facts (``recovery``), hence in the audit.

    XCom: key ``settings``: ``RunSettings.to_json()`` (pushed once, also when a check fails, so the
    audit can report it); key ``preflight``: ``PreflightResult.to_json()`` (``passed``, ``checks``,
    ``facts``); ``return_value``: True, or False on a dry run.
    """

    template_fields: Sequence[str] = ("params_override",)
    ui_color = "#fadbd8"

    def __init__(
        self,
        *,
        scalingo_conn_id: str = "scalingo_default",
        staging_conn_id: str = "staging_db",
        params_override: Any = None,
        download_checker: Any = None,
        dry_run_skips: Sequence[str] | None = None,
        skip_when_empty: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("ignore_downstream_trigger_rules", True)
        super().__init__(python_callable=self._gate, **kwargs)
        self.scalingo_conn_id = scalingo_conn_id
        self.staging_conn_id = staging_conn_id
        self.params_override = params_override
        self.download_checker = download_checker
        if isinstance(dry_run_skips, str):
            raise GateConfigError(
                f"dry_run_skips={dry_run_skips!r}: give a list of task ids, e.g. [{dry_run_skips!r}]"
            )
        if dry_run_skips is not None and not list(dry_run_skips):
            raise GateConfigError(
                "dry_run_skips=[] skips nothing: a dry run would run every task after the gate; name the "
                "task(s) that guard what writes (e.g. ['gate_passed']), or leave it unset to skip them all"
            )
        self.dry_run_skips = None if dry_run_skips is None else tuple(dry_run_skips)
        self.skip_when_empty = _skip_when_empty(skip_when_empty)

    def execute(self, context: Any) -> Any:
        with sync_errors():
            task = context.get("task") or self
            downstream = {t.task_id: t for t in task.get_direct_relatives(upstream=False)}
            everything_after = {t.task_id: t for t in task.get_flat_relatives(upstream=False)}
            stray = [t for t in self.dry_run_skips or () if t not in downstream]
            if stray:
                raise GateConfigError(
                    f"dry_run_skips names {stray!r}, not directly downstream of {self.task_id!r} "
                    f"(its direct downstream tasks: {sorted(downstream)}): wire them after the gate "
                    "or remove them from dry_run_skips"
                )
            stray = [t for t in self.skip_when_empty if t not in everything_after]
            if stray:
                raise GateConfigError(
                    f"skip_when_empty names {stray!r}, not downstream of {self.task_id!r}: wire them after "
                    "the gate or remove them from skip_when_empty"
                )
            for task_id in self.skip_when_empty:
                _check_skippable(everything_after[task_id])
            if self.dry_run_skips is None:
                passed = super().execute(context)  # a dry run: ShortCircuitOperator skipped everything
            else:
                # the gate's own decision, without ShortCircuitOperator's skipping of every downstream task
                passed = PythonOperator.execute(self, context)
            skips = []
            if not passed and self.dry_run_skips is not None:
                self.log.info("Dry run: skipping %s", ", ".join(self.dry_run_skips))
                skips = [downstream[t] for t in self.dry_run_skips]
            elif passed:
                skips = [everything_after[t] for t in self._idle_tasks(context["ti"])]
            if skips:
                # skip() ends execute (DownstreamTasksSkipped): the decision is pushed first
                context["ti"].xcom_push(key=RETURN_KEY, value=passed)
                self.skip(ti=context["ti"], tasks=skips)
            return passed

    def _idle_tasks(self, ti: Any) -> list[str]:
        """The ``skip_when_empty`` tasks whose setting is empty in this run's settings."""
        if not self.skip_when_empty:
            return []
        settings = ti.xcom_pull(task_ids=self.task_id, key=SETTINGS_KEY) or {}
        idle = []
        for task_id, field in self.skip_when_empty.items():
            if field not in settings:
                raise GateConfigError(
                    f"skip_when_empty[{task_id!r}] = {field!r} is not a run setting; one of: "
                    + ", ".join(sorted(settings))
                )
            if not settings[field]:
                self.log.info("skipping %s: no %s in this run", task_id, field.replace("_", " "))
                idle.append(task_id)
        return idle

    def _gate(self, **context: Any) -> bool:
        from scalingo_staging_sync import config
        from scalingo_staging_sync.anonymize.rules import load_rules
        from scalingo_staging_sync.preflight import run_preflight
        from scalingo_staging_sync.safety import CheckResult, enforce
        from scalingo_staging_sync.settings import RunSettings

        ti = context["ti"]
        dag_run = context["dag_run"]
        # the task as rendered for this run: python_callable is bound to the parsed operator, whose
        # templated fields stay unrendered
        task = context.get("task") or self
        params = dict(context.get("params") or {})
        params.update(as_mapping(task.params_override, "params_override") or {})
        cfg = config.section()
        try:
            rules_path = resolve_rules_choice(
                as_str(params.get("rules_file")), cfg.get("rules_folder"), cfg.get("rules_file")
            )
            rules = load_rules(rules_path)
        except Exception as exc:
            check = CheckResult("rules_file_valid", False, str(exc))
            log.error("preflight rules_file_valid FAIL  %s", exc)
            ti.xcom_push(key=PREFLIGHT_KEY, value={"passed": False, "checks": [check.to_dict()], "facts": {}})
            if isinstance(exc, SyncError):
                raise
            enforce([check])
            raise
        settings = RunSettings.build(
            params={**params, "dry_run": as_bool(params.get("dry_run"), "dry_run")},
            rules=rules,
            config=cfg,
            run_id=dag_run.run_id,
            rules_path=rules_path,
        )
        staging = staging_error = None
        try:
            from scalingo_staging_sync.hooks.postgres import pg_target_from_connection

            staging = pg_target_from_connection(self.staging_conn_id)
        except Exception as exc:  # noqa: BLE001 - reported as a failed check
            staging_error = f"{type(exc).__name__}: {exc}"
        from scalingo_staging_sync.hooks.scalingo import ScalingoHook

        # one hook (one token exchange) for the preflight's lookups and the recovery's scale-back
        hook = ScalingoHook(scalingo_conn_id=self.scalingo_conn_id)
        scalingo = hook if settings.source_app else None
        run_is_manual = str(getattr(dag_run, "run_type", "")).lower().endswith("manual")
        from scalingo_staging_sync.anonymize.salt import read_salt

        recovery = self._recover(settings, staging, None if settings.dry_run else hook)
        result = run_preflight(
            settings,
            staging=staging,
            scalingo=scalingo,
            run_is_manual=run_is_manual,
            salt=read_salt(),
            environ=os.environ,
            staging_error=staging_error,
            pg_bin_dir=settings.pg_bin_dir,
            download_checker=self._download_checker(settings),
            leftovers_report=recovery,  # the recovery's read, not a second one
        )
        result.checks.insert(0, CheckResult("rules_file_valid", True, f"{rules_path} is valid"))
        result.facts["recovery"] = recovery
        if recovery.get("error"):
            result.checks = [
                CheckResult(c.name, False, f"finishing what an earlier run left failed: {recovery['error']}")
                if c.name == "no_leftover_state"
                else c
                for c in result.checks
            ]
        if result.facts.get("addon_id"):
            settings = settings.replace(addon_id=result.facts["addon_id"])
        if settings.backup == "latest" and (result.facts.get("backup") or {}).get("id"):
            # the backup the checks passed on is the one fetched, even if a newer one finishes meanwhile
            settings = settings.replace(backup=str(result.facts["backup"]["id"]))
        ti.xcom_push(key=SETTINGS_KEY, value=settings.to_json())
        ti.xcom_push(key=PREFLIGHT_KEY, value=result.to_json())
        if settings.dry_run:  # the preflight: every check printed, failed ones too
            self._print_dry_run(settings, rules, result, staging)
        result.raise_if_failed()
        return not settings.dry_run

    def _recover(self, settings: Any, staging: Any, scaler: Any = None) -> dict[str, Any]:
        """Finish what an interrupted run left, before any check or step (report only on a dry run).
        Never raises: a failure is recorded and fails ``no_leftover_state``. ``scaler``: the gate's
        ScalingoHook (scales an app back); a real run without one builds its own."""
        from scalingo_staging_sync import safety
        from scalingo_staging_sync.restore import targets

        if staging is None:
            return {"attempted": False, "reason": "the staging connection was not read"}
        host_check = safety.check_target_host_not_production(staging.host, settings.production_host_patterns)
        if not host_check.passed:
            # never touch a database that looks like production, not even to clean it
            return {"attempted": False, "reason": host_check.detail}
        if scaler is None and not settings.dry_run:
            from scalingo_staging_sync.hooks.scalingo import ScalingoHook

            scaler = ScalingoHook(scalingo_conn_id=self.scalingo_conn_id)
        try:
            report = targets.recover_leftovers(staging, scaler, dry_run=settings.dry_run)
        except Exception as exc:  # noqa: BLE001 - recorded, and the run is refused
            self.log.error("leftovers of an earlier run could not be finished: %s", exc)
            return {"attempted": True, "dry_run": settings.dry_run, "error": f"{type(exc).__name__}: {exc}"}
        verb = "would do" if settings.dry_run else "did"
        if report["found"]:
            self.log.warning(
                "leftovers of an earlier run: %s; the gate %s: %s",
                "; ".join(report["found"]),
                verb,
                "; ".join(report["actions"]) or "nothing",
            )
        else:
            self.log.info("no leftovers of an earlier run")
        return {"attempted": True, **report}

    def _download_checker(self, settings: Any) -> Any:
        """``location -> detail`` for a URL download location, or None (reported "not checked").

        The checker proves the location by raising when it cannot be written (``storage.probe_writable``
        returns None then): None is a pass; False or an empty string is a refusal; anything else is
        the detail."""
        checker = self.download_checker
        if isinstance(checker, str) and checker.strip():
            checker = import_callable(checker.strip())
        if checker is None:
            from scalingo_staging_sync import storage

            checker = getattr(storage, "probe_writable", None)
        if checker is None:
            return None
        conn_id = settings.download_conn_id

        def check(location: str) -> str | None:
            detail = checker(location, conn_id)
            if detail is None:
                via = f" with connection {conn_id!r}" if conn_id else ""
                name = getattr(checker, "__qualname__", type(checker).__name__)
                return f"{location} is writable{via} (proven by {name})"
            return str(detail) if detail else None

        return check

    def _print_dry_run(self, settings: Any, rules: Any, result: Any, staging: Any) -> None:
        recovery = result.facts.get("recovery") or {}
        verdict = "every check passed" if result.passed else "REFUSED: a real run would stop here"
        lines = [
            f"DRY RUN ({verdict}): nothing will be changed. Leftovers of an earlier run: "
            + ("; ".join(recovery.get("found") or []) or "none")
            + (
                " (a real run first does: "
                + "; ".join(a.removeprefix("would ") for a in recovery["actions"])
                + ")"
                if recovery.get("actions")
                else ""
            ),
            f"Preflight ({sum(c.passed for c in result.checks)}/{len(result.checks)} checks passed):",
            *(f"  [{'PASS' if c.passed else 'FAIL'}] {c.name}: {c.detail}" for c in result.checks),
            "The run would:",
            f"  take backup {settings.backup!r} of app {settings.source_app!r} "
            f"(addon {result.facts.get('addon_id')!r})",
            f"  restore into: {staging.describe() if staging else '?'} (mode {settings.restore_mode})",
            f"  exclude data of: {[str(t) for t in settings.exclude_tables] or 'nothing'}",
            "  anonymize:",
        ]
        for index, rule in enumerate(rules.anonymization_tables):
            raw = rules.raw.get("anonymization_tables", [])[index] if rules.raw else {}
            how = (
                f"strategy {raw.get('strategy')}"
                if raw.get("strategy")
                else "inline query"
                if raw.get("query")
                else f"columns {sorted((raw.get('columns') or {}).keys())}"
            )
            lines.append(f"    [{index}] {rule.table}: {how}")
        lines.append(
            "  PII scan: "
            + (
                f"on, {settings.pii_on_unmasked} on unmasked"
                if settings.pii_enabled
                else "off (pii_scan.enabled)"
            )
        )
        lines.append(f"  verification: {'on' if settings.verification_enabled else 'off'}")
        lines.append(
            f"  seeds: {list(settings.seeds) or 'none'}; post-sync commands: "
            f"{list(settings.post_sync_commands) or 'none'} in {settings.target_app!r}"
        )
        for line in lines:
            self.log.info("%s", line)


def _skip_when_empty(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) and k and v for k, v in value.items()
    ):
        raise GateConfigError(
            f"skip_when_empty={value!r}: give a mapping of task id to run setting, e.g. {{'run_seeds': 'seeds'}}"
        )
    return dict(value)


#: trigger rules of a task after a skipped one that run it when nothing before it failed
_ACCEPTS_A_SKIP = ("none_failed_min_one_success", "none_failed")


def _check_skippable(task: Any) -> None:
    """A task the gate may skip beforehand: its upstream's failure still reaches the run's state.

    A skipped task carries no upstream failure, so a failed check before it would leave the run
    "success" if the skip were the only path from that check to the end of the run. Required: a task
    after it that is not a teardown (a teardown's state does not decide the run's), and every such
    task waiting directly for each task the skipped one waits for."""
    after = [t for t in task.downstream_list if not getattr(t, "is_teardown", False)]
    if not after:
        raise GateConfigError(
            f"skip_when_empty names {task.task_id!r}, which has no task after it but teardowns: skipped "
            "beforehand, it would hide a failure of the tasks before it (the run would end in success); "
            "remove it from skip_when_empty"
        )
    before = set(task.upstream_task_ids)
    for t in after:
        rule = str(getattr(t.trigger_rule, "value", t.trigger_rule))
        if rule not in _ACCEPTS_A_SKIP:
            raise GateConfigError(
                f"skip_when_empty names {task.task_id!r}, but {t.task_id!r} after it has trigger_rule "
                f"{rule!r}: a skipped {task.task_id!r} would skip it too; give it trigger_rule="
                "'none_failed_min_one_success', or remove the task from skip_when_empty"
            )
        missing = sorted(before - set(t.upstream_task_ids))
        if missing:
            raise GateConfigError(
                f"skip_when_empty names {task.task_id!r}, but {t.task_id!r} after it does not wait for "
                f"{missing} directly: wire {missing} >> {t.task_id!r} (with trigger_rule="
                "'none_failed_min_one_success'), or remove it from skip_when_empty"
            )
