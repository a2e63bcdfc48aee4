"""Core Scalingo API client (no Airflow import): auth exchange, regions, addons, addon tokens,
Database API backups, archive download, app formation / scale / one-off runs.

Secrets (API token, user JWT, addon tokens, signed download URLs) are registered with
``scalingo_staging_sync.secrets.mask_secret`` the moment they are held, and never logged.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit, urlunsplit

import requests
import tenacity
import urllib3

from scalingo_staging_sync import __version__
from scalingo_staging_sync.scalingo import regions as _regions
from scalingo_staging_sync.scalingo.download import (
    DownloadResult,
    Follower,
    download_archive,
    mask_url,
    parse_retry_after,
)
from scalingo_staging_sync.scalingo.errors import (
    AddonNotFoundError,
    BackupFailedError,
    BackupNotListedError,
    BackupNotReadyError,
    ScalingoApiError,
    ScalingoAuthError,
    ScalingoNotFoundError,
    ScalingoOperationError,
    ScalingoRateLimitError,
    ScalingoServerError,
)
from scalingo_staging_sync.secrets import install_log_filter, mask_secret

log = logging.getLogger(__name__)
# urllib3 logs request lines (a signed download URL carries its token in the query) at DEBUG level
install_log_filter("urllib3.connectionpool")

POSTGRESQL_PROVIDER_IDS = frozenset({"postgresql", "scalingo-postgresql"})
#: the CLI's names for the provider (``addon_provider.name`` case-insensitive, and its aliases)
POSTGRESQL_PROVIDER_NAMES = frozenset({"postgresql", "psql", "pgsql", "postgres"})
#: the environment variable Scalingo sets in an app for its PostgreSQL addon
POSTGRESQL_URL_VARIABLE = "SCALINGO_POSTGRESQL_URL"
BACKUP_DONE = "done"
BACKUP_FAILED = frozenset({"error", "cancelled"})
OPERATION_DONE = "done"
OPERATION_FAILED = frozenset({"error", "failed"})
#: app statuses (go-scalingo ``AppStatus``) that waiting does not change: an operation refused with a
#: 409 on such an app is an error at once, on any other (``scaling``, ``restarting``) it is asked again
APP_STATUSES_NOT_WAITED = frozenset({"stopped", "new"})
#: how long a one-off run waits for another operation of its app to finish before it is started
APP_BUSY_TIMEOUT_S = 600.0
JWT_REFRESH_MARGIN_S = 300
ADDON_TOKEN_REFRESH_MARGIN_S = 60
ADDON_TOKEN_TTL_S = 50 * 60
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: statuses of the undocumented "show one backup" endpoint meaning "this API has no such route"
_NO_SHOW_ROUTE = (404, 405, 501)
#: ``meta.pagination.next_page`` is followed at most this many times (no endpoint used is documented as paginated)
MAX_PAGES = 100


class _Retryable(Exception):
    """Internal: a transient failure (429, 5xx, connection) that tenacity retries.

    ``unsent`` is True when the server cannot have acted on the request (429, connection never
    established): only those are retried for a request that must not run twice (a one-off run)."""

    def __init__(self, error: ScalingoApiError, retry_after: float | None = None, unsent: bool = False):
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after
        self.unsent = unsent


def _never_sent(exc: requests.RequestException) -> bool:
    """True when the connection was never established (the server cannot have seen the request)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT (read without verifying the signature), or None."""
    try:
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        exp = json.loads(base64.urlsafe_b64decode(payload)).get("exp")
        return float(exp) if exp is not None else None
    except (IndexError, ValueError, TypeError, AttributeError):
        return None


#: a 429 without Retry-After waits at least this many times ``backoff_s`` before its retry (15 s by default:
#: the default 5 attempts then span the minute the documented 60 requests/min limit counts over)
RATE_LIMIT_WAIT_FACTOR = 15
#: a backup being waited for that Scalingo does not list counts as running for this many seconds after the
#: wait begins (one just created may appear in the list a moment later); then its absence is an error
UNLISTED_GRACE_S = 60.0
#: a backup listed after a failed backup request is that request's when created at most this many seconds
#: before it (the clocks of this worker and of Scalingo may differ)
ADOPT_SKEW_S = 120

_FRACTION = re.compile(r"\.(\d+)")
_COMPACT_OFFSET = re.compile(r"([+-]\d\d)(\d\d)$")


def refresh_time(exp: float, margin_s: float) -> float:
    """When a token that expires at ``exp`` is exchanged again: ``margin_s`` before, or half-way
    through what is left of it when it lives less than twice that (a token of a few minutes is
    reused, not exchanged before every request)."""
    return exp - min(margin_s, max(0.0, exp - time.time()) / 2)


def parse_time(value: str | None) -> datetime:
    """An ISO 8601 / RFC 3339 date (any number of fraction digits, as Go writes them: 1 to 9; ``Z`` or
    an offset); ``datetime.min`` (UTC) when missing or unreadable. Python 3.10's ``fromisoformat`` reads
    only 3 or 6 fraction digits and ``+HH:MM``: the text is brought to that form first."""
    if not value or not isinstance(value, str):
        return datetime.min.replace(tzinfo=timezone.utc)
    text = value.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    text = _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], text, count=1)
    text = _COMPACT_OFFSET.sub(r"\1:\2", text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return datetime.min.replace(tzinfo=timezone.utc)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Endpoints:
    auth: str
    api: str
    db_api: str
    source: str  # "overrides", "regions endpoint" or "static table"


class _RateLimiter:
    """Client-side sliding window: at most ``per_minute`` requests in any 60 s (Scalingo's limit)."""

    def __init__(self, per_minute: int | None):
        self.per_minute = per_minute
        self.times: deque[float] = deque()
        self.lock = threading.Lock()

    def acquire(self) -> None:
        if not self.per_minute:
            return
        while True:
            with self.lock:
                now = time.monotonic()
                while self.times and now - self.times[0] >= 60:
                    self.times.popleft()
                if len(self.times) < self.per_minute:
                    self.times.append(now)
                    return
                wait = 60 - (now - self.times[0])
            log.info(
                "client-side rate limit (%d requests/min) reached, waiting %.1f s", self.per_minute, wait
            )
            time.sleep(wait)


class ScalingoClient:
    """Blocking client for the Scalingo platform and Database APIs.

    ``token`` is the long-lived API token (``tk-us-...``). Base URLs (scheme + host) override the
    region's hosts; otherwise they come from ``GET <auth>/v1/regions`` with the static table as fallback.
    """

    def __init__(
        self,
        token: str,
        *,
        region: str | None = None,
        auth_url: str | None = None,
        api_url: str | None = None,
        db_api_url: str | None = None,
        timeout: tuple[float, float] = (10.0, 60.0),
        download_timeout: tuple[float, float] = (10.0, 300.0),
        max_attempts: int = 5,
        backoff_s: float = 1.0,
        backoff_max_s: float = 30.0,
        rate_limit_per_minute: int | None = 60,
        session: requests.Session | None = None,
        retry_budget_s: float = 300.0,
    ):
        if not token or not token.strip():
            raise ScalingoAuthError(
                "no Scalingo API token given: put the API token (tk-us-...) in the password field of the "
                "Scalingo connection (docker-compose.yaml builds it from SCALINGO_API_TOKEN), or pass it as "
                "ScalingoClient's token."
            )
        self._token = token.strip()
        mask_secret(self._token)
        #: no region configured: the regions endpoint's own ``default`` region stands in when it does not
        #: list ``osc-fr1`` (the CLI's rule: the region flagged ``default``, else the first one)
        self._region_given = bool(region and region.strip())
        self.region = (region or _regions.DEFAULT_REGION).strip()
        self._auth_url = _regions.normalize_base_url(auth_url or _regions.DEFAULT_AUTH_URL, "auth_url")
        self._api_override = _regions.normalize_base_url(api_url, "api_url") if api_url else None
        self._regions_problem = ""  # why the regions endpoint gave no hosts (for the error message)
        self._db_api_override = _regions.normalize_base_url(db_api_url, "db_api_url") if db_api_url else None
        self.timeout = timeout
        self.download_timeout = download_timeout
        self.max_attempts = max(1, int(max_attempts))
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        #: no retry starts once this many seconds have gone by since the first attempt (or would, after the wait)
        self.retry_budget_s = float(retry_budget_s)
        self.session = session or requests.Session()
        self.session.headers.update({"User-Agent": f"airflow-provider-scalingo-staging-sync/{__version__}"})
        self._limiter = _RateLimiter(rate_limit_per_minute)
        self._lock = threading.RLock()
        self._jwt: str | None = None
        self._jwt_exp: float = 0.0
        self._jwt_refresh_at: float = 0.0
        self._endpoints: Endpoints | None = None
        self._addon_tokens: dict[tuple[str, str], tuple[str, float]] = {}
        self._no_show_route = False

    # ------------------------------------------------------------------ HTTP plumbing
    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> ScalingoClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _send_once(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        json_body: Any = None,
        auth: tuple[str, str] | None = None,
        expected: Iterable[int] = (200,),
        allow_redirects: bool = True,
    ) -> requests.Response:
        self._limiter.acquire()
        try:
            resp = self.session.request(
                method,
                url,
                headers=headers,
                json=json_body,
                auth=auth,
                timeout=self.timeout,
                allow_redirects=allow_redirects,
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise _Retryable(
                ScalingoServerError(
                    f"{method} {url}: cannot reach Scalingo ({type(exc).__name__}); check the network and "
                    f"the connection's URLs (region {self.region!r}).",
                    url=url,
                ),
                unsent=_never_sent(exc),
            ) from None
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as exc:
            # the server answered, but the connection broke (or the body did not decode) before the whole
            # answer arrived: it acted on the request, so a non-idempotent one is not sent again blindly
            raise _Retryable(
                ScalingoServerError(
                    f"{method} {url}: Scalingo's answer was cut off or unreadable ({type(exc).__name__}); "
                    f"check the network between this worker and Scalingo (region {self.region!r}).",
                    url=url,
                ),
                unsent=False,
            ) from None
        if resp.status_code in tuple(expected):
            return resp
        raise self._error_for(method, url, resp)

    def _error_for(self, method: str, url: str, resp: requests.Response) -> Exception:
        status = resp.status_code
        try:
            body = resp.json()
        except ValueError:
            body = resp.text[:300]
        detail = body.get("error") if isinstance(body, dict) else body
        if isinstance(body, dict) and "errors" in body:
            detail = body["errors"]
        where = f"{method} {url} -> HTTP {status}"
        if status == 429:
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            asked = f", Retry-After {resp.headers.get('Retry-After')!r}" if retry_after is not None else ""
            return _Retryable(
                ScalingoRateLimitError(
                    f"{where} ({detail!r}{asked}): Scalingo's rate limit (60 requests/min) is exceeded; lower "
                    f"the polling frequency (poll_interval) or run fewer Scalingo tasks at once.",
                    status=status,
                    url=url,
                    body=body,
                ),
                retry_after,
                unsent=True,
            )
        if status >= 500:
            return _Retryable(
                ScalingoServerError(
                    f"{where} ({detail!r}): Scalingo server error; retry later or check "
                    f"https://scalingostatus.com.",
                    status=status,
                    url=url,
                    body=body,
                ),
                parse_retry_after(resp.headers.get("Retry-After")),
            )
        if status in (401, 403):
            return ScalingoAuthError(
                f"{where} ({detail!r}): access refused. Check the API token of the Scalingo connection is "
                f"valid and that its user is owner or full collaborator of the app.",
                status=status,
                url=url,
                body=body,
            )
        if status == 404:
            resource = body.get("resource") if isinstance(body, dict) else None
            return ScalingoNotFoundError(
                f"{where}: {resource or 'resource'} not found ({detail!r}). Check the app name / addon id / "
                f"backup id, and the connection's region ({self.region!r}): the app may live in another region.",
                status=status,
                url=url,
                body=body,
            )
        if status == 402:
            return ScalingoApiError(
                f"{where} ({detail!r}): Scalingo requires a payment method or the free trial has ended for "
                f"this account; settle it in the Scalingo dashboard (Billing)"
                + (f", see {body.get('url')}" if isinstance(body, dict) and body.get("url") else "")
                + ".",
                status=status,
                url=url,
                body=body,
            )
        return ScalingoApiError(f"{where}: {detail!r}", status=status, url=url, body=body)

    def _send(self, method: str, url: str, *, idempotent: bool = True, **kwargs) -> requests.Response:
        """One logical request with retries (exponential backoff, ``Retry-After`` honoured) on 429, 5xx
        and connection errors, bounded by ``max_attempts`` and ``retry_budget_s``. A request that must
        not run twice (``idempotent=False``) is retried only when the server cannot have acted on it."""

        def wait(retry_state: tenacity.RetryCallState) -> float:
            exc = retry_state.outcome.exception() if retry_state.outcome else None
            base = min(self.backoff_max_s, self.backoff_s * (2 ** (retry_state.attempt_number - 1)))
            if isinstance(exc, _Retryable) and exc.retry_after is not None:
                # the server's word, whatever backoff_max_s; a wait past retry_budget_s stops instead
                return max(exc.retry_after, base)
            if isinstance(exc, _Retryable) and exc.error.status == 429:
                # no Retry-After (the documented 429 has none): the limit counts requests per minute,
                # so the retries together wait about a minute (15 x backoff_s each, up to backoff_max_s)
                return max(base, min(self.backoff_max_s, RATE_LIMIT_WAIT_FACTOR * self.backoff_s))
            return base

        def before_sleep(retry_state: tenacity.RetryCallState) -> None:
            exc = retry_state.outcome.exception()
            reason = exc.error if isinstance(exc, _Retryable) else exc
            log.warning(
                "retry %d/%d in %.1f s after: %s",
                retry_state.attempt_number,
                self.max_attempts - 1,
                retry_state.next_action.sleep if retry_state.next_action else 0,
                str(reason)[:300],
            )

        def retryable(exc: BaseException) -> bool:
            return isinstance(exc, _Retryable) and (idempotent or exc.unsent)

        try:
            for attempt in tenacity.Retrying(
                retry=tenacity.retry_if_exception(retryable),
                stop=tenacity.stop_after_attempt(self.max_attempts)
                | tenacity.stop_before_delay(self.retry_budget_s),
                wait=wait,
                before_sleep=before_sleep,
                reraise=True,
            ):
                with attempt:
                    return self._send_once(method, url, **kwargs)
        except _Retryable as exc:
            exc.error.unsent = exc.unsent
            raise exc.error from None
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ auth
    def _user_jwt(self, force: bool = False) -> str:
        with self._lock:
            if not force and self._jwt and time.time() < self._jwt_refresh_at:
                return self._jwt
            url = f"{self._auth_url}/v1/tokens/exchange"
            try:
                resp = self._send(
                    "POST",
                    url,
                    headers={"Accept": "application/json", "Content-Type": "application/json"},
                    json_body={},
                    auth=("", self._token),
                    expected=(200, 201),
                )
            except ScalingoAuthError as exc:
                said = exc.body.get("error") if isinstance(exc.body, dict) else exc.body
                raise ScalingoAuthError(
                    f"the Scalingo API token was refused by {url} (HTTP {exc.status}: {said!r}). Create a new "
                    f"token in the Scalingo dashboard (Account > Tokens) and put it in the password field of "
                    f"the Scalingo connection.",
                    status=exc.status,
                    url=url,
                    body=exc.body,
                ) from None
            token = _json(resp, url, quote=False).get("token")
            if not token or not isinstance(token, str):
                raise ScalingoAuthError(
                    f"{url} answered without a token; check auth_url points at Scalingo's auth API."
                )
            mask_secret(token)
            exp = jwt_expiry(token)
            self._jwt = token
            self._jwt_exp = exp if exp else time.time() + 3600
            self._jwt_refresh_at = refresh_time(self._jwt_exp, JWT_REFRESH_MARGIN_S)
            log.info(
                "exchanged the Scalingo API token for a bearer token valid until %s",
                datetime.fromtimestamp(self._jwt_exp, timezone.utc).isoformat(timespec="seconds"),
            )
            return token

    def _bearer_request(
        self,
        method: str,
        url: str,
        token: Callable[[bool], str],
        refused: str,
        *,
        json_body: Any,
        expected,
        **send_kwargs: Any,
    ) -> requests.Response:
        """A request with a bearer token; on 401 get a fresh token once (``token(True)``) and retry."""
        for refreshed in (False, True):
            headers = {"Authorization": f"Bearer {token(refreshed)}", "Accept": "application/json"}
            if json_body is not None:  # the docs' "Content-Type: application/json for bodies" only
                headers["Content-Type"] = "application/json"
            try:
                return self._send(
                    method, url, headers=headers, json_body=json_body, expected=expected, **send_kwargs
                )
            except ScalingoAuthError as exc:
                if exc.status != 401 or refreshed:
                    raise
                log.info("%s token refused (401), getting a new one", refused)
        raise AssertionError("unreachable")  # pragma: no cover

    def _user_request(
        self, method: str, url: str, *, json_body: Any = None, expected=(200,), **send_kwargs: Any
    ) -> requests.Response:
        """Main / auth API request with the user JWT; on 401 refresh the JWT once and retry."""
        return self._bearer_request(
            method,
            url,
            lambda force: self._user_jwt(force=force),
            "bearer",
            json_body=json_body,
            expected=expected,
            **send_kwargs,
        )

    # ------------------------------------------------------------------ regions
    def endpoints(self) -> Endpoints:
        with self._lock:
            if self._endpoints:
                return self._endpoints
            api, db_api, source = self._api_override, self._db_api_override, "overrides"
            if not (api and db_api):
                region = self._region_from_api()
                if region is None and self._auth_url != _regions.normalize_base_url(
                    _regions.DEFAULT_AUTH_URL, "auth_url"
                ):
                    # the static table names Scalingo's own hosts: a guess that would send this
                    # connection's tokens to servers it was not pointed at
                    raise ScalingoApiError(
                        f"cannot find the API hosts of region {self.region!r}: {self._regions_problem}. The "
                        f"auth URL {self._auth_url} is not Scalingo's ({_regions.DEFAULT_AUTH_URL}), so "
                        "Scalingo's own API hosts are not used in its place: set the connection extras "
                        "'api_url' and 'db_api_url', or the connection's host (the base URL of auth, API "
                        "and Database API)."
                    )
                region = region or self._region_from_table()
                api = api or region[0]
                db_api = db_api or region[1]
                source = region[2]
            self._endpoints = Endpoints(auth=self._auth_url, api=api, db_api=db_api, source=source)
            log.info("Scalingo region %s: api %s, db-api %s (from %s)", self.region, api, db_api, source)
            return self._endpoints

    def list_regions(self) -> list[dict]:
        url = f"{self._auth_url}/v1/regions"
        return _list(_json(self._user_request("GET", url), url), "regions")

    def _region_from_api(self) -> tuple[str, str, str] | None:
        self._user_jwt()  # a refused API token is an error here, not a reason to guess the hosts
        try:
            try:
                regions = self.list_regions()
            except ScalingoAuthError as exc:
                # the CLI reads it unauthenticated too (public regions only)
                log.warning(
                    "the regions endpoint refused the bearer token (%s); asking it unauthenticated", exc
                )
                url = f"{self._auth_url}/v1/regions"
                regions = _list(
                    _json(self._send("GET", url, headers={"Accept": "application/json"}), url), "regions"
                )
        except ScalingoApiError as exc:
            self._regions_problem = f"the regions endpoint {self._auth_url}/v1/regions cannot be read ({exc})"
            log.warning("cannot read the Scalingo regions endpoint (%s); using the static region table", exc)
            return None
        regions = [r for r in regions if isinstance(r, dict)]
        usable = [r for r in regions if r.get("name") and r.get("api") and r.get("database_api")]
        if usable and not self._region_given and not any(r["name"] == self.region for r in usable):
            chosen = next((r for r in usable if r.get("default") is True), usable[0])
            log.info(
                "no region configured and the regions endpoint does not list %s: using its default region %s",
                self.region,
                chosen["name"],
            )
            self.region = str(chosen["name"])
        for entry in regions:
            if entry.get("name") == self.region and entry.get("api") and entry.get("database_api"):
                try:
                    return (
                        _regions.normalize_base_url(entry["api"], "regions.api"),
                        _regions.normalize_base_url(entry["database_api"], "regions.database_api"),
                        "regions endpoint",
                    )
                except ValueError as exc:
                    self._regions_problem = f"the regions endpoint gave unusable URLs for it ({exc})"
                    log.warning("the regions endpoint gave unusable URLs for %s (%s)", self.region, exc)
                    break
        names = sorted(str(r.get("name")) for r in regions if r.get("name"))
        if not self._regions_problem:
            self._regions_problem = (
                f"the regions endpoint {self._auth_url}/v1/regions does not list it (it lists {names})"
            )
        if self.region not in _regions.STATIC_REGIONS:
            raise ScalingoApiError(
                f"unknown Scalingo region {self.region!r}: the regions endpoint lists {names}. Set the "
                f"connection extra 'region' to one of them, or give api_url and db_api_url."
            )
        return None

    def _region_from_table(self) -> tuple[str, str, str]:
        entry = _regions.STATIC_REGIONS.get(self.region)
        if entry is None:
            raise ScalingoApiError(
                f"unknown Scalingo region {self.region!r}; known regions: {sorted(_regions.STATIC_REGIONS)}. "
                f"Set the connection extra 'region', or give api_url and db_api_url."
            )
        return entry["api"], entry["database_api"], "static table"

    def _api(self, path: str) -> str:
        return f"{self.endpoints().api}/v1{path}"

    def _db(self, path: str) -> str:
        return f"{self.endpoints().db_api}/api{path}"

    # ------------------------------------------------------------------ apps and addons
    def _pages(self, first_url: str, key: str, request: Callable[[str], requests.Response]) -> list[dict]:
        """The objects under ``key``, following ``meta.pagination.next_page`` if the API paginates
        (none of the endpoints used is documented as paginated; this costs nothing when it does not)."""
        items: list[dict] = []
        url, seen = first_url, set()
        for _ in range(MAX_PAGES):
            data = _json(request(url), url)
            items.extend(_list(data, key))
            pagination = ((data.get("meta") or {}) if isinstance(data.get("meta"), dict) else {}).get(
                "pagination"
            )
            next_page = pagination.get("next_page") if isinstance(pagination, dict) else None
            if next_page in (None, "", 0) or next_page in seen:
                break
            seen.add(next_page)
            parts = urlsplit(first_url)
            query = [(k, v) for k, v in parse_qsl(parts.query) if k != "page"] + [("page", str(next_page))]
            url = urlunsplit(parts._replace(query=urlencode(query)))
        return items

    def list_apps(self) -> list[dict]:
        url = self._api("/apps")
        return self._pages(url, "apps", lambda u: self._user_request("GET", u))

    def list_addons(self, app: str) -> list[dict]:
        url = self._api(f"/apps/{_q(app)}/addons")
        try:
            return self._pages(url, "addons", lambda u: self._user_request("GET", u))
        except ScalingoNotFoundError as exc:
            raise ScalingoNotFoundError(
                f"Scalingo app {app!r} not found in region {self.region!r} (HTTP 404). Check the app name "
                f"(scalingo apps), the connection's region, and that the token's user can access the app.",
                status=404,
                url=url,
                body=exc.body,
            ) from None

    def get_postgresql_addon(self, app: str, addon_id: str | None = None) -> dict:
        """The app's PostgreSQL addon; ``addon_id`` picks one when there are several."""
        addons = self.list_addons(app)
        described = [f"{a.get('id')} ({_provider(a)['id']}, {_plan_name(a)})" for a in addons]
        if addon_id:
            for addon in addons:
                if str(addon_id) in (str(addon.get("id")), str(addon.get("resource_id"))):
                    provider = _provider(addon)["id"]
                    if not _is_postgresql(addon, by_name=True):
                        raise AddonNotFoundError(
                            f"addon {addon_id!r} of app {app!r} is a {provider!r} addon, not PostgreSQL; "
                            f"the app's addons are: {described}."
                        )
                    return addon
            raise AddonNotFoundError(
                f"app {app!r} has no addon {addon_id!r}; its addons are: {described or 'none'}. "
                f"Fix addon_id (or leave it empty when the app has a single PostgreSQL addon)."
            )
        pg = [a for a in addons if _is_postgresql(a)]
        if not pg:  # the CLI's rule: the provider's name, case-insensitive (ids seen so far: see above)
            pg = [a for a in addons if _is_postgresql(a, by_name=True)]
        if not pg:
            raise AddonNotFoundError(
                f"app {app!r} has no PostgreSQL addon (addon_provider.id 'postgresql'); its addons are: "
                f"{described or 'none'}. Provision one (scalingo addons-add postgresql <plan>) or check the app name."
            )
        if len(pg) > 1:
            # a deprovisioned or suspended addon is still listed for a while; it holds no live database
            live = [a for a in pg if not a.get("deprovisioned_at") and a.get("status") in (None, "running")]
            if len(live) == 1:
                log.info(
                    "app %s lists %d PostgreSQL addons; %s is the only running one (others: %s)",
                    app, len(pg), live[0].get("id"),
                    ", ".join(f"{a.get('id')} ({a.get('status') or 'deprovisioned'})" for a in pg if a is not live[0]),
                )  # fmt: skip
                return live[0]
            ids = [f"{a.get('id')} ({a.get('status') or '?'})" for a in pg]
            raise AddonNotFoundError(
                f"app {app!r} has {len(pg)} PostgreSQL addons {ids}; pass addon_id= one of them to choose."
            )
        return pg[0]

    # ------------------------------------------------------------------ app environment
    def get_variable(self, app: str, name: str) -> str | None:
        """The value of one environment variable of ``app`` (``GET /v1/apps/{app}/variables``), or None.

        The API answers with every variable; only ``name`` is kept, masked at once (values are secrets:
        ``SCALINGO_POSTGRESQL_URL`` carries a password), the others are dropped unread."""
        url = self._api(f"/apps/{_q(app)}/variables")
        try:
            resp = self._user_request("GET", url)
        except ScalingoNotFoundError as exc:
            raise ScalingoNotFoundError(
                f"Scalingo app {app!r} not found in region {self.region!r} (HTTP 404) while reading its "
                f"environment. Check the app name and the connection's region.",
                status=404,
                url=url,
                body=exc.body,
            ) from None
        variables = _json(resp, url, quote=False).get("variables", [])  # an unreadable answer: secrets
        value = next(
            (v.get("value") for v in variables if isinstance(v, dict) and v.get("name") == name), None
        )
        if value is not None:
            mask_secret(str(value))
        return None if value is None else str(value)

    def postgresql_location(self, app: str, addon_id: str | None = None) -> dict:
        """Where ``app``'s own PostgreSQL addon lives: ``{"app", "addon_id", "resource_id", "host", "port",
        "dbname", "source"}`` (never the user or the password).

        Read from the app's ``SCALINGO_POSTGRESQL_URL`` (the variable Scalingo sets for the addon); when
        the app has none, from the Database API (``database.hostname`` = ``host:port``; on Shared
        Resources the database is named after the addon's resource id)."""
        addon = self.get_postgresql_addon(app, addon_id)
        out: dict[str, Any] = {
            "app": app,
            "addon_id": addon.get("id"),
            "resource_id": addon.get("resource_id"),
        }
        url = self.get_variable(app, POSTGRESQL_URL_VARIABLE)
        if url:
            out.update(parse_database_url(url))
            out["source"] = f"${POSTGRESQL_URL_VARIABLE} of app {app}"
            return out
        database = self.get_database(app, str(addon.get("id")))
        hostname = str(database.get("hostname") or "")
        host, _, port = hostname.rpartition(":") if ":" in hostname else (hostname, "", "")
        if not host:
            raise ScalingoApiError(
                f"app {app!r} has no {POSTGRESQL_URL_VARIABLE} variable and its database has no hostname: "
                "cannot tell where its PostgreSQL addon lives"
            )
        out.update(host=host, port=int(port) if port.isdigit() else 5432, dbname=addon.get("resource_id"))
        out["source"] = f"Database API hostname of addon {addon.get('id')} (database name = resource id)"
        return out

    def addon_token(self, app: str, addon_id: str, force: bool = False) -> str:
        """Addon-scoped token for the Database API, cached ~50 min (or until its ``exp``)."""
        key = (app, addon_id)
        with self._lock:
            cached = self._addon_tokens.get(key)
            if cached and not force and time.time() < cached[1]:
                return cached[0]
            url = self._api(f"/apps/{_q(app)}/addons/{_q(addon_id)}/token")
            data = _json(self._user_request("POST", url, expected=(200, 201)), url, quote=False)
            addon = data.get("addon") if isinstance(data.get("addon"), dict) else {}
            token = addon.get("token") or data.get("token")
            if not token or not isinstance(token, str):
                raise ScalingoApiError(
                    f"{url} answered without addon.token; is api_url the Scalingo main API?"
                )
            mask_secret(token)
            expires = time.time() + ADDON_TOKEN_TTL_S
            exp = jwt_expiry(token)
            if exp:
                expires = min(expires, refresh_time(exp, ADDON_TOKEN_REFRESH_MARGIN_S))
            self._addon_tokens[key] = (token, expires)
            return token

    def _db_request(
        self,
        app: str,
        addon_id: str,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        expected=(200,),
        **send_kwargs: Any,
    ) -> requests.Response:
        """Database API request with the addon token; on 401 get a new addon token once and retry."""
        return self._bearer_request(
            method,
            self._db(path),
            lambda force: self.addon_token(app, addon_id, force=force),
            "addon",
            json_body=json_body,
            expected=expected,
            **send_kwargs,
        )

    # ------------------------------------------------------------------ database API
    def get_database(self, app: str, addon_id: str) -> dict:
        path = f"/databases/{_q(addon_id)}"
        return _json(self._db_request(app, addon_id, "GET", path), path).get("database", {})

    def list_backups(self, app: str, addon_id: str) -> list[dict]:
        """Backups, newest first (by ``created_at``, whatever order the API lists them in)."""
        path = f"/databases/{_q(addon_id)}/backups"
        first = self._db(path)
        backups = self._pages(
            first,
            "database_backups",
            lambda u: self._db_request(app, addon_id, "GET", path + u[len(first) :]),
        )
        backups = [_normalize_backup(b) for b in backups]
        return sorted(backups, key=lambda b: parse_time(b.get("created_at")), reverse=True)

    def latest_done_backup(self, app: str, addon_id: str) -> dict:
        """The newest backup whose status is ``done`` (never a running or failed one, nor a hidden one)."""
        backups = self.list_backups(app, addon_id)
        for backup in backups:
            if backup.get("status") == BACKUP_DONE and not backup.get("hidden") and backup.get("id"):
                return backup
        seen = [f"{b.get('id')}={b.get('status')}" for b in backups[:10]]
        raise BackupNotReadyError(
            f"app {app!r} addon {addon_id!r} has no backup in status 'done' (found: {seen or 'none'}). "
            f"Use backup='new' to create one, or wait for the running backup to finish."
        )

    def get_backup(self, app: str, addon_id: str, backup_id: str) -> dict:
        """One backup: ``GET /api/databases/{addon}/backups/{id}`` (undocumented: used by scalingo.js),
        else the documented list. An API without that route is remembered, so polls cost one request."""
        path = f"/databases/{_q(addon_id)}/backups/{_q(backup_id)}"
        if not self._no_show_route:
            try:
                data = _json(self._db_request(app, addon_id, "GET", path), path)
                backup = data.get("database_backup")
                if isinstance(backup, dict) and str(backup.get("id")) == str(backup_id):
                    return _normalize_backup(backup)
                # not the documented root key / another object: read the documented list instead
            except ScalingoApiError as exc:
                if exc.status not in _NO_SHOW_ROUTE:
                    raise
                if not (isinstance(exc.body, dict) and exc.body.get("resource") == "backup"):
                    # no such route here: only a missing backup says resource=backup (a router's own 404,
                    # e.g. Go's plain-text "404 page not found", has no JSON body at all)
                    self._no_show_route = True
        for backup in self.list_backups(app, addon_id):
            if str(backup.get("id")) == str(backup_id):
                return backup
        raise BackupNotListedError(
            f"backup {backup_id!r} not found for app {app!r} addon {addon_id!r}; list the backups with "
            f"`scalingo --app {app} --addon {addon_id} backups` and pass an existing id (or 'latest').",
            status=404,
        )

    def create_backup(self, app: str, addon_id: str) -> dict:
        """Ask Scalingo for a manual backup; the backup as created (``scheduled``, usually).

        The POST is never repeated blindly: a 5xx answer, or none, may come after Scalingo created the
        backup, and a second one would take another manual-backup slot (beyond the plan's quota,
        Scalingo deletes the oldest manual backup). The backups are listed once before the POST; after
        such a failure they are listed again: a manual backup that was not listed before, created since
        the request (:data:`ADOPT_SKEW_S` of clock difference allowed) and not failed is taken as this
        request's; only when there is none is the POST sent again, up to ``max_attempts`` times with
        the usual backoff."""
        path = f"/databases/{_q(addon_id)}/backups"
        # what exists before the request is never taken for its result; a refusal (4xx) of this list
        # would refuse the POST too, so only a server error or the rate limit is let through
        known: set[str] | None
        try:
            known = {str(b.get("id")) for b in self.list_backups(app, addon_id) if b.get("id")}
        except (ScalingoServerError, ScalingoRateLimitError) as exc:
            log.warning(
                "the backups of app %s cannot be listed before asking for one (%s); only their creation "
                "time will tell a new one", app, str(exc)[:200],
            )  # fmt: skip
            known = None

        def ask() -> requests.Response | dict:
            asked_at = datetime.now(timezone.utc)
            try:
                return self._db_request(
                    app, addon_id, "POST", path, json_body={}, expected=(200, 201, 202), idempotent=False
                )
            except ScalingoServerError as exc:
                adopted = self._backup_created_since(app, addon_id, asked_at, known)
                if adopted is None:
                    raise  # nothing was created: asked again, after the backoff
                log.warning(
                    "the request for a backup of app %s failed (%s), but Scalingo lists backup %s (status "
                    "%s, created %s) made since: it is used, no second backup is asked for",
                    app, str(exc)[:200], adopted.get("id"), adopted.get("status"), adopted.get("created_at"),
                )  # fmt: skip
                return adopted

        def before_sleep(state: tenacity.RetryCallState) -> None:
            log.warning(
                "the request for a backup of app %s failed (%s) and no backup was created since; asking "
                "again in %.1f s (attempt %d/%d)",
                app, str(state.outcome.exception())[:200], state.next_action.sleep if state.next_action else 0,
                state.attempt_number + 1, self.max_attempts,
            )  # fmt: skip

        try:
            resp = tenacity.Retrying(
                retry=tenacity.retry_if_exception_type(ScalingoServerError),
                stop=tenacity.stop_after_attempt(self.max_attempts),
                wait=tenacity.wait_exponential(multiplier=self.backoff_s, max=self.backoff_max_s),
                before_sleep=before_sleep,
                reraise=True,
            )(ask)
        except ScalingoApiError as exc:
            # the backups POST's own refusal (not the addon-token request's, which _db_request makes first)
            if exc.status in (400, 409, 422) and str(exc.url or "").rstrip("/").endswith(path):
                running = self._running_backup(app, addon_id)
                if running is not None:
                    # refused because one is being made (a periodic one, another run's): its data is as
                    # fresh as a second one's would be, and waiting for it takes no manual-backup slot
                    log.warning(
                        "Scalingo refused a new backup of app %s (HTTP %s) while backup %s is %s (created %s): "
                        "that one is used, once done",
                        app, exc.status, running.get("id"), running.get("status"), running.get("created_at"),
                    )  # fmt: skip
                    return running
                raise exc.reworded(
                    f"Scalingo refused to create a backup of app {app!r} addon {addon_id!r} (HTTP "
                    f"{exc.status}: {exc.body!r}); a backup may already be running or the plan's "
                    f"manual-backup limit is reached. Wait for the running backup, or use backup='latest'.",
                    ScalingoApiError,
                ) from None
            raise
        if isinstance(resp, dict):
            return resp
        data = _json(resp, path)
        backup = _normalize_backup(data.get("database_backup") or {})
        if not backup.get("id"):
            raise ScalingoApiError(
                f"{path}: the created backup has no id ({sorted(data)!r}); is db_api_url the Scalingo Database API?"
            )
        log.info("created backup %s of app %s (status %s)", backup.get("id"), app, backup.get("status"))
        return backup

    def _running_backup(self, app: str, addon_id: str) -> dict | None:
        """The newest backup still being made (neither ``done`` nor failed), or None (also when the
        list cannot be read: the refusal is then reported as it is)."""
        try:
            backups = self.list_backups(app, addon_id)
        except ScalingoApiError:
            return None
        return next(
            (b for b in backups if b.get("id") and _status(b) not in (BACKUP_DONE, *BACKUP_FAILED)), None
        )

    def _backup_created_since(
        self, app: str, addon_id: str, since: datetime, known: set[str] | None = None
    ) -> dict | None:
        """The newest backup created at ``since`` or later, give or take :data:`ADOPT_SKEW_S`, not among
        the ``known`` ids, that has not failed and is not hidden; a manual one (or one whose ``method``
        is absent or null) first, else one of any ``method``: the documented answer to the backups POST
        says ``"method": "periodic"`` for the backup it creates (developers.scalingo.com/databases/backups,
        "Create a New Backup"), and any backup made since the request is a fresh copy of the database.
        None when there is none or the list cannot be read."""
        try:
            backups = self.list_backups(app, addon_id)
        except ScalingoApiError as exc:
            log.warning("the backups of app %s cannot be listed (%s)", app, str(exc)[:200])
            return None
        earliest = since.timestamp() - ADOPT_SKEW_S
        fresh = [
            backup
            for backup in backups  # newest first
            if backup.get("id")
            and str(backup.get("id")) not in (known or ())
            and not backup.get("hidden")
            and _status(backup) not in BACKUP_FAILED
            and parse_time(backup.get("created_at")).timestamp() >= earliest
        ]
        manual = [b for b in fresh if b.get("method") in (None, "manual")]
        return (manual or fresh or [None])[0]

    def backup_status(
        self, app: str, addon_id: str, backup_id: str, *, unlisted_until: float | None = None
    ) -> tuple[str, dict]:
        """One poll: ``("done"|"failed"|"running", backup)``.

        ``unlisted_until`` (epoch seconds): until then, a backup Scalingo does not list (yet: one just
        created may appear a moment later) counts as ``running``, ``{"id": backup_id, "status":
        "unlisted"}``; after it, :class:`BackupNotListedError` is raised."""
        try:
            backup = self.get_backup(app, addon_id, backup_id)
        except BackupNotListedError:
            if unlisted_until is None or time.time() >= unlisted_until:
                raise
            log.info("backup %s is not listed by Scalingo yet", backup_id)
            return "running", {"id": backup_id, "status": "unlisted"}
        status = _status(backup)
        if status == BACKUP_DONE:
            return "done", backup
        if status in BACKUP_FAILED:
            return "failed", backup
        return "running", backup

    def wait_for_backup(
        self,
        app: str,
        addon_id: str,
        backup_id: str,
        *,
        poll_interval: float = 15.0,
        timeout: float = 3600.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> dict:
        """Poll until the backup is ``done``; BackupFailedError on error/cancelled, BackupNotReadyError on timeout.
        A backup not listed yet counts as running for the first :data:`UNLISTED_GRACE_S` seconds."""
        deadline = time.monotonic() + timeout
        unlisted_until = time.time() + min(UNLISTED_GRACE_S, timeout)
        while True:
            state, backup = self.backup_status(app, addon_id, backup_id, unlisted_until=unlisted_until)
            if state == "done":
                log.info("backup %s is done (%s bytes)", backup_id, backup.get("size"))
                return backup
            if state == "failed":
                raise backup_failed_error(app, addon_id, backup)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BackupNotReadyError(
                    f"backup {backup_id!r} of app {app!r} is still {backup.get('status')!r} after {timeout:.0f} s; "
                    f"raise the timeout, or use backup='latest' to take the newest finished backup."
                )
            log.info("backup %s is %s, next check in %.0f s", backup_id, backup.get("status"), poll_interval)
            sleep(min(poll_interval, remaining))

    def archive_url(self, app: str, addon_id: str, backup_id: str) -> str:
        """The pre-signed download URL of a backup (a secret: masked, never logged)."""
        path = f"/databases/{_q(addon_id)}/backups/{_q(backup_id)}/archive"
        try:
            # not followed: a redirect's Location is the download URL itself (following it would send the
            # addon token to the storage host and read the whole archive as a JSON answer)
            resp = self._db_request(
                app, addon_id, "GET", path, expected=(200, *REDIRECT_STATUSES), allow_redirects=False
            )
        except ScalingoApiError as exc:
            if exc.status in (400, 409, 422):
                raise BackupNotReadyError(
                    f"backup {backup_id!r} of app {app!r} cannot be downloaded yet (HTTP {exc.status}); "
                    f"only backups in status 'done' can be downloaded.",
                    status=exc.status,
                ) from None
            raise
        if resp.status_code in REDIRECT_STATUSES:
            url = resp.headers.get("Location")
            where = "Location header"
        else:
            url = _json(resp, path, quote=False).get("download_url")  # unreadable: the URL not masked yet
            where = "download_url"
        if not url or not isinstance(url, str):
            raise ScalingoApiError(
                f"{path} answered HTTP {resp.status_code} without a {where}; is db_api_url the Scalingo "
                f"Database API?"
            )
        mask_url(url)
        url = urljoin(resp.url or self._db(path), url)  # a relative URL is on the Database API host
        mask_url(url)
        return url

    def download_backup(
        self,
        app: str,
        addon_id: str,
        backup: dict,
        dest: Path,
        *,
        max_resumes: int = 5,
        progress_interval_s: float = 5.0,
        follower: Follower | None = None,
    ) -> DownloadResult:
        """Stream the backup archive to ``dest`` (see ``download.download_archive``; ``follower`` reads it
        as it arrives: :func:`scalingo_staging_sync.scalingo.archive.download_and_extract`)."""
        backup_id = backup["id"]
        if _status(backup) not in (None, BACKUP_DONE):
            raise BackupNotReadyError(
                f"backup {backup_id!r} is {backup.get('status')!r}; only 'done' backups can be downloaded."
            )
        return download_archive(
            self.session,
            lambda: self.archive_url(app, addon_id, backup_id),
            Path(dest),
            expected_size=_size(backup.get("size")),
            label=f"backup {backup_id} of {app}",
            timeout=self.download_timeout,
            max_resumes=max_resumes,
            resume_backoff_s=min(self.backoff_s, 1.0),
            progress_interval_s=progress_interval_s,
            follower=follower,
        )

    # ------------------------------------------------------------------ formation, operations, runs
    def get_formation(self, app: str) -> list[dict]:
        """The app's containers: ``[{"name": "web", "amount": 2, "size": "M"}, ...]``."""
        url = self._api(f"/apps/{_q(app)}/containers")
        return _json(self._user_request("GET", url), url).get("containers", [])

    def scale(
        self,
        app: str,
        containers: list[dict] | dict[str, int],
        *,
        wait: bool = True,
        timeout: float = 600.0,
        poll_interval: float = 3.0,
    ) -> dict:
        """Scale containers (``{"web": 0}`` or the API's list form); follow the operation when ``wait``.
        An app that already has the wanted formation is not an error: ``{"unchanged": True, ...}``."""
        if isinstance(containers, dict):
            containers = [{"name": name, "amount": int(amount)} for name, amount in containers.items()]
        url = self._api(f"/apps/{_q(app)}/scale")
        try:
            resp = self._post_when_app_free(
                app, url, {"containers": containers}, (200, 202), timeout=timeout, poll_interval=poll_interval
            )
        except ScalingoApiError as exc:
            # Scalingo refuses a scale that changes nothing (400 "no change in containers formation"; a
            # validation error may say it too), e.g. a scale-back sent again after a timeout or a retried
            # POST: when the app already has the wanted formation, there is nothing left to do
            current = self.get_formation(app) if exc.status in (400, 422) else []
            if not _formation_matches(current, containers):
                raise
            log.info("app %s already has the wanted formation (%s): nothing to scale", app, exc.body)
            return {"containers": current, "operation_url": None, "unchanged": True}
        result = {
            "containers": _json(resp, url).get("containers", []),
            "operation_url": resp.headers.get("Location"),
        }
        log.info("scaling app %s: %s", app, ", ".join(f"{c['name']}={c.get('amount')}" for c in containers))
        if wait and result["operation_url"]:
            result["operation"] = self.wait_operation(
                app, result["operation_url"], timeout=timeout, poll_interval=poll_interval, what="scale"
            )
        return result

    def _post_when_app_free(
        self,
        app: str,
        url: str,
        body: dict,
        expected: tuple[int, ...],
        *,
        timeout: float,
        poll_interval: float,
        idempotent: bool = True,
    ) -> requests.Response:
        """POST an app operation (scale, restart, one-off run). Scalingo runs one operation at a time:
        while the app is ``scaling`` or ``restarting`` (someone's deployment, a scale from the dashboard,
        an autoscaler), another operation is refused with a 409. A refused POST did nothing, so it is
        sent again every ``poll_interval`` until ``timeout`` has passed since the first refusal (the time
        spent reaching Scalingo before it is not time spent waiting for the app); an app that will not
        get free by waiting (``stopped``, ``new``) is an error at once."""
        deadline = None
        while True:
            try:
                return self._user_request(
                    "POST", url, json_body=body, expected=expected, idempotent=idempotent
                )
            except ScalingoApiError as exc:
                if exc.status != 409 or exc.url != url:
                    raise
                if deadline is None:
                    deadline = time.monotonic() + timeout
                status = self._app_status(app)
                waiting = status not in APP_STATUSES_NOT_WAITED
                if not waiting or time.monotonic() + poll_interval > deadline:
                    why = (
                        f"the app is {status!r}: start it (scalingo --app {app} scale web:1) and run again"
                        if not waiting
                        else f"it was still busy after {timeout:g} s: let its current operation finish "
                        f"(scalingo --app {app} ps) and run again"
                    )
                    raise exc.reworded(
                        f"{exc} Scalingo refused the operation on app {app!r} (HTTP 409): {why}."
                    ) from None
                log.info(
                    "app %s is busy with another operation (status %s, HTTP 409); asking again in %.0f s",
                    app,
                    status or "unknown",
                    poll_interval,
                )
                time.sleep(poll_interval)

    def _app_status(self, app: str) -> str | None:
        """The app's ``status`` (``GET /v1/apps/{app}``), or None when it cannot be read."""
        url = self._api(f"/apps/{_q(app)}")
        try:
            status = _json(self._user_request("GET", url), url).get("app", {}).get("status")
        except (ScalingoApiError, AttributeError):
            return None
        return status if isinstance(status, str) else None

    def operation_url(self, location: str) -> str:
        """The URL of the operation a ``Location`` header names, always on this client's API host: a
        relative Location is joined to it, and an absolute one naming another host is read from the API
        host at the same path, so the user token is never sent anywhere but the API."""
        api = self.endpoints().api
        parts = urlsplit(location)
        if not parts.scheme and not parts.netloc:
            return urljoin(api + "/", location)
        base = urlsplit(api)
        if (parts.scheme, parts.netloc) != (base.scheme, base.netloc):
            log.info(
                "the operation's Location names %s://%s; it is read from the API host %s instead",
                parts.scheme,
                parts.hostname,
                base.netloc,
            )
        return urlunsplit((base.scheme, base.netloc, parts.path, parts.query, ""))

    def get_operation(self, app: str, location: str) -> dict:
        url = self.operation_url(location)
        return _json(self._user_request("GET", url), url).get("operation", {})

    def wait_operation(
        self,
        app: str,
        location: str,
        *,
        timeout: float = 600.0,
        poll_interval: float = 3.0,
        what: str = "operation",
    ) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            op = self.get_operation(app, location)
            status = op.get("status")
            if status == OPERATION_DONE:
                log.info("%s operation %s of app %s is done", what, op.get("id"), app)
                return op
            if status in OPERATION_FAILED:
                raise ScalingoOperationError(
                    f"{what} operation {op.get('id')} of app {app!r} failed: {op.get('error') or status!r}. "
                    f"Check the app's logs (scalingo --app {app} logs) and its events in the dashboard."
                )
            if time.monotonic() >= deadline:
                raise ScalingoOperationError(
                    f"{what} operation {op.get('id')} of app {app!r} still {status!r} after {timeout:.0f} s; "
                    f"raise the timeout or check the app in the dashboard."
                )
            time.sleep(poll_interval)

    def run_detached(
        self,
        app: str,
        command: str,
        env: dict[str, str] | None = None,
        size: str | None = None,
        *,
        wait: bool = True,
        timeout: float = 3600.0,
        poll_interval: float = 5.0,
    ) -> dict:
        """Run ``command`` in a detached one-off container of ``app``; follow it to completion when ``wait``.

        Returns ``{"container": {...}, "operation_url": str|None, "operation": {...}}``. Environment
        values are masked (they may carry secrets) and the command is logged by its first word only.
        """
        for value in (env or {}).values():
            mask_secret(str(value))
        body: dict[str, Any] = {"command": command, "env": env or {}, "detached": True}
        if size:
            body["size"] = size
        url = self._api(f"/apps/{_q(app)}/run")
        # never retried after it may have reached Scalingo: the command would run twice (a 409 refusal,
        # sent while another operation runs, did nothing: that one is sent again)
        try:
            resp = self._post_when_app_free(
                app,
                url,
                body,
                (200, 201, 202),
                timeout=min(timeout, APP_BUSY_TIMEOUT_S),
                poll_interval=poll_interval,
                idempotent=False,
            )
        except ScalingoServerError as exc:
            if exc.url != url or exc.unsent:
                raise  # the token exchange's, or a request Scalingo never got: safe to run again
            error = exc.reworded(
                f"{exc} The one-off run may have started in app {app!r} all the same: check its containers "
                f"and logs (scalingo --app {app} ps / logs) before running the command again.",
                ScalingoServerError,
            )
            error.retryable = False  # a retry of the task would run the command a second time
            raise error from None
        data = _json(resp, url)
        container = data.get("container", {})
        result = {"container": container, "operation_url": resp.headers.get("Location")}
        log.info(
            "started one-off container %s in app %s (%s ...)",
            container.get("id"),
            app,
            command.split()[0] if command.split() else "",
        )
        if wait:
            if not result["operation_url"]:
                raise ScalingoOperationError(
                    f"run in app {app!r} returned no Location header to follow; use wait=False with this API."
                )
            try:
                result["operation"] = self.wait_operation(
                    app,
                    result["operation_url"],
                    timeout=timeout,
                    poll_interval=poll_interval,
                    what="one-off run",
                )
            except (ScalingoServerError, ScalingoRateLimitError) as exc:
                # the container is started: a retry of the task would run the command a second time
                raise exc.reworded(
                    f"one-off container {container.get('id')} was started in app {app!r}, but its operation "
                    f"could not be followed ({exc}). It may still be running: check its logs (scalingo --app "
                    f"{app} logs) before running the command again.",
                    ScalingoOperationError,
                ) from None
        return result

    def restart(
        self,
        app: str,
        scope: list[str] | None = None,
        *,
        wait: bool = True,
        timeout: float = 600.0,
        poll_interval: float = 3.0,
    ) -> dict:
        url = self._api(f"/apps/{_q(app)}/restart")
        resp = self._post_when_app_free(
            app, url, {"scope": scope or []}, (200, 202), timeout=timeout, poll_interval=poll_interval
        )
        result = {"operation_url": resp.headers.get("Location")}
        if wait and result["operation_url"]:
            result["operation"] = self.wait_operation(
                app, result["operation_url"], timeout=timeout, poll_interval=poll_interval, what="restart"
            )
        return result

    # ------------------------------------------------------------------ health
    def check(self) -> str:
        """Exchange the token, resolve the region, list apps: a one-line summary for test_connection."""
        self._user_jwt()
        ep = self.endpoints()
        try:
            visible = f"{len(self.list_apps())} app(s) visible"
        except ScalingoNotFoundError:
            # GET /v1/apps is not among the calls docs/scalingo-api.md describes: the token and the region
            # are what this checks, an API without the apps list is not a failed connection
            visible = f"no apps list at {ep.api}/v1/apps (HTTP 404): check api_url if the app cannot be found"
        return f"token accepted; region {self.region} (api {ep.api}, db-api {ep.db_api}, from {ep.source}); {visible}"


def backup_failed_error(app: str, addon_id: str, backup: dict) -> BackupFailedError:
    return BackupFailedError(
        f"backup {backup.get('id')!r} of app {app!r} (addon {addon_id}) ended in status "
        f"{backup.get('status')!r}; check the database dashboard, then use backup='latest' or create a new one."
    )


def _formation_matches(current: list[dict], wanted: list[dict]) -> bool:
    """Every wanted container type is in ``current`` with the wanted amount (and size, when given)."""
    by_name = {c.get("name"): c for c in current if isinstance(c, dict)}
    for want in wanted:
        have = by_name.get(want.get("name"))
        if have is None or ("amount" in want and int(have.get("amount") or 0) != int(want["amount"])):
            return False
        if want.get("size") and str(have.get("size") or "").lower() != str(want["size"]).lower():
            return False
    return bool(wanted)


def _list(data: dict, key: str) -> list[dict]:
    """``data[key]`` as a list of objects (a missing or null key is an empty list)."""
    value = data.get(key)
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _provider(addon: dict) -> dict:
    provider = addon.get("addon_provider")
    if isinstance(provider, str):
        return {"id": provider, "name": provider}
    provider = provider if isinstance(provider, dict) else {}
    return {"id": provider.get("id"), "name": provider.get("name")}


def _plan_name(addon: dict) -> str | None:
    plan = addon.get("plan")
    return plan.get("name") if isinstance(plan, dict) else plan


def _is_postgresql(addon: dict, by_name: bool = False) -> bool:
    """A Scalingo for PostgreSQL addon: provider id ``postgresql`` (legacy ``scalingo-postgresql``); with
    ``by_name`` also the CLI's rule (provider name ``PostgreSQL``, any case, or its aliases)."""
    provider = _provider(addon)
    pid = str(provider["id"] or "").strip().lower()
    if pid in POSTGRESQL_PROVIDER_IDS:
        return True
    if not by_name:
        return False
    name = str(provider["name"] or "").strip().lower()
    return name in POSTGRESQL_PROVIDER_NAMES or pid in POSTGRESQL_PROVIDER_NAMES


def _status(backup: dict) -> str | None:
    status = backup.get("status")
    return str(status).strip().lower() if status is not None else None


def _size(value: Any) -> int | None:
    """A backup's ``size`` in bytes, or None when unknown (null, 0, not a number)."""
    try:
        size = int(value)
    except (TypeError, ValueError):
        return None
    return size if size > 0 else None


def _normalize_backup(backup: dict) -> dict:
    """The backup as the API gave it, with ``status`` lower-cased and ``size`` an int or None."""
    if not isinstance(backup, dict):
        return {}
    out = dict(backup)
    if "status" in out:
        out["status"] = _status(out)
    if "size" in out:
        out["size"] = _size(out["size"])
    return out


def _json(resp: requests.Response, where: str, *, quote: bool = True) -> dict:
    """The answer's JSON object. ``quote=False`` for an answer carrying secrets (a token, an app's
    variables): an unreadable answer is then not quoted in the error (nothing in it is masked yet)."""
    try:
        data = resp.json()
    except ValueError:
        got = f"{resp.text[:120]!r}" if quote else f"{len(resp.content)} bytes that are not JSON (not shown)"
        raise ScalingoApiError(
            f"{where}: expected a JSON object, got {got}; check the connection's URLs point at Scalingo.",
            status=resp.status_code,
        ) from None
    if not isinstance(data, dict):
        raise ScalingoApiError(
            f"{where}: expected a JSON object, got {type(data).__name__}", status=resp.status_code
        )
    return data


def parse_database_url(url: str) -> dict:
    """``{"host", "port", "dbname"}`` of a ``postgres://`` URL (the password is masked, never returned)."""
    from psycopg.conninfo import conninfo_to_dict

    mask_secret(url)
    try:
        parts = conninfo_to_dict(url)
    except Exception as exc:
        raise ScalingoApiError(
            f"{POSTGRESQL_URL_VARIABLE} is not a valid PostgreSQL URL ({type(exc).__name__})"
        ) from None
    if parts.get("password"):
        mask_secret(str(parts["password"]))
    port = str(parts.get("port") or "5432")
    return {
        "host": str(parts.get("host") or ""),
        "port": int(port) if port.isdigit() else 5432,
        "dbname": str(parts.get("dbname") or ""),
    }


def _q(value: str) -> str:
    return quote(str(value), safe="")
