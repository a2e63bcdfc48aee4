"""Planning: check the rules against a table catalog and produce one JSON item per table for
``AnonymizeTableOperator.partial(...).expand(plan=...)``.

The restore flow plans on the archive's inventory, before anything is restored
(:func:`scalingo_staging_sync.inventory.plan_from_archive`, no database needed); this module holds the
checks both paths share (:func:`plan_rule`) and the catalog path for an existing database
(:func:`plan_anonymization`, which also casts ``fixed`` values and EXPLAINs the expressions there).

Every problem is collected and raised together (:class:`PlanError`), each naming its rules entry and key
(``anonymization_tables[1].columns.emial: no such column in public.customer``), before any data moves:
unknown tables and columns, transformers that do not fit the column (type, ``varchar(n)``, NOT NULL,
generated columns), non-unique transformers on a unique/primary key column, conditions that do not
parse as one boolean expression over the table, fixed values that do not cast, custom strategies that
fail to build or ignore the condition. Derived columns are handled (``<col>_md5`` of a masked column is
recomputed from the masked value) or flagged in ``warnings`` (tsvector, other digests, full names).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from scalingo_staging_sync.anonymize.rules import Rules, TableRule, derived_cycle_errors, parse_condition
from scalingo_staging_sync.anonymize.sql import column_expressions, where_clause
from scalingo_staging_sync.anonymize.strategies import (
    StrategyContext,
    StrategyError,
    build_custom_statement,
    get_builtin,
    get_custom,
    resolve_preset,
)
from scalingo_staging_sync.anonymize.transformers import (
    ColumnInfo,
    get_transformer,
    options_of,
    with_email_domain,
)
from scalingo_staging_sync.errors import SyncError
from scalingo_staging_sync.pgconn import PgTarget
from scalingo_staging_sync.tablename import TableName

log = logging.getLogger(__name__)


class PlanError(SyncError, ValueError):
    """Rules that do not fit the tables: every problem, each naming its rules entry and how to fix it.
    Raised before anything is restored; a retry cannot fix it."""

    retryable = False

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__(
            f"{len(self.errors)} anonymization rule error(s):\n" + "\n".join(f"  - {e}" for e in self.errors)
        )


# --------------------------------------------------------------------------------------------------
# Catalog


@dataclass
class TableCatalog:
    schema: str
    name: str
    oid: int
    relkind: str
    columns: dict[str, ColumnInfo]
    primary_key: list[str] = field(default_factory=list)
    unique_indexes: list[tuple[str, list[str]]] = field(default_factory=list)  # (name, columns)
    checks: list[tuple[str, str, list[str]]] = field(default_factory=list)  # (name, definition, columns)
    foreign_keys: list[tuple[str, list[str]]] = field(default_factory=list)  # (name, local columns)
    #: generated (STORED) column -> the columns its expression references
    generated_from: dict[str, list[str]] = field(default_factory=dict)
    #: column -> the CHECK constraints of its domain: (domain, constraint name, expression SQL)
    domain_checks: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)

    @property
    def qualified(self) -> str:
        return str(TableName(self.schema, self.name))

    def column_checks(self, column: str) -> list[tuple[str, str]]:
        """``(name, definition)`` of the table CHECKs on ``column`` alone."""
        return [(n, d) for n, d, cols in self.checks if cols == [column]]


# a domain's base type, length and NOT NULL are read down its chain of domains (a domain over a domain:
# the length is the innermost one's that sets it, NOT NULL anywhere on the chain)
_COLUMNS_SQL = """
SELECT a.attname,
       format_type(a.atttypid, a.atttypmod),
       COALESCE(b.typname, t.typname),
       t.typtype = 'd',
       CASE WHEN COALESCE(b.typname, t.typname) IN ('varchar', 'bpchar')
            THEN NULLIF(CASE WHEN t.typtype = 'd' THEN b.typmod ELSE a.atttypmod END, -1) - 4 END,
       a.attnotnull OR COALESCE(b.not_null, false),
       a.attgenerated <> ''
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN LATERAL (
    WITH RECURSIVE chain(base, typmod, not_null, depth) AS (
        SELECT t.typbasetype, t.typtypmod, t.typnotnull, 1 WHERE t.typtype = 'd'
        UNION ALL
        SELECT d.typbasetype, CASE WHEN c.typmod = -1 THEN d.typtypmod ELSE c.typmod END,
               c.not_null OR d.typnotnull, c.depth + 1
        FROM chain c JOIN pg_type d ON d.oid = c.base AND d.typtype = 'd'
    )
    SELECT bt.typname, c.typmod, c.not_null FROM chain c JOIN pg_type bt ON bt.oid = c.base
    ORDER BY c.depth DESC LIMIT 1
) b ON true
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""
# the key columns in order, then the columns its expressions read (Mastodon's unique index on
# lower(tags.name): masking name with a transformer that is not unique would fail the index)
_INDEXES_SQL = """
SELECT ic.relname, i.indisprimary, i.indisunique OR i.indisexclusion,
       ARRAY(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.ord)
       || ARRAY(SELECT a.attname FROM pg_depend d
                JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                WHERE d.classid = 'pg_class'::regclass AND d.objid = i.indexrelid
                  AND d.refclassid = 'pg_class'::regclass AND d.refobjid = i.indrelid
                  AND d.refobjsubid > 0 AND d.refobjsubid <> ALL (i.indkey::int2[])
                ORDER BY a.attnum)
FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
WHERE i.indrelid = %s
"""
_CONSTRAINTS_SQL = """
SELECT conname, contype, pg_get_constraintdef(c.oid),
       ARRAY(SELECT a.attname FROM pg_attribute a WHERE a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey))
FROM pg_constraint c WHERE c.conrelid = %s AND contype IN ('c', 'f')
"""
_GENERATED_SQL = """
SELECT a.attname,
       ARRAY(SELECT DISTINCT ra.attname FROM pg_depend d
             JOIN pg_attribute ra ON ra.attrelid = d.refobjid AND ra.attnum = d.refobjsubid
             WHERE ((d.classid = 'pg_class'::regclass AND d.objid = a.attrelid AND d.objsubid = a.attnum)
                    OR (d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid))
               AND d.refclassid = 'pg_class'::regclass AND d.refobjid = a.attrelid
               AND d.refobjsubid > 0 AND d.refobjsubid <> a.attnum)
FROM pg_attrdef ad
JOIN pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
WHERE ad.adrelid = %s AND a.attgenerated <> '' AND NOT a.attisdropped
"""

_DOMAIN_CHECKS_SQL = """
WITH RECURSIVE d(attname, typid) AS (
    SELECT a.attname, a.atttypid FROM pg_attribute a
    WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT d.attname, t.typbasetype FROM d JOIN pg_type t ON t.oid = d.typid WHERE t.typtype = 'd'
)
SELECT d.attname::text, tn.nspname::text, t.typname::text, con.conname::text, pg_get_constraintdef(con.oid)
FROM d
JOIN pg_type t ON t.oid = d.typid AND t.typtype = 'd'
JOIN pg_namespace tn ON tn.oid = t.typnamespace
JOIN pg_constraint con ON con.contypid = t.oid AND con.contype = 'c'
ORDER BY 1, 4
"""


