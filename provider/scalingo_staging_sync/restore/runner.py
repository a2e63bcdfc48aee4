"""Run pg_restore (by section, with a filtered ``-L`` list) and stream one table's COPY data.

pg_restore counts every failed statement as an error and exits 1 at the end. Errors known to be
harmless for a staging copy (missing roles, comments on extensions, ``schema "public" already
exists``, ...) are reported as warnings; anything else raises :class:`RestoreError` naming the
failing TOC entry.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psycopg.conninfo import make_conninfo

from scalingo_staging_sync.pgconn import PgTarget
from scalingo_staging_sync.pgerrors import redact_server_text
from scalingo_staging_sync.restore.copytext import CopyTextReader, python_encoding
from scalingo_staging_sync.restore.dump import ForeignKey, read_dump_header
from scalingo_staging_sync.restore.errors import DumpFormatError, RestoreError
from scalingo_staging_sync.restore.names import qualified_key, table_names
from scalingo_staging_sync.restore.pgtools import PgTools, check_tools_for_dump, find_pg_tools
from scalingo_staging_sync.restore.progress import copy_progress
from scalingo_staging_sync.restore.toc import (
    FOREIGN_TABLE_DATA,
    TocEntry,
    never_restored,
    read_toc,
    resolve_schemas,
    section_args,
    write_list_file,
)
from scalingo_staging_sync.tablename import TableName

if TYPE_CHECKING:  # the loader is imported when the data section runs
    from scalingo_staging_sync.restore.loader import CopyFilterFactory

log = logging.getLogger(__name__)

SECTIONS = ("pre-data", "data", "post-data", "pre-data+data", "all")

# Errors pg_restore counts but that do not matter for a staging copy.
HARMLESS_PATTERNS = [
    (re.compile(r'role "[^"]*" does not exist'), "missing role"),
    (re.compile(r'schema "public" already exists'), "schema public already exists"),
    (re.compile(r"must be owner of (extension|schema public)"), "not owner of an extension / schema public"),
    (re.compile(r'extension "[^"]*" already exists'), "extension already exists"),
    (re.compile(r"unrecognized configuration parameter \"[^\"]*\""), "setting unknown to this server"),
    (re.compile(r'language "plpgsql" already exists'), "plpgsql already exists"),
    (re.compile(r"permission denied to (set parameter|change default privileges)"), "setting not allowed"),
]
POSTGIS_EXTENSION_TABLES = {
    TableName("public", "spatial_ref_sys"),
    TableName("topology", "topology"),
    TableName("topology", "layer"),
}

ProgressCallback = Callable[[int, int, str | None], None]


@dataclass
class RestoreIssue:
    """One error pg_restore reported, with the TOC entry it belongs to."""

    message: str
    toc_entry: str | None = None
    command: str | None = None
    harmless: str | None = None  # reason when recognised as harmless

    def describe(self) -> str:
        where = f" [TOC entry {self.toc_entry}]" if self.toc_entry else ""
        return f"{self.message}{where}"

    def describe_redacted(self) -> str:
        """:meth:`describe` with the server's text cut of anything that can quote a row or a value
        (``pgerrors.redact_server_text``; the TOC entry is appended after, so a value that ends the
        message is still recognised)."""
        where = f" [TOC entry {self.toc_entry}]" if self.toc_entry else ""
        return f"{redact_server_text(self.message)}{where}"


@dataclass
class RestoreResult:
    section: str
    database: str
    returncode: int
    entries_total: int
    entries_done: int
    duration_s: float
    warnings: list[str] = field(default_factory=list)
    errors: list[RestoreIssue] = field(default_factory=list)
    excluded_data: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # entries deliberately not restored, with reasons
    tables: list[str] = field(default_factory=list)  # "schema.table" whose data this run loaded
    table_names: list[tuple[str, str]] = field(default_factory=list)  # the same as (schema, table)
    #: tables whose rows a copy filter masked on the worker (the stream masking engine)
    masked_on_worker: list[str] = field(default_factory=list)


def archive_fks(dump_path: str | os.PathLike, tools: PgTools, entries: list[TocEntry]) -> list[ForeignKey]:
    """The archive's FK constraints with the table each references (DDL parsed with pglast)."""
    from scalingo_staging_sync.inventory.build import archive_foreign_keys

    return [
        ForeignKey(
            entry=entry,
            table=(table.schema, table.name),
            name=fk.name,
            references=(fk.references.schema, fk.references.name),
        )
        for entry, fk, table in archive_foreign_keys(dump_path, tools, entries)
    ]


