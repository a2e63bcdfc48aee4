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
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pglast
from pglast import ast
from pglast.enums import SetOperation
from psycopg import sql

from scalingo_staging_sync.pgast import children
from scalingo_staging_sync.pgconn import PgTarget, turn_off_timeouts
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
        turn_off_timeouts(conn)  # a large view refreshes longer than the role's statement_timeout
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


_RELATION_SIZES_SQL = """
SELECT n.nspname::text, c.relname::text,
       CASE WHEN c.relkind = 'p'
            THEN (SELECT coalesce(sum(pg_relation_size(t.relid)), 0) FROM pg_partition_tree(c.oid) t)
            ELSE pg_relation_size(c.oid) END::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
"""


def _largest_first(conn: Any, names: Sequence[TableName]) -> list[TableName]:
    """``names``, the largest relation first (a partitioned root counts its partitions), so that
    parallel ANALYZE sessions do not end with the largest one alone."""
    sizes = {TableName(schema, name): size for schema, name, size in conn.execute(_RELATION_SIZES_SQL)}
    return sorted(names, key=lambda n: -sizes.get(n, 0))


def analyze_masked(
    target: PgTarget, tables: Sequence[TableName] | None = None, jobs: int = 1
) -> dict[str, Any]:
    """ANALYZE every user table and materialized view (or ``tables``), so ``pg_stats`` describes the
    masked data only. A partitioned root is analyzed once (PostgreSQL recurses into its partitions).
    Then the statistics left on empty tables (ANALYZE does not replace them) are removed
    (:func:`clear_stale_statistics`).

    ``jobs`` sessions analyze at once, the largest relation first (on ``make bench``'s scale-3 data,
    two sessions took 0.42 s against 0.59 s for one: ``docs/performance.md``).

    A table that ANALYZE cannot read (another owner) is reported by PostgreSQL as a skipped warning,
    not an error: :func:`scalingo_staging_sync.verification.verify_residuals` then finds any original
    still in its ``pg_stats``. Returns ``{"analyzed": [...], "cleared": [...], "duration_s", "jobs"}``."""
    started = time.monotonic()
    with target.connect(autocommit=True) as conn:
        turn_off_timeouts(conn)
        if tables is None:
            names = sanitized(lambda: user_relations(conn, "rpm"), "list tables", error_cls=PostLoadError)
        else:
            names = [TableName.parse(t) for t in tables]
        workers = max(1, min(int(jobs or 1), len(names)))
        if workers > 1:
            names = sanitized(lambda: _largest_first(conn, names), "size tables", error_cls=PostLoadError)
            _analyze_in_parallel(target, names, workers)
        else:
            for name in names:
                _analyze(conn, name)
        cleared = sanitized(
            lambda: clear_stale_statistics(conn), "clear stale statistics", error_cls=PostLoadError
        )
    duration = time.monotonic() - started
    log.info(
        "analyzed %d table(s) and view(s) on masked data in %.2fs (%d session(s)); stale statistics "
        "removed from %d empty table(s)",
        len(names),
        duration,
        workers,
        len(cleared),
    )
    return {
        "analyzed": [str(n) for n in names],
        "cleared": cleared,
        "duration_s": round(duration, 3),
        "jobs": workers,
    }


def _analyze(conn: Any, name: TableName) -> None:
    sanitized(
        lambda: conn.execute(sql.SQL("ANALYZE {}").format(name.identifier())),
        f"analyze {name}",
        error_cls=PostLoadError,
    )


def _analyze_in_parallel(target: PgTarget, names: Sequence[TableName], workers: int) -> None:
    """ANALYZE ``names`` on ``workers`` sessions, each taking the next relation in order. The first
    failure stops every session before its next relation and is raised."""
    pending = iter(names)
    lock = threading.Lock()
    failed = threading.Event()

    def work() -> None:
        with target.connect(autocommit=True) as conn:
            turn_off_timeouts(conn)
            while not failed.is_set():
                with lock:
                    name = next(pending, None)
                if name is None:
                    return
                try:
                    _analyze(conn, name)
                except BaseException:
                    failed.set()
                    raise

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="analyze") as pool:
        futures = [pool.submit(work) for _ in range(workers)]
    for future in futures:
        future.result()  # the first failure, in submission order