def read_table(conn: Any, schema: str, name: str) -> TableCatalog | None:
    """The catalog of one table (None when it does not exist). Names are parameters, never SQL."""
    row = conn.execute(
        "SELECT c.oid, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
        (schema, name),
    ).fetchone()
    if row is None:
        return None
    oid, relkind = row
    columns = {
        r[0]: ColumnInfo(
            name=r[0],
            type_sql=r[1],
            base_type=r[2],
            is_domain=r[3],
            max_length=r[4],
            not_null=r[5],
            generated=r[6],
        )
        for r in conn.execute(_COLUMNS_SQL, (oid,)).fetchall()
    }
    cat = TableCatalog(schema, name, oid, relkind, columns)
    for idx_name, primary, unique, cols in conn.execute(_INDEXES_SQL, (oid,)).fetchall():
        if primary:
            cat.primary_key = list(cols)
        if unique or primary:
            cat.unique_indexes.append((idx_name, list(cols)))
    for con_name, contype, definition, cols in conn.execute(_CONSTRAINTS_SQL, (oid,)).fetchall():
        if contype == "c":
            cat.checks.append((con_name, definition, list(cols)))
        else:
            cat.foreign_keys.append((con_name, list(cols)))
    for col, refs in conn.execute(_GENERATED_SQL, (oid,)).fetchall():
        cat.generated_from[col] = list(refs)
    for col, dschema, dname, con_name, definition in conn.execute(_DOMAIN_CHECKS_SQL, (oid,)).fetchall():
        expression = _domain_check_expression(definition)
        cat.domain_checks.setdefault(col, []).append((str(TableName(dschema, dname)), con_name, expression))
    return cat


def _domain_check_expression(definition: str) -> str:
    """The expression of a domain constraint's ``pg_get_constraintdef`` (``CHECK ((VALUE ...))``, maybe
    ``NOT VALID``), as SQL text; the definition itself when it does not parse as one."""
    import pglast
    from pglast import ast
    from pglast.stream import RawStream

    text = definition.removesuffix(" NOT VALID")
    try:
        stmt = pglast.parse_sql("CREATE DOMAIN _d AS text " + text)[0].stmt
    except pglast.parser.ParseError:
        return definition
    if (
        not isinstance(stmt, ast.CreateDomainStmt)
        or not stmt.constraints
        or stmt.constraints[0].raw_expr is None
    ):
        return definition
    return RawStream()(stmt.constraints[0].raw_expr)


# --------------------------------------------------------------------------------------------------
# Planning

_DIGEST_SUFFIXES = ("_sha1", "_sha256", "_hash", "_digest", "_hmac")


def plan_anonymization(
    target: PgTarget, rules: Rules, dump_path: str | None = None, tools: Any = None
) -> list[dict]:
    """One JSON-serialisable plan item per ``anonymization_tables`` entry (CONTRACTS format).

    With ``dump_path`` (the restore flow) simple rules are planned ``on_load`` (masking trigger during
    the table's COPY) and the others ``in_place``; primary keys come from the archive's post-data when
    the catalog has none yet. Without it (an existing database) everything is ``in_place``.
    """
    dump_pks: dict[str, list[str]] = {}
    if dump_path:
        dump_pks = archive_row_keys(dump_path, tools)
    errors: list[str] = []
    items: list[dict] = []
    masking: dict[TableName, tuple[TableRule, dict]] = {}
    unplanned: list[TableName] = []
    with target.connect(autocommit=True) as conn:
        for rule in rules.anonymization_tables:
            name = rule.table_name
            cat = read_table(conn, name.schema, name.name)
            if cat is None:
                errors.append(f"{rule.where}.table: no such table {name}")
                continue
            item = plan_rule(cat, rules, rule, from_dump=dump_path is not None, dump_pks=dump_pks,
                             errors=errors, conn=conn)  # fmt: skip
            if item is not None:
                masking[name] = (rule, item)
                items.extend(_leaf_partitions(conn, item, dump_pks) if dump_path else [item])
            else:
                unplanned.append(name)
        if masking:
            errors.extend(ruled_ancestor_refusals(conn, masking))
            errors.extend(catalog_key_refusals(conn, rules, masking, unplanned))
    if errors:
        raise PlanError(errors)
    for item in items:
        for warning in item["warnings"]:
            log.warning("%s: %s", item["table"], warning)
    return items


def _leaf_partitions(conn: Any, item: dict, dump_pks: Mapping[str, list[str]]) -> list[dict]:
    """A partitioned table's rows live in its leaf partitions, each with its own TABLE DATA in the
    archive: plan one item per leaf (same rules), so each partition's rows load through its own
    masking trigger and none is left to the unmasked data load."""
    parent = conn.execute(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s AND c.relkind = 'p'",
        (item["schema"], item["name"]),
    ).fetchone()
    if parent is None:
        return [item]
    leaves = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_partition_tree(%s) t"
        " JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE t.isleaf ORDER BY 1, 2",
        (parent[0],),
    ).fetchall()
    if not leaves:
        return [item]
    out = []
    for schema, name in leaves:
        key = str(TableName(schema, name))
        leaf = dict(item, schema=schema, name=name, table=key)
        leaf["key_columns"] = dump_pks.get(key) or item["key_columns"]
        leaf["warnings"] = [
            *[w for w in item["warnings"] if not w.startswith("partitioned table")],
            f"partition of {item['table']}: masked with its parent's rules",
        ]
        out.append(leaf)
    log.info("%s is partitioned: planned its %d leaf partitions", item["table"], len(out))
    return out


def archive_primary_keys(dump_path: str, tools: Any) -> dict[str, list[str]]:
    """``{str(TableName): [pk columns]}`` from the archive's inventory (post-data, pglast-parsed)."""
    from scalingo_staging_sync.inventory.build import build_inventory

    inv = build_inventory(dump_path, tools)
    return {str(t.name): t.primary_key for t in inv.tables.values() if t.primary_key}


def archive_row_keys(dump_path: str, tools: Any) -> dict[str, list[str]]:
    """``{str(TableName): [key columns]}``: each table's primary key, else a unique key on NOT NULL
    columns (:attr:`~scalingo_staging_sync.inventory.model.Table.row_key`), from the archive's
    inventory: the key the residual proof finds its sampled rows again by."""
    from scalingo_staging_sync.inventory.build import build_inventory

    inv = build_inventory(dump_path, tools)
    return {str(t.name): t.row_key for t in inv.tables.values() if t.row_key}