def default_jobs() -> int:
    return max(1, os.cpu_count() or 1)


# --------------------------------------------------------------------------------------------
# Selection of TOC entries
# --------------------------------------------------------------------------------------------


@dataclass
class Selection:
    kept: list[TocEntry]
    skipped: list[tuple[TocEntry, str]]
    excluded_data: list[str]
    loaded_tables: list[tuple[str, str]]


def select_entries(
    entries: list[TocEntry],
    *,
    exclude_data: Iterable[str] = (),
    only_data: Iterable[str] | None = None,
    exclude_tables: Iterable[str] = (),
    fks: list[ForeignKey] = (),
    all_entries: list[TocEntry] | None = None,
    skip_dump_ids: Mapping[int, str] | Iterable[int] = (),
) -> Selection:
    """Filter a section's entries: leave out ``skip_dump_ids`` (the archive plan's excluded and dropped
    entries; a mapping gives each one's reason), drop TABLE DATA of excluded tables (``TableName``
    values, exact), keep only ``only_data`` tables' data when given, skip FK constraints that reference a
    table whose data is excluded (``exclude_tables``), skip the data of PostGIS's own tables when
    the archive creates the extension (the extension provides it), and never keep STATISTICS DATA
    (``pg_dump --statistics``: values of the original rows) or what :data:`~scalingo_staging_sync.restore.toc.NEVER_RESTORED` names (user
    mappings, subscriptions: another server's credentials) or the data of a foreign table
    (:data:`~scalingo_staging_sync.restore.toc.FOREIGN_TABLE_DATA`), plan or no plan."""
    hard_excluded = table_names(exclude_tables)
    excluded = hard_excluded + [t for t in table_names(exclude_data) if t not in hard_excluded]
    only = set(table_names(only_data)) if only_data is not None else None
    plan_skip = (
        dict(skip_dump_ids)
        if isinstance(skip_dump_ids, Mapping)
        else dict.fromkeys(skip_dump_ids, "left out by the archive plan")
    )
    everything = all_entries if all_entries is not None else entries
    has_postgis = any(e.desc == "EXTENSION" and e.tag.startswith("postgis") for e in everything)
    table_entries = {e.table_name for e in everything if e.desc == "TABLE"}
    foreign_tables = {e.table_name for e in everything if e.desc == "FOREIGN TABLE"}
    hard = set(hard_excluded)
    fk_skip = {
        fk.entry.dump_id: fk
        for fk in fks
        if TableName(*fk.references) in hard and TableName(*fk.table) not in hard
    }
    kept: list[TocEntry] = []
    skipped: list[tuple[TocEntry, str]] = []
    excluded_names: list[str] = []
    loaded: list[tuple[str, str]] = []
    for entry in entries:
        if entry.dump_id in plan_skip:
            skipped.append((entry, plan_skip[entry.dump_id]))
            if entry.desc == "TABLE DATA":
                excluded_names.append(str(entry.table_name))
            continue
        if entry.desc == "STATISTICS DATA":
            # never restored, with or without an archive plan: the archive's statistics are computed
            # from the original rows (most common values, histogram bounds)
            skipped.append((entry, "statistics are never restored (they describe the original rows)"))
            continue
        reason = never_restored(entry)
        if reason is not None:
            skipped.append((entry, reason))
            continue
        if entry.desc == "TABLE DATA":
            table = entry.table_name
            if table in foreign_tables:  # pg_dump --include-foreign-data: never written back through it
                skipped.append((entry, FOREIGN_TABLE_DATA))
                continue
            if table in excluded:
                skipped.append((entry, "excluded table"))
                excluded_names.append(str(table))
                continue
            if only is not None and table not in only:
                skipped.append((entry, "not in only_data"))
                continue
            key = table
            if has_postgis and key in POSTGIS_EXTENSION_TABLES and key in table_entries:
                # A TABLE entry means a non-extension copy of PostGIS's table was dumped; its rows
                # come from the extension itself (PostGIS docs: do not restore spatial_ref_sys).
                skipped.append((entry, "data provided by the postgis extension"))
                continue
            loaded.append((table.schema, table.name))
        elif entry.dump_id in fk_skip:
            skipped.append((entry, f"FK to excluded table: {fk_skip[entry.dump_id].describe()}"))
            continue
        kept.append(entry)
    return Selection(kept=kept, skipped=skipped, excluded_data=excluded_names, loaded_tables=loaded)


