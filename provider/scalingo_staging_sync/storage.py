"""The backup dump on object storage, a per-worker cache of it, and its removal.

Lets the restore run on any executor (Celery across hosts, Kubernetes pods without a shared disk):

- :func:`store_archive` streams a local dump once to a download directory that is a local path or any
  URL Airflow's ``ObjectStoragePath`` understands (``s3://``, ``gs://``, ``file://``...), with an Airflow
  connection id for the credentials. It writes to a temporary key, reads the object back to check its
  size and sha256, and only then renames it to its final key, so an interrupted upload never looks
  complete. It returns a :class:`StoredDump` (a small JSON-serialisable value for XCom).
- :func:`materialize` gives a task a local, extracted, seekable dump (``pg_restore --jobs`` needs one):
  it reuses this worker's cached copy when its sidecar says it was verified, else streams the object
  down (flat memory, sha256 while streaming, atomic rename) and refuses a sha256 mismatch.
- :func:`remove_stored` and :func:`remove_local_caches` delete the remote copy and this run's caches,
  and fail loudly naming what they could not delete.

What is stored: the **extracted dump** (``kind="dump"``, the ``PGDMP`` custom-format file), not the
Scalingo ``.tar.gz``. A pg_dump custom archive is already compressed, so the tarball saves nearly nothing,
and every worker would otherwise spend a second copy of the disk and an extraction on each task. A
``.tar.gz`` handed to :func:`store_archive` is still accepted (``kind="archive"``): :func:`materialize`
then extracts it with :func:`scalingo_staging_sync.scalingo.archive.extract_dump` (traversal-safe).

Core module: airflow is imported lazily, only where an ``ObjectStoragePath`` is needed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from scalingo_staging_sync.errors import SyncError

log = logging.getLogger(__name__)

CACHE_DIR_ENV = "SCALINGO_STAGING_SYNC_CACHE_DIR"
CACHE_MAX_AGE_ENV = "SCALINGO_STAGING_SYNC_CACHE_MAX_AGE_S"
DEFAULT_CACHE_MAX_AGE_S = 24 * 3600
CHUNK_SIZE = 8 * 1024 * 1024
MIN_PART_SIZE = 8 * 1024 * 1024  # S3 multipart: parts of at least 5 MiB
MAX_PARTS = 9000  # S3 allows 10,000 parts; keep a margin
PART_MARKER = ".part-"
SIDECAR_NAME = "materialized.json"
KINDS = ("archive", "dump")
LOCAL_PROTOCOLS = ("", "file", "local")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_SAFE_RE = re.compile(r"[^A-Za-z0-9._-]+")

ProgressCallback = Callable[[int, int], None]


# ---------------------------------------------------------------------------------------------- errors
class StorageError(SyncError):
    """A transfer to or from the download directory failed (network, permissions, server): retryable."""

    retryable = True


class StorageConfigError(StorageError):
    """A bad location, connection or value: retrying cannot fix it."""

    retryable = False


class StorageIntegrityError(StorageError):
    """A stored object's size or sha256 is not the recorded one. Not retryable at materialize time
    (the object was altered); :func:`store_archive` raises it as retryable (upload it again)."""

    retryable = False


class StorageRemovalError(StorageError):
    """A stored object or a cache could not be deleted; the message names it."""

    retryable = True


# ---------------------------------------------------------------------------------------------- value
@dataclass(frozen=True)
class StoredDump:
    """Where a verified dump is stored. ``to_dict()`` is the XCom shape::

        {"url": "s3://bucket/backups/<run>/<file>", "size": 123, "sha256": "<64 hex>",
         "kind": "dump" | "archive", "pg_version": "16.4" | None, "conn_id": "aws_backups" | None,
         "run_key": "<run>" | None}

    ``url`` is a local absolute path or a URL without credentials; ``conn_id`` names the Airflow
    connection that reads it. ``size`` / ``sha256`` are those of the stored object.
    """

    url: str
    size: int
    sha256: str
    kind: str = "dump"
    pg_version: str | None = None
    conn_id: str | None = None
    run_key: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url:
            raise StorageConfigError(f"stored dump: url must be a non-empty string, got {self.url!r}")
        if self.kind not in KINDS:
            raise StorageConfigError(
                f"stored dump {self.url}: kind must be one of {KINDS}, got {self.kind!r}"
            )
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise StorageConfigError(
                f"stored dump {self.url}: size must be an integer >= 0, got {self.size!r}"
            )
        if not isinstance(self.sha256, str) or not _SHA256_RE.match(self.sha256):
            raise StorageConfigError(
                f"stored dump {self.url}: sha256 must be 64 lowercase hex digits, got {self.sha256!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StoredDump:
        if not isinstance(data, dict):
            raise StorageConfigError(f"a stored dump must be a dict (StoredDump.to_dict()), got {data!r}")
        known = {"url", "size", "sha256", "kind", "pg_version", "conn_id", "run_key"}
        missing = {"url", "size", "sha256"} - data.keys()
        if missing:
            raise StorageConfigError(
                f"stored dump {data!r} lacks {sorted(missing)}; pass the value returned by store_archive()."
            )
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def coerce(cls, value: StoredDump | dict[str, Any]) -> StoredDump:
        return value if isinstance(value, StoredDump) else cls.from_dict(value)

    @property
    def is_local(self) -> bool:
        return is_local_location(self.url)


# ---------------------------------------------------------------------------------------------- locations
def _scheme(location: str) -> str:
    if "://" not in location:
        return ""
    return location.split("://", 1)[0].lower()


def is_local_location(location: str | os.PathLike) -> bool:
    """A plain path or a ``file://`` URL."""
    return _scheme(str(location)) in LOCAL_PROTOCOLS


