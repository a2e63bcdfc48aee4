"""Deferrable wait for a Scalingo backup: polls the Database API from the triggerer (the blocking
core client runs in a thread via ``asyncio.to_thread``), so no worker slot is held meanwhile."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from scalingo_staging_sync.scalingo.client import UNLISTED_GRACE_S, backup_failed_error
from scalingo_staging_sync.scalingo.errors import ScalingoApiError


class ScalingoBackupTrigger(BaseTrigger):
    """Fires ``{"status": "done", "backup": {...}}`` when the backup is ``done``; otherwise
    ``{"status": "failed"|"timeout"|"error", "message": ..., "error_type": ...}``."""

    def __init__(
        self,
        scalingo_conn_id: str,
        app: str,
        addon_id: str,
        backup_id: str,
        poll_interval: float = 15.0,
        timeout: float = 3600.0,
        deadline: float | None = None,
        client_kwargs: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.scalingo_conn_id = scalingo_conn_id
        self.app = app
        self.addon_id = addon_id
        self.backup_id = backup_id
        self.poll_interval = float(poll_interval)
        self.timeout = float(timeout)
        self.deadline = float(deadline) if deadline is not None else time.time() + self.timeout
        self.client_kwargs = client_kwargs or {}

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "scalingo_conn_id": self.scalingo_conn_id,
                "app": self.app,
                "addon_id": self.addon_id,
                "backup_id": self.backup_id,
                "poll_interval": self.poll_interval,
                "timeout": self.timeout,
                "deadline": self.deadline,
                "client_kwargs": self.client_kwargs,
            },
        )

    async def _client(self):
        from airflow.sdk import BaseHook

        from scalingo_staging_sync.hooks.scalingo import client_from_connection

        conn = await BaseHook.aget_connection(self.scalingo_conn_id)
        return client_from_connection(conn, **self.client_kwargs)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        client = None
        # the wait began at deadline - timeout: a backup just created may be missing from the list a moment
        unlisted_until = self.deadline - self.timeout + min(UNLISTED_GRACE_S, self.timeout)
        try:
            client = await self._client()
            while True:
                state, backup = await asyncio.to_thread(
                    partial(client.backup_status, unlisted_until=unlisted_until),
                    self.app,
                    self.addon_id,
                    self.backup_id,
                )
                if state == "done":
                    yield TriggerEvent({"status": "done", "backup": backup})
                    return
                if state == "failed":
                    error = backup_failed_error(self.app, self.addon_id, backup)
                    yield TriggerEvent(
                        {
                            "status": "failed",
                            "message": str(error),
                            "error_type": type(error).__name__,
                            "backup": backup,
                        }
                    )
                    return
                remaining = self.deadline - time.time()
                if remaining <= 0:
                    yield TriggerEvent(
                        {
                            "status": "timeout",
                            "error_type": "BackupNotReadyError",
                            "message": (
                                f"backup {self.backup_id!r} of app {self.app!r} is still {backup.get('status')!r} "
                                f"after {self.timeout:.0f} s; raise the timeout, or use backup='latest'."
                            ),
                            "backup": backup,
                        }
                    )
                    return
                self.log.info(
                    "backup %s is %s, next check in %.0f s",
                    self.backup_id,
                    backup.get("status"),
                    self.poll_interval,
                )
                await asyncio.sleep(min(self.poll_interval, remaining))
        except ScalingoApiError as exc:
            yield TriggerEvent({"status": "error", "message": str(exc), "error_type": type(exc).__name__})
        finally:
            if client is not None:
                client.close()