def select_section(
    dump_path: str | os.PathLike,
    tools: PgTools,
    section: str,
    all_entries: list[TocEntry],
    **filters: Any,
) -> Selection:
    """:func:`select_entries` on the entries of one ``section`` of the archive (``pg_restore -l
    --section``; ``all``: ``all_entries``, the archive's whole TOC), their schemas resolved on the
    archive's SCHEMA entries. ``filters``: the other arguments of :func:`select_entries`."""
    if section == "all":
        section_entries = all_entries
    else:  # a section's listing has no SCHEMA entries: names resolved on the archive's
        schemas = [e.names.partition(" ")[2] for e in all_entries if e.desc == "SCHEMA"]
        section_entries = resolve_schemas(read_toc(dump_path, tools, section=section), extra_schemas=schemas)
    return select_entries(section_entries, all_entries=all_entries, **filters)


LARGE_OBJECT_POLICIES = ("drop", "keep")


def unplanned_skips(
    entries: Iterable[TocEntry], *, large_objects: str = "drop", materialized_view_data: bool = False
) -> dict[int, str]:
    """``{dump_id: reason}`` of what a restore *without* an archive plan leaves out, safe by default as
    the plan is: large objects (``BLOB`` / ``BLOBS`` / ``BLOB METADATA`` ..., with the comments, ACLs
    and security labels on them) unless ``large_objects="keep"``, and ``MATERIALIZED VIEW DATA`` (the
    archive's ``REFRESH``, computed from the tables as restored) unless ``materialized_view_data``.
    (STATISTICS DATA is never restored: :func:`select_entries`.)"""
    from scalingo_staging_sync.inventory.build import LO_DEPENDENT_DESCS
    from scalingo_staging_sync.inventory.model import (
        LARGE_OBJECT_DESCS,
        LARGE_OBJECT_TAG_PREFIX,
        MATVIEW_DATA,
    )

    if large_objects not in LARGE_OBJECT_POLICIES:
        raise ValueError(
            f"large_objects={large_objects!r}: use 'drop' (default: large objects are not restored) or "
            "'keep' (restored as they are; scan their content with the PII scan's large_objects=True)"
        )
    skip: dict[int, str] = {}
    for entry in entries:
        is_lo = entry.desc in LARGE_OBJECT_DESCS or (
            entry.desc in LO_DEPENDENT_DESCS and entry.tag.startswith(LARGE_OBJECT_TAG_PREFIX)
        )
        if is_lo and large_objects != "keep":
            skip[entry.dump_id] = (
                "no archive plan: large objects are not restored (their content is never masked); pass "
                "large_objects='keep' to restore them, then scan them (PII scan large_objects=True)"
            )
        elif entry.desc == MATVIEW_DATA and not materialized_view_data:
            skip[entry.dump_id] = (
                "no archive plan: materialized view data is not restored (it would be computed from the "
                "tables before masking); refresh the view after masking "
                "(anonymize.postload.refresh_materialized_views), or pass materialized_view_data=True"
            )
    return skip


# --------------------------------------------------------------------------------------------
# stderr parsing
# --------------------------------------------------------------------------------------------

