"""Scan a restored database for personal data left unmasked (no Airflow here).

* Scope: every ordinary table and materialized view of every user schema (``pg_catalog``,
  ``information_schema``, ``pg_toast*``, ``pg_temp*`` and extension-owned schemas and tables are
  skipped), *including* the tables the rules anonymize (their other columns count too).
* Name detection on every column (see :mod:`.detectors`).
* Content detection on text-like columns (text, varchar, char, citext, name, json, jsonb, xml, inet,
  cidr, macaddr, arrays of those, domains over them) over a bounded sample: one query per table,
  ``TABLESAMPLE SYSTEM (p)`` sized from the catalog estimate, plus ``LIMIT``; each value is cut to
  ``max_value_chars``. Cost does not grow with the table size.
* Each finding gets a status: ``masked`` (a rule masks the column), ``allowed`` (``pii_scan.allow``)
  or ``unmasked``.
* **Excluded tables** (``excluded_tables``, with their partitions and inheritance children): their
  data was not restored, so their columns are not flagged by name; instead the table must be empty,
  and one that holds rows fails the scan (``excluded_not_empty``).
* **Conditional rules** (``conditional``: table -> the rule's ``condition``): the rows outside the
  condition keep their originals by design. A masked column of such a table is not counted as
  masked: the rows ``WHERE (condition) IS NOT TRUE`` are sampled, and when they hold values the
  column is a finding (``outside_condition``, plus any content detector) that fails the gate unless
  ``pii_scan.allow`` names it. (Verification samples the rows inside the condition.)
* **Materialized views** are scanned like tables; refresh them from the masked data first
  (:func:`scalingo_staging_sync.anonymize.postload.refresh_materialized_views`): an unpopulated one
  cannot be read and fails the scan (fail closed).
* **Large objects**: with ``large_objects=True`` (rules ``large_objects: keep``) up to
  ``max_large_objects`` of them are read (the first ``max_value_chars`` bytes of each, decoded as
  UTF-16, UTF-8 or Windows-1252) through the content detectors, and the report counts them
  (``large_objects``); a match is a finding on ``pg_catalog.pg_largeobject.data``. With ``large_objects=False`` the database must hold
  none: any large object fails the scan.

* **Copies of masked values** (``copies``, a :class:`CopyIndex` built from the masking tasks' proofs):
  each sampled value's e-mail addresses and runs of two to four words are hashed with the proofs'
  phrase key (:mod:`scalingo_staging_sync.fingerprint`) and looked up among the phrases of the masked
  tables' sampled originals. A column where one e-mail address or two names of sampled people turn
  up holds copies of values a rule masks elsewhere (Django's admin log keeps "Jean Dupont" in
  ``object_repr``): a finding ``copy.masked_originals`` naming the masked tables.

Sampled values are only counted, never stored, returned or logged.
"""

from __future__ import annotations

import fnmatch
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from scalingo_staging_sync.errors import SyncError
from scalingo_staging_sync.pgconn import turn_off_timeouts
from scalingo_staging_sync.pii import DEFAULT_SAMPLE_ROWS
from scalingo_staging_sync.pii.detectors import (
    KEY_VALUE_DETECTOR,
    ContentPattern,
    NamePattern,
    build_patterns,
    column_kind,
    content_ignored_by_name,
    detect_by_name,
    is_uuid,
    key_value_columns,
    max_severity,
    migration_bookkeeping,
    random_key_reason,
    secret_keys,
    severity_rank,
    table_of_people,
)
from scalingo_staging_sync.tablename import TableName

log = logging.getLogger(__name__)

DEFAULT_MAX_VALUE_CHARS = 8192
SMALL_TABLE_PAGES = 128  # below this many 8 kB pages, no TABLESAMPLE: rows drawn from the whole table
#: up to this size (100 MB), a table read without TABLESAMPLE gives rows in random order, drawn from all
#: of it (its first rows may all be alike: system rows, an import); beyond, the first ones (LIMIT only)
RANDOM_ORDER_MAX_PAGES = 12_800
_ROWS_PER_PAGE_GUESS = 60  # when the table was never analyzed (reltuples = -1)

SKIPPED_SCHEMAS = ("pg_catalog", "information_schema")
#: sampled as text besides the string types; a tsvector (a search index: Discourse's user_search_data
#: holds its users' names and e-mail addresses as lexemes) is read as its lexemes in position order
_TEXT_TYPES = {"json", "jsonb", "xml", "inet", "cidr", "macaddr", "macaddr8", "hstore", "citext", "tsvector"}

STATUS_MASKED = "masked"
STATUS_ALLOWED = "allowed"
STATUS_UNMASKED = "unmasked"


class UnmaskedPiiError(SyncError):
    """Raised when ``on_unmasked="fail"`` and the scan found unmasked personal data."""

    def __init__(self, report: ScanReport):
        self.report = report
        columns = [f.qualified_name for f in report.unmasked]
        # masked by a rule with a condition, and holding values in rows the condition leaves out
        outside = [
            f.qualified_name for f in report.unmasked if any(r.get("kind") == "condition" for r in f.reasons)
        ]
        unruled = [c for c in columns if c not in outside]
        allow = 'list them under pii_scan.allow ("schema.table.column" or {column: ..., reason: ...})'
        message = (
            f"PII scan found {len(columns)} unmasked column(s) holding personal data: {', '.join(columns)}."
            if columns
            else "PII scan failed."
        )
        if unruled:
            message += (
                f" Mask {'them' if not outside else ', '.join(unruled)} with a rule in anonymization_tables,"
                f" or {allow}."
            )
        if outside:
            message += (
                f" {'They are' if not unruled else ', '.join(outside) + ' are'} masked only in the rows "
                "their rule's condition selects; the rows "
                f"outside it keep their values. Widen or drop the condition, or {allow} when those rows "
                "hold no personal data."
            )
        copies = {
            f.qualified_name: r["tables"]
            for f in report.unmasked
            for r in f.reasons
            if r.get("kind") == "copy" and len(f.reasons) == 1
        }
        if copies:
            message += (
                " "
                + "; ".join(
                    f"{column} holds the names or e-mail addresses of people of {', '.join(tables)}"
                    for column, tables in copies.items()
                )
                + (
                    " (copies of values a rule masks there: an admin log's object name, a note or a ticket "
                    "naming them): mask it too, with null, fixed or hash when it is free text."
                )
            )
        if report.excluded_not_empty:
            message += (
                f" Excluded table(s) holding rows although their data is not restored: "
                f"{', '.join(report.excluded_not_empty)} (check exclude_tables and the restore)."
            )
        if report.large_objects.get("unexpected"):
            message += (
                f" The database holds {report.large_objects['count']} large object(s) although the rules do "
                "not keep them (large_objects: keep); they may hold production files."
            )
        if report.errors:
            message += f" Tables that could not be scanned: {', '.join(sorted(report.errors))}."
        super().__init__(message)


@dataclass
class TableInfo:
    schema: str
    name: str
    oid: int
    relkind: str
    est_rows: float
    pages: int
    root: str | None = None  # "schema.table" of the partitioned root table, for partitions
    columns: list[ColumnInfo] = field(default_factory=list)
    #: partitioned / inheritance parents, nearest first
    ancestors: list[TableName] = field(default_factory=list)
    populated: bool = True  # False: a materialized view never refreshed (cannot be read)

    @property
    def table_name(self) -> TableName:
        return TableName(self.schema, self.name)

    @property
    def qualified_name(self) -> str:
        """:class:`TableName`'s form: ``crm."Order.Items"`` where a part needs quoting."""
        return str(self.table_name)


