"""Preflight: the named checks that run before anything is touched (the safety gate, and the dry run).

Every check is a :class:`~scalingo_staging_sync.safety.CheckResult` (name, passed, detail that says how
to fix a failure). They are logged, written to the audit, and the run proceeds only when all pass. A dry
run performs the same checks (it is the preflight, like the original gem's ``rake check``) but never
needs ``confirm_target``, because it changes nothing.

The core is handed everything: settings, the staging target, a Scalingo client (anything with
``get_postgresql_addon(app)``), the salt, the environment. It never reads Airflow state.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scalingo_staging_sync import safety
from scalingo_staging_sync import seeds as seeds_mod
from scalingo_staging_sync.anonymize import salt as saltmod
from scalingo_staging_sync.restore import pgtools
from scalingo_staging_sync.safety import CheckResult
from scalingo_staging_sync.settings import RunSettings

log = logging.getLogger(__name__)


@dataclass
class PreflightResult:
    checks: list[CheckResult] = field(default_factory=list)
    #: facts found on the way, reused by later steps (e.g. the source addon id)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def add(self, check: CheckResult) -> CheckResult:
        self.checks.append(check)
        log.info("preflight %-30s %s  %s", check.name, "PASS" if check.passed else "FAIL", check.detail)
        return check

    def run(self, name: str, fn: Callable[[], CheckResult]) -> CheckResult:
        """Run one check; an unexpected exception is a failed check (fail closed), never a pass."""
        try:
            return self.add(fn())
        except Exception as exc:  # noqa: BLE001 - every failure is reported as the check's result
            return self.add(CheckResult(name, False, f"{type(exc).__name__}: {exc}"))

    def raise_if_failed(self) -> None:
        safety.enforce(self.checks)

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": [c.to_dict() for c in self.checks], "facts": self.facts}


#: every check ``run_preflight`` may run, in order (the dry run lists them; ``manual_run_confirmed`` is
#: skipped by a dry run)
CHECKS = (
    "target_app_not_production",
    "target_app_not_own_container",
    "staging_connection_readable",
    "target_host_not_production",
    "salt_valid",
    "pg_client_tools",
    "seed_files_readable",
    "download_dir_writable",
    "source_addon_found",
    "backup_available",
    "target_is_not_source",
    "target_app_bound_to_staging",
    "no_leftover_state",
    "manual_run_confirmed",
)

#: ``download_checker(location) -> str``: proves a URL download location (``s3://...``) is writable
#: and returns a detail; raises (or returns a falsy value) when it is not
DownloadChecker = Callable[[str], "str | None"]


def _client(scalingo: Any) -> Any:
    """The core client behind a ScalingoHook (``.client``), or the object itself."""
    if scalingo is None:
        raise RuntimeError("no Scalingo connection was given")
    return getattr(scalingo, "client", scalingo)


def check_download_dir(location: str, checker: DownloadChecker | None = None) -> CheckResult:
    """The download location can be written: a local directory (or its nearest existing parent, where a
    temporary file is created and removed; nothing else is created), or a URL proven by ``checker``
    (without one, a URL is not checked and the detail says so)."""
    name = "download_dir_writable"
    if not location:
        return CheckResult(name, False, "no download directory configured: set download_dir")
    if "://" in location:
        if checker is None:
            return CheckResult(
                name, True, f"{location}: not checked (no checker for this storage); written when downloading"
            )
        detail = checker(location)
        if not detail:
            return CheckResult(name, False, f"{location} is not writable (the storage checker said no)")
        return CheckResult(name, True, str(detail))
    path = Path(location).expanduser()
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        return CheckResult(
            name,
            False,
            f"download directory {location} cannot be created: {probe} exists and is not a directory; "
            "set download_dir to a writable directory",
        )
    try:
        fd, tmp = tempfile.mkstemp(prefix=".scalingo-staging-sync-preflight-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        return CheckResult(
            name,
            False,
            f"download directory {location}: cannot write in {probe} ({exc.strerror or exc}); "
            "set download_dir to a directory the Airflow worker can write",
        )
    usage = shutil.disk_usage(probe)
    where = "exists" if probe == path else f"will be created under {probe}"
    return CheckResult(name, True, f"{location} is writable ({where}; {usage.free / 1e9:.1f} GB free)")


def run_preflight(
    settings: RunSettings,
    *,
    staging: Any | None,
    scalingo: Any | None,
    run_is_manual: bool,
    salt: str | None = None,
    environ: Mapping[str, str] | None = None,
    staging_error: str | None = None,
    pg_bin_dir: str | None = None,
    download_checker: DownloadChecker | None = None,
    check_leftovers: bool = True,
    leftovers_report: Mapping[str, Any] | None = None,
) -> PreflightResult:
    """Run every preflight check for ``settings`` (see :data:`CHECKS`). ``staging`` is a
    :class:`~scalingo_staging_sync.pgconn.PgTarget` (None when the connection could not be read:
    ``staging_error`` says why); ``scalingo`` a ScalingoHook or core ScalingoClient; ``salt`` the
    anonymization salt (the adapter reads the Airflow Variable); ``environ`` the process environment
    (``$APP``/``$CONTAINER``, ``$SCALINGO_STAGING_SYNC_PG_BIN``). Only reads: it scales nothing, runs
    nothing, writes nothing. A dry run performs the same checks but never needs ``confirm_target``.

    ``no_leftover_state``: leftovers of an interrupted run (scratch database, half-done promote,
    unverified in-place data) must have been finished by
    :func:`scalingo_staging_sync.restore.targets.recover_leftovers`, which the gate calls first; a dry
    run lists what that would do and passes. ``leftovers_report``: what the gate's own
    ``recover_leftovers`` call of this task returned, reused instead of reading staging again when it
    is that same read (a dry run) or found nothing (a real run that found nothing has read everything
    the check reads, and changed nothing)."""
    environ = os.environ if environ is None else environ
    result = PreflightResult()
    target_app = settings.target_app
    result.run(
        "target_app_not_production",
        lambda: safety.check_target_app_not_production(target_app, settings.production_app_patterns),
    )
    result.run("target_app_not_own_container", lambda: safety.check_target_not_own_app(target_app, environ))
    own_app = safety.scalingo_container_app(environ)
    if own_app:
        result.facts["scalingo_container_app"] = own_app
    if staging is None:
        result.add(
            CheckResult("staging_connection_readable", False, staging_error or "no staging connection")
        )
    else:
        result.add(CheckResult("staging_connection_readable", True, f"staging is {staging.describe()}"))
    host = getattr(staging, "host", None)
    result.run(
        "target_host_not_production",
        lambda: safety.check_target_host_not_production(host, settings.production_host_patterns),
    )

    # ---------------------------------------------------------------- local: salt, tools, seeds, disk
    def _salt() -> CheckResult:
        problem = saltmod.salt_problem(salt)
        if problem:
            return CheckResult("salt_valid", False, f"{problem}: {saltmod.HOW_TO}")
        return CheckResult(
            "salt_valid",
            True,
            f"salt set ({len(salt.encode('utf-8'))} bytes, {len(set(salt))} distinct characters, "  # type: ignore[union-attr]
            "not a known placeholder)",
        )

    result.run("salt_valid", _salt)

    def _tools() -> CheckResult:
        versions = pgtools.client_tools_versions(pg_bin_dir or environ.get(pgtools.PG_BIN_ENV) or None)
        result.facts["pg_tools"] = versions
        return CheckResult(
            "pg_client_tools",
            True,
            f"{versions['pg_restore']} and {versions['psql']} (from {versions['bin_dir'] or 'PATH'})",
        )

    result.run("pg_client_tools", _tools)

    def _seeds() -> CheckResult:
        if not settings.seeds:
            return CheckResult("seed_files_readable", True, "no seed files configured")
        paths = seeds_mod.check_seed_files(settings.seeds, settings.rules_file or None)
        return CheckResult(
            "seed_files_readable", True, f"{len(paths)} seed file(s) readable: {[p.name for p in paths]}"
        )

    result.run("seed_files_readable", _seeds)
    result.facts["download_dir"] = settings.download_dir
    result.run("download_dir_writable", lambda: check_download_dir(settings.download_dir, download_checker))

    # ---------------------------------------------------------------- Scalingo: source, backup, target
    resource_ids: list[str] = []
    addon: dict[str, Any] = {}

    def _addon() -> CheckResult:
        if not settings.source_app:
            return CheckResult(
                "source_addon_found", False, "no source app given: set source_app in the rules file or param"
            )
        found = _client(scalingo).get_postgresql_addon(settings.source_app)
        addon.update(found)
        resource_ids.extend(str(found[k]) for k in ("resource_id", "id") if found.get(k))
        result.facts["addon_id"] = found.get("id")
        result.facts["source_addon"] = {
            "id": found.get("id"),
            "resource_id": found.get("resource_id"),
            "plan": (found.get("plan") or {}).get("name"),
        }
        return CheckResult(
            "source_addon_found",
            True,
            f"source app {settings.source_app!r} has PostgreSQL addon {found.get('id')!r}",
        )

    result.run("source_addon_found", _addon)

    def _backup() -> CheckResult:
        name = "backup_available"
        if not addon.get("id"):
            return CheckResult(name, False, "the source addon was not found (see source_addon_found)")
        client, app, addon_id = _client(scalingo), settings.source_app, str(addon["id"])
        wanted = (settings.backup or "latest").strip()
        if wanted == "new":
            database = client.get_database(app, addon_id)
            result.facts["source_database"] = {
                "status": database.get("status"),
                "version": database.get("readable_version"),
            }
            if database.get("status") in ("stopped",):
                return CheckResult(
                    name, False, f"the source database is {database.get('status')!r}: no backup can be made"
                )
            return CheckResult(
                name,
                True,
                f"a new backup can be requested: the Database API answers for addon {addon_id} "
                f"(status {database.get('status')!r}, PostgreSQL {database.get('readable_version')})",
            )
        backup = client.latest_done_backup(app, addon_id) if wanted == "latest" else None
        if backup is None:
            backup = client.get_backup(app, addon_id, wanted)
        result.facts["backup"] = {k: backup.get(k) for k in ("id", "name", "created_at", "size", "status")}
        if backup.get("status") != "done":
            return CheckResult(
                name,
                False,
                f"backup {wanted!r} is {backup.get('status')!r}, not 'done': wait for it to finish, or use "
                "backup='latest' (newest finished) or 'new'",
            )
        return CheckResult(
            name,
            True,
            f"backup {backup.get('id')} ({backup.get('created_at')}, {backup.get('size')} bytes) is done",
        )

    result.run("backup_available", _backup)
    result.run(
        "target_is_not_source",
        lambda: safety.check_target_is_not_source(settings.source_app, target_app, host, resource_ids),
    )

    def _bound() -> CheckResult:
        if staging is None:
            return CheckResult("target_app_bound_to_staging", False, "the staging connection was not read")
        if not target_app:
            return safety.check_target_bound_to_staging(None, None, None, None, None)
        location = _client(scalingo).postgresql_location(target_app)
        result.facts["target_location"] = {
            k: location.get(k) for k in ("app", "addon_id", "host", "port", "dbname", "source")
        }
        return safety.check_target_bound_to_staging(
            target_app, location, staging.host, staging.port, staging.dbname
        )

    result.run("target_app_bound_to_staging", _bound)

    # ---------------------------------------------------------------- leftovers of an earlier run
    if check_leftovers:

        def _leftovers() -> CheckResult:
            name = "no_leftover_state"
            if staging is None:
                return CheckResult(name, False, "the staging connection was not read")
            from scalingo_staging_sync.restore import targets

            earlier = leftovers_report or {}
            if (
                earlier.get("attempted")
                and not earlier.get("error")
                and (earlier.get("dry_run") or not earlier.get("found"))
            ):
                report = {
                    "found": list(earlier.get("found") or []),
                    "actions": list(earlier.get("actions") or []),
                }
                return _leftovers_check(report)
            # a short retry: the gate has just called recover_leftovers with its own retries (retry=None
            # would mean the teardowns' full ConnectRetry, minutes against an unreachable server)
            report = targets.recover_leftovers(
                staging,
                dry_run=True,
                retry=targets.ConnectRetry(attempts=2, base_delay_s=0.5, max_delay_s=1.0),
            )
            return _leftovers_check(report)

        def _leftovers_check(report: Mapping[str, Any]) -> CheckResult:
            from scalingo_staging_sync.restore import targets

            name = "no_leftover_state"
            result.facts["leftovers"] = report["found"]
            if not report["found"]:
                return CheckResult(
                    name, True, "no scratch database, half-done promote or unverified data left"
                )
            if settings.dry_run:
                return CheckResult(
                    name,
                    True,
                    "an earlier run left: " + "; ".join(report["found"]) + ". A real run first "
                    "does: " + "; ".join(report["actions"]),
                )
            return CheckResult(
                name,
                False,
                "an earlier run left: " + "; ".join(report["found"]) + ". The gate must finish it first "
                "(scalingo_staging_sync.restore.targets.recover_leftovers), or run "
                f"`{targets.recovery_command(staging)}`",
            )

        result.run("no_leftover_state", _leftovers)

    if not settings.dry_run:  # a dry run changes nothing: no confirmation needed
        result.run(
            "manual_run_confirmed",
            lambda: safety.check_confirmation(
                run_is_manual, settings.require_confirmation, settings.confirm_target, target_app
            ),
        )
    return result
