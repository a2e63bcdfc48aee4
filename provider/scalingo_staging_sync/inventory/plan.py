"""Planning on the archive's inventory, before anything is restored: every rule checked against the
archive's own tables, every data-carrying entry classified, and the plan items.

Classes (one per data-carrying TOC entry, each with its reason):

* ``masked``: a rule names its table or an ancestor (partition parent, INHERITS parent);
* ``excluded``: its table or an ancestor is in ``exclude_tables``: the data is not restored;
* ``scanned``: no rule names it; it is restored and goes through the PII scan (sequence values, a
  counter without row content, are restored as they are and counted here; large objects when the
  rules say ``large_objects: keep``);
* ``dropped``: never restored: statistics (``pg_dump --statistics``; ANALYZE runs on masked data),
  large objects (unless ``large_objects: keep``), materialized view data (refreshed from the masked
  tables later).

``skip_dump_ids`` is what the restore leaves out of its ``-L`` list: the excluded and dropped entries,
the comments / ACLs of dropped large objects, and the foreign keys of restored tables that reference an
excluded table.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from scalingo_staging_sync.anonymize.planner import (
    ForeignKeyFact,
    PlanError,
    TableCatalog,
    key_refusals,
    plan_rule,
)
from scalingo_staging_sync.anonymize.rules import Rules, TableRule
from scalingo_staging_sync.inventory.build import build_inventory
from scalingo_staging_sync.inventory.model import (
    MATVIEW_DATA,
    SEQUENCE_SET,
    STATISTICS_DATA,
    TABLE_DATA,
    DataEntry,
    Inventory,
    Table,
)
from scalingo_staging_sync.restore.pgtools import PgTools
from scalingo_staging_sync.tablename import TableName, TableNameError

log = logging.getLogger(__name__)

CLASSES = ("masked", "excluded", "scanned", "dropped")


@dataclass(frozen=True)
class Classified:
    desc: str
    dump_id: int
    table: TableName | None
    cls: str  # one of CLASSES
    reason: str

    def to_json(self) -> dict:
        return {
            "desc": self.desc,
            "dump_id": self.dump_id,
            "table": str(self.table) if self.table else None,
            "class": self.cls,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, data: dict) -> Classified:
        table = TableName.parse(data["table"]) if data.get("table") else None
        return cls(data["desc"], int(data["dump_id"]), table, data["class"], data["reason"])


@dataclass
class ArchivePlan:
    items: list[dict] = field(default_factory=list)
    classification: list[Classified] = field(default_factory=list)
    masked_columns: list[str] = field(default_factory=list)
    excluded_tables: list[str] = field(default_factory=list)
    scanned_tables: list[str] = field(default_factory=list)
    large_objects: dict = field(default_factory=lambda: {"policy": "drop", "count": 0})
    materialized_views: list[str] = field(default_factory=list)
    skip_dump_ids: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: the TOC digest of the archive the plan was made from (``restore`` refuses another archive)
    toc_sha256: str = ""

    @property
    def summary(self) -> dict[str, int]:
        out = dict.fromkeys(CLASSES, 0)
        for c in self.classification:
            out[c.cls] += 1
        return out

    def to_json(self) -> dict:
        return {
            "items": [dict(i) for i in self.items],
            "classification": [c.to_json() for c in self.classification],
            "masked_columns": list(self.masked_columns),
            "excluded_tables": list(self.excluded_tables),
            "scanned_tables": list(self.scanned_tables),
            "large_objects": dict(self.large_objects),
            "materialized_views": list(self.materialized_views),
            "skip_dump_ids": sorted(self.skip_dump_ids),
            "summary": self.summary,
            "warnings": list(self.warnings),
            "toc_sha256": self.toc_sha256,
        }

    @classmethod
    def from_json(cls, data: dict) -> ArchivePlan:
        return cls(
            items=[dict(i) for i in data.get("items", [])],
            classification=[Classified.from_json(c) for c in data.get("classification", [])],
            masked_columns=list(data.get("masked_columns", [])),
            excluded_tables=list(data.get("excluded_tables", [])),
            scanned_tables=list(data.get("scanned_tables", [])),
            large_objects=dict(data.get("large_objects", {"policy": "drop", "count": 0})),
            materialized_views=list(data.get("materialized_views", [])),
            skip_dump_ids=[int(i) for i in data.get("skip_dump_ids", [])],
            warnings=list(data.get("warnings", [])),
            toc_sha256=str(data.get("toc_sha256") or ""),
        )


def catalog_of(table: Table) -> TableCatalog:
    """The inventory's table in the shape the shared rule checks read."""
    return TableCatalog(
        schema=table.name.schema,
        name=table.name.name,
        oid=0,
        relkind="p" if table.kind == "partitioned table" else "r",
        columns={c.name: c.info() for c in table.columns.values()},
        primary_key=table.row_key,  # the key the residual proof finds a row by
        unique_indexes=[(k.name, list(k.columns)) for k in table.unique_keys],
        checks=[(name, definition, list(cols)) for name, cols, definition in table.checks],
        foreign_keys=[(f.name, list(f.columns)) for f in table.foreign_keys],
        generated_from={c.name: list(c.generated_from) for c in table.columns.values() if c.generated},
        domain_checks={c.name: list(c.domain_checks) for c in table.columns.values() if c.domain_checks},
    )


