"""What is in a dump: its header (format, versions), integrity checks, keys and extensions.

Custom-format header (``pg_backup_archiver.c`` ``ReadHead``): magic ``PGDMP``, archive version bytes
(major, minor, revision), int size, offset size, format byte, compression (1 byte from archive 1.15,
an int before), creation time (7 ints), then strings: database name, server version, pg_dump version.
An int is a sign byte plus ``int size`` little-endian bytes; a string is an int length then bytes.
"""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from scalingo_staging_sync.restore.errors import DumpFormatError, RestoreError
from scalingo_staging_sync.restore.names import (
    IDENT,
    parse_ident_list,
    qualified_key,
)
from scalingo_staging_sync.restore.pgtools import PgTools
from scalingo_staging_sync.restore.toc import TocEntry, write_list_file

MAGIC = b"PGDMP"
_FORMATS = {0: "unknown", 1: "custom", 2: "files", 3: "tar", 4: "null", 5: "directory"}
_PLAIN_VERSION_RE = re.compile(rb"^-- Dumped by pg_dump version (\d+)(?:\.\d+)?", re.M)
_PLAIN_SERVER_RE = re.compile(rb"^-- Dumped from database version (\d+(?:\.\d+)?)", re.M)
_PLAIN_DUMPVER_RE = re.compile(rb"^-- Dumped by pg_dump version (\S+)", re.M)


@dataclass(frozen=True)
class DumpHeader:
    path: Path
    format: str  # custom | tar | directory | plain
    archive_version: tuple[int, int, int] | None  # (1, 15, 0); None for plain
    server_version: str | None  # "16.14"
    dump_version: str | None  # pg_dump's version, "16.14"
    dbname: str | None = None
    compression: str | None = None  # custom: none|gzip|lz4|zstd; plain: gzip when gzipped
    int_size: int = 4
    offset_size: int = 8

    @property
    def dump_major(self) -> int | None:
        """Major version of the pg_dump that wrote the archive (what pg_restore must be >=)."""
        if not self.dump_version:
            return None
        match = re.match(r"(\d+)", self.dump_version)
        return int(match.group(1)) if match else None

    @property
    def is_archive(self) -> bool:
        return self.format in ("custom", "tar", "directory")


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.int_size = 4

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise DumpFormatError("the dump header is truncated")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def int_(self) -> int:
        sign = self.byte()
        raw = self.data[self.pos : self.pos + self.int_size]
        if len(raw) < self.int_size:
            raise DumpFormatError("the dump header is truncated")
        self.pos += self.int_size
        value = int.from_bytes(raw, "little")
        return -value if sign else value

    def str_(self) -> str | None:
        length = self.int_()
        if length < 0:
            return None
        raw = self.data[self.pos : self.pos + length]
        if len(raw) < length:
            raise DumpFormatError("the dump header is truncated")
        self.pos += length
        return raw.decode("utf-8", "replace")


def _parse_archive_header(data: bytes, path: Path, expect: str | None = None) -> DumpHeader:
    if not data.startswith(MAGIC):
        raise DumpFormatError(f"{path} is not a PostgreSQL archive (no PGDMP magic)")
    r = _Reader(data)
    r.pos = len(MAGIC)
    vmaj, vmin = r.byte(), r.byte()
    vrev = r.byte() if (vmaj > 1 or (vmaj == 1 and vmin > 0)) else 0
    version = (vmaj, vmin, vrev)
    r.int_size = r.byte()
    offset_size = r.byte() if version >= (1, 7, 0) else 4
    if r.int_size not in (4, 8) or offset_size not in (4, 8):
        raise DumpFormatError(
            f"{path}: implausible header (int size {r.int_size}, offset size {offset_size})"
        )
    fmt = _FORMATS.get(r.byte(), "unknown")
    if expect == "directory" and fmt == "tar":  # pg_dump writes a directory's toc.dat with tar's format byte
        fmt = "directory"
    if expect and fmt != expect:
        raise DumpFormatError(f"{path}: header says format {fmt!r}, expected {expect!r}")
    compression = None
    if version >= (1, 15, 0):
        compression = {0: "none", 1: "gzip", 2: "lz4", 3: "zstd"}.get(r.byte(), "unknown")
    elif version >= (1, 2, 0):
        level = r.int_()
        compression = "none" if level == 0 else "gzip"
    dbname = server = dumper = None
    if version >= (1, 4, 0):
        for _ in range(7):
            r.int_()
        dbname = r.str_()
    if version >= (1, 10, 0):
        server = r.str_()
        dumper = r.str_()
    return DumpHeader(
        path=path,
        format=fmt,
        archive_version=version,
        server_version=server,
        dump_version=dumper,
        dbname=dbname,
        compression=compression,
        int_size=r.int_size,
        offset_size=offset_size,
    )


_OFFSET_POS_SET = 2
_KNOWN_ARCHIVE_VERSION = (1, 16, 0)
#: how much of a custom archive is read looking for the end of its TOC (sizes only order the work)
_TOC_READ_LIMIT = 256 << 20


