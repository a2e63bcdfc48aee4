"""Load the archive's table data with ``COPY ... FREEZE``: each table in the transaction that truncates it.

``pg_restore --section=data`` sends each table's rows with a plain ``COPY``: every row is written
not yet known to be committed, so the first statement that reads the table afterwards (the index
builds of post-data) sets a hint bit on each row and writes every page a second time, and autovacuum
then comes back to scan each table to mark its pages all-visible. A table truncated (or created) in
the transaction that loads it can take its rows already frozen: ``COPY ... WITH (FREEZE)``. This
module does that for every ``TABLE DATA`` entry:

* one ``pg_restore -a -L <that entry> -f -`` per table streams the archive's COPY text (pg_restore
  still reads and decompresses the archive; nothing here parses a dump format);
* in one transaction on ``target``: ``TRUNCATE ONLY`` the table, ``COPY <table> (<columns>) FROM
  STDIN WITH (FREEZE)``, the COPY text passed through in blocks, ``COMMIT`` only after pg_restore
  exited 0 and the stream ended with its ``\\.`` terminator. Anything else rolls the table back to
  empty and raises :class:`RestoreError`, which names the table and quotes no row;
* ``jobs`` tables at once, in the archive's order (pg_dump writes table data largest first).

The ``COPY`` statement is built here with :class:`psycopg.sql.Identifier` from the TOC entry's
names and the column list of the archive's ``COPY`` line, never executed as read from the archive.
Masking triggers fire exactly as under pg_restore (``FREEZE`` changes how rows are stored, not
which rows or values): the sessions carry ``target``'s options, the masking key among them.

``FREEZE`` is only used on an ordinary table loaded under its own name; a dump made with
``--load-via-partition-root`` (rows sent to the partitioned root) and a table that cannot be
truncated are loaded with a plain ``COPY``, as pg_restore would.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from psycopg import sql

from scalingo_staging_sync.pgconn import PgTarget, turn_off_timeouts
from scalingo_staging_sync.pgerrors import describe_pg_error, masked_value_fix, withhold_quoted
from scalingo_staging_sync.restore.copytext import BLOCK, CopyTextReader, parse_copy_line
from scalingo_staging_sync.restore.errors import RestoreError
from scalingo_staging_sync.restore.pgtools import PgTools
from scalingo_staging_sync.restore.toc import TocEntry
from scalingo_staging_sync.tablename import TableName

log = logging.getLogger(__name__)

#: how long the TRUNCATE that allows FREEZE waits for a lock before the table loads without it
TRUNCATE_LOCK_TIMEOUT_MS = 5000
#: a table whose data takes this many bytes in the archive or more is loaded alone; smaller ones
#: are loaded together, up to this many bytes or :data:`BATCH_TABLES` tables per pg_restore
SMALL_TABLE = 8 << 20
BATCH_TABLES = 64
_TERMINATOR = b"\n\\.\n"


class CopyFilter(Protocol):
    """Rewrites a table's COPY text on its way in (the stream masking engine): the same lines out,
    rewritten, in blocks of whole lines."""

    def feed(self, data: bytes) -> Iterable[bytes]:
        """Take the next bytes of COPY text (any cut); the rewritten text ready so far."""
        ...

    def finish(self) -> Iterable[bytes]:
        """The rest of the rewritten text, once the table's data has ended."""
        ...

    def before_commit(self, conn: Any) -> None:
        """Called in the table's load transaction once its rows are in, just before it commits."""
        ...

    def close(self) -> None: ...


#: ``copy_filter(conn, table, columns)``: called in the table's load transaction before its rows;
#: a :class:`CopyFilter` for this table, or None to load its COPY text as it is
CopyFilterFactory = Callable[[Any, TableName, list[str]], "CopyFilter | None"]


@dataclass(frozen=True)
class LoadedTable:
    """One table's data, loaded: ``frozen`` is whether its rows went in with ``COPY ... FREEZE``."""

    table: TableName
    rows: int
    bytes: int
    frozen: bool
    duration_s: float
    #: its rows went through a copy filter on the worker (the stream masking engine)
    filtered: bool = False


class _Stopped(Exception):
    """Another table failed: this one stops and rolls back."""


def plan_units(entries: list[TocEntry], sizes: dict[int, int]) -> list[list[TocEntry]]:
    """The tables in the order to load them, grouped into units that one pg_restore and one
    connection load one after the other: largest first (as pg_restore's parallel jobs), a table of
    :data:`SMALL_TABLE` bytes or more alone, smaller ones together up to that size or
    :data:`BATCH_TABLES` tables, in the archive's order within a unit (a tar archive is read
    forwards only). Without sizes (an archive written to a pipe): one table per unit, in
    the archive's order."""
    if not sizes:
        return [[e] for e in entries]
    position = {id(e): i for i, e in enumerate(entries)}
    ordered = sorted(entries, key=lambda e: -sizes.get(e.dump_id, 0))
    units: list[list[TocEntry]] = []
    batch: list[TocEntry] = []
    batch_bytes = 0
    for entry in ordered:
        size = sizes.get(entry.dump_id, 0)
        if size >= SMALL_TABLE:
            units.append([entry])
            continue
        batch.append(entry)
        batch_bytes += size
        if batch_bytes >= SMALL_TABLE or len(batch) >= BATCH_TABLES:
            units.append(batch)
            batch, batch_bytes = [], 0
    if batch:
        units.append(batch)
    # within a unit, the archive's order: a tar archive cannot be read backwards
    return [sorted(unit, key=lambda e: position[id(e)]) for unit in units]