@dataclass
class ColumnInfo:
    name: str
    type_name: str
    sampled: bool
    kind: str = "text"  # detectors.column_kind: what the type lets the column hold


@dataclass
class Finding:
    schema: str
    table: str
    column: str
    type: str
    severity: str
    reasons: list[dict[str, Any]]
    sample_count: int = 0  # how many sampled values matched a content detector (max over detectors)
    sampled_values: int = 0  # how many non-null values were sampled from the column
    status: str = STATUS_UNMASKED
    allow_reason: str | None = None

    @property
    def qualified_name(self) -> str:
        """``schema.table.column``, the table in :class:`TableName`'s form (``crm."Order.Items".email``
        where a part needs quoting: the form an allow-list entry or a rule can name it by)."""
        return f"{TableName(self.schema, self.table)}.{self.column}"

    @property
    def reason(self) -> str:
        parts = []
        for r in self.reasons:
            if r["kind"] == "name":
                parts.append(f"name:{r['detector']}")
            elif r["kind"] == "condition":
                parts.append(f"outside the rule's condition: {r['matches']} value(s) left as they are")
            elif r["kind"] == "json_key":
                parts.append(
                    f"json key:{r['detector']} at {', '.join(r['paths'])} ({r['matches']}/{self.sampled_values} sampled)"
                )
            elif r["kind"] == "key_value":
                parts.append(
                    f"key/value:{r['detector']} in the rows whose {r['key_column']} is "
                    f"{', '.join(r['keys'])} ({r['matches']}/{self.sampled_values} sampled)"
                )
            elif r["kind"] == "copy":
                parts.append(
                    f"copies of the names or e-mail addresses of the people of {', '.join(r['tables'])} "
                    f"({r['emails']} e-mail(s) and {r['names']} name(s) of the sampled people, in "
                    f"{self.sampled_values} sampled values)"
                )
            else:
                parts.append(f"content:{r['detector']} ({r['matches']}/{self.sampled_values} sampled)")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["column_id"] = self.qualified_name
        data["reason"] = self.reason
        return data


@dataclass
class ScanReport:
    database: str
    schemas: list[str]
    tables_scanned: int
    columns_scanned: int
    columns_sampled: int
    rows_sampled: int
    sample_rows: int
    findings: list[Finding]
    duration_s: float
    errors: dict[str, str] = field(default_factory=dict)  # table -> error class (never values)
    unknown_masked: list[str] = field(default_factory=list)
    #: excluded table -> "empty" | "holds rows"
    excluded: dict[str, str] = field(default_factory=dict)
    #: masked columns of conditional rules -> non-null values sampled outside the condition
    outside_condition: dict[str, int] = field(default_factory=dict)
    #: {"kept", "count", "sampled", "bytes_read", "matches": {detector: n}, "unexpected"}
    large_objects: dict[str, Any] = field(default_factory=dict)

    @property
    def unmasked(self) -> list[Finding]:
        return [f for f in self.findings if f.status == STATUS_UNMASKED]

    @property
    def excluded_not_empty(self) -> list[str]:
        return sorted(t for t, state in self.excluded.items() if state != "empty")

    @property
    def passed(self) -> bool:
        return (
            not self.unmasked
            and not self.errors
            and not self.excluded_not_empty
            and not self.large_objects.get("unexpected")
        )

    def counts(self) -> dict[str, int]:
        out = {STATUS_MASKED: 0, STATUS_ALLOWED: 0, STATUS_UNMASKED: 0}
        for finding in self.findings:
            out[finding.status] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "schemas": self.schemas,
            "tables_scanned": self.tables_scanned,
            "columns_scanned": self.columns_scanned,
            "columns_sampled": self.columns_sampled,
            "rows_sampled": self.rows_sampled,
            "sample_rows": self.sample_rows,
            "duration_s": round(self.duration_s, 3),
            "passed": self.passed,
            "counts": self.counts(),
            "unmasked": [f.qualified_name for f in self.unmasked],
            "errors": dict(self.errors),
            "unknown_masked": list(self.unknown_masked),
            "excluded": dict(self.excluded),
            "excluded_not_empty": self.excluded_not_empty,
            "outside_condition": dict(self.outside_condition),
            "large_objects": dict(self.large_objects),
            "findings": [f.to_dict() for f in self.findings],
        }


# --------------------------------------------------------------------------------------------------
# Masked / allowed column sets
# --------------------------------------------------------------------------------------------------


def _qualify(name: str) -> str:
    """``table.column`` -> ``public.table.column``; ``schema.table.column`` unchanged."""
    return name if name.count(".") >= 2 else f"public.{name}"


def masked_columns_from_plan(plan: Iterable[Mapping[str, Any]]) -> list[str]:
    """Plan items (CONTRACTS "Anonymization plan item") -> ``["schema.table.column", ...]``."""
    out: list[str] = []
    for item in plan or ():
        schema = item.get("schema") or "public"
        name = item.get("name") or str(item.get("table", "")).split(".")[-1]
        for column in item.get("masked_columns") or ():
            out.append(f"{schema}.{name}.{column}")
    return out


def partially_masked_from_plan(plan: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Plan items -> ``{"schema.table.column": [json path, ...]}`` of the columns a ``json`` rule masks:
    only the values at those paths are masked, the rest of each document is scanned."""
    out: dict[str, list[str]] = {}
    for item in plan or ():
        # the plan task's masked_columns form (its items' "table": TableName's quoted form when needed)
        table = item.get("table") or f"{item.get('schema') or 'public'}.{item.get('name')}"
        for column, spec in (item.get("columns") or {}).items():
            if isinstance(spec, Mapping) and spec.get("transformer") == "json":
                out[f"{table}.{column}"] = [str(p) for p in spec.get("paths") or {}]
    return out


@dataclass(frozen=True)
class AllowEntry:
    pattern: str
    reason: str | None


def parse_allow(allow: Iterable[Any] | None) -> list[AllowEntry]:
    """``pii_scan.allow``: ``"schema.table.column"``, ``"schema.table.*"`` or ``{column, reason}``."""
    entries = []
    for item in allow or ():
        if isinstance(item, Mapping):
            column = item.get("column")
            if not column:
                raise ValueError(f"pii_scan.allow entry {dict(item)!r} has no 'column'")
            entries.append(AllowEntry(_qualify(str(column)), item.get("reason")))
        elif isinstance(item, str) and item:
            entries.append(AllowEntry(_qualify(item), None))
        else:
            raise ValueError(f"pii_scan.allow entries are strings or {{column, reason}}, got {item!r}")
    return entries


def _candidates(table: TableInfo, column: str) -> list[str]:
    """The names a rule, an allow-list entry or the plan may give this column: ``schema.table.column``
    raw and in :class:`TableName`'s quoted form (the plan's keys: ``crm."Order.Items".email``), for the
    table, its partitioned root (raw) and its parents."""
    names: list[str] = []

    def add(schema: str, name: str) -> None:
        for form in (f"{schema}.{name}", str(TableName(schema, name))):
            key = f"{form}.{column}"
            if key not in names:
                names.append(key)

    add(table.schema, table.name)
    if table.root and f"{table.root}.{column}" not in names:  # raw; its quoted form comes with ancestors
        names.append(f"{table.root}.{column}")
    for parent in table.ancestors:
        add(parent.schema, parent.name)
    return names


def matches_any(names: Sequence[str], patterns: Iterable[str]) -> str | None:
    """The first of ``patterns`` (shell-style, ``public.*.notes``) that one of ``names`` matches, or None."""
    for pattern in patterns:
        for name in names:
            if fnmatch.fnmatchcase(name, pattern):
                return pattern
    return None


# --------------------------------------------------------------------------------------------------
# Catalog
# --------------------------------------------------------------------------------------------------

#: a table's size in pages as the scan sizes its sample (not ``relpages``: 0 for a table never analyzed,
#: a freshly restored copy, which would then be read whole in random order however big it is)
_PAGES_SQL = "(pg_relation_size(c.oid) / current_setting('block_size')::int)::bigint"
_TABLES_SQL = f"""
SELECT n.nspname, c.relname, c.oid::bigint, c.relkind::text, c.reltuples::float8,
       {_PAGES_SQL},
       CASE WHEN c.relispartition THEN
         (SELECT rn.nspname || '.' || rc.relname FROM pg_class rc JOIN pg_namespace rn ON rn.oid = rc.relnamespace
          WHERE rc.oid = pg_partition_root(c.oid)) END,
       c.relispopulated
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp\\_%%'
  AND n.nspname <> '_scalingo_staging_sync'  -- this package's own bookkeeping (restore.targets.STATE_SCHEMA)
  AND (%(schemas)s::text[] IS NULL OR n.nspname = ANY(%(schemas)s::text[]))
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass
                  AND d.objid = n.oid AND d.deptype = 'e')