_VIEWS_SQL = """
SELECT c.oid::bigint, n.nspname::text, c.relname::text, c.relkind::text,
       ARRAY(SELECT a.attname::text FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('m', 'v') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
ORDER BY 2, 3
"""

_RELATION_COLUMNS_SQL = """
SELECT a.attname::text FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

#: built-in functions that run SQL given as text or read files / large objects: an output column that
#: calls one of them may carry data from anywhere, so it is never counted as masked
_OPAQUE_FUNCTIONS = frozenset(
    {
        "query_to_xml",
        "query_to_xmlschema",
        "query_to_xml_and_xmlschema",
        "cursor_to_xml",
        "cursor_to_xmlschema",
        "table_to_xml",
        "table_to_xmlschema",
        "table_to_xml_and_xmlschema",
        "schema_to_xml",
        "schema_to_xmlschema",
        "schema_to_xml_and_xmlschema",
        "database_to_xml",
        "database_to_xmlschema",
        "database_to_xml_and_xmlschema",
        "pg_read_file",
        "pg_read_binary_file",
        "lo_get",
        "loread",
    }
)


class _Unclear(Exception):
    """Where a view column's value comes from cannot be told for sure."""


def view_column_sources(
    definition: str, columns_of: Callable[[TableName], Sequence[str] | None]
) -> list[frozenset[str] | None] | None:
    """For each output column of a view's query (``pg_get_viewdef`` text, read with schema-qualified
    names: an empty ``search_path``), the source columns (``"schema.relation.column"``) its value is
    computed from, or None when that cannot be told for sure. None for the whole query when its output
    columns cannot be lined up (``*``, a parse error, not a SELECT).

    Parsed with pglast (PostgreSQL's parser). Table aliases are resolved; an unqualified column comes from
    every relation of the FROM clause that has one of that name (a ``JOIN ... USING`` column from both).
    Unclear, so None: a subquery (in FROM or in the expression), a set-returning or table function, a
    ``WITH`` query, a join alias, renamed alias columns, a whole-row reference, a function or operator
    outside ``pg_catalog`` (it may read other tables), a cast to a type outside ``pg_catalog``, a
    built-in that runs SQL text or reads files (``query_to_xml``...), a column no source has. A
    ``UNION``/``INTERSECT``/``EXCEPT`` column comes from its columns in every branch.

    ``columns_of(relation)``: its column names, or None when it is not a known relation."""
    try:
        stmts = pglast.parse_sql(definition)
    except pglast.parser.ParseError:
        return None
    if len(stmts) != 1:
        return None
    try:
        return _select_sources(stmts[0].stmt, columns_of)
    except _Unclear:
        return None


def _select_sources(
    stmt: Any, columns_of: Callable[[TableName], Sequence[str] | None]
) -> list[frozenset[str] | None]:
    if not isinstance(stmt, ast.SelectStmt) or stmt.withClause is not None or stmt.valuesLists:
        raise _Unclear
    if stmt.op != SetOperation.SETOP_NONE:
        left = _select_sources(stmt.larg, columns_of)
        right = _select_sources(stmt.rarg, columns_of)
        if len(left) != len(right):
            raise _Unclear
        return [a | b if a is not None and b is not None else None for a, b in zip(left, right, strict=True)]
    scope = _Scope(columns_of)
    for item in stmt.fromClause or ():
        scope.add(item)
    out: list[frozenset[str] | None] = []
    for target in stmt.targetList or ():
        val = target.val
        if isinstance(val, ast.ColumnRef) and any(isinstance(f, ast.A_Star) for f in val.fields):
            raise _Unclear  # ``*``: the output columns cannot be lined up with the view's
        try:
            out.append(frozenset(scope.expression_sources(val)))
        except _Unclear:
            out.append(None)
    return out


