"""Table names in the restore: thin wrappers over :class:`scalingo_staging_sync.tablename.TableName`.

New code uses ``TableName`` directly. ``IDENT`` / ``QUALIFIED`` / ``split_qualified`` /
``parse_ident_list`` remain only for ``restore.dump``'s reading of ``pg_restore`` output; the archive's
DDL is otherwise parsed with pglast (``scalingo_staging_sync.inventory``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from scalingo_staging_sync.tablename import TableName

# One SQL identifier as pg_dump prints it: "quoted ""x""" or bare (restore.dump only).
IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_\u0080-\uffff][A-Za-z0-9_$\u0080-\uffff]*)'
QUALIFIED = rf"{IDENT}(?:\.{IDENT})?"
_IDENT_RE = re.compile(IDENT)


def unquote_ident(token: str) -> str:
    token = token.strip()
    if token.startswith('"') and token.endswith('"') and len(token) >= 2:
        return token[1:-1].replace('""', '"')
    return token.lower()  # pg_dump quotes any name that is not lower case


def split_qualified(text: str) -> tuple[str | None, str]:
    """SQL as pg_dump prints it: ``public."Order Items"`` -> ("public", "Order Items")."""
    parts = [unquote_ident(m.group(0)) for m in _IDENT_RE.finditer(text)]
    if len(parts) == 1:
        return None, parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise ValueError(f"not a (schema-qualified) SQL name: {text!r}")


def parse_ident_list(text: str) -> list[str]:
    return [unquote_ident(m.group(0)) for m in _IDENT_RE.finditer(text)]


def qualified_key(schema: str, table: str) -> str:
    """The canonical key of a table (``str(TableName)``) used in results and XCom."""
    return str(TableName(schema or "public", table))


def table_names(names: Iterable[Any] | None) -> list[TableName]:
    """Names parsed once with ``TableName.parse``, duplicates removed (first wins)."""
    out: list[TableName] = []
    for name in names or ():
        parsed = TableName.parse(name)
        if parsed not in out:
            out.append(parsed)
    return out


def normalize_tables(names: Iterable[Any] | None) -> list[tuple[str, str]]:
    """:func:`table_names` as (schema, table) pairs (old callers)."""
    return [(t.schema, t.name) for t in table_names(names)]
