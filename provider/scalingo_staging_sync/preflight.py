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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from scalingo_staging_sync import safety
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


def run_preflight(
    settings: RunSettings,
    *,
    staging: Any | None,
    scalingo: Any | None,
    run_is_manual: bool,
    salt: str | None = None,
    environ: Mapping[str, str] | None = None,
    staging_error: str | None = None,
) -> PreflightResult:
    """Run every preflight check for ``settings``. ``staging`` is a :class:`~scalingo_staging_sync.pgconn.PgTarget`
    (None when the connection could not be read: ``staging_error`` says why)."""
    environ = os.environ if environ is None else environ
    result = PreflightResult()
    result.run(
        "target_app_not_production",
        lambda: safety.check_target_app_not_production(settings.target_app, settings.production_app_patterns),
    )
    if staging is None:
        result.add(
            CheckResult("staging_connection_readable", False, staging_error or "no staging connection")
        )
    host = getattr(staging, "host", None)
    result.run(
        "target_host_not_production",
        lambda: safety.check_target_host_not_production(host, settings.production_host_patterns),
    )

    resource_ids: list[str] = []
    if settings.source_app and scalingo is not None:

        def _addon() -> CheckResult:
            addon = scalingo.get_postgresql_addon(settings.source_app)
            resource_ids.extend(str(addon[k]) for k in ("resource_id", "id") if addon.get(k))
            result.facts["addon_id"] = addon.get("id")
            return CheckResult(
                "source_addon_found",
                True,
                f"source app {settings.source_app!r} has addon {addon.get('id')!r}",
            )

        result.run("source_addon_found", _addon)
    result.run(
        "target_is_not_source",
        lambda: safety.check_target_is_not_source(
            settings.source_app, settings.target_app, host, resource_ids
        ),
    )
    if not settings.dry_run:  # a dry run changes nothing: no confirmation needed
        result.run(
            "manual_run_confirmed",
            lambda: safety.check_confirmation(
                run_is_manual, settings.require_confirmation, settings.confirm_target, settings.target_app
            ),
        )
    return result
