"""Streamed, resumable download of a backup archive: constant memory, sha256 while streaming,
``Range`` resume after a dropped connection, size check, temp name + atomic rename.

The signed URL (and any URL it redirects to: object storage) is a secret: masked, never logged, and
requested without any ``Authorization`` header, redirects followed one by one by this module."""

from __future__ import annotations

import email.utils
import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import parse_qsl, urljoin, urlsplit

import requests
import urllib3

from scalingo_staging_sync.scalingo.archive import gzip_errors, open_gzip
from scalingo_staging_sync.scalingo.errors import ScalingoDownloadError
from scalingo_staging_sync.secrets import mask_secret

log = logging.getLogger(__name__)

CHUNK_SIZE = 1024 * 1024
GZIP_MAGIC = b"\x1f\x8b"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: answers of the download host worth another try (counted with the dropped connections)
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_REDIRECTS = 5
MAX_RETRY_AFTER_S = 60.0
_SECRET_QUERY_HINTS = ("token", "signature", "credential", "key", "sig", "auth")


def mask_url(url: str) -> None:
    """Register a signed URL as a secret: the whole URL, its query string and every query value that
    looks like a credential (``token``, ``X-Amz-Signature``, ... or any value of 16+ characters), both
    raw (as on an HTTP request line) and decoded."""
    if not url:
        return
    mask_secret(url)
    try:
        query = urlsplit(url).query
    except ValueError:
        return
    if not query:
        return
    mask_secret(query)
    raw_pairs = [pair.partition("=") for pair in query.split("&")]
    for key, _, value in raw_pairs:
        if value and (len(value) >= 16 or any(h in key.lower() for h in _SECRET_QUERY_HINTS)):
            mask_secret(value)
    for key, value in parse_qsl(query):
        if value and (len(value) >= 16 or any(h in key.lower() for h in _SECRET_QUERY_HINTS)):
            mask_secret(value)