def _custom_statement_only_errors(item: dict, rule: TableRule, rules: Rules, table: Any) -> list[str]:
    """A custom strategy on a parent whose children are their own items must update ``ONLY`` the
    parent (the executor builds it with ``only=True``): check that now, from the archive, rather than
    when the table is masked after the restore."""
    from scalingo_staging_sync.anonymize.strategies import (
        StrategyContext,
        StrategyError,
        build_custom_statement,
        get_custom,
    )

    # the executor's choice (anonymize.executor._statement): a custom strategy when no column specs
    custom = get_custom(item["strategy"]) if item.get("strategy") and not item.get("columns") else None
    if custom is None:
        return []
    cat = catalog_of(table)
    ctx = StrategyContext(
        table.name.schema, table.name.name, cat.columns, rule.condition, rules.email_domain, only=True
    )
    try:
        build_custom_statement(custom, ctx)
    except StrategyError as exc:
        return [f"{rule.where}.strategy: {exc}"]
    return []


def plan_from_archive(
    dump_path: str | os.PathLike,
    rules: Rules,
    *,
    exclude_tables: Any = (),
    tools: PgTools | None = None,
    inventory: Inventory | None = None,
) -> ArchivePlan:
    """Build the archive's inventory (or use ``inventory``), check ``rules`` against it and classify
    every data-carrying entry. ``exclude_tables``: more exclusions (DAG param) on top of the rules'.
    Raises :class:`PlanError` listing every rule problem; nothing has been written anywhere then."""
    inv = inventory or build_inventory(dump_path, tools)
    return plan_inventory(inv, rules, exclude_tables=exclude_tables)


def _similar(inv: Inventory, name: TableName) -> str:
    close = [str(t) for t in inv.tables if t.name.lower() == name.name.lower() and t != name]
    return f" (did you mean {', '.join(close)}?)" if close else ""


