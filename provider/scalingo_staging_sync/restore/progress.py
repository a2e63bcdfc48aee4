"""Load progress: rows and bytes per table while a data load runs, read from ``pg_stat_progress_copy``.

pg_restore's own output says which TOC entry it is on, not how far a large table has got. While the
data section runs, :class:`CopyProgress` polls ``pg_stat_progress_copy`` (PostgreSQL 14+) on a
separate connection to the database being loaded, every few seconds, and logs one line per table
being copied (a short connection per poll, so the monitor holds no connection slot between polls)::

    load progress: public.invoice_line: 1234567 rows, 98.2 MiB, 41000 rows/s, 3.2 MiB/s

Rates are measured between two polls of the same COPY. ``bytes_total`` is only known when the server
reads a file; pg_restore streams COPY data (``FROM STDIN``), so the total is usually absent. The
monitor never fails the load: when it cannot connect, or the server is too old, it says so once and
stops.

Use it as a context manager around the subprocess that loads the data::

    with CopyProgress(target):
        run_pg_restore(dump, target, section="data")
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from scalingo_staging_sync.pgconn import PgTarget
from scalingo_staging_sync.tablename import TableName

log = logging.getLogger(__name__)

#: seconds between two polls; ``0`` turns the monitor off
INTERVAL_ENV = "SCALINGO_STAGING_SYNC_PROGRESS_INTERVAL"
DEFAULT_INTERVAL_S = 5.0

# One row per backend running COPY FROM into the database we are connected to. pg_class and
# pg_namespace are per-database catalogs: the monitor connects to the database being loaded.
PROGRESS_SQL = """
SELECT p.pid, p.relid::oid::bigint, n.nspname, c.relname,
       p.bytes_processed, p.bytes_total, p.tuples_processed
FROM pg_stat_progress_copy p
LEFT JOIN pg_class c ON c.oid = p.relid
LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE p.datid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND p.command = 'COPY FROM'
  AND p.pid <> pg_backend_pid()
ORDER BY n.nspname, c.relname, p.pid
"""


@dataclass(frozen=True)
class CopySample:
    """One table's COPY at one poll."""

    pid: int
    relid: int
    table: str  # canonical TableName form, or "table oid N" when the name cannot be read
    rows: int
    bytes: int
    bytes_total: int | None
    at: float  # time.monotonic()

    def to_json(self) -> dict[str, Any]:
        return {"table": self.table, "rows": self.rows, "bytes": self.bytes, "bytes_total": self.bytes_total}


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - unreachable


def interval_from_env(default: float = DEFAULT_INTERVAL_S) -> float:
    """``SCALINGO_STAGING_SYNC_PROGRESS_INTERVAL`` (seconds, ``0`` = off), or ``default``.

    A bad value is logged and replaced by ``default``: it must never stop a load that has begun.
    """
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value < 0:
        log.warning(
            "%s=%r is not a number of seconds >= 0: using %s s (set it to e.g. 5, or 0 to turn load "
            "progress off)",
            INTERVAL_ENV, raw, default,
        )  # fmt: skip
        return default
    return value


def read_copy_progress(conn) -> list[CopySample]:
    """The COPY FROM commands running now in ``conn``'s database (not counting ``conn`` itself)."""
    now = time.monotonic()
    out = []
    for pid, relid, schema, name, done_bytes, total_bytes, tuples in conn.execute(PROGRESS_SQL).fetchall():
        table = str(TableName(schema, name)) if schema and name else f"table oid {relid}"
        out.append(
            CopySample(
                pid=int(pid),
                relid=int(relid or 0),
                table=table,
                rows=int(tuples or 0),
                bytes=int(done_bytes or 0),
                bytes_total=int(total_bytes) if total_bytes else None,
                at=now,
            )
        )
    return out


