"""A fake Scalingo API for tests — yours and ours.

It is a real HTTP server on 127.0.0.1 (``ThreadingHTTPServer`` in a thread) speaking the protocol of
the real services on one port: the auth API (``/v1/tokens/exchange``, ``/v1/regions``), the regional
main API (``/v1/apps/...``: addons, addon token, variables, containers, scale, restart, run, operations) and the
Database API (``/api/databases/...``: database, backups, archive, signed download URL with HTTP Range).

    from scalingo_staging_sync.testing.fake_scalingo import FakeScalingoAPI

    with FakeScalingoAPI(workdir=tmp_path) as fake:
        fake.add_app("my-app")
        addon = fake.add_addon("my-app", dump_path=my_pg_dump_file)   # used by backup="new"
        fake.add_backup("my-app", dump_path=my_pg_dump_file)          # a finished periodic backup
        monkeypatch.setenv("AIRFLOW_CONN_SCALINGO_DEFAULT", fake.airflow_conn_json())
        ...  # run your DAG

Fault knobs: ``fail_next(429|500|..., times=1, retry_after=..., after_handling=False)``, ``cut_answer()``,
``expire_tokens()``, ``cut_download()``, ``add_addon(status="suspended", deprovisioned=True)``,
``add_backup(status="error"|"running", reported_size=..., size_unknown=True, hidden=True, include_dump=False,
traversal_member=True, polls_until_done=N)``, ``fail_command(...)``.

Documented variants (constructor options; the defaults are the plainest reading of the docs):
``archive_redirect`` (the archive endpoint answers ``302 Location: <signed URL>`` instead of
``{"download_url": ...}``), ``download_redirect`` (the signed URL redirects to a second "storage" server on
another port, S3-style query signature; a request carrying ``Authorization`` there is refused with 400, as
S3 does), ``download_framing`` (``"length"``, ``"chunked"``: no Content-Length, or ``"close"``: body ends
when the connection closes), ``backup_show_route=False`` (only the documented list endpoint, no
``GET .../backups/{id}``), ``backups_order`` (``"newest"``, ``"oldest"``, ``"shuffled"``),
``backups_per_page`` (``meta.pagination`` pages), ``extra_fields`` (unknown fields everywhere),
``minimal_fields`` (optional fields left out), ``base_path`` (everything served under a path prefix).
``download_rate_mb_s`` (not a variant: archives sent at about that many MB/s, as over a real network).
Everything the server received is in ``fake.requests`` (method, path, Range header, auth kind, server).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from scalingo_staging_sync.testing.archive import backup_name, build_backup_archive

DEFAULT_API_TOKEN = "tk-us-fake-0123456789abcdefghijklmnopqrstuvwxyz"


def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class RecordedRequest:
    method: str
    path: str  # without the query string (it may carry a signed token)
    range: str | None
    auth: str | None  # "basic", "bearer" or None
    time: float
    server: str = "api"  # "api" (auth, main and Database API) or "storage" (download_redirect)


@dataclass
class FakeBackup:
    id: str
    addon_id: str
    name: str
    created_at: datetime
    status: str
    archive: Path | None
    method: str | None = "periodic"
    reported_size: int | None = None
    polls_until_done: int | None = None
    final_status: str = "done"
    started_at: datetime | None = None
    size_unknown: bool = False
    hidden: bool | None = None

    def as_json(self) -> dict:
        size = None
        if self.status == "done" and self.archive is not None and not self.size_unknown:
            size = self.reported_size if self.reported_size is not None else self.archive.stat().st_size
        data = {
            "id": self.id,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at) if self.started_at else None,
            "name": self.name,
            "size": size,
            "status": self.status,
            "database_id": f"db-{self.addon_id}",
            "method": self.method,
            "type": "postgresql",
        }
        if self.hidden is not None:
            data["hidden"] = self.hidden
        return data


@dataclass
class FakeAddon:
    id: str
    app: str
    resource_id: str
    provider_id: str = "postgresql"
    provider_name: str | None = None
    plan: str = "postgresql-starter-512"
    version: str = "16.9.0-1"
    dump_path: Path | None = None
    new_backup_polls: int = 1
    new_backup_status: str = "done"
    #: the ``method`` of the backups it creates (None: the field is null)
    new_backup_method: str | None = "manual"
    backups: list[FakeBackup] = field(default_factory=list)
    #: where the addon's database lives (default: Scalingo's naming from the resource id)
    host: str | None = None
    port: int | None = None
    database: str | None = None
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    #: "running", "provisioning" or "suspended"; ``deprovisioned``: still listed, with deprovisioned_at
    status: str = "running"
    deprovisioned: bool = False

    @property
    def db_host(self) -> str:
        return self.host or f"{self.resource_id.replace('_', '-')}.postgresql.a.osc-fr1.scalingo-dbs.com"

    @property
    def db_port(self) -> int:
        return int(self.port or 30000)

    @property
    def db_name(self) -> str:
        return self.database or self.resource_id

    @property
    def hostname(self) -> str:
        """``host:port``, as the Database API's ``database.hostname``."""
        return f"{self.db_host}:{self.db_port}"

    @property
    def database_url(self) -> str:
        """The ``SCALINGO_POSTGRESQL_URL`` Scalingo sets in the app (user = resource id, as on Shared
        Resources); a unix-socket directory host is percent-encoded, as libpq reads it."""
        from urllib.parse import quote

        return (
            f"postgres://{self.resource_id}:{quote(self.password, safe='')}@{quote(self.db_host, safe='')}"
            f":{self.db_port}/{quote(self.db_name, safe='')}?sslmode=prefer"
        )

    def as_json(self, app_id: str) -> dict:
        now = _iso(datetime.now(timezone.utc))
        return {
            "id": self.id,
            "app_id": app_id,
            "resource_id": self.resource_id,
            "status": self.status,
            "provisioned_at": now,
            "deprovisioned_at": now if self.deprovisioned else None,
            "updated_at": now,
            "plan": {"id": f"pl-{self.plan}", "name": self.plan, "display_name": self.plan, "sku": self.plan},
            "addon_provider": {
                "id": self.provider_id,
                "name": self.provider_name
                or {"postgresql": "PostgreSQL", "redis": "Redis"}.get(self.provider_id, self.provider_id),
                "logo_url": "",
            },
        }