def plan_inventory(inv: Inventory, rules: Rules, *, exclude_tables: Any = ()) -> ArchivePlan:
    errors: list[str] = []
    warnings: list[str] = []

    # -- exclusions: each name and everything below it
    excluded: dict[TableName, str] = {}
    sources = [(f"exclude_tables[{i}]", t) for i, t in enumerate(rules.exclude_tables)]
    sources += [(f"exclude_tables param [{i}]", t) for i, t in enumerate(exclude_tables or ())]
    for where, text in sources:
        try:
            name = TableName.parse(text)
        except TableNameError as exc:
            errors.append(f"{where}: {exc}")
            continue
        if name not in inv.tables:
            # a misspelt exclusion would restore the data it was meant to keep out
            errors.append(
                f"{where}: {name} is not a table of this archive{_similar(inv, name)}; fix the name "
                "(schema.table, a bare name means public) or remove the exclusion"
            )
            continue
        excluded.setdefault(name, f"{where}: {name} is excluded")
        for child in inv.descendants(name):
            excluded.setdefault(child, f"{where}: {child} is a partition/child of excluded {name}")

    # -- rules
    ruled: dict[TableName, TableRule] = {}
    for rule in rules.anonymization_tables:
        name = rule.table_name
        if name not in inv.tables:
            what = "a materialized view" if name in inv.materialized_views else "not a table of this archive"
            errors.append(
                f"{rule.where}.table: {name} is {what}{_similar(inv, name)}; fix the name (schema.table, "
                "a bare name means public) or remove the entry"
            )
            continue
        if name in excluded:
            errors.append(
                f"{rule.where}.table: {name} has a rule but {excluded[name]}: remove the rule or the exclusion"
            )
            continue
        if inv.tables[name].kind == "foreign table":
            # its rows live on the foreign server: none is restored, and an UPDATE would write there
            errors.append(
                f"{rule.where}.table: {name} is a foreign table: its rows live on another server, are never "
                "restored and cannot be masked here; remove the entry"
            )
            continue
        ruled[name] = rule

    items: list[dict] = []
    masked_by: dict[TableName, str] = {}
    #: table -> (the rule that masks it, its plan item): what the key checks below compare
    masking: dict[TableName, tuple[TableRule, dict]] = {}
    for name, rule in ruled.items():
        table = inv.tables[name]
        n0 = len(errors)
        item = plan_rule(catalog_of(table), rules, rule, from_dump=True, dump_pks={}, errors=errors)
        parent_errors = set(errors[n0:])
        if item is not None:
            masking[name] = (rule, item)
            item["table"] = str(name)
            item["warnings"] = [w for w in item["warnings"] if not w.startswith("partitioned table")]
            if rule.query:
                # an inline query names the ruled table itself: one item, run once; PostgreSQL's
                # UPDATE on a parent reaches its partitions and inheritance children
                items.append(item)
                masked_by[name] = f"{rule.where} names {name}"
                for child_name in inv.descendants(name):
                    masked_by.setdefault(
                        child_name, f"{rule.where}: its query on {name} also updates {child_name}"
                    )
                    if child_name in ruled:  # masked twice, the query's output winning or not by order
                        warnings.append(
                            f"{child_name} has its own rule ({ruled[child_name].where}), but the query of "
                            f"{rule.where} on {name} also updates its rows: leave them out of the query "
                            f"(UPDATE ONLY {name} for an inheritance parent) or remove {child_name}'s rule"
                        )
                continue
            if table.kind != "partitioned table":
                items.append(item)
                masked_by[name] = f"{rule.where} names {name}"
        below = inv.descendants(name)
        for child_name in below:
            if child_name in excluded:  # its data is not restored: nothing to mask, nothing to prove
                continue
            if child_name not in ruled and any(a in ruled for a in inv.ancestors(child_name) if a in below):
                # under a sub-partitioned table or a child with a rule of its own: that rule's, planned
                # with it (planning the parent's too gave the table two items, masking it twice)
                continue
            if inv.tables[child_name].kind == "foreign table":
                # none of its rows is restored; the parent's in-place UPDATE must not reach it (it would
                # write to the foreign server): ONLY, as for a child planned on its own
                if item is not None:
                    item["children_planned"] = True
                warnings.append(
                    f"{child_name} is a foreign table below {name}: its rows live on another server and are "
                    f"never restored, so {rule.where} does not mask it"
                )
                continue
            if child_name in ruled:
                own = ruled[child_name]
                # its rule replaces the parent's for its rows: a column the parent masks and its own
                # rule leaves out would stay unmasked in this partition (a query or strategy of its own
                # says what it masks itself)
                missing = (
                    sorted(set(rule.columns) - set(own.columns)) if not (own.query or own.strategy) else []
                )
                if missing:
                    errors.append(
                        f"{own.where}.table: {child_name} has its own rule, which replaces {name}'s "
                        f"({rule.where}) for its rows but does not mask {', '.join(missing)}: add "
                        f"{'them' if len(missing) > 1 else 'it'} to its rule, or remove its rule"
                    )
                else:
                    warnings.append(f"{child_name} has its own rule ({own.where}), used instead of {name}'s")
                continue
            child = inv.tables[child_name]
            if child.kind == "partitioned table":
                continue
            prior = masking.get(child_name)
            if prior is not None and prior[0] is not rule:
                # multiple inheritance from two ruled tables: two items would mask it twice, the
                # second over the first's output, and its proof could not be checked
                errors.append(
                    f"{rule.where}.table: {child_name} inherits from several ruled tables ({prior[0].where} "
                    f"and {rule.where}): give {child_name} a rule of its own masking the columns of both"
                )
                continue
            child_item = _child_item(rule, rules, child, name, errors, parent_errors)
            if child_item is not None and item is not None:
                items.append(child_item)
                masking.setdefault(child_name, (rule, child_item))
                # the child is its own item: an in-place UPDATE of the parent must not reach it again
                item["children_planned"] = True
                how = "partition" if child.partition_of is not None else "inheritance child"
                masked_by[child_name] = f"{rule.where} names {name}; {child_name} is its {how}"
        if item is not None and item.get("children_planned"):
            errors.extend(_custom_statement_only_errors(item, rule, rules, table))

    # an UPDATE of a table reaches every inheritance descendant: one that is an item of its own (a child
    # with its own rule, a grandchild under a ruled parent) would be masked twice, the second time over
    # its masked values with another item's transformers. Each item with such a descendant runs ONLY.
    own_items = {id(i) for i in items}
    planned = {n for n, (_, i) in masking.items() if id(i) in own_items}
    for name, (rule, item) in masking.items():
        if rule.query or item.get("children_planned") or id(item) not in own_items:
            continue
        if any(d in planned for d in inv.descendants(name)):
            item["children_planned"] = True
            errors.extend(_custom_statement_only_errors(item, rule, rules, inv.tables[name]))

    # a refused rule's table (and what is below it without a rule of its own): its keys are judged once
    # the rule is fixed, not reported as unmasked now
    unplanned = {
        t for name in ruled if name not in masking for t in (name, *inv.descendants(name)) if t not in masking
    }
    errors.extend(
        key_refusals(
            masking,
            columns_of=lambda n: inv.tables[n].columns if n in inv.tables else None,
            foreign_keys=[
                ForeignKeyFact(fk.name, table.name, fk.columns, fk.references, fk.ref_columns)
                for table in inv.tables.values()
                for fk in table.foreign_keys
            ],
            partition_keys={n: t.partition_key for n, t in inv.tables.items() if t.partition_key},
            ancestors=inv.ancestors,
            excluded=excluded,
            unplanned=unplanned,
        )
    )
    errors.extend(_allow_problems(inv, rules))
    if errors:
        raise PlanError(sorted(_dedupe(errors), key=_entry_order))

    # what the restore leaves out whatever the rules say: shown with the plan (and the dry run)
    warnings.extend(f"{entry}: not restored ({reason})" for entry, reason in inv.never_restored)
    plan = ArchivePlan(items=items, warnings=warnings, toc_sha256=inv.toc_sha256)
    plan.large_objects = {"policy": rules.large_objects, "count": inv.large_object_count}
    plan.materialized_views = [str(m) for m in inv.materialized_views]
    for item in items:
        plan.masked_columns.extend(f"{item['table']}.{c}" for c in item["masked_columns"])
    plan.excluded_tables = [str(t) for t in excluded]
    skip: set[int] = set()
    scanned: list[str] = []
    for entry in inv.data_entries:
        c = classify(entry, inv, excluded, masked_by, rules.large_objects)
        plan.classification.append(c)
        if c.cls in ("excluded", "dropped"):
            skip.add(entry.dump_id)
        if c.cls == "scanned" and entry.desc == TABLE_DATA and c.table is not None:
            scanned.append(str(c.table))
    if rules.large_objects != "keep":
        skip.update(inv.large_object_dependents)
    for table in inv.tables.values():
        if table.name in excluded:
            continue
        for fk in table.foreign_keys:
            if fk.references in excluded and fk.dump_id is not None:
                skip.add(fk.dump_id)
                warnings.append(
                    f"foreign key {fk.name} of {table.name} references excluded {fk.references}: not restored"
                )
    plan.scanned_tables = scanned
    plan.skip_dump_ids = sorted(skip)
    for w in warnings:
        log.warning("%s", w)
    log.info("archive plan: %s", plan.summary)
    return plan


