"""Check the masking of every plan item against the archive's own schema before an in-place restore
wipes staging. No Airflow here.

In the ``in_place`` mode (a role that cannot create databases, as on Scalingo) the restore of the
pre-data section starts by wiping what the role owns in the live staging database: from then on a
failure leaves staging empty. Some mistakes of a rules file can only be judged against the tables
themselves: a condition that parses but does not compile (a column of another type, an unknown
function), a ``fixed`` value a date or inet column refuses, an inline query with an error, derived
columns in a cycle. The archive-only planning cannot see them; the masking steps would, after the wipe.

:func:`rehearse_in_place` runs them first, in one transaction that is always rolled back: it wipes
(inside the transaction), replays the archive's pre-data (``pg_restore -f -``, the same entries the
restore keeps), builds and ``EXPLAIN``\\ s each item's masking statement, casts its ``fixed`` values, then
rolls everything back. Live staging is as it was, whatever happens. What the rehearsal finds is raised
(:class:`RehearsalError`, every item's problem at once); when the rehearsal itself cannot run (a lock the
application holds, a lock table too small for one transaction), it says so in the log and the run goes
on: the same checks run again in the masking steps.
"""

from __future__ import annotations

import logging
import re
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from psycopg import sql

from scalingo_staging_sync.errors import SyncError

log = logging.getLogger(__name__)

#: how long the rehearsal waits for a lock the application holds before it gives up (and the run goes on)
LOCK_TIMEOUT = "5s"


class RehearsalError(SyncError, ValueError):
    """Rules that the archive's tables refuse, found before anything was touched."""


def pre_data_script(
    dump_path: str | Path, tools: Any, entries: list, skip_dump_ids: Mapping[int, str] | Iterable[int] = ()
) -> str:
    """The SQL of the archive's pre-data section with the entries the restore keeps (psql meta-commands
    such as ``\\restrict`` left out)."""
    from scalingo_staging_sync.restore.runner import pg_restore_base_args, select_section
    from scalingo_staging_sync.restore.toc import write_list_file

    selection = select_section(dump_path, tools, "pre-data", entries, skip_dump_ids=skip_dump_ids)
    listfile = write_list_file(selection.kept, selection.skipped)
    try:
        cmd = [
            *pg_restore_base_args(tools),
            "--section=pre-data",
            "-L",
            str(listfile),
            "-f",
            "-",
            str(dump_path),
        ]
        out = subprocess.run(cmd, capture_output=True, check=True, timeout=600).stdout  # noqa: S603
    finally:
        listfile.unlink(missing_ok=True)
    text = out.decode("utf-8", errors="replace")
    return "\n".join(line for line in text.splitlines() if not line.startswith("\\"))


_EXPLAINABLE = re.compile(
    r"\s*(?:--[^\n]*\n\s*)*\(?\s*(SELECT|INSERT|UPDATE|DELETE|WITH|MERGE|VALUES)\b", re.I
)


def _statements(script: str) -> list[str]:
    import pglast

    return [s for s in pglast.split(script, with_parser=False) if s.strip()]