def plan_rule(
    cat: TableCatalog,
    rules: Rules,
    rule: TableRule,
    *,
    from_dump: bool,
    dump_pks: Mapping[str, list[str]],
    errors: list[str],
    conn: Any = None,
) -> dict | None:
    """Check one rule against its table's catalog and return its plan item (None when it has errors,
    appended to ``errors``). ``conn`` (optional): a connection to a database holding the table, for the
    checks only a server can do (``fixed`` casts, EXPLAIN of the expressions and the condition);
    without it the condition is parsed with pglast and its column references checked."""
    where = rule.where
    schema, name = cat.schema, cat.name
    n_errors = len(errors)
    warnings: list[str] = []
    specs: dict[str, dict[str, Any]] = {}
    masked: list[str] = []
    custom = None
    error_prefix = f"{where}.columns"

    if rule.strategy:
        preset = get_builtin(rule.strategy)
        if preset is not None:
            specs, notes = resolve_preset(preset, cat.columns)
            warnings.extend(notes)
            error_prefix = f"{where}.strategy({rule.strategy})"
            if not specs and not rule.columns:
                errors.append(f"{where}.strategy: {rule.strategy} matches no column of {cat.qualified}")
        else:
            custom = get_custom(rule.strategy)
            if custom is None:
                errors.append(f"{where}.strategy: unknown strategy {rule.strategy!r}")
            elif rule.columns:
                errors.append(
                    f"{where}.columns: columns can only refine a built-in strategy, not the custom "
                    f"strategy {rule.strategy!r}; move these columns into the strategy or a separate entry"
                )
    if rule.columns and custom is None:
        if rule.strategy:  # columns override or extend the preset's choices
            error_prefix = f"{where}.columns"
        for col, spec in rule.columns.items():
            if col not in cat.columns:
                errors.append(f"{where}.columns.{col}: no such column in {cat.qualified}")
                continue
            specs[col] = dict(spec)

    specs = {col: with_email_domain(spec, rules.email_domain) for col, spec in specs.items()}

    if specs:
        configured = set(specs)
        _add_derived(cat, specs, warnings)
        # the rules file's own cycles are refused when it is loaded; an added <col>_md5 can close one
        added = {
            c: f"added by the planner: md5 of masked column {c[: -len('_md5')]}"
            for c in specs
            if c not in configured
        }
        errors.extend(derived_cycle_errors(specs, error_prefix, cat.qualified, added))
        errors.extend(_check_columns(conn, cat, specs, error_prefix))
        errors.extend(_check_constraint_problems(cat, specs, error_prefix, warnings))
        masked = list(specs)

    if rule.condition:
        if conn is not None:
            errors.extend(_check_condition(conn, cat, rule.condition, f"{where}.condition"))
        else:
            errors.extend(check_condition_offline(cat, rule.condition, f"{where}.condition"))

    if custom is not None:
        ctx = StrategyContext(schema, name, cat.columns, rule.condition, rules.email_domain)
        try:
            statement, masked = build_custom_statement(custom, ctx)
            statement.as_string(conn)  # conn may be None: psycopg then quotes as UTF-8
        except (StrategyError, KeyError, TypeError, ValueError) as exc:
            errors.append(f"{where}.strategy: {exc}")
        else:
            missing = [c for c in masked if c not in cat.columns]
            for c in missing:
                errors.append(
                    f"{where}.strategy: custom strategy {custom.name!r} declares unknown column {c}"
                )
            if not masked:
                warnings.append(
                    f"custom strategy {custom.name} declares no masked column: no residual proof for this table"
                )

    if rule.query:
        warnings.append(
            "inline query: the columns it masks are unknown, so this table gets no residual proof"
        )

    if len(errors) > n_errors:
        return None

    masked = [*masked, *_masked_generated(cat, masked)]
    _flag_derived(cat, masked, specs, warnings)
    key_columns = _key_columns(cat, masked, dump_pks, warnings, specs if custom is None else {})
    if cat.relkind == "p":
        warnings.append("partitioned table: its partitions are restored as separate tables")
    on_load = from_dump and not rule.condition and not rule.query and custom is None and bool(specs)
    return {
        "table": cat.qualified,
        "schema": schema,
        "name": name,
        "mode": "on_load" if on_load else "in_place",
        "columns": specs if custom is None else {},
        "strategy": rule.strategy,
        "condition": rule.condition,
        "query": rule.query,
        "key_columns": key_columns,
        "masked_columns": masked,
        "warnings": warnings,
    }


def _add_derived(cat: TableCatalog, specs: dict[str, dict[str, Any]], warnings: list[str]) -> None:
    """``<col>_md5`` of a masked ``<col>`` is recomputed from the masked value when not configured."""
    for col in list(specs):
        digest_col = f"{col}_md5"
        info = cat.columns.get(digest_col)
        if info is not None and digest_col not in specs and not info.generated:
            specs[digest_col] = {"transformer": "md5_of", "column": col}
            warnings.append(f"{digest_col}: md5 of masked column {col}, recomputed from its masked value")


def _masked_generated(cat: TableCatalog, masked: list[str]) -> list[str]:
    """Generated (STORED) columns computed only from masked columns: PostgreSQL computes them from the
    masked values (after the BEFORE triggers on load, on the UPDATE in place), so they end masked and
    are listed with the masked columns (the PII scan then counts them as masked). A generated column
    that also reads an unmasked column copies it and is left to the PII scan."""
    done = set(masked)
    out: list[str] = []
    for col, refs in cat.generated_from.items():
        if col not in done and refs and set(refs) <= done:
            out.append(col)
    return out


def _flag_derived(
    cat: TableCatalog, masked: list[str], specs: Mapping[str, Any], warnings: list[str]
) -> None:
    if not masked:
        return
    for info in cat.columns.values():
        if info.generated:
            unmasked = [c for c in cat.generated_from.get(info.name, []) if c not in masked]
            if unmasked:
                warnings.append(
                    f"{info.name}: generated column that also reads unmasked column(s) "
                    f"{', '.join(unmasked)}: it copies their values, the PII scan checks it"
                )
            elif info.name in masked:
                warnings.append(
                    f"{info.name}: generated column, recomputed by PostgreSQL from the masked values"
                )
            continue
        if info.name in masked:
            continue
        if info.base_type == "tsvector":
            warnings.append(
                f"{info.name}: tsvector not masked: it may hold words of the original values "
                f"(mask it with null or regenerate it in a seed)"
            )
        elif any(info.name == m + suffix for m in masked for suffix in _DIGEST_SUFFIXES):
            warnings.append(f"{info.name}: looks like a digest of a masked column and is not masked")
    full_name = cat.columns.get("full_name")
    if (
        full_name is not None
        and not full_name.generated  # a generated one is recomputed (and listed above)
        and "full_name" not in masked
        and {"first_name", "last_name"} & set(masked)
    ):
        warnings.append(
            "full_name is not masked although first_name/last_name are: add "
            "full_name: {transformer: full_name, from: [first_name, last_name]}"
        )
    for con_name, _definition, cols in cat.checks:
        hit = sorted(set(cols) & set(masked))
        if hit:
            warnings.append(f"CHECK constraint {con_name} involves masked column(s) {', '.join(hit)}")
    for con_name, cols in cat.foreign_keys:
        hit = sorted(set(cols) & set(masked))
        if hit:
            warnings.append(f"foreign key {con_name} uses masked column(s) {', '.join(hit)}")


class _CannotEvaluate(Exception):
    """A domain CHECK this planner cannot evaluate without a server."""


_NUMERIC_BASE_TYPES = frozenset({"int2", "int4", "int8", "numeric", "float4", "float8"})
_TEXT_CASTS = frozenset({"text", "varchar", "name"})