_TOC_CTX_RE = re.compile(r"^pg_restore: from TOC entry (?P<entry>.+)$")
_ERROR_RE = re.compile(r"^pg_restore: error: (?P<msg>.*)$")
_FINISHED_RE = re.compile(r"^pg_restore: finished item (?P<id>\d+) (?P<what>.*)$")
_ITEM_RE = re.compile(r"^pg_restore: (?:processing|launching) item (?P<id>\d+) (?P<what>.*)$")
_PROCESSING_DATA_RE = re.compile(r'^pg_restore: processing data for table "(?P<table>.*)"$')
_SERIAL_RE = re.compile(r"^pg_restore: (?:creating|executing|processing data for table) (?P<what>.*)$")


class StderrParser:
    """Turns ``pg_restore -v`` stderr into progress (entries done / total, current item) and issues.

    An entry counts as done when pg_restore reports ``finished item N`` (parallel phase) or moves on
    from ``processing item N`` (serial phases); only the entries of our ``-L`` list are counted.
    """

    def __init__(self, total: int, progress: ProgressCallback | None = None, ids: Iterable[int] = ()) -> None:
        self.total = total
        self.progress = progress
        self.ids = set(ids)
        self.done_ids: set[int] = set()
        self.current: str | None = None
        self.issues: list[RestoreIssue] = []
        self.lines: list[str] = []
        self._ctx: str | None = None
        self._parallel = False
        self._in_command = False
        self._serial_item: int | None = None
        self._item_lines = False  # -j 1 prints no "processing item N" lines: count object lines
        self._anonymous_done = 0

    @property
    def done(self) -> int:
        return min(self.total, len(self.done_ids) + self._anonymous_done)

    def _finish(self, dump_id: int | None) -> None:
        if dump_id is not None and (not self.ids or dump_id in self.ids) and dump_id not in self.done_ids:
            self.done_ids.add(dump_id)
            self._report(force=False)

    def feed(self, line: str) -> None:
        line = line.rstrip("\n")
        self.lines.append(line)
        if len(self.lines) > 5000:
            del self.lines[:1000]
        if m := _TOC_CTX_RE.match(line):
            self._ctx = m.group("entry")
            self._in_command = False
            return
        if m := _ERROR_RE.match(line):
            msg = m.group("msg")
            issue = RestoreIssue(message=msg, toc_entry=self._ctx)
            for pattern, reason in HARMLESS_PATTERNS:
                if pattern.search(msg):
                    issue.harmless = reason
                    break
            self.issues.append(issue)
            self._in_command = False
            return
        if line.startswith("Command was: ") and self.issues:
            self.issues[-1].command = line[len("Command was: ") :]
            self._in_command = True
            return
        if not line.startswith("pg_restore:"):
            if self._in_command and self.issues and self.issues[-1].command is not None:
                if len(self.issues[-1].command) < 500:
                    self.issues[-1].command += "\n" + line
            return
        self._in_command = False
        if line.startswith("pg_restore: entering main parallel loop"):
            self._finish(self._serial_item)
            self._serial_item = None
            self._parallel = True
        elif line.startswith("pg_restore: finished main parallel loop"):
            self._parallel = False
        elif m := _FINISHED_RE.match(line):
            self._finish(int(m.group("id")))
        elif m := _ITEM_RE.match(line):
            self._item_lines = True
            dump_id = int(m.group("id"))
            if not self.ids or dump_id in self.ids:
                self.current = m.group("what")
            if not self._parallel and not line.startswith("pg_restore: launching"):
                self._finish(self._serial_item)
                self._serial_item = dump_id
        elif m := _SERIAL_RE.match(line):
            data = _PROCESSING_DATA_RE.match(line)
            self.current = f"TABLE DATA {data.group('table')}" if data else m.group("what")
            if not self._item_lines:
                self._anonymous_done += 1
                self._report(force=False)

    def close(self) -> None:
        self._finish(self._serial_item)
        self._serial_item = None

    def _report(self, force: bool) -> None:
        if self.progress is None:
            return
        self.progress(min(self.done, self.total), self.total, self.current)

    def fatal(self) -> list[RestoreIssue]:
        return [
            i for i in self.issues if not i.harmless and not i.message.startswith("errors ignored on restore")
        ]


