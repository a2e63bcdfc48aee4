"""Walking pglast parse trees (PostgreSQL's parser): the child nodes of a node, and the column
references of an expression. Shared by the inventory (DDL of the archive), the planner (rule
conditions) and the post-load view analysis."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pglast import ast


def children(node: Any) -> Iterator[Any]:
    """The direct children of a parse-tree value: the attribute values of a node, the items of a
    tuple or list, nothing for anything else (a string, a number, None)."""
    if isinstance(node, ast.Node):
        for attr in node:
            yield getattr(node, attr)
    elif isinstance(node, (tuple, list)):
        yield from node


def column_refs(node: Any, *, into_subqueries: bool) -> list[tuple[str, ...]]:
    """Every ColumnRef of an expression as its name parts (``a``, ``t.a``), in order.

    ``into_subqueries=False`` leaves out the references inside subqueries (``x IN (SELECT id FROM
    other)``: ``id`` is a column of ``other``); the tested expression of such a sublink (``x``) is
    still walked."""
    found: list[tuple[str, ...]] = []

    def visit(n: Any) -> None:
        if isinstance(n, ast.ColumnRef):
            fields = tuple(f.sval for f in n.fields if isinstance(f, ast.String))
            if fields:
                found.append(fields)
            return
        if not into_subqueries and isinstance(n, ast.SubLink):
            visit(n.testexpr)  # the subquery itself reads other tables
            return
        for child in children(n):
            visit(child)

    visit(node)
    return found
