"""The reviewed YAML rules file: loading, JSON Schema validation, defaults, the frozen ``Rules`` value.

Every error names the entry and the key (``anonymization_tables[3].columns.emial: ...``) and all of them
are reported together, before anything runs. Checks that need the tables (does the column
exist, does the output fit its type) are done on the archive's inventory by
:func:`scalingo_staging_sync.inventory.plan_from_archive` with the same naming.

The path comes from the ``rules_file`` DAG param, else the env ``SCALINGO_STAGING_SYNC_RULES``
(:func:`resolve_rules_path`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from scalingo_staging_sync.errors import SyncError
from scalingo_staging_sync.tablename import TableName, TableNameError

RULES_ENV = "SCALINGO_STAGING_SYNC_RULES"


class RulesError(SyncError, ValueError):
    """Invalid rules file; ``errors`` lists every problem, each naming its entry and key."""

    def __init__(self, errors: list[str], source: str | None = None):
        self.errors = list(errors)
        self.source = source
        where = f" in {source}" if source else ""
        super().__init__(
            f"{len(self.errors)} error(s){where}:\n" + "\n".join(f"  - {e}" for e in self.errors)
        )


class _AttrMapping(Mapping):
    """Frozen dataclasses below also read like dicts (``rules.retry["attempts"]``)."""

    def __getitem__(self, key: str) -> Any:
        if key in self.__dataclass_fields__:  # type: ignore[attr-defined]
            return getattr(self, key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.__dataclass_fields__)  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return len(self.__dataclass_fields__)  # type: ignore[attr-defined]

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]


def _plain(value: Any) -> Any:
    if isinstance(value, _AttrMapping):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class TableRule(_AttrMapping):
    """One ``anonymization_tables`` entry; ``columns`` is normalised to ``{col: {"transformer": ..}}``."""

    index: int
    table: str
    strategy: str | None = None
    columns: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    query: str | None = None
    condition: str | None = None
    translation: str | None = None

    @property
    def where(self) -> str:
        return f"anonymization_tables[{self.index}]"

    @property
    def table_name(self) -> TableName:
        """The rule's table, parsed once (bare name = public, SQL quoting understood)."""
        return TableName.parse(self.table)

    @property
    def schema_name(self) -> tuple[str, str]:
        name = self.table_name
        return name.schema, name.name

    @property
    def qualified(self) -> str:
        return str(self.table_name)


@dataclass(frozen=True)
class PiiScanSettings(_AttrMapping):
    enabled: bool = True
    on_unmasked: str = "fail"
    sample_rows: int = 1000
    allow: tuple[Any, ...] = ()
    patterns: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RetrySettings(_AttrMapping):
    attempts: int = 3
    base_delay_s: float = 1.0


@dataclass(frozen=True)
class VerificationSettings(_AttrMapping):
    enabled: bool = True


@dataclass(frozen=True)
class ProductionPatterns(_AttrMapping):
    apps: tuple[str, ...] = ("prod", "production")
    hosts: tuple[str, ...] = ("prod", "production")


@dataclass(frozen=True)
class RestoreSettings(_AttrMapping):
    mode: str = "auto"
    keep_previous: bool = True
    jobs: int | None = None
    maintenance: bool = False


@dataclass(frozen=True)
class Rules(_AttrMapping):
    source_app: str
    target_app: str | None = None
    anonymization_tables: tuple[TableRule, ...] = ()
    exclude_tables: tuple[str, ...] = ()
    pii_scan: PiiScanSettings = field(default_factory=PiiScanSettings)
    retry: RetrySettings = field(default_factory=RetrySettings)
    verification: VerificationSettings = field(default_factory=VerificationSettings)
    parallel_connections: int = 3
    audit_dir: str | None = None
    download_dir: str | None = None
    seeds: tuple[str, ...] = ()
    post_sync_commands: tuple[str, ...] = ()
    production_patterns: ProductionPatterns = field(default_factory=ProductionPatterns)
    require_confirmation: bool = False
    slack_conn_id: str | None = None
    slack_channel: str | None = None
    email_domain: str = "example.com"
    restore: RestoreSettings = field(default_factory=RestoreSettings)
    #: large objects (pg_largeobject): "drop" (default, never restored) or "keep" (restored and scanned)
    large_objects: str = "drop"
    path: str | None = None
    sha256: str | None = None
    #: the validated document as parsed (for display; use the typed attributes above)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def seed_paths(self) -> list[Path]:
        """``seeds`` resolved relative to the rules file."""
        base = Path(self.path).parent if self.path else Path.cwd()
        return [(base / s) for s in self.seeds]

    def table_rule(self, table: str | TableName) -> TableRule | None:
        wanted = TableName.parse(table)
        return next((t for t in self.anonymization_tables if t.table_name == wanted), None)

    @property
    def exclude_table_names(self) -> list[TableName]:
        """``exclude_tables`` parsed once (a bare name is public's only)."""
        return [TableName.parse(t) for t in self.exclude_tables]