def local_path(location: str | os.PathLike) -> Path:
    """The local path of a plain path or a ``file://`` URL (never ``Path("s3://...")``)."""
    text = str(location)
    scheme = _scheme(text)
    if scheme not in LOCAL_PROTOCOLS:
        raise StorageConfigError(f"{text!r} is an object-storage URL, not a local path")
    if scheme:
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise StorageConfigError(
                f"{text!r}: a file:// URL must be file:///absolute/path (no host {parts.netloc!r})"
            )
        return Path(unquote(parts.path))
    return Path(text)


def safe_segment(value: str) -> str:
    """A path segment made of ``[A-Za-z0-9._-]`` for a run id such as ``manual__2026-01-01T00:00:00+00:00``;
    a short hash keeps two different ids apart once they are sanitised."""
    text = str(value)
    cleaned = _SAFE_RE.sub("_", text).strip("._") or "run"
    if cleaned == text and text not in (".", ".."):
        return text
    return f"{cleaned[:80]}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def join_location(base: str | os.PathLike, *parts: str) -> str:
    """Append path segments to a local path or an object-storage URL (``s3://b/x`` + ``run`` ->
    ``s3://b/x/run``; never ``s3:/b/x/run``)."""
    text = str(base)
    for part in parts:
        if not part or "/" in part or "\\" in part or part in (".", ".."):
            raise StorageConfigError(f"{part!r} is not a single path segment (joining it to {text!r})")
    if is_local_location(text) and not _scheme(text):
        return str(Path(text, *parts))
    return "/".join([text.rstrip("/"), *parts])


def split_conn_id(url: str, conn_id: str | None = None) -> tuple[str, str | None]:
    """``("s3://bucket/key", "conn")`` from ObjectStoragePath's ``s3://conn@bucket/key`` form; an explicit
    ``conn_id`` wins. URLs are recorded without credentials and the connection id beside them."""
    text = str(url)
    if is_local_location(text):
        return text, conn_id
    scheme, rest = text.split("://", 1)
    netloc, sep, tail = rest.partition("/")
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        if ":" in userinfo:
            raise StorageConfigError(
                f"{scheme}://...@{host}: put credentials in an Airflow connection, not in the URL "
                f"(use {scheme}://<conn_id>@{host}/... or conn_id=...)"
            )
        return f"{scheme}://{host}{sep}{tail}", conn_id or userinfo or None
    return text, conn_id


def _remote(url: str, conn_id: str | None):
    """``(fs, path)`` of an object-storage URL, through Airflow's ObjectStoragePath and the connection."""
    url, conn_id = split_conn_id(url, conn_id)
    try:
        from airflow.sdk import ObjectStoragePath
    except ImportError as exc:  # pragma: no cover - airflow is a dependency of the provider
        raise StorageConfigError(
            f"{url}: object-storage URLs need Airflow's ObjectStoragePath ({exc})"
        ) from None
    if conn_id:
        _require_connection(conn_id, url)
    try:
        opath = ObjectStoragePath(url, conn_id=conn_id) if conn_id else ObjectStoragePath(url)
        fs = opath.fs
    except (ValueError, ImportError, KeyError) as exc:
        raise StorageConfigError(
            f"cannot open {url} (connection {conn_id!r}): {type(exc).__name__}: {exc}. Check the URL scheme "
            f"is supported (s3:// needs apache-airflow-providers-amazon[s3fs]) and the connection exists."
        ) from None
    except Exception as exc:  # connection lookup errors have no common base
        if type(exc).__name__ in ("AirflowNotFoundException", "AirflowException"):
            raise StorageConfigError(
                f"cannot open {url}: connection {conn_id!r}: {exc}. Create it (e.g. env AIRFLOW_CONN_"
                f"{(conn_id or '').upper()}) or pass the right conn_id."
            ) from None
        raise
    return fs, fs._strip_protocol(url)


def _require_connection(conn_id: str, url: str) -> None:
    """The amazon provider silently falls back to the default credential chain when a named connection
    is missing; a typo would then talk to another account's endpoint. Refuse it instead."""
    from airflow.sdk import BaseHook

    try:
        BaseHook.get_connection(conn_id)
    except Exception as exc:
        if type(exc).__name__ != "AirflowNotFoundException":
            raise
        raise StorageConfigError(
            f"connection {conn_id!r} (for {url}) does not exist; create it (Admin > Connections, or env "
            f"AIRFLOW_CONN_{conn_id.upper()}) or fix the storage connection id."
        ) from None


def _remote_size(fs, path: str) -> int | None:
    with contextlib.suppress(FileNotFoundError):
        fs.invalidate_cache(path)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        return None
    return int(info.get("size") or 0)