def _custom_data_offsets(data: bytes, header: DumpHeader) -> dict[int, int] | None:
    """dump id -> offset of its data block, from a custom archive's TOC (``ReadToc`` and the custom
    format's ``ReadExtraToc`` in pg_dump's sources); None when the TOC is not all in ``data``."""
    r = _Reader(data)
    r.int_size = header.int_size
    r.pos = len(MAGIC) + 3  # version
    r.pos += 2  # int size, offset size
    r.pos += 1  # format
    version = header.archive_version or (0, 0, 0)
    try:
        if version >= (1, 15, 0):
            r.byte()
        elif version >= (1, 2, 0):
            r.int_()
        for _ in range(7):
            r.int_()
        r.str_()
        r.str_()
        r.str_()
        offsets: dict[int, int] = {}
        for _ in range(r.int_()):
            dump_id = r.int_()
            r.int_()  # had dumper
            for _ in range(4):  # table oid, oid, tag, desc
                r.str_()
            r.int_()  # section
            for _ in range(5):  # defn, drop, copy statement, namespace, tablespace
                r.str_()
            if version >= (1, 14, 0):
                r.str_()  # table access method
            if version >= (1, 16, 0):
                r.int_()  # relkind
            r.str_()  # owner
            r.str_()  # "false" (WITH OIDS)
            while r.str_() is not None:  # dependencies, NULL-terminated
                pass
            flag = r.byte()
            raw = r.data[r.pos : r.pos + header.offset_size]
            if len(raw) < header.offset_size:
                return None
            r.pos += header.offset_size
            if flag == _OFFSET_POS_SET:
                offsets[dump_id] = int.from_bytes(raw, "little")
        return offsets
    except DumpFormatError:
        return None


def data_sizes(path: str | os.PathLike, header: DumpHeader | None = None) -> dict[int, int]:
    """Bytes of each data entry (dump id -> size) as stored in the archive, which is how pg_restore
    orders its parallel jobs: the gaps between data offsets (custom format; empty when the archive
    was written to a pipe and holds no offsets), the data files (directory) or members (tar)."""
    path = Path(path)
    header = header or read_dump_header(path)
    sizes: dict[int, int] = {}
    version = header.archive_version
    # the TOC layout is known up to archive 1.16 (pg_dump 17 and 18); a later one may add fields
    if header.format == "custom" and version and (1, 11, 0) <= version <= _KNOWN_ARCHIVE_VERSION:
        total = path.stat().st_size
        chunk = 1 << 20
        offsets = None
        with path.open("rb") as fh:
            while True:
                fh.seek(0)
                offsets = _custom_data_offsets(fh.read(chunk), header)
                if offsets is not None or chunk >= min(total, _TOC_READ_LIMIT):
                    break
                chunk *= 8
        if offsets and all(0 < pos < total for pos in offsets.values()):  # else not a TOC we understood
            ends = sorted(set(offsets.values())) + [total]
            following = {start: ends[i + 1] for i, start in enumerate(ends[:-1])}
            sizes = {dump_id: max(0, following[pos] - pos) for dump_id, pos in offsets.items()}
    elif header.format == "directory":
        for child in path.iterdir():
            stem = child.name.split(".", 1)[0]
            if stem.isdigit() and child.name[len(stem) :].startswith(".dat"):
                sizes[int(stem)] = child.stat().st_size
    elif header.format == "tar":
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                stem = member.name.split(".", 1)[0]
                if stem.isdigit() and member.name[len(stem) :].startswith(".dat"):
                    sizes[int(stem)] = member.size
    return sizes


def read_dump_header(path: str | os.PathLike) -> DumpHeader:
    """Identify a dump without running any tool: custom, tar, directory or plain SQL (maybe gzipped)."""
    path = Path(path)
    if path.is_dir():
        toc = path / "toc.dat"
        if not toc.exists():
            raise DumpFormatError(f"{path} is a directory without toc.dat: not a directory-format dump")
        return _parse_archive_header(toc.read_bytes()[:4096], path, expect="directory")
    if not path.exists():
        raise DumpFormatError(f"dump file {path} does not exist")
    with path.open("rb") as fh:
        head = fh.read(8192)
    if not head:
        raise DumpFormatError(f"{path} is empty")
    if head.startswith(MAGIC):
        return _parse_archive_header(head, path)
    if len(head) >= 512 and head[257:262] == b"ustar":
        try:
            with tarfile.open(path, "r:") as tar:
                member = tar.next()
                if member is None or member.name != "toc.dat":
                    raise DumpFormatError(
                        f"{path} is a tar file but not a pg_dump tar archive (no toc.dat first)"
                    )
                fobj = tar.extractfile(member)
                data = fobj.read(4096) if fobj else b""
        except tarfile.TarError as exc:
            raise DumpFormatError(f"{path}: unreadable tar archive: {exc}") from exc
        return _parse_archive_header(data, path, expect="tar")
    compression = None
    text = head
    if head[:2] == b"\x1f\x8b":
        compression = "gzip"
        try:
            with gzip.open(path, "rb") as gz:
                text = gz.read(8192)
        except (OSError, EOFError) as exc:
            raise DumpFormatError(f"{path}: unreadable gzip file: {exc}") from exc
    if b"PostgreSQL database dump" in text[:2048] or _PLAIN_DUMPVER_RE.search(text):
        server = _PLAIN_SERVER_RE.search(text)
        dumper = _PLAIN_DUMPVER_RE.search(text)
        return DumpHeader(
            path=path,
            format="plain",
            archive_version=None,
            server_version=server.group(1).decode() if server else None,
            dump_version=dumper.group(1).decode() if dumper else None,
            compression=compression,
        )
    raise DumpFormatError(
        f"{path} is neither a pg_dump archive (custom, tar, directory) nor a plain SQL dump"
    )