def _child_item(
    rule: TableRule,
    rules: Rules,
    child: Table,
    parent: TableName,
    errors: list[str],
    parent_errors: set[str],
) -> dict | None:
    """The parent's rule planned for one partition / inheritance child: same columns and transformers,
    checked against the child's own columns and unique keys (a child may add a UNIQUE the parent
    lacks). Errors the parent already has are not repeated for each child."""
    n = len(errors)
    child_errors: list[str] = []
    child_item = plan_rule(catalog_of(child), rules, rule, from_dump=True, dump_pks={}, errors=child_errors)
    for e in child_errors:
        if e.replace(str(child.name), str(parent)) not in parent_errors:
            errors.append(f"{e} (on {child.name}, which inherits the rule of {parent})")
    if child_item is None or len(errors) > n:
        return None
    child_item.update(table=str(child.name), schema=child.name.schema, name=child.name.name)
    kind = "partition" if child.partition_of is not None else "inheritance child"
    child_item["warnings"] = [
        *[w for w in child_item["warnings"] if not w.startswith("partitioned table")],
        f"{kind} of {parent}: masked with its rules ({rule.where})",
    ]
    return child_item


def classify(
    entry: DataEntry,
    inv: Inventory,
    excluded: dict[TableName, str],
    masked_by: dict[TableName, str],
    large_objects: str = "drop",
) -> Classified:
    """One data-carrying entry's class and why."""

    def out(cls: str, reason: str) -> Classified:
        return Classified(entry.desc, entry.dump_id, entry.table, cls, reason)

    if entry.desc == STATISTICS_DATA:
        return out(
            "dropped",
            "statistics are never restored (they hold original values); ANALYZE runs on the masked data",
        )
    if entry.is_large_object:
        if large_objects == "keep":
            return out(
                "scanned",
                "large_objects: keep: restored, their content goes through the PII content detector",
            )
        return out(
            "dropped",
            "large objects are not restored (set large_objects: keep in the rules to restore and scan them)",
        )
    if entry.desc == MATVIEW_DATA:
        return out(
            "dropped", "materialized view data is not restored: it is refreshed from the masked tables"
        )
    if entry.desc == SEQUENCE_SET:
        return out("scanned", "sequence value: a counter without row content, restored as is")
    if entry.desc == TABLE_DATA and entry.table is not None:
        table = inv.tables.get(entry.table)
        if table is not None and table.kind == "foreign table":
            from scalingo_staging_sync.restore.toc import FOREIGN_TABLE_DATA

            return out("dropped", FOREIGN_TABLE_DATA)
        if entry.table in excluded:
            return out("excluded", excluded[entry.table])
        if entry.table in masked_by:
            return out("masked", masked_by[entry.table])
        return out("scanned", "no rule names this table or a parent of it: the PII scan checks it")
    from scalingo_staging_sync.inventory.model import InventoryError

    raise InventoryError(f"TOC entry {entry.dump_id} ({entry.desc} {entry.tag}) cannot be classified")


