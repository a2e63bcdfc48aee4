"""PromoteStagingOperator and StagingCleanupOperator: make the verified copy live; leave nothing unsafe."""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator

from scalingo_staging_sync.hooks.postgres import DEFAULT_STAGING_CONN_ID, pg_target_from_connection
from scalingo_staging_sync.operators._base import as_bool, as_float, as_int, as_str, maps_sync_errors


def _scaler(scalingo_conn_id: str):
    from scalingo_staging_sync.hooks.scalingo import ScalingoHook

    return ScalingoHook(scalingo_conn_id=scalingo_conn_id)


class PromoteStagingOperator(BaseOperator):
    """Make the verified restore live (:func:`scalingo_staging_sync.restore.targets.promote`).

    :param postgres_conn_id: postgres connection of the staging database (the live database's name).
    :param mode: ``auto``, ``swap`` or ``in_place``: the mode the restore resolved (templated).
    :param keep_previous: swap: keep the replaced database as ``<db>__previous`` (templated).
    :param terminate_sessions: end sessions on the live database before renaming it.
    :param maintenance: in_place: scale the app back up after maintenance (templated).
    :param scalingo_conn_id: Scalingo connection (maintenance).

    XCom ``return_value``: ``{"section": "promote", "mode", "database", "previous", "scaled_back", "duration_s"}``.
    """

    template_fields: Sequence[str] = ("mode", "keep_previous", "maintenance")
    ui_color = "#abebc6"

    def __init__(
        self,
        *,
        postgres_conn_id: str = DEFAULT_STAGING_CONN_ID,
        mode: str = "auto",
        keep_previous: Any = True,
        terminate_sessions: bool = True,
        maintenance: Any = False,
        scalingo_conn_id: str = "scalingo_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.postgres_conn_id = postgres_conn_id
        self.mode = mode
        self.keep_previous = keep_previous
        self.terminate_sessions = terminate_sessions
        self.maintenance = maintenance
        self.scalingo_conn_id = scalingo_conn_id

    @maps_sync_errors
    def execute(self, context: Any) -> dict:
        from scalingo_staging_sync.restore import targets

        target = pg_target_from_connection(self.postgres_conn_id)
        mode = targets.resolve_mode(target, as_str(self.mode, default="auto"))
        scaler = _scaler(self.scalingo_conn_id) if as_bool(self.maintenance, "maintenance") else None
        started = time.monotonic()
        out = targets.promote(
            target,
            mode,
            keep_previous=as_bool(self.keep_previous, "keep_previous"),
            terminate=self.terminate_sessions,
            scaler=scaler,
        )
        result = {"section": "promote", **out, "duration_s": round(time.monotonic() - started, 3)}
        self.log.info("promoted: %s", result)
        return result


class StagingCleanupOperator(BaseOperator):
    """Teardown: drop a leftover scratch database, wipe unverified in-place data, scale the app back
    after maintenance, remove the downloaded files, and prove it
    (:func:`scalingo_staging_sync.restore.targets.cleanup`: reconnects with retries and backoff, then
    re-reads the catalog). Use it with ``.as_teardown()``, before the audit report.

    :param postgres_conn_id: postgres connection of the staging database.
    :param mode: the mode the restore resolved (templated). Empty: nothing was restored, the
        database is left alone.
    :param verified: True when the copy was promoted (kept), False to wipe in-place data, None (or
        empty) to read the in-place state table (templated).
    :param maintenance: scale the app back through ``scalingo_conn_id`` (templated).
    :param scalingo_conn_id: Scalingo connection (maintenance).
    :param download_dir: the run's download directory, removed (templated).
    :param connect_attempts: / :param connect_base_delay_s: / :param connect_max_delay_s: how long
        the cleanup keeps reconnecting to a staging server that refuses connections (templated;
        default :class:`~scalingo_staging_sync.restore.targets.ConnectRetry`: 8 attempts, 1 s doubling
        up to 30 s).

    XCom ``return_value`` (also key ``cleanup``, pushed even when the task fails):
    ``{"proven": bool | None, "database": {"section": "cleanup", "proven", "dropped_scratch", "wiped",
    "scaled_back", "attempts", ...} | {"section", "mode", "proven": False, "error"} | None,
    "removed": path | None, "warning": str | None}``.

    When the cleanup cannot be proved (:class:`~scalingo_staging_sync.restore.targets.CleanupNotProvenError`
    after the retries), the task fails at once (``AirflowFailException``, no Airflow retry: the core
    already retried) with the core's message: staging may hold unmasked production data, and the
    command that finishes the job. The failure notifier posts it to Slack and the audit report (written
    after this task) records it.
    """

    template_fields: Sequence[str] = (
        "mode",
        "verified",
        "maintenance",
        "download_dir",
        "connect_attempts",
        "connect_base_delay_s",
        "connect_max_delay_s",
    )
    ui_color = "#e5e8e8"

    def __init__(
        self,
        *,
        postgres_conn_id: str = DEFAULT_STAGING_CONN_ID,
        mode: str | None = "auto",
        verified: Any = None,
        maintenance: Any = False,
        scalingo_conn_id: str = "scalingo_default",
        download_dir: str | None = None,
        connect_attempts: Any = None,
        connect_base_delay_s: Any = None,
        connect_max_delay_s: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.postgres_conn_id = postgres_conn_id
        self.mode = mode
        self.verified = verified
        self.maintenance = maintenance
        self.scalingo_conn_id = scalingo_conn_id
        self.download_dir = download_dir
        self.connect_attempts = connect_attempts
        self.connect_base_delay_s = connect_base_delay_s
        self.connect_max_delay_s = connect_max_delay_s

    def _retry(self):
        from scalingo_staging_sync.restore.targets import ConnectRetry

        default = ConnectRetry()
        return ConnectRetry(
            attempts=as_int(self.connect_attempts, "connect_attempts", default=default.attempts),
            base_delay_s=as_float(
                self.connect_base_delay_s, "connect_base_delay_s", default=default.base_delay_s
            ),
            max_delay_s=as_float(
                self.connect_max_delay_s, "connect_max_delay_s", default=default.max_delay_s
            ),
        )

    @maps_sync_errors
    def execute(self, context: Any) -> dict:
        from scalingo_staging_sync.restore import targets

        out: dict[str, Any] = {"proven": None, "database": None, "removed": None, "warning": None}
        failure: BaseException | None = None
        mode = as_str(self.mode)
        if mode:
            verified = None if as_str(self.verified) is None else as_bool(self.verified, "verified")
            target = pg_target_from_connection(self.postgres_conn_id)
            scaler = _scaler(self.scalingo_conn_id) if as_bool(self.maintenance, "maintenance") else None
            started = time.monotonic()

            def on_retry(attempt: int, exc: BaseException) -> None:
                self.log.warning("cleanup: staging unreachable (attempt %d), retrying: %s", attempt, exc)

            try:
                done = targets.cleanup(
                    target, mode, verified=verified, scaler=scaler, retry=self._retry(), on_retry=on_retry
                )
                out["proven"] = True
                out["database"] = {
                    "section": "cleanup",
                    "database": target.dbname,
                    **done,
                    "mode": mode,
                    "resolved_mode": done.get("mode"),
                    "duration_s": round(time.monotonic() - started, 3),
                }
            except targets.CleanupNotProvenError as exc:
                failure = exc
                out["proven"] = False
                out["warning"] = str(exc)
                out["database"] = {
                    "section": "cleanup",
                    "database": target.dbname,
                    "mode": mode,
                    "proven": False,
                    "error": str(exc),
                    "run": targets.recovery_command(target, mode if mode in targets.MODES else "auto"),
                    "duration_s": round(time.monotonic() - started, 3),
                }
                self.log.error("%s", exc)
            except Exception as exc:  # noqa: BLE001 - data proven but e.g. the app not scaled back
                failure = exc
                out["database"] = {"section": "cleanup", "mode": mode, "error": str(exc)}
                self.log.exception("database cleanup failed")
        else:
            out["proven"] = True
            self.log.info("nothing was restored: the staging database is left alone")
        download_dir = as_str(self.download_dir)
        if download_dir and "://" not in download_dir and Path(download_dir).exists():
            shutil.rmtree(download_dir, ignore_errors=True)
            out["removed"] = download_dir
        context["ti"].xcom_push(key="cleanup", value=out)
        if isinstance(failure, targets.CleanupNotProvenError):
            from airflow.sdk.exceptions import AirflowFailException

            # fail now, loudly: the core already retried with backoff; the message says what to run
            raise AirflowFailException(str(failure)) from failure
        if failure is not None:
            raise failure
        return out
