"""The one place where a dump reference becomes a local file (object storage is wired in here)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scalingo_staging_sync.errors import SyncError


class DumpNotFoundError(SyncError, FileNotFoundError):
    """The dump named by a task's argument is not there (not retryable: re-run the backup task)."""

    retryable = False


def local_dump(dump_ref: Any) -> Path:
    """A local path for ``dump_ref``: a path string, a ``Path``, or the backup task's result mapping
    (its ``dump_path``). Local paths only for now; object storage plugs in here."""
    if isinstance(dump_ref, Mapping):
        dump_ref = dump_ref.get("dump_path")
    if dump_ref is None or str(dump_ref).strip() in ("", "None"):
        raise DumpNotFoundError("no dump given: pass dump_path (the backup task's dump_path)")
    path = Path(str(dump_ref).strip()).expanduser()
    if not path.exists():
        raise DumpNotFoundError(f"dump {str(path)!r} does not exist: re-run the backup task or fix dump_path")
    return path