@lru_cache(maxsize=1)
def rules_schema() -> dict[str, Any]:
    """The JSON Schema shipped in the package (``anonymize/rules.schema.json``)."""
    text = (resources.files("scalingo_staging_sync.anonymize") / "rules.schema.json").read_text("utf-8")
    return json.loads(text)


def _path_str(path: Any) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _schema_errors(data: Any) -> list[str]:
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(rules_schema())
    errors: list[str] = []
    for err in sorted(
        validator.iter_errors(data), key=lambda e: (list(map(str, e.absolute_path)), e.message)
    ):
        where = _path_str(err.absolute_path)
        if err.validator == "additionalProperties":
            extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            for key in extra:
                errors.append(f"{_path_str([*err.absolute_path, key])}: unknown key")
            continue
        if err.validator == "oneOf" and err.schema is rules_schema()["$defs"]["table_rule"]:
            present = [
                k
                for k in ("strategy", "columns", "query")
                if isinstance(err.instance, dict) and k in err.instance
            ]
            if not present:
                errors.append(f"{where}: needs one of strategy, columns or query")
            else:
                errors.append(
                    f"{where}: query cannot be combined with strategy or columns (found {', '.join(present)}); "
                    "use a query alone, or a strategy and/or columns"
                )
            continue
        if err.validator == "oneOf" and err.schema is rules_schema()["$defs"]["column_rule"]:
            errors.append(
                f"{where}: must be a transformer name, null, or {{transformer: <name>, ...options}}"
            )
            continue
        errors.append(f"{where}: {err.message}")
    return errors


def _normalise_column(spec: Any) -> dict[str, Any]:
    if spec is None:  # YAML `notes: null` -> the null transformer
        return {"transformer": "null"}
    if isinstance(spec, str):
        return {"transformer": spec}
    return dict(spec)


def _check_transformer(where: str, spec: dict[str, Any], email_domain: str) -> list[str]:
    from scalingo_staging_sync.anonymize.transformers import get_transformer, options_of

    try:
        transformer = get_transformer(spec["transformer"])
    except KeyError as exc:
        return [f"{where}: {exc.args[0]}"]
    return transformer.schema_errors(where, options_of(spec))


def derived_cycles(specs: Mapping[str, Mapping[str, Any]]) -> list[list[str]]:
    """Cycles among the derived columns of one table's ``{column: spec}`` (``md5_of``'s ``column``,
    ``full_name``'s ``from``: transformers whose :meth:`depends_on` reads another column's masked
    value), each as ``[a, b, ..., a]`` (``[a, a]``: ``a`` reads itself), starting at the first of its
    columns in ``specs`` order; one cycle per group of columns that read each other."""
    from scalingo_staging_sync.anonymize.transformers import get_transformer, options_of

    graph: dict[str, list[str]] = {}
    for col, spec in specs.items():
        try:
            deps = get_transformer(spec["transformer"]).depends_on(options_of(spec))
        except (KeyError, TypeError):  # invalid spec: reported by its own check
            deps = []
        graph[col] = [d for d in deps if isinstance(d, str) and d in specs]

    def reachable(start: str) -> set[str]:
        seen: set[str] = set()
        todo = [start]
        while todo:
            for dep in graph[todo.pop()]:
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        return seen

    reach = {col: reachable(col) for col in graph}
    cycles: list[list[str]] = []
    done: set[str] = set()
    for col in graph:
        if col in done or col not in reach[col]:
            continue
        group = {c for c in reach[col] if col in reach[c]} | {col}
        done |= group
        # the shortest way back to col, inside its group (breadth first)
        previous: dict[str, str] = {}
        queue = [col]
        while queue:
            node = queue.pop(0)
            if col in graph[node]:
                path = [node]
                while path[-1] != col:
                    path.append(previous[path[-1]])
                cycles.append([*reversed(path), col])
                break
            for dep in graph[node]:
                if dep in group and dep not in previous and dep != col:
                    previous[dep] = node
                    queue.append(dep)
    return cycles


