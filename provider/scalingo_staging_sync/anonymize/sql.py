"""Statement building with :mod:`psycopg.sql` only: names are always ``sql.Identifier``; the only raw
SQL pieces are the transformer expressions (built here), the catalog's own ``format_type`` strings, and
the ``condition`` of the reviewed rules file, which is wrapped structurally as ``WHERE (\\n<cond>\\n)``
(the newlines end a trailing ``--`` comment; generated statements are sent as prepared statements, so
a condition cannot smuggle a second statement).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

from psycopg import sql

from scalingo_staging_sync.anonymize.transformers import (
    KEY_SQL,
    BuildContext,
    ColumnInfo,
    get_transformer,
    keep_empty_sql,
    options_of,
)

#: prefixes of the masking trigger (``zz_``: BEFORE triggers fire in name order, ours last) and of its
#: function; the rest of each name is :func:`table_hash` of the table, so names stay short (28 and 26
#: bytes) and distinct whatever the table names' length or characters
TRIGGER_PREFIX = "zz_sss_mask_"
FUNCTION_PREFIX = "_sss_mask_"


def table_ident(schema: str, name: str) -> sql.Identifier:
    return sql.Identifier(schema, name)


def where_clause(condition: str | None) -> sql.Composable:
    if not condition:
        return sql.SQL("")
    return sql.SQL(" WHERE (\n{}\n)").format(sql.SQL(condition))


def column_expressions(
    specs: Mapping[str, Mapping[str, Any]],
    columns: Mapping[str, ColumnInfo],
    src_for: Callable[[str], sql.Composable] = sql.Identifier,
) -> dict[str, sql.Composable]:
    """``{column: expression of its new value}``, every expression over the ORIGINAL values of the row
    (``src_for(column)``); derived rules use the expression of their source column (its NEW value)."""
    cache: dict[str, sql.Composable] = {}

    def new(col: str, _stack: tuple[str, ...] = ()) -> sql.Composable:
        if col in cache:
            return cache[col]
        if col in _stack:
            raise ValueError(f"derived columns form a cycle: {' -> '.join((*_stack, col))}")
        spec = specs.get(col)
        if spec is None:  # not masked: its value is unchanged
            return src_for(col)
        transformer = get_transformer(spec["transformer"])
        ctx = BuildContext(columns[col], options_of(spec), new=lambda other: new(other, (*_stack, col)))
        expr = transformer.expression(src_for(col), ctx)
        cache[col] = keep_empty_sql(transformer, columns[col], src_for(col), expr)
        return cache[col]

    return {col: new(col) for col in specs}


def update_statement(
    schema: str,
    name: str,
    exprs: Mapping[str, sql.Composable],
    condition: str | None = None,
    *,
    only: bool = False,
) -> sql.Composable:
    """``UPDATE [ONLY] t SET c = <expr>, ... [WHERE (<cond>)]``: every right-hand side sees the old row, and
    the expressions are written over the original values, so derived columns use the new values.
    ``only``: the table's own rows, not its inheritance children's (when those have their own items)."""
    sets = sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(c), e) for c, e in exprs.items())
    return sql.SQL("UPDATE {}{} SET {}{}").format(
        sql.SQL("ONLY ") if only else sql.SQL(""), table_ident(schema, name), sets, where_clause(condition)
    )


def sample_statement(
    schema: str,
    name: str,
    key_columns: list[str],
    masked_columns: list[str],
    condition: str | None,
    limit: int,
    *,
    only: bool = False,
    with_values: bool | None = None,
) -> sql.Composable:
    """Text of the key and masked columns of up to ``limit`` rows (the proof's originals). ``only``:
    the table's own rows, not its inheritance children's (the rows an ``UPDATE ONLY`` masks).
    ``with_values``: True, only rows where a masked column is not NULL (they have originals to
    fingerprint); False, only rows where every masked column is NULL; None, any row."""
    cols = sql.SQL(", ").join(
        sql.SQL("({})::text").format(sql.Identifier(c)) for c in [*key_columns, *masked_columns]
    )
    where = where_clause(condition)
    if with_values is not None and masked_columns:
        some = sql.SQL(" OR ").join(
            sql.SQL("{} IS NOT NULL").format(sql.Identifier(c)) for c in masked_columns
        )
        test = sql.SQL("({})" if with_values else "NOT ({})").format(some)
        where = sql.SQL("{} AND {}").format(where, test) if condition else sql.SQL(" WHERE {}").format(test)
    return sql.SQL("SELECT {} FROM {}{}{} LIMIT {}").format(
        cols,
        sql.SQL("ONLY ") if only else sql.SQL(""),
        table_ident(schema, name),
        where,
        sql.Literal(limit),
    )


def table_hash(schema: str, name: str) -> str:
    """16 hex characters (64 bits) of sha256 over the schema and name (NUL-separated, so no two
    qualified names share an input): the distinguishing part of our trigger and function names."""
    return hashlib.sha256(f"{schema}\x00{name}".encode()).hexdigest()[:16]


def trigger_function_name(schema: str, name: str) -> str:
    """Name of the masking trigger function of the ruled table ``schema.name`` (in its schema).

    A hash of the qualified name, never a prefix of it: table names of up to 63 bytes (non-ASCII ones
    reach that limit at 21 to 31 characters) would otherwise be cut by PostgreSQL to the same
    identifier, and ``DROP FUNCTION ... CASCADE`` of one table would drop another table's trigger."""
    return f"{FUNCTION_PREFIX}{table_hash(schema, name)}"


def trigger_name(schema: str, name: str) -> str:
    """Name of the masking trigger on the table ``schema.name`` (the table it is on, which is a
    partition or inheritance child when it covers the rows of a ruled parent)."""
    return f"{TRIGGER_PREFIX}{table_hash(schema, name)}"


def attach_trigger_statements(
    on_schema: str, on_name: str, fn_schema: str, fn_name: str
) -> list[sql.Composable]:
    """(Re)create the masking trigger of table ``on`` calling the function of ruled table ``fn``, and
    make it ``ENABLE ALWAYS``: it fires whatever ``session_replication_role`` the loading session has
    (``replica`` in PGOPTIONS or in the connection's options turns ordinary triggers off)."""
    trigger = sql.Identifier(trigger_name(on_schema, on_name))
    table = table_ident(on_schema, on_name)
    function = sql.Identifier(fn_schema, trigger_function_name(fn_schema, fn_name))
    return [
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(trigger, table),
        sql.SQL("CREATE TRIGGER {} BEFORE INSERT ON {} FOR EACH ROW EXECUTE FUNCTION {}()").format(
            trigger, table, function
        ),
        sql.SQL("ALTER TABLE {} ENABLE ALWAYS TRIGGER {}").format(table, trigger),
    ]


def drop_function_statement(schema: str, name: str) -> sql.Composable:
    """``DROP FUNCTION IF EXISTS <fn>() CASCADE``: the function of ruled table ``schema.name`` and
    every masking trigger calling it (its own and those covering its partitions or children)."""
    fname = sql.Identifier(schema, trigger_function_name(schema, name))
    return sql.SQL("DROP FUNCTION IF EXISTS {}() CASCADE").format(fname)


def trigger_statements(
    schema: str,
    name: str,
    specs: Mapping[str, Mapping[str, Any]],
    columns: Mapping[str, ColumnInfo],
    conn: Any = None,
) -> tuple[sql.Composable, sql.Composable, sql.Composable]:
    """(CREATE FUNCTION, CREATE TRIGGER + ENABLE ALWAYS, DROP FUNCTION ... CASCADE) of the on-load
    masking trigger of ``schema.name`` (names: :func:`trigger_function_name`, :func:`trigger_name`).

    The PL/pgSQL function assigns every masked column from the same transformer expressions as the
    UPDATE path, in dependency order: an expression reads its own column's original value
    (``NEW.col`` before its assignment) and derived columns read the NEW value of their source
    (assigned first), so no original is copied. Per row, the key is read once into a variable and
    values used several times (a keyed hash) are computed once into variables (``ctx.let``).

    The function is ``STABLE``: it only changes ``NEW``, and a non-volatile PL/pgSQL function does
    not take a new snapshot for every expression that calls a stable function (``current_setting``,
    ``date::text``), which cost about 0.6 us per expression and row."""
    declare: list[sql.Composable] = []
    body: list[sql.Composable] = []
    done: set[str] = set()
    key_var = sql.Identifier("_sss_k")

    def let(expr: sql.Composable, type_: str) -> sql.Composable:
        var = sql.Identifier(f"_sss_v{len(declare)}")
        declare.append(sql.SQL("  {} {};").format(var, sql.SQL(type_)))
        body.append(sql.SQL("  {} := {};").format(var, expr))
        return var

    def new(col: str, stack: tuple[str, ...] = ()) -> sql.Composable:
        """NEW.col holding the column's new value: its assignment is emitted first if needed."""
        if col in specs and col not in done:
            if col in stack:
                raise ValueError(f"derived columns form a cycle: {' -> '.join((*stack, col))}")
            spec = specs[col]
            ctx = BuildContext(
                columns[col],
                options_of(spec),
                new=lambda other: new(other, (*stack, col)),
                key=key_var,
                let=let,
                cached=True,
            )
            transformer = get_transformer(spec["transformer"])
            src = sql.SQL("NEW.{}").format(sql.Identifier(col))
            expr = keep_empty_sql(transformer, columns[col], src, transformer.expression(src, ctx))
            body.append(sql.SQL("  NEW.{} := {};").format(sql.Identifier(col), expr))
            done.add(col)
        return sql.SQL("NEW.{}").format(sql.Identifier(col))

    for col in specs:
        new(col)
    statements = sql.SQL("\n").join(body).as_string(conn)
    # read once per row, when used
    if "_sss_k" in statements:
        declare.insert(0, sql.SQL("  {} text := {};").format(key_var, KEY_SQL))
    header = sql.SQL("DECLARE\n{}\n").format(sql.SQL("\n").join(declare)) if declare else sql.SQL("")
    text = sql.SQL("{}BEGIN\n{}\n  RETURN NEW;\nEND").format(header, sql.SQL(statements)).as_string(conn)
    fname = sql.Identifier(schema, trigger_function_name(schema, name))
    create_fn = sql.SQL(
        "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql STABLE AS {}"
    ).format(fname, sql.Literal(text))
    create_trigger = sql.SQL(";\n").join(attach_trigger_statements(schema, name, schema, name))
    return create_fn, create_trigger, drop_function_statement(schema, name)