def _allow_problems(inv: Inventory, rules: Rules) -> list[str]:
    """``pii_scan.allow`` entries that name no column of the archive: a misspelt or stale entry is
    refused, like a rule or an exclusion that names no table (it would be accepted and then match
    nothing). Patterns (``public.*.notes``) count when they match one column. A materialized view's
    columns are not in the archive's inventory: an entry names it when its table part does, without a
    wildcard. The large objects are ``pg_catalog.pg_largeobject.data``."""
    from scalingo_staging_sync.pii.scanner import LARGE_OBJECTS_TABLE, matches_any, parse_allow

    names = [f"{LARGE_OBJECTS_TABLE}.data"]
    for table in inv.tables.values():
        forms = {f"{table.name.schema}.{table.name.name}", str(table.name)}
        names += [f"{form}.{column}" for form in forms for column in table.columns]
    errors: list[str] = []
    for i, raw in enumerate(rules.pii_scan.allow):
        where = f"pii_scan.allow[{i}]"
        try:
            (entry,) = parse_allow([raw])
        except ValueError as exc:
            errors.append(f"{where}: {exc}")
            continue
        if matches_any(names, [entry.pattern]):
            continue
        table_part, _, column = entry.pattern.rpartition(".")
        views = [
            f"{form}.{column}"
            for view in inv.materialized_views
            for form in {f"{view.schema}.{view.name}", str(view)}
        ]
        if not any(c in table_part for c in "*?[") and matches_any(views, [entry.pattern]):
            continue
        hint = ""
        try:
            hint = _similar(inv, TableName.parse(table_part))
        except TableNameError:
            pass
        errors.append(
            f"{where}: {entry.pattern!r} names no column of this archive{hint}; fix the name "
            "(schema.table.column or schema.table.*, a bare table.column means public) or remove the entry"
        )
    return errors