ORDER BY n.nspname, c.relname
"""  # noqa: S608 - made of constants

#: one column's table, sized as :data:`_TABLES_SQL` sizes it, and the column's type
_COLUMN_SQL = f"""
SELECT c.relkind::text, c.reltuples::float8, {_PAGES_SQL}, format_type(a.atttypid, a.atttypmod)
FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
WHERE c.oid = to_regclass(%s) AND a.attname = %s AND NOT a.attisdropped
"""  # noqa: S608 - made of constants

_COLUMNS_SQL = """
SELECT a.attrelid::bigint, a.attname, format_type(a.atttypid, a.atttypmod),
       bt.typname, bt.typcategory::text, et.typname, et.typcategory::text
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
LEFT JOIN pg_type et ON et.oid = bt.typelem AND bt.typcategory = 'A'
WHERE a.attrelid = ANY(%s::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""


def _is_text_like(typname: str, category: str, elem_name: str | None, elem_category: str | None) -> bool:
    if category == "S" or typname in _TEXT_TYPES:
        return True
    if category == "A" and elem_name is not None:
        return elem_category == "S" or elem_name in _TEXT_TYPES
    return False


def _parents(conn) -> dict[int, list[tuple[int, TableName]]]:
    out: dict[int, list[tuple[int, TableName]]] = {}
    with conn.cursor() as cur:
        cur.execute(
            "SELECT i.inhrelid::bigint, i.inhparent::bigint, pn.nspname, pc.relname FROM pg_inherits i"
            " JOIN pg_class pc ON pc.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = pc.relnamespace"
            " ORDER BY i.inhrelid, i.inhseqno"
        )
        for child, parent, schema, name in cur.fetchall():
            out.setdefault(child, []).append((parent, TableName(schema, name)))
    return out


def _ancestors(oid: int, parents: Mapping[int, list[tuple[int, TableName]]]) -> list[TableName]:
    """Parents, nearest first (breadth first over multiple inheritance)."""
    found: list[TableName] = []
    queue, seen = [oid], {oid}
    while queue:
        current = queue.pop(0)
        for parent_oid, name in parents.get(current, ()):
            if parent_oid in seen:
                continue
            seen.add(parent_oid)
            found.append(name)
            queue.append(parent_oid)
    return found


def list_tables(conn, schemas: Sequence[str] | None = None) -> list[TableInfo]:
    """User tables and materialized views with their columns (see module doc for the scope)."""
    parents = _parents(conn)
    with conn.cursor() as cur:
        cur.execute(_TABLES_SQL, {"schemas": list(schemas) if schemas else None})
        tables = [
            TableInfo(
                schema=r[0],
                name=r[1],
                oid=r[2],
                relkind=r[3],
                est_rows=r[4],
                pages=r[5],
                root=r[6],
                ancestors=_ancestors(r[2], parents),
                populated=r[7],
            )
            for r in cur.fetchall()
        ]
        if not tables:
            return []
        by_oid = {t.oid: t for t in tables}
        cur.execute(_COLUMNS_SQL, (list(by_oid),))
        for oid, name, type_name, typname, category, elem_name, elem_category in cur.fetchall():
            by_oid[oid].columns.append(
                ColumnInfo(
                    name,
                    type_name,
                    text_like := _is_text_like(typname, category, elem_name, elem_category),
                    column_kind(typname, category, text_like),
                )
            )
    return tables


def json_text_shape(values: Iterable[str | None]) -> str | None:
    """Whether the sampled ``values`` of a text column are JSON documents: '{}' when every non-empty
    one opens an object ('{' then '"' or '}'), '[]' when every one opens an array ('[' then '{', '"',
    '[' or ']'), else None (also when there is none). Only the opening is read: the scan's sampled
    values may be cut."""
    present = [v.lstrip() for v in values if v and v.strip()]
    if not present:
        return None
    if all(v.startswith("{") and v[1:].lstrip()[:1] in ('"', "}") for v in present):
        return "{}"
    if all(v.startswith("[") and v[1:].lstrip()[:1] in ("{", '"', "[", "]") for v in present):
        return "[]"
    return None


def json_key_reasons(values: Iterable[str | None], masked_paths: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The reasons of a json/jsonb column (or a text column holding JSON documents) whose sampled
    documents hold, under a key a name detector
    flags, a string value (:func:`~.detectors.json_key_findings`) at a path a ``json`` rule does not
    mask (``masked_paths``): one per detector, with the number of documents and up to five paths. A
    document cut by the sample's length limit is not read."""
    import json

    from scalingo_staging_sync.anonymize.transformers import json_path_segments, json_path_text
    from scalingo_staging_sync.pii.detectors import json_key_findings

    masked = {tuple(json_path_segments(p)) for p in masked_paths}

    docs: dict[str, int] = {}
    paths: dict[str, set[str]] = {}
    patterns: dict[str, NamePattern] = {}
    for value in values:
        if not value:
            continue
        try:
            document = json.loads(value)
        except ValueError:
            continue
        seen = set()
        for segments, pattern in json_key_findings(document):
            if segments in masked:
                continue
            patterns[pattern.name] = pattern
            paths.setdefault(pattern.name, set()).add(json_path_text(segments))
            seen.add(pattern.name)
        for name in seen:
            docs[name] = docs.get(name, 0) + 1
    return [
        {
            "kind": "json_key",
            "detector": name,
            "category": patterns[name].category,
            "severity": patterns[name].severity,
            "matches": docs[name],
            "paths": sorted(paths[name])[:5],
        }
        for name in sorted(docs)
    ]


#: documents of a json/jsonb column whose keys are listed (beyond the scan's sample), and documents
#: read per key a name detector flags: a key in a few documents only (GoTrue's audit payloads hold
#: ``traits.user_phone`` in 45 of 20,000) is rarely in a sample of a few hundred
JSON_KEY_SCAN_ROWS = 10000
JSON_KEY_DOCUMENTS = 20
#: keys holding a string or an array (of strings: Chatwoot's ``content_attributes.cc_emails``)
_JSON_TEXT_KEYS = (
    '$.** ? (@.type() == "object").keyvalue() ? (@.value.type() == "string" || @.value.type() == "array").key'
)
_JSON_HAS_KEY = (
    '$.** ? (@.type() == "object").keyvalue() '
    '? (@.key == $k && (@.value.type() == "string" || exists (@.value[*] ? (@.type() == "string"))))'
)


def documents_with_flagged_keys(
    conn: Any,
    schema: str,
    table: str,
    column: str,
    *,
    only: bool = False,
    scan_rows: int = JSON_KEY_SCAN_ROWS,
    per_key: int = JSON_KEY_DOCUMENTS,
    seen: Iterable[str | None] = (),
) -> list[str]:
    """Documents (as text) of the json/jsonb ``column`` (or text column holding JSON documents: one that
    is not fails the query) holding a string under a key that a high
    severity name detector flags (``user_phone``, ``email``, ``password``...), ``per_key`` for each
    such key found among the keys of about ``scan_rows`` documents (the first ones of a table of at most
    twice that many rows, else those of pages drawn from the whole table), at any depth, that none of
    the ``seen`` documents (the sample, as text) holds. Their paths
    are then read like a sample's (:func:`json_key_reasons`, ``json_path_specs``). A query that fails
    (a permission, a timeout) gives none: the sample alone is judged, as before."""
    from psycopg import sql

    from scalingo_staging_sync.pii.detectors import json_key_patterns

    relation = sql.SQL("{}{}").format(
        sql.SQL("ONLY ") if only else sql.SQL(""), sql.Identifier(schema, table)
    )
    col = sql.Identifier(column)
    out: list[str] = []
    try:
        with conn.transaction():
            # a large table's documents come from pages drawn from the whole table (its first rows may
            # all be older than a key), about scan_rows of them; a small one's, its first scan_rows
            info = _column_table(conn, schema, table, column)
            limit = scan_rows
            if info is not None and info.relkind in ("r", "m") and info.est_rows > 2 * scan_rows:
                import random

                percent = 100.0 * scan_rows / info.est_rows
                # the same pages for the listing and for each key's documents: one seed per call
                relation = sql.SQL("{} TABLESAMPLE SYSTEM ({}) REPEATABLE ({})").format(
                    relation,
                    sql.Literal(percent),
                    sql.Literal(random.randrange(1 << 30)),  # noqa: S311
                )
                limit = 2 * scan_rows  # pages are drawn unevenly: a few more rows than asked, not fewer
            # '' in a text column holding documents is no document (and no jsonb)
            first = sql.SQL(
                "(SELECT {col} FROM {rel} WHERE {col} IS NOT NULL AND {col}::text <> '' LIMIT {n}) AS s"
            ).format(col=col, rel=relation, n=sql.Literal(limit))
            keys = conn.execute(
                sql.SQL(
                    "SELECT DISTINCT k #>> '{{}}' FROM {}, jsonb_path_query(s.{}::jsonb, {}) AS k"
                ).format(first, col, sql.Literal(_JSON_TEXT_KEYS))
            ).fetchall()
            known = _string_keys(seen)
            flagged = sorted(
                k
                for (k,) in keys
                if k and k not in known and any(p.severity == "high" for p in json_key_patterns(k))
            )
            for key in flagged:
                rows = conn.execute(
                    sql.SQL(
                        "SELECT s.{col}::text FROM {first} WHERE jsonb_path_exists(s.{col}::jsonb, {path}, "
                        "jsonb_build_object('k', %s::text)) LIMIT {n}"
                    ).format(col=col, first=first, path=sql.Literal(_JSON_HAS_KEY), n=sql.Literal(per_key)),
                    (key,),
                ).fetchall()
                out += [r[0] for r in rows if r[0]]
    except Exception as exc:  # noqa: BLE001 - the sample alone is judged
        log.info("keys of %s.%s.%s not listed: %s", schema, table, column, type(exc).__name__)
    return out


def _string_keys(texts: Iterable[str | None]) -> set[str]:
    """The keys holding a string or an array with a string, at any depth, of the JSON documents
    ``texts`` (unparsable: none)."""
    import json

    keys: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if isinstance(v, str) or (isinstance(v, list) and any(isinstance(x, str) for x in v)):
                    keys.add(str(k))
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    for text in texts:
        if not text:
            continue
        try:
            walk(json.loads(text))
        except ValueError:
            continue
    return keys


# --------------------------------------------------------------------------------------------------
# Copies of masked originals
# --------------------------------------------------------------------------------------------------

#: a column holds copies when this many distinct sampled e-mail addresses, or names, turn up in it
COPY_MIN_EMAILS = 1
COPY_MIN_NAMES = 2
COPY_DETECTOR = "copy.masked_originals"
#: the name detectors of the columns whose values :meth:`CopyIndex.of_people` reads
PEOPLE_DETECTORS = frozenset({"personal.name", "personal.name_in_person_table", "contact.email"})
#: rows read per table by :meth:`CopyIndex.of_people` (``scan``: ten times what a masking proof keeps,
#: so that a note quoting a few of 2,300 people's names is found; Mastodon's ``account_warnings.text``
#: was not with 200; the whole scan of that database took 2.1 s against 1.7 s)
PEOPLE_SAMPLE_ROWS = 2000
#: the characters of each sampled value looked through for copies
COPY_MAX_CHARS = 4096


@dataclass
class CopyIndex:
    """Phrase hashes of the masked tables' sampled originals (their proofs' ``phrases``), each with
    the tables it came from."""

    key: bytes
    emails: dict[str, set[str]] = field(default_factory=dict)
    names: dict[str, set[str]] = field(default_factory=dict)
    #: first_word_tag of the names' first words (None: every run of words is hashed)
    firsts: set[int] | None = None
    #: numbers of words of the names (None: every run of two to six words is hashed)
    lengths: set[int] | None = None
    #: columns ("schema.table.column") the phrases were read from: not searched for copies of themselves
    sources: set[str] = field(default_factory=set)

    @classmethod
    def from_results(cls, results: Iterable[Mapping[str, Any]], salt: str) -> CopyIndex | None:
        """The index of the masking results' proofs (None when none carries phrases)."""
        from scalingo_staging_sync.fingerprint import MAX_SPLIT_WORDS, PHRASE_ALGORITHM, phrase_key

        index = cls(key=phrase_key(salt))
        for result in results:
            phrases = ((result or {}).get("proof") or {}).get("phrases") or {}
            if not phrases:
                continue
            if phrases.get("algorithm") != PHRASE_ALGORITHM:
                raise ValueError(
                    f"the proof of {result.get('table')} holds phrases of algorithm "
                    f"{phrases.get('algorithm')!r}, not {PHRASE_ALGORITHM!r}: re-run its masking task"
                )
            table = str(TableName.parse(str(result["table"])))
            for h in phrases.get("emails") or ():
                index.emails.setdefault(h, set()).add(table)
            for h in phrases.get("names") or ():
                index.names.setdefault(h, set()).add(table)
            if phrases.get("names"):
                index.firsts = (index.firsts or set()) | {int(t) for t in phrases.get("firsts") or ()}
                if phrases.get("lengths") is None:  # a proof that does not say: every length
                    index.lengths = set(range(2, MAX_SPLIT_WORDS + 1))
                else:
                    index.lengths = (index.lengths or set()) | {int(n) for n in phrases["lengths"]}
        return index if index.emails or index.names else None

    @classmethod
    def of_people(
        cls, conn: Any, tables: Sequence[TableInfo], sample_rows: int = PEOPLE_SAMPLE_ROWS
    ) -> CopyIndex | None:
        """The index of the names and e-mail addresses of a database's people, read where they are
        (``scan`` on production, where no masking proof exists): the text columns that name
        detectors call a person's name or e-mail address, and the string values of json/jsonb
        documents under keys they call so (pretix's ``name_parts`` {"given_name", "family_name"},
        Supabase's ``raw_user_meta_data.full_name``), ``sample_rows`` rows of each table, hashed with a
        random key of this process."""
        import os

        from scalingo_staging_sync.fingerprint import first_word_tag, phrase_hash, row_phrases

        index = cls(key=os.urandom(32), firsts=set(), lengths=set())
        for table in tables:
            if table.relkind != "r":
                continue
            context = table_of_people(table.name, [(c.name, c.kind) for c in table.columns])
            people = [
                c.name
                for c in table.columns
                if c.sampled
                and any(p.name in PEOPLE_DETECTORS for p in detect_by_name(c.name, context, kind=c.kind))
            ]
            documents = [c.name for c in table.columns if c.type_name in ("json", "jsonb")]
            if not people and not documents:
                continue
            try:
                rows = sample_table(conn, table, people + documents, sample_rows, COPY_MAX_CHARS)
            except Exception:  # noqa: BLE001 - the scan samples the table again and records its error
                continue
            found: set[str] = set()
            for row in rows:
                values = [v[:1000] for v in row[: len(people)] if v]
                for column, text in zip(documents, row[len(people) :], strict=True):
                    named = _json_people_values(text)
                    if named:
                        values += named
                        found.add(column)
                emails, names = row_phrases(values)
                for phrase in emails:
                    index.emails.setdefault(phrase_hash(index.key, phrase), set()).add(table.qualified_name)
                for phrase in names:
                    index.names.setdefault(phrase_hash(index.key, phrase), set()).add(table.qualified_name)
                    index.firsts.add(first_word_tag(index.key, phrase.split(" ", 1)[0]))  # type: ignore[union-attr]
                    index.lengths.add(phrase.count(" ") + 1)  # type: ignore[union-attr]
                if emails or names:
                    found.update(people)
            index.sources.update(f"{table.qualified_name}.{c}" for c in found)
        return index if index.emails or index.names else None

    def matches(self, values: Iterable[str | None]) -> tuple[int, int, list[str]]:
        """(distinct e-mails, distinct names) of the index found in ``values``, and their tables."""
        from scalingo_staging_sync.fingerprint import phrase_hash, run_lengths, text_phrases

        emails: set[str] = set()
        names: set[str] = set()
        sizes = run_lengths(self.lengths)
        for value in values:
            if not value:
                continue
            for phrase, is_email in text_phrases(value[:COPY_MAX_CHARS], self.firsts, self.key, sizes):
                h = phrase_hash(self.key, phrase)
                if is_email and h in self.emails:
                    emails.add(h)
                elif not is_email and h in self.names:
                    names.add(h)
        tables = {t for h in emails for t in self.emails[h]} | {t for h in names for t in self.names[h]}
        return len(emails), len(names), sorted(tables)

    def copies(self, values: Iterable[str | None]) -> dict[str, Any] | None:
        """The finding's reason when ``values`` hold copies, else None."""
        n_emails, n_names, tables = self.matches(values)
        if n_emails < COPY_MIN_EMAILS and n_names < COPY_MIN_NAMES:
            return None
        return {
            "kind": "copy",
            "detector": COPY_DETECTOR,
            "severity": "high",
            "matches": n_emails + n_names,
            "emails": n_emails,
            "names": n_names,
            "tables": tables,
        }


def _json_people_values(text: str | None) -> list[str]:
    """The string values of the JSON document ``text`` under keys that name detectors call a person's
    name or e-mail address (a text that is not JSON, or was cut by the sample: none)."""
    import json

    from scalingo_staging_sync.pii.detectors import json_key_findings

    if not text:
        return []
    try:
        document = json.loads(text)
    except ValueError:
        return []
    from scalingo_staging_sync.anonymize.transformers import json_values_at

    paths = dict.fromkeys(s for s, p in json_key_findings(document) if p.name in PEOPLE_DETECTORS)
    return [v for s in paths for v in json_values_at(document, s) if isinstance(v, str) and v]


# --------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------


def sample_plan(table: TableInfo, sample_rows: int) -> float | None:
    """TABLESAMPLE SYSTEM percentage for ``table``, or None to read it whole, in random order up to
    :data:`RANDOM_ORDER_MAX_PAGES`, with LIMIT (small tables)."""
    if table.pages <= SMALL_TABLE_PAGES:
        return None
    est_rows = table.est_rows if table.est_rows and table.est_rows > 0 else table.pages * _ROWS_PER_PAGE_GUESS
    percent = 100.0 * 3 * sample_rows / max(est_rows, 1.0)  # x3: SYSTEM samples whole pages, unevenly
    return None if percent >= 50 else max(percent, 0.0001)


def sample_table(
    conn,
    table: TableInfo,
    columns: Sequence[str],
    sample_rows: int,
    max_value_chars: int,
    where: Any = None,
) -> list[tuple]:
    """One query per table: the text of ``columns`` for up to ``sample_rows`` rows (those of the
    ``psycopg.sql`` condition ``where`` only, when given; sent as a prepared statement, so a
    condition cannot carry a second statement)."""
    from psycopg import sql

    if where is None:
        where = sql.SQL("")
    else:
        where = sql.SQL(" WHERE {}").format(where)

    types = {c.name: c.type_name for c in table.columns}

    def text_of(column: str) -> Any:
        if types.get(column) == "tsvector":  # 'annemie':2 'pruschke':3 -> "annemie pruschke" (phrases)
            return sql.SQL(
                "(SELECT string_agg(l.lexeme, ' ' ORDER BY l.positions[1] NULLS LAST, l.lexeme) "
                "FROM unnest({}) AS l)"
            ).format(sql.Identifier(column))
        return sql.SQL("{}::text").format(sql.Identifier(column))

    select = sql.SQL(", ").join(
        sql.SQL("left({}, {})").format(text_of(c), sql.Literal(max_value_chars)) for c in columns
    )
    # ONLY: an inheritance parent's own rows; its children are scanned as tables of their own
    relation = sql.SQL("{}{}").format(
        sql.SQL("ONLY ") if table.relkind == "r" else sql.SQL(""), sql.Identifier(table.schema, table.name)
    )
    percent = sample_plan(table, sample_rows)
    order = (
        sql.SQL(" ORDER BY random()")
        if percent is None and table.pages <= RANDOM_ORDER_MAX_PAGES
        else sql.SQL("")
    )
    with conn.cursor() as cur:
        for _attempt in range(3):
            if percent is None:
                break
            # ORDER BY random(): the sampled pages come in physical order, so LIMIT alone would keep
            # those of the table's first third (Mattermost's newest posts, the only ones with
            # attachments, were never read); their rows are few (about 3 x LIMIT), sorted cheaply
            query = sql.SQL("SELECT {} FROM {} TABLESAMPLE SYSTEM ({}){} ORDER BY random() LIMIT {}").format(
                select, relation, sql.Literal(percent), where, sql.Literal(sample_rows)
            )
            cur.execute(query, prepare=True)
            rows = cur.fetchall()
            if len(rows) >= sample_rows:
                return rows
            if rows:  # scale the percentage from what this one returned
                percent = percent * min(sample_rows * 1.5 / len(rows), 20.0)
            else:
                percent *= 20
            if percent >= 50:
                percent = None
        cur.execute(
            sql.SQL("SELECT {} FROM {}{}{} LIMIT {}").format(
                select, relation, where, order, sql.Literal(sample_rows)
            ),
            prepare=True,
        )
        return cur.fetchall()


def _column_table(conn, schema: str, table: str, column: str) -> TableInfo | None:
    """The :class:`TableInfo` of one column's table, sized as :func:`list_tables` sizes the tables it
    scans, with that column only; None when there is no such column."""
    from psycopg import sql

    row = conn.execute(_COLUMN_SQL, (sql.Identifier(schema, table).as_string(conn), column)).fetchone()
    if row is None:
        return None
    relkind, est_rows, pages, type_name = row
    return TableInfo(
        schema=schema,
        name=table,
        oid=0,
        relkind=relkind,
        est_rows=est_rows,
        pages=pages,
        columns=[ColumnInfo(column, type_name, True)],
    )


def sample_column(conn, schema: str, table: str, column: str, sample_rows: int) -> list[str]:
    """Up to ``sample_rows`` whole non-null values of one column as text, drawn from the whole table as
    :func:`sample_table` draws them (``scan --suggest-rules`` reads a json column's documents again
    with it: the table's first rows may all be alike, its newest hold the newest keys)."""
    from psycopg import sql

    info = _column_table(conn, schema, table, column)
    if info is None:
        return []
    where = sql.SQL("{} IS NOT NULL").format(sql.Identifier(column))
    rows = sample_table(conn, info, [column], sample_rows, WHOLE_VALUE_CHARS, where)
    return [r[0] for r in rows]


#: ``left(value, n)`` that keeps any value whole (a text value is at most 1 GB)
WHOLE_VALUE_CHARS = 1_073_741_824


# --------------------------------------------------------------------------------------------------
# Scan
# --------------------------------------------------------------------------------------------------


def count_content_matches(
    rows: Sequence[Sequence[str | None]], n_columns: int, patterns: Sequence[ContentPattern]
) -> tuple[list[dict[str, int]], list[int]]:
    """Per column: {detector: number of values it matched}, and the number of non-null values."""
    matches: list[dict[str, int]] = [{} for _ in range(n_columns)]
    non_null = [0] * n_columns
    for row in rows:
        for index in range(n_columns):
            value = row[index]
            if value is None or value == "":
                continue
            non_null[index] += 1
            if is_uuid(value):
                continue
            has_digit = any(ch.isdigit() for ch in value)
            for pattern in patterns:
                if pattern.needs_digit and not has_digit:
                    continue
                if pattern.hint and pattern.hint not in value:
                    continue
                if pattern.matches(value):
                    counts = matches[index]
                    counts[pattern.name] = counts.get(pattern.name, 0) + 1
    return matches, non_null


def _without_masked_paths(
    rows: Sequence[Sequence[str | None]], paths_by_index: Sequence[Sequence[str] | None]
) -> list[tuple]:
    """Rows with the JSON documents of partially masked columns stripped of the values at their masked
    paths (what is left is what the content detectors must judge); other columns as they are."""
    out = []
    for row in rows:
        values = list(row)
        for i, paths in enumerate(paths_by_index):
            if paths and values[i] is not None:
                values[i] = strip_json_paths(values[i], paths)
        out.append(tuple(values))
    return out


def strip_json_paths(text: str, paths: Sequence[str]) -> str:
    """The JSON document ``text`` without the values at ``paths`` (``a.b``, ``items.*.email``); a text that
    is not JSON is returned as it is (then judged whole)."""
    import json

    from scalingo_staging_sync.anonymize.transformers import json_path_segments

    try:
        doc = json.loads(text)
    except ValueError:
        return text
    for path in paths:
        doc = _drop_path(doc, json_path_segments(str(path)))
    return json.dumps(doc, ensure_ascii=False)


def _drop_path(value: Any, segments: list[str]) -> Any:
    if not segments:
        return None
    head, rest = segments[0], segments[1:]
    if head == "*":
        return [_drop_path(v, rest) for v in value] if isinstance(value, list) else value
    if isinstance(value, dict) and head in value:
        return {**value, head: _drop_path(value[head], rest)}
    if isinstance(value, list) and head.isdigit() and int(head) < len(value):
        i = int(head)
        return [*value[:i], _drop_path(value[i], rest), *value[i + 1 :]]
    return value


DEFAULT_MAX_LARGE_OBJECTS = 200
LARGE_OBJECTS_TABLE = TableName("pg_catalog", "pg_largeobject")


def _outside(condition: str):
    """``(<condition>) IS NOT TRUE``: the rows a conditional rule leaves as they are (false or NULL)."""
    from psycopg import sql

    return sql.SQL("(\n{}\n) IS NOT TRUE").format(sql.SQL(condition))


def _is_empty(conn, table: TableInfo) -> bool:
    from psycopg import sql

    only = sql.SQL("ONLY ") if table.relkind == "r" else sql.SQL("")
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {}{})").format(
                only, sql.Identifier(table.schema, table.name)
            )
        )
        return bool(cur.fetchone()[0])