def item_problem(
    conn: Any, item: Mapping[str, Any], email_domain: str = "example.com", *, checked_cat: Any = None
) -> str | None:
    """Why the masking of ``item`` cannot run on the tables ``conn`` sees (None when it can): its
    ``fixed`` values cast to their columns' types, its statement built and ``EXPLAIN``\\ ed (the
    condition, the expressions, an inline query compiled; nothing is executed).

    ``checked_cat``: the table's catalog (:func:`~scalingo_staging_sync.anonymize.planner.read_table`)
    as the caller read it in this transaction, after which it cast the item's ``fixed`` values on it
    (:func:`~scalingo_staging_sync.anonymize.executor.check_fixed_values`): neither is done again."""
    import psycopg

    from scalingo_staging_sync.anonymize.executor import _statement, check_fixed_values
    from scalingo_staging_sync.anonymize.planner import read_table
    from scalingo_staging_sync.anonymize.sql import column_expressions
    from scalingo_staging_sync.anonymize.strategies import get_custom
    from scalingo_staging_sync.tablename import TableName

    table = str(TableName(item["schema"], item["name"]))
    if item.get("strategy") and not item.get("columns") and get_custom(item["strategy"]) is None:
        return None  # a custom strategy registered only where the masking runs: judged there
    try:
        with conn.transaction():
            cat = checked_cat if checked_cat is not None else read_table(conn, item["schema"], item["name"])
            if cat is None:
                # a statement it needs failed (an extension the role cannot create...): the restore
                # itself reports that, with the archive entry; nothing to judge of the rules here
                log.info("rules rehearsal: %s was not created by the replayed pre-data; not checked", table)
                return None
            if checked_cat is None:
                check_fixed_values(conn, item, cat)
            if item.get("query"):
                statements = _statements(item["query"])
                # one DML statement is compiled alone; several may depend on each other (a temporary
                # table the next one reads), and other statements cannot be EXPLAINed: run as written
                if len(statements) == 1 and _EXPLAINABLE.match(statements[0]):
                    conn.execute("EXPLAIN " + statements[0])  # type: ignore[arg-type]
            elif item.get("mode") == "on_load" and item.get("columns"):
                # masked as the rows load (trigger or stream engine): the expressions, compiled alone
                exprs = column_expressions(item["columns"], cat.columns)
                conn.execute(
                    sql.SQL("EXPLAIN SELECT {} FROM ONLY {}").format(
                        sql.SQL(", ").join(exprs.values()), sql.Identifier(item["schema"], item["name"])
                    )
                )
            else:
                statement, _ = _statement(item, cat, email_domain)
                if statement is not None:
                    conn.execute(sql.SQL("EXPLAIN ") + statement)
    except psycopg.Error as exc:
        what = "its query" if item.get("query") else "its masking statement"
        reason = (exc.diag.message_primary or type(exc).__name__).strip()
        hint = f" (hint: {exc.diag.message_hint})" if exc.diag.message_hint else ""
        where = (
            f"condition {item['condition']!r}: " if item.get("condition") and not item.get("query") else ""
        )
        return f"{table}: {where}{what} does not compile on the restored tables: {reason}{hint}"
    except (SyncError, ValueError) as exc:
        return str(exc) if table in str(exc) else f"{table}: {exc}"
    return None


def rehearse_in_place(
    target: Any,
    dump_path: str | Path,
    tools: Any,
    entries: list,
    items: Iterable[Mapping[str, Any]],
    *,
    skip_dump_ids: Mapping[int, str] | Iterable[int] = (),
    email_domain: str = "example.com",
) -> list[str]:
    """Check every plan item on the archive's schema in a rolled-back transaction on ``target`` (see
    the module). Raises :class:`RehearsalError` listing each item's problem; returns the tables checked
    (empty when the rehearsal could not run)."""
    import psycopg

    from scalingo_staging_sync.pgconn import turn_off_timeouts
    from scalingo_staging_sync.restore.targets import wipe_owned_objects_on

    items = [i for i in items if isinstance(i, Mapping) and i.get("schema") and i.get("name")]
    if not items:
        return []
    try:
        script = _statements(pre_data_script(dump_path, tools, entries, skip_dump_ids))
    except Exception as exc:  # noqa: BLE001 (the rehearsal is a head start, never a new way to fail)
        log.warning(
            "rules rehearsal skipped: the archive's pre-data could not be read (%s)", type(exc).__name__
        )
        return []
    problems: list[str] = []
    checked: list[str] = []
    try:
        with target.connect(autocommit=False) as conn:
            try:
                turn_off_timeouts(conn)
                conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
                wipe_owned_objects_on(conn)
                failed = 0
                for statement in script:
                    try:
                        with conn.transaction():
                            conn.execute(statement)  # type: ignore[arg-type]
                    except psycopg.Error:
                        failed += 1  # as pg_restore goes on past an entry it cannot create
                conn.execute("RESET search_path")
                conn.execute("SET LOCAL row_security = on")
                for item in items:
                    problem = item_problem(conn, item, email_domain)
                    checked.append(f"{item['schema']}.{item['name']}")
                    if problem:
                        problems.append(problem)
                log.info(
                    "rules rehearsal: %d plan item(s) checked on the archive's schema (%d pre-data "
                    "statements, %d not created), %d problem(s); everything rolled back",
                    len(checked), len(script), failed, len(problems),
                )  # fmt: skip
            finally:
                conn.rollback()
    except psycopg.Error as exc:
        log.warning(
            "rules rehearsal skipped, staging untouched (%s: %s); the masking steps check the same rules",
            type(exc).__name__,
            (exc.diag.message_primary or "").strip(),
        )
        return []
    if problems:
        raise RehearsalError(
            "the rules do not fit the archive's tables; nothing was touched, staging keeps its data:\n- "
            + "\n- ".join(problems)
            + "\nFix the rules file (check it with `scalingo-staging-sync scan --rules` on a copy)."
        )
    return checked