class _Scope:
    """The relations of one FROM clause: each by the name its columns are qualified with."""

    def __init__(self, columns_of: Callable[[TableName], Sequence[str] | None]) -> None:
        self.columns_of = columns_of
        #: qualifier (alias, or relation name) -> (relation, its columns), None when opaque
        self.by_alias: dict[str, tuple[TableName, Sequence[str]] | None] = {}
        #: relations without alias, for ``schema.relation.column`` references
        self.by_name: dict[TableName, Sequence[str]] = {}
        self.sources: list[tuple[TableName, Sequence[str]]] = []
        self.opaque = False

    def add(self, item: Any) -> None:
        if isinstance(item, ast.JoinExpr):
            self.add(item.larg)
            self.add(item.rarg)
            if item.alias is not None:  # ``(a JOIN b) AS j`` hides a and b: j.x is not resolved
                self.by_alias[item.alias.aliasname] = None
                self.opaque = True
            return
        alias = getattr(item, "alias", None)
        if isinstance(item, ast.RangeVar) and item.schemaname:  # always qualified (empty search_path)
            name = TableName(item.schemaname, item.relname)
            columns = self.columns_of(name)
            if columns is not None and not (alias is not None and alias.colnames):
                self.by_alias[alias.aliasname if alias is not None else item.relname] = (name, columns)
                if alias is None:
                    self.by_name[name] = columns
                self.sources.append((name, columns))
                return
        # a subquery, a function, a CTE, renamed columns, an unknown relation: its columns are unknown
        self.opaque = True
        if alias is not None:
            self.by_alias[alias.aliasname] = None
        elif isinstance(item, ast.RangeVar):
            self.by_alias[item.relname] = None

    def column(self, fields: tuple[str, ...]) -> set[str]:
        if len(fields) == 1:  # unqualified: from every relation that has it
            if self.opaque:
                raise _Unclear
            found = {f"{name}.{fields[0]}" for name, columns in self.sources if fields[0] in columns}
        elif len(fields) == 2:
            source = self.by_alias.get(fields[0])
            found = {f"{source[0]}.{fields[1]}"} if source is not None and fields[1] in source[1] else set()
        elif len(fields) == 3:
            name = TableName(fields[0], fields[1])
            columns = self.by_name.get(name)
            found = {f"{name}.{fields[2]}"} if columns is not None and fields[2] in columns else set()
        else:
            found = set()
        if not found:
            raise _Unclear
        return found

    def expression_sources(self, node: Any) -> set[str]:
        found: set[str] = set()

        def visit(n: Any) -> None:
            if isinstance(n, ast.ColumnRef):
                if not all(isinstance(f, ast.String) for f in n.fields):
                    raise _Unclear  # a whole-row reference (``a.*``)
                found.update(self.column(tuple(f.sval for f in n.fields)))
                return
            if isinstance(n, (ast.SubLink, ast.RangeSubselect, ast.ParamRef)):
                raise _Unclear
            if isinstance(n, ast.FuncCall):
                names = [f.sval for f in n.funcname]
                if (len(names) > 1 and names[0] != "pg_catalog") or names[-1].lower() in _OPAQUE_FUNCTIONS:
                    raise _Unclear
            elif isinstance(n, ast.A_Expr) and n.name:
                names = [getattr(f, "sval", "") for f in n.name]
                if len(names) > 1 and names[0] != "pg_catalog":
                    raise _Unclear
            elif isinstance(n, ast.TypeCast) and n.typeName is not None:
                names = [getattr(f, "sval", "") for f in n.typeName.names]
                if len(names) > 1 and names[0] != "pg_catalog":
                    raise _Unclear  # a user type's cast may run a function
            for child in children(n):
                visit(child)

        visit(node)
        return found


def masked_view_columns(target: PgTarget, masked_columns: Sequence[str]) -> list[str]:
    """Columns of materialized views that only carry masked data, ``"schema.view.column"`` keys.

    Each view's query (``pg_get_viewdef``) is parsed with pglast (:func:`view_column_sources`): an output
    column counts as masked when every column its value is computed from is a masked column of its
    source table (a renamed ``login_email AS login``, a computed ``lower(login_email)``, an aggregate of
    masked values), or a masked column of another (materialized) view, resolved the same way. Refreshed
    from the masked tables, those columns hold masked values. Any column whose sources are unclear, or
    that also reads an unmasked column, is left to the PII scan."""
    with target.connect(autocommit=True) as conn:
        return masked_view_columns_on(conn, masked_columns)


