"""Table names: exact matching (never regular expressions), SQL identifier parsing of pg_dump output."""

from __future__ import annotations

import re

# One SQL identifier as pg_dump prints it: "quoted ""x""" or bare.
IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_\u0080-\uffff][A-Za-z0-9_$\u0080-\uffff]*)'
QUALIFIED = rf"{IDENT}(?:\.{IDENT})?"
_IDENT_RE = re.compile(IDENT)


def unquote_ident(token: str) -> str:
    token = token.strip()
    if token.startswith('"') and token.endswith('"') and len(token) >= 2:
        return token[1:-1].replace('""', '"')
    return token.lower()  # pg_dump quotes any name that is not lower case


def split_qualified(text: str) -> tuple[str | None, str]:
    """``public."Order Items"`` -> ("public", "Order Items"); ``album`` -> (None, "album")."""
    parts = [unquote_ident(m.group(0)) for m in _IDENT_RE.finditer(text)]
    if len(parts) == 1:
        return None, parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise ValueError(f"not a (schema-qualified) SQL name: {text!r}")


def parse_ident_list(text: str) -> list[str]:
    return [unquote_ident(m.group(0)) for m in _IDENT_RE.finditer(text)]


def parse_table_name(name: str, default_schema: str = "public") -> tuple[str, str]:
    """A user-supplied table name -> (schema, table), matched exactly later (case-sensitive).

    Accepted: ``table`` (in ``public``), ``schema.table``, or SQL-quoted parts such as
    ``"My Schema"."Order Items"``. Unquoted names are taken verbatim (no case folding), so
    ``Order Items`` means the table literally named ``Order Items``.
    """
    name = name.strip()
    if not name:
        raise ValueError("empty table name")
    if '"' in name:
        schema, table = split_qualified(name)
        return schema or default_schema, table
    if "." in name:
        schema, table = name.split(".", 1)
        return schema, table
    return default_schema, name


def qualified_key(schema: str, table: str) -> str:
    """The ``schema.table`` key used in results and XCom (unquoted)."""
    return f"{schema}.{table}"


def normalize_tables(names) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name in names or ():
        parsed = parse_table_name(name) if isinstance(name, str) else (name[0], name[1])
        if parsed not in out:
            out.append(parsed)
    return out
