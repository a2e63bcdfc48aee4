"""ScalingoBackupOperator: pick (latest ``done``), create (``new``) or name a backup of an app's
PostgreSQL addon, download it (streamed, resumable, checksummed), extract the ``*.pgsql`` dump and
return what the next tasks need as an XCom dict."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from scalingo_staging_sync.operators._base import as_str, maps_sync_errors
from scalingo_staging_sync.scalingo.errors import (
    BackupFailedError,
    BackupNotReadyError,
    ScalingoApiError,
)

if TYPE_CHECKING:  # imported when the task runs: parsing the DAG needs neither requests nor the trigger
    from scalingo_staging_sync.hooks.scalingo import ScalingoHook

log = logging.getLogger(__name__)

_EVENT_ERRORS = {"BackupFailedError": BackupFailedError, "BackupNotReadyError": BackupNotReadyError}


def default_download_dir() -> str:
    """The directory used when the operator is given no ``download_dir``
    (:func:`scalingo_staging_sync.settings.operator_download_dir` of the config section's)."""
    from scalingo_staging_sync import config
    from scalingo_staging_sync.settings import operator_download_dir

    return operator_download_dir(config.get("download_dir"))


def default_download_conn_id() -> str | None:
    from scalingo_staging_sync import config

    return config.get("download_conn_id")


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,150}")


def safe_backup_name(backup: dict) -> str:
    """The backup's ``name`` (``<YYYYMMDDhhmmss>_<resource_id>``) as a file name, else its id; a value
    that is not a plain file name (``/``, ``..``, spaces, ...) is replaced by a digest of it, so an API
    answer can never choose a path outside the download directory."""
    for value in (backup.get("name"), backup.get("id")):
        text = str(value or "")
        if text and _SAFE_NAME.fullmatch(text) and ".." not in text:
            return text
    raw = str(backup.get("name") or backup.get("id") or "")
    return "backup-" + hashlib.sha256(raw.encode()).hexdigest()[:16]


def _major(version: str | None) -> int | None:
    try:
        return int(str(version).split(".")[0])
    except (TypeError, ValueError):
        return None


def _plan_name(plan: object) -> str | None:
    """The addon's plan name: the documented ``{"name": ...}`` object, or a bare name."""
    if isinstance(plan, dict):
        return plan.get("name") or None
    return plan if isinstance(plan, str) and plan else None


