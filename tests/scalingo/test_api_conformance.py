"""The client against a second, independent server written from docs/scalingo-api.md alone (not from
our fake): opaque tokens, a Database API with only the documented routes (an unknown route gets a Go
router's plain-text ``404 page not found``, as Scalingo's Go services answer), a JSON decoder that
refuses a JSON Content-Type with no body, a regions list without ``osc-fr1``, dates with offsets and
Go's fraction digits, and a download host whose signed URL lifetime, Range support, compression and
connection drops are left open by the docs (sections 5.6, 5.7, 10)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import re
import secrets
import socket
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from scalingo_staging_sync.scalingo.archive import extract_dump
from scalingo_staging_sync.scalingo.client import ScalingoApiError, ScalingoClient

API_TOKEN = "tk-us-conformance-0123456789abcdef"
APP = "shop-prod"
ADDON = "ad-2f6c1a3e-9d41-4c39-8f5e-0b1f2a3c4d5e"
RESOURCE = "shop_prod_4553"


def _archive(name: str) -> tuple[bytes, bytes]:
    """A ``<name>.tar.gz`` holding ``<name>.pgsql`` (custom-format magic + incompressible bytes)."""
    dump = b"PGDMP\x01\x0e\x00" + secrets.token_bytes(300_000)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo(f"{name}.pgsql")
        info.size = len(dump)
        tar.addfile(info, io.BytesIO(dump))
    return buf.getvalue(), dump


class DocServer:
    """Auth, main and Database API on one port, answering as docs/scalingo-api.md describes.

    ``backups``: the list as served (dicts); ``create_polls``: list reads before a created backup is
    ``done``; ``download``: ``"range"`` (206 for a Range), ``"refuse_range"`` (416 to any Range),
    ``"chunked_cut_at_end"`` (every data chunk sent, then the connection closed before the final
    chunk, once); ``single_use_urls``: a signed URL serves one request; ``cuts``: byte offsets at
    which successive downloads drop the connection; ``region_name``: the region ``/v1/regions``
    flags ``default`` and points at this server (listed after an ``osc-secnum-fr1`` pointing nowhere); ``gzip_if_accepted``: the download is
    compressed on the fly (``Content-Encoding: gzip``) for a client accepting gzip, as a web
    framework's gzip middleware does; ``strict_json``: a JSON Content-Type with a body
    that is not JSON (an empty one) is refused with 400, as a JSON decoder does."""

    def __init__(
        self,
        *,
        backups=None,
        create_polls=2,
        download="range",
        single_use_urls=False,
        cuts=(),
        strict_json=False,
        region_name="osc-fr1",
        gzip_if_accepted=False,
        unchanged_formation=400,
    ):
        self.name = f"20260301010000_{RESOURCE}"
        self.archive, self.dump = _archive(self.name)
        self.backups = backups if backups is not None else [self._backup("5f0c" + "0" * 20, "done")]
        self.create_polls = create_polls
        self.download = download
        self.single_use_urls = single_use_urls
        self.cuts = list(cuts)
        self.strict_json = strict_json
        self.region_name = region_name
        self.gzip_if_accepted = gzip_if_accepted
        #: appendix "app formation": the app's containers, its status, the operations and their polls left;
        #: a scale that changes nothing is refused as Scalingo does (400 ``{"error": "no change in
        #: containers formation"}``) or as a validation error (422 ``{"errors": {...}}``)
        self.formation = [
            {"name": "web", "amount": 2, "size": "M"},
            {"name": "worker", "amount": 1, "size": "S"},
        ]
        self.app_status = "running"
        self.slow_refusal_s = 0.0
        self.operations: dict[str, dict] = {}
        self.unchanged_formation = unchanged_formation
        #: the next answers to ``POST /run`` and to operation reads: ``[status, ...]`` (an error each)
        self.run_errors: list[int] = []
        #: appendix "runtime environment": ``GET /variables``; ``variables_body`` replaces the answer's bytes
        self.variables = {
            "SECRET_KEY_BASE": "s3cr3t-key-base-0123",
            "SCALINGO_POSTGRESQL_URL": "postgres://u:pw-0123@h:5432/db",
        }
        self.variables_body: bytes | None = None
        #: the bytes of the token exchange's and the addon-token answers instead of their JSON (``None``)
        self.exchange_body: bytes | None = None
        self.addon_token_body: bytes | None = None
        self.operation_errors: list[int] = []
        #: the status (409, 422...) answering a backup request while a listed backup is not done or failed
        self.refuse_backup_while_running: int | None = None
        #: the next scale or run requests answered 409 "app is scaling" (another operation in progress)
        self.busy_refusals = 0
        #: the status answering every backup request (a plan's limit)
        self.refuse_backups: int | None = None
        #: the archive endpoint answers a short signed URL in a JSON object cut off before its last byte
        self.short_archive_answer = False
        #: the scheme and host the scale's ``Location`` names (``None``: a relative Location, as documented)
        self.operation_host: str | None = None
        self.requests: list[dict] = []
        self.user_tokens: set[str] = set()
        self.addon_tokens: set[str] = set()
        self.download_tokens: dict[str, str] = {}
        self._polls: dict[str, int] = {}
        self._cut_at_end_done = False
        self.lock = threading.Lock()

    def _backup(self, backup_id: str, status: str, created_at="2026-03-01T03:00:00.000+02:00") -> dict:
        done = status == "done"
        return {
            "id": backup_id,
            "created_at": created_at,
            "started_at": created_at if status != "scheduled" else None,
            "name": self.name,
            "size": len(self.archive) if done else None,
            "status": status,
            "database_id": "5d7a0c1e2f3a4b5c6d7e8f90",
            "method": "periodic",
            "type": "postgresql",
        }

    def __enter__(self) -> DocServer:
        handler = type("H", (_DocHandler,), {"doc": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        host, port = self.httpd.server_address[:2]
        self.url = f"http://{host}:{port}"
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def client(self, **kwargs) -> ScalingoClient:
        params = dict(auth_url=self.url, api_url=self.url, db_api_url=self.url, backoff_s=0.01)
        params.update(kwargs)
        return ScalingoClient(API_TOKEN, **params)

    def hits(self, method: str, pattern: str) -> list[dict]:
        return [r for r in self.requests if r["method"] == method and re.fullmatch(pattern, r["path"])]


class _DocHandler(BaseHTTPRequestHandler):
    doc: DocServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        return

    def _send(self, status: int, body, ctype="application/json", headers=None):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._route("GET")

    def do_POST(self):
        self._route("POST")

    def _route(self, method: str) -> None:
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.doc.requests.append(
            {"method": method, "path": path, "headers": dict(self.headers.items()), "body": raw}
        )
        if self.doc.strict_json and (self.headers.get("Content-Type") or "").startswith("application/json"):
            try:
                json.loads(raw)  # a JSON decoder: an empty body is not JSON
            except ValueError:
                return self._send(400, {"error": "invalid JSON body", "code": "invalid_json"})
        db, bk = r"/api/databases/([^/]+)", r"/backups/([^/]+)"
        routes = [
            ("POST", r"/v1/tokens/exchange", self.exchange),
            ("GET", r"/v1/regions", self.regions),
            ("GET", r"/v1/apps/([^/]+)/addons", self.addons),
            ("POST", r"/v1/apps/([^/]+)/addons/([^/]+)/token", self.addon_token),
            ("GET", r"/v1/apps/([^/]+)/containers", self.containers),
            ("POST", r"/v1/apps/([^/]+)/scale", lambda app: self.scale(app, raw)),
            ("GET", r"/v1/apps/([^/]+)/operations/([^/]+)", self.operation),
            ("POST", r"/v1/apps/([^/]+)/run", lambda app: self.run(app, raw)),
            ("GET", r"/v1/apps/([^/]+)/variables", self.variables),
            ("GET", db, self.database),
            ("GET", db + r"/backups", self.list_backups),
            ("POST", db + r"/backups", self.create_backup),
            ("GET", db + bk + r"/archive", self.archive_url),
            ("GET", db + bk + r"/download", lambda a, b: self.serve(b, query)),
        ]
        for route_method, pattern, handler in routes:
            match = re.fullmatch(pattern, path)
            if match and route_method == method:
                try:
                    return handler(*match.groups())
                except (BrokenPipeError, ConnectionResetError):
                    return None
        # Go's http.ServeMux / gorilla/mux answer for an unknown route
        return self._send(404, b"404 page not found\n", "text/plain; charset=utf-8")

    def _bearer(self, tokens: set[str]) -> bool:
        auth = self.headers.get("Authorization", "")
        if auth[7:] in tokens and auth.startswith("Bearer "):
            return True
        self._send(401, {"error": "invalid token"})
        return False

    def exchange(self):
        auth = self.headers.get("Authorization", "")
        decoded = base64.b64decode(auth[6:]).decode() if auth.startswith("Basic ") else ""
        if decoded != f":{API_TOKEN}":
            return self._send(401, {"error": "invalid token"})
        token = "ut-" + secrets.token_hex(16)  # opaque: the docs promise a string, not a JWT layout
        self.doc.user_tokens.add(token)
        if self.doc.exchange_body is not None:
            return self._send(200, self.doc.exchange_body.replace(b"TOKEN", token.encode()))
        self._send(200, {"token": token})

    def regions(self):
        if not self._bearer(self.doc.user_tokens):
            return None
        u = self.doc.url
        region = {"name": self.doc.region_name, "display_name": "Here", "api": u, "database_api": u}
        other = {"name": "osc-secnum-fr1", "api": "http://127.0.0.1:9", "database_api": "http://127.0.0.1:9"}
        self._send(200, {"regions": [{**other, "default": False}, {**region, "default": True}]})

    def addons(self, app):
        if not self._bearer(self.doc.user_tokens):
            return None
        if app != APP:
            return self._send(404, {"resource": "app", "error": "not found"})
        self._send(200, {"addons": [self._addon()]})

    def _addon(self) -> dict:
        return {
            "id": ADDON,
            "app_id": "ap-0b1f2a3c",
            "resource_id": RESOURCE,
            "status": "running",
            "provisioned_at": "2025-01-02T10:00:00.000+01:00",
            "deprovisioned_at": None,
            "plan": {"id": "pl-1", "name": "postgresql-starter-512", "display_name": "Starter 512M"},
            "addon_provider": {"id": "postgresql", "name": "PostgreSQL", "logo_url": ""},
        }

    def addon_token(self, app, addon_id):
        if not self._bearer(self.doc.user_tokens):
            return None
        token = "at-" + secrets.token_hex(16)
        self.doc.addon_tokens.add(token)
        if self.doc.addon_token_body is not None:
            return self._send(200, self.doc.addon_token_body.replace(b"TOKEN", token.encode()))
        self._send(200, {"addon": {**self._addon(), "token": token}})

    def containers(self, app):
        if self._bearer(self.doc.user_tokens):
            self._send(200, {"containers": self.doc.formation})

    def _busy(self) -> bool:
        """Appendix "app formation": no other operation while the app is not ``running``: a 409 sent
        (called with the lock held)."""
        doc = self.doc
        if doc.slow_refusal_s:  # a 409 that takes long to come (a loaded Scalingo), once
            time.sleep(doc.slow_refusal_s)
            doc.slow_refusal_s = 0
        if doc.busy_refusals:
            doc.busy_refusals -= 1
            self._send(409, {"error": "app is scaling"})
            return True
        if doc.app_status != "running":
            self._send(409, {"error": f"app is {doc.app_status}"})
            return True
        return False

    def scale(self, app, raw):
        if not self._bearer(self.doc.user_tokens):
            return None
        wanted = json.loads(raw).get("containers")
        doc = self.doc
        with doc.lock:
            if self._busy():
                return None
            current = {c["name"]: c for c in doc.formation}
            unknown = [c["name"] for c in wanted if c["name"] not in current]
            if unknown:
                return self._send(
                    422, {"errors": {"containers": [f"{n} is not a container type" for n in unknown]}}
                )
            if all(current[c["name"]]["amount"] == c["amount"] for c in wanted):
                if doc.unchanged_formation == 422:
                    return self._send(422, {"errors": {"containers": ["no change in containers formation"]}})
                return self._send(400, {"error": "no change in containers formation"})
            for c in wanted:
                current[c["name"]]["amount"] = c["amount"]
            doc.app_status = "scaling"
            op_id = secrets.token_hex(8)
            doc.operations[op_id] = {"id": op_id, "type": "scale", "status": "pending", "polls": 2}
        location = f"{doc.operation_host or ''}/v1/apps/{app}/operations/{op_id}"
        self._send(202, {"containers": doc.formation}, headers={"Location": location})

    def variables(self, app):
        if not self._bearer(self.doc.user_tokens):
            return None
        if self.doc.variables_body is not None:
            return self._send(200, self.doc.variables_body)
        listed = [
            {"id": f"v{i}", "name": k, "value": v} for i, (k, v) in enumerate(self.doc.variables.items())
        ]
        self._send(200, {"variables": listed})

    def run(self, app, raw):
        if not self._bearer(self.doc.user_tokens):
            return None
        body = json.loads(raw)
        doc = self.doc
        with doc.lock:
            if self._busy():
                return None
            op_id = secrets.token_hex(8)
            doc.operations[op_id] = {"id": op_id, "type": "run", "status": "pending", "polls": 2}
            error = doc.run_errors.pop(0) if doc.run_errors else None
        if error:  # the container is started all the same (a proxy's 5xx after the API acted)
            return self._send(error, {"error": "upstream provider returned an error, please retry later"})
        container = {"id": "ct-" + op_id, "type": "one-off", "state": "starting", "command": body["command"]}
        self._send(
            200,
            {"container": container, "attach_url": f"{doc.url}/attach/{op_id}"},
            headers={"Location": f"/v1/apps/{app}/operations/{op_id}"},
        )

    def operation(self, app, op_id):
        if not self._bearer(self.doc.user_tokens):
            return None
        if self.doc.operation_errors:
            return self._send(self.doc.operation_errors.pop(0), {"error": "internal error"})
        with self.doc.lock:
            op = self.doc.operations.get(op_id)
            if op is None:
                return self._send(404, {"resource": "operation", "error": "not found"})
            op["polls"] -= 1
            op["status"] = "running" if op["polls"] > 0 else "done"
            if op["status"] == "done":
                self.doc.app_status = "running"
            data = {k: v for k, v in op.items() if k != "polls"}
        self._send(200, {"operation": data})

    def database(self, addon_id):
        if self._bearer(self.doc.addon_tokens):
            self._send(200, {"database": {"id": "5d7a", "readable_version": "17.11.0-1", "hostname": "h:1"}})

    def list_backups(self, addon_id):
        if not self._bearer(self.doc.addon_tokens):
            return None
        with self.doc.lock:
            for backup in self.doc.backups:
                left = self.doc._polls.get(backup["id"])
                if left is not None:
                    self.doc._polls[backup["id"]] = left - 1
                    backup.update(status="running", started_at=backup["created_at"])
                    if left - 1 <= 0:
                        backup.update(status="done", size=len(self.doc.archive))
                        del self.doc._polls[backup["id"]]
            self._send(200, {"database_backups": self.doc.backups})

    def create_backup(self, addon_id):
        if not self._bearer(self.doc.addon_tokens):
            return None
        if self.doc.refuse_backup_while_running and any(
            b["status"] not in ("done", "error") for b in self.doc.backups
        ):
            status = self.doc.refuse_backup_while_running
            return self._send(status, {"error": "a backup is already in progress"})
        if self.doc.refuse_backups:
            return self._send(self.doc.refuse_backups, {"error": "manual backup limit reached"})
        backup = self.doc._backup(secrets.token_hex(12), "scheduled", "2026-03-02T09:00:00.000+01:00")
        backup["method"] = "manual"
        with self.doc.lock:
            self.doc.backups.insert(0, backup)
            self.doc._polls[backup["id"]] = self.doc.create_polls
        self._send(201, {"database_backup": backup})

    def archive_url(self, addon_id, backup_id):
        if not self._bearer(self.doc.addon_tokens):
            return None
        token = secrets.token_urlsafe(24)
        self.doc.download_tokens[token] = backup_id
        url = f"{self.doc.url}/api/databases/{addon_id}/backups/{backup_id}/download?token={token}"
        if self.doc.short_archive_answer:  # a short signed URL, and the answer cut off after it
            return self._send(200, json.dumps({"download_url": f"/d?token={token}"}).encode()[:-1])
        self._send(200, {"download_url": url})

    def serve(self, backup_id, query):
        doc = self.doc
        token = (query.get("token") or [""])[0]
        with doc.lock:
            valid = doc.download_tokens.get(token) == backup_id
            if valid and doc.single_use_urls:
                del doc.download_tokens[token]
        if not valid:
            return self._send(403, {"error": "invalid or expired download token"})
        data, total = doc.archive, len(doc.archive)
        if doc.gzip_if_accepted and "gzip" in (self.headers.get("Accept-Encoding") or ""):
            return self._send(200, gzip.compress(data), "application/gzip", {"Content-Encoding": "gzip"})
        start, status = 0, 200
        rng = self.headers.get("Range")
        if rng:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if doc.download == "refuse_range" or start >= total:
                return self._send(416, b"", "text/plain", {"Content-Range": f"bytes */{total}"})
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/gzip")
        chunked = doc.download == "chunked_cut_at_end"
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(total - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
        self.end_headers()
        cut = doc.cuts.pop(0) if doc.cuts else None
        body = data[start:cut] if cut is not None else data[start:]
        if chunked:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(body), body))
            if not doc._cut_at_end_done:  # every byte sent, never the final 0-length chunk
                doc._cut_at_end_done = True
                cut = total
            else:
                self.wfile.write(b"0\r\n\r\n")
        else:
            self.wfile.write(body)
        if cut is not None:
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)


# ---------------------------------------------------------------------------- auth and headers
def test_flow_with_opaque_tokens_and_only_documented_requests(tmp_path):
    """Sections 1-5: Basic ':<token>' exchange, Bearer everywhere else, the addon-token POST with no body
    (and so no JSON Content-Type, which a JSON decoder refuses when the body is empty), GETs with no
    Content-Type, no Authorization on the signed URL; tokens that are not JWTs are cached (1 hour)."""
    with DocServer(strict_json=True) as doc, doc.client() as client:
        addon = client.get_postgresql_addon(APP)
        backup = client.latest_done_backup(APP, addon["id"])
        result = client.download_backup(APP, addon["id"], backup, tmp_path / "b.tar.gz")
        client.list_backups(APP, addon["id"])
    assert result.sha256 == hashlib.sha256(doc.archive).hexdigest()
    assert extract_dump(result.path, tmp_path / "x").read_bytes() == doc.dump
    (exchange,) = doc.hits("POST", r"/v1/tokens/exchange")
    assert (
        exchange["headers"]["Authorization"] == "Basic " + base64.b64encode(f":{API_TOKEN}".encode()).decode()
    )
    (token,) = doc.hits("POST", r"/v1/apps/[^/]+/addons/[^/]+/token")
    assert token["body"] == b"" and "Content-Type" not in token["headers"]
    assert token["headers"]["Authorization"].startswith("Bearer ut-")
    for get in doc.hits("GET", r"/(v1|api)/.*"):
        assert "Content-Type" not in get["headers"], get["path"]
    for db_call in doc.hits("GET", r"/api/databases/[^/]+/backups(/[^/]+/archive)?"):
        assert db_call["headers"]["Authorization"].startswith("Bearer at-")
    (download,) = doc.hits("GET", r".*/download")
    assert "Authorization" not in download["headers"]


def test_a_refused_api_token_keeps_the_servers_message():
    """Sections 1.2 and 6: the exchange refuses a bad token with 401 ``{"error": str}``; the error says
    what the server said, and names the fix, never the token."""
    from scalingo_staging_sync.scalingo.errors import ScalingoAuthError

    with DocServer() as doc, doc.client() as good:
        good.get_formation(APP)
        with ScalingoClient(
            "tk-us-revoked-0000", auth_url=doc.url, api_url=doc.url, db_api_url=doc.url
        ) as bad:
            with pytest.raises(ScalingoAuthError) as err:
                bad.get_formation(APP)
    assert err.value.status == 401 and err.value.body == {"error": "invalid token"}
    assert "'invalid token'" in str(err.value) and "password field" in str(err.value)
    assert "tk-us-revoked" not in str(err.value)


@pytest.mark.parametrize("which", ["exchange", "addon token"])
def test_an_unreadable_token_answer_is_not_quoted(which):
    """Sections 1.2 and 4: a token answer that is not JSON (here cut before its end) holds the token,
    not masked yet since it was never read: the error does not quote it."""
    with DocServer() as doc, doc.client(max_attempts=1) as client:
        if which == "exchange":
            doc.exchange_body = b'{"token": "TOKEN'
        else:
            doc.addon_token_body = b'{"addon": {"token": "TOKEN'
        with pytest.raises(ScalingoApiError, match="not JSON") as err:
            client.get_database(APP, ADDON)
    issued = doc.user_tokens if which == "exchange" else doc.addon_tokens
    assert issued and not any(token in str(err.value) for token in issued)


# ---------------------------------------------------------------------------- regions
def test_no_region_configured_takes_the_regions_endpoint_default(monkeypatch):
    """Section 2.2: with no region in the connection and no ``osc-fr1`` in ``/v1/regions``, the region
    flagged ``default`` is used (the CLI's rule), not the static table's real Scalingo hosts."""
    from scalingo_staging_sync.hooks.scalingo import ScalingoHook

    with DocServer(region_name="test-fr1") as doc:
        conn = {
            "conn_type": "scalingo",
            "password": API_TOKEN,
            "extra": {"auth_url": doc.url, "backoff_s": 0.01},
        }
        monkeypatch.setenv("AIRFLOW_CONN_SCALINGO_DEFAULT", json.dumps(conn))
        client = ScalingoHook().get_conn()
        try:
            assert client.get_postgresql_addon(APP)["id"] == ADDON
            endpoints = client.endpoints()
        finally:
            client.close()
    assert (client.region, endpoints.api, endpoints.db_api) == ("test-fr1", doc.url, doc.url)
    with (
        DocServer(region_name="test-fr1") as doc,
        doc.client(api_url=None, db_api_url=None, region="osc-fr1") as c,
    ):
        # a configured region is never replaced; with an auth URL that is not Scalingo's, its real hosts
        # are not a fallback either
        with pytest.raises(
            ScalingoApiError, match=r"region 'osc-fr1'.*does not list it.*'test-fr1'.*api_url"
        ):
            c.endpoints()


def test_connection_check_needs_no_apps_list(monkeypatch):
    """The hook's test_connection checks the token exchange and the region: ``GET /v1/apps`` is not a
    call the docs describe, and a server without it (404, plain text) is not a failed connection."""
    from scalingo_staging_sync.hooks.scalingo import ScalingoHook

    with DocServer() as doc:
        extra = {"auth_url": doc.url, "api_url": doc.url, "db_api_url": doc.url}
        conn = {"conn_type": "scalingo", "password": API_TOKEN, "extra": extra}
        monkeypatch.setenv("AIRFLOW_CONN_SCALINGO_DEFAULT", json.dumps(conn))
        ok, message = ScalingoHook().test_connection()
    assert ok, message
    assert "token accepted" in message and "no apps list" in message and API_TOKEN not in message


# ---------------------------------------------------------------------------- formation and scaling
def test_scale_follows_the_operation_named_by_a_relative_location():
    """Appendix "app formation": 202, the whole formation, ``Location: /v1/apps/{app}/operations/{id}``
    polled until ``done``; a bad formation's 422 keeps the server's ``errors``."""
    with DocServer() as doc, doc.client() as client:
        result = client.scale(APP, {"web": 0, "worker": 0}, poll_interval=0.01)
        assert result["operation"]["status"] == "done" and doc.app_status == "running"
        assert {c["name"]: c["amount"] for c in client.get_formation(APP)} == {"web": 0, "worker": 0}
        with pytest.raises(ScalingoApiError, match=r"HTTP 422.*clock is not a container type"):
            client.scale(APP, {"clock": 1})
    assert len(doc.hits("GET", r"/v1/apps/[^/]+/operations/[^/]+")) == 2


@pytest.mark.parametrize("refusal", [400, 422])
def test_scaling_to_the_formation_the_app_already_has_is_not_an_error(refusal, monkeypatch):
    """A scale that changes nothing is refused by Scalingo (400 "no change in containers formation"):
    a scale-back sent again (after a timeout, a retried teardown) finds the app already as wanted and
    succeeds without an operation, and the saved formation is cleared; a refusal while the formation
    differs is still an error."""
    from scalingo_staging_sync.restore import targets

    written = []
    monkeypatch.setattr(targets, "write_state", lambda target, status, **fields: written.append(fields))
    with DocServer(unchanged_formation=refusal) as doc, doc.client() as client:
        before = [{"name": c["name"], "amount": c["amount"]} for c in client.get_formation(APP)]
        result = client.scale(APP, before, poll_interval=0.01)
        assert result["unchanged"] is True and result["operation_url"] is None
        state = {"status": "verified", "app": APP, "formation": before}
        assert targets.scale_back(None, client, state) == before
        assert written == [{"app": None, "formation": None}]
        with pytest.raises(ScalingoApiError, match=r"HTTP 422.*clock is not a container type"):
            client.scale(APP, [{"name": "web", "amount": 2}, {"name": "clock", "amount": 1}])
    assert doc.formation[0]["amount"] == 2
    assert len(doc.hits("POST", r"/v1/apps/[^/]+/scale")) == 3
    assert not doc.hits("GET", r"/v1/apps/[^/]+/operations/[^/]+")


def test_an_operation_refused_while_the_app_is_busy_is_asked_again_until_it_is_free():
    """Appendix "app formation": while the app is ``scaling`` no other operation is possible. A scale
    and a one-off run refused with a 409 (someone's scale or deployment in progress) did nothing: each
    is sent again until the app is free, then followed to its end."""
    with DocServer() as doc, doc.client() as client:
        for call in (
            lambda: client.scale(APP, {"web": 0}, poll_interval=0.05, timeout=10),
            lambda: client.run_detached(APP, "rails db:seed", poll_interval=0.05),
        ):
            doc.busy_refusals = 2
            assert call()["operation"]["status"] == "done"
    assert len(doc.hits("POST", r"/v1/apps/[^/]+/scale")) == 3
    assert len(doc.hits("POST", r"/v1/apps/[^/]+/run")) == 3
    assert doc.formation[0]["amount"] == 0


def test_an_app_that_stays_busy_fails_the_operation_after_its_timeout():
    """A 409 that lasts past the timeout is an error that names the app and says what to do."""
    with DocServer() as doc, doc.client() as client:
        doc.app_status = "restarting"
        with pytest.raises(
            ScalingoApiError, match=rf"HTTP 409.*{APP}.*still busy after 2 s.*ps\) and run again"
        ):
            client.scale(APP, {"web": 0}, poll_interval=0.2, timeout=2)
    # the timeout runs from the first refusal: however long the token exchange took on a loaded
    # machine, the app is asked again until it has been busy for 2 s (at most one ask per 0.2 s)
    assert 2 <= len(doc.hits("POST", r"/v1/apps/[^/]+/scale")) <= 11
    assert doc.formation[0]["amount"] == 2


def test_the_busy_timeout_runs_from_the_first_refusal():
    """Time spent reaching Scalingo (a slow token exchange, a slow first answer) is not time spent
    waiting for the app: an app busy at the first ask is asked again even when that ask took longer
    than the timeout."""
    with DocServer() as doc, doc.client() as client:
        doc.app_status = "restarting"
        doc.slow_refusal_s = 1.0
        with pytest.raises(ScalingoApiError, match=r"still busy after 0.5 s"):
            client.scale(APP, {"web": 0}, poll_interval=0.1, timeout=0.5)
    assert len(doc.hits("POST", r"/v1/apps/[^/]+/scale")) >= 2


@pytest.mark.parametrize("named", ["localhost", "foreign"])
def test_an_operation_location_on_another_host_is_read_from_the_api(named):
    """The scale's ``Location`` is documented as a path; an absolute one naming another host (a proxy's
    rewrite, the API calling itself ``localhost``) is read from the API host at that path: the user
    token is never sent to a host the client was not configured with."""
    foreign: list[str] = []

    class Recorder(BaseHTTPRequestHandler):
        def log_message(self, *args):
            return

        def do_GET(self):
            foreign.append(self.headers.get("Authorization", ""))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    other = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=other.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        with DocServer() as doc, doc.client() as client:
            port = doc.url.rsplit(":", 1)[1]
            doc.operation_host = (
                f"http://localhost:{port}"
                if named == "localhost"
                else f"http://127.0.0.1:{other.server_port}"
            )
            result = client.scale(APP, {"web": 0}, poll_interval=0.01, timeout=5)
            assert result["operation"]["status"] == "done" and doc.app_status == "running"
    finally:
        other.shutdown()
        other.server_close()
    assert foreign == []
    assert len(doc.hits("GET", r"/v1/apps/[^/]+/operations/[^/]+")) == 2


# ---------------------------------------------------------------------------- app variables
def test_variables_keep_one_value_and_an_unreadable_answer_is_not_quoted():
    """Appendix "reading an app's environment": ``{"variables": [{"id", "name", "value"}]}``, one value
    kept. An answer that is not JSON (cut off, a proxy's rewrite) holds every secret of the app: the
    error does not quote it."""
    with DocServer() as doc, doc.client() as client:
        assert client.get_variable(APP, "SCALINGO_POSTGRESQL_URL") == "postgres://u:pw-0123@h:5432/db"
        assert client.get_variable(APP, "DATABASE_URL") is None
        doc.variables_body = (
            b'{"variables": [{"id": "v0", "name": "SECRET_KEY_BASE", "value": "s3cr3t-key-base-0123"'
        )
        with pytest.raises(ScalingoApiError, match="expected a JSON object") as err:
            client.get_variable(APP, "SCALINGO_POSTGRESQL_URL")
    assert "s3cr3t" not in str(err.value) and "SECRET_KEY_BASE" not in str(err.value)


# ---------------------------------------------------------------------------- one-off runs
def test_one_off_run_follows_its_operation():
    """Appendix "one-off commands": ``detached: true``, a container and a Location to follow."""
    with DocServer() as doc, doc.client() as client:
        result = client.run_detached(APP, "rails db:migrate", env={"K": "v"}, poll_interval=0.01)
    assert result["operation"]["status"] == "done" and result["container"]["type"] == "one-off"
    (run,) = doc.hits("POST", r"/v1/apps/[^/]+/run")
    assert json.loads(run["body"]) == {"command": "rails db:migrate", "env": {"K": "v"}, "detached": True}


@pytest.mark.parametrize("where", ["run", "operation"])
def test_a_one_off_run_that_may_have_started_is_not_retried_by_the_task(where):
    """A 5xx on the run POST (Scalingo may have started the container), or an operation that cannot be
    followed after the container started: the error is not retryable (an Airflow retry of the task would
    run the command twice) and says to check the container; the POST is sent once."""
    from scalingo_staging_sync.errors import is_retryable

    with DocServer() as doc, doc.client(max_attempts=2) as client:
        if where == "run":
            doc.run_errors = [502]
        else:
            doc.operation_errors = [503] * 5
        with pytest.raises(ScalingoApiError, match=r"HTTP 50.*before running the command again") as err:
            client.run_detached(APP, "rails db:seed", poll_interval=0.01)
    assert not is_retryable(err.value)
    assert len(doc.hits("POST", r"/v1/apps/[^/]+/run")) == 1


# ---------------------------------------------------------------------------- backups
def test_created_at_offsets_are_compared_as_instants():
    """Section 6: dates are ISO 8601 with an offset. 03:00+02:00 is 01:00Z, older than 01:30Z, although
    it sorts after it as text; a Go server writes 1 to 9 fraction digits (RFC 3339 nano), which
    Python 3.10's ``fromisoformat`` does not read by itself. The list is not given newest first."""
    with DocServer(backups=[]) as doc:
        doc.backups[:] = [
            doc._backup("d" * 24, "done", "2026-03-01T00:45:10.5Z"),
            doc._backup("a" * 24, "done", "2026-03-01T03:00:00.000+02:00"),
            doc._backup("b" * 24, "done", "2026-03-01T01:30:00.123456789Z"),
            doc._backup("e" * 24, "done", "2026-03-01T02:40:00.25+0200"),
            doc._backup("c" * 24, "pending", "2026-03-01T04:00:00.000+01:00"),  # legacy status (5.2)
        ]
        with doc.client() as client:
            assert client.latest_done_backup(APP, ADDON)["id"] == "b" * 24
            listed = [b["id"][0] for b in client.list_backups(APP, ADDON)]
    assert listed == ["c", "b", "a", "d", "e"]


def test_new_backup_polled_through_the_list_when_the_show_route_is_not_there():
    """Sections 5.4-5.5: 201 ``scheduled``; no show-one-backup route on the server (undocumented), whose
    router answers a plain-text 404: asked once, then each poll is one documented list request."""
    with DocServer(create_polls=3) as doc, doc.client() as client:
        created = client.create_backup(APP, ADDON)
        assert created["status"] == "scheduled" and created["size"] is None
        done = client.wait_for_backup(APP, ADDON, created["id"], poll_interval=0.01, timeout=10)
    assert done["status"] == "done" and done["size"] == len(doc.archive)
    assert len(doc.hits("GET", rf"/api/databases/{ADDON}/backups/{created['id']}")) == 1
    # the list before the POST (a backup listed before it is never taken for its result), then 3 polls
    assert len(doc.hits("GET", rf"/api/databases/{ADDON}/backups")) == 4


def test_an_archive_answer_that_is_not_json_is_not_quoted():
    """Section 5.6: the archive endpoint's answer holds the signed download URL, a secret not masked
    yet while the answer is read. An answer that is not JSON (cut off) is not quoted in the error,
    however short the URL."""
    with DocServer() as doc, doc.client() as client:
        doc.short_archive_answer = True
        with pytest.raises(ScalingoApiError, match="expected a JSON object") as err:
            client.archive_url(APP, ADDON, doc.backups[0]["id"])
    (token,) = doc.download_tokens
    assert token not in str(err.value) and "token=" not in str(err.value)


@pytest.mark.parametrize("refusal", [409, 422])
def test_a_backup_request_refused_while_one_is_running_waits_for_that_one(refusal):
    """Section 5.4: the answer to a backup request while another backup runs is not documented. Refused
    (409 or a validation error), the client takes the backup being made and waits for it like its own;
    with none running, the refusal is the error it was, saying what to do."""
    with DocServer(create_polls=2) as doc, doc.client() as client:
        doc.refuse_backup_while_running = refusal
        periodic = doc._backup("e" * 24, "running", "2026-03-02T08:59:00.000+01:00")
        doc.backups.insert(0, periodic)
        doc._polls[periodic["id"]] = 5  # each list is one step of the backup (two lists before the wait)
        adopted = client.create_backup(APP, ADDON)
        assert adopted["id"] == periodic["id"] and adopted["status"] == "running"
        done = client.wait_for_backup(APP, ADDON, adopted["id"], poll_interval=0.01, timeout=10)
        assert done["status"] == "done"
        assert len(doc.hits("POST", rf"/api/databases/{ADDON}/backups")) == 1
        assert len(doc.backups) == 2  # no second backup asked for

        doc.refuse_backups = refusal  # none running: a plan's limit, say
        with pytest.raises(ScalingoApiError, match=rf"HTTP {refusal}.*use backup='latest'"):
            client.create_backup(APP, ADDON)


# ---------------------------------------------------------------------------- signed download
def test_single_use_signed_url_is_renewed_at_every_resume(tmp_path):
    """Section 5.6: the URL's lifetime is not documented. A URL good for one request, and two dropped
    connections: each resume gets a new URL from the archive endpoint."""
    with DocServer(single_use_urls=True, cuts=[50_000, 150_000]) as doc, doc.client() as client:
        backup = client.latest_done_backup(APP, ADDON)
        result = client.download_backup(APP, ADDON, backup, tmp_path / "s.tar.gz")
    assert result.sha256 == hashlib.sha256(doc.archive).hexdigest() and result.resumes == 2
    assert len(doc.hits("GET", r".*/archive")) == 3
    ranges = [r["headers"].get("Range") for r in doc.hits("GET", r".*/download")]
    assert ranges == [None, "bytes=50000-", "bytes=50000-", "bytes=150000-", "bytes=150000-"]


def test_download_asks_for_the_archive_bytes_not_an_on_the_fly_gzip(tmp_path):
    """Section 5.7: the file is the .tar.gz itself. A server compressing responses for clients that
    accept gzip must not be asked to: the request says ``Accept-Encoding: identity``."""
    with DocServer(gzip_if_accepted=True) as doc, doc.client() as client:
        backup = client.latest_done_backup(APP, ADDON)
        result = client.download_backup(APP, ADDON, backup, tmp_path / "g.tar.gz")
    assert result.sha256 == hashlib.sha256(doc.archive).hexdigest()
    assert extract_dump(result.path, tmp_path / "x").read_bytes() == doc.dump
    assert [r["headers"].get("Accept-Encoding") for r in doc.hits("GET", r".*/download")] == ["identity"]


def test_connection_dropped_after_the_last_byte_is_complete(tmp_path):
    """Section 5.7 (chunked body, no Content-Length): the connection drops after the last data chunk;
    the resume asks for ``bytes=<size>-`` and gets ``416 bytes */<size>``: nothing was missing."""
    with DocServer(download="chunked_cut_at_end") as doc, doc.client() as client:
        backup = client.latest_done_backup(APP, ADDON)
        result = client.download_backup(APP, ADDON, backup, tmp_path / "e.tar.gz")
    assert result.sha256 == hashlib.sha256(doc.archive).hexdigest() and result.resumes == 1
    assert [r["headers"].get("Range") for r in doc.hits("GET", r".*/download")] == [
        None,
        f"bytes={len(doc.archive)}-",
    ]


@pytest.mark.parametrize("size_known", [True, False])
def test_server_refusing_range_with_416_restarts_from_zero(tmp_path, size_known):
    """Range support is not documented: a server answering 416 to a resume is read again from byte 0."""
    with DocServer(download="refuse_range", cuts=[80_000]) as doc, doc.client() as client:
        backup = client.latest_done_backup(APP, ADDON)
        if not size_known:
            backup = {**backup, "size": None}
        result = client.download_backup(APP, ADDON, backup, tmp_path / "r.tar.gz")
    assert result.sha256 == hashlib.sha256(doc.archive).hexdigest() and result.size == len(doc.archive)
    assert [r["headers"].get("Range") for r in doc.hits("GET", r".*/download")] == [
        None,
        "bytes=80000-",
        None,
    ]


@pytest.mark.parametrize(
    ("plan", "name"),
    [
        ({"id": "pl-1", "name": "postgresql-starter-512"}, "postgresql-starter-512"),
        ("postgresql-business-1024", "postgresql-business-1024"),
        (None, None),
        ({}, None),
        (7, None),
    ],
)
def test_addon_plan_as_object_or_bare_name(plan, name):
    """The addon's ``plan`` is documented as an object; a bare name (or nothing) must not fail the backup
    task, whose result only reports it."""
    from scalingo_staging_sync.operators.backup import _plan_name

    assert _plan_name(plan) == name


def test_an_archive_extracted_while_it_downloads_is_extracted_again_after_a_restart(tmp_path):
    """A restart from byte 0 (416 to the resume) empties the file the extraction was reading: that
    extraction stops and the finished file is extracted again; the dump is the archive's."""
    from scalingo_helpers import archive_log

    from scalingo_staging_sync.scalingo.archive import download_and_extract

    with DocServer(download="refuse_range", cuts=[80_000]) as doc, doc.client() as client:
        backup = client.latest_done_backup(APP, ADDON)
        target = tmp_path / "r.tar.gz"
        with archive_log() as messages:
            result, dump = download_and_extract(
                lambda follower: client.download_backup(APP, ADDON, backup, target, follower=follower),
                target,
                tmp_path / "x",
            )
    assert result.sha256 == hashlib.sha256(doc.archive).hexdigest()
    assert dump.read_bytes() == doc.dump
    assert [p.name for p in (tmp_path / "x").iterdir()] == [dump.name]
    assert any("extracting r.tar.gz again" in m and "restarted from byte 0" in m for m in messages)