def _reads(spec: Mapping[str, Any]) -> str:
    """How a derived column's spec reads other columns, as written in a rules file."""
    if spec.get("transformer") == "md5_of":
        return f"md5_of column: {spec.get('column')}"
    if spec.get("transformer") == "full_name":
        return f"full_name from: [{', '.join(map(str, spec.get('from') or []))}]"
    return str(spec.get("transformer"))


def derived_cycle_errors(
    specs: Mapping[str, Mapping[str, Any]],
    prefix: str,
    table: str,
    origin: Mapping[str, str] | None = None,
) -> list[str]:
    """One error per cycle of :func:`derived_cycles`, named ``<prefix>.<first column>`` (``prefix``: the
    rule's ``...columns``), naming the table, the columns of the cycle, how each reads the next and how
    to break it. ``origin``: ``{column: where its spec comes from}`` for columns the rules file does not
    configure itself (a strategy's preset, the planner's ``<col>_md5``)."""
    origin = origin or {}
    errors = []
    for cycle in derived_cycles(specs):
        head = cycle[0]
        reads = "; ".join(
            f"{col}: {_reads(specs[col])}" + (f" ({origin[col]})" if col in origin else "")
            for col in dict.fromkeys(cycle)
        )
        if len(cycle) == 2:
            errors.append(
                f"{prefix}.{head}: column {head} of {table} derives from itself ({reads}): a derived column "
                "is computed from the masked value of the columns it reads, and its own is not there before "
                "it is computed; read another column, or mask the column's own value (e.g. {transformer: hash})"
            )
        else:
            errors.append(
                f"{prefix}.{head}: derived columns of {table} form a cycle: {' -> '.join(cycle)} (each reads "
                f"the masked value of the next: {reads}), so none of them can be computed first; make one of "
                "these columns mask its own value (e.g. {transformer: hash}) or read a column outside the cycle"
            )
    return errors


