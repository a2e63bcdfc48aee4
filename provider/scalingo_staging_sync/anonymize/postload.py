"""After the masked data and post-data are in: materialized views rebuilt from masked data, then
statistics recomputed from masked data, so nothing derived from the originals is left.

* :func:`refresh_materialized_views`: the restore never loads ``MATERIALIZED VIEW DATA`` (it would be
  computed from the originals); every materialized view is refreshed here from the masked tables, in
  dependency order (a view over another, directly or through plain views, comes after it).
* :func:`analyze_masked`: the restore never loads ``STATISTICS DATA`` (``pg_dump --statistics`` puts
  each column's most common values and histogram bounds in the archive), and an ANALYZE that
  autovacuum ran between the load and an in-place UPDATE left originals in ``pg_stats``. ANALYZE every
  user table (partitioned roots recurse into their partitions) and materialized view again.
* :func:`finalize_masked_data`: both, in that order (the views' statistics are then masked too).

Call them after the last masking step and post-data, before the PII scan and verification (which
read ``pg_stats``, see :mod:`scalingo_staging_sync.verification`). No Airflow here.
"""

from __future__ import annotations

import graphlib
import logging
import time
from collections.abc import Sequence
from typing import Any

from psycopg import sql

from scalingo_staging_sync.pgconn import PgTarget
from scalingo_staging_sync.pgerrors import SanitizedDatabaseError, sanitized
from scalingo_staging_sync.tablename import TableName

log = logging.getLogger(__name__)


class PostLoadError(SanitizedDatabaseError):
    """Refreshing a materialized view or analyzing a table failed (no row contents in the message)."""