def masked_sample(transformer: Any, options: Mapping[str, Any], column: ColumnInfo) -> tuple[bool, Any]:
    """``(known, value)``: what the transformer writes into ``column`` for some input, computed without a
    server where its shape does not depend on the input in a way a CHECK could see: ``email`` (only hex
    digits vary: ``u0123...@domain``), ``hash`` (its length of hex or base64url characters: Synapse's
    ``CHECK (full_user_id IS NOT NULL)``), ``fixed`` (its value), ``null`` (NULL). ``known`` is False
    for the others."""
    name = transformer.name
    if name == "null":
        return True, None
    if name == "fixed":
        text = transformer._text(options)
    elif name == "email":
        hex_len = transformer._hex_len(column, options)
        text = "u" + ("0123456789abcdef" * 2)[:hex_len] + "@" + transformer._domain(options)
    elif name == "hash":
        alphabet = "0123456789abcdef" if options.get("encoding", "hex") == "hex" else "AZaz09-_"
        text = (alphabet * 8)[: transformer.output_length(column, options)]
    else:
        return False, None
    if column.base_type in _NUMERIC_BASE_TYPES:
        from decimal import Decimal, InvalidOperation

        try:
            return True, Decimal(text)
        except InvalidOperation:
            return False, None
    if column.category != "string":
        return False, None
    if column.base_type == "bpchar" and (column.max_length or 1) != len(text):
        return False, None  # char(n) pads a shorter value with spaces: not evaluated
    return True, text


def _like_regex(pattern: str, flags: int) -> Any:
    """PostgreSQL's LIKE pattern (``%``, ``_``, backslash escapes) as a Python regex matching the whole
    value."""
    import re

    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.compile("".join(out), flags | re.DOTALL)


def evaluate_domain_check(expression: str, value: Any, column: str | None = None) -> bool:
    """Whether a domain CHECK ``expression`` accepts ``value`` (None: NULL), evaluated without a server
    on its pglast parse tree. Only what is evaluated exactly like PostgreSQL does is supported: AND / OR /
    NOT, ``LIKE`` / ``ILIKE`` (``~~``, ``~~*`` and their negations, without ``ESCAPE``), ``=`` / ``<>``
    and ``IN`` on text, ``= ANY`` / ``<> ALL`` of an ``ARRAY[...]`` of text constants (AdventureWorks'
    ``upper(gender) = ANY (ARRAY['M', 'F'])``), ``upper`` / ``lower`` / ``btrim`` of ASCII text,
    comparisons of numbers and of ``length(VALUE)`` / ``char_length(VALUE)``, ``IS [NOT] NULL``, casts
    to text. Anything else raises :class:`_CannotEvaluate` (a regular
    expression, a function call...). A CHECK that yields NULL accepts the value, as in PostgreSQL."""
    import re
    from decimal import Decimal

    import pglast
    from pglast import ast
    from pglast.enums import A_Expr_Kind, BoolExprType, NullTestType

    try:
        stmt = pglast.parse_sql(f"CREATE DOMAIN _d AS text CHECK ({expression})")[0].stmt
    except pglast.parser.ParseError:
        raise _CannotEvaluate from None
    root = stmt.constraints[0].raw_expr

    def names(items: Any) -> list[str]:
        return [getattr(n, "sval", "") for n in items or ()]

    def ev(node: Any) -> Any:
        if isinstance(node, ast.ColumnRef) and names(node.fields) == ["value" if column is None else column]:
            return value  # a table CHECK on one column: that column's reference stands for VALUE
        if isinstance(node, ast.A_Const):
            if node.isnull:
                return None
            val = node.val
            if isinstance(val, ast.String):
                return val.sval
            if isinstance(val, ast.Integer):
                return Decimal(val.ival)
            if isinstance(val, ast.Float):
                return Decimal(val.fval)
            raise _CannotEvaluate
        if isinstance(node, ast.TypeCast):
            type_names = names(node.typeName.names)
            if type_names[-1] in _TEXT_CASTS and type_names[0] in ("pg_catalog", type_names[-1]):
                if node.typeName.arrayBounds or node.typeName.typmods:  # varchar(n) cuts: not evaluated
                    raise _CannotEvaluate
                inner = ev(node.arg)
                if isinstance(inner, Decimal):
                    raise _CannotEvaluate
                return inner
            raise _CannotEvaluate
        if isinstance(node, ast.FuncCall):
            fn = names(node.funcname)
            if fn[-1] in ("length", "char_length", "character_length") and fn[0] in ("pg_catalog", fn[-1]):
                if len(node.args or ()) == 1 and not node.agg_star and not node.over:
                    inner = ev(node.args[0])
                    if inner is None:
                        return None
                    if isinstance(inner, str):
                        return Decimal(len(inner))
            if fn[-1] in ("upper", "lower", "btrim") and fn[0] in ("pg_catalog", fn[-1]):
                if len(node.args or ()) == 1 and not node.agg_star and not node.over:
                    inner = ev(node.args[0])
                    if inner is None:
                        return None
                    if isinstance(inner, str) and inner.isascii():  # locale-free: ASCII only
                        return {"upper": str.upper, "lower": str.lower, "btrim": lambda t: t.strip(" ")}[
                            fn[-1]
                        ](inner)
            raise _CannotEvaluate
        if isinstance(node, ast.NullTest):
            inner = ev(node.arg)
            return (inner is None) == (node.nulltesttype == NullTestType.IS_NULL)
        if isinstance(node, ast.BoolExpr):
            args = [ev(a) for a in node.args]
            if node.boolop == BoolExprType.NOT_EXPR:
                return None if args[0] is None else not args[0]
            if node.boolop == BoolExprType.AND_EXPR:
                return False if False in args else (None if None in args else True)
            return True if True in args else (None if None in args else False)
        if isinstance(node, ast.A_Expr) and node.kind in (A_Expr_Kind.AEXPR_OP_ANY, A_Expr_Kind.AEXPR_OP_ALL):
            op = names(node.name)
            array = node.rexpr
            if isinstance(array, ast.TypeCast) and array.typeName.arrayBounds:  # IN on varchar, as printed:
                cast = names(array.typeName.names)  # (ARRAY['a'::character varying, ...])::text[]
                if cast[-1] not in _TEXT_CASTS or cast[0] not in ("pg_catalog", cast[-1]):
                    raise _CannotEvaluate
                array = array.arg
            if op not in (["="], ["<>"]) or not isinstance(array, ast.A_ArrayExpr):
                raise _CannotEvaluate
            left = ev(node.lexpr)
            items = [ev(i) for i in array.elements or ()]
            if isinstance(left, Decimal) or any(i is not None and not isinstance(i, str) for i in items):
                raise _CannotEvaluate
            if left is None:
                return None
            if op == ["="]:  # = ANY: true on a match, else NULL if an element is NULL, else false
                return True if left in items else (None if None in items else False)
            return False if left in items else (None if None in items else True)  # <> ALL
        if isinstance(node, ast.A_Expr):
            op = names(node.name)
            kinds = (
                A_Expr_Kind.AEXPR_OP,
                A_Expr_Kind.AEXPR_LIKE,
                A_Expr_Kind.AEXPR_ILIKE,
                A_Expr_Kind.AEXPR_IN,
            )
            if len(op) != 1 or node.kind not in kinds:  # IS DISTINCT FROM, BETWEEN, = ANY(...): not evaluated
                raise _CannotEvaluate
            op = op[0]
            left = ev(node.lexpr)
            if isinstance(node.rexpr, (list, tuple)):  # IN (...)
                if op not in ("=", "<>") or isinstance(left, Decimal):
                    raise _CannotEvaluate
                items = [ev(i) for i in node.rexpr]
                if any(i is not None and not isinstance(i, str) for i in items):
                    raise _CannotEvaluate
                if left is None:
                    return None
                hit = left in items
                result = True if hit else (None if None in items else False)
                return result if op == "=" or result is None else not result
            right = ev(node.rexpr)
            if left is None or right is None:
                return None
            if op in ("~~", "!~~", "~~*", "!~~*"):
                if not isinstance(left, str) or not isinstance(right, str):
                    raise _CannotEvaluate
                flags = re.IGNORECASE if "*" in op else 0
                hit = _like_regex(right, flags).fullmatch(left) is not None
                return not hit if op.startswith("!") else hit
            if isinstance(left, Decimal) and isinstance(right, Decimal):
                compare = {"=": left == right, "<>": left != right, "!=": left != right, "<": left < right,
                           "<=": left <= right, ">": left > right, ">=": left >= right}  # fmt: skip
                if op in compare:
                    return compare[op]
                raise _CannotEvaluate
            if isinstance(left, str) and isinstance(right, str) and op in ("=", "<>", "!="):
                return (left == right) == (op == "=")
            raise _CannotEvaluate
        raise _CannotEvaluate

    result = ev(root)
    if result is not None and not isinstance(result, bool):
        raise _CannotEvaluate
    return result is not False


