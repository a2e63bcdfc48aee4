"""Pre-flight safety checks: is it safe to overwrite this target with production data?

Every check is named, evaluated, and reported (log, audit); the run proceeds only when all pass.
Checks fail closed: a value that cannot be read or parsed is a failure, never a pass.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

from scalingo_staging_sync.errors import SyncError

DEFAULT_PRODUCTION_PATTERNS = ("prod", "production")


class SafetyCheckFailed(SyncError, RuntimeError):
    """One or more safety checks failed; nothing was touched."""

    def __init__(self, failed: list[CheckResult]):
        self.failed = failed
        lines = "; ".join(f"{c.name}: {c.detail}" for c in failed)
        super().__init__(f"safety gate refused the run ({len(failed)} check(s) failed): {lines}")


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    detail: str

    def to_dict(self) -> dict:
        return asdict(self)


def _compile(patterns: Iterable[str], what: str) -> list[re.Pattern]:
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern, re.IGNORECASE))
        except re.error as exc:
            raise ValueError(
                f"production_patterns.{what}: {pattern!r} is not a valid regular expression ({exc}); fix it in the rules file"
            ) from exc
    return compiled


def _matching(value: str, patterns: list[re.Pattern]) -> list[str]:
    return [p.pattern for p in patterns if p.search(value)]


def check_target_app_not_production(target_app: str | None, app_patterns: Iterable[str]) -> CheckResult:
    name = "target_app_not_production"
    if not target_app:
        return CheckResult(
            name,
            False,
            "no target app given: set target_app in the rules file, the target_app param, or "
            "[scalingo_staging_sync] target_app (env AIRFLOW__SCALINGO_STAGING_SYNC__TARGET_APP; the older "
            "SCALINGO_STAGING_SYNC_TARGET_APP is read too, $APP no longer)",
        )
    hits = _matching(target_app, _compile(app_patterns, "apps"))
    if hits:
        return CheckResult(name, False, f"target app {target_app!r} matches production pattern(s) {hits}")
    return CheckResult(name, True, f"target app {target_app!r} matches no production pattern")


def check_target_host_not_production(target_host: str | None, host_patterns: Iterable[str]) -> CheckResult:
    name = "target_host_not_production"
    if not target_host or not target_host.strip():
        return CheckResult(
            name, False, "the staging connection has no host: cannot prove it is not production"
        )
    hits = _matching(target_host, _compile(host_patterns, "hosts"))
    if hits:
        return CheckResult(
            name, False, f"target database host {target_host!r} matches production pattern(s) {hits}"
        )
    return CheckResult(name, True, f"target database host {target_host!r} matches no production pattern")


def check_target_is_not_source(
    source_app: str | None,
    target_app: str | None,
    target_host: str | None,
    source_resource_ids: Iterable[str] = (),
) -> CheckResult:
    name = "target_is_not_source"
    if not source_app:
        return CheckResult(
            name, False, "no source app given: set source_app in the rules file or the DAG param"
        )
    if target_app and source_app.strip().lower() == target_app.strip().lower():
        return CheckResult(name, False, f"target app {target_app!r} is the source app")
    host = (target_host or "").lower()
    for resource_id in source_resource_ids:
        if resource_id and resource_id.lower() in host:
            return CheckResult(
                name,
                False,
                f"target database host {target_host!r} contains the source addon's resource id {resource_id!r}: "
                "the staging connection points at the production database",
            )
    return CheckResult(
        name, True, f"source {source_app!r} differs from target {target_app!r} (app and database host)"
    )


#: what Scalingo puts in every container (doc.scalingo.com, platform/app/environment): $APP is the app
#: the container runs in, $CONTAINER its container (web-1, worker-1, one-off-1234, ...)
SCALINGO_CONTAINER_VARS = ("APP", "CONTAINER")


def scalingo_container_app(environ: Mapping[str, str]) -> str | None:
    """The app this process runs in when it runs in a Scalingo container (``$APP`` and ``$CONTAINER``
    both set, as Scalingo documents its runtime environment), else None."""
    app, container = (environ.get(v, "").strip() for v in SCALINGO_CONTAINER_VARS)
    return app if app and container else None


def check_target_not_own_app(target_app: str | None, environ: Mapping[str, str]) -> CheckResult:
    """Inside a Scalingo container, ``$APP`` is the app Airflow itself runs in: never the target
    (maintenance would scale Airflow to zero)."""
    name = "target_app_not_own_container"
    own = scalingo_container_app(environ)
    if own is None:
        return CheckResult(name, True, "not running in a Scalingo container ($APP / $CONTAINER unset)")
    if target_app and target_app.strip().lower() == own.lower():
        return CheckResult(
            name,
            False,
            f"target app {target_app!r} is the app this Airflow runs in ($APP in container "
            f"{environ.get('CONTAINER')!r}): maintenance and post-sync commands would act on Airflow "
            "itself. Set target_app (rules file, target_app param or [scalingo_staging_sync] target_app) "
            "to the staging app",
        )
    return CheckResult(name, True, f"target app {target_app!r} is not this container's app {own!r}")


def _norm_host(host: str | None) -> str:
    return (host or "").strip().rstrip(".").lower()


def check_target_bound_to_staging(
    target_app: str | None,
    location: Mapping[str, object] | None,
    staging_host: str | None,
    staging_port: int | None,
    staging_dbname: str | None,
) -> CheckResult:
    """The target app's own PostgreSQL addon (``location``: host, port, dbname read through the API)
    is the database of the staging connection. Otherwise maintenance scaling and post-sync commands
    would act on an app whose database is not the one being overwritten."""
    name = "target_app_bound_to_staging"
    if not target_app:
        return CheckResult(name, False, "no target app given: cannot prove it owns the staging database")
    if not location:
        return CheckResult(name, False, f"the PostgreSQL addon of target app {target_app!r} was not read")
    want = (_norm_host(str(location.get("host") or "")), int(location.get("port") or 5432))
    have = (_norm_host(staging_host), int(staging_port or 5432))
    where = f"{location.get('host')}:{location.get('port')}/{location.get('dbname')}"
    mine = f"{staging_host}:{staging_port}/{staging_dbname}"
    if not want[0] or want != have or str(location.get("dbname") or "") != (staging_dbname or ""):
        return CheckResult(
            name,
            False,
            f"the PostgreSQL addon of target app {target_app!r} is {where} (from "
            f"{location.get('source')}), but the staging connection points at {mine}: fix target_app, "
            "or the staging_db connection's host, port and database so both name the same database",
        )
    return CheckResult(
        name, True, f"target app {target_app!r} owns the staging database {mine} ({location.get('source')})"
    )


def check_confirmation(
    run_is_manual: bool, require_confirmation: bool, confirm_target: str | None, target_app: str | None
) -> CheckResult:
    name = "manual_run_confirmed"
    if not (run_is_manual and require_confirmation):
        why = "scheduled run" if not run_is_manual else "require_confirmation is off"
        return CheckResult(name, True, f"no confirmation needed ({why})")
    if not confirm_target:
        return CheckResult(
            name, False, f"this manual run must be confirmed: set the confirm_target param to {target_app!r}"
        )
    if confirm_target != target_app:
        return CheckResult(
            name, False, f"confirm_target {confirm_target!r} does not equal the target app {target_app!r}"
        )
    return CheckResult(name, True, f"confirmed target {target_app!r}")


def enforce(results: list[CheckResult]) -> None:
    failed = [r for r in results if not r.passed]
    if failed:
        raise SafetyCheckFailed(failed)