# ---------------------------------------------------------------------------------------------- helpers
def sha256_of(path: str | os.PathLike, chunk_size: int = CHUNK_SIZE) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def detect_kind(path: str | os.PathLike) -> str:
    """``"archive"`` for a gzip file (Scalingo's .tar.gz), ``"dump"`` for a pg_dump file (custom or plain)."""
    from scalingo_staging_sync.scalingo.archive import check_dump_file
    from scalingo_staging_sync.scalingo.download import GZIP_MAGIC

    with open(path, "rb") as fh:
        head = fh.read(2)
    if head == GZIP_MAGIC:
        return "archive"
    try:
        check_dump_file(Path(path))
    except SyncError as exc:
        raise StorageConfigError(
            f"{path} is neither a Scalingo .tar.gz archive nor a pg_dump file ({exc}); pass the downloaded "
            f"backup or its extracted *.pgsql dump."
        ) from None
    return "dump"


def _pg_version(path: Path) -> str | None:
    try:
        from scalingo_staging_sync.restore.dump import read_dump_header

        return read_dump_header(path).server_version
    except Exception as exc:  # the version is informative; a header we cannot read is not fatal here
        log.debug("cannot read the dump header of %s: %s", path, exc)
        return None


def _copy_stream(src, dst, total: int, label: str, progress: ProgressCallback | None) -> tuple[int, str]:
    digest = hashlib.sha256()
    done = 0
    last_log = time.monotonic()
    while chunk := src.read(CHUNK_SIZE):
        dst.write(chunk)
        digest.update(chunk)
        done += len(chunk)
        if progress is not None:
            progress(done, total)
        if time.monotonic() - last_log > 10:
            last_log = time.monotonic()
            log.info("%s: %d / %d bytes", label, done, total)
    return done, digest.hexdigest()


def _hash_stream(src) -> tuple[int, str]:
    digest = hashlib.sha256()
    done = 0
    while chunk := src.read(CHUNK_SIZE):
        digest.update(chunk)
        done += len(chunk)
    return done, digest.hexdigest()


