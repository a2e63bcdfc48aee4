"""One value type for table names, resolved once and used everywhere (rules, exclusions, allow-list,
translations, plan, audit, Slack, XCom).

Syntax accepted from users (rules file, params, CLI):

* ``table``: a bare name means ``public.table``;
* ``schema.table``: split on the dot;
* SQL-quoted parts: ``"My Schema"."Order.Items"``, ``crm."Sessions"`` (``""`` inside quotes is one ``"``).

Unquoted parts are taken verbatim, without case folding: ``Order Items`` names the table literally
called ``Order Items``, as pg_dump's TOC prints it. ``str(name)`` gives the canonical text form, which
``TableName.parse`` reads back to the same value: parts are quoted only when they hold a dot, a double
quote, or leading/trailing spaces. That form is what XCom, the audit report and Slack carry.

    >>> TableName.parse("users")
    TableName(schema='public', name='users')
    >>> str(TableName.parse('crm."a.b"'))
    'crm."a.b"'
    >>> TableName.parse("crm.sessions").identifier()  # psycopg.sql.Identifier("crm", "sessions")
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from scalingo_staging_sync.errors import SyncError

DEFAULT_SCHEMA = "public"


class TableNameError(SyncError, ValueError):
    """A table name that cannot be read; the message names it and says how to write it."""


def _split_parts(text: str) -> list[str]:
    parts: list[str] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] == " ":
            i += 1
        if i < n and text[i] == '"':
            i += 1
            buf: list[str] = []
            while True:
                if i >= n:
                    raise TableNameError(
                        f"table name {text!r}: unterminated double quote; close it, e.g. '\"My Table\"'"
                    )
                if text[i] == '"':
                    if i + 1 < n and text[i + 1] == '"':
                        buf.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                buf.append(text[i])
                i += 1
            part = "".join(buf)
            if not part:
                raise TableNameError(f'table name {text!r}: empty quoted part ""')
            while i < n and text[i] == " ":
                i += 1
        else:
            start = i
            while i < n and text[i] not in '."':
                i += 1
            part = text[start:i].strip()
            if i < n and text[i] == '"':
                raise TableNameError(
                    f"table name {text!r}: a double quote inside an unquoted part; quote the whole part "
                    'and double the inner quote, e.g. \'"a""b"\''
                )
            if not part:
                raise TableNameError(
                    f"table name {text!r}: empty part; write 'table' or 'schema.table' "
                    "(quote parts that contain a dot)"
                )
        parts.append(part)
        if i >= n:
            return parts
        if text[i] != ".":  # pragma: no cover - loop invariant
            raise TableNameError(f"table name {text!r}: unexpected {text[i]!r} at {i}")
        i += 1


@dataclass(frozen=True, order=True)
class TableName:
    """A schema-qualified table name. Compare, hash and sort as values; build SQL with ``identifier()``."""

    schema: str
    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.schema, str) or not self.schema:
            raise TableNameError(f"table name needs a schema, got {self.schema!r}")
        if not isinstance(self.name, str) or not self.name:
            raise TableNameError(f"table name needs a name, got {self.name!r}")

    @classmethod
    def parse(cls, value: Any, default_schema: str = DEFAULT_SCHEMA) -> TableName:
        """A user-supplied name (str, ``TableName``, ``(schema, name)`` pair, or ``{"schema", "name"}``)."""
        if isinstance(value, TableName):
            return value
        if isinstance(value, (tuple, list)) and len(value) == 2:
            return cls(str(value[0]), str(value[1]))
        if isinstance(value, dict) and {"schema", "name"} <= set(value):
            return cls(str(value["schema"]), str(value["name"]))
        if not isinstance(value, str):
            raise TableNameError(
                f"table name must be a string such as 'schema.table', got {type(value).__name__} {value!r}"
            )
        text = value.strip()
        if not text:
            raise TableNameError("empty table name; write 'table' (in public) or 'schema.table'")
        parts = _split_parts(text)
        if len(parts) == 1:
            return cls(default_schema, parts[0])
        if len(parts) == 2:
            return cls(parts[0], parts[1])
        raise TableNameError(
            f"table name {value!r} has {len(parts)} dot-separated parts; write 'schema.table', and quote "
            "a part that contains a dot, e.g. 'public.\"a.b\"'"
        )

    @staticmethod
    def _quote_if_needed(part: str) -> str:
        if "." in part or '"' in part or part != part.strip():
            return '"' + part.replace('"', '""') + '"'
        return part

    def __str__(self) -> str:
        return f"{self._quote_if_needed(self.schema)}.{self._quote_if_needed(self.name)}"

    @property
    def key(self) -> str:
        """The canonical text form (same as ``str()``), used as a dict key in XCom and reports."""
        return str(self)

    def sql_literal_name(self) -> str:
        """Always-quoted SQL form ``"schema"."name"`` (for messages and ``regclass`` casts)."""
        return '"' + self.schema.replace('"', '""') + '"."' + self.name.replace('"', '""') + '"'

    def identifier(self):
        """``psycopg.sql.Identifier(schema, name)``: the only way these names enter SQL."""
        from psycopg import sql

        return sql.Identifier(self.schema, self.name)

    def to_json(self) -> str:
        return str(self)


def parse_table_names(values: Iterable[Any] | None, *, what: str = "table names") -> list[TableName]:
    """A list of names, parsed once, duplicates removed (first wins). Errors name the list and the value."""
    out: list[TableName] = []
    for value in values or ():
        try:
            name = TableName.parse(value)
        except TableNameError as exc:
            raise TableNameError(f"{what}: {exc}") from None
        if name not in out:
            out.append(name)
    return out