_USER_RELATIONS_SQL = """
SELECT n.nspname, c.relname, c.relkind::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = ANY(%(kinds)s::"char"[])
  AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp\\_%%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass
                  AND d.objid = n.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""

_VIEW_DEPENDENCIES_SQL = """
SELECT DISTINCT r.ev_class::bigint, d.refobjid::bigint
FROM pg_rewrite r
JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid <> r.ev_class
"""

_RELATIONS_BY_OID_SQL = """
SELECT c.oid::bigint, n.nspname, c.relname, c.relkind::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('m', 'v')
"""


def user_relations(conn: Any, kinds: str) -> list[TableName]:
    """User relations of these ``relkind`` letters (not partitions, not extension-owned)."""
    rows = conn.execute(_USER_RELATIONS_SQL, {"kinds": list(kinds)}).fetchall()
    return [TableName(schema, name) for schema, name, _kind in rows]


def matview_refresh_order(conn: Any) -> list[TableName]:
    """Every user materialized view, each after the materialized views it reads (directly or through
    plain views)."""
    wanted = set(user_relations(conn, "m"))
    relations = {
        oid: (TableName(schema, name), kind)
        for oid, schema, name, kind in conn.execute(_RELATIONS_BY_OID_SQL).fetchall()
    }
    edges: dict[int, set[int]] = {}
    for dependent, referenced in conn.execute(_VIEW_DEPENDENCIES_SQL).fetchall():
        edges.setdefault(dependent, set()).add(referenced)

    def matview_deps(oid: int) -> set[int]:
        found: set[int] = set()
        stack, seen = list(edges.get(oid, ())), set()
        while stack:
            ref = stack.pop()
            if ref in seen or ref not in relations:
                continue
            seen.add(ref)
            kind = relations[ref][1]
            if kind == "m":
                found.add(ref)
            elif kind == "v":  # through a plain view
                stack.extend(edges.get(ref, ()))
        return found

    sorter: graphlib.TopologicalSorter[int] = graphlib.TopologicalSorter()
    for oid, (name, kind) in relations.items():
        if kind == "m" and name in wanted:
            sorter.add(oid, *matview_deps(oid))
    try:
        order = list(sorter.static_order())
    except graphlib.CycleError as exc:  # pragma: no cover - PostgreSQL refuses cyclic views
        raise PostLoadError(f"materialized views depend on each other in a cycle: {exc.args[1]}") from None
    return [relations[oid][0] for oid in order if relations[oid][0] in wanted]


def refresh_materialized_views(target: PgTarget, views: Sequence[TableName] | None = None) -> dict[str, Any]:
    """``REFRESH MATERIALIZED VIEW`` every user materialized view (or those of ``views``, still in
    dependency order), from the masked data. Returns ``{"refreshed": ["schema.view", ...],
    "duration_s"}``."""
    started = time.monotonic()
    only = {TableName.parse(v) for v in views} if views is not None else None
    refreshed: list[str] = []
    with target.connect(autocommit=True) as conn:
        order = sanitized(
            lambda: matview_refresh_order(conn), "list materialized views", error_cls=PostLoadError
        )
        for view in order:
            if only is not None and view not in only:
                continue
            statement = sql.SQL("REFRESH MATERIALIZED VIEW {}").format(view.identifier())
            sanitized(
                lambda s=statement: conn.execute(s),
                f"refresh materialized view {view}",
                error_cls=PostLoadError,
            )
            refreshed.append(str(view))
    duration = time.monotonic() - started
    log.info("refreshed %d materialized view(s) from masked data in %.2fs", len(refreshed), duration)
    return {"refreshed": refreshed, "duration_s": round(duration, 3)}


_STATS_TABLES_SQL = """
SELECT DISTINCT s.schemaname::text, s.tablename::text, s.inherited, c.relkind::text
FROM pg_stats s
JOIN pg_namespace n ON n.nspname = s.schemaname
JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = s.tablename
WHERE s.schemaname NOT IN ('pg_catalog', 'information_schema')
UNION
SELECT DISTINCT e.schemaname::text, e.tablename::text, e.inherited, c.relkind::text
FROM pg_stats_ext e
JOIN pg_namespace n ON n.nspname = e.schemaname
JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = e.tablename
WHERE e.schemaname NOT IN ('pg_catalog', 'information_schema')
ORDER BY 1, 2, 3
"""


def _is_empty(conn: Any, table: TableName, relkind: str, inherited: bool) -> bool:
    if relkind in ("i", "I"):  # an expression index's statistics: empty when its table is
        row = conn.execute(
            "SELECT n.nspname::text, c.relname::text, c.relkind::text FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE i.indexrelid = (SELECT x.oid FROM pg_class x JOIN pg_namespace xn"
            " ON xn.oid = x.relnamespace WHERE xn.nspname = %s AND x.relname = %s)",
            (table.schema, table.name),
        ).fetchone()
        return _is_empty(conn, TableName(row[0], row[1]), row[2], False)
    only = sql.SQL("ONLY ") if relkind == "r" and not inherited else sql.SQL("")
    query = sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {}{})").format(only, table.identifier())
    return bool(conn.execute(query).fetchone()[0])


def _clear_statistics(conn: Any, table: TableName, inherited: bool) -> None:
    """Remove the column and extended statistics of an empty table (ANALYZE of an empty table keeps
    the old ones): ``pg_clear_attribute_stats`` on PostgreSQL 18+, else direct deletes from
    ``pg_statistic`` / ``pg_statistic_ext_data`` (superuser only)."""
    oid = conn.execute(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s",
        (table.schema, table.name),
    ).fetchone()[0]
    ext = conn.execute(
        "SELECT count(*) FROM pg_stats_ext WHERE schemaname = %s AND tablename = %s AND inherited = %s",
        (table.schema, table.name, inherited),
    ).fetchone()[0]
    if conn.info.server_version >= 180000 and not ext:
        for (attname,) in conn.execute(
            "SELECT attname::text FROM pg_stats WHERE schemaname = %s AND tablename = %s AND inherited = %s",
            (table.schema, table.name, inherited),
        ).fetchall():
            conn.execute(
                "SELECT pg_clear_attribute_stats(%s, %s, %s, %s)",
                (table.schema, table.name, attname, inherited),
            )
        return
    with conn.transaction():
        conn.execute("DELETE FROM pg_statistic WHERE starelid = %s AND stainherit = %s", (oid, inherited))
        conn.execute(
            "DELETE FROM pg_statistic_ext_data WHERE stxdinherit = %s"
            " AND stxoid IN (SELECT oid FROM pg_statistic_ext WHERE stxrelid = %s)",
            (inherited, oid),
        )


def clear_stale_statistics(conn: Any) -> list[str]:
    """Statistics of user tables that hold no rows were computed from rows that are gone (an
    ANALYZE before a masking strategy emptied them; ANALYZE of an empty table keeps the old ones):
    remove them. Returns the tables cleared (``"schema.table"``, ``" (inherited)"`` for a parent's
    statistics over its children). Raises :class:`PostLoadError` when they cannot be removed."""
    cleared: list[str] = []
    for schema, name, inherited, relkind in conn.execute(_STATS_TABLES_SQL).fetchall():
        table = TableName(schema, name)
        if not _is_empty(conn, table, relkind, inherited):
            continue
        label = f"{table}{' (inherited)' if inherited else ''}"
        try:
            _clear_statistics(conn, table, inherited)
        except Exception as exc:  # noqa: BLE001 - reported without values
            from scalingo_staging_sync.pgerrors import describe_pg_error

            raise PostLoadError(
                f"statistics of the empty table {label} were computed before masking and could not be "
                f"removed ({describe_pg_error(exc)}): needs PostgreSQL 18 (pg_clear_attribute_stats) or a "
                "superuser; or drop and recreate the table's extended statistics"
            ) from None
        cleared.append(label)
    return cleared


def analyze_masked(target: PgTarget, tables: Sequence[TableName] | None = None) -> dict[str, Any]:
    """ANALYZE every user table and materialized view (or ``tables``), so ``pg_stats`` describes the
    masked data only. A partitioned root is analyzed once (PostgreSQL recurses into its partitions).
    Then the statistics left on empty tables (ANALYZE does not replace them) are removed
    (:func:`clear_stale_statistics`).

    A table that ANALYZE cannot read (another owner) is reported by PostgreSQL as a skipped warning,
    not an error: :func:`scalingo_staging_sync.verification.verify_residuals` then finds any original
    still in its ``pg_stats``. Returns ``{"analyzed": [...], "cleared": [...], "duration_s"}``."""
    started = time.monotonic()
    with target.connect(autocommit=True) as conn:
        if tables is None:
            names = sanitized(lambda: user_relations(conn, "rpm"), "list tables", error_cls=PostLoadError)
        else:
            names = [TableName.parse(t) for t in tables]
        for name in names:
            sanitized(
                lambda n=name: conn.execute(sql.SQL("ANALYZE {}").format(n.identifier())),
                f"analyze {name}",
                error_cls=PostLoadError,
            )
        cleared = sanitized(
            lambda: clear_stale_statistics(conn), "clear stale statistics", error_cls=PostLoadError
        )
    duration = time.monotonic() - started
    log.info(
        "analyzed %d table(s) and view(s) on masked data in %.2fs; stale statistics removed from %d empty table(s)",
        len(names),
        duration,
        len(cleared),
    )
    return {"analyzed": [str(n) for n in names], "cleared": cleared, "duration_s": round(duration, 3)}


_VIEW_SOURCES_SQL = """
SELECT vn.nspname::text, v.relname::text, va.attname::text, tn.nspname::text, t.relname::text
FROM pg_class v
JOIN pg_namespace vn ON vn.oid = v.relnamespace
JOIN pg_rewrite r ON r.ev_class = v.oid
JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
    AND d.refclassid = 'pg_class'::regclass AND d.refobjsubid > 0
