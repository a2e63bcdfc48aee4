"""The table of contents of an archive, as ``pg_restore -l`` lists it, and ``-L`` list files."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from scalingo_staging_sync.restore.errors import DumpFormatError
from scalingo_staging_sync.restore.pgtools import PgTools
from scalingo_staging_sync.tablename import TableName

# Every TOC "desc" pg_dump writes; longest first so "TABLE DATA" wins over "TABLE".
KNOWN_DESCS = sorted(
    {
        "ACCESS METHOD", "ACL", "AGGREGATE", "BLOB", "BLOB DATA", "BLOB METADATA", "BLOBS", "CAST",
        "CHECK CONSTRAINT", "COLLATION", "COMMENT", "CONSTRAINT", "CONVERSION", "DATABASE",
        "DATABASE PROPERTIES", "DEFAULT", "DEFAULT ACL", "DOMAIN", "ENCODING", "EVENT TRIGGER",
        "EXTENSION", "FK CONSTRAINT", "FOREIGN DATA WRAPPER", "FOREIGN SERVER", "FOREIGN TABLE",
        "FUNCTION", "INDEX", "INDEX ATTACH", "LARGE OBJECT", "LARGE OBJECTS", "LARGE OBJECT DATA",
        "MATERIALIZED VIEW",
        "MATERIALIZED VIEW DATA", "OPERATOR", "OPERATOR CLASS", "OPERATOR FAMILY", "POLICY",
        "PROCEDURE", "PROCEDURAL LANGUAGE", "PUBLICATION", "PUBLICATION TABLE",
        "PUBLICATION TABLES IN SCHEMA", "ROW SECURITY", "RULE", "SCHEMA", "SEARCHPATH",
        "SECURITY LABEL", "SEQUENCE", "SEQUENCE OWNED BY", "SEQUENCE SET", "SERVER", "SHELL TYPE",
        "STATISTICS", "STATISTICS DATA", "STDSTRINGS", "SUBSCRIPTION", "SUBSCRIPTION TABLE", "TABLE",
        "TABLE ATTACH", "TABLE DATA", "TEXT SEARCH CONFIGURATION", "TEXT SEARCH DICTIONARY",
        "TEXT SEARCH PARSER", "TEXT SEARCH TEMPLATE", "TRANSFORM", "TRIGGER", "TYPE", "USER MAPPING",
        "VIEW", "LANGUAGE",
    },
    key=len,
    reverse=True,
)  # fmt: skip
_LINE_RE = re.compile(r"^(?P<id>\d+);\s+(?P<tableoid>\d+)\s+(?P<oid>\d+)\s+(?P<rest>.*)$")
SECTIONS = ("pre-data", "data", "post-data")


@dataclass(frozen=True)
class TocEntry:
    """One line of ``pg_restore -l``: ``215; 1259 16385 TABLE public album postgres``."""

    dump_id: int
    catalog_oid: int  # the catalog table's oid (1259 = pg_class), 0 for data entries
    object_oid: int
    desc: str  # "TABLE", "TABLE DATA", "FK CONSTRAINT", ...
    schema: str | None  # None when pg_restore prints "-"
    tag: str  # object name; "<table> <constraint>" for constraints
    owner: str
    raw: str  # the line as listed (for -L files)
    names: str  # "<schema> <tag>" as printed (exact matching; names may hold spaces)

    def matches_table(self, schema: str, table: str) -> bool:
        """Exact match of a TABLE / TABLE DATA entry with (schema, table)."""
        return self.names == f"{schema} {table}"

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.tag}" if self.schema else self.tag

    @property
    def table_name(self) -> TableName:
        """The relation an entry names (a TABLE, TABLE DATA, SEQUENCE, MATERIALIZED VIEW... entry;
        ``public`` when the listing prints no schema)."""
        return TableName(self.schema or "public", self.tag)


#: entries never restored, plan or no plan: they hold another server's credentials or connect to it, so
#: a staging copy would reach production (or whatever they name) outside its backups
NEVER_RESTORED = {
    "USER MAPPING": (
        "user mappings are never restored: they hold credentials for another server (a foreign server's "
        "user and password), which would let staging read that server's live data; create the mapping "
        "staging needs in a seed"
    ),
    "SUBSCRIPTION": (
        "subscriptions are never restored: their connection string holds the publisher's credentials, "
        "and an enabled copy would replicate production's rows into staging unmasked"
    ),
    "SUBSCRIPTION TABLE": "subscriptions are never restored (see the SUBSCRIPTION entry)",
}
#: why the TABLE DATA of a foreign table (``pg_dump --include-foreign-data``) is never restored
FOREIGN_TABLE_DATA = (
    "the data of a foreign table is never restored: loading it would write its rows into the foreign "
    "server through its wrapper, and they are another server's rows, not this database's"
)
#: entries that describe a subscription (``COMMENT - SUBSCRIPTION sub owner``): left out with it
_SUBSCRIPTION_DEPENDENT_DESCS = ("COMMENT", "SECURITY LABEL")


def never_restored(entry: TocEntry) -> str | None:
    """Why ``entry`` is never restored (:data:`NEVER_RESTORED`), or None."""
    if entry.desc in NEVER_RESTORED:
        return NEVER_RESTORED[entry.desc]
    if entry.desc in _SUBSCRIPTION_DEPENDENT_DESCS and entry.tag.startswith("SUBSCRIPTION "):
        return f"describes a subscription, and {NEVER_RESTORED['SUBSCRIPTION']}"
    return None


def parse_toc_line(line: str) -> TocEntry | None:
    line = line.rstrip("\r\n")
    if not line or line.startswith(";"):
        return None
    match = _LINE_RE.match(line)
    if not match:
        return None
    rest = match.group("rest")
    desc = next((d for d in KNOWN_DESCS if rest == d or rest.startswith(d + " ")), None)
    if desc is None:
        desc, _, rest_after = rest.partition(" ")
    else:
        rest_after = rest[len(desc) + 1 :]
    # "<schema> <tag> <owner>"; the owner is the last word (may be empty), names may hold spaces.
    names, _, owner = rest_after.rpartition(" ")
    schema_part, _, tag = names.partition(" ")
    return TocEntry(
        dump_id=int(match.group("id")),
        catalog_oid=int(match.group("tableoid")),
        object_oid=int(match.group("oid")),
        desc=desc,
        schema=None if schema_part == "-" else schema_part,
        tag=tag,
        owner=owner,
        raw=line,
        names=names,
    )


def section_args(section: str | None) -> list[str]:
    if section in (None, "all"):
        return []
    parts = section.split("+")
    for part in parts:
        if part not in SECTIONS:
            raise ValueError(
                f"unknown section {section!r}: use pre-data, data, post-data, pre-data+data or all"
            )
    return [f"--section={p}" for p in parts]


def read_toc(dump_path: str | os.PathLike, tools: PgTools, section: str | None = None) -> list[TocEntry]:
    """The archive's TOC via ``pg_restore -l`` (optionally limited to a section)."""
    cmd = [tools.path("pg_restore"), "-l", *section_args(section), str(dump_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    if proc.returncode != 0:
        msg = proc.stderr.strip() or f"exit status {proc.returncode}"
        raise DumpFormatError(f"cannot read the table of contents of {dump_path}: {msg}")
    entries = [e for e in (parse_toc_line(line) for line in proc.stdout.splitlines()) if e is not None]
    return resolve_schemas(entries)


def resolve_schemas(entries: list[TocEntry], extra_schemas: Iterable[str] = ()) -> list[TocEntry]:
    """``pg_restore -l`` prints ``<schema> <name>`` unquoted, so a schema with a space is ambiguous.
    Split again on the longest schema name the archive defines (SCHEMA entries, plus public)."""
    schemas = {"public", "pg_catalog", *extra_schemas}
    schemas.update(e.names.partition(" ")[2] for e in entries if e.desc == "SCHEMA")
    spaced = sorted((s for s in schemas if " " in s), key=len, reverse=True)
    if not spaced:
        return entries
    out = []
    for entry in entries:
        match = next((s for s in spaced if entry.names.startswith(s + " ")), None)
        if match and entry.desc != "SCHEMA":
            entry = replace(entry, schema=match, tag=entry.names[len(match) + 1 :])
        out.append(entry)
    return out


def write_list_file(
    entries: Iterable[TocEntry], skipped: Iterable[tuple[TocEntry, str]] = (), directory: str | None = None
) -> Path:
    """A ``-L`` file: kept entries verbatim, skipped ones commented out with the reason."""
    fd, name = tempfile.mkstemp(prefix="sss-toc-", suffix=".list", dir=directory)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("; written by scalingo_staging_sync.restore\n")
        for entry, reason in skipped:
            fh.write(f"; skipped ({reason}): {entry.raw}\n")
        for entry in entries:
            fh.write(entry.raw + "\n")
    return Path(name)


def toc_digest(entries: Iterable[TocEntry]) -> str:
    """sha256 of a table of contents (each entry's dump id, kind and names): what ties an archive plan's
    ``skip_dump_ids`` (positions in one archive's TOC) to that archive."""
    digest = hashlib.sha256()
    for e in entries:
        digest.update(f"{e.dump_id};{e.desc};{e.names}\n".encode())
    return digest.hexdigest()