def quick_check(header: DumpHeader, entries: list[TocEntry]) -> None:
    """Cheap integrity checks that catch a truncated archive before anything is touched.

    A seekable custom-format archive ends with the terminating zero-length chunk of its last data
    block (a zero int: ``int size + 1`` zero bytes); a truncated download almost never does. A tar
    archive must hold every member it announces. (A corruption in the middle of the data is only
    found by ``full_check`` or by the restore itself.)
    """
    path = header.path
    has_data = any(e.desc in ("TABLE DATA", "BLOBS", "BLOB DATA", "LARGE OBJECT DATA") for e in entries)
    if header.format == "custom" and has_data:
        size = path.stat().st_size
        tail_len = header.int_size + 1
        with path.open("rb") as fh:
            fh.seek(max(0, size - tail_len))
            tail = fh.read(tail_len)
        if tail != b"\x00" * tail_len:
            raise DumpFormatError(
                f"{path} looks truncated: a custom-format archive ends with the end marker of its last "
                f"data block, this one does not ({size} bytes); download it again"
            )
    elif header.format == "tar":
        size = path.stat().st_size
        try:
            with tarfile.open(path, "r:") as tar:
                for member in tar.getmembers():
                    if member.offset_data + member.size > size:
                        raise DumpFormatError(f"{path} is truncated: member {member.name} ends past the end")
        except tarfile.TarError as exc:
            raise DumpFormatError(f"{path}: unreadable tar archive: {exc}") from exc


def full_check(dump_path: str | os.PathLike, tools: PgTools) -> None:
    """Read and decompress the whole archive (``pg_restore -f /dev/null``): finds any corruption."""
    cmd = [tools.path("pg_restore"), "-f", os.devnull, str(dump_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    if proc.returncode != 0:
        raise DumpFormatError(f"{dump_path} is corrupt: {proc.stderr.strip()[-2000:]}")


def entries_sql(dump_path: str | os.PathLike, tools: PgTools, entries: list[TocEntry]) -> str:
    """The SQL pg_restore would run for ``entries`` (``-L`` + ``-f -``), without connecting."""
    if not entries:
        return ""
    listfile = write_list_file(entries)
    try:
        cmd = [tools.path("pg_restore"), "-L", str(listfile), "-f", "-", str(dump_path)]
        proc = subprocess.run(cmd, capture_output=True)
    finally:
        listfile.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise RestoreError(
            f"pg_restore could not print definitions: {proc.stderr.decode('utf-8', 'replace')}"
        )
    return proc.stdout.decode("utf-8", "replace")


@dataclass(frozen=True)
class ForeignKey:
    entry: TocEntry
    table: tuple[str, str]  # referencing (schema, table)
    name: str
    references: tuple[str, str]  # referenced (schema, table)

    def describe(self) -> str:
        return f"{qualified_key(*self.table)}.{self.name} -> {qualified_key(*self.references)}"


def extensions(entries: list[TocEntry]) -> list[str]:
    """Extensions the archive creates (EXTENSION entries), in TOC order."""
    return [e.tag for e in entries if e.desc == "EXTENSION"]


def plain_extensions(path: str | os.PathLike, header: DumpHeader) -> list[str]:
    """``CREATE EXTENSION`` statements of a plain SQL dump (scanned line by line)."""
    pattern = re.compile(rf"^CREATE EXTENSION (?:IF NOT EXISTS )?(?P<name>{IDENT})", re.M)
    opener = gzip.open if header.compression == "gzip" else open
    out: list[str] = []
    with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith("CREATE EXTENSION"):
                m = pattern.match(line)
                if m:
                    out.extend(parse_ident_list(m.group("name")))
    return out


_PLAIN_TYPE_RE = re.compile(r"^-- (?:Data for )?Name: .*; Type: (?P<type>[A-Z][A-Z ]*); Schema: ")


def plain_data_kinds(path: str | os.PathLike, header: DumpHeader) -> set[str]:
    """The TOC kinds a plain SQL dump names in its ``-- Name: ...; Type: KIND; Schema: ...`` comments
    (``BLOB``, ``BLOBS``, ``MATERIALIZED VIEW DATA``, ...; scanned line by line)."""
    opener = gzip.open if header.compression == "gzip" else open
    out: set[str] = set()
    with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith("-- ") and (m := _PLAIN_TYPE_RE.match(line)):
                out.add(m.group("type").strip())
    return out