def log_progress(prefix: str = "pg_restore", every_s: float = 5.0) -> ProgressCallback:
    """A progress callback logging ``done/total`` and the current item at most every ``every_s``."""
    state = {"t": 0.0}

    def callback(done: int, total: int, current: str | None) -> None:
        now = time.monotonic()
        if now - state["t"] >= every_s or done >= total:
            state["t"] = now
            log.info("%s: %d/%d TOC entries done; current: %s", prefix, done, total, current or "-")

    return callback


# --------------------------------------------------------------------------------------------
# pg_restore
# --------------------------------------------------------------------------------------------


def pg_restore_base_args(tools: PgTools) -> list[str]:
    args = [tools.path("pg_restore"), "--no-owner", "--no-privileges", "--no-comments"]
    if tools.version >= 11:
        args += ["--no-publications", "--no-subscriptions", "--no-security-labels", "--no-tablespaces"]
    return args


def _refuse_loaded_tables(target: PgTarget, tables: list[tuple[str, str]]) -> None:
    """Refuse a data section whose tables already hold rows: it would replace them with the archive's."""
    from psycopg import sql

    holding: list[str] = []
    with target.connect(autocommit=True) as conn:
        for start in range(0, len(tables), 200):
            batch = tables[start : start + 200]
            # an extension's own configuration table may hold the rows its script inserted
            query = sql.SQL(" UNION ALL ").join(
                sql.SQL(
                    "SELECT {i} WHERE EXISTS (SELECT 1 FROM ONLY {t}) AND NOT EXISTS (SELECT 1 FROM"
                    " pg_depend WHERE classid = 'pg_class'::regclass AND objid = {n}::regclass AND deptype = 'e')"
                ).format(
                    i=sql.Literal(i),
                    t=sql.Identifier(schema, name),
                    n=sql.Literal(sql.Identifier(schema, name).as_string(conn)),
                )
                for i, (schema, name) in enumerate(batch, start)
            )
            holding += [qualified_key(*tables[i]) for (i,) in conn.execute(query).fetchall()]
    if holding:
        shown = ", ".join(holding[:10]) + (f" and {len(holding) - 10} more" if len(holding) > 10 else "")
        raise RestoreError(
            f"the data section would load tables that already hold rows in {target.describe()}: {shown}. "
            "Their rows would be replaced by the archive's: a table already masked on load (e.g. by "
            "AnonymizeTableOperator given a dump) would hold its original values again. Leave them out "
            "(exclude_data=[...]), or restore the data section right after a fresh pre-data section."
        )


