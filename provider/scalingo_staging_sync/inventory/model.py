"""What an archive holds, read from the archive alone: tables, columns, hierarchies, keys, data entries."""

from __future__ import annotations

from dataclasses import dataclass, field

from scalingo_staging_sync.anonymize.transformers import ColumnInfo
from scalingo_staging_sync.errors import SyncError
from scalingo_staging_sync.tablename import TableName


class InventoryError(SyncError):
    """The archive holds something the inventory cannot account for (an unknown data-carrying entry, DDL
    that does not parse). Fails closed: nothing is restored from an archive we cannot account for."""

    retryable = False


# Data-carrying TOC descs and how pg_dump versions spell them:
#  TABLE DATA / SEQUENCE SET: every version. MATERIALIZED VIEW DATA: post-data REFRESH.
#  Large objects: pg_dump <= 16 writes one "BLOB" (pre-data, lo_create) per object and one "BLOBS"
#  (data) entry; pg_dump >= 17 writes grouped "BLOB METADATA" (pre-data) and "BLOBS" (data) entries.
#  "BLOB DATA" / "LARGE OBJECT" / "LARGE OBJECTS" are accepted as large-object spellings too.
#  STATISTICS DATA: pg_dump >= 18 with --statistics (data section for tables, post-data for indexes).
TABLE_DATA = "TABLE DATA"
SEQUENCE_SET = "SEQUENCE SET"
MATVIEW_DATA = "MATERIALIZED VIEW DATA"
STATISTICS_DATA = "STATISTICS DATA"
LARGE_OBJECT_DESCS = frozenset(
    {"BLOB", "BLOBS", "BLOB METADATA", "BLOB DATA", "LARGE OBJECT", "LARGE OBJECTS", "LARGE OBJECT DATA"}
)
DATA_CARRYING_DESCS = (
    frozenset({TABLE_DATA, SEQUENCE_SET, MATVIEW_DATA, STATISTICS_DATA}) | LARGE_OBJECT_DESCS
)
#: descs of entries that only make sense with a large object (comments, ACLs, labels on one): their
#: tag is "LARGE OBJECT <oid>"
LARGE_OBJECT_TAG_PREFIX = "LARGE OBJECT "


@dataclass(frozen=True)
class Column:
    name: str
    type_sql: str  # as written in the DDL, e.g. "varchar(60)", "public.d_mail"
    base_type: str  # type name (the domain's base type for a domain), e.g. "varchar", "int4", "_text"
    max_length: int | None = None  # n of varchar(n) / char(n)
    not_null: bool = False
    default: str | None = None  # the DEFAULT expression as SQL text
    generated: bool = False  # GENERATED ALWAYS AS (...) STORED
    identity: bool = False
    is_domain: bool = False
    #: columns a GENERATED ALWAYS AS (...) STORED expression references (empty for other columns)
    generated_from: tuple[str, ...] = ()
    #: the CHECK constraints of its domain: (domain, constraint name, expression as SQL text)
    domain_checks: tuple[tuple[str, str, str], ...] = ()
    #: the labels of its enum type, when the archive defines it (None: not an enum, or unknown)
    enum_labels: tuple[str, ...] | None = None

    def info(self) -> ColumnInfo:
        """What the transformers check against (same shape as the catalog-based planner's)."""
        return ColumnInfo(
            name=self.name,
            type_sql=self.type_sql,
            base_type=self.base_type,
            max_length=self.max_length,
            not_null=self.not_null,
            generated=self.generated,
            is_domain=self.is_domain,
            enum_labels=self.enum_labels,
        )

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "type_sql": self.type_sql,
            "base_type": self.base_type,
            "max_length": self.max_length,
            "not_null": self.not_null,
            "default": self.default,
            "generated": self.generated,
            "identity": self.identity,
            "is_domain": self.is_domain,
            "generated_from": list(self.generated_from),
        }


@dataclass(frozen=True)
class UniqueKey:
    """A primary key, UNIQUE constraint or unique index (post-data). ``expression``: the index has
    expressions; ``columns`` are then the columns they reference."""

    name: str
    kind: str  # "primary key" | "unique constraint" | "unique index" | "exclusion constraint"
    columns: tuple[str, ...]
    dump_id: int | None = None
    expression: bool = False
    partial: bool = False


@dataclass(frozen=True)
class ForeignKeyInfo:
    name: str
    columns: tuple[str, ...]
    references: TableName
    ref_columns: tuple[str, ...]
    dump_id: int | None = None