def check_equality_values(expression: str) -> list[str]:
    """The text constants a CHECK ``expression`` compares a value with for equality (``IN (...)``, ``=
    ANY (ARRAY[...])``, ``= '...'``), in order: candidate values the CHECK may accept. A ``LIKE``
    pattern is not one; an expression pglast cannot parse gives none."""
    import pglast
    from pglast import ast
    from pglast.enums import A_Expr_Kind

    try:
        root = (
            pglast.parse_sql(f"CREATE DOMAIN _d AS text CHECK ({expression})")[0].stmt.constraints[0].raw_expr
        )
    except pglast.parser.ParseError:
        return []
    out: list[str] = []

    def constants(node: Any) -> None:
        if isinstance(node, ast.TypeCast):
            constants(node.arg)
        elif isinstance(node, ast.A_ArrayExpr):
            for element in node.elements or ():
                constants(element)
        elif isinstance(node, (list, tuple)):
            for element in node:
                constants(element)
        elif isinstance(node, ast.A_Const) and isinstance(node.val, ast.String):
            out.append(node.val.sval)

    def walk(node: Any) -> None:
        if isinstance(node, ast.BoolExpr):
            for arg in node.args:
                walk(arg)
        elif isinstance(node, ast.A_Expr) and [getattr(n, "sval", "") for n in node.name or ()] == ["="]:
            if node.kind in (A_Expr_Kind.AEXPR_OP, A_Expr_Kind.AEXPR_IN, A_Expr_Kind.AEXPR_OP_ANY):
                constants(node.lexpr)
                constants(node.rexpr)

    walk(root)
    return list(dict.fromkeys(out))


def _check_constraint_problems(
    cat: TableCatalog,
    specs: Mapping[str, Mapping[str, Any]],
    prefix: str,
    warnings: list[str],
    table_doubts: list[str] | None = None,
) -> list[str]:
    """A masked column whose domain has a CHECK: PostgreSQL checks the masked value against it when it is
    written (the masking trigger's row during the load, the in-place UPDATE). When the transformer's
    output is known without a server (:func:`masked_sample`) and the CHECK can be evaluated exactly
    (:func:`evaluate_domain_check`), a CHECK that rejects it is refused now, naming the domain, the column
    and the fix; otherwise it is flagged in ``warnings``, as a table CHECK on a masked column is. A table
    CHECK on the masked column alone is evaluated the same way (:func:`_table_check_problems`); one it
    cannot evaluate for the output is named in ``table_doubts`` when given (``--suggest-rules`` then
    proposes another transformer; the planner's own warning names every CHECK on a masked column)."""
    errors: list[str] = []
    for col, spec in specs.items():
        info = cat.columns.get(col)
        table_checks = cat.column_checks(col) if info is not None else []
        if table_checks:
            errors += _table_check_problems(cat, col, spec, table_checks, prefix, table_doubts)
        checks = cat.domain_checks.get(col)
        if not checks or info is None:
            continue
        try:
            transformer = get_transformer(spec["transformer"])
        except KeyError:
            continue  # reported by _check_columns
        options = options_of(spec)
        known, sample = masked_sample(transformer, options, info)
        for domain, con_name, expression in checks:
            try:
                accepted = evaluate_domain_check(expression, sample) if known else None
            except _CannotEvaluate:
                accepted = None
            if accepted is None:
                warnings.append(
                    f"{col}: CHECK constraint {con_name} of domain {domain} ({expression}) involves masked "
                    f"column {col}: it could not be evaluated for the {transformer.name} output without a "
                    "server; if it rejects the masked value, the masked rows fail to load"
                )
            elif not accepted:
                if transformer.name == "email":
                    fix = (
                        f"give the transformer a domain the CHECK accepts ({col}: {{transformer: email, "
                        "domain: <domain>}) or use a fixed value it accepts"
                    )
                else:
                    fix = f"use a value the CHECK accepts ({col}: {{transformer: fixed, value: <value>}})"
                errors.append(
                    f"{prefix}.{col}: {cat.qualified}.{col} has domain {domain}, whose CHECK constraint "
                    f"{con_name} ({expression}) rejects the masked value {sample!r} of transformer "
                    f"{transformer.name!r}: loading the masked rows would fail; {fix}, or do not mask {col}"
                )
    return errors


def _table_check_problems(
    cat: TableCatalog,
    col: str,
    spec: Mapping[str, Any],
    checks: list[tuple[str, str]],
    prefix: str,
    doubts: list[str] | None = None,
) -> list[str]:
    """A table CHECK on the masked column alone (GoTrue's ``saml_providers``: ``CHECK
    (char_length(metadata_xml) > 0)``) that rejects the transformer's known output: refused now, as a
    domain's is (the masked rows would fail to load). One that cannot be evaluated without a server
    stays in the warnings every CHECK on a masked column gets (:func:`_flag_derived`)."""
    try:
        transformer = get_transformer(spec["transformer"])
    except KeyError:
        return []  # reported by _check_columns
    known, sample = masked_sample(transformer, options_of(spec), cat.columns[col])
    errors: list[str] = []
    for con_name, definition in checks:
        expression = _domain_check_expression(definition)
        try:
            accepted = evaluate_domain_check(expression, sample, column=col) if known else None
        except _CannotEvaluate:
            accepted = None
        if accepted is None and doubts is not None:
            doubts.append(f"{col}: CHECK constraint {con_name} ({expression}) not evaluated for the output")
        if accepted is False:
            errors.append(
                f"{prefix}.{col}: {cat.qualified} has CHECK constraint {con_name} ({expression}), which "
                f"rejects the masked value {sample!r} of transformer {transformer.name!r}: loading the masked "
                f"rows would fail; use a value the CHECK accepts ({col}: {{transformer: fixed, value: "
                f"<value>}}), another transformer, or do not mask {col}"
            )
    return errors


