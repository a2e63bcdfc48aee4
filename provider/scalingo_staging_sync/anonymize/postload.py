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


def analyze_masked(target: PgTarget, tables: Sequence[TableName] | None = None) -> dict[str, Any]:
    """ANALYZE every user table and materialized view (or ``tables``), so ``pg_stats`` describes the
    masked data only. A partitioned root is analyzed once (PostgreSQL recurses into its partitions).

    A table that ANALYZE cannot read (another owner) is reported by PostgreSQL as a skipped warning,
    not an error: :func:`scalingo_staging_sync.verification.verify_residuals` then finds any original
    still in its ``pg_stats``. Returns ``{"analyzed": [...], "duration_s"}``."""
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
    duration = time.monotonic() - started
    log.info("analyzed %d table(s) and view(s) on masked data in %.2fs", len(names), duration)
    return {"analyzed": [str(n) for n in names], "duration_s": round(duration, 3)}


def finalize_masked_data(target: PgTarget) -> dict[str, Any]:
    """:func:`refresh_materialized_views` then :func:`analyze_masked`; returns both results."""
    refreshed = refresh_materialized_views(target)
    analyzed = analyze_masked(target)
    return {"materialized_views": refreshed, "analyze": analyzed}


__all__ = [
    "PostLoadError",
    "analyze_masked",
    "finalize_masked_data",
    "matview_refresh_order",
    "refresh_materialized_views",
    "user_relations",
]