def _part_size(size: int) -> int:
    return max(MIN_PART_SIZE, -(-size // MAX_PARTS))


# ---------------------------------------------------------------------------------------------- upload
def store_archive(
    local_file: str | os.PathLike,
    dest_dir_url: str | os.PathLike,
    *,
    conn_id: str | None = None,
    run_key: str | None = None,
    name: str | None = None,
    pg_version: str | None = None,
    progress: ProgressCallback | None = None,
) -> StoredDump:
    """Store ``local_file`` (the extracted dump, recommended, or the Scalingo .tar.gz) under
    ``dest_dir_url[/<run_key>]/<name or file name>`` and return its verified :class:`StoredDump`.

    Remote: streamed to ``<key>.part-<random>`` (multipart parts of >= 8 MiB: flat memory), the part
    object's size and sha256 are read back and compared with the local file's, then it is renamed to
    ``<key>``. Any failure (including an exception raised by ``progress``, as when Airflow stops the task)
    aborts the multipart upload and deletes the temporary object: nothing is left under the final key.
    Local (path or ``file://``): copied the same way with an atomic rename; storing a file onto itself
    only hashes it. ``progress(done_bytes, total_bytes)`` is called after each chunk.
    """
    source = Path(local_file)
    if not source.is_file():
        raise StorageConfigError(f"cannot store {source}: not a file. Pass the downloaded dump's path.")
    kind = detect_kind(source)
    if pg_version is None and kind == "dump":
        pg_version = _pg_version(source)
    size = source.stat().st_size
    dest_dir_url, conn_id = split_conn_id(str(dest_dir_url), conn_id)
    target_name = name or source.name
    parts = [safe_segment(run_key)] if run_key else []
    dest = join_location(dest_dir_url, *parts, target_name)
    if is_local_location(dest):
        dest_path = local_path(dest).absolute()
        url, sha = str(dest_path), _store_local(source, dest_path, size, progress)
        conn_id = None
    else:
        url, sha = dest, _store_remote(source, dest, size, conn_id, progress)
    stored = StoredDump(
        url=url, size=size, sha256=sha, kind=kind, pg_version=pg_version, conn_id=conn_id, run_key=run_key
    )
    log.info("stored %s (%s, %d bytes, sha256 %s)", url, kind, size, sha)
    return stored


def _store_local(source: Path, dest: Path, size: int, progress: ProgressCallback | None) -> str:
    if dest.exists() and dest.resolve() == source.resolve():
        return sha256_of(source)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f"{dest.name}{PART_MARKER}{uuid.uuid4().hex[:12]}")
    try:
        with open(source, "rb") as src, open(part, "wb") as out:
            written, sha = _copy_stream(src, out, size, f"store {dest}", progress)
            out.flush()
            os.fsync(out.fileno())
        _check_readback(str(dest), written, sha, size, *_hash_file(part))
        os.replace(part, dest)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return sha


def _hash_file(path: Path) -> tuple[int, str]:
    with open(path, "rb") as fh:
        return _hash_stream(fh)


def _check_readback(url: str, written: int, sha: str, size: int, got_size: int, got_sha: str) -> None:
    if written != size:
        raise StorageIntegrityError(
            f"{url}: the local file changed while it was stored ({written} bytes read, {size} expected); "
            f"retry the task.",
            retryable=True,
        )
    if got_size != size or got_sha != sha:
        raise StorageIntegrityError(
            f"{url}: the stored copy does not match the local file (size {got_size} vs {size}, sha256 "
            f"{got_sha} vs {sha}); it was deleted. Retry the task.",
            retryable=True,
        )


def _store_remote(source: Path, url: str, size: int, conn_id: str | None, progress) -> str:
    fs, path = _remote(url, conn_id)
    tmp = f"{path}{PART_MARKER}{uuid.uuid4().hex[:12]}"
    out = None
    committed = renaming = False
    try:
        with open(source, "rb") as src:
            out = fs.open(tmp, "wb", block_size=_part_size(size))
            written, sha = _copy_stream(src, out, size, f"upload {url}", progress)
            out.close()  # commits the (multipart) upload of the temporary key only
            committed = True
        got_size = _remote_size(fs, tmp)
        if got_size != size:
            _check_readback(url, written, sha, size, got_size or 0, "<not read>")
        with fs.open(tmp, "rb", block_size=CHUNK_SIZE, cache_type="none") as back:
            _check_readback(url, written, sha, size, *_hash_stream(back))
        renaming = True
        fs.mv(tmp, path)
        final_size = _remote_size(fs, path)
        if final_size != size:
            raise StorageIntegrityError(
                f"{url}: after the rename the object has {final_size} bytes, expected {size}; retry the task.",
                retryable=True,
            )
        return sha
    except BaseException as exc:
        if out is not None and not committed:
            _discard(out)
        for key in (tmp, path) if renaming else (tmp,):  # verify and delete: never a doubtful final key
            with contextlib.suppress(Exception):
                if fs.exists(key):
                    fs.rm(key)
        if isinstance(exc, SyncError) or not isinstance(exc, Exception):
            raise
        raise StorageError(
            f"upload of {source} to {url} failed ({type(exc).__name__}: {exc}); nothing was left under that "
            f"key. Retry the task; check the connection {conn_id!r} can write there."
        ) from exc


def _discard(handle) -> None:
    """Abort an unfinished fsspec write so that it does not commit what was buffered on close/GC."""
    with contextlib.suppress(Exception):
        discard = getattr(handle, "discard", None)
        if discard is not None:
            discard()
    # AbstractBufferedFile.__del__ would otherwise close() and commit the partial buffer
    with contextlib.suppress(Exception):
        handle.closed = True


# ---------------------------------------------------------------------------------------------- cache
def default_cache_dir() -> Path:
    """env ``SCALINGO_STAGING_SYNC_CACHE_DIR``, else ``<system temp>/scalingo_staging_sync/cache``."""
    return Path(
        os.environ.get(CACHE_DIR_ENV) or Path(tempfile.gettempdir()) / "scalingo_staging_sync" / "cache"
    )


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    if cache_dir is not None and not is_local_location(str(cache_dir)):
        raise StorageConfigError(f"cache_dir must be a local directory, got {cache_dir!r}")
    return local_path(cache_dir) if cache_dir is not None else default_cache_dir()


def _run_key(stored: StoredDump, run_key: str | None) -> str:
    key = run_key or stored.run_key
    if key:
        return safe_segment(key)
    return "url-" + hashlib.sha256(stored.url.encode()).hexdigest()[:16]


def cache_entry_dir(stored: StoredDump | dict, cache_dir=None, *, run_key: str | None = None) -> Path:
    """``<cache_dir>/<run key>/<sha256>``: where :func:`materialize` keeps this dump."""
    stored = StoredDump.coerce(stored)
    return resolve_cache_dir(cache_dir) / _run_key(stored, run_key) / stored.sha256


@contextlib.contextmanager
def _locked(directory: Path, blocking: bool = True) -> Iterator[bool]:
    """An exclusive lock of ``directory`` between processes of this worker (fcntl; no-op elsewhere)."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Airflow workers run on POSIX
        yield True
        return
    with open(directory / ".lock", "a+") as fh:
        flags = fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB)
        try:
            fcntl.flock(fh.fileno(), flags)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _read_sidecar(entry: Path) -> dict | None:
    try:
        return json.loads((entry / SIDECAR_NAME).read_text())
    except (OSError, ValueError):
        return None


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _cached(entry: Path, stored: StoredDump, verify: str) -> Path | None:
    """The cached dump when the sidecar (written after a verified download) still describes it."""
    meta = _read_sidecar(entry)
    if not meta or meta.get("source_sha256") != stored.sha256:
        return None
    rel = Path(str(meta.get("dump") or ""))
    if not rel.parts or rel.is_absolute() or ".." in rel.parts:
        return None
    dump = entry / rel
    try:
        st = dump.stat()
    except OSError:
        return None
    if (
        not dump.is_file()
        or st.st_size != meta.get("dump_size")
        or st.st_mtime_ns != meta.get("dump_mtime_ns")
    ):
        log.warning("cached %s changed since it was verified; downloading it again", dump)
        return None
    if verify == "full":
        actual = sha256_of(dump)
        if actual != meta.get("dump_sha256"):
            log.warning(
                "cached %s has sha256 %s, expected %s; downloading it again",
                dump,
                actual,
                meta.get("dump_sha256"),
            )
            return None
    with contextlib.suppress(OSError):
        os.utime(entry / SIDECAR_NAME)  # last use, for prune_caches
    return dump


def materialize(
    stored: StoredDump | dict,
    cache_dir: str | os.PathLike | None = None,
    *,
    run_key: str | None = None,
    conn_id: str | None = None,
    verify: str = "sidecar",
    prune: bool = True,
) -> Path:
    """A local, extracted, seekable dump of ``stored``, for pg_restore.

    - Local dump (plain path or ``file://``): returned as is after checking its size (``verify="full"``
      also re-hashes it).
    - Otherwise cached in ``cache_entry_dir(stored, cache_dir, run_key=...)`` (``cache_dir`` argument, else
      env ``SCALINGO_STAGING_SYNC_CACHE_DIR``, else ``<tmp>/scalingo_staging_sync/cache``; ``run_key``
      argument, else ``stored.run_key``). A cached copy is reused when the sidecar written after its
      verified download still matches the file's size and mtime (no re-hash; ``verify="full"`` re-hashes).
      Else the object is streamed to ``<name>.part``, its size and sha256 compared with ``stored`` (a
      mismatch raises :class:`StorageIntegrityError` naming the URL and both hashes), renamed atomically,
      and a ``.tar.gz`` is extracted safely. Concurrent calls on one worker are serialised by a lock.
    - ``prune``: first delete other runs' cache entries unused for ``SCALINGO_STAGING_SYNC_CACHE_MAX_AGE_S``
      (default 24 h) that no process holds, see :func:`prune_caches`.
    """
    stored = StoredDump.coerce(stored)
    if verify not in ("sidecar", "full"):
        raise StorageConfigError(f"verify must be 'sidecar' or 'full', got {verify!r}")
    if stored.is_local and stored.kind == "dump":
        return _local_passthrough(stored, verify)
    root = resolve_cache_dir(cache_dir)
    key = _run_key(stored, run_key)
    if prune:
        with contextlib.suppress(Exception):
            prune_caches(root, keep=(key,))
    entry = root / key / stored.sha256
    with _locked(entry):
        dump = _cached(entry, stored, verify)
        if dump is not None:
            log.info("reusing the verified cached dump %s", dump)
            return dump
        for child in entry.iterdir():
            if child.name != ".lock":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        return _download_into(entry, stored, conn_id or stored.conn_id)


def cache_local_copy(
    stored: StoredDump | dict,
    local_file: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    *,
    run_key: str | None = None,
) -> Path:
    """Move the dump that :func:`store_archive` has just stored into this worker's cache, as if it had
    been materialised, so that a later task on the same worker does not download it again. Only for a
    remote ``kind="dump"``; ``local_file`` must be the very file that was stored (its size is checked,
    its sha256 is the one the upload verified). Returns the cached path (what :func:`materialize` returns).
    """
    stored = StoredDump.coerce(stored)
    source = Path(local_file)
    if stored.is_local or stored.kind != "dump":
        raise StorageConfigError(
            f"cache_local_copy: {stored.url} is {'a local path' if stored.is_local else 'an archive'}; only a "
            f"remote dump is cached (materialize() returns local dumps as they are)."
        )
    size = source.stat().st_size
    if size != stored.size:
        raise StorageIntegrityError(
            f"{source} has {size} bytes but {stored.url} was stored with {stored.size}"
        )
    entry = cache_entry_dir(stored, cache_dir, run_key=run_key)
    with _locked(entry):
        name = safe_segment(Path(urlsplit(stored.url).path).name or "dump")
        dump = entry / name
        try:
            os.replace(source, dump)
        except OSError:  # another filesystem: copy, then drop the source
            part = entry / f"{name}.part"
            shutil.copyfile(source, part)
            os.replace(part, dump)
            source.unlink()
        _write_sidecar(entry, stored, dump, stored.sha256)
    return dump


def _local_passthrough(stored: StoredDump, verify: str) -> Path:
    path = local_path(stored.url)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise StorageIntegrityError(
            f"the stored dump {stored.url} does not exist (removed, or not on this worker's disk: use an "
            f"object-storage download_dir when tasks run on different machines)."
        ) from None
    if size != stored.size:
        raise StorageIntegrityError(f"{stored.url} has {size} bytes, expected {stored.size}; it was altered.")
    if verify == "full":
        actual = sha256_of(path)
        if actual != stored.sha256:
            raise StorageIntegrityError(
                f"{stored.url}: sha256 {actual} does not match the recorded {stored.sha256}; it was altered."
            )
    return path


def _download_into(entry: Path, stored: StoredDump, conn_id: str | None) -> Path:
    name = Path(urlsplit(stored.url).path).name if not stored.is_local else local_path(stored.url).name
    name = safe_segment(name or "dump")
    part = entry / f"{name}.part"
    try:
        if stored.is_local:
            opener = contextlib.nullcontext(open(local_path(stored.url), "rb"))  # noqa: SIM115
        else:
            fs, path = _remote(stored.url, conn_id)
            try:
                opener = contextlib.nullcontext(fs.open(path, "rb", block_size=CHUNK_SIZE, cache_type="none"))
            except FileNotFoundError:
                raise StorageIntegrityError(
                    f"the stored dump {stored.url} does not exist (already removed by cleanup?); rerun the "
                    f"backup task."
                ) from None
        with opener as src, open(part, "wb") as out:
            got, sha = _copy_stream(src, out, stored.size, f"materialize {stored.url}", None)
            out.flush()
            os.fsync(out.fileno())
        if got != stored.size or sha != stored.sha256:
            raise StorageIntegrityError(
                f"{stored.url}: the object does not match what was stored: sha256 {sha} ({got} bytes) "
                f"instead of {stored.sha256} ({stored.size} bytes). It was altered or replaced; refusing to "
                f"restore it. Rerun the whole sync from the backup task."
            )
        if stored.kind == "archive":
            from scalingo_staging_sync.scalingo.archive import extract_dump

            archive = entry / (name if name.endswith(".tar.gz") else f"{name}.tar.gz")
            os.replace(part, archive)
            try:
                dump = extract_dump(archive, entry / "extracted")
            finally:
                archive.unlink(missing_ok=True)
            dump_sha = sha256_of(dump)
        else:
            dump = entry / name
            os.replace(part, dump)
            dump_sha = sha
    except BaseException as exc:
        part.unlink(missing_ok=True)
        if isinstance(exc, SyncError) or not isinstance(exc, Exception):
            raise
        raise StorageError(
            f"materializing {stored.url} into {entry} failed ({type(exc).__name__}: {exc}); retry the task."
        ) from exc
    _write_sidecar(entry, stored, dump, dump_sha)
    log.info("materialized %s into %s (%d bytes, sha256 verified)", stored.url, dump, dump.stat().st_size)
    return dump


def _write_sidecar(entry: Path, stored: StoredDump, dump: Path, dump_sha: str) -> None:
    """Written last, atomically, once ``dump`` is verified: its presence is what makes the entry reusable."""
    _fsync_dir(dump.parent)
    st = dump.stat()
    _write_json_atomic(
        entry / SIDECAR_NAME,
        {
            "source_url": stored.url,
            "source_sha256": stored.sha256,
            "source_size": stored.size,
            "kind": stored.kind,
            "dump": str(dump.relative_to(entry)),
            "dump_sha256": dump_sha,
            "dump_size": st.st_size,
            "dump_mtime_ns": st.st_mtime_ns,
            "verified_at": time.time(),
        },
    )


# ---------------------------------------------------------------------------------------------- removal
def remove_stored(stored: StoredDump | dict, *, conn_id: str | None = None) -> bool:
    """Delete the stored object and any ``<key>.part-*`` leftovers of interrupted uploads next to it.

    Returns True when something was deleted, False when it was already gone (both are success).
    Raises :class:`StorageRemovalError` naming the object when it cannot be deleted or is still there.
    """
    stored = StoredDump.coerce(stored)
    if stored.is_local:
        path = local_path(stored.url)
        removed = False
        try:
            for leftover in path.parent.glob(f"{path.name}{PART_MARKER}*"):
                leftover.unlink(missing_ok=True)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed = True
        except OSError as exc:
            raise StorageRemovalError(
                f"cannot delete the stored dump {stored.url} ({exc}); delete it by hand: it holds production data."
            ) from None
        if path.exists():
            raise StorageRemovalError(f"the stored dump {stored.url} is still there after deletion")
        if stored.run_key and path.parent.name == safe_segment(stored.run_key):
            with contextlib.suppress(OSError):
                path.parent.rmdir()  # only when empty
        return removed
    conn = conn_id or stored.conn_id
    try:
        fs, path = _remote(stored.url, conn)
        leftovers = fs.glob(f"{path}{PART_MARKER}*")
        existed = _remote_size(fs, path) is not None
        for key in [*leftovers, *([path] if existed else [])]:
            with contextlib.suppress(FileNotFoundError):
                fs.rm_file(key)
        if _remote_size(fs, path) is not None:
            raise StorageRemovalError(f"the stored dump {stored.url} is still there after deletion")
    except StorageRemovalError:
        raise
    except Exception as exc:
        raise StorageRemovalError(
            f"cannot delete the stored dump {stored.url} (connection {conn!r}: {type(exc).__name__}: {exc}); "
            f"delete it by hand: it holds production data.",
            retryable=exc.retryable if isinstance(exc, SyncError) else None,
        ) from exc
    log.info("removed %s%s", stored.url, "" if existed else " (already gone)")
    return existed


def remove_local_caches(run_key: str | StoredDump | dict, cache_dir: str | os.PathLike | None = None) -> bool:
    """Delete this worker's cache of one run (``<cache_dir>/<run key>``). Returns False when there was
    none; raises :class:`StorageRemovalError` naming the directory when it cannot be deleted."""
    if isinstance(run_key, (StoredDump, dict)):
        stored = StoredDump.coerce(run_key)
        key = _run_key(stored, None)
    else:
        if not run_key:
            raise StorageConfigError(
                "remove_local_caches: run_key is empty; pass the run id used to materialize"
            )
        key = safe_segment(run_key)
    target = resolve_cache_dir(cache_dir) / key
    removed = False
    try:
        entries = [e for e in target.iterdir() if _is_cache_entry(e)]
    except FileNotFoundError:
        return False
    for users in target.glob(f"*{USERS_SUFFIX}"):  # lease lock files of lease_dump (empty)
        if _SHA256_RE.match(users.name[: -len(USERS_SUFFIX)]):
            users.unlink(missing_ok=True)
    for entry in entries:
        try:
            shutil.rmtree(entry)
            removed = True
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StorageRemovalError(
                f"cannot delete the dump cache {entry} ({exc}); delete it by hand: it holds production data."
            ) from None
    with contextlib.suppress(OSError):
        target.rmdir()  # only when nothing else is in it
    if removed:
        log.info("removed the dump cache %s", target)
    return removed


def _is_cache_entry(path: Path) -> bool:
    """Only directories made by materialize (``<sha256>/`` holding its ``.lock``) are ever deleted, even
    when the cache directory is shared with other files (say ``/tmp``)."""
    return path.is_dir() and bool(_SHA256_RE.match(path.name)) and (path / ".lock").exists()


def prune_caches(
    cache_dir: str | os.PathLike | None = None, *, keep: tuple[str, ...] = (), max_age_s: float | None = None
) -> list[Path]:
    """Delete cache entries of other runs (not in ``keep``) whose last use is older than ``max_age_s``
    (default env ``SCALINGO_STAGING_SYNC_CACHE_MAX_AGE_S`` or 24 h) and that no process has locked.
    The cleanup task runs on one worker; this is how the other workers' copies go away."""
    root = resolve_cache_dir(cache_dir)
    if max_age_s is None:
        max_age_s = float(os.environ.get(CACHE_MAX_AGE_ENV) or DEFAULT_CACHE_MAX_AGE_S)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    now = time.time()
    for run_dir in root.iterdir():
        if not run_dir.is_dir() or run_dir.name in keep:
            continue
        for entry in list(run_dir.iterdir()):
            if not _is_cache_entry(entry):
                continue
            marker = entry / SIDECAR_NAME
            last = marker.stat().st_mtime if marker.exists() else entry.stat().st_mtime
            if now - last < max_age_s:
                continue
            with _locked(entry, blocking=False) as got:
                if got:
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.append(entry)
        with contextlib.suppress(OSError):
            run_dir.rmdir()
    for entry in removed:
        log.info("pruned the stale dump cache %s", entry)
    return removed


# ---------------------------------------------------------------------------------------------- run prefix
def remove_under(dir_url: str | os.PathLike, *, conn_id: str | None = None) -> list[str]:
    """Delete everything under one run's download directory (a local directory or a URL prefix):
    what an interrupted backup task may have left before it could record a :class:`StoredDump`.
    Returns what was deleted; raises :class:`StorageRemovalError` naming what is still there.
    Only ever give it a directory that belongs to one run (the reference DAG's ``<download_dir>/<run>``)."""
    text, conn = split_conn_id(str(dir_url), conn_id)
    if is_local_location(text):
        path = local_path(text)
        if not path.exists():
            return []
        found = [str(p) for p in path.rglob("*") if p.is_file()]
        try:
            shutil.rmtree(path)
        except OSError as exc:
            raise StorageRemovalError(
                f"cannot delete the download directory {path} ({exc}); delete it by hand: it may hold "
                f"production data."
            ) from None
        return found
    try:
        fs, root = _remote(text, conn)
        prefix = root.rstrip("/")
        with contextlib.suppress(FileNotFoundError):
            fs.invalidate_cache(prefix)
        found = sorted(fs.find(prefix))
        for key in found:
            with contextlib.suppress(FileNotFoundError):
                fs.rm_file(key)
        fs.invalidate_cache(prefix)
        left = sorted(fs.find(prefix))
    except StorageConfigError:
        raise
    except Exception as exc:
        raise StorageRemovalError(
            f"cannot delete the objects under {text} (connection {conn!r}: {type(exc).__name__}: {exc}); "
            f"delete them by hand: they may hold production data."
        ) from exc
    if left:
        names = ", ".join(left[:5]) + (f" and {len(left) - 5} more" if len(left) > 5 else "")
        raise StorageRemovalError(f"still in the bucket after deletion under {text}: {names}")
    for key in found:
        log.info("removed %s", key)
    return [f"{_scheme(text)}://{k}" for k in found]


# ---------------------------------------------------------------------------------------------- probe
def probe_writable(url: str | os.PathLike, conn_id: str | None = None) -> None:
    """Prove that the download location can be written and deleted: a small probe object is written
    under ``url`` (``.scalingo-staging-sync-probe-<random>``), read back and deleted. Raises
    :class:`StorageConfigError` (not retryable: a bad URL, a missing connection, permissions) or
    :class:`StorageError` (retryable: the service did not answer) with a fix."""
    text, conn = split_conn_id(str(url), conn_id)
    name = f".scalingo-staging-sync-probe-{uuid.uuid4().hex[:12]}"
    payload = b"scalingo-staging-sync write probe\n"
    if is_local_location(text):
        directory = local_path(text)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            probe = directory / name
            probe.write_bytes(payload)
            probe.unlink()
        except OSError as exc:
            raise StorageConfigError(
                f"download directory {directory} is not writable ({exc.strerror or exc}); set download_dir "
                f"to a directory the Airflow workers can write."
            ) from None
        return
    fs, root = _remote(text, conn)
    key = f"{root.rstrip('/')}/{name}"
    step = "write"
    try:
        with fs.open(key, "wb") as out:
            out.write(payload)
        step = "read back"
        fs.invalidate_cache(key)
        with fs.open(key, "rb") as back:
            if back.read() != payload:
                raise StorageConfigError(f"{text}: the probe object read back differs from what was written")
        step = "delete"
        fs.rm_file(key)
        fs.invalidate_cache(key)
        if _remote_size(fs, key) is not None:
            raise StorageConfigError(
                f"{text}: the probe object {key} is still there after deletion; the connection "
                f"{conn!r} needs the right to delete objects (s3:DeleteObject) so that cleanup can remove dumps."
            )
    except StorageConfigError:
        raise
    except Exception as exc:
        with contextlib.suppress(Exception):
            fs.rm_file(key)
        denied = (
            isinstance(exc, PermissionError)
            or "denied" in str(exc).lower()
            or "forbidden" in str(exc).lower()
        )
        missing = isinstance(exc, FileNotFoundError) or "nosuchbucket" in str(exc).lower().replace(" ", "")
        if denied or missing:
            raise StorageConfigError(
                f"cannot {step} a probe object under {text} with connection {conn!r}: {type(exc).__name__}: "
                f"{exc}. Check the bucket exists and the connection may put, get, list and delete objects "
                f"under that prefix (docs/storage.md, 'What the bucket needs')."
            ) from None
        raise StorageError(
            f"cannot {step} a probe object under {text} with connection {conn!r}: {type(exc).__name__}: {exc}. "
            f"Check the endpoint is reachable; retry."
        ) from exc


# ---------------------------------------------------------------------------------------------- leases
USERS_SUFFIX = ".users"


def _open_locked(path: Path, mode: int):
    """``path`` opened and flock-ed with ``mode``; retried when another process deleted the file while
    we waited for the lock (the lock would then be on an orphan inode)."""
    import fcntl

    while True:
        fh = open(path, "a+")  # noqa: SIM115 - kept open while the lock is held
        try:
            fcntl.flock(fh.fileno(), mode)
            with contextlib.suppress(FileNotFoundError):
                if os.stat(path).st_ino == os.fstat(fh.fileno()).st_ino:
                    return fh
        except BaseException:
            fh.close()
            raise
        fh.close()


class CacheLease:
    """A task's use of a cached dump: a shared lock on ``<entry>.users`` held while the task runs.
    :meth:`release` deletes the cache entry when no other task on this worker still holds a lease
    on it, so that no raw production dump stays on a worker the cleanup task never runs on."""

    def __init__(self, entry: Path, users: Path, handle) -> None:
        self.entry = entry
        self.users = users
        self._handle = handle

    def release(self, *, remove: bool = True) -> bool:
        """Drop the lease; with ``remove``, delete the entry if this was the last lease on it. Returns
        True when the entry was deleted. Raises :class:`StorageRemovalError` naming it if it cannot be."""
        import fcntl

        handle, self._handle = self._handle, None
        if handle is None:
            return False
        try:
            if not remove:
                return False
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("the dump cache %s is still used by another task on this worker: kept", self.entry)
                return False
            try:
                if self.entry.exists():
                    with _locked(self.entry):
                        for child in list(self.entry.iterdir()):
                            if child.name != ".lock":
                                shutil.rmtree(child) if child.is_dir() else child.unlink()
                    shutil.rmtree(self.entry)
            except OSError as exc:
                raise StorageRemovalError(
                    f"cannot delete the dump cache {self.entry} ({exc}); delete it by hand: it holds "
                    f"production data."
                ) from None
            self.users.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.entry.parent.rmdir()  # the run's directory, when nothing else is in it
            log.info("removed the dump cache %s (no other task on this worker uses it)", self.entry)
            return True
        finally:
            handle.close()


def lease_dump(
    stored: StoredDump | dict,
    cache_dir: str | os.PathLike | None = None,
    *,
    run_key: str | None = None,
    conn_id: str | None = None,
    verify: str = "sidecar",
) -> tuple[Path, CacheLease | None]:
    """:func:`materialize` ``stored`` and hold a lease on the cached copy until :meth:`CacheLease.release`.
    Tasks on one worker that hold leases at the same time share one download; the last one to release
    deletes it. A local dump has no cache and no lease (``None``)."""
    stored = StoredDump.coerce(stored)
    if stored.is_local and stored.kind == "dump":
        return materialize(stored, cache_dir, run_key=run_key, conn_id=conn_id, verify=verify), None
    import fcntl

    entry = cache_entry_dir(stored, cache_dir, run_key=run_key)
    entry.parent.mkdir(parents=True, exist_ok=True)
    users = entry.parent / f"{entry.name}{USERS_SUFFIX}"
    lease = CacheLease(entry, users, _open_locked(users, fcntl.LOCK_SH))
    try:
        path = materialize(stored, cache_dir, run_key=run_key, conn_id=conn_id, verify=verify)
    except BaseException:
        with contextlib.suppress(Exception):
            lease.release()
        raise
    return path, lease
