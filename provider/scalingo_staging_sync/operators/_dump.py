"""The one place where a dump reference becomes a local file, and where a run's copies are removed.

A *dump reference* is what the backup task returns, or a part of it:

- a local path (``str`` / ``Path``, or ``file:///...``): used as it is;
- a stored dump (:meth:`scalingo_staging_sync.storage.StoredDump.to_dict`, also as its JSON or Python
  repr string when a template rendered it as text): materialised into this worker's cache
  (``[scalingo_staging_sync] cache_dir``), sha256-checked, reused when already there;
- the backup task's whole result: its ``stored_dump`` when set (object-storage ``download_dir``), else its
  ``dump_path``.

With ``[scalingo_staging_sync] cache_scope = task`` (default) every materialised copy is leased for the
task and deleted when the last task using it on this worker ends (:func:`release_dumps`, called by
:func:`scalingo_staging_sync.operators._base.maps_sync_errors` after every ``execute``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from scalingo_staging_sync.errors import SyncError

log = logging.getLogger(__name__)

CACHE_SCOPES = ("task", "run")

#: leases taken by :func:`local_dump` in this task's process, released by :func:`release_dumps`
_LEASES: list[Any] = []


class DumpNotFoundError(SyncError, FileNotFoundError):
    """The dump named by a task's argument is not there (not retryable: re-run the backup task)."""

    retryable = False


def cache_dir() -> str | None:
    """This worker's cache directory (``[scalingo_staging_sync] cache_dir``; None: the storage default)."""
    from scalingo_staging_sync import config

    return config.get("cache_dir")


def cache_scope() -> str:
    from scalingo_staging_sync import config

    scope = (config.get("cache_scope") or "task").lower()
    if scope not in CACHE_SCOPES:
        from scalingo_staging_sync.storage import StorageConfigError

        raise StorageConfigError(
            f"[scalingo_staging_sync] cache_scope is {scope!r}; use one of {', '.join(CACHE_SCOPES)}"
        )
    return scope


def dump_reference(dump_ref: Any) -> Any:
    """``dump_ref`` resolved to a ``StoredDump`` or a local ``Path`` (see the module docstring)."""
    from scalingo_staging_sync import storage

    if isinstance(dump_ref, storage.StoredDump):
        return dump_ref
    if isinstance(dump_ref, str) and dump_ref.strip()[:1] == "{":
        from scalingo_staging_sync.operators._base import as_mapping

        dump_ref = as_mapping(dump_ref, "dump_path")
    if isinstance(dump_ref, Mapping):
        if "url" in dump_ref and "sha256" in dump_ref:
            return storage.StoredDump.from_dict(dict(dump_ref))
        stored = dump_ref.get("stored_dump")
        if stored:
            return dump_reference(stored)
        dump_ref = dump_ref.get("dump_path")
    if dump_ref is None or str(dump_ref).strip() in ("", "None"):
        raise DumpNotFoundError("no dump given: pass dump_path (the backup task's result or its dump_path)")
    text = str(dump_ref).strip()
    if not storage.is_local_location(text):
        raise DumpNotFoundError(
            f"dump {text!r} is an object-storage URL without its recorded size and sha256: pass the backup "
            f"task's result (its stored_dump), not the bare URL."
        )
    return storage.local_path(text).expanduser()


def local_dump(dump_ref: Any) -> Path:
    """A local, seekable path of the dump named by ``dump_ref`` (see the module docstring)."""
    from scalingo_staging_sync import storage

    ref = dump_reference(dump_ref)
    if isinstance(ref, Path):
        if not ref.exists():
            raise DumpNotFoundError(
                f"dump {str(ref)!r} does not exist: re-run the backup task or fix dump_path (tasks on "
                f"different machines need an object-storage download_dir, see docs/storage.md)"
            )
        return ref
    if cache_scope() == "run":
        return storage.materialize(ref, cache_dir())
    path, lease = storage.lease_dump(ref, cache_dir())
    if lease is not None:
        _LEASES.append(lease)
    return path


def release_dumps() -> None:
    """Release the leases :func:`local_dump` took in this task (the last user on this worker deletes
    the cached copy). Raises ``StorageRemovalError`` naming a copy that cannot be deleted."""
    errors = []
    while _LEASES:
        lease = _LEASES.pop()
        try:
            lease.release()
        except SyncError as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


_DEPTH = 0


@contextlib.contextmanager
def releasing_dumps() -> Iterator[None]:
    """Around a task's ``execute``: on the way out of the outermost one, :func:`release_dumps`. When the
    task is already failing, a release error is logged (the task's own error is the one raised)."""
    global _DEPTH
    _DEPTH += 1
    try:
        yield
    except BaseException:
        _DEPTH -= 1
        if _DEPTH == 0:
            try:
                release_dumps()
            except SyncError as exc:
                log.error("releasing the cached dump failed too: %s", exc)
        raise
    _DEPTH -= 1
    if _DEPTH == 0:
        release_dumps()


def remove_run_dumps(
    *,
    stored_dump: Any = None,
    download_dir: str | None = None,
    conn_id: str | None = None,
    run_key: str | None = None,
) -> dict[str, Any]:
    """The cleanup of one run's dump: the stored object (and its ``.part-*`` leftovers), every object left
    under the run's object-storage ``download_dir`` (an interrupted backup task), and this worker's cache
    of the run. Returns ``{"stored": url | None, "removed_objects": [...], "caches_removed": bool,
    "errors": [...]}``; every error names the object or directory that is still there."""
    from scalingo_staging_sync import storage

    out: dict[str, Any] = {"stored": None, "removed_objects": [], "caches_removed": False, "errors": []}
    stored = None
    if stored_dump:
        try:
            ref = dump_reference(stored_dump)
            stored = ref if isinstance(ref, storage.StoredDump) else None
        except SyncError as exc:
            out["errors"].append(f"stored dump {stored_dump!r}: {exc}")
    if stored is not None:
        out["stored"] = stored.url
        try:
            storage.remove_stored(stored, conn_id=conn_id)
        except SyncError as exc:
            out["errors"].append(str(exc))
        run_key = stored.run_key or run_key
    if download_dir and "://" in download_dir:  # object storage, or file:// (plain paths: the operator)
        try:
            out["removed_objects"] = storage.remove_under(download_dir, conn_id=conn_id)
        except SyncError as exc:
            out["errors"].append(str(exc))
    if stored is not None or run_key:
        try:
            out["caches_removed"] = storage.remove_local_caches(stored or run_key, cache_dir())
        except SyncError as exc:
            out["errors"].append(str(exc))
    return out
