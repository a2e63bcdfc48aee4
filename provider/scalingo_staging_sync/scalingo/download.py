"""Streamed, resumable download of a backup archive: constant memory, sha256 while streaming,
``Range`` resume after a dropped connection, size check, temp name + atomic rename."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests
import urllib3

from scalingo_staging_sync.scalingo.errors import ScalingoDownloadError

log = logging.getLogger(__name__)

CHUNK_SIZE = 1024 * 1024
GZIP_MAGIC = b"\x1f\x8b"


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
) -> DownloadResult:
    """Download ``url`` (a signed URL, or a callable returning a fresh one) to ``dest``.

    The body goes to ``<dest>.part`` chunk by chunk while a sha256 is updated; after a connection
    error the transfer resumes with ``Range: bytes=<received>-`` (falling back to a restart when the
    server answers 200 instead of 206). When complete the size is checked against ``expected_size``
    (the backup's ``size``), the gzip magic is checked, and the file is renamed atomically.
    No Authorization header is sent: the URL is pre-signed.
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
    refreshed_url = False
    try:
        with open(part, "wb") as out:
            while True:
                headers = {"Accept": "application/octet-stream"}
                if received:
                    headers["Range"] = f"bytes={received}-"
                try:
                    with session.get(current_url, headers=headers, stream=True, timeout=timeout) as resp:
                        if resp.status_code in (401, 403, 404, 410) and received and not refreshed_url:
                            # the signed URL may have expired between attempts: ask for a new one once
                            refreshed_url = True
                            current_url = get_url()
                            continue
                        if resp.status_code == 200 and received:
                            log.warning("%s: server ignored the Range request, restarting from byte 0", label)
                            out.seek(0)
                            out.truncate()
                            digest = hashlib.sha256()
                            received = 0
                        elif resp.status_code == 206:
                            start = _content_range_start(resp.headers.get("Content-Range", ""))
                            if start != received:
                                raise ScalingoDownloadError(
                                    f"{label}: asked to resume at byte {received} but the server sent "
                                    f"Content-Range {resp.headers.get('Content-Range')!r}; delete "
                                    f"{part} and retry the task."
                                )
                        elif resp.status_code != 200:
                            snippet = resp.text[:200] if resp.status_code < 600 else ""
                            raise ScalingoDownloadError(
                                f"{label}: the download URL answered HTTP {resp.status_code} "
                                f"({snippet!r}). The signed URL may have expired: rerun the task to get "
                                f"a new one; check the backup is 'done'.",
                                status=resp.status_code,
                            )
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
                    break
                except (
                    requests.ConnectionError,
                    requests.Timeout,
                    requests.exceptions.ChunkedEncodingError,
                    urllib3.exceptions.HTTPError,
                    ConnectionError,
                    TimeoutError,
                ) as exc:
                    resumes += 1
                    if resumes > max_resumes:
                        raise ScalingoDownloadError(
                            f"{label}: connection lost {resumes} times (last: {type(exc).__name__}) after "
                            f"{received} bytes; check the network between the worker and Scalingo and "
                            f"retry the task.",
                        ) from None
                    log.warning(
                        "%s: connection lost after %d bytes (%s); resuming with Range (attempt %d/%d)",
                        label,
                        received,
                        type(exc).__name__,
                        resumes,
                        max_resumes,
                    )
                    out.flush()
                    time.sleep(resume_backoff_s * resumes)
        progress.update(received, force=True)
        if expected_size and received != expected_size:
            raise ScalingoDownloadError(
                f"{label}: received {received} bytes but the backup's size is {expected_size} bytes; "
                f"the archive is truncated or not the announced backup. Retry the task; if it persists, "
                f"pick another backup id."
            )
        with open(part, "rb") as fh:
            magic = fh.read(2)
        if magic != GZIP_MAGIC:
            with open(part, "rb") as fh:
                head = fh.read(120)
            raise ScalingoDownloadError(
                f"{label}: the downloaded file is not a gzip archive (starts with {head!r}); Scalingo "
                f"may have returned an error page instead of the backup. Retry, or pick another backup."
            )
        os.replace(part, dest)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return DownloadResult(path=dest, size=received, sha256=digest.hexdigest(), resumes=resumes)


def _content_range_start(value: str) -> int | None:
    # "bytes 100-199/200"
    try:
        unit, rest = value.split(" ", 1)
        return int(rest.split("-", 1)[0]) if unit == "bytes" else None
    except (ValueError, IndexError):
        return None