def run_pg_restore(
    dump_path: str | os.PathLike,
    target: PgTarget,
    *,
    section: str,
    jobs: int | None = None,
    exclude_data: Iterable[str] = (),
    only_data: Iterable[str] | None = None,
    tools: PgTools | None = None,
    clean: bool = False,
    progress: ProgressCallback | None = None,
    exclude_tables: Iterable[str] = (),
    entries: list[TocEntry] | None = None,
    fks: list[ForeignKey] | None = None,
    skip_dump_ids: Mapping[int, str] | Iterable[int] = (),
    freeze: bool = True,
    copy_filter: CopyFilterFactory | None = None,
    require_empty: bool = False,
) -> RestoreResult:
    """Restore one section of an archive into ``target`` with a filtered ``-L`` list.

    ``exclude_data`` / ``only_data``: table names (``schema.table`` or ``table`` = public, exact)
    whose TABLE DATA entries are dropped / kept. ``exclude_tables``: like ``exclude_data`` plus the
    FK constraints that reference those tables are skipped (and reported), so excluding a table
    other tables reference never breaks post-data. ``skip_dump_ids``: TOC entries left out whatever the
    section (the archive plan's excluded data, statistics, large objects, matview data; see
    ``inventory.ArchivePlan.skip_dump_ids``). ``freeze``: in the ``data`` section, each table's rows
    are loaded by :func:`scalingo_staging_sync.restore.loader.load_table_data` (``COPY ... FREEZE`` in
    the transaction that truncates the table, ``jobs`` tables at once) and pg_restore loads the rest
    of the section (sequence values, large objects); ``False``: pg_restore loads everything.
    ``require_empty``: in the ``data`` section, refuse (before loading anything) when a table it would
    load already holds rows (a table masked on load by an earlier step would get the archive's rows
    again). Raises :class:`RestoreError` on real errors.
    """
    if section not in SECTIONS:
        raise ValueError(f"unknown section {section!r}: use one of {', '.join(SECTIONS)}")
    started = time.monotonic()
    dump_path = Path(dump_path)
    tools = tools or find_pg_tools()
    header = read_dump_header(dump_path)
    check_tools_for_dump(tools, header.dump_major)
    if not header.is_archive:
        raise DumpFormatError(
            f"{dump_path} is a plain SQL dump: pg_restore cannot read it and sections do not apply; "
            "restore it with restore.plain.run_sql_script (psql, ON_ERROR_STOP)"
        )
    all_entries = entries if entries is not None else read_toc(dump_path, tools)
    exclude_tables = list(exclude_tables)
    if fks is None:
        needs_fks = exclude_tables and section in ("post-data", "all")
        fks = archive_fks(dump_path, tools, all_entries) if needs_fks else []
    selection = select_section(
        dump_path,
        tools,
        section,
        all_entries,
        exclude_data=exclude_data,
        only_data=only_data,
        exclude_tables=exclude_tables,
        fks=fks,
        skip_dump_ids=skip_dump_ids,
    )
    if require_empty and section == "data":
        _refuse_loaded_tables(target, selection.loaded_tables)
    for entry, reason in selection.skipped:
        if reason.startswith("FK to excluded"):
            log.warning("not restoring %s (%s)", entry.raw, reason)
        else:
            log.info("not restoring %s (%s)", entry.raw, reason)
    jobs = jobs or default_jobs()
    if header.format == "tar" and jobs > 1:
        log.info("tar-format archive: pg_restore cannot run parallel jobs on it; using 1 job")
        jobs = 1
    # the data section's tables go through the loader (COPY FREEZE); pg_restore keeps the rest
    table_data = [e for e in selection.kept if e.desc == "TABLE DATA"] if freeze and section == "data" else []
    by_pg_restore = [e for e in selection.kept if e.desc != "TABLE DATA"] if table_data else selection.kept
    listfile = write_list_file(by_pg_restore, selection.skipped)
    cmd = pg_restore_base_args(tools) + [
        "--verbose",
        f"--jobs={jobs}",
        *section_args(section),
        "-L",
        str(listfile),
    ]
    if clean:
        cmd += ["--clean", "--if-exists"]
    cmd += ["-d", make_conninfo(dbname=target.dbname), str(dump_path)]
    parser = StderrParser(
        total=len(selection.kept), progress=progress, ids=[e.dump_id for e in by_pg_restore]
    )
    log.info(
        "pg_restore section %s of %s into %s (%d TOC entries, %d jobs, %s)",
        section, dump_path.name, target.describe(), len(selection.kept), jobs, tools.describe(),
    )  # fmt: skip
    # rows and bytes per table in the log while data loads (pg_stat_progress_copy, separate connection)
    monitor = copy_progress(target, enabled=section in ("data", "pre-data+data", "all")).start()
    loaded: list = []
    returncode = 0
    try:
        if by_pg_restore or not table_data:
            returncode = _pg_restore_process(cmd, target, parser)
        # pg_restore's own part went through (exit 0, or only harmless errors): the tables now
        if table_data and (returncode == 0 or (parser.issues and not parser.fatal())):
            loaded = _load_tables(dump_path, target, table_data, tools, jobs, parser, progress, copy_filter)
    finally:
        monitor.stop()
        listfile.unlink(missing_ok=True)
    duration = time.monotonic() - started
    fatal = parser.fatal()
    warnings = [f"{i.describe()} (harmless: {i.harmless})" for i in parser.issues if i.harmless]
    for warning in warnings:
        log.warning("pg_restore: %s", warning)
    if returncode != 0 and (fatal or not parser.issues):
        # the server's text can quote rows (DETAIL: Failing row contains ..., COPY data lines, a value
        # at the end of a message) and the failed command can hold data: neither reaches the error
        first = fatal[0] if fatal else None
        detail = first.describe_redacted() if first else redact_server_text("\n".join(parser.lines[-15:]))
        more = f" (and {len(fatal) - 1} more errors)" if len(fatal) > 1 else ""
        raise RestoreError(
            f"pg_restore failed (exit status {returncode}) restoring section {section} into "
            f"{target.describe()}: {detail}{more}"
        )
    if returncode == 0 and fatal:  # should not happen, but never hide an error
        raise RestoreError(f"pg_restore reported errors: {fatal[0].describe_redacted()}")
    return RestoreResult(
        section=section,
        database=target.dbname,
        returncode=returncode,
        entries_total=len(selection.kept),
        entries_done=parser.done + len(loaded),
        duration_s=round(duration, 3),
        warnings=warnings,
        errors=parser.issues,
        excluded_data=selection.excluded_data,
        skipped=[f"{e.raw} ({reason})" for e, reason in selection.skipped],
        tables=[qualified_key(*t) for t in selection.loaded_tables],
        table_names=selection.loaded_tables,
        masked_on_worker=[str(t.table) for t in loaded if t.filtered],
    )