class ScalingoBackupOperator(BaseOperator):
    """Download a backup of ``app``'s PostgreSQL addon and extract its dump.

    :param app: Scalingo app name (templated).
    :param backup: ``"latest"`` (newest ``done`` backup), ``"new"`` (create one and wait for it), or a
        backup id (templated).
    :param addon_id: the PostgreSQL addon id, needed only when the app has several (templated).
    :param scalingo_conn_id: the ``scalingo`` connection.
    :param download_dir: local directory or ObjectStoragePath URL (``file:///shared/backups``,
        ``s3://bucket/prefix``) (templated). Default: ``[scalingo_staging_sync] download_dir`` (env
        ``SCALINGO_STAGING_SYNC_DOWNLOAD_DIR``) or ``<tmp>/scalingo_staging_sync/backups``. A URL: the
        backup is downloaded and extracted in a temporary directory of this worker, the dump is stored
        at ``<download_dir>/<dump file>`` (``<download_dir>/<run id>/<dump file>`` when the directory
        comes from the configuration) with its size and sha256 verified (``storage.store_archive``), and
        the temporary directory is deleted.
    :param download_conn_id: Airflow connection of that storage (templated). Default:
        ``[scalingo_staging_sync] download_conn_id``, or ``s3://<conn_id>@bucket/...`` in the URL.
    :param poll_interval: seconds between two checks of a new backup (Scalingo allows 60 requests/min).
    :param timeout: seconds to wait for a new backup.
    :param deferrable: wait for a new backup in the triggerer instead of holding a worker slot.

    XCom ``return_value``: ``{"app", "addon_id", "backup_id", "backup_name", "backup_method", "created_at", "size",
    "sha256", "pg_version", "pg_major", "archive_path", "dump_path", "dump_format", "resource_id", "db_hostname",
    "database_plan", "reused", "stored_dump"}``. Local ``download_dir``: ``dump_path`` / ``archive_path`` are local paths and
    ``stored_dump`` is None. URL: they are None and ``stored_dump`` is ``StoredDump.to_dict()``
    (``{"url", "size", "sha256", "kind", "pg_version", "conn_id", "run_key"}``); pass the whole result
    (or ``stored_dump``) as the ``dump_path`` of the tasks that need the dump.
    """

    template_fields: Sequence[str] = ("app", "backup", "addon_id", "download_dir", "download_conn_id")
    ui_color = "#3f51b5"

    def __init__(
        self,
        *,
        app: str,
        backup: str = "latest",
        addon_id: str | None = None,
        scalingo_conn_id: str = "scalingo_default",  # ScalingoHook.default_conn_name
        download_dir: str | os.PathLike | None = None,
        download_conn_id: str | None = None,
        poll_interval: float = 15.0,
        timeout: float = 3600.0,
        deferrable: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.app = app
        self.backup = backup
        self.addon_id = addon_id
        self.scalingo_conn_id = scalingo_conn_id
        self.download_dir = str(download_dir) if download_dir is not None else None
        self.download_conn_id = download_conn_id
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.deferrable = deferrable

    # ------------------------------------------------------------------ execution
    @maps_sync_errors
    def execute(self, context) -> dict:
        self.app = as_str(self.app, "app")
        if not self.app:
            raise ValueError("ScalingoBackupOperator needs app (the source Scalingo app)")
        self.addon_id = as_str(self.addon_id)
        self.download_dir = as_str(self.download_dir)
        self.download_conn_id = as_str(self.download_conn_id)
        from scalingo_staging_sync.hooks.scalingo import ScalingoHook

        hook = ScalingoHook(self.scalingo_conn_id)
        addon = hook.get_postgresql_addon(self.app, self.addon_id or None)
        addon_id = addon["id"]
        choice = as_str(self.backup, default="latest")
        if choice == "latest":
            backup = hook.latest_done_backup(self.app, addon_id)
            log.info("using the newest finished backup %s (%s)", backup["id"], backup.get("created_at"))
        elif choice == "new":
            created = hook.create_backup(self.app, addon_id)
            if self.deferrable:
                log.info("backup %s created; deferring until it is done", created["id"])
                from scalingo_staging_sync.triggers.backup import ScalingoBackupTrigger

                self.defer(
                    trigger=ScalingoBackupTrigger(
                        scalingo_conn_id=self.scalingo_conn_id,
                        app=self.app,
                        addon_id=addon_id,
                        backup_id=created["id"],
                        poll_interval=self.poll_interval,
                        timeout=self.timeout,
                    ),
                    method_name="execute_complete",
                    kwargs={"addon": addon},
                    timeout=timedelta(seconds=self.timeout + 2 * self.poll_interval + 60),
                )
            backup = hook.wait_for_backup(
                self.app, addon_id, created["id"], poll_interval=self.poll_interval, timeout=self.timeout
            )
        else:
            backup = hook.get_backup(self.app, addon_id, choice)
            status = backup.get("status")
            if status in ("error", "cancelled"):
                raise BackupFailedError(
                    f"backup {choice!r} of app {self.app!r} is in status {status!r} and cannot be restored; "
                    f"use backup='latest' or another id."
                )
            if status != "done":
                raise BackupNotReadyError(
                    f"backup {choice!r} of app {self.app!r} is {status!r}, not 'done'; wait for it or use "
                    f"backup='latest'."
                )
        return self._fetch(hook, addon, backup, context)

    @maps_sync_errors
    def execute_complete(self, context, event: dict, addon: dict | None = None) -> dict:
        status = (event or {}).get("status")
        if status != "done":
            error = _EVENT_ERRORS.get(event.get("error_type"), ScalingoApiError)
            raise error(event.get("message") or f"waiting for the backup failed: {event!r}")
        from scalingo_staging_sync.hooks.scalingo import ScalingoHook

        hook = ScalingoHook(self.scalingo_conn_id)
        addon = addon or hook.get_postgresql_addon(self.app, self.addon_id or None)
        return self._fetch(hook, addon, event["backup"], context)

    # ------------------------------------------------------------------ download + extract
    def _fetch(self, hook: ScalingoHook, addon: dict, backup: dict, context=None) -> dict:
        addon_id = addon["id"]
        try:
            database = hook.get_database(self.app, addon_id)
        except ScalingoApiError as exc:
            log.warning("cannot read the database info of addon %s (%s); version unknown", addon_id, exc)
            database = {}
        from scalingo_staging_sync import storage
        from scalingo_staging_sync.operators._dump import cache_dir, cache_scope
        from scalingo_staging_sync.scalingo.archive import check_dump_file, download_and_extract, extract_dump
        from scalingo_staging_sync.settings import run_download_dir

        explicit = self.download_dir
        target, conn_id = storage.split_conn_id(
            explicit or default_download_dir(), self.download_conn_id or default_download_conn_id()
        )
        remote = not storage.is_local_location(target)
        if remote:  # downloaded and extracted on this worker's disk, stored, then deleted here
            local_dir = Path(tempfile.mkdtemp(prefix="scalingo-backup-"))
        else:
            local_dir = storage.local_path(target)
        local_dir.mkdir(parents=True, exist_ok=True)
        version = database.get("readable_version")

        name = safe_backup_name(backup)
        try:
            archive = local_dir / f"{name}.tar.gz"
            sidecar = archive.with_name(archive.name + ".sha256")
            reused = False
            sha = self._reusable(archive, sidecar, backup)
            if sha:
                reused = True
                size = archive.stat().st_size
                log.info("reusing %s: size and sha256 match the previous download", archive)
            else:
                archive.unlink(missing_ok=True)
                sidecar.unlink(missing_ok=True)
            try:
                if reused:
                    dump = extract_dump(archive, local_dir / name)
                else:  # extracted while it downloads
                    result, dump = download_and_extract(
                        lambda follower: hook.download_backup(
                            self.app, addon_id, backup, archive, follower=follower
                        ),
                        archive,
                        local_dir / name,
                    )
                    sha, size = result.sha256, result.size
                    log.info(
                        "downloaded %s (%d bytes, sha256 %s, %d resume(s)) and extracted %s",
                        archive,
                        size,
                        sha,
                        result.resumes,
                        dump.name,
                    )
            except ScalingoApiError:
                # an archive that does not extract is never reused by a later try: download it again
                archive.unlink(missing_ok=True)
                sidecar.unlink(missing_ok=True)
                raise
            if not reused:  # written once the archive is known to extract: only then is it reusable
                sidecar.write_text(f"{sha}  {archive.name}\n")
            dump_format = check_dump_file(dump)
            archive_ref: str | None = str(archive)
            dump_ref: str | None = str(dump)
            stored = None
            if remote:
                run_id = str((context or {}).get("run_id") or "") or None
                stored = storage.store_archive(
                    dump,
                    # the reference DAG passes a download_dir that is already the run's own
                    target if explicit or not run_id else run_download_dir(target, run_id),
                    conn_id=conn_id,
                    name=dump.name,
                    pg_version=version,
                )
                stored = dataclasses.replace(stored, run_key=run_id)
                if cache_scope() == "run":
                    storage.cache_local_copy(stored, dump, cache_dir())
                archive_ref = dump_ref = None
        finally:
            if remote:
                shutil.rmtree(local_dir, ignore_errors=True)

        return {
            "app": self.app,
            "addon_id": addon_id,
            "backup_id": backup["id"],
            "backup_name": name,
            "backup_method": backup.get("method"),
            "created_at": backup.get("created_at"),
            "size": size,
            "sha256": sha,
            "pg_version": version,
            "pg_major": _major(version),
            "archive_path": archive_ref,
            "dump_path": dump_ref,
            "stored_dump": stored.to_dict() if stored is not None else None,
            "dump_format": dump_format,
            "resource_id": addon.get("resource_id") or database.get("resource_id"),
            "db_hostname": database.get("hostname"),
            "database_plan": database.get("plan") or _plan_name(addon.get("plan")),
            "reused": reused,
        }

    @staticmethod
    def _reusable(archive: Path, sidecar: Path, backup: dict) -> str | None:
        """The sha256 of an existing archive when it is complete and unchanged, else None."""
        if not archive.is_file() or not sidecar.is_file():
            return None
        expected = sidecar.read_text().split()[0] if sidecar.read_text().strip() else ""
        size = archive.stat().st_size
        if backup.get("size") and size != backup["size"]:
            log.warning(
                "existing %s has %d bytes, the backup %d: downloading again", archive, size, backup["size"]
            )
            return None
        from scalingo_staging_sync.scalingo.download import sha256_file

        actual = sha256_file(archive)
        if actual != expected:
            log.warning("existing %s does not match its .sha256 sidecar: downloading again", archive)
            return None
        return actual
