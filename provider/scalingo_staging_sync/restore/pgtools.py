"""Locate the PostgreSQL client tools (pg_restore, psql) and know their version.

Order: the ``pg_bin_dir`` argument, else env ``SCALINGO_STAGING_SYNC_PG_BIN``, else ``PATH``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from scalingo_staging_sync.restore.errors import DumpTooNewError, PgToolsError

PG_BIN_ENV = "SCALINGO_STAGING_SYNC_PG_BIN"
_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class PgTools:
    """The client tools of one PostgreSQL installation."""

    bin_dir: Path | None  # None: found on PATH
    version: int  # major version of pg_restore
    version_string: str  # e.g. "pg_restore (PostgreSQL) 16.14"

    def path(self, tool: str) -> str:
        if self.bin_dir is not None:
            candidate = self.bin_dir / tool
            if not candidate.exists():
                raise PgToolsError(f"{tool} not found in {self.bin_dir} (from pg_bin_dir / ${PG_BIN_ENV})")
            return str(candidate)
        found = shutil.which(tool)
        if not found:
            raise PgToolsError(f"{tool} not found on PATH; set ${PG_BIN_ENV} to a PostgreSQL bin directory")
        return found

    def describe(self) -> str:
        where = str(self.bin_dir) if self.bin_dir else "PATH"
        return f"{self.version_string} ({where})"


def tool_version(executable: str) -> tuple[int, str]:
    try:
        out = subprocess.run(
            [executable, "--version"], capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise PgToolsError(f"cannot run {executable} --version: {exc}") from exc
    text = out.stdout.strip()
    match = _VERSION_RE.search(text)
    if not match:
        raise PgToolsError(f"cannot parse the version of {executable}: {text!r}")
    return int(match.group(1)), text


def find_pg_tools(pg_bin_dir: str | os.PathLike | None = None) -> PgTools:
    """The client tools to use: ``pg_bin_dir``, else ``$SCALINGO_STAGING_SYNC_PG_BIN``, else ``PATH``."""
    chosen = pg_bin_dir or os.environ.get(PG_BIN_ENV) or None
    if chosen:
        bin_dir = Path(chosen)
        exe = bin_dir / "pg_restore"
        if not exe.exists():
            source = "pg_bin_dir" if pg_bin_dir else f"${PG_BIN_ENV}"
            raise PgToolsError(f"no pg_restore in {bin_dir} (from {source})")
        major, text = tool_version(str(exe))
        return PgTools(bin_dir=bin_dir, version=major, version_string=text)
    exe_path = shutil.which("pg_restore")
    if not exe_path:
        raise PgToolsError(
            f"pg_restore not found on PATH; install the PostgreSQL client tools or set ${PG_BIN_ENV}"
        )
    major, text = tool_version(exe_path)
    return PgTools(bin_dir=None, version=major, version_string=text)


def check_tools_for_dump(tools: PgTools, dump_major: int | None) -> None:
    """Refuse (before anything is touched) when pg_restore is older than the pg_dump that wrote the dump."""
    if dump_major is not None and tools.version < dump_major:
        raise DumpTooNewError(
            f"dump made by PostgreSQL {dump_major} needs pg_restore >= {dump_major}, "
            f"but {tools.describe()} is {tools.version}; set {PG_BIN_ENV} (or pg_bin_dir) to the bin "
            f"directory of PostgreSQL {dump_major} or newer client tools"
        )


def client_tools_versions(pg_bin_dir: str | os.PathLike | None = None) -> dict:
    """Find pg_restore and psql (same rules as :func:`find_pg_tools`) and read both versions:
    ``{"bin_dir", "pg_restore", "pg_restore_major", "psql", "psql_major"}``; :class:`PgToolsError`
    names the missing or unusable tool."""
    tools = find_pg_tools(pg_bin_dir)
    psql_major, psql_text = tool_version(tools.path("psql"))
    return {
        "bin_dir": str(tools.bin_dir) if tools.bin_dir else None,
        "pg_restore": tools.version_string,
        "pg_restore_major": tools.version,
        "psql": psql_text,
        "psql_major": psql_major,
    }