def _pg_restore_process(cmd: list[str], target: PgTarget, parser: StderrParser) -> int:
    """Run ``cmd`` (pg_restore), feeding its stderr to ``parser``; its exit status."""
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=target.libpq_env(),
        text=True,
        errors="replace",
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            parser.feed(line)
        returncode = proc.wait()
        parser.close()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return returncode


def _load_tables(
    dump_path: Path,
    target: PgTarget,
    entries: list[TocEntry],
    tools: PgTools,
    jobs: int,
    parser: StderrParser,
    progress: ProgressCallback | None,
    copy_filter: CopyFilterFactory | None = None,
) -> list:
    """The data section's tables through :mod:`~scalingo_staging_sync.restore.loader`; progress
    counts them after pg_restore's own entries."""
    from scalingo_staging_sync.restore.loader import load_table_data

    total = parser.total
    base = parser.done

    def report(table, done: int, _count: int) -> None:
        log.info(
            "loaded %s: %d rows, %.1f MB in %.1f s%s%s",
            table.table, table.rows, table.bytes / 1e6, table.duration_s, " (COPY FREEZE)" if table.frozen else "",
            ", masked on the worker" if table.filtered else "",
        )  # fmt: skip
        if progress is not None:
            progress(base + done, total, str(table.table))

    log.info("loading %d tables' data, %d at a time, each with COPY FREEZE where it can", len(entries), jobs)
    return load_table_data(
        dump_path, target, entries, tools=tools, jobs=jobs, progress=report, copy_filter=copy_filter
    )


# --------------------------------------------------------------------------------------------
# One table's COPY stream
# --------------------------------------------------------------------------------------------


def find_table_data_entry(entries: list[TocEntry], table: str | TableName) -> TocEntry:
    wanted = TableName.parse(table)
    for entry in entries:
        if entry.desc == "TABLE DATA" and entry.table_name == wanted:
            return entry
    raise RestoreError(f"the archive has no TABLE DATA entry for {wanted}")


def stream_table_copy(
    dump_path: str | os.PathLike,
    table: str,
    tools: PgTools | None = None,
    entries: list[TocEntry] | None = None,
) -> Iterator[str]:
    """Yield a table's COPY block from the archive: first the ``COPY schema.table (cols) FROM stdin;``
    header, then one COPY-text row per item (no trailing newline; the ``\\.`` terminator is not
    yielded), decoded in the archive's client encoding. Closing the generator early kills pg_restore."""
    tools = tools or find_pg_tools()
    entries = entries if entries is not None else read_toc(dump_path, tools)
    entry = find_table_data_entry(entries, table)
    with CopyTextReader(dump_path, [entry], tools) as reader:
        yield reader.next_copy_line(table)
        encoding = python_encoding(reader.encoding or "UTF8")
        while True:
            raw = reader.out.readline()
            if not raw or not raw.endswith(b"\n"):
                raise reader.failure(table, "the COPY data ended before its terminator")
            if raw == b"\\.\n":
                break
            yield raw[:-1].decode(encoding, "surrogateescape")
        reader.finish(table)
