"""Airflow hook for Scalingo: a thin adapter building a core ``ScalingoClient`` from a ``scalingo``
connection (password = API token; extras ``region``, ``auth_url``, ``api_url``, ``db_api_url``; an
optional ``host`` is the base URL of all three services)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from airflow.sdk import BaseHook

from scalingo_staging_sync.scalingo.archive import extract_dump
from scalingo_staging_sync.scalingo.client import ScalingoClient
from scalingo_staging_sync.scalingo.download import DownloadResult
from scalingo_staging_sync.scalingo.errors import ScalingoApiError, ScalingoAuthError
from scalingo_staging_sync.secrets import mask_secret

log = logging.getLogger(__name__)

CLIENT_EXTRA_KEYS = ("max_attempts", "backoff_s", "backoff_max_s", "rate_limit_per_minute", "retry_budget_s")


_LOOPBACK = ("localhost", "127.0.0.1", "::1", "[::1]")


def connection_base_url(conn) -> str | None:
    """The base URL the connection's ``host`` gives (None without a host): the host as written when it
    carries a scheme (``http://127.0.0.1:8000``), else ``https://`` (``http://`` for a loopback
    address), with the connection's ``port`` and ``schema`` (a path prefix) when the host has none."""
    host = str(conn.host or "").strip()
    if not host:
        return None
    if "://" not in host:
        scheme = "http" if host.lower() in _LOOPBACK or host.startswith("127.") else "https"
        host = f"{scheme}://{host}"
    scheme, _, rest = host.partition("://")
    netloc, _, path = rest.partition("/")
    if conn.port and ":" not in netloc.rsplit("]", 1)[-1]:
        netloc = f"{netloc}:{int(conn.port)}"
    prefix = path.strip("/") or str(conn.schema or "").strip("/")
    return f"{scheme}://{netloc}" + (f"/{prefix}" if prefix else "")


def client_from_connection(conn, **client_kwargs: Any) -> ScalingoClient:
    """Build a ``ScalingoClient`` from an Airflow Connection object (also used by the trigger)."""
    token = conn.password or ""
    mask_secret(token)
    if not token:
        raise ScalingoAuthError(
            f"connection {conn.conn_id!r} has no API token: put the Scalingo API token (tk-us-...) in its "
            f'password field (AIRFLOW_CONN_{str(conn.conn_id).upper()}=\'{{"conn_type": "scalingo", '
            f'"password": "tk-us-..."}}\').'
        )
    extra = conn.extra_dejson or {}
    kwargs: dict[str, Any] = {k: extra[k] for k in CLIENT_EXTRA_KEYS if extra.get(k) is not None}
    kwargs.update(client_kwargs)
    # the connection's host: one base URL for every Scalingo service (a proxy, or a stand-in serving
    # auth, the regional API and the Database API at once); each URL extra still overrides its own
    base = connection_base_url(conn)
    try:
        return ScalingoClient(
            token,
            region=extra.get("region") or None,  # none: osc-fr1, or the regions endpoint's default
            auth_url=extra.get("auth_url") or base,
            api_url=extra.get("api_url") or base,
            db_api_url=extra.get("db_api_url") or base,
            **kwargs,
        )
    except ValueError as exc:
        raise ScalingoApiError(f"connection {conn.conn_id!r}: {exc}") from None


class ScalingoHook(BaseHook):
    """Scalingo platform + Database API, configured by a ``scalingo`` Airflow connection.

    Every method of the core client is available through the hook (``hook.list_backups(...)``,
    ``hook.scale(...)``, ...); ``get_conn()`` returns the client itself.
    """

    conn_name_attr = "scalingo_conn_id"
    default_conn_name = "scalingo_default"
    conn_type = "scalingo"
    hook_name = "Scalingo"

    def __init__(self, scalingo_conn_id: str = default_conn_name, **client_kwargs: Any) -> None:
        super().__init__()
        self.scalingo_conn_id = scalingo_conn_id
        self.client_kwargs = client_kwargs
        self._client: ScalingoClient | None = None

    def get_conn(self) -> ScalingoClient:
        if self._client is None:
            conn = self.get_connection(self.scalingo_conn_id)
            self._client = client_from_connection(conn, **self.client_kwargs)
        return self._client

    @property
    def client(self) -> ScalingoClient:
        return self.get_conn()

    def test_connection(self) -> tuple[bool, str]:
        try:
            return True, f"Scalingo connection OK: {self.get_conn().check()}"
        except Exception as exc:  # noqa: BLE001 - the UI shows the message
            return False, f"Scalingo connection failed: {exc}"

    # -------------------------------------------------------------- explicit delegations (documented API)
    def get_postgresql_addon(self, app: str, addon_id: str | None = None) -> dict:
        return self.client.get_postgresql_addon(app, addon_id)

    def get_database(self, app: str, addon_id: str) -> dict:
        return self.client.get_database(app, addon_id)

    def list_backups(self, app: str, addon_id: str) -> list[dict]:
        return self.client.list_backups(app, addon_id)

    def latest_done_backup(self, app: str, addon_id: str) -> dict:
        return self.client.latest_done_backup(app, addon_id)

    def get_backup(self, app: str, addon_id: str, backup_id: str) -> dict:
        return self.client.get_backup(app, addon_id, backup_id)

    def create_backup(self, app: str, addon_id: str) -> dict:
        return self.client.create_backup(app, addon_id)

    def wait_for_backup(
        self, app: str, addon_id: str, backup_id: str, *, poll_interval: float = 15.0, timeout: float = 3600.0
    ) -> dict:
        return self.client.wait_for_backup(
            app, addon_id, backup_id, poll_interval=poll_interval, timeout=timeout
        )

    def archive_url(self, app: str, addon_id: str, backup_id: str) -> str:
        return self.client.archive_url(app, addon_id, backup_id)

    def download_backup(
        self, app: str, addon_id: str, backup: dict, dest: str | Path, **kwargs: Any
    ) -> DownloadResult:
        return self.client.download_backup(app, addon_id, backup, Path(dest), **kwargs)

    @staticmethod
    def extract_dump(archive: str | Path, dest_dir: str | Path) -> Path:
        return extract_dump(Path(archive), Path(dest_dir))

    def get_formation(self, app: str) -> list[dict]:
        return self.client.get_formation(app)

    def scale(
        self, app: str, containers: list[dict] | dict[str, int], wait: bool = True, **kwargs: Any
    ) -> dict:
        return self.client.scale(app, containers, wait=wait, **kwargs)

    def run_detached(
        self,
        app: str,
        command: str,
        env: dict[str, str] | None = None,
        size: str | None = None,
        wait: bool = True,
        timeout: float = 3600.0,
        **kwargs: Any,
    ) -> dict:
        return self.client.run_detached(
            app, command, env=env, size=size, wait=wait, timeout=timeout, **kwargs
        )

    def restart(self, app: str, scope: list[str] | None = None, wait: bool = True, **kwargs: Any) -> dict:
        return self.client.restart(app, scope, wait=wait, **kwargs)
