"""PromoteStagingOperator and StagingCleanupOperator: make the verified copy live; leave nothing unsafe."""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator

from scalingo_staging_sync.hooks.postgres import DEFAULT_STAGING_CONN_ID, pg_target_from_connection
from scalingo_staging_sync.operators._base import as_bool, as_mapping, as_str, maps_sync_errors, run_owner


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
            owner=run_owner(context),
        )
        result = {"section": "promote", **out, "duration_s": round(time.monotonic() - started, 3)}
        self.log.info("promoted: %s", result)
        return result


class StagingCleanupOperator(BaseOperator):
    """Teardown: drop a leftover scratch database, wipe unverified in-place data, scale the app back
    after maintenance, remove the downloaded files. Use it with ``.as_teardown()``.

    The database part is proven (:func:`scalingo_staging_sync.restore.targets.cleanup`: it reconnects
    with retries and backoff, ``connect_attempts`` tries from ``connect_base_delay_s`` doubling up to
    ``connect_max_delay_s``, default :class:`~scalingo_staging_sync.restore.targets.ConnectRetry`; then it
    re-reads the catalog). When it cannot be proven (``CleanupNotProvenError``) the task fails at once
    (``AirflowFailException``: the core already retried) with the core's message, which says that staging
    may hold unmasked production data and what to run; the failure notifier posts it to Slack, and the
    ``cleanup`` XCom (``"proven": False``, ``"warning"``) puts it in the audit report written after.

    :param postgres_conn_id: postgres connection of the staging database.
    :param mode: the mode the restore resolved (templated). Empty: nothing was restored, the
        database is left alone.
    :param verified: True when the copy was promoted (kept), False to wipe in-place data, None (or
        empty) to read the in-place state table (templated).
    :param maintenance: scale the app back through ``scalingo_conn_id`` (templated).
    :param scalingo_conn_id: Scalingo connection (maintenance).
    :param download_dir: the run's download directory, removed (templated); an object-storage URL: every
        object under it is deleted.
    :param stored_dump: the backup task's ``stored_dump`` (or its whole result): the stored object is
        deleted, with this worker's cache of the run (templated). See :meth:`remove_backup_copies`.
    :param download_conn_id: Airflow connection of the object storage (templated).

    XCom ``return_value``: ``{"database": {"section": "cleanup", "dropped_scratch", "wiped",
    "scaled_back", ...} | None, "removed": path | None, "backup": {"stored", "removed_objects",
    "caches_removed", "errors"}}``. Raises when the cleanup cannot be proved or a dump cannot be deleted,
    after pushing that dict under XCom key ``cleanup`` instead.
    """

    template_fields: Sequence[str] = (
        "mode",
        "verified",
        "maintenance",
        "download_dir",
        "stored_dump",
        "download_conn_id",
    )
    ui_color = "#e5e8e8"

    def __init__(
        self,
        *,
        postgres_conn_id: str = DEFAULT_STAGING_CONN_ID,
        mode: str | None = "auto",
        connect_attempts: int | None = None,
        connect_base_delay_s: float | None = None,
        connect_max_delay_s: float | None = None,
        verified: Any = None,
        maintenance: Any = False,
        scalingo_conn_id: str = "scalingo_default",
        download_dir: str | None = None,
        stored_dump: Any = None,
        download_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.postgres_conn_id = postgres_conn_id
        self.mode = mode
        self.connect_attempts = connect_attempts
        self.connect_base_delay_s = connect_base_delay_s
        self.connect_max_delay_s = connect_max_delay_s
        self.verified = verified
        self.maintenance = maintenance
        self.scalingo_conn_id = scalingo_conn_id
        self.download_dir = download_dir
        self.stored_dump = stored_dump
        self.download_conn_id = download_conn_id

    def _retry(self) -> Any:
        from scalingo_staging_sync.operators._base import as_float, as_int
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

        out: dict[str, Any] = {"database": None, "removed": None, "proven": None, "warning": None}
        errors: list[str] = []
        unproven: BaseException | None = None
        mode = as_str(self.mode)
        if mode and mode not in targets.MODES:  # an argument to fix: fails at once, nothing touched
            raise ValueError(
                f"StagingCleanupOperator: unknown mode {mode!r}: use one of {', '.join(targets.MODES)}"
            )
        if mode:
            verified = None if as_str(self.verified) is None else as_bool(self.verified, "verified")
            target = pg_target_from_connection(self.postgres_conn_id)
            scaler = _scaler(self.scalingo_conn_id) if as_bool(self.maintenance, "maintenance") else None
            started = time.monotonic()
            try:
                done = targets.cleanup(
                    target,
                    mode,
                    verified=verified,
                    scaler=scaler,
                    retry=self._retry(),
                    owner=run_owner(context),
                )
                out["proven"] = True
                out["database"] = {
                    "section": "cleanup",
                    "database": target.dbname,
                    "mode": mode,
                    **done,
                    "duration_s": round(time.monotonic() - started, 3),
                }
            except targets.CleanupNotProvenError as exc:
                # staging may hold unmasked production data: recorded for the audit, the task fails below
                self.log.error("%s", exc)
                unproven = exc
                errors.append(str(exc))
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
            except Exception as exc:
                self.log.exception("database cleanup failed")
                errors.append(f"database cleanup: {exc}")
                out["database"] = {"section": "cleanup", "mode": mode, "error": str(exc)}
        else:
            out["proven"] = None  # nothing restored: nothing to prove
            self.log.info("nothing was restored: the staging database is left alone")
        download_dir = as_str(self.download_dir)
        if download_dir and "://" not in download_dir and Path(download_dir).exists():
            shutil.rmtree(download_dir, ignore_errors=True)
            out["removed"] = download_dir
        errors += self.remove_backup_copies(context, out)
        if errors:
            # a failed task has no return_value: what was (not) cleaned goes under key "cleanup" for the audit
            context["ti"].xcom_push(key="cleanup", value=out)
            if unproven is not None:  # fail now and loudly (no Airflow retry: the core already retried)
                from airflow.sdk.exceptions import AirflowFailException

                raise AirflowFailException("; ".join(errors)) from unproven
            from scalingo_staging_sync.restore.errors import RestoreError

            raise RestoreError("; ".join(errors), retryable=True)
        return out

    def remove_backup_copies(self, context: Any, out: dict) -> list[str]:
        """Delete the stored dump, anything left under an object-storage download_dir and this worker's
        cache of the run (:func:`scalingo_staging_sync.operators._dump.remove_run_dumps`); records the
        outcome in ``out["backup"]`` and returns the errors, each naming what is still there."""
        from scalingo_staging_sync.operators._dump import remove_run_dumps

        done = remove_run_dumps(
            stored_dump=as_mapping(self.stored_dump, "stored_dump"),
            download_dir=as_str(self.download_dir),
            conn_id=as_str(self.download_conn_id),
            run_key=str(context.get("run_id") or "") or None,
        )
        out["backup"] = done
        for error in done["errors"]:
            self.log.error("backup cleanup: %s", error)
        return [f"backup cleanup: {e}" for e in done["errors"]]