def load_table_data(
    dump_path: str | os.PathLike,
    target: PgTarget,
    entries: Iterable[TocEntry],
    *,
    tools: PgTools,
    jobs: int = 1,
    freeze: bool = True,
    progress: Callable[[LoadedTable, int, int], None] | None = None,
    copy_filter: CopyFilterFactory | None = None,
) -> list[LoadedTable]:
    """Load the ``TABLE DATA`` ``entries`` of ``dump_path`` into ``target``, ``jobs`` units at a time
    (:func:`plan_units`).

    Each table is loaded and committed on its own; the first failure stops the units not yet
    started, rolls back the tables in flight and is raised (the tables committed before it stay
    loaded, as with pg_restore). ``progress(loaded, done, total)`` is called after each table.
    ``copy_filter``: see :data:`CopyFilterFactory` (only for a table loaded under its own name).
    """
    from scalingo_staging_sync.restore.dump import data_sizes

    todo = [e for e in entries if e.desc == "TABLE DATA"]
    if not todo:
        return []
    try:
        sizes = data_sizes(dump_path)
    except (OSError, ValueError, RestoreError) as exc:  # sizes only order the work
        log.info("the archive's data sizes cannot be read (%s): tables load in the archive's order", exc)
        sizes = {}
    units = plan_units(todo, sizes)
    stop = threading.Event()
    done: list[LoadedTable] = []
    lock = threading.Lock()

    def report(loaded: LoadedTable) -> None:
        with lock:
            done.append(loaded)
            count = len(done)
        if progress is not None:
            progress(loaded, count, len(todo))

    def one(unit: list[TocEntry]) -> None:
        if stop.is_set():
            return
        try:
            _load_unit(
                dump_path, target, unit, tools=tools, freeze=freeze, stop=stop, report=report,
                copy_filter=copy_filter,
            )  # fmt: skip
        except _Stopped:
            return
        except BaseException:
            stop.set()
            raise

    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(units))), thread_name_prefix="sss-load") as pool:
        futures = [pool.submit(one, unit) for unit in units]
        errors = [f.exception() for f in futures]
    first = next((e for e in errors if e is not None), None)
    if first is not None:
        raise first
    return done


def _load_unit(
    dump_path: str | os.PathLike,
    target: PgTarget,
    unit: list[TocEntry],
    *,
    tools: PgTools,
    freeze: bool,
    stop: threading.Event,
    report: Callable[[LoadedTable], None],
    copy_filter: CopyFilterFactory | None = None,
) -> None:
    """One pg_restore for the ``unit``'s tables (its ``-L`` list in the unit's order, which is the
    order it writes them in) and one connection; each table in its own transaction."""
    import psycopg

    with CopyTextReader(dump_path, unit, tools) as reader, target.connect(autocommit=False) as conn:
        conn.execute("SET row_security TO off")
        turn_off_timeouts(conn)  # as pg_restore does: the role's own would cancel a large table's COPY
        encoding = None
        for index, entry in enumerate(unit):
            table = entry.table_name
            last = index == len(unit) - 1
            started = time.monotonic()
            line = reader.next_copy_line(table)
            if reader.encoding is not None and reader.encoding != encoding:
                encoding = reader.encoding
                conn.execute(sql.SQL("SET client_encoding TO {}").format(sql.Literal(encoding)))
                conn.commit()
            try:
                copy_table, columns = parse_copy_line(line)
            except ValueError as exc:
                raise RestoreError(
                    f"the archive's COPY statement for {table} cannot be read: {exc}"
                ) from None
            filt = None
            try:
                if copy_filter is not None and copy_table == table:
                    filt = copy_filter(conn, table, columns)
                rows, nbytes, frozen = _copy_block(
                    conn, reader.out, entry, table, copy_table, columns, freeze=freeze, stop=stop,
                    failure=lambda what, t=table: reader.failure(t, what), filt=filt,
                )  # fmt: skip
                if last:  # the unit's last table: pg_restore's exit status before its commit
                    reader.finish(table)
                if filt is not None:
                    filt.before_commit(conn)
                conn.commit()
            except psycopg.Error as exc:
                conn.rollback()
                raise RestoreError(
                    f"loading the data of {table} (TOC entry {entry.dump_id}) failed: {_describe_copy_error(exc)}"
                ) from None
            except BaseException:
                conn.rollback()
                raise
            finally:
                if filt is not None:
                    filt.close()
            duration = round(time.monotonic() - started, 3)
            report(LoadedTable(table, rows, nbytes, frozen, duration, filtered=filt is not None))