@dataclass
class FakeApp:
    name: str
    id: str
    containers: list[dict]
    addons: list[FakeAddon] = field(default_factory=list)
    status: str = "running"
    #: environment variables (``GET /v1/apps/{app}/variables``); a PostgreSQL addon adds its URL
    variables: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeOperation:
    id: str
    app: str
    type: str
    polls_left: int
    final_status: str = "done"
    error: str | None = None
    status: str = "pending"
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def as_json(self) -> dict:
        return {
            "id": self.id,
            "type": self.type,
            "status": self.status,
            "error": self.error,
            "created_at": _iso(self.created_at),
            "finished_at": _iso(datetime.now(timezone.utc)) if self.status in ("done", "error") else None,
        }


class FakeScalingoAPI:
    """The fake server. ``start()``/``stop()`` or use it as a context manager; ``.url`` is its base URL."""

    def __init__(
        self,
        api_token: str = DEFAULT_API_TOKEN,
        *,
        region: str = "osc-fr1",
        workdir: str | Path | None = None,
        jwt_ttl: float = 3600,
        addon_token_ttl: float = 3600,
        operation_polls: int = 1,
        host: str = "127.0.0.1",
        port: int = 0,
        archive_redirect: bool = False,
        download_redirect: bool = False,
        download_framing: str = "length",
        backup_show_route: bool = True,
        backups_order: str = "newest",
        backups_per_page: int | None = None,
        extra_fields: bool = False,
        minimal_fields: bool = False,
        base_path: str = "",
        download_rate_mb_s: float | None = None,
    ):
        if download_framing not in ("length", "chunked", "close"):
            raise ValueError("download_framing is 'length', 'chunked' or 'close'")
        if backups_order not in ("newest", "oldest", "shuffled"):
            raise ValueError("backups_order is 'newest', 'oldest' or 'shuffled'")
        self.api_token = api_token
        self.region = region
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="fake-scalingo-"))
        self.jwt_ttl = jwt_ttl
        self.addon_token_ttl = addon_token_ttl
        self.operation_polls = operation_polls
        self._host, self._port = host, port
        self.archive_redirect = archive_redirect
        self.download_redirect = download_redirect
        self.download_framing = download_framing
        self.download_rate_mb_s = download_rate_mb_s
        self.backup_show_route = backup_show_route
        self.backups_order = backups_order
        self.backups_per_page = backups_per_page
        self.extra_fields = extra_fields
        self.minimal_fields = minimal_fields
        self.base_path = "/" + base_path.strip("/") if base_path.strip("/") else ""
        self._storage: ThreadingHTTPServer | None = None
        self._storage_thread: threading.Thread | None = None
        self._secret = secrets.token_bytes(32)
        self._lock = threading.RLock()
        self.apps: dict[str, FakeApp] = {}
        self.operations: dict[str, FakeOperation] = {}
        self.runs: list[dict] = []
        self.requests: list[RecordedRequest] = []
        self._jwts: dict[str, float] = {}  # user JWT -> exp
        self._addon_tokens: dict[str, tuple[str, float]] = {}  # token -> (addon id, exp)
        self._download_tokens: dict[str, str] = {}  # signed token -> backup id
        self._failures: list[dict] = []
        self._answer_cuts: list[dict] = []
        self._cuts: list[dict] = []
        self._failing_commands: list[tuple[str, str]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> FakeScalingoAPI:
        if self._server:
            return self
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer((self._host, self._port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-scalingo",
            daemon=True,
        )
        self._thread.start()
        if self.download_redirect:  # object storage: another server (another port, so another origin)
            storage = type("StorageHandler", (_Handler,), {"fake": self, "server_kind": "storage"})
            self._storage = ThreadingHTTPServer((self._host, 0), storage)
            self._storage.daemon_threads = True
            self._storage_thread = threading.Thread(
                target=self._storage.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="fake-scalingo-storage",
                daemon=True,
            )
            self._storage_thread.start()
        return self

    def stop(self) -> None:
        if self._storage:
            self._storage.shutdown()
            self._storage.server_close()
            self._storage = None
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> FakeScalingoAPI:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if not self._server:
            raise RuntimeError("FakeScalingoAPI is not started: call start() or use it as a context manager")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{self.base_path}"

    @property
    def storage_url(self) -> str:
        """Base URL of the "storage" server the signed URL redirects to (``download_redirect=True``)."""
        if not self._storage:
            raise RuntimeError("FakeScalingoAPI(download_redirect=True) has no storage server until started")
        host, port = self._storage.server_address[:2]
        return f"http://{host}:{port}"

    # ------------------------------------------------------------------ Airflow connection helpers
    def connection_extra(self, *, overrides: bool = True) -> dict:
        extra: dict[str, Any] = {"region": self.region, "auth_url": self.url}
        if overrides:
            extra.update(api_url=self.url, db_api_url=self.url)
        return extra

    def airflow_conn_json(self, *, api_token: str | None = None, overrides: bool = True) -> str:
        """JSON for ``AIRFLOW_CONN_<ID>``: a ``scalingo`` connection pointing at this server.

        With ``overrides=False`` only ``auth_url`` is set and the hosts come from the regions endpoint.
        """
        return json.dumps(
            {
                "conn_type": "scalingo",
                "password": api_token if api_token is not None else self.api_token,
                "extra": self.connection_extra(overrides=overrides),
            }
        )

    def connection_uri(self, *, api_token: str | None = None) -> str:
        from urllib.parse import quote, urlencode

        token = quote(api_token if api_token is not None else self.api_token, safe="")
        return f"scalingo://:{token}@?{urlencode(self.connection_extra())}"

    # ------------------------------------------------------------------ data
    def add_app(self, name: str, containers: list[dict] | None = None) -> FakeApp:
        with self._lock:
            app = FakeApp(
                name=name,
                id=f"ap-{uuid.uuid4()}",
                containers=containers
                or [{"name": "web", "amount": 2, "size": "M"}, {"name": "worker", "amount": 1, "size": "S"}],
            )
            self.apps[name] = app
            return app

    def add_addon(
        self,
        app: str,
        *,
        provider_id: str = "postgresql",
        provider_name: str | None = None,
        addon_id: str | None = None,
        resource_id: str | None = None,
        dump_path: str | Path | None = None,
        version: str = "16.9.0-1",
        plan: str | None = None,
        new_backup_polls: int = 1,
        new_backup_status: str = "done",
        host: str | None = None,
        port: int | None = None,
        database: str | None = None,
        status: str = "running",
        deprovisioned: bool = False,
    ) -> FakeAddon:
        """Add an addon; ``dump_path`` (a real pg_dump file) is what a new manual backup will contain.

        A PostgreSQL addon sets the app's ``SCALINGO_POSTGRESQL_URL`` (the first one; later ones get
        ``SCALINGO_POSTGRESQL_<n>_URL``), pointing at ``host``/``port``/``database`` when given (e.g. a
        real test server, to bind a target app to the staging connection), else at Scalingo-style names."""
        with self._lock:
            target = self.apps.get(app) or self.add_app(app)
            addon = FakeAddon(
                id=addon_id or f"ad-{uuid.uuid4()}",
                app=app,
                resource_id=resource_id or f"{app.replace('-', '_')}_{len(target.addons) + 4553}",
                provider_id=provider_id,
                provider_name=provider_name,
                plan=plan or f"{provider_id}-starter-512",
                version=version,
                dump_path=Path(dump_path) if dump_path else None,
                new_backup_polls=new_backup_polls,
                new_backup_status=new_backup_status,
                host=host,
                port=port,
                database=database,
                status=status,
                deprovisioned=deprovisioned,
            )
            target.addons.append(addon)
            if "postgresql" in provider_id:
                n = sum(1 for a in target.addons if "postgresql" in a.provider_id)
                name = "SCALINGO_POSTGRESQL_URL" if n == 1 else f"SCALINGO_POSTGRESQL_{n}_URL"
                target.variables[name] = addon.database_url
            return addon

    def set_variable(self, app: str, name: str, value: str | None) -> None:
        """Set (or, with None, unset) an environment variable of ``app``."""
        with self._lock:
            variables = (self.apps.get(app) or self.add_app(app)).variables
            if value is None:
                variables.pop(name, None)
            else:
                variables[name] = value

    def _addon_for(self, app: str, addon_id: str | None) -> FakeAddon:
        target = self.apps[app]
        pg = [
            a
            for a in target.addons
            if (addon_id is None and a.provider_id == "postgresql") or a.id == addon_id
        ]
        if not pg:
            return self.add_addon(app)
        return pg[0]

    def add_backup(
        self,
        app: str,
        dump_path: str | Path | None = None,
        *,
        addon_id: str | None = None,
        status: str = "done",
        created_at: datetime | None = None,
        age: timedelta | None = None,
        method: str | None = "periodic",
        archive: str | Path | None = None,
        include_dump: bool = True,
        traversal_member: bool = False,
        symlink_member: bool = False,
        extra_files: dict[str, bytes] | None = None,
        reported_size: int | None = None,
        size_unknown: bool = False,
        hidden: bool | None = None,
        polls_until_done: int | None = None,
        final_status: str = "done",
    ) -> FakeBackup:
        """Add a backup wrapping ``dump_path`` as Scalingo does (or an explicit ``archive`` file).

        ``status="running"`` with ``polls_until_done=N`` turns into ``final_status`` after N reads.
        ``reported_size`` makes the API announce a wrong size, ``size_unknown`` a null one; ``hidden``
        adds the ``hidden`` flag (scalingo.js: "hidden backups are generally filtered by the API").
        """
        with self._lock:
            addon = self._addon_for(app, addon_id)
            created = created_at or (datetime.now(timezone.utc) - (age or timedelta(0)))
            name = backup_name(addon.resource_id, created)
            path = Path(archive) if archive else None
            if path is None and (dump_path is not None or not include_dump or extra_files):
                out_dir = self.workdir / "archives" / uuid.uuid4().hex[:8]
                path = build_backup_archive(
                    dump_path,
                    out_dir,
                    name,
                    include_dump=include_dump,
                    traversal_member=traversal_member,
                    symlink_member=symlink_member,
                    extra_files=extra_files,
                )
            backup = FakeBackup(
                id=secrets.token_hex(12),
                addon_id=addon.id,
                name=name,
                created_at=created,
                started_at=created if status != "scheduled" else None,
                status=status,
                archive=path,
                method=method,
                reported_size=reported_size,
                polls_until_done=polls_until_done,
                final_status=final_status,
                size_unknown=size_unknown,
                hidden=hidden,
            )
            addon.backups.append(backup)
            return backup

    def backup(self, backup_id: str) -> FakeBackup:
        for app in self.apps.values():
            for addon in app.addons:
                for b in addon.backups:
                    if b.id == backup_id:
                        return b
        raise KeyError(backup_id)

    # ------------------------------------------------------------------ fault knobs
    def fail_next(
        self,
        status: int = 429,
        times: int = 1,
        path_contains: str | None = None,
        retry_after: str | int | float | None = None,
        after_handling: bool = False,
        method: str | None = None,
    ) -> None:
        """The next ``times`` matching requests answer ``status`` (429 -> plain text 'Retry later'),
        with a ``Retry-After`` header when ``retry_after`` is given (seconds, or an HTTP date string).
        ``after_handling``: the request is carried out first (a backup is created, a command runs) and
        only its answer is replaced, as when a gateway times out after the service acted. ``method``:
        only requests of that method match."""
        with self._lock:
            self._failures.append(
                {
                    "status": status,
                    "times": times,
                    "path": path_contains,
                    "retry_after": retry_after,
                    "after": after_handling,
                    "method": method,
                }
            )

    def cut_answer(self, path_contains: str | None = None, times: int = 1, method: str | None = None) -> None:
        """The next ``times`` matching requests (``method``: only those) are carried out, but their JSON
        answer stops half-way (its Content-Length announces all of it) and the connection is closed."""
        with self._lock:
            self._answer_cuts.append({"path": path_contains, "times": times, "method": method})

    def expire_tokens(self) -> None:
        """Every user JWT and addon token issued so far is now expired (the next use gets 401)."""
        with self._lock:
            self._jwts = dict.fromkeys(self._jwts, 0.0)
            self._addon_tokens = {k: (v[0], 0.0) for k, v in self._addon_tokens.items()}

    def cut_download(self, after_bytes: int | None = None, times: int = 1) -> None:
        """The next ``times`` downloads drop the connection after ``after_bytes`` (default: half)."""
        with self._lock:
            self._cuts.append({"after": after_bytes, "times": times})

    def fail_command(self, contains: str, error: str = "command exited with status 1") -> None:
        """One-off runs whose command contains ``contains`` end with an operation in error."""
        self._failing_commands.append((contains, error))

    def requests_to(self, pattern: str) -> list[RecordedRequest]:
        return [r for r in self.requests if re.search(pattern, r.path)]

    # ------------------------------------------------------------------ tokens
    def _jwt(self, claims: dict) -> str:
        header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        payload = _b64url(json.dumps(claims).encode())
        sig = hmac.new(self._secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return f"{header}.{payload}.{_b64url(sig)}"

    def _issue_user_jwt(self) -> str:
        now = time.time()
        token = self._jwt(
            {
                "iss": "fake-scalingo",
                "uuid": str(uuid.uuid4()),
                "iat": int(now),
                "exp": int(now + self.jwt_ttl),
            }
        )
        self._jwts[token] = now + self.jwt_ttl
        return token

    def _issue_addon_token(self, addon_id: str) -> str:
        now = time.time()
        token = self._jwt(
            {
                "addon": addon_id,
                "jti": str(uuid.uuid4()),
                "iat": int(now),
                "exp": int(now + self.addon_token_ttl),
            }
        )
        self._addon_tokens[token] = (addon_id, now + self.addon_token_ttl)
        return token

    def _take_failure(self, path: str, method: str | None = None) -> dict | None:
        with self._lock:
            for failure in self._failures:
                if (
                    failure["times"] > 0
                    and (failure["path"] is None or failure["path"] in path)
                    and failure.get("method") in (None, method)
                ):
                    failure["times"] -= 1
                    return failure
        return None

    def _take_answer_cut(self, method: str, path: str) -> bool:
        with self._lock:
            for cut in self._answer_cuts:
                if (
                    cut["times"] > 0
                    and (cut["path"] is None or cut["path"] in path)
                    and cut["method"] in (None, method)
                ):
                    cut["times"] -= 1
                    return True
        return False

    def _take_cut(self) -> dict | None:
        with self._lock:
            for cut in self._cuts:
                if cut["times"] > 0:
                    cut["times"] -= 1
                    return cut
        return None

    def _poll(self, backup: FakeBackup) -> None:
        if backup.status in ("done", "error", "cancelled"):
            return
        if backup.polls_until_done is None:
            return
        backup.polls_until_done -= 1
        if backup.status == "scheduled":
            backup.status, backup.started_at = "running", datetime.now(timezone.utc)
        if backup.polls_until_done <= 0:
            backup.status = backup.final_status


_UNKNOWN_FIELD = {"unknown_future_field": {"nested": [1, "two", None], "flag": True}}
#: optional fields left out with ``minimal_fields=True`` (what the docs do not promise)
_OPTIONAL_FIELDS = {
    "backup": ("started_at", "method", "type", "database_id", "hidden"),
    "addon": ("app_id", "provisioned_at", "deprovisioned_at", "updated_at", "plan", "status"),
}


def _with_unknown_fields(value: Any) -> Any:
    if isinstance(value, dict):
        return {**{k: _with_unknown_fields(v) for k, v in value.items()}, **_UNKNOWN_FIELD}
    if isinstance(value, list):
        return [_with_unknown_fields(v) for v in value]
    return value


class _Handler(BaseHTTPRequestHandler):
    fake: FakeScalingoAPI
    server_kind = "api"
    protocol_version = "HTTP/1.1"
    # headers and body go out in two writes: with Nagle's algorithm on, the second one waits for the
    # client's delayed ACK (~40 ms per keep-alive request, an artefact of this fake, not of Scalingo)
    disable_nagle_algorithm = True

    def log_message(self, format, *args):  # noqa: A002 - quiet
        return

    # ---------------------------------------------------------------- responses
    def _shape(self, obj: dict, kind: str) -> dict:
        """``minimal_fields``: the object without its optional fields (and without null values)."""
        if not self.fake.minimal_fields:
            return obj
        out = {k: v for k, v in obj.items() if k not in _OPTIONAL_FIELDS[kind] and v is not None}
        if kind == "addon" and isinstance(out.get("addon_provider"), dict):
            out["addon_provider"] = {"id": out["addon_provider"]["id"]}
        return out

    def _send_json(self, status: int, body: dict, headers: dict | None = None) -> None:
        if getattr(self, "_discard", False):
            return
        if self.fake.extra_fields:
            body = _with_unknown_fields(body)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if getattr(self, "_cut_answer", False):  # cut_answer(): half the body, then the connection closes
            self._cut_answer = False
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
            return
        self.wfile.write(data)

    def _send_text(self, status: int, text: str, headers: dict | None = None) -> None:
        if getattr(self, "_discard", False):
            return
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, resource: str | None = None) -> None:
        body: dict[str, Any] = {"error": message}
        if resource:
            body["resource"] = resource
        self._send_json(status, body)

    # ---------------------------------------------------------------- dispatch
    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return {}
        raw = self.rfile.read(length)
        try:
            data = json.loads(raw)
        except ValueError:
            return {"__invalid__": True}
        return data if isinstance(data, dict) else {"__invalid__": True}

    def _dispatch(self, method: str) -> None:
        fake = self.fake
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = parse_qs(parts.query)
        auth = self.headers.get("Authorization", "")
        kind = auth.split(" ", 1)[0].lower() if auth else None
        body = self._body() if method == "POST" else {}
        if self.server_kind == "api" and fake.base_path:
            if path != fake.base_path and not path.startswith(fake.base_path + "/"):
                return self._error(404, f"no route {method} {path}", resource="route")
            path = path[len(fake.base_path) :]
        with fake._lock:
            fake.requests.append(
                RecordedRequest(method, path, self.headers.get("Range"), kind, time.time(), self.server_kind)
            )
        if body.get("__invalid__"):
            return self._error(400, "invalid JSON body")
        self._cut_answer = fake._take_answer_cut(method, path)
        failure = fake._take_failure(path, method)
        if failure and failure.get("after"):
            self._discard = True  # the handler acts, its answer is dropped
            try:
                self._route(method, path, body, query)
            finally:
                self._discard = False
        if failure:
            status = failure["status"]
            headers = {}
            if failure.get("retry_after") is not None:
                headers["Retry-After"] = str(failure["retry_after"])
            if status == 429:
                return self._send_text(429, "Retry later", headers)
            return self._send_json(
                status,
                {"error": {500: "internal server error", 503: "service unavailable"}.get(status, "error")},
                headers,
            )
        if self.server_kind == "storage":
            match = re.fullmatch(r"/storage/([^/]+)\.tar\.gz", path)
            if method == "GET" and match:
                try:
                    return self.h_storage(match.group(1), query)
                except (BrokenPipeError, ConnectionResetError):
                    return None
            return self._send_text(404, "NoSuchKey")
        return self._route(method, path, body, query)

    def _route(self, method: str, path: str, body: dict, query: dict) -> None:
        for route_method, pattern, handler in _ROUTES:
            if route_method != method:
                continue
            match = re.fullmatch(pattern, path)
            if match:
                try:
                    return handler(self, *match.groups(), body=body, query=query)
                except (BrokenPipeError, ConnectionResetError):
                    return None
        return self._error(404, f"no route {method} {path}", resource="route")

    # ---------------------------------------------------------------- auth
    def _user(self) -> bool:
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            self._error(401, "no authorization header, use a bearer token")
            return False
        exp = self.fake._jwts.get(auth[7:])
        if exp is None:
            self._error(401, "invalid token")
            return False
        if exp <= time.time():
            self._error(401, "token has expired")
            return False
        return True

    def _addon_auth(self, addon_id: str) -> bool:
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            self._error(401, "no authorization header, use the addon token")
            return False
        entry = self.fake._addon_tokens.get(auth[7:])
        if entry is None or entry[0] != addon_id:
            self._error(401, "invalid token for this database")
            return False
        if entry[1] <= time.time():
            self._error(401, "token has expired")
            return False
        return True

    def _app(self, name: str) -> FakeApp | None:
        app = self.fake.apps.get(name)
        if app is None:
            self._error(404, "not found", resource="app")
        return app

    def _addon(self, app: FakeApp, addon_id: str) -> FakeAddon | None:
        for addon in app.addons:
            if addon.id == addon_id:
                return addon
        self._error(404, "not found", resource="addon")
        return None

    def _db_addon(self, addon_id: str) -> FakeAddon | None:
        for app in self.fake.apps.values():
            for addon in app.addons:
                if addon.id == addon_id:
                    return addon
        return None

    # ---------------------------------------------------------------- auth API
    def h_exchange(self, body, query):
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Basic "):
            return self._error(401, "basic authentication with the API token as password is required")
        try:
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        except ValueError:
            return self._error(401, "invalid basic authentication header")
        if user or password != self.fake.api_token:
            return self._error(401, "invalid token")
        with self.fake._lock:
            token = self.fake._issue_user_jwt()
        self._send_json(200, {"token": token})

    def h_regions(self, body, query):
        if self.headers.get("Authorization") and not self._user():
            return None
        url = self.fake.url
        self._send_json(
            200,
            {
                "regions": [
                    {
                        "name": self.fake.region,
                        "display_name": "Fake region",
                        "api": url,
                        "database_api": url,
                        "dashboard": url,
                        "ssh": "127.0.0.1:22",
                        "default": True,
                    }
                ]
            },
        )

    # ---------------------------------------------------------------- main API
    def h_apps(self, body, query):
        if not self._user():
            return None
        self._send_json(
            200,
            {
                "apps": [
                    {"id": a.id, "name": a.name, "region": self.fake.region, "status": a.status}
                    for a in self.fake.apps.values()
                ]
            },
        )

    def h_app(self, app_name, body, query):
        if not self._user() or not (app := self._app(app_name)):
            return None
        self._send_json(200, {"app": {"id": app.id, "name": app.name, "status": app.status}})

    def h_addons(self, app_name, body, query):
        if not self._user() or not (app := self._app(app_name)):
            return None
        self._send_json(200, {"addons": [self._shape(a.as_json(app.id), "addon") for a in app.addons]})

    def h_addon(self, app_name, addon_id, body, query):
        if not self._user() or not (app := self._app(app_name)) or not (addon := self._addon(app, addon_id)):
            return None
        self._send_json(200, {"addon": addon.as_json(app.id)})

    def h_addon_token(self, app_name, addon_id, body, query):
        if not self._user() or not (app := self._app(app_name)) or not (addon := self._addon(app, addon_id)):
            return None
        with self.fake._lock:
            token = self.fake._issue_addon_token(addon.id)
        self._send_json(200, {"addon": {**self._shape(addon.as_json(app.id), "addon"), "token": token}})

    def h_variables(self, app_name, body, query):
        if not self._user() or not (app := self._app(app_name)):
            return None
        with self.fake._lock:
            data = [
                {"id": hashlib.sha1(f"{app.id}/{k}".encode()).hexdigest()[:24], "name": k, "value": v}
                for k, v in sorted(app.variables.items())
            ]
        self._send_json(200, {"variables": data})

    def h_containers(self, app_name, body, query):
        if not self._user() or not (app := self._app(app_name)):
            return None
        self._send_json(200, {"containers": app.containers})

    def _new_operation(self, app: FakeApp, op_type: str, final_status="done", error=None) -> FakeOperation:
        op = FakeOperation(
            id=f"op-{uuid.uuid4()}",
            app=app.name,
            type=op_type,
            polls_left=self.fake.operation_polls,
            final_status=final_status,
            error=error,
        )
        self.fake.operations[op.id] = op
        return op

    def _location(self, app: FakeApp, op: FakeOperation) -> str:
        return f"{self.fake.url}/v1/apps/{app.name}/operations/{op.id}"

    def h_scale(self, app_name, body, query):
        if not self._user() or not (app := self._app(app_name)):
            return None
        wanted = body.get("containers")
        if not isinstance(wanted, list) or not wanted:
            return self._send_json(422, {"errors": {"containers": ["should be a non-empty list"]}})
        with self.fake._lock:
            if app.status != "running":
                return self._error(409, f"app is {app.status}, wait for the current operation to finish")
            known = {c["name"]: c for c in app.containers}
            unknown = [c.get("name") for c in wanted if c.get("name") not in known]
            if unknown:
                return self._send_json(
                    422, {"errors": {"containers": [f"{n} does not exist" for n in unknown]}}
                )
            for c in wanted:
                known[c["name"]]["amount"] = int(c.get("amount", known[c["name"]]["amount"]))
                if c.get("size"):
                    known[c["name"]]["size"] = c["size"]
            app.status = "scaling"
            op = self._new_operation(app, "scale")
        self._send_json(202, {"containers": app.containers}, headers={"Location": self._location(app, op)})

    def h_restart(self, app_name, body, query):
        if not self._user() or not (app := self._app(app_name)):
            return None
        with self.fake._lock:
            app.status = "restarting"
            op = self._new_operation(app, "restart")
        self._send_json(202, {}, headers={"Location": self._location(app, op)})

    def h_run(self, app_name, body, query):
        if not self._user() or not (app := self._app(app_name)):
            return None
        command = body.get("command")
        if not command:
            return self._send_json(422, {"errors": {"command": ["can't be blank"]}})
        with self.fake._lock:
            error = next((e for c, e in self.fake._failing_commands if c in command), None)
            index = len(self.fake.runs) + 1
            self.fake.runs.append(
                {
                    "command": command,
                    "env": body.get("env") or {},
                    "size": body.get("size"),
                    "detached": body.get("detached"),
                }
            )
            op = self._new_operation(app, "run", final_status="error" if error else "done", error=error)
        container = {
            "id": f"ct-{uuid.uuid4()}",
            "type": "one-off",
            "type_index": index,
            "state": "starting",
            "command": command,
            "size": body.get("size") or "M",
            "created_at": _iso(datetime.now(timezone.utc)),
        }
        headers = {"Location": self._location(app, op)}
        self._send_json(
            200, {"container": container, "attach_url": f"{self.fake.url}/attach/{container['id']}"}, headers
        )

    def h_operation(self, app_name, op_id, body, query):
        if not self._user() or not (app := self._app(app_name)):
            return None
        with self.fake._lock:
            op = self.fake.operations.get(op_id)
            if op is None or op.app != app.name:
                return self._error(404, "not found", resource="operation")
            if op.status == "pending":
                op.status = "running"
            op.polls_left -= 1
            if op.polls_left <= 0 and op.status not in ("done", "error"):
                op.status = op.final_status
                app.status = "running"
            data = op.as_json()
        self._send_json(200, {"operation": data})

    # ---------------------------------------------------------------- database API
    def _db(self, addon_id: str) -> FakeAddon | None:
        addon = self._db_addon(addon_id)
        if addon is None:
            # the real db-api answers 401 for a token that does not match; 404 for an unknown id
            self._error(404, "not found", resource="database")
            return None
        if not self._addon_auth(addon_id):
            return None
        return addon

    def h_database(self, addon_id, body, query):
        if not (addon := self._db(addon_id)):
            return None
        major = addon.version.split(".")[0]
        host, port = addon.hostname.rsplit(":", 1)
        self._send_json(
            200,
            {
                "database": {
                    "id": f"db-{addon.id}",
                    "resource_id": addon.resource_id,
                    "app_name": addon.app,
                    "created_at": _iso(datetime.now(timezone.utc) - timedelta(days=30)),
                    "encryption_at_rest": True,
                    "plan": addon.plan,
                    "status": "running",
                    "type_id": "dt-postgresql",
                    "type_name": addon.provider_id,
                    "version_id": f"dtv-{major}",
                    "readable_version": addon.version,
                    "next_version_id": None,
                    "hostname": addon.hostname,
                    "features": [{"name": "force-ssl", "status": "ACTIVATED"}],
                    "instances": [
                        {
                            "id": "in-1",
                            "hostname": host,
                            "port": int(port),
                            "status": "running",
                            "type": "db-node",
                            "features": [],
                            "private_ip": "10.0.0.2",
                        }
                    ],
                    "current_operation_id": None,
                    "cluster": False,
                    "periodic_backups_enabled": True,
                    "periodic_backups_scheduled_at": [1],
                }
            },
        )

    def h_backups(self, addon_id, body, query):
        if not (addon := self._db(addon_id)):
            return None
        with self.fake._lock:
            for b in addon.backups:
                self.fake._poll(b)
            ordered = sorted(addon.backups, key=lambda b: b.created_at, reverse=True)
            if self.fake.backups_order == "oldest":
                ordered.reverse()
            elif self.fake.backups_order == "shuffled":
                random.Random(len(ordered)).shuffle(ordered)
            data = [self._shape(b.as_json(), "backup") for b in ordered]
        per_page = self.fake.backups_per_page
        if not per_page:
            return self._send_json(200, {"database_backups": data})
        pages = max(1, -(-len(data) // per_page))
        try:
            page = min(max(1, int((query.get("page") or ["1"])[0])), pages)
        except ValueError:
            return self._error(400, "page should be an integer")
        pagination = {
            "prev_page": page - 1 if page > 1 else None,
            "current_page": page,
            "next_page": page + 1 if page < pages else None,
            "total_pages": pages,
            "total_count": len(data),
        }
        self._send_json(
            200,
            {
                "database_backups": data[(page - 1) * per_page : page * per_page],
                "meta": {"pagination": pagination},
            },
        )

    def h_create_backup(self, addon_id, body, query):
        if not (addon := self._db(addon_id)):
            return None
        with self.fake._lock:
            if addon.dump_path is None:
                return self._error(
                    422,
                    "the fake addon has no dump_path: call add_addon(..., dump_path=...) to allow new backups",
                )
            backup = self.fake.add_backup(
                addon.app,
                addon.dump_path,
                addon_id=addon.id,
                status="scheduled",
                method=addon.new_backup_method,
                polls_until_done=addon.new_backup_polls,
                final_status=addon.new_backup_status,
            )
            data = self._shape(backup.as_json(), "backup")
        self._send_json(201, {"database_backup": data})

    def _find_backup(self, addon: FakeAddon, backup_id: str) -> FakeBackup | None:
        for b in addon.backups:
            if b.id == backup_id:
                return b
        self._error(404, "not found", resource="backup")
        return None

    def h_backup(self, addon_id, backup_id, body, query):
        if not self.fake.backup_show_route:  # undocumented route: an API without it
            return self._error(404, f"no route GET /api/databases/{addon_id}/backups/{backup_id}")
        if not (addon := self._db(addon_id)) or not (backup := self._find_backup(addon, backup_id)):
            return None
        with self.fake._lock:
            self.fake._poll(backup)
            data = self._shape(backup.as_json(), "backup")
        self._send_json(200, {"database_backup": data})

    def h_backup_global(self, backup_id, body, query):
        if not self.fake.backup_show_route:
            return self._error(404, f"no route GET /api/backups/{backup_id}")
        try:
            backup = self.fake.backup(backup_id)
        except KeyError:
            return self._error(404, "not found", resource="backup")
        if not self._addon_auth(backup.addon_id):
            return None
        with self.fake._lock:
            self.fake._poll(backup)
            data = self._shape(backup.as_json(), "backup")
        self._send_json(200, {"database_backup": data})

    def h_archive(self, addon_id, backup_id, body, query):
        if not (addon := self._db(addon_id)) or not (backup := self._find_backup(addon, backup_id)):
            return None
        if backup.status != "done" or backup.archive is None:
            return self._error(400, f"backup is not done (status {backup.status})")
        token = secrets.token_urlsafe(24)
        with self.fake._lock:
            self.fake._download_tokens[token] = backup.id
        url = f"{self.fake.url}/api/databases/{addon.id}/backups/{backup.id}/download?token={token}"
        if self.fake.archive_redirect:
            return self._send_json(302, {}, headers={"Location": url})
        self._send_json(200, {"download_url": url})

    def _storage_signature(self, backup_id: str) -> str:
        return hmac.new(self.fake._secret, f"storage/{backup_id}".encode(), hashlib.sha256).hexdigest()

    def h_download(self, addon_id, backup_id, body, query):
        token = (query.get("token") or [""])[0]
        if self.fake._download_tokens.get(token) != backup_id:
            return self._error(403, "invalid or expired download token")
        if self.fake.download_redirect:  # to object storage, S3-style query signature
            location = (
                f"{self.fake.storage_url}/storage/{backup_id}.tar.gz?X-Amz-Algorithm=AWS4-HMAC-SHA256"
                f"&X-Amz-Expires=3600&X-Amz-Signature={self._storage_signature(backup_id)}"
            )
            return self._send_json(302, {}, headers={"Location": location})
        return self._serve_archive(self.fake.backup(backup_id))

    def h_storage(self, backup_id: str, query: dict):
        if self.headers.get("Authorization"):  # S3: "Only one auth mechanism allowed"
            return self._send_text(400, "InvalidArgument: Only one auth mechanism allowed")
        signature = (query.get("X-Amz-Signature") or [""])[0]
        if not hmac.compare_digest(signature, self._storage_signature(backup_id)):
            return self._send_text(403, "SignatureDoesNotMatch")
        try:
            backup = self.fake.backup(backup_id)
        except KeyError:
            return self._send_text(404, "NoSuchKey")
        return self._serve_archive(backup)

    def _serve_archive(self, backup: FakeBackup):
        path = backup.archive
        total = path.stat().st_size
        start, end = 0, total - 1
        status = 200
        rng = self.headers.get("Range")
        if rng:
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
            if not m or int(m.group(1)) >= total:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{total}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            start = int(m.group(1))
            end = min(int(m.group(2)), total - 1) if m.group(2) else total - 1
            status = 206
        length = end - start + 1
        cut = self.fake._take_cut()
        cut_at = None
        if cut is not None:
            cut_at = start + (cut["after"] if cut["after"] is not None else length // 2)
        framing = self.fake.download_framing
        self.send_response(status)
        self.send_header("Content-Type", "application/gzip")
        if framing == "length":
            self.send_header("Content-Length", str(length))
        elif framing == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
        else:  # the body ends when the connection closes
            self.send_header("Connection", "close")
            self.close_connection = True
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{total}")
        self.end_headers()

        def write(data: bytes) -> None:
            if framing == "chunked":
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            else:
                self.wfile.write(data)

        sent = start
        rate = (self.fake.download_rate_mb_s or 0) * 1e6
        began = time.monotonic()
        with open(path, "rb") as fh:
            fh.seek(start)
            while sent <= end:
                if rate:  # the bytes sent so far are due at this time
                    time.sleep(max(0.0, began + (sent - start) / rate - time.monotonic()))
                limit = end + 1 - sent
                if cut_at is not None:
                    limit = min(limit, cut_at - sent)
                    if limit <= 0:
                        self.wfile.flush()
                        self.close_connection = True
                        try:
                            self.connection.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                        return None
                chunk = fh.read(min(256 * 1024, limit))
                if not chunk:
                    break
                write(chunk)
                sent += len(chunk)
        if framing == "chunked":
            self.wfile.write(b"0\r\n\r\n")
        return None


_APP = r"/v1/apps/([^/]+)"
_ROUTES = [
    ("POST", r"/v1/tokens/exchange", _Handler.h_exchange),
    ("GET", r"/v1/regions", _Handler.h_regions),
    ("GET", r"/v1/apps", _Handler.h_apps),
    ("GET", _APP, _Handler.h_app),
    ("GET", _APP + r"/addons", _Handler.h_addons),
    ("GET", _APP + r"/addons/([^/]+)", _Handler.h_addon),
    ("POST", _APP + r"/addons/([^/]+)/token", _Handler.h_addon_token),
    ("GET", _APP + r"/variables", _Handler.h_variables),
    ("GET", _APP + r"/containers", _Handler.h_containers),
    ("POST", _APP + r"/scale", _Handler.h_scale),
    ("POST", _APP + r"/restart", _Handler.h_restart),
    ("POST", _APP + r"/run", _Handler.h_run),
    ("GET", _APP + r"/operations/([^/]+)", _Handler.h_operation),
    ("GET", r"/api/databases/([^/]+)", _Handler.h_database),
    ("GET", r"/api/databases/([^/]+)/backups", _Handler.h_backups),
    ("POST", r"/api/databases/([^/]+)/backups", _Handler.h_create_backup),
    ("GET", r"/api/databases/([^/]+)/backups/([^/]+)", _Handler.h_backup),
    ("GET", r"/api/backups/([^/]+)", _Handler.h_backup_global),
    ("GET", r"/api/databases/([^/]+)/backups/([^/]+)/archive", _Handler.h_archive),
    ("GET", r"/api/databases/([^/]+)/backups/([^/]+)/download", _Handler.h_download),
]

__all__ = ["FakeScalingoAPI", "FakeApp", "FakeAddon", "FakeBackup", "RecordedRequest", "DEFAULT_API_TOKEN"]