def _check_columns(
    conn: Any, cat: TableCatalog, specs: Mapping[str, Mapping[str, Any]], prefix: str
) -> list[str]:
    errors: list[str] = []
    unique_cols = {c for _n, cols in cat.unique_indexes for c in cols} | set(cat.primary_key)
    # a STORED generated column in a unique key is computed from its sources: masking one of them
    # changes it, so each source is checked as if it were in that key itself
    through = {
        source: generated
        for generated in sorted(unique_cols)
        for source in cat.generated_from.get(generated, [])
        if source not in unique_cols
    }
    for col, spec in specs.items():
        where = f"{prefix}.{col}"
        info = cat.columns[col]
        before = len(errors)
        try:
            transformer = get_transformer(spec["transformer"])
        except KeyError as exc:
            errors.append(f"{where}: {exc.args[0]}")
            continue
        options = options_of(spec)
        for problem in transformer.check(info, options):
            errors.append(f"{where}: {problem}")
        for dep in transformer.depends_on(options):
            if dep not in cat.columns:
                errors.append(f"{where}: depends on column {dep}, which {cat.qualified} does not have")
            elif dep not in specs:
                errors.append(
                    f"{where}: depends on column {dep}, which is not masked (it would copy the original)"
                )
        if (col in unique_cols or col in through) and not keeps_unique(transformer, options, info):
            key_col = col if col in unique_cols else through[col]
            index = next((n for n, cols in cat.unique_indexes if key_col in cols), "primary key")
            via = "" if key_col == col else f" (through generated column {key_col})"
            errors.append(
                f"{where}: transformer {transformer.name!r} does not keep values unique, but {col} is in "
                f"unique index {index} of {cat.qualified}{via}; a unique key under a non-unique output fails the "
                f"load: use a transformer the registry marks unique ({', '.join(unique_transformers())}) "
                "with enough length, or mask another column"
            )
        if transformer.name == "fixed" and len(errors) == before and conn is not None:
            problem = fixed_cast_problem(conn, info, str(transformer._text(options)))  # type: ignore[attr-defined]
            if problem:
                errors.append(f"{where}: fixed value does not fit {info.type_sql}: {problem}")
        elif transformer.name == "fixed" and len(errors) == before:
            # no server (planning from the archive): what can be decided without one
            problem = fixed_value_problem(info, str(transformer._text(options)))  # type: ignore[attr-defined]
            if problem:
                errors.append(f"{where}: {problem}; use a value of the column's type")
    if not errors and conn is not None:
        try:
            exprs = column_expressions(specs, cat.columns)
            select = sql.SQL("SELECT {} FROM {} LIMIT 0").format(
                sql.SQL(", ").join(exprs.values()), sql.Identifier(cat.schema, cat.name)
            )
            with conn.transaction():
                conn.execute(sql.SQL("SELECT set_config('scalingo_staging_sync.key', 'plan', true)"))
                conn.execute(sql.SQL("EXPLAIN {}").format(select), prepare=False)
        except Exception as exc:
            errors.append(f"{prefix}: the masking expressions do not compile: {str(exc).strip()}")
    return errors


def keeps_unique(transformer: Any, options: Mapping[str, Any], column: ColumnInfo) -> bool:
    """Whether the registry says ``transformer`` with ``options`` keeps distinct values distinct on this
    column: enough output bits (:func:`~scalingo_staging_sync.anonymize.transformers.keeps_unique`), after
    any cut to the column's length."""
    from scalingo_staging_sync.anonymize import transformers

    return transformers.keeps_unique(transformer.name, dict(options), column)


def unique_transformers() -> list[str]:
    from scalingo_staging_sync.anonymize.transformers import all_transformers, options_text
    from scalingo_staging_sync.anonymize.transformers import keeps_unique as registry_keeps_unique

    return sorted(
        name if registry_keeps_unique(name) else f"{name} with {options_text(t.unique_options)}"
        for name, t in all_transformers().items()
        if registry_keeps_unique(name) or (t.unique and t.unique_options)
    )


def check_condition_offline(cat: TableCatalog, condition: str, where: str) -> list[str]:
    """Without a server: the condition must parse (pglast, PostgreSQL's parser) as one expression in
    ``SELECT 1 FROM t WHERE (...)`` and its unqualified column references must be columns of the table."""
    from scalingo_staging_sync.pgast import column_refs

    clause, errors = parse_condition(condition, where)  # the syntax check the rules file passed
    if errors:
        return errors
    # the references outside its subqueries (``x IN (SELECT id FROM other)``: ``id`` is a column of
    # ``other``, judged by the server)
    for fields in column_refs(clause, into_subqueries=False):
        # a column of the table: unqualified, or qualified by its name (or schema and name)
        if len(fields) == 1 or (len(fields) == 2 and fields[0] == cat.name):
            column = fields[-1]
        elif len(fields) == 3 and (fields[0], fields[1]) == (cat.schema, cat.name):
            column = fields[-1]
        else:
            continue
        if column not in cat.columns:
            errors.append(f"{where}: column {'.'.join(fields)} does not exist in {cat.qualified}")
    return errors


def _check_condition(conn: Any, cat: TableCatalog, condition: str, where: str) -> list[str]:
    """The condition must parse as one boolean expression over the table: EXPLAIN it as a prepared
    statement (a second statement smuggled in is refused by the server)."""
    query = sql.SQL("EXPLAIN SELECT 1 FROM {}{}").format(
        sql.Identifier(cat.schema, cat.name), where_clause(condition)
    )
    try:
        with conn.transaction():
            conn.execute(query, prepare=True)
    except Exception as exc:
        return [f"{where}: {str(exc).strip().splitlines()[0]}"]
    return []


#: base types (also as array elements) without an equality operator: never part of a fallback key
_NO_EQUALITY_TYPES = frozenset({"json", "xml", "point", "line", "lseg", "box", "path", "polygon", "circle"})