JOIN pg_class t ON t.oid = d.refobjid AND t.oid <> v.oid
JOIN pg_namespace tn ON tn.oid = t.relnamespace
JOIN pg_attribute ta ON ta.attrelid = t.oid AND ta.attnum = d.refobjsubid
JOIN pg_attribute va ON va.attrelid = v.oid AND va.attnum > 0 AND NOT va.attisdropped AND va.attname = ta.attname
WHERE v.relkind = 'm' AND vn.nspname NOT IN ('pg_catalog', 'information_schema')
"""


def masked_view_columns(target: PgTarget, masked_columns: Sequence[str]) -> list[str]:
    """Columns of materialized views that only carry masked data: a view column whose every same-named
    source column (the view's query references it, ``pg_depend``) is masked. Refreshed from the masked
    tables, they hold masked values; any other view column (a renamed or computed one, one that also
    reads an unmasked column of that name) is left to the PII scan. ``"schema.view.column"`` keys."""
    masked = set(masked_columns)
    sources: dict[str, set[str]] = {}
    with target.connect(autocommit=True) as conn:
        rows = sanitized(
            lambda: conn.execute(_VIEW_SOURCES_SQL).fetchall(),
            "read materialized view sources",
            error_cls=PostLoadError,
        )
    for vschema, view, column, tschema, table in rows:
        key = f"{TableName(vschema, view)}.{column}"
        sources.setdefault(key, set()).add(f"{TableName(tschema, table)}.{column}")
    return sorted(k for k, srcs in sources.items() if srcs and srcs <= masked)


def finalize_masked_data(target: PgTarget, masked_columns: Sequence[str] | None = None) -> dict[str, Any]:
    """:func:`refresh_materialized_views` then :func:`analyze_masked`; returns both results, and with
    ``masked_columns`` (the plan's) also ``masked_view_columns`` (:func:`masked_view_columns`)."""
    refreshed = refresh_materialized_views(target)
    analyzed = analyze_masked(target)
    out: dict[str, Any] = {"materialized_views": refreshed, "analyze": analyzed}
    if masked_columns is not None:
        out["masked_view_columns"] = masked_view_columns(target, masked_columns)
    return out


__all__ = [
    "PostLoadError",
    "analyze_masked",
    "clear_stale_statistics",
    "finalize_masked_data",
    "masked_view_columns",
    "matview_refresh_order",
    "refresh_materialized_views",
    "user_relations",
]