def _table_cycle_errors(
    where: str, table: str, strategy: str | None, columns: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """Cycles among a rule's derived columns: its ``columns``, and the columns of its built-in
    strategy's preset that they do not override (assumed present in the table)."""
    from scalingo_staging_sync.anonymize.strategies import get_builtin

    specs: dict[str, Mapping[str, Any]] = dict(columns)
    origin: dict[str, str] = {}
    preset = get_builtin(strategy) if strategy else None
    for pc in preset.columns if preset is not None else ():
        if pc.column not in specs:
            specs[pc.column] = pc.spec
            origin[pc.column] = f"from strategy {strategy}"
    # the rule's own columns come first, so a cycle is named by one of them (presets have no cycle)
    return derived_cycle_errors(specs, f"{where}.columns", table, origin)


#: what a condition is parsed in: ``SELECT 1 FROM _t WHERE (\n<condition>\n)``, as it is run
_CONDITION_PREFIX = "SELECT 1 FROM _t WHERE (\n"


def parse_condition(condition: str, where: str) -> tuple[Any, list[str]]:
    """Syntax only (no catalog): the condition parsed with pglast (PostgreSQL's parser) as the one
    expression of ``SELECT 1 FROM _t WHERE (\n<condition>\n)``. Returns ``(the WHERE clause's node,
    [])`` or ``(None, [error named by where])``. Run when the rules file is loaded (``validate``, the
    start of a run) and by the planner's check without a server, which also checks the columns."""
    import pglast
    from pglast import ast

    text = _CONDITION_PREFIX + condition + "\n)"  # noqa: S608 - parsed, never run
    try:
        stmts = pglast.parse_sql(text)
    except pglast.parser.ParseError as exc:
        message = exc.args[0] if exc.args else str(exc)
        at = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else None
        if at is None:
            place = ""
        elif at - len(_CONDITION_PREFIX) >= len(condition.rstrip()):  # at the closing parenthesis added
            message, place = "syntax error", " at the end of the condition (it is incomplete)"
        else:
            pos = max(at - len(_CONDITION_PREFIX), 0)
            place = f" at character {pos + 1} of the condition ({condition[pos : pos + 20]!r})"
        return None, [
            f"{where}: does not parse as an SQL boolean expression: {message}{place}; write one "
            "expression over the table's columns, as after WHERE (created_at < now() - interval '1 year')"
        ]
    if len(stmts) != 1 or not isinstance(stmts[0].stmt, ast.SelectStmt):
        return None, [f"{where}: a condition is one boolean expression (found {len(stmts)} statements)"]
    return stmts[0].stmt.whereClause, []


def _check_condition(where: str, condition: str) -> list[str]:
    """Conditions are SQL from the reviewed file, wrapped as ``WHERE (\\n<cond>\\n)``; refuse what could
    break out of the parentheses into another statement (the planner also EXPLAINs it as one statement)."""
    errors = []
    stripped = re.sub(r"'(?:[^']|'')*'", "''", condition)  # ignore string literals
    if ";" in stripped:
        errors.append(f"{where}: a condition is one boolean expression; ';' is not allowed")
    if re.search(r"^\s*where\b", condition, re.IGNORECASE):
        errors.append(f"{where}: write the condition without the WHERE keyword")
    depth = 0
    for ch in stripped:
        depth += ch == "("
        depth -= ch == ")"
        if depth < 0:
            errors.append(f"{where}: unbalanced parentheses")
            break
    else:
        if depth:
            errors.append(f"{where}: unbalanced parentheses")
    if not errors:  # one expression, as PostgreSQL parses it (the columns are checked when planning)
        errors.extend(parse_condition(condition, where)[1])
    return errors


def _pattern_errors(patterns: Mapping[str, Any]) -> list[str]:
    """``pii_scan.patterns`` compiled as the PII scan compiles them (case-insensitive), so that a bad
    regular expression is refused with its key now rather than failing the scan, late in a run."""
    from scalingo_staging_sync.pii.detectors import content_pattern_from_dict, name_pattern_from_dict

    errors = []
    for kind, key, build, fix in (
        (
            "names",
            "pattern",
            name_pattern_from_dict,
            "fix the regex (a literal special character is escaped: \\(, \\.), or write a token "
            "sequence of letters, digits and _ only",
        ),
        (
            "content",
            "regex",
            content_pattern_from_dict,
            "fix the regex (a literal special character is escaped: \\(, \\.)",
        ),
    ):
        for j, item in enumerate(patterns.get(kind) or []):
            try:
                build(item)
            except re.error as exc:
                errors.append(
                    f"pii_scan.patterns.{kind}[{j}].{key}: {item[key]!r} is not a valid regular expression "
                    f"({exc}); {fix}"
                )
    return errors


def validate_rules_dict(data: Any, *, path: str | None = None, sha256: str | None = None) -> Rules:
    """Validate a parsed rules document and return :class:`Rules`; raise :class:`RulesError` listing
    every problem (schema, transformers and their options, strategies, duplicates, conditions)."""
    if not isinstance(data, dict):
        raise RulesError(
            ["(top level): the rules file must be a mapping (source_app: ..., anonymization_tables: ...)"],
            path,
        )
    errors = _schema_errors(data)
    if errors:
        raise RulesError(errors, path)

    from scalingo_staging_sync.anonymize.strategies import strategy_exists, strategy_names

    email_domain = data.get("email_domain", "example.com")
    tables: list[TableRule] = []
    seen: dict[TableName, int] = {}
    excluded: set[TableName] = set()
    for j, text in enumerate(data.get("exclude_tables", [])):
        try:
            excluded.add(TableName.parse(text))
        except TableNameError as exc:
            errors.append(f"exclude_tables[{j}]: {exc}")
    for i, entry in enumerate(data.get("anonymization_tables", [])):
        where = f"anonymization_tables[{i}]"
        try:
            qualified = TableName.parse(entry["table"])
        except TableNameError as exc:
            errors.append(f"{where}.table: {exc}")
            continue
        if qualified in seen:
            errors.append(
                f"{where}.table: {qualified} is already configured by anonymization_tables[{seen[qualified]}] "
                "(one entry per table: merge them)"
            )
        seen.setdefault(qualified, i)
        if qualified in excluded:
            errors.append(f"{where}.table: {qualified} is also in exclude_tables (its data is not restored)")
        columns: dict[str, dict[str, Any]] = {}
        valid: dict[str, dict[str, Any]] = {}  # the columns whose transformer and options are right
        for col, spec in (entry.get("columns") or {}).items():
            norm = _normalise_column(spec)
            problems = _check_transformer(f"{where}.columns.{col}", norm, email_domain)
            errors.extend(problems)
            columns[col] = norm
            if not problems:
                valid[col] = norm
        errors.extend(_table_cycle_errors(where, str(qualified), entry.get("strategy"), valid))
        if entry.get("strategy") and not strategy_exists(entry["strategy"]):
            errors.append(
                f"{where}.strategy: unknown strategy {entry['strategy']!r} (known: {', '.join(strategy_names())})"
            )
        condition = entry.get("condition")
        if condition is not None:
            if entry.get("query"):
                errors.append(f"{where}.condition: not allowed with query (write the WHERE inside the query)")
            errors.extend(_check_condition(f"{where}.condition", condition))
        tables.append(
            TableRule(
                index=i,
                table=entry["table"],
                strategy=entry.get("strategy"),
                columns=columns,
                query=entry.get("query"),
                condition=condition,
                translation=entry.get("translation"),
            )
        )
    errors.extend(_pattern_errors(data.get("pii_scan", {}).get("patterns") or {}))
    if errors:
        raise RulesError(errors, path)

    pii = data.get("pii_scan", {})
    retry = data.get("retry", {})
    prod = data.get("production_patterns", {})
    restore = data.get("restore", {})
    return Rules(
        source_app=data["source_app"],
        target_app=data.get("target_app"),
        anonymization_tables=tuple(tables),
        exclude_tables=tuple(data.get("exclude_tables", [])),
        pii_scan=PiiScanSettings(
            enabled=pii.get("enabled", True),
            on_unmasked=pii.get("on_unmasked", "fail"),
            sample_rows=pii.get("sample_rows", 1000),
            allow=tuple(pii.get("allow", [])),
            patterns=dict(pii.get("patterns", {})),
        ),
        retry=RetrySettings(
            attempts=retry.get("attempts", 3), base_delay_s=float(retry.get("base_delay_s", 1.0))
        ),
        verification=VerificationSettings(enabled=data.get("verification", {}).get("enabled", True)),
        parallel_connections=data.get("parallel_connections", 3),
        audit_dir=data.get("audit_dir"),
        download_dir=data.get("download_dir"),
        seeds=tuple(data.get("seeds", [])),
        post_sync_commands=tuple(data.get("post_sync_commands", [])),
        production_patterns=ProductionPatterns(
            apps=tuple(prod.get("apps", ("prod", "production"))),
            hosts=tuple(prod.get("hosts", ("prod", "production"))),
        ),
        require_confirmation=data.get("require_confirmation", False),
        slack_conn_id=data.get("slack_conn_id"),
        slack_channel=data.get("slack_channel"),
        email_domain=email_domain,
        restore=RestoreSettings(
            mode=restore.get("mode", "auto"),
            keep_previous=restore.get("keep_previous", True),
            jobs=restore.get("jobs"),
            maintenance=restore.get("maintenance", False),
        ),
        large_objects=data.get("large_objects", "drop"),
        path=path,
        sha256=sha256,
        raw=data,
    )


def parse_rules_text(text: str | bytes, *, path: str | None = None) -> Rules:
    import yaml

    from scalingo_staging_sync.anonymize.yaml_loader import load_yaml  # refuses duplicate keys

    raw = text.encode("utf-8") if isinstance(text, str) else text
    try:
        data = load_yaml(raw)
    except yaml.YAMLError as exc:
        raise RulesError([f"(top level): not valid YAML: {exc}"], path) from None
    return validate_rules_dict(data, path=path, sha256=hashlib.sha256(raw).hexdigest())


def load_rules(path: str | os.PathLike[str]) -> Rules:
    """Read, validate and return the rules file at ``path``."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise RulesError([f"(top level): cannot read the rules file: {exc.strerror}"], str(p)) from None
    return parse_rules_text(raw, path=str(p.resolve()))


def resolve_rules_path(param: str | None = None) -> Path:
    """The ``rules_file`` DAG param when given, else the env ``SCALINGO_STAGING_SYNC_RULES``."""
    value = param or os.environ.get(RULES_ENV)
    if not value:
        raise RulesError(
            [
                "(top level): no rules file: set [scalingo_staging_sync] rules_file (env "
                "AIRFLOW__SCALINGO_STAGING_SYNC__RULES_FILE), or choose one of the rules folder's files with the "
                f"DAG param rules_file ([scalingo_staging_sync] rules_folder), or set the environment variable {RULES_ENV}"
            ]
        )
    return Path(value)