def _key_columns(
    cat: TableCatalog,
    masked: list[str],
    dump_pks: Mapping[str, list[str]],
    warnings: list[str],
    specs: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[str]:
    pk = cat.primary_key or list(dump_pks.get(cat.qualified, []))
    if pk and not set(pk) & set(masked):
        return pk
    if pk:
        from scalingo_staging_sync.anonymize.executor import rekeyable_columns

        masked_pk = [c for c in pk if c in masked]
        if rekeyable_columns({"columns": dict(specs or {})}, masked_pk) == masked_pk:
            # unique transformers (checked above) keep the key unique: the executor records each
            # sampled row under its masked key (computed with the masking expressions)
            warnings.append(
                "key columns are masked: the residual proof finds each sampled row by its masked key"
            )
            return pk
        warnings.append("key columns are masked: the residual proof is keyed by the unmasked columns")
    # without a usable primary key, the unmasked columns that can be compared with "=" (verification
    # looks the sampled rows up with it: json, xml and the geometric types have no "=" operator)
    keys = [
        c
        for c, info in cat.columns.items()
        if c not in masked and not info.generated and info.base_type.lstrip("_") not in _NO_EQUALITY_TYPES
    ]
    if not keys:
        warnings.append(
            "every column is masked and there is no usable key: no residual proof, so verification fails "
            "if the table has rows; give it a primary key, leave one comparable column unmasked, or "
            "exclude its data"
        )
    return keys


# --------------------------------------------------------------------------------------------------
# Keys masking would break: shared by the archive planner and the catalog planner


@dataclass(frozen=True)
class ForeignKeyFact:
    """One foreign key as both planners see it (from the archive's DDL or from ``pg_constraint``)."""

    name: str
    table: TableName
    columns: tuple[str, ...]
    references: TableName
    ref_columns: tuple[str, ...]


def key_refusals(
    masking: Mapping[TableName, tuple[TableRule, dict]],
    *,
    columns_of: Callable[[TableName], Mapping[str, Any] | None],
    foreign_keys: Iterable[ForeignKeyFact],
    partition_keys: Mapping[TableName, Sequence[str]],
    ancestors: Callable[[TableName], Sequence[TableName]],
    excluded: Container[TableName] = (),
    unplanned: Container[TableName] = (),
) -> list[str]:
    """The masking that would break a key, refused before any data moves (both planners, same
    messages): a masked partition-key column (:func:`_partition_key_errors`) and a foreign key whose two
    sides are not masked alike (:func:`_foreign_key_errors`).

    ``masking``: table -> (the rule that masks it, its plan item), partitions and inheritance children
    included; ``columns_of(table)``: its columns (``base_type``, ``max_length``), None when unknown;
    ``partition_keys``: partitioned table -> the columns its key references; ``ancestors(table)``: its
    partition / INHERITS parents at any depth; ``excluded``: tables whose data is not restored;
    ``unplanned``: ruled tables whose rule was refused (with what is below them): how they end up is not
    known, so no key through them is judged (a misspelt column in a rule made its table's every key
    look unmasked, a second, false error)."""
    errors = [
        *_partition_key_errors(masking, partition_keys, ancestors),
        *_foreign_key_errors(masking, columns_of, foreign_keys, excluded, unplanned),
    ]
    return list(dict.fromkeys(errors))  # a partition key shared by several masked partitions: once


def _partition_key_errors(
    masking: Mapping[TableName, tuple[TableRule, dict]],
    partition_keys: Mapping[TableName, Sequence[str]],
    ancestors: Callable[[TableName], Sequence[TableName]],
) -> list[str]:
    """A masked column in the partition key of the table or of a partitioned ancestor: its masked value
    belongs to another partition, so the masking trigger's row (or the in-place UPDATE) violates its
    partition's constraint and the masking fails half-way. Refused before anything is touched."""
    errors: list[str] = []
    for name, (rule, item) in masking.items():
        masked = set(item.get("columns") or {}) | set(item.get("masked_columns") or [])
        for holder in (name, *ancestors(name)):
            for col in sorted(masked & set(partition_keys.get(holder, ()))):
                errors.append(
                    f"{rule.where}.columns.{col}: {holder}.{col} is in the partition key of {holder}: its "
                    "masked value belongs to another partition, so loading the masked rows would fail; do "
                    f"not mask {col} (mask the other columns), or exclude {holder}"
                )
    return errors


def _masking_of(
    masking: Mapping[TableName, tuple[TableRule, dict]], table: TableName, column: str, columns: Mapping
) -> tuple | None:
    """How ``table.column`` ends up: None when its values are restored as they are, else what decides
    its masked value (the transformer and its options, the column's type and length, the condition)."""
    entry = masking.get(table)
    if entry is None:
        return None
    _rule, item = entry
    if column not in (item.get("masked_columns") or []) and column not in (item.get("columns") or {}):
        return None
    spec = (item.get("columns") or {}).get(column)
    info = columns.get(column)
    how = json.dumps(spec, sort_keys=True) if spec else f"strategy {item.get('strategy')}"
    return (how, info.base_type if info else None, info.max_length if info else None, item.get("condition"))


def _describe(how: tuple | None) -> str:
    if how is None:
        return "not masked"
    text = f"masked with {how[0]}"
    return f"{text} where ({how[3]})" if how[3] else text


def _foreign_key_errors(
    masking: Mapping[TableName, tuple[TableRule, dict]],
    columns_of: Callable[[TableName], Mapping[str, Any] | None],
    foreign_keys: Iterable[ForeignKeyFact],
    excluded: Container[TableName],
    unplanned: Container[TableName] = (),
) -> list[str]:
    """A foreign key whose two sides are not masked alike (one side only, or different transformers,
    options, lengths or conditions): the referencing values no longer match the referenced ones, so
    the constraint fails when post-data restores it (after the data has been loaded) or when the
    in-place UPDATE runs, or, where it would not, the unmasked side keeps the originals. Refused,
    naming both columns. Both sides masked with the same deterministic transformer stay consistent."""
    errors: list[str] = []
    for fk in foreign_keys:
        if fk.table in excluded:  # its data is not restored: nothing references anything
            continue
        if fk.table in unplanned or fk.references in unplanned:  # judged once its rule is fixed
            continue
        local_columns = columns_of(fk.table)
        ref_columns = columns_of(fk.references)
        if local_columns is None or ref_columns is None or fk.references in excluded:
            continue  # not restored (see skip_dump_ids)
        for col, ref_col in zip(fk.columns, fk.ref_columns, strict=False):
            local = _masking_of(masking, fk.table, col, local_columns)
            remote = _masking_of(masking, fk.references, ref_col, ref_columns)
            if local == remote:
                continue
            rule = (masking.get(fk.table) if local else None) or masking.get(fk.references)
            if rule is None:  # pragma: no cover - one side is masked, so it has a rule
                continue
            where = rule[0].where
            masked_col = col if local else ref_col
            errors.append(
                f"{where}.columns.{masked_col}: foreign key {fk.name} of {fk.table} ({col}) references "
                f"{fk.references} ({ref_col}); {fk.table}.{col} is {_describe(local)} but "
                f"{fk.references}.{ref_col} is {_describe(remote)}: the masked values would not match and the "
                "foreign key would fail after the data is loaded. Mask both columns with the same "
                f"transformer and options, or exclude {fk.table}"
            )
    return errors


_FOREIGN_KEYS_SQL = """
SELECT c.conname::text, n.nspname::text, t.relname::text, rn.nspname::text, r.relname::text,
       ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum ORDER BY k.ord),
       ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum ORDER BY k.ord)
FROM pg_constraint c
JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace
JOIN pg_class r ON r.oid = c.confrelid JOIN pg_namespace rn ON rn.oid = r.relnamespace
WHERE c.contype = 'f' AND c.conparentid = 0
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
ORDER BY 2, 3, 1
"""
_PARTITION_KEYS_SQL = """
SELECT n.nspname::text, c.relname::text, pg_get_partkeydef(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'p' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
"""
_INHERITS_SQL = """
SELECT cn.nspname::text, c.relname::text, pn.nspname::text, p.relname::text
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace
JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = p.relnamespace
WHERE c.relkind IN ('r', 'p', 'f')
ORDER BY 1, 2, i.inhseqno
"""


def read_foreign_keys(conn: Any) -> list[ForeignKeyFact]:
    """The foreign keys of the database ``conn`` is connected to (those declared on a partitioned
    table once, not once per partition), ordered by table and name."""
    return [
        ForeignKeyFact(con, TableName(ts, tn), tuple(cols), TableName(rs, rn), tuple(ref_cols))
        for con, ts, tn, rs, rn, cols, ref_cols in conn.execute(_FOREIGN_KEYS_SQL).fetchall()
    ]


def ruled_ancestor_refusals(conn: Any, masking: Mapping[TableName, tuple[TableRule, dict]]) -> list[str]:
    """On the catalog path each rule is one statement on its table, and an UPDATE of a table reaches
    every partition and inheritance child: a table with its own rule below another ruled table would
    be masked twice, the second time over masked values. Refused, naming both rules (the archive
    plan, from the backup, gives each table its own rule instead)."""
    parents: dict[TableName, list[TableName]] = {}
    for cs, cn, ps, pn in conn.execute(_INHERITS_SQL).fetchall():
        parents.setdefault(TableName(cs, cn), []).append(TableName(ps, pn))
    errors: list[str] = []
    for name, (rule, _) in masking.items():
        todo, seen = list(parents.get(name, ())), set()
        while todo:
            ancestor = todo.pop(0)
            if ancestor in seen:
                continue
            seen.add(ancestor)
            if ancestor in masking:
                errors.append(
                    f"{rule.where}.table: {name} has its own rule, but {masking[ancestor][0].where} masks its "
                    f"ancestor {ancestor} in place, and that UPDATE reaches {name}'s rows too: they would be "
                    f"masked twice. Remove one of the two rules, or plan from the backup archive (dump_path), "
                    f"where {name} takes only its own rule"
                )
                break
            todo.extend(parents.get(ancestor, ()))
    return errors


def catalog_key_refusals(
    conn: Any,
    rules: Rules,
    masking: Mapping[TableName, tuple[TableRule, dict]],
    unplanned: Iterable[TableName] = (),
) -> list[str]:
    """:func:`key_refusals` on the database ``conn`` is connected to (the catalog path): its foreign keys
    (as declared: not the copies PostgreSQL makes on partitions), partition keys (``pg_get_partkeydef``,
    parsed with pglast) and inheritance. ``masking``: the ruled tables; their partitions and inheritance
    children without a rule of their own are masked with their rule, as the UPDATE of the parent
    reaches them. The rules' ``exclude_tables`` (and what is below them) are excluded."""
    from scalingo_staging_sync.inventory.build import partition_key_columns
    from scalingo_staging_sync.tablename import TableNameError

    parents: dict[TableName, list[TableName]] = {}
    children: dict[TableName, list[TableName]] = {}
    for cs, cn, ps, pn in conn.execute(_INHERITS_SQL).fetchall():
        parents.setdefault(TableName(cs, cn), []).append(TableName(ps, pn))
        children.setdefault(TableName(ps, pn), []).append(TableName(cs, cn))

    def walk(graph: Mapping[TableName, list[TableName]], name: TableName) -> list[TableName]:
        out: list[TableName] = []
        todo = list(graph.get(name, ()))
        while todo:
            other = todo.pop(0)
            if other not in out:
                out.append(other)
                todo.extend(graph.get(other, ()))
        return out

    masked_tables = dict(masking)
    for name, entry in masking.items():
        for child in walk(children, name):
            masked_tables.setdefault(child, entry)
    excluded: set[TableName] = set()
    for text in rules.exclude_tables:
        try:
            name = TableName.parse(text)
        except TableNameError:
            continue
        excluded.update([name, *walk(children, name)])
    partition_keys: dict[TableName, list[str]] = {}
    for schema, name, definition in conn.execute(_PARTITION_KEYS_SQL).fetchall():
        partition_keys[TableName(schema, name)] = partition_key_columns(definition or "") or []
    foreign_keys = read_foreign_keys(conn)
    catalogs: dict[TableName, TableCatalog | None] = {}

    def columns_of(name: TableName) -> Mapping[str, Any] | None:
        if name not in catalogs:
            catalogs[name] = read_table(conn, name.schema, name.name)
        cat = catalogs[name]
        return cat.columns if cat is not None else None

    refused = {t for name in unplanned for t in (name, *walk(children, name)) if t not in masking}
    return key_refusals(
        masked_tables,
        columns_of=columns_of,
        foreign_keys=foreign_keys,
        partition_keys=partition_keys,
        ancestors=lambda name: walk(parents, name),
        excluded=excluded,
        unplanned=refused,
    )


def plan_on_database(conn: Any, rules: Rules) -> tuple[list[dict], list[str]]:
    """The rules' plan items on the database ``conn`` is connected to, as the in-place path plans them
    (one item per leaf partition of a partitioned table), for tools that look at an existing database
    (``scan --rules``): ``(items, problems)``. Unlike :func:`plan_anonymization` nothing is raised: a rule
    whose table is not in this database, or that does not fit its catalog, gives a problem line naming
    it, and no item."""
    problems: list[str] = []
    items: list[dict] = []
    for rule in rules.anonymization_tables:
        name = rule.table_name
        cat = read_table(conn, name.schema, name.name)
        if cat is None:
            problems.append(f"{rule.where}.table: no such table {name} in this database")
            continue
        errors: list[str] = []
        item = plan_rule(cat, rules, rule, from_dump=False, dump_pks={}, errors=errors, conn=conn)
        problems.extend(errors)
        if item is not None and not errors:
            items.extend(_leaf_partitions(conn, item, {}))
    return items, problems


_INT_BOUNDS = {"int2": 2**15, "int4": 2**31, "int8": 2**63}
_BOOL_WORDS = ("true", "false", "yes", "no")


def fixed_cast_problem(conn: Any, info: ColumnInfo, text: str) -> str | None:
    """Why the server refuses to cast the ``fixed`` value ``text`` to ``info``'s type (the message's
    first line), or None when it fits."""
    import psycopg

    try:
        with conn.transaction():
            conn.execute(sql.SQL("SELECT CAST(%s::text AS {})").format(sql.SQL(info.type_sql)), (text,))
    except psycopg.Error as exc:
        return (exc.diag.message_primary or type(exc).__name__).strip()
    return None


def fixed_value_problem(info: ColumnInfo, text: str) -> str | None:
    """Why a ``fixed`` value cannot be stored in ``info``'s column, decided without a server: one of its
    enum's labels (when the archive defines the enum), a whole number in range for int2/int4/int8, a
    boolean word, a UUID, a number for numeric/float. None when it fits or cannot be decided here (the
    other types: the load then casts it)."""
    value = text.strip()
    if info.enum_labels is not None:
        if text not in info.enum_labels:
            labels = ", ".join(repr(v) for v in info.enum_labels)
            return f"fixed value {text!r} is not a label of enum {info.type_sql} ({labels})"
        return None
    base = info.base_type
    if base in _INT_BOUNDS:
        try:
            number = int(value)
        except ValueError:
            return f"fixed value {text!r} is not a whole number ({info.type_sql})"
        bound = _INT_BOUNDS[base]
        if not -bound <= number < bound:
            return f"fixed value {text!r} is out of range for {info.type_sql}"
    elif base == "bool":
        word = value.lower()
        if not (word in ("1", "0", "on", "off") or (word and any(w.startswith(word) for w in _BOOL_WORDS))):
            return f"fixed value {text!r} is not a boolean (true/false, yes/no, on/off, 1/0)"
    elif base == "uuid":
        import uuid

        try:
            uuid.UUID(value)
        except ValueError:
            return f"fixed value {text!r} is not a UUID"
    elif base in ("numeric", "float4", "float8"):
        from decimal import Decimal, InvalidOperation

        try:
            Decimal(value)
        except InvalidOperation:
            return f"fixed value {text!r} is not a number ({info.type_sql})"
    return None
