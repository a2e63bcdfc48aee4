"""``restore()``: one phase of a restore, end to end, failing closed.

Phases (``section``): ``pre-data`` (schema without indexes/constraints), ``data`` (TABLE DATA and
sequence values), ``post-data`` (indexes, constraints, FKs, triggers), or ``pre-data+data`` /
``all``. A section that includes pre-data starts a fresh restore: it prepares the target (scratch
database in swap mode, wipe in place). Later sections go into the same database. Before anything is
touched: client-tool version, archive readability (TOC + truncation check) and the extensions the
dump needs are checked. When a step fails, the restored data is removed again (scratch dropped, or
in-place wipe) and the error is raised.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from scalingo_staging_sync.pgconn import PgTarget
from scalingo_staging_sync.restore import dump as dumpmod
from scalingo_staging_sync.restore import targets
from scalingo_staging_sync.restore.errors import MissingExtensionError, RestoreError, TargetError
from scalingo_staging_sync.restore.names import normalize_tables, qualified_key
from scalingo_staging_sync.restore.pgtools import PgTools, check_tools_for_dump, find_pg_tools
from scalingo_staging_sync.restore.plain import run_sql_script
from scalingo_staging_sync.restore.runner import (
    SECTIONS,
    ProgressCallback,
    archive_fks,
    log_progress,
    run_pg_restore,
    unplanned_skips,
)
from scalingo_staging_sync.restore.toc import read_toc, toc_digest
from scalingo_staging_sync.tablename import TableName

log = logging.getLogger(__name__)

FRESH_SECTIONS = ("pre-data", "pre-data+data", "all")
DATA_SECTIONS = ("data", "pre-data+data", "all")
VERIFY_LEVELS = ("none", "quick", "full")


def available_extensions(target: PgTarget) -> set[str]:
    with targets.admin_connection(target) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM pg_available_extensions").fetchall()}


def check_extensions(needed: Iterable[str], target: PgTarget) -> None:
    needed = [n for n in needed if n != "plpgsql"]
    if not needed:
        return
    missing = sorted(set(needed) - available_extensions(target))
    if missing:
        raise MissingExtensionError(
            f"the dump needs the extension(s) {', '.join(missing)}, which the target server "
            f"({target.host}) does not offer (pg_available_extensions); nothing was changed. "
            + ("Install PostGIS on the staging server (or use a PostGIS-enabled database) and retry."
               if any(m.startswith("postgis") for m in missing) else "Install them and retry.")
        )  # fmt: skip


def table_stats(target: PgTarget, tables: Iterable[str], exact: bool = True) -> dict[str, dict]:
    """``{"schema.table": {"rows": n, "bytes": n}}`` (bytes: table + TOAST + indexes).

    Exact rows of freshly loaded tables come from the cumulative statistics (``n_tup_ins -
    n_tup_del``): on PostgreSQL 15+ every backend flushes its counters when it exits, so once
    pg_restore has returned they are exact, and reading them costs nothing where ``count(*)`` would
    scan every table again. Older servers (asynchronous stats collector) and tables without counters
    fall back to ``count(*)``.
    """
    out: dict[str, dict] = {}
    with target.connect(autocommit=True) as conn:
        use_stats = exact and int(conn.execute("SHOW server_version_num").fetchone()[0]) >= 150000
        for schema, name in normalize_tables(tables):
            ident = sql.Identifier(schema, name)
            try:
                size = conn.execute(
                    "SELECT pg_total_relation_size(c.oid), c.reltuples,"
                    " pg_stat_get_tuples_inserted(c.oid) - pg_stat_get_tuples_deleted(c.oid),"
                    " pg_stat_get_live_tuples(c.oid), pg_relation_size(c.oid) FROM pg_class c"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
                    (schema, name),
                ).fetchone()
                if size is None:
                    continue
                stats_ok = size[2] is not None and size[2] == size[3] and (size[2] > 0 or size[4] == 0)
                if use_stats and stats_ok:  # (no counted rows but pages on disk: stats not flushed)
                    rows = size[2]
                elif exact:
                    rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(ident)).fetchone()[0]
                else:
                    rows = max(0, int(size[1]))
            except psycopg.Error as exc:
                log.warning("cannot measure %s.%s: %s", schema, name, exc)
                continue
            out[qualified_key(schema, name)] = {"rows": int(rows), "bytes": int(size[0])}
    return out


def fail_closed(target: PgTarget, mode: str, scaler: Any = None, owner: str | None = None) -> dict:
    """Remove the unmasked data of a failed restore: drop the scratch database, or wipe in place (not
    what another run restored after ``owner``: see :func:`~scalingo_staging_sync.restore.targets.cleanup`)."""
    try:
        if mode == "swap":
            return {"dropped_scratch": targets.drop_scratch(target)}
        out = targets.cleanup(target, "in_place", verified=False, scaler=scaler, owner=owner)
        return out
    except Exception as exc:  # noqa: BLE001 - the original error matters more; this one is logged
        log.error("FAIL-CLOSED CLEANUP FAILED for %s (%s mode): %s", target.describe(), mode, exc)
        return {"error": str(exc)}


def restore(
    dump_path: str | os.PathLike,
    target: PgTarget,
    *,
    section: str = "all",
    mode: str = "auto",
    jobs: int | None = None,
    exclude_tables: Iterable[str] = (),
    exclude_data: Iterable[str] = (),
    only_data: Iterable[str] | None = None,
    pg_bin_dir: str | os.PathLike | None = None,
    tools: PgTools | None = None,
    verify: str = "quick",
    scaler: Any = None,
    app: str | None = None,
    progress: ProgressCallback | None = None,
    count_rows: bool = True,
    plan: Any = None,
    skip_dump_ids: Iterable[int] = (),
    analyze: bool = False,
    large_objects: str | None = None,
    materialized_view_data: bool | None = None,
    copy_filter: Any = None,
    owner: str | None = None,
) -> dict:
    """Run one restore phase into ``target`` (the *live* staging database's coordinates).

    Returns ``{"database", "mode", "section", "tables", "excluded", "warnings", "skipped",
    "duration_s", "format"}``. ``verify``: ``quick`` (TOC + truncation check, default), ``full``
    (decompress the whole archive first: any corruption is found before the target is touched),
    ``none``. ``scaler``/``app``: maintenance mode for in_place (scale ``app`` to 0 meanwhile).
    ``plan``: the archive plan (``inventory.ArchivePlan`` or its ``to_json()`` dict): its
    ``skip_dump_ids`` (excluded data including partitions and children, statistics, large objects
    unless kept, materialized view data, FKs to excluded tables) never load, in any section.
    ``skip_dump_ids``: more TOC entries to leave out.
    Without a plan the restore is safe by default in the same way: large objects (with their comments
    and ACLs) are not restored unless ``large_objects="keep"``, and materialized view data is not
    restored unless ``materialized_view_data=True`` (the views stay unpopulated: refresh them after
    masking, ``anonymize.postload.refresh_materialized_views``); what is left out is logged and listed
    in ``skipped``. With a plan, the plan decides (the rules file's ``large_objects``): an explicit
    ``large_objects`` that differs from the plan's, or ``materialized_view_data=True``, is refused.
    ``analyze``: after a section that includes
    post-data, run ``ANALYZE`` so the planner statistics (``pg_stats``) describe the data as it is now
    (masked, when masking ran before post-data), never the archive's statistics (which are not restored).
    ``owner``: the run restoring (``<dag id>/<run id>``), recorded on the scratch database a fresh
    section creates (``targets.create_scratch``). ``copy_filter``: the data section's per-table COPY filter
    (:data:`scalingo_staging_sync.restore.loader.CopyFilterFactory`; the stream masking engine).
    """
    started = time.monotonic()
    if section not in SECTIONS:
        raise ValueError(f"unknown section {section!r}: use one of {', '.join(SECTIONS)}")
    if verify not in VERIFY_LEVELS:
        raise ValueError(f"unknown verify level {verify!r}: use one of {', '.join(VERIFY_LEVELS)}")
    lo_policy, matview_data = _data_policy(plan, large_objects, materialized_view_data)
    dump_path = Path(dump_path)
    tools = tools or find_pg_tools(pg_bin_dir)
    header = dumpmod.read_dump_header(dump_path)
    check_tools_for_dump(tools, header.dump_major)
    resolved = targets.resolve_mode(target, mode)
    fresh = section in FRESH_SECTIONS
    exclude_tables = list(exclude_tables or ())
    exclude_data = list(exclude_data or ())
    excluded = [qualified_key(*t) for t in normalize_tables([*exclude_tables, *exclude_data])]
    skip = _plan_skip(plan, skip_dump_ids)
    if plan is not None:
        plan_json = plan if isinstance(plan, Mapping) else plan.to_json()
        excluded += [t for t in plan_json.get("excluded_tables", []) if t not in excluded]
    into = targets.restore_database(target, resolved)
    summary: dict[str, Any] = {
        "database": into.dbname,
        "mode": resolved,
        "section": section,
        "format": header.format,
        "tables": {},
        "excluded": excluded,
        "warnings": [],
        "skipped": [],
    }
    progress = progress or log_progress(f"restore {section}")

    if header.format == "plain":
        if exclude_tables or exclude_data or only_data is not None or skip:
            raise RestoreError(
                "plain-SQL dump: exclude_tables / exclude_data / only_data cannot apply (no table of contents "
                "to filter); use a custom-format dump (pg_dump -Fc, what Scalingo backups are)"
            )
        if not fresh:
            msg = (
                f"plain-SQL dump: section {section!r} does not apply; the whole script already ran with "
                "the first section, nothing to do"
            )
            log.warning(msg)
            summary["warnings"].append(msg)
            summary["duration_s"] = round(time.monotonic() - started, 3)
            return summary
        if section != "all":
            msg = f"plain-SQL dump: sections do not apply; section {section!r} runs the whole script"
            log.warning(msg)
            summary["warnings"].append(msg)
        check_extensions(dumpmod.plain_extensions(dump_path, header), target)
        _check_plain_policy(dump_path, header, lo_policy, matview_data, plan_given=plan is not None)
        targets.prepare(target, resolved, scaler=scaler, app=app, owner=owner)
        try:
            result = run_sql_script(dump_path, into, tools=tools, header=header)
        except BaseException:
            fail_closed(target, resolved, scaler, owner)
            raise
        summary["warnings"].extend(result["warnings"])
        summary["tables"] = table_stats(into, _user_tables(into), exact=count_rows)
        summary["duration_s"] = round(time.monotonic() - started, 3)
        return summary

    entries = read_toc(dump_path, tools)
    _check_plan_matches(plan, entries, dump_path)
    _check_named_tables(entries, exclude_tables, exclude_data, only_data, dump_path)
    if plan is None:
        defaults = unplanned_skips(entries, large_objects=lo_policy, materialized_view_data=matview_data)
        for dump_id, reason in defaults.items():
            skip.setdefault(dump_id, reason)
        if defaults:
            msg = _unplanned_message(entries, defaults)
            log.warning("%s", msg)
            summary["warnings"].append(msg)
    if verify in ("quick", "full"):
        dumpmod.quick_check(header, entries)
    if verify == "full":
        dumpmod.full_check(dump_path, tools)
    check_extensions(dumpmod.extensions(entries), target)
    fks = None
    if exclude_tables and section in ("post-data", "all"):
        fks = archive_fks(dump_path, tools, entries)

    if (
        fresh
        and resolved == "in_place"
        and plan is not None
        and section in ("pre-data", "pre-data+data", "all")
    ):
        # the wipe below is where a failure starts to cost staging its data: the rules' mistakes that
        # only the tables can show are looked for first, in a rolled-back transaction
        from scalingo_staging_sync.anonymize.rehearsal import rehearse_in_place

        items = (plan if isinstance(plan, Mapping) else plan.to_json()).get("items") or []
        rehearse_in_place(target, dump_path, tools, entries, items, skip_dump_ids=skip)
    if fresh:
        into = targets.prepare(target, resolved, scaler=scaler, app=app, owner=owner)
    elif resolved == "swap":
        with targets.admin_connection(target, avoid=(into.dbname,)) as conn:
            if not targets.database_exists(conn, into.dbname):
                raise TargetError(
                    f"section {section!r} restores into the scratch database {into.dbname}, which does not "
                    "exist: run the pre-data section first"
                )
    try:
        result = run_pg_restore(
            dump_path,
            into,
            section=section,
            jobs=jobs,
            exclude_data=exclude_data,
            only_data=only_data,
            tools=tools,
            progress=progress,
            exclude_tables=exclude_tables,
            entries=entries,
            fks=fks,
            skip_dump_ids=skip,
            copy_filter=copy_filter,
            require_empty=section == "data",
        )
    except BaseException:
        log.error("restore of section %s failed: removing the restored data (fail closed)", section)
        fail_closed(target, resolved, scaler, owner)
        raise
    if fresh:
        try:
            targets.hold_forced_row_security(into)
            targets.reset_masked_marks(into)
        except BaseException:
            fail_closed(target, resolved, scaler, owner)
            raise
    if analyze and section in ("post-data", "all"):
        t = time.monotonic()
        with into.connect(autocommit=True) as conn:
            conn.execute("ANALYZE")
        summary["analyze_s"] = round(time.monotonic() - t, 3)
    summary["warnings"].extend(result.warnings)
    summary["skipped"] = result.skipped
    summary["entries"] = result.entries_total
    if result.masked_on_worker:
        summary["masked_on_worker"] = result.masked_on_worker
    if section in DATA_SECTIONS:
        summary["tables"] = table_stats(into, result.table_names, exact=count_rows)
    summary["duration_s"] = round(time.monotonic() - started, 3)
    return summary


def _check_named_tables(
    entries: list, exclude_tables: list, exclude_data: list, only_data: Any, dump_path: Path
) -> None:
    """Refuse, before anything is touched, an ``exclude_tables`` / ``exclude_data`` / ``only_data`` name
    that is no table of the archive: a misspelt exclusion would restore the data it meant to keep out."""
    tables = {e.table_name for e in entries if e.desc == "TABLE"}
    named = [("exclude_tables", n) for n in exclude_tables] + [("exclude_data", n) for n in exclude_data]
    named += [("only_data", n) for n in (only_data or ())]
    unknown = [(arg, str(name)) for arg, text in named if (name := TableName.parse(text)) not in tables]
    if unknown:
        listed = ", ".join(f"{arg} {name}" for arg, name in unknown)
        raise RestoreError(
            f"not a table of {dump_path.name}: {listed}; fix the name (schema.table, a bare name means "
            "public, SQL quoting for a part holding a dot or capitals) or remove it"
        )


def _check_plan_matches(plan: Any, entries: list, dump_path: Path) -> None:
    """An archive plan's ``skip_dump_ids`` are positions in the TOC of the archive it was made from:
    refuse it on another archive, before anything is touched (it would leave out the wrong entries)."""
    if plan is None:
        return
    expected = (plan if isinstance(plan, Mapping) else plan.to_json()).get("toc_sha256")
    actual = toc_digest(entries)
    if expected and expected != actual:
        raise RestoreError(
            f"the archive plan was made from another archive (TOC sha256 {expected[:12]}...) than "
            f"{dump_path.name} ({actual[:12]}...): plan this archive (plan_from_archive, or the DAG's "
            "plan_anonymization task on the same backup) and pass that plan"
        )


def _data_policy(
    plan: Any, large_objects: str | None, materialized_view_data: bool | None
) -> tuple[str, bool]:
    """``(large_objects, materialized_view_data)`` of this restore, checked before anything is touched:
    the plan's when there is one (an explicit value may only repeat it), else the arguments, whose
    defaults are the plan's (large objects dropped, materialized view data not restored)."""
    if large_objects is not None and large_objects not in ("drop", "keep"):
        raise ValueError(
            f"large_objects={large_objects!r}: use 'drop' (default: large objects are not restored) or 'keep'"
        )
    if plan is None:
        return large_objects or "drop", bool(materialized_view_data)
    data = plan if isinstance(plan, Mapping) else plan.to_json()
    policy = (data.get("large_objects") or {}).get("policy", "drop")
    if large_objects is not None and large_objects != policy:
        raise ValueError(
            f"large_objects={large_objects!r} contradicts the archive plan (large_objects {policy!r}, from the "
            "rules file): set large_objects in the rules file and plan again, or leave large_objects unset "
            "when passing a plan"
        )
    if materialized_view_data:
        raise ValueError(
            "materialized_view_data=True does not apply with an archive plan: the plan never restores "
            "materialized view data (it would be computed from unmasked tables); the views are refreshed "
            "after masking (anonymize.postload.refresh_materialized_views). Leave it unset with a plan"
        )
    return policy, False


def _unplanned_message(entries: list, skipped: Mapping[int, str]) -> str:
    by_id = {e.dump_id: e for e in entries}
    los = sum(1 for i in skipped if by_id[i].desc != "MATERIALIZED VIEW DATA")
    views = len(skipped) - los
    parts = []
    if los:
        parts.append(
            f"{los} large-object entr{'y' if los == 1 else 'ies'} (pass large_objects='keep' to restore them)"
        )
    if views:
        parts.append(
            f"{views} materialized view data entr{'y' if views == 1 else 'ies'} (the views stay unpopulated: "
            "refresh them after masking, or pass materialized_view_data=True)"
        )
    return "no archive plan: not restored, safe by default as with a plan: " + "; ".join(parts)


def _check_plain_policy(
    dump_path: Path, header: Any, large_objects: str, matview_data: bool, *, plan_given: bool = False
) -> None:
    """A plain-SQL script cannot be filtered: refuse one holding what is never restored (user mappings,
    subscriptions: :data:`~scalingo_staging_sync.restore.toc.NEVER_RESTORED`), or (without a plan)
    large objects or materialized view data the caller did not ask for, before anything is touched."""
    from scalingo_staging_sync.restore.toc import NEVER_RESTORED

    kinds = dumpmod.plain_data_kinds(dump_path, header)
    refused = [
        f"{kind.lower()} entries ({NEVER_RESTORED[kind]})" for kind in sorted(kinds & NEVER_RESTORED.keys())
    ]
    if (
        not plan_given
        and large_objects != "keep"
        and kinds
        & {
            "BLOB",
            "BLOBS",
            "BLOB METADATA",
            "LARGE OBJECT",
            "LARGE OBJECTS",
        }
    ):
        refused.append("large objects (pass large_objects='keep' to restore them)")
    if not plan_given and not matview_data and "MATERIALIZED VIEW DATA" in kinds:
        refused.append("materialized view data (pass materialized_view_data=True to restore it)")
    if refused:
        raise RestoreError(
            f"plain-SQL dump {dump_path.name} holds {' and '.join(refused)}; a plain script cannot leave "
            "them out: use a custom-format dump (pg_dump -Fc, what Scalingo backups are)"
        )


def _plan_skip(plan: Any, extra: Iterable[int]) -> dict[int, str]:
    """``{dump_id: reason}`` of the entries the restore leaves out, from the archive plan."""
    skip: dict[int, str] = {}
    if plan is not None:
        data = plan if isinstance(plan, Mapping) else plan.to_json()
        reasons = {
            int(c["dump_id"]): f"archive plan: {c['class']}: {c['reason']}"
            for c in data.get("classification", [])
        }
        for dump_id in data.get("skip_dump_ids", []):
            skip[int(dump_id)] = reasons.get(int(dump_id), "archive plan: left out")
    for dump_id in extra or ():
        skip.setdefault(int(dump_id), "left out (skip_dump_ids)")
    return skip


def _user_tables(target: PgTarget) -> list[tuple[str, str]]:
    with target.connect(autocommit=True) as conn:
        rows = conn.execute(
            "SELECT schemaname, relname FROM pg_stat_user_tables WHERE schemaname <> %s",
            (targets.STATE_SCHEMA,),
        ).fetchall()
    return [(s, t) for s, t in rows]