def _no_auth(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """An explicit "no authentication": keeps a session's auth and ~/.netrc away from the signed URL."""
    return request


class _TransientStatus(Exception):
    def __init__(self, status: int, retry_after: float | None):
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP date (RFC 9110)."""
    if value is None or not str(value).strip():
        return None
    text = str(value).strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _open(
    session: requests.Session, url: str, headers: dict, timeout: tuple[float, float], label: str
) -> requests.Response:
    """GET ``url`` streaming, following redirects here (each Location masked, never an auth header)."""
    for _ in range(MAX_REDIRECTS + 1):
        resp = session.get(
            url, headers=headers, stream=True, timeout=timeout, allow_redirects=False, auth=_no_auth
        )
        location = resp.headers.get("Location")
        if resp.status_code not in REDIRECT_STATUSES or not location:
            return resp
        resp.close()
        url = urljoin(url, location)
        mask_url(url)
    raise ScalingoDownloadError(
        f"{label}: the download URL redirected more than {MAX_REDIRECTS} times; retry the task later."
    )


def _gzip_complete(path: Path, chunk_size: int = CHUNK_SIZE) -> str | None:
    """None when ``path`` is a complete gzip stream, else why not (read in constant memory)."""
    try:
        with open_gzip(path) as fh:
            while fh.read(chunk_size):
                pass
    except (OSError, *gzip_errors()) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    size: int
    sha256: str
    resumes: int
    reused: bool = False


class _Progress:
    """Logs bytes / percent / MB/s at most every ``interval_s`` seconds or every ``step`` fraction."""

    def __init__(self, label: str, total: int | None, interval_s: float = 5.0, step: float = 0.10):
        self.label, self.total, self.interval_s, self.step = label, total, interval_s, step
        self.start = time.monotonic()
        self.last_time = self.start
        self.last_fraction = 0.0

    def update(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        fraction = done / self.total if self.total else 0.0
        if not force and now - self.last_time < self.interval_s and fraction - self.last_fraction < self.step:
            return
        self.last_time, self.last_fraction = now, fraction
        elapsed = max(now - self.start, 1e-6)
        rate = done / elapsed / 1e6
        if self.total:
            log.info(
                "%s: %d / %d bytes (%.1f%%), %.1f MB/s", self.label, done, self.total, 100 * fraction, rate
            )
        else:
            log.info("%s: %d bytes, %.1f MB/s", self.label, done, rate)


def sha256_file(path: Path, chunk_size: int = CHUNK_SIZE) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


class Follower(Protocol):
    """What reads the ``.part`` file while it is written (:class:`~scalingo_staging_sync.scalingo.archive.GrowingFile`)."""

    def grew(self, path: Path, size: int) -> None: ...

    def stop(self, why: str) -> None: ...


def _rewind(out: IO[bytes], follower: Follower | None = None) -> tuple[Any, int]:
    """Empty the ``.part`` file for a download from byte 0: a new digest and no byte received; a
    follower stops reading (what it read is not the start of the new transfer's bytes)."""
    if follower is not None:
        follower.stop("the download restarted from byte 0")
    out.seek(0)
    out.truncate()
    return hashlib.sha256(), 0


def download_archive(
    session: requests.Session,
    url: str | Callable[[], str],
    dest: Path,
    *,
    expected_size: int | None,
    label: str = "backup download",
    timeout: tuple[float, float] = (10.0, 300.0),
    max_resumes: int = 5,
    resume_backoff_s: float = 1.0,
    chunk_size: int = CHUNK_SIZE,
    progress_interval_s: float = 5.0,
    progress_step: float = 0.10,
    follower: Follower | None = None,
) -> DownloadResult:
    """Download ``url`` (a signed URL, or a callable returning a fresh one) to ``dest``.

    The body goes to ``<dest>.part`` chunk by chunk while a sha256 is updated; after a connection
    error the transfer resumes with ``Range: bytes=<received>-`` (falling back to a restart when the
    server answers 200 instead of 206, or 416 short of the end; a 416 naming the size already received
    means every byte had arrived). A signed URL refused (401/403/404/410) after it has worked, expired
    or single-use, is replaced by a new one from ``url`` (a callable). When complete the size is checked
    against the Content-Length / Content-Range total and ``expected_size`` (the backup's ``size``), the
    gzip magic is checked, and the file is renamed atomically.
    No Authorization header is sent: the URL is pre-signed; redirects (to object storage) are followed
    without one, and their URLs are masked like the signed URL. 429 and 5xx answers are retried like a
    dropped connection. With neither the backup's size nor a Content-Length / Content-Range total to
    compare with (a chunked or connection-close body), or with a backup ``size`` that differs from the
    bytes received (the docs call it the "backup size in bytes", not the archive's length), the gzip
    stream is read to its end marker, so a truncated download is still refused.

    ``follower`` (:class:`scalingo_staging_sync.scalingo.archive.GrowingFile`, which reads the
    ``.part`` file as it grows): ``grew(the .part path, bytes written)`` after each chunk is flushed,
    ``stop(why)`` when the download restarts from byte 0.
    """
    get_url = url if callable(url) else (lambda: url)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    received = 0
    resumes = 0
    progress = _Progress(label, expected_size or None, progress_interval_s, progress_step)
    current_url = get_url()
    mask_url(current_url)
    url_worked = False  # the current signed URL has answered 200/206 at least once
    renewals = 0
    announced: int | None = None  # the full size the server announced (Content-Length / Content-Range)
    try:
        with open(part, "wb") as out:
            while True:
                # None removes a session-level Authorization header: the URL is pre-signed. "identity":
                # the archive's own bytes, never gzipped again on the fly by the server (requests asks
                # for "gzip, deflate" by default; those raw bytes would be a gzip of the .tar.gz)
                headers: dict[str, str | None] = {
                    "Accept": "application/octet-stream",
                    "Accept-Encoding": "identity",
                    "Authorization": None,
                }
                if received:
                    headers["Range"] = f"bytes={received}-"
                try:
                    with _open(session, current_url, headers, timeout, label) as resp:
                        if resp.status_code in (401, 403, 404, 410) and url_worked and renewals < max_resumes:
                            # a signed URL refused after it worked has expired (its lifetime is not
                            # documented) or was good for one request: ask for a new one
                            renewals += 1
                            url_worked = False
                            current_url = get_url()
                            mask_url(current_url)
                            continue
                        if resp.status_code == 416 and received:
                            total = _content_range_total(resp.headers.get("Content-Range", ""))
                            if total == received:  # every byte had arrived before the connection dropped
                                announced = total
                                break
                            log.warning(
                                "%s: server refused the Range request (HTTP 416), restarting from byte 0",
                                label,
                            )
                            digest, received = _rewind(out, follower)
                            continue
                        if resp.status_code in TRANSIENT_STATUSES:
                            raise _TransientStatus(
                                resp.status_code, parse_retry_after(resp.headers.get("Retry-After"))
                            )
                        if resp.status_code == 200:
                            length = resp.headers.get("Content-Length", "")
                            announced = int(length) if length.strip().isdigit() else None
                        if resp.status_code == 200 and received:
                            log.warning("%s: server ignored the Range request, restarting from byte 0", label)
                            digest, received = _rewind(out, follower)
                        elif resp.status_code == 206:
                            start = _content_range_start(resp.headers.get("Content-Range", ""))
                            announced = _content_range_total(resp.headers.get("Content-Range", ""))
                            if start != received:
                                raise ScalingoDownloadError(
                                    f"{label}: asked to resume at byte {received} but the server sent "
                                    f"Content-Range {resp.headers.get('Content-Range')!r}; delete "
                                    f"{part} and retry the task."
                                )
                        elif resp.status_code != 200:
                            # no body in the message: an object store's error page can quote the
                            # signature it refused (S3's SignatureProvided), and a cut of it escapes masking
                            raise ScalingoDownloadError(
                                f"{label}: the download URL answered HTTP {resp.status_code}. The signed URL "
                                f"may have expired: rerun the task to get a new one; check the backup is "
                                f"'done'.",
                                status=resp.status_code,
                            )
                        url_worked = True
                        # raw bytes as stored (never gzip-decoded by a Content-Encoding header);
                        # read1 hands over what arrived, so nothing is lost when the connection drops
                        raw = resp.raw
                        while True:
                            chunk = raw.read1(chunk_size, decode_content=False)
                            if not chunk:
                                break
                            out.write(chunk)
                            digest.update(chunk)
                            received += len(chunk)
                            progress.update(received)
                            if follower is not None:
                                out.flush()
                                follower.grew(part, received)
                    break
                except (
                    requests.ConnectionError,
                    requests.Timeout,
                    requests.exceptions.ChunkedEncodingError,
                    urllib3.exceptions.HTTPError,
                    ConnectionError,
                    TimeoutError,
                    _TransientStatus,
                ) as exc:
                    resumes += 1
                    what = str(exc) if isinstance(exc, _TransientStatus) else type(exc).__name__
                    if resumes > max_resumes:
                        raise ScalingoDownloadError(
                            f"{label}: the download failed {resumes} times (last: {what}) after "
                            f"{received} bytes (connection lost or server error); check the network "
                            f"between the worker and Scalingo and retry the task.",
                            status=exc.status if isinstance(exc, _TransientStatus) else None,
                        ) from None
                    wait = resume_backoff_s * resumes
                    if isinstance(exc, _TransientStatus) and exc.retry_after is not None:
                        wait = max(wait, min(exc.retry_after, MAX_RETRY_AFTER_S))
                    log.warning(
                        "%s: download interrupted after %d bytes (%s); retrying in %.1f s%s (attempt %d/%d)",
                        label,
                        received,
                        what,
                        wait,
                        " with Range" if received else "",
                        resumes,
                        max_resumes,
                    )
                    out.flush()
                    time.sleep(wait)
        progress.update(received, force=True)
        if announced is not None and received != announced:
            raise ScalingoDownloadError(
                f"{label}: received {received} bytes but the server announced {announced}; the archive is "
                f"truncated. Retry the task."
            )
        # the backup's ``size`` is documented as "backup size in bytes", not as the archive's byte count:
        # a difference is checked against the gzip stream itself (read to its end marker, CRC and length)
        size_differs = bool(expected_size) and received != expected_size
        with open(part, "rb") as fh:
            magic = fh.read(2)
        if magic != GZIP_MAGIC:
            with open(part, "rb") as fh:
                head = fh.read(120)
            raise ScalingoDownloadError(
                f"{label}: the downloaded file is not a gzip archive (starts with {head!r}); Scalingo "
                f"may have returned an error page instead of the backup. Retry, or pick another backup."
            )
        if size_differs:
            broken = _gzip_complete(part, chunk_size)
            if broken:
                raise ScalingoDownloadError(
                    f"{label}: received {received} bytes but the backup's size is {expected_size} bytes, "
                    f"and the archive is truncated or corrupt ({broken}). Retry the task; if it persists, "
                    f"pick another backup id."
                )
            log.warning(
                "%s: received %d bytes, the backup's size says %d; the gzip stream is complete (end "
                "marker, CRC and length checked): kept",
                label,
                received,
                expected_size,
            )
        elif not expected_size and announced is None:
            # nothing announced the size (chunked / connection-close body, backup size null): a stream
            # cut at a chunk boundary looks complete to HTTP, so read the gzip to its end marker
            broken = _gzip_complete(part, chunk_size)
            if broken:
                raise ScalingoDownloadError(
                    f"{label}: the archive ({received} bytes, size not announced) is truncated or corrupt "
                    f"({broken}). Retry the task; if it persists, pick another backup id."
                )
        os.replace(part, dest)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return DownloadResult(path=dest, size=received, sha256=digest.hexdigest(), resumes=resumes)


def _content_range_total(value: str) -> int | None:
    # "bytes 100-199/200" -> 200 ("*" when unknown)
    total = value.rpartition("/")[2].strip()
    return int(total) if total.isdigit() else None


def _content_range_start(value: str) -> int | None:
    # "bytes 100-199/200"
    try:
        unit, rest = value.split(" ", 1)
        return int(rest.split("-", 1)[0]) if unit == "bytes" else None
    except (ValueError, IndexError):
        return None