@dataclass
class Table:
    name: TableName
    dump_id: int | None
    kind: str = "table"  # "table" | "partitioned table" | "foreign table"
    local_columns: list[Column] = field(default_factory=list)
    columns: dict[str, Column] = field(default_factory=dict)  # effective (inherited + local), in order
    parents: list[TableName] = field(default_factory=list)
    partition_of: TableName | None = None
    children: list[TableName] = field(default_factory=list)  # direct partitions and inheritance children
    unique_keys: list[UniqueKey] = field(default_factory=list)
    foreign_keys: list[ForeignKeyInfo] = field(default_factory=list)
    #: (name, columns, definition as ``CHECK (<expression>)``)
    checks: list[tuple[str, tuple[str, ...], str]] = field(default_factory=list)
    #: columns of ``PARTITION BY`` (those its expressions reference) of a partitioned table
    partition_key: tuple[str, ...] = ()

    @property
    def primary_key(self) -> list[str]:
        return next((list(k.columns) for k in self.unique_keys if k.kind == "primary key"), [])

    @property
    def row_key(self) -> list[str]:
        """The columns that identify a row: the primary key, else the first UNIQUE constraint or unique
        index on plain NOT NULL columns (no expression, no predicate): Synapse keys ``profiles``,
        ``user_directory``, ``erased_users`` by a unique index and has no primary key there. [] when
        there is none (the residual proof then has no way to find a sampled row again)."""
        if self.primary_key:
            return self.primary_key
        for key in self.unique_keys:
            if key.kind not in ("unique constraint", "unique index") or key.expression or key.partial:
                continue
            if key.columns and all(c in self.columns and self.columns[c].not_null for c in key.columns):
                return list(key.columns)
        return []

    def to_dict(self) -> dict:
        return {
            "table": str(self.name),
            "kind": self.kind,
            "columns": [c.to_dict() for c in self.columns.values()],
            "parents": [str(p) for p in self.parents],
            "partition_of": str(self.partition_of) if self.partition_of else None,
            "partition_key": list(self.partition_key),
            "children": [str(c) for c in self.children],
            "unique_keys": [
                {"name": k.name, "kind": k.kind, "columns": list(k.columns), "expression": k.expression}
                for k in self.unique_keys
            ],
            "foreign_keys": [
                {"name": f.name, "columns": list(f.columns), "references": str(f.references)}
                for f in self.foreign_keys
            ],
        }


@dataclass(frozen=True)
class DataEntry:
    """One TOC entry that carries data."""

    dump_id: int
    desc: str
    table: TableName | None  # the table / matview / sequence / relation of statistics; None for LOs
    tag: str
    section: str | None = None

    @property
    def is_large_object(self) -> bool:
        return self.desc in LARGE_OBJECT_DESCS


@dataclass
class Inventory:
    dump_path: str
    tables: dict[TableName, Table] = field(default_factory=dict)
    materialized_views: list[TableName] = field(default_factory=list)
    sequences: list[TableName] = field(default_factory=list)
    data_entries: list[DataEntry] = field(default_factory=list)
    large_object_count: int = 0
    #: entries that depend on a large object (COMMENT / ACL / SECURITY LABEL on "LARGE OBJECT n")
    large_object_dependents: list[int] = field(default_factory=list)
    dump_version: str | None = None
    #: ``(entry, reason)`` of the entries the restore never recreates (``restore.toc.NEVER_RESTORED``:
    #: user mappings, subscriptions)
    never_restored: list[tuple[str, str]] = field(default_factory=list)
    #: ``restore.toc.toc_digest`` of the archive's table of contents
    toc_sha256: str = ""

    def table(self, name: TableName) -> Table | None:
        return self.tables.get(name)

    def ancestors(self, name: TableName) -> list[TableName]:
        """Parents, grandparents ... (partition parents and INHERITS parents), nearest first."""
        out: list[TableName] = []
        todo = list(self._parents(name))
        while todo:
            parent = todo.pop(0)
            if parent not in out:
                out.append(parent)
                todo.extend(self._parents(parent))
        return out

    def _parents(self, name: TableName) -> list[TableName]:
        table = self.tables.get(name)
        return list(table.parents) if table else []

    def descendants(self, name: TableName) -> list[TableName]:
        """Every partition (at any depth) and inheritance child, breadth first."""
        out: list[TableName] = []
        table = self.tables.get(name)
        todo = list(table.children) if table else []
        while todo:
            child = todo.pop(0)
            if child not in out:
                out.append(child)
                sub = self.tables.get(child)
                todo.extend(sub.children if sub else [])
        return out

    def to_dict(self) -> dict:
        return {
            "dump_path": self.dump_path,
            "tables": [t.to_dict() for t in self.tables.values()],
            "materialized_views": [str(m) for m in self.materialized_views],
            "data_entries": [
                {"dump_id": e.dump_id, "desc": e.desc, "table": str(e.table) if e.table else None}
                for e in self.data_entries
            ],
            "large_objects": self.large_object_count,
        }