def large_object_text(data: bytes) -> str:
    """The text the content detectors read from a large object's first bytes: UTF-16 when it has a byte
    order mark or looks like it (a NUL in every other byte: Windows "Unicode text" exports), else UTF-8,
    else Windows-1252/Latin-1 (which never fails), so an address in any of them reads as one word.
    NULs left over (binary files) become spaces."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = data.decode("utf-16", "replace")
    elif len(data) >= 8 and data[1::2].count(0) * 4 >= len(data):
        text = data.decode("utf-16-le", "replace")
    elif len(data) >= 8 and data[0::2].count(0) * 4 >= len(data):
        text = data.decode("utf-16-be", "replace")
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("cp1252", "replace")
    return text.replace("\x00", " ")


def scan_large_objects(
    conn, patterns: Sequence[ContentPattern], max_objects: int, max_bytes: int
) -> tuple[dict[str, Any], dict[str, int], int]:
    """Content detection over up to ``max_objects`` large objects (first ``max_bytes`` bytes of each,
    read by :func:`large_object_text`). Returns (counts for the report, matches per detector, non-empty
    objects)."""
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_largeobject_metadata")
        total = int(cur.fetchone()[0])
        cur.execute("SELECT oid FROM pg_largeobject_metadata ORDER BY oid LIMIT %s", (max_objects,))
        oids = [r[0] for r in cur.fetchall()]
        texts: list[tuple[str | None]] = []
        read = 0
        for oid in oids:
            cur.execute("SELECT lo_get(%s, 0, %s)", (oid, max_bytes))
            data = bytes(cur.fetchone()[0] or b"")
            read += len(data)
            texts.append((large_object_text(data) if data else None,))
    matches, non_null = count_content_matches(texts, 1, patterns)
    summary = {
        "kept": True,
        "count": total,
        "sampled": len(oids),
        "bytes_read": read,
        "matches": dict(sorted(matches[0].items())),
        "unexpected": False,
    }
    return summary, matches[0], non_null[0]


def scan_database(
    conn,
    *,
    database: str = "",
    schemas: Sequence[str] | None = None,
    masked_columns: Iterable[str] | None = None,
    allow: Iterable[Any] | None = None,
    extra_patterns: Mapping[str, Any] | None = None,
    sample_rows: int = DEFAULT_SAMPLE_ROWS,
    max_value_chars: int = DEFAULT_MAX_VALUE_CHARS,
    name_patterns: Sequence[NamePattern] | None = None,
    content_patterns: Sequence[ContentPattern] | None = None,
    excluded_tables: Sequence[TableName | str] = (),
    conditional: Mapping[TableName | str, str] | None = None,
    large_objects: bool = False,
    max_large_objects: int = DEFAULT_MAX_LARGE_OBJECTS,
    partially_masked: Mapping[str, Sequence[str]] | None = None,
    copies: CopyIndex | None = None,
    tables: Sequence[TableInfo] | None = None,
) -> ScanReport:
    """Scan the database ``conn`` is connected to (an autocommit psycopg connection).

    ``excluded_tables``: tables whose data was not restored (a parent covers its partitions and
    inheritance children); ``conditional``: table -> condition of its conditional rule;
    ``large_objects``: whether the rules keep large objects; ``partially_masked``: masked column ->
    the JSON paths its ``json`` rule masks: its sampled documents go through the content detectors
    without the values at those paths, and what is left is a finding like any; ``copies``: the
    phrases of the masked tables' sampled originals, looked for in every sampled column; ``tables``:
    the tables to scan, as :func:`list_tables` gave them to the caller already (default: listed here,
    in ``schemas``). See the module doc."""
    started = time.monotonic()
    if sample_rows < 1:
        raise ValueError("sample_rows must be >= 1")
    default_names, default_content = build_patterns(extra_patterns)
    name_patterns = tuple(name_patterns) if name_patterns is not None else default_names
    content_patterns = tuple(content_patterns) if content_patterns is not None else default_content
    masked = [_qualify(m) for m in (masked_columns or ())]
    partial = {_qualify(k): list(v) for k, v in (partially_masked or {}).items()}
    allow_entries = parse_allow(allow)
    excluded = {TableName.parse(t) for t in excluded_tables}
    conditions = {TableName.parse(t): c for t, c in (conditional or {}).items() if c}
    matched_masked: set[str] = set()
    by_name = {p.name: p for p in content_patterns}

    tables = list(tables) if tables is not None else list_tables(conn, schemas)
    findings: list[Finding] = []
    errors: dict[str, str] = {}
    excluded_state: dict[str, str] = {}
    outside_counts: dict[str, int] = {}
    columns_scanned = columns_sampled = rows_sampled = 0

    def allow_status(finding: Finding, candidates: Sequence[str]) -> None:
        for entry in allow_entries:
            if matches_any(candidates, [entry.pattern]):
                finding.status, finding.allow_reason = STATUS_ALLOWED, entry.reason
                return

    def sample(table: TableInfo, names: list[str], where: Any = None) -> list[tuple] | None:
        try:
            return sample_table(conn, table, names, sample_rows, max_value_chars, where)
        except Exception as exc:  # noqa: BLE001 - recorded, the scan fails closed on it
            from scalingo_staging_sync.pgerrors import describe_pg_error

            reason = describe_pg_error(exc)  # SQLSTATE and names only, never values
            log.warning("PII scan: could not sample %s (%s)", table.qualified_name, reason)
            errors[table.qualified_name] = reason
            return None

    for table in tables:
        columns_scanned += len(table.columns)
        lineage = [table.table_name, *table.ancestors]
        if any(t in excluded for t in lineage):
            try:
                empty = _is_empty(conn, table)
            except Exception as exc:  # noqa: BLE001 - fail closed
                from scalingo_staging_sync.pgerrors import describe_pg_error

                errors[table.qualified_name] = describe_pg_error(exc)
                continue
            excluded_state[table.qualified_name] = "empty" if empty else "holds rows"
            if not empty:
                log.warning(
                    "PII scan: %s is excluded (its data is not restored) but holds rows", table.qualified_name
                )
            continue
        if not table.populated:
            errors[table.qualified_name] = (
                "materialized view not populated: refresh it from the masked data "
                "(anonymize.postload.refresh_materialized_views) before the scan"
            )
            continue
        condition = next((conditions[t] for t in lineage if t in conditions), None)
        masked_here = {
            c.name: hit for c in table.columns if (hit := matches_any(_candidates(table, c.name), masked))
        }
        matched_masked.update(masked_here.values())
        partial_here = {
            c.name: partial[hit]
            for c in table.columns
            if c.name in masked_here and (hit := matches_any(_candidates(table, c.name), partial))
        }
        outside_cols = [c.name for c in table.columns if c.name in masked_here] if condition else []

        sampled = [c for c in table.columns if c.sampled]
        content: dict[str, tuple[dict[str, int], int]] = {}
        copied: dict[str, dict[str, Any]] = {}
        # reasons that need the sampled values as well as the name: json keys, a random `key`
        keyed: dict[str, list[dict[str, Any]]] = {}
        context = table_of_people(table.name, [(c.name, c.kind) for c in table.columns])
        bookkeeping = migration_bookkeeping(table.name, [c.name for c in table.columns])
        if sampled:
            rows = raw = sample(table, [c.name for c in sampled]) or []
            if partial_here:
                rows = _without_masked_paths(rows, [partial_here.get(c.name) for c in sampled])
            columns_sampled += len(sampled)
            rows_sampled += len(rows)
            counts, non_null = count_content_matches(rows, len(sampled), content_patterns)
            content = {c.name: (counts[i], non_null[i]) for i, c in enumerate(sampled)}
            for i, c in enumerate(sampled):
                docs = [row[i] for row in raw]
                if (c.name not in masked_here or c.name in partial_here) and (
                    c.type_name in ("json", "jsonb")
                    # text holding JSON (a Rails `serialize` column), not an array's '{"a b",c}'
                    or (not c.type_name.endswith("]") and json_text_shape(docs) is not None)
                ):  # its keys judged as column names, those of rare keys' documents too
                    rare = documents_with_flagged_keys(
                        conn, table.schema, table.name, c.name, only=table.relkind == "r", seen=docs
                    )
                    keys = json_key_reasons([*docs, *rare], partial_here.get(c.name) or ())
                    if keys:
                        keyed[c.name] = keys
                elif c.name not in masked_here:
                    token = random_key_reason(c.name, context, docs)
                    if token is not None:
                        keyed[c.name] = [token]
            pair = key_value_columns([c.name for c in sampled])
            if pair is not None and pair[1] not in masked_here:
                ki, vi = (next(i for i, c in enumerate(sampled) if c.name == n) for n in pair)
                secrets = secret_keys((row[ki], row[vi]) for row in raw)
                if secrets:
                    keyed.setdefault(pair[1], []).append(
                        {
                            "kind": "key_value",
                            "detector": KEY_VALUE_DETECTOR,
                            "category": "auth",
                            "severity": "high",
                            "matches": sum(1 for row in raw if row[ki] in secrets and row[vi]),
                            "key_column": pair[0],
                            "keys": secrets[:20],
                        }
                    )
            if copies is not None:
                for i, c in enumerate(sampled):
                    if (c.name not in masked_here or c.name in partial_here) and (
                        f"{table.qualified_name}.{c.name}" not in copies.sources
                    ):
                        hit = copies.copies(row[i] for row in rows)
                        if hit is not None:
                            copied[c.name] = hit
        outside: dict[str, tuple[dict[str, int], int]] = {}
        if outside_cols:
            rows = sample(table, outside_cols, _outside(condition))  # type: ignore[arg-type]
            if rows is not None:
                rows_sampled += len(rows)
                counts, non_null = count_content_matches(rows, len(outside_cols), content_patterns)
                outside = {c: (counts[i], non_null[i]) for i, c in enumerate(outside_cols)}
        for column in table.columns:
            candidates = _candidates(table, column.name)
            reasons: list[dict[str, Any]] = [
                {"kind": "name", "detector": p.name, "category": p.category, "severity": p.severity}
                for p in detect_by_name(column.name, context, name_patterns, kind=column.kind)
            ]
            col_counts, non_null_count = content.get(column.name, ({}, 0))
            if column.name in outside:
                col_counts, non_null_count = outside[column.name]
                if non_null_count:
                    outside_counts[f"{table.qualified_name}.{column.name}"] = non_null_count
                    reasons.append(
                        {
                            "kind": "condition",
                            "detector": "outside_condition",
                            "severity": "high",
                            "matches": non_null_count,
                        }
                    )
            for detector, n in sorted(col_counts.items()):
                if content_ignored_by_name(column.name, detector):
                    continue
                reasons.append(
                    {
                        "kind": "content",
                        "detector": detector,
                        "severity": by_name[detector].severity,
                        "matches": n,
                    }
                )
            reasons += keyed.get(column.name, [])
            if column.name in copied:
                reasons.append(copied[column.name])
            if not reasons:
                continue
            finding = Finding(
                schema=table.schema,
                table=table.name,
                column=column.name,
                type=column.type_name,
                severity=max_severity(r["severity"] for r in reasons),
                reasons=reasons,
                sample_count=max(col_counts.values(), default=0),
                sampled_values=non_null_count,
            )
            if column.name in outside_cols:
                if column.name in outside and outside[column.name][1] == 0:
                    finding.status = STATUS_MASKED  # no row outside the condition holds a value
                else:  # values left as they are (or the sample failed: recorded in errors)
                    allow_status(finding, candidates)
            elif column.name in masked_here and not (
                column.name in partial_here and (col_counts or column.name in copied or column.name in keyed)
            ):
                finding.status = STATUS_MASKED
            else:
                allow_status(finding, candidates)
                if finding.status == STATUS_UNMASKED and bookkeeping:
                    finding.status, finding.allow_reason = STATUS_ALLOWED, bookkeeping
            findings.append(finding)

    lo_summary: dict[str, Any] = {"kept": bool(large_objects)}
    try:
        if large_objects:
            lo_summary, lo_matches, lo_non_null = scan_large_objects(
                conn, content_patterns, max_large_objects, max_value_chars
            )
            if lo_matches:
                finding = Finding(
                    schema=LARGE_OBJECTS_TABLE.schema,
                    table=LARGE_OBJECTS_TABLE.name,
                    column="data",
                    type="bytea",
                    severity=max_severity(by_name[d].severity for d in lo_matches),
                    reasons=[
                        {"kind": "content", "detector": d, "severity": by_name[d].severity, "matches": n}
                        for d, n in sorted(lo_matches.items())
                    ],
                    sample_count=max(lo_matches.values()),
                    sampled_values=lo_non_null,
                )
                allow_status(finding, [f"{LARGE_OBJECTS_TABLE}.data"])
                findings.append(finding)
        else:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM pg_largeobject_metadata")
                count = int(cur.fetchone()[0])
            lo_summary.update({"count": count, "unexpected": count > 0})
    except Exception as exc:  # noqa: BLE001 - fail closed
        from scalingo_staging_sync.pgerrors import describe_pg_error

        errors[str(LARGE_OBJECTS_TABLE)] = describe_pg_error(exc)

    findings.sort(key=lambda f: (f.status != STATUS_UNMASKED, -severity_rank(f.severity), f.qualified_name))
    report = ScanReport(
        database=database,
        schemas=sorted({t.schema for t in tables}),
        tables_scanned=len(tables),
        columns_scanned=columns_scanned,
        columns_sampled=columns_sampled,
        rows_sampled=rows_sampled,
        sample_rows=sample_rows,
        findings=findings,
        duration_s=time.monotonic() - started,
        errors=errors,
        unknown_masked=sorted(set(masked) - matched_masked),
        excluded=excluded_state,
        outside_condition=outside_counts,
        large_objects=lo_summary,
    )
    log.info(
        "PII scan of %s: %d tables (%d excluded), %d columns (%d sampled), %d findings %s, "
        "large objects %s in %.2fs",
        database or "database",
        report.tables_scanned,
        len(excluded_state),
        columns_scanned,
        columns_sampled,
        len(findings),
        report.counts(),
        {k: v for k, v in lo_summary.items() if k != "matches"},
        report.duration_s,
    )
    for finding in report.unmasked:
        log.warning("PII scan: unmasked %s [%s] %s", finding.qualified_name, finding.severity, finding.reason)
    for table in report.excluded_not_empty:
        log.warning("PII scan: excluded table %s holds rows", table)
    if lo_summary.get("unexpected"):
        log.warning("PII scan: %d large object(s) present although not kept", lo_summary["count"])
    return report


def scan_target(target, **kwargs: Any) -> ScanReport:
    """:func:`scan_database` on a :class:`~scalingo_staging_sync.pgconn.PgTarget` (the staging database
    of a sync): the role's or database's own timeouts are turned off in its session, as the load and
    verification do (a lock held a moment by another session must not fail the scan)."""
    with target.connect(autocommit=True) as conn:
        turn_off_timeouts(conn)
        return scan_database(conn, database=target.dbname, **kwargs)


def enforce(report: ScanReport, on_unmasked: str = "fail") -> None:
    """Raise :class:`UnmaskedPiiError` when ``on_unmasked == "fail"`` and the report did not pass."""
    if on_unmasked not in ("fail", "warn"):
        raise ValueError(f"on_unmasked must be 'fail' or 'warn', got {on_unmasked!r}")
    if not report.passed:
        if on_unmasked == "fail":
            raise UnmaskedPiiError(report)
        log.warning(
            "PII scan: %d unmasked column(s) (on_unmasked=warn, continuing): %s",
            len(report.unmasked),
            ", ".join(f.qualified_name for f in report.unmasked),
        )
