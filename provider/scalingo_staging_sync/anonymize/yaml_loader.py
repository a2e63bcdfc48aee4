"""YAML for rules files: duplicate keys are refused, and error paths map back to file lines.

PyYAML's ``safe_load`` keeps the *last* of two equal keys without a word, so a reviewed file could say
one thing on screen and do another (``columns: {email: email, ..., email: null}``). :func:`load_yaml`
refuses that with the line of both keys; :func:`duplicate_keys` lists every duplicate of a document
(for ``scalingo-staging-sync validate``, which reports them all at once).

:func:`compose` keeps the node tree (with line marks) so that an error named by its JSON path, such as
``anonymization_tables[3].columns.emial: ...`` (the form :mod:`.rules` uses), can be reported as
``file:line`` with :func:`line_of`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

_MERGE_TAG = "tag:yaml.org,2002:merge"


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping holds the same key twice (a subclass of :class:`yaml.YAMLError`)."""


class StrictSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate mapping keys."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node, _value in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # unhashable key: the base class reports it
                    continue
                if first is not None:
                    raise DuplicateKeyError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found duplicate key {key!r} (first defined on line {first.start_mark.line + 1}); "
                        "a key may appear once per mapping: keep one and delete the other",
                        key_node.start_mark,
                    )
                seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str | bytes) -> Any:
    """Parse one YAML document like ``yaml.safe_load``, but raise :class:`DuplicateKeyError` on a
    duplicate key."""
    return yaml.load(text, Loader=StrictSafeLoader)  # noqa: S506 - a SafeLoader subclass


def compose(text: str | bytes) -> yaml.Node | None:
    """The node tree of one YAML document (None for an empty document)."""
    return yaml.compose(text, Loader=yaml.SafeLoader)


@dataclass(frozen=True)
class DuplicateKey:
    path: str  # JSON path of the mapping's duplicated key, e.g. "anonymization_tables[0].columns.email"
    line: int  # 1-based line of the second occurrence
    first_line: int  # 1-based line of the first


def _scalar_key(node: yaml.Node) -> Any:
    return node.value if isinstance(node, yaml.ScalarNode) else None


def _join(path: str, part: str | int) -> str:
    if isinstance(part, int):
        return f"{path}[{part}]"
    return f"{path}.{part}" if path else str(part)


def duplicate_keys(root: yaml.Node | None) -> list[DuplicateKey]:
    """Every duplicate key of the document, in file order (scalar keys compared by their text)."""
    found: list[DuplicateKey] = []

    def walk(node: yaml.Node, path: str, seen_nodes: set[int]) -> None:
        if id(node) in seen_nodes:  # aliases may make the graph cyclic
            return
        seen_nodes = seen_nodes | {id(node)}
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, yaml.Node] = {}
            for key_node, value_node in node.value:
                key = _scalar_key(key_node)
                if key_node.tag != _MERGE_TAG and key is not None:
                    if key in first:
                        found.append(
                            DuplicateKey(
                                _join(path, key), key_node.start_mark.line + 1, first[key].start_mark.line + 1
                            )
                        )
                    else:
                        first[key] = key_node
                walk(value_node, _join(path, key if key is not None else "?"), seen_nodes)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, _join(path, i), seen_nodes)

    if root is not None:
        walk(root, "", set())
    return found


_PART_RE = re.compile(r"\[(\d+)\]|([^.\[\]]+)")


def split_path(path: str) -> list[str | int]:
    """``"anonymization_tables[3].columns.emial"`` -> ``["anonymization_tables", 3, "columns", "emial"]``."""
    if path in ("", "(top level)"):
        return []
    return [int(m.group(1)) if m.group(1) is not None else m.group(2) for m in _PART_RE.finditer(path)]


def line_of(root: yaml.Node | None, path: str | list[str | int]) -> int:
    """1-based line of the node at ``path`` (a key's own line for mapping entries); when the path
    goes further than the document (a missing key), the line of the deepest node that exists."""
    parts = split_path(path) if isinstance(path, str) else list(path)
    if root is None:
        return 1
    node: yaml.Node = root
    line = root.start_mark.line + 1
    for part in parts:
        if isinstance(node, yaml.MappingNode) and not isinstance(part, int):
            match = next(((k, v) for k, v in node.value if _scalar_key(k) == part), None)
            if match is None:
                return line
            line = match[0].start_mark.line + 1
            node = match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def error_path(message: str) -> str:
    """The JSON path a :class:`~scalingo_staging_sync.anonymize.rules.RulesError` message starts with."""
    head, sep, _rest = message.partition(": ")
    return head if sep and " " not in head.replace("(top level)", "") else ""
