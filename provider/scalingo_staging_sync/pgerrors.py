"""Database errors without row contents, for everything that masks or verifies production data.

A PostgreSQL error can carry the row it failed on: ``DETAIL: Failing row contains (...)`` for a CHECK
or NOT NULL violation, ``Key (email)=(...)`` for a unique violation, ``COPY t, line 3: "..."`` in its
context, and some primary messages quote the value (``invalid input syntax for type integer: "..."``).
That row is production data, unmasked. Whatever we raise goes to the task log, XCom, the audit report
and Slack, so the errors built here carry only:

* the SQLSTATE and its condition name (``23514 CheckViolation``);
* the names PostgreSQL reports in the error's fields (``psycopg``'s ``e.diag``): schema, table,
  column, constraint, data type;
* the primary message only for SQLSTATE classes whose messages never quote data (syntax and access
  rules, transaction rollbacks, cancels, resources, connections).

The original exception is never chained (:func:`sanitized` raises outside the ``except`` block, so
``__context__`` and ``__cause__`` are empty and no traceback prints its text).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from scalingo_staging_sync.errors import SyncError

T = TypeVar("T")

#: SQLSTATE classes whose primary messages name objects but never quote values
_SAFE_PRIMARY_CLASSES = frozenset({"08", "25", "40", "42", "53", "55", "57"})
#: SQLSTATE classes worth retrying (connection, transaction rollback, lock not available, shutdown)
_TRANSIENT = ("08", "40", "55P03", "57P01", "57P02", "57P03")

#: what to do when loading or updating a masked table breaks a constraint, by SQLSTATE: production's rows
#: passed their constraints when they were written, so a masked value is the likely cause
MASKED_VALUE_FIXES = {
    "23514": (
        "production's rows passed this CHECK constraint, so a masked value likely breaks it: give the masked "
        "column a transformer or options whose output the CHECK accepts (a `fixed` value, an `email` `domain`, "
        "a `hash` `length`), mask the table with a `query` rule that keeps it, or exclude the table's data "
        '(docs/rules.md, "Planning")'
    ),
    "23505": (
        "masked values collide under this unique constraint: give the column a transformer that keeps "
        'distinct values distinct (docs/rules.md, "Uniqueness")'
    ),
    "22P02": (
        "a value could not be read as the masking reads it: a `json` rule on a text column reads each value "
        "as a JSON document ('' and NULL are kept), and a value that is not one stops the masking: give the "
        "column another transformer (`null`, `fixed`, `hash`) or a `query` rule "
        '(docs/rules.md, "JSON documents")'
    ),
    "22001": (
        "a masked value is longer than its column allows: choose a shorter output (a `hash` `length`, a "
        'shorter `fixed` value; docs/rules.md, "Transformers")'
    ),
}


def masked_value_fix(exc: BaseException) -> str | None:
    """:data:`MASKED_VALUE_FIXES`' advice for ``exc``'s SQLSTATE, or None."""
    return MASKED_VALUE_FIXES.get(str(_diag_fields(exc)["sqlstate"] or ""))


class SanitizedDatabaseError(SyncError, RuntimeError):
    """A database error reduced to its SQLSTATE and object names (see the module doc)."""

    def __init__(
        self,
        message: str,
        *,
        sqlstate: str | None = None,
        condition: str | None = None,
        schema: str | None = None,
        table: str | None = None,
        column: str | None = None,
        constraint: str | None = None,
        datatype: str | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message, retryable=retryable)
        self.sqlstate = sqlstate
        self.condition = condition
        self.schema = schema
        self.table = table
        self.column = column
        self.constraint = constraint
        self.datatype = datatype

    def to_dict(self) -> dict[str, Any]:
        return {
            "message": str(self),
            "sqlstate": self.sqlstate,
            "condition": self.condition,
            "schema": self.schema,
            "table": self.table,
            "column": self.column,
            "constraint": self.constraint,
            "datatype": self.datatype,
        }


def _diag_fields(exc: BaseException) -> dict[str, str | None]:
    diag = getattr(exc, "diag", None)

    def get(name: str) -> str | None:
        try:
            value = getattr(diag, name, None) if diag is not None else None
        except Exception:  # noqa: BLE001 - a closed result: no field
            return None
        return str(value) if value else None

    return {
        "sqlstate": getattr(exc, "sqlstate", None) or get("sqlstate"),
        "schema": get("schema_name"),
        "table": get("table_name"),
        "column": get("column_name"),
        "constraint": get("constraint_name"),
        "datatype": get("datatype_name"),
        "primary": get("message_primary"),
    }


def describe_pg_error(exc: BaseException) -> str:
    """One line without row contents: ``SQLSTATE 23514 (CheckViolation): table public.people,
    constraint people_email_check``. Non-database exceptions give their class name only."""
    fields = _diag_fields(exc)
    sqlstate = fields["sqlstate"]
    condition = type(exc).__name__
    if sqlstate is None:
        if _is_psycopg_error(exc):  # client side (connection lost, ...): psycopg's own text
            first = (str(exc).strip().splitlines() or [""])[0]
            return f"{condition}: {redact_server_text(first)}" if first else condition
        return condition
    parts = [f"SQLSTATE {sqlstate} ({condition})"]
    if fields["table"]:
        table = f"{fields['schema']}.{fields['table']}" if fields["schema"] else fields["table"]
        parts.append(f"table {table}")
    elif fields["schema"]:
        parts.append(f"schema {fields['schema']}")
    for key in ("column", "constraint", "datatype"):
        if fields[key]:
            parts.append(f"{key} {fields[key]}")
    if fields["primary"] and sqlstate[:2] in _SAFE_PRIMARY_CLASSES:
        parts.append(fields["primary"])
    return ", ".join(parts)


def _is_psycopg_error(exc: BaseException) -> bool:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    return isinstance(exc, psycopg.Error)


def is_transient_sqlstate(sqlstate: str | None) -> bool:
    return bool(sqlstate) and any(sqlstate.startswith(p) for p in _TRANSIENT)  # type: ignore[union-attr]


def sanitize(
    exc: BaseException,
    what: str,
    *,
    error_cls: type[SanitizedDatabaseError] = SanitizedDatabaseError,
    retryable: bool | None = None,
    fixes: Mapping[str, str] | None = None,
) -> SanitizedDatabaseError:
    """A new ``error_cls`` describing ``exc`` for ``what`` (e.g. ``"anonymize public.people (in
    place)"``) without row contents, followed by ``fixes[sqlstate]`` when there is one. Raise it
    outside the ``except`` block that caught ``exc`` (or ``from None``), so the original is not
    chained."""
    fields = _diag_fields(exc)
    if retryable is None:
        retryable = is_transient_sqlstate(fields["sqlstate"]) or (
            fields["sqlstate"] is None and _is_psycopg_error(exc)
        )
    fix = fixes.get(str(fields["sqlstate"] or "")) if fixes else None
    return error_cls(
        f"{what} failed: {describe_pg_error(exc)}" + (f"; {fix}" if fix else ""),
        sqlstate=fields["sqlstate"],
        condition=type(exc).__name__ if fields["sqlstate"] else None,
        schema=fields["schema"],
        table=fields["table"],
        column=fields["column"],
        constraint=fields["constraint"],
        datatype=fields["datatype"],
        retryable=retryable,
    )


def sanitized(
    func: Callable[[], T],
    what: str,
    *,
    error_cls: type[SanitizedDatabaseError] = SanitizedDatabaseError,
    catch: tuple[type[BaseException], ...] | None = None,
    fixes: Mapping[str, str] | None = None,
) -> T:
    """``func()``, with a database error (psycopg's, and any of ``catch``) replaced by a
    :func:`sanitize`-d one that chains nothing."""
    import psycopg

    kinds = (psycopg.Error, *(catch or ()))
    try:
        return func()
    except kinds as exc:  # type: ignore[misc]
        if isinstance(exc, SanitizedDatabaseError):
            error: BaseException = exc
            error.__context__ = None
            error.__cause__ = None
        elif isinstance(exc, psycopg.Error):
            error = sanitize(exc, what, error_cls=error_cls, fixes=fixes)
        else:  # another error whose text may quote a server message (pg_restore's stderr)
            error = error_cls(
                f"{what} failed: {redact_server_text(str(exc))}",
                retryable=getattr(exc, "retryable", None),
            )
    raise error  # outside the except block: no __context__


# --------------------------------------------------------------------------------------------------
# Server text (pg_restore / psql stderr): no SQLSTATE fields, so cut what may hold values

_DROP_LINE = re.compile(r"^\s*(DETAIL|CONTEXT|HINT|QUERY|LINE \d+|STATEMENT|WHERE)\b|Failing row|^\s*\^")
#: a quoted or parenthesised value at the end of a message: `...: "value"`, `...: (...)`
_TRAILING_VALUE = re.compile(r""":\s*(?:"(?:[^"]|"")*"|'(?:[^']|'')*'|\(.*\))\s*$""")
_COPY_LINE = re.compile(r'(COPY [^,]+, line \d+)(?:, column [^:]+)?:\s*".*$')
_COMMAND_WAS = re.compile(r"\s*(?:command was|Command was):.*$", re.IGNORECASE | re.DOTALL)
#: any single- or double-quoted part of a message (SQL quoting: a doubled quote stays inside)
_QUOTED = re.compile(r'"(?:[^"]|"")*"' + r"|'(?:[^']|'')*'")


def withhold_quoted(text: str, marker: str = "<value withheld>") -> str:
    """``text`` with every quoted part replaced by ``marker``: for messages that may quote a value
    anywhere (``value "..." is out of range for type integer``, a DuckDB conversion error)."""
    return _QUOTED.sub(marker, text)


def redact_server_text(text: str) -> str:
    """Text from a client tool's stderr, cut of what can hold row values: DETAIL / CONTEXT / HINT /
    QUERY lines, ``Failing row contains``, ``Command was:`` and everything after it, COPY data lines,
    and a quoted value at the end of a message (``invalid input syntax for type integer: "..."``)."""
    text = _COMMAND_WAS.sub("", text)
    out: list[str] = []
    for line in text.splitlines():
        if _DROP_LINE.search(line):
            continue
        line = _COPY_LINE.sub(r"\1: <row withheld>", line)
        line = _TRAILING_VALUE.sub(": <value withheld>", line)
        out.append(line)
    return "\n".join(out).strip()
