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
from scalingo_staging_sync.pii.detectors import (
    ContentPattern,
    NamePattern,
    build_patterns,
    detect_by_name,
    max_severity,
    severity_rank,
)

log = logging.getLogger(__name__)

DEFAULT_SAMPLE_ROWS = 1000
DEFAULT_MAX_VALUE_CHARS = 8192
SMALL_TABLE_PAGES = 128  # below this many 8 kB pages, read the first rows with LIMIT only
_ROWS_PER_PAGE_GUESS = 60  # when the table was never analyzed (reltuples = -1)

SKIPPED_SCHEMAS = ("pg_catalog", "information_schema")
_TEXT_TYPES = {"json", "jsonb", "xml", "inet", "cidr", "macaddr", "macaddr8", "hstore", "citext"}

STATUS_MASKED = "masked"
STATUS_ALLOWED = "allowed"
STATUS_UNMASKED = "unmasked"


class UnmaskedPiiError(SyncError):
    """Raised when ``on_unmasked="fail"`` and the scan found unmasked personal data."""

    def __init__(self, report: ScanReport):
        self.report = report
        columns = [f.qualified_name for f in report.unmasked]
        message = (
            f"PII scan found {len(columns)} unmasked column(s) holding personal data: {', '.join(columns)}. "
            "Mask them with a rule in anonymization_tables, or list them under pii_scan.allow "
            '("schema.table.column" or {column: ..., reason: ...}).'
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

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass
class ColumnInfo:
    name: str
    type_name: str
    sampled: bool


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
        return f"{self.schema}.{self.table}.{self.column}"

    @property
    def reason(self) -> str:
        parts = []
        for r in self.reasons:
            if r["kind"] == "name":
                parts.append(f"name:{r['detector']}")
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

    @property
    def unmasked(self) -> list[Finding]:
        return [f for f in self.findings if f.status == STATUS_UNMASKED]

    @property
    def passed(self) -> bool:
        return not self.unmasked and not self.errors

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
    names = [f"{table.qualified_name}.{column}"]
    if table.root:
        names.append(f"{table.root}.{column}")
    return names


def _matches_any(names: Sequence[str], patterns: Iterable[str]) -> str | None:
    for pattern in patterns:
        for name in names:
            if fnmatch.fnmatchcase(name, pattern):
                return pattern
    return None


# --------------------------------------------------------------------------------------------------
# Catalog
# --------------------------------------------------------------------------------------------------

_TABLES_SQL = """
SELECT n.nspname, c.relname, c.oid::bigint, c.relkind::text, c.reltuples::float8,
       (pg_relation_size(c.oid) / current_setting('block_size')::int)::bigint,
       CASE WHEN c.relispartition THEN
         (SELECT rn.nspname || '.' || rc.relname FROM pg_class rc JOIN pg_namespace rn ON rn.oid = rc.relnamespace
          WHERE rc.oid = pg_partition_root(c.oid)) END
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp\\_%%'
  AND (%(schemas)s::text[] IS NULL OR n.nspname = ANY(%(schemas)s::text[]))
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass
                  AND d.objid = n.oid AND d.deptype = 'e')
ORDER BY n.nspname, c.relname
"""

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


def list_tables(conn, schemas: Sequence[str] | None = None) -> list[TableInfo]:
    """User tables and materialized views with their columns (see module doc for the scope)."""
    with conn.cursor() as cur:
        cur.execute(_TABLES_SQL, {"schemas": list(schemas) if schemas else None})
        tables = [
            TableInfo(schema=r[0], name=r[1], oid=r[2], relkind=r[3], est_rows=r[4], pages=r[5], root=r[6])
            for r in cur.fetchall()
        ]
        if not tables:
            return []
        by_oid = {t.oid: t for t in tables}
        cur.execute(_COLUMNS_SQL, (list(by_oid),))
        for oid, name, type_name, typname, category, elem_name, elem_category in cur.fetchall():
            by_oid[oid].columns.append(
                ColumnInfo(name, type_name, _is_text_like(typname, category, elem_name, elem_category))
            )
    return tables


# --------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------


def sample_plan(table: TableInfo, sample_rows: int) -> float | None:
    """TABLESAMPLE SYSTEM percentage for ``table``, or None to read with LIMIT only (small tables)."""
    if table.pages <= SMALL_TABLE_PAGES:
        return None
    est_rows = table.est_rows if table.est_rows and table.est_rows > 0 else table.pages * _ROWS_PER_PAGE_GUESS
    percent = 100.0 * 3 * sample_rows / max(est_rows, 1.0)  # x3: SYSTEM samples whole pages, unevenly
    return None if percent >= 50 else max(percent, 0.0001)


def sample_table(
    conn, table: TableInfo, columns: Sequence[str], sample_rows: int, max_value_chars: int
) -> list[tuple]:
    """One query per table: the text of ``columns`` for up to ``sample_rows`` rows."""
    from psycopg import sql

    select = sql.SQL(", ").join(
        sql.SQL("left({}::text, {})").format(sql.Identifier(c), sql.Literal(max_value_chars)) for c in columns
    )
    relation = sql.SQL("{}.{}").format(sql.Identifier(table.schema), sql.Identifier(table.name))
    percent = sample_plan(table, sample_rows)
    with conn.cursor() as cur:
        for _attempt in range(3):
            if percent is None:
                break
            query = sql.SQL("SELECT {} FROM {} TABLESAMPLE SYSTEM ({}) LIMIT {}").format(
                select, relation, sql.Literal(percent), sql.Literal(sample_rows)
            )
            cur.execute(query)
            rows = cur.fetchall()
            if len(rows) >= sample_rows:
                return rows
            if rows:  # scale the percentage from what this one returned
                percent = percent * min(sample_rows * 1.5 / len(rows), 20.0)
            else:
                percent *= 20
            if percent >= 50:
                percent = None
        cur.execute(sql.SQL("SELECT {} FROM {} LIMIT {}").format(select, relation, sql.Literal(sample_rows)))
        return cur.fetchall()


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
) -> ScanReport:
    """Scan the database ``conn`` is connected to (an autocommit psycopg connection)."""
    started = time.monotonic()
    if sample_rows < 1:
        raise ValueError("sample_rows must be >= 1")
    default_names, default_content = build_patterns(extra_patterns)
    name_patterns = tuple(name_patterns) if name_patterns is not None else default_names
    content_patterns = tuple(content_patterns) if content_patterns is not None else default_content
    masked = [_qualify(m) for m in (masked_columns or ())]
    allow_entries = parse_allow(allow)
    matched_masked: set[str] = set()

    tables = list_tables(conn, schemas)
    findings: list[Finding] = []
    errors: dict[str, str] = {}
    columns_scanned = columns_sampled = rows_sampled = 0
    for table in tables:
        columns_scanned += len(table.columns)
        sampled = [c for c in table.columns if c.sampled]
        content: dict[str, tuple[dict[str, int], int]] = {}
        if sampled:
            try:
                rows = sample_table(conn, table, [c.name for c in sampled], sample_rows, max_value_chars)
            except Exception as exc:  # noqa: BLE001 - recorded, the scan fails closed on it
                log.warning("PII scan: could not sample %s (%s)", table.qualified_name, type(exc).__name__)
                errors[table.qualified_name] = type(exc).__name__
                rows = []
            columns_sampled += len(sampled)
            rows_sampled += len(rows)
            counts, non_null = count_content_matches(rows, len(sampled), content_patterns)
            content = {c.name: (counts[i], non_null[i]) for i, c in enumerate(sampled)}
        by_name = {p.name: p for p in content_patterns}
        for column in table.columns:
            reasons: list[dict[str, Any]] = [
                {"kind": "name", "detector": p.name, "category": p.category, "severity": p.severity}
                for p in detect_by_name(column.name, table.name, name_patterns)
            ]
            col_counts, non_null_count = content.get(column.name, ({}, 0))
            for detector, n in sorted(col_counts.items()):
                reasons.append(
                    {
                        "kind": "content",
                        "detector": detector,
                        "severity": by_name[detector].severity,
                        "matches": n,
                    }
                )
            candidates = _candidates(table, column.name)
            masked_hit = _matches_any(candidates, masked)
            if masked_hit:
                matched_masked.add(masked_hit)
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
            if masked_hit:
                finding.status = STATUS_MASKED
            else:
                for entry in allow_entries:
                    if _matches_any(candidates, [entry.pattern]):
                        finding.status, finding.allow_reason = STATUS_ALLOWED, entry.reason
                        break
            findings.append(finding)
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
    )
    log.info(
        "PII scan of %s: %d tables, %d columns (%d sampled), %d findings %s in %.2fs",
        database or "database",
        report.tables_scanned,
        columns_scanned,
        columns_sampled,
        len(findings),
        report.counts(),
        report.duration_s,
    )
    for finding in report.unmasked:
        log.warning("PII scan: unmasked %s [%s] %s", finding.qualified_name, finding.severity, finding.reason)
    return report


def scan_target(target, **kwargs: Any) -> ScanReport:
    """:func:`scan_database` on a :class:`~scalingo_staging_sync.pgconn.PgTarget`."""
    with target.connect(autocommit=True) as conn:
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