def describe(sample: CopySample, previous: CopySample | None) -> str:
    """``public.track: 3503 rows, 1.2 MiB[ of 2.0 MiB (60.0%)][, 41000 rows/s, 3.2 MiB/s]``."""
    text = f"{sample.table}: {sample.rows} rows, {human_bytes(sample.bytes)}"
    if sample.bytes_total:
        text += f" of {human_bytes(sample.bytes_total)} ({100.0 * sample.bytes / sample.bytes_total:.1f}%)"
    if previous is not None and sample.at > previous.at:
        elapsed = sample.at - previous.at
        rows_rate = max(0, sample.rows - previous.rows) / elapsed
        bytes_rate = max(0, sample.bytes - previous.bytes) / elapsed
        text += f", {rows_rate:.0f} rows/s, {human_bytes(bytes_rate)}/s"
    return text


class CopyProgress:
    """Logs ``pg_stat_progress_copy`` for ``target``'s database every ``interval_s`` seconds, from a
    background thread with its own connection, while the ``with`` block runs.

    ``interval_s``: ``None`` reads ``SCALINGO_STAGING_SYNC_PROGRESS_INTERVAL`` (default 5 s); ``0``
    turns the monitor off. ``samples`` keeps every sample taken (for tests and summaries).
    """

    def __init__(
        self,
        target: PgTarget,
        *,
        interval_s: float | None = None,
        logger: logging.Logger | None = None,
        prefix: str = "load progress",
    ) -> None:
        self.target = target
        self.interval_s = interval_from_env() if interval_s is None else float(interval_s)
        self.log = logger or log
        self.prefix = prefix
        self.samples: list[CopySample] = []
        self.polls = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: dict[tuple[int, int], CopySample] = {}

    # ------------------------------------------------------------------ context manager
    def __enter__(self) -> CopyProgress:
        return self.start()

    def start(self) -> CopyProgress:
        """Start polling (idempotent); :meth:`stop` ends it. The ``with`` statement does both."""
        if self.interval_s > 0 and self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"copy-progress-{self.target.dbname}", daemon=True
            )
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(10.0, self.interval_s + 5))
            self._thread = None

    # ------------------------------------------------------------------ polling
    def poll(self, conn) -> list[CopySample]:
        """One poll: read, log one line per table, remember the samples for the next rates."""
        samples = read_copy_progress(conn)
        self.polls += 1
        current: dict[tuple[int, int], CopySample] = {}
        for sample in samples:
            key = (sample.pid, sample.relid)
            self.log.info("%s: %s", self.prefix, describe(sample, self._last.get(key)))
            current[key] = sample
        self._last = current
        self.samples.extend(samples)
        return samples

    def _run(self) -> None:
        # A short connection per poll, opened only when a poll is due: the monitor never holds a
        # connection slot that pg_restore's parallel jobs may need (Scalingo plans cap connections).
        warned = False
        while not self._stop.wait(self.interval_s):
            try:
                conn = self.target.connect(
                    autocommit=True,
                    connect_timeout=10,
                    application_name="scalingo-staging-sync progress",
                )
            except Exception as exc:  # noqa: BLE001 - progress is informative, never fatal
                self.error = f"cannot connect to {self.target.describe()}: {exc}"
                if not warned:
                    self.log.warning(
                        "%s: no reading (%s); trying again at the next poll", self.prefix, self.error
                    )
                    warned = True
                continue
            try:
                if self.polls == 0:
                    version = int(conn.execute("SHOW server_version_num").fetchone()[0])
                    if version < 140000:
                        self.error = f"server version {version} has no pg_stat_progress_copy (PostgreSQL 14+)"
                        self.log.info("%s: off (%s)", self.prefix, self.error)
                        return
                conn.execute("SET statement_timeout = '10s'")
                self.poll(conn)
            except Exception as exc:  # noqa: BLE001 - progress is informative, never fatal
                if self._stop.is_set():
                    return
                self.error = str(exc)
                if not warned:
                    self.log.warning("%s: no reading (%s); trying again at the next poll", self.prefix, exc)
                    warned = True
            finally:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001
                    pass


def copy_progress(target: PgTarget, *, enabled: bool = True, **kwargs: Any) -> CopyProgress:
    """A :class:`CopyProgress` for ``target``, or one that does nothing when ``enabled`` is false."""
    if not enabled:
        kwargs["interval_s"] = 0
    return CopyProgress(target, **kwargs)