def _copy_block(
    conn,
    out,
    entry: TocEntry,
    table: TableName,
    copy_table: TableName,
    columns: list[str],
    *,
    freeze: bool,
    stop: threading.Event,
    failure: Callable[[str], RestoreError],
    filt: CopyFilter | None = None,
) -> tuple[int, int, bool]:
    """One table's COPY data from ``out`` (after its COPY line, up to and including its ``\\.``
    terminator) into ``copy_table`` in the open transaction: ``(rows, bytes, frozen)``; through
    ``filt`` in blocks of whole lines when given."""
    stmt = sql.SQL("COPY {} {}FROM STDIN").format(
        sql.Identifier(copy_table.schema, copy_table.name),
        sql.SQL("({}) ").format(sql.SQL(", ").join(map(sql.Identifier, columns))) if columns else sql.SQL(""),
    )
    # FREEZE needs the table truncated in this transaction, and only an ordinary table loaded under
    # its own name can be (not a partitioned root that --load-via-partition-root sends rows to)
    frozen = freeze and copy_table == table and _truncate_for_freeze(conn, copy_table)
    rows = nbytes = 0
    with conn.cursor() as cur, cur.copy(stmt + sql.SQL(" WITH (FREEZE)") if frozen else stmt) as copy:

        def write(data: bytes, last: bool) -> None:
            if filt is None:
                copy.write(data)
                return
            for block in filt.finish() if last else filt.feed(data):
                copy.write(block)

        # the terminator is the first line that is exactly "\.": a data line never starts with a
        # backslash followed by a dot (COPY text writes a backslash as two)
        tail = out.readline()  # the first data line, or the terminator of an empty table
        if not tail:
            raise failure("the COPY data ended before its terminator")
        if tail == b"\\.\n":
            return 0, 0, frozen
        while True:
            if stop.is_set():
                raise _Stopped
            chunk = out.read(BLOCK)
            if not chunk:
                raise failure("the COPY data ended before its terminator")
            buf = tail + chunk
            i = buf.find(_TERMINATOR)
            if i >= 0:
                data = buf[: i + 1]
                out.unread(buf[i + len(_TERMINATOR) :])  # the next table's lines
            else:
                keep = len(_TERMINATOR) - 1
                data, tail = buf[:-keep], buf[-keep:]
            if data:
                rows += data.count(b"\n")
                nbytes += len(data)
                write(data, last=False)
            if i >= 0:
                write(b"", last=True)
                return rows, nbytes, frozen


#: the COPY line of an error's context (the first line, or a later one below a trigger's: "PL/pgSQL
#: function ... line 3 at assignment")
_COPY_CONTEXT = re.compile(r"^COPY [^,]+, (?P<where>line \d+(?:, column [^:]+)?)", re.MULTILINE)


def _describe_copy_error(exc: BaseException) -> str:
    """:func:`describe_pg_error`, plus the server's message with any quoted value cut
    (``invalid input syntax for type integer: <value withheld>``) and where in the COPY data it
    happened (``line 12, column email``): never a row or a value."""
    text = describe_pg_error(exc)
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    if primary and primary not in text and str(getattr(exc, "sqlstate", "") or "").startswith("22"):
        # a data exception quotes the value it could not take, at the end or in the middle
        # (value "..." is out of range for type integer): every quoted part is withheld
        text += ": " + withhold_quoted(primary)
    context = getattr(diag, "context", None) if diag is not None else None
    if context and (m := _COPY_CONTEXT.search(context)):
        text += f" (COPY data {m.group('where')})"
    if fix := masked_value_fix(exc):
        text += f"; {fix}"
    return text


def _truncate_for_freeze(conn, table: TableName) -> bool:
    """``TRUNCATE ONLY`` an ordinary table in the open transaction, so COPY may freeze its rows.
    False (nothing changed) for another kind of relation, or when it cannot be truncated."""
    import psycopg

    kind = conn.execute(
        "SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s",
        (table.schema, table.name),
    ).fetchone()
    if not kind or kind[0] != "r":
        return False
    conn.execute("SAVEPOINT sss_truncate")
    try:
        # TRUNCATE waits for every reader of the table: a session left on a staging table (in-place
        # restores) costs the freeze, never the load
        conn.execute(
            sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{TRUNCATE_LOCK_TIMEOUT_MS}ms"))
        )
        conn.execute(sql.SQL("TRUNCATE ONLY {}").format(sql.Identifier(table.schema, table.name)))
    except psycopg.Error as exc:
        conn.execute("ROLLBACK TO SAVEPOINT sss_truncate")
        log.info("%s cannot be truncated (%s): loading it without COPY FREEZE", table, describe_pg_error(exc))
        return False
    conn.execute("RELEASE SAVEPOINT sss_truncate")
    conn.execute("SET LOCAL lock_timeout = 0")  # the session's (turn_off_timeouts), not the role's
    return True