def _entry_order(error: str) -> tuple[int, int]:
    """Errors in the order of the rules file: exclusions first, then by anonymization_tables index."""
    head, sep, rest = error.partition("anonymization_tables[")
    if head or not sep:
        return (0, 0)
    index = rest.partition("]")[0]
    return (1, int(index)) if index.isdigit() else (1, 0)


def _dedupe(errors: list[str]) -> list[str]:
    out: list[str] = []
    for e in errors:
        if e not in out:
            out.append(e)
    return out


def plan_lines(data: dict[str, Any]) -> list[str]:
    """An archive plan (``ArchivePlan.to_json()``) as text lines: the CLI's ``plan`` and the dry run."""
    out: list[str] = []
    summary = data.get("summary")
    if summary:
        out.append("Summary:")
        if isinstance(summary, dict):
            out.extend(f"  {k}: {v}" for k, v in summary.items())
        else:
            out.append(f"  {summary}")
    classification = data.get("classification") or []
    out.append(f"Archive inventory and classification ({len(classification)} entries):")
    for entry in classification:
        table = entry.get("table") or ""
        out.append(
            f"  {entry.get('dump_id', ''):>6}  {entry.get('desc', ''):<24} {table:<40} "
            f"{entry.get('class', ''):<12} {entry.get('reason', '')}".rstrip()
        )
    items = data.get("items") or []
    out.append(f"Plan ({len(items)} table(s) masked):")
    for item in items:
        columns = ", ".join(
            f"{col}={spec.get('transformer') if isinstance(spec, dict) else spec}"
            for col, spec in (item.get("columns") or {}).items()
        )
        extra = " ".join(
            f"{k}={item[k]}" for k in ("strategy", "mode") if isinstance(item, dict) and item.get(k)
        )
        out.append(f"  {item.get('table', '?')}: {columns or '-'} {extra}".rstrip())
        for warning in item.get("warnings") or []:
            out.append(f"    warning: {warning}")
    masked = data.get("masked_columns") or []
    out.append(f"Masked columns ({len(masked)}): {', '.join(map(str, masked)) or '-'}")
    out.append(f"Excluded tables: {', '.join(map(str, data.get('excluded_tables') or [])) or '-'}")
    out.append(f"Scanned tables: {len(data.get('scanned_tables') or [])}")
    lo = data.get("large_objects") or {}
    if lo:
        out.append(f"Large objects: {lo.get('count', 0)} (policy: {lo.get('policy', '?')})")
    views = data.get("materialized_views") or []
    if views:
        out.append(f"Materialized views: {', '.join(map(str, views))}")
    skipped = data.get("skip_dump_ids") or []
    if skipped:
        out.append(f"Archive entries skipped: {len(skipped)}")
    for warning in data.get("warnings") or []:  # e.g. an exclusion that names no table of the archive
        out.append(f"warning: {warning}")
    return out
