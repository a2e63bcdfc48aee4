"""Plain-SQL dumps: run through psql with ``ON_ERROR_STOP`` (no sections, no TOC filtering).

A plain script is one stream of statements: ``section``, ``exclude_tables``, ``exclude_data``,
``only_data`` and ``--jobs`` cannot apply to it. Make such dumps with ``--no-owner --no-privileges``
(the staging role usually cannot take the production owners' roles); better, use ``pg_dump -Fc``.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

from psycopg.conninfo import make_conninfo

from scalingo_staging_sync.pgconn import PgTarget
from scalingo_staging_sync.restore.dump import DumpHeader, read_dump_header
from scalingo_staging_sync.restore.errors import RestoreError
from scalingo_staging_sync.restore.pgtools import PgTools, find_pg_tools

log = logging.getLogger(__name__)


def run_sql_script(
    dump_path: str | os.PathLike,
    target: PgTarget,
    *,
    tools: PgTools | None = None,
    header: DumpHeader | None = None,
) -> dict:
    """Run a plain SQL dump with ``psql -X -v ON_ERROR_STOP=1 --single-transaction``; a failing
    statement stops the script, rolls it back and raises with psql's message (line number included)."""
    dump_path = Path(dump_path)
    tools = tools or find_pg_tools()
    header = header or read_dump_header(dump_path)
    started = time.monotonic()
    cmd = [
        tools.path("psql"),
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "--single-transaction",
        "-d",
        make_conninfo(dbname=target.dbname),
    ]
    log.info("running plain SQL dump %s with psql into %s", dump_path.name, target.describe())
    with open(os.devnull, "wb") as devnull:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=devnull, stderr=subprocess.PIPE, env=target.libpq_env()
        )
        assert proc.stdin is not None
        opener = gzip.open if header.compression == "gzip" else open
        try:
            with opener(dump_path, "rb") as src:
                shutil.copyfileobj(src, proc.stdin, 1024 * 1024)
            proc.stdin.close()
        except BrokenPipeError:
            pass
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        stderr = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
        rc = proc.wait()
    if rc != 0:
        raise RestoreError(
            f"psql stopped on the first error of plain SQL dump {dump_path.name} (exit status {rc}, "
            f"nothing committed): {stderr.strip()[-1500:]}"
        )
    return {
        "duration_s": round(time.monotonic() - started, 3),
        "warnings": [ln for ln in stderr.splitlines() if ln],
    }