def masked_view_columns_on(conn: Any, masked_columns: Sequence[str]) -> list[str]:
    """:func:`masked_view_columns` on the autocommit psycopg connection ``conn`` (whose ``search_path``
    it empties, so that the view definitions name every relation with its schema)."""
    masked = set(masked_columns)

    def read() -> tuple[list[tuple], dict[int, str]]:
        views = conn.execute(_VIEWS_SQL).fetchall()
        # every relation and function name schema-qualified in the definitions
        conn.execute("SELECT set_config('search_path', '', false)")
        definitions = {
            oid: conn.execute("SELECT pg_get_viewdef(%s::oid)", (oid,)).fetchone()[0] for oid, *_rest in views
        }
        return views, definitions

    views, definitions = sanitized(read, "read materialized view definitions", error_cls=PostLoadError)
    cache: dict[TableName, list[str] | None] = {}

    def columns_of(name: TableName) -> list[str] | None:
        if name not in cache:
            rows = sanitized(
                lambda: conn.execute(_RELATION_COLUMNS_SQL, (name.schema, name.name)).fetchall(),
                "read view source columns",
                error_cls=PostLoadError,
            )
            cache[name] = [r[0] for r in rows] if rows else None
        return cache[name]

    per_view: list[tuple[TableName, str, list[str], list[frozenset[str] | None]]] = []
    for oid, schema, name, kind, attnames in views:
        sources = view_column_sources(definitions[oid] or "", columns_of)
        if sources is None or len(sources) != len(attnames):
            log.info("view %s: where its columns come from is unclear", TableName(schema, name))
            continue
        per_view.append((TableName(schema, name), kind, list(attnames), sources))
    found: set[str] = set()
    in_matviews: set[str] = set()
    changed = True
    while changed:  # a view over a view: until nothing more is found
        changed = False
        for view, kind, attnames, sources in per_view:
            for column, srcs in zip(attnames, sources, strict=True):
                key = f"{view}.{column}"
                if key not in found and srcs and srcs <= masked | found:
                    found.add(key)
                    changed = True
                    if kind == "m":
                        in_matviews.add(key)
    return sorted(in_matviews - masked)


def unconditionally_masked(
    masked_columns: Sequence[str], conditional_tables: Iterable[str] = ()
) -> list[str]:
    """``masked_columns`` (``"schema.table.column"``) without those of the tables a conditional rule
    masks (``conditional_tables``, any table-name form): their rows outside the condition keep their
    originals, so a view computed from them is not masked and is left to the PII scan. A key is dropped
    when it starts with such a table's ``schema.name.`` (so in doubt a column is dropped, never kept)."""
    prefixes = []
    for table in conditional_tables:
        name = TableName.parse(str(table))
        prefixes += [f"{name.schema}.{name.name}.", f"{name}."]  # raw and quoted keys
    return [c for c in masked_columns if not any(str(c).startswith(p) for p in prefixes)]


def finalize_masked_data(
    target: PgTarget,
    masked_columns: Sequence[str] | None = None,
    conditional_tables: Iterable[str] = (),
    jobs: int = 1,
) -> dict[str, Any]:
    """:func:`refresh_materialized_views` then :func:`analyze_masked` (``jobs`` sessions); returns both results, and with
    ``masked_columns`` (the plan's) also ``masked_view_columns`` (:func:`masked_view_columns`) of the
    columns masked in every row (not those of ``conditional_tables``: :func:`unconditionally_masked`)."""
    refreshed = refresh_materialized_views(target)
    analyzed = analyze_masked(target, jobs=jobs)
    out: dict[str, Any] = {"materialized_views": refreshed, "analyze": analyzed}
    if masked_columns is not None:
        out["masked_view_columns"] = masked_view_columns(
            target, unconditionally_masked(masked_columns, conditional_tables)
        )
    return out


__all__ = [
    "PostLoadError",
    "analyze_masked",
    "clear_stale_statistics",
    "finalize_masked_data",
    "masked_view_columns_on",
    "masked_view_columns",
    "unconditionally_masked",
    "view_column_sources",
    "matview_refresh_order",
    "refresh_materialized_views",
    "user_relations",
]
