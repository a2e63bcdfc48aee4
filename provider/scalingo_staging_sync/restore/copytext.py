"""pg_restore's COPY text: the ``COPY <table> (<columns>) FROM stdin;`` line, its fields, the
``SET client_encoding`` line before it, and a reader of ``pg_restore -a -f -``'s output.

Used by the data loader (:mod:`restore.loader`), by :func:`restore.runner.stream_table_copy` and,
through it, by the on-load proof of :mod:`anonymize.executor`. Nothing here runs a statement read
from the archive: the COPY line is only parsed, into a :class:`TableName` and column names.
"""

from __future__ import annotations

import codecs
import os
import re
import subprocess
import tempfile
from pathlib import Path

from scalingo_staging_sync.pgerrors import redact_server_text
from scalingo_staging_sync.restore.errors import RestoreError
from scalingo_staging_sync.restore.pgtools import PgTools
from scalingo_staging_sync.restore.toc import TocEntry, write_list_file
from scalingo_staging_sync.tablename import TableName, TableNameError, _split_parts

#: pg_restore's output is read in blocks of this size
BLOCK = 1 << 20
#: ``SET client_encoding = 'UTF8';`` as pg_restore writes it before the data (bytes: it is read
#: before the encoding is known)
ENCODING_LINE_RE = re.compile(rb"^SET client_encoding = '(?P<enc>[A-Za-z0-9_]+)';$")
_COPY_RE = re.compile(r"^COPY (?P<target>.+?) (?:\((?P<cols>.*)\) )?FROM stdin;$", re.DOTALL)
_COPY_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}
# PostgreSQL encoding names Python does not know under the same name
_PG_TO_PY_ENCODING = {
    "UTF8": "utf-8",
    "SQL_ASCII": "latin-1",
    "SJIS": "shift_jis",
    "KOI8R": "koi8_r",
    "KOI8U": "koi8_u",
}


def python_encoding(pg_encoding: str) -> str:
    """The Python codec for a PostgreSQL client encoding (``LATIN1``, ``WIN1252``, ``EUC_JP``...);
    UTF-8 for one Python does not know."""
    name = pg_encoding.upper()
    if name in _PG_TO_PY_ENCODING:
        return _PG_TO_PY_ENCODING[name]
    if name.startswith("WIN") and name[3:].isdigit():
        name = "cp" + name[3:]
    try:
        return codecs.lookup(name).name
    except LookupError:
        return "utf-8"


def copy_escape(text: str) -> str:
    """A text value as one COPY-text field (the escapes ``COPY TO`` writes; the inverse of
    :func:`unescape_copy_field` for a non-NULL value)."""
    out = text.replace("\\", "\\\\")
    for ch, esc in (("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"), ("\b", "\\b"), ("\f", "\\f"), ("\v", "\\v")):
        out = out.replace(ch, esc)
    return out


def unescape_copy_field(field: str) -> str | None:
    """One COPY-text field to its text value (``\\N`` = NULL)."""
    if field == "\\N":
        return None
    if "\\" not in field:
        return field
    out: list[str] = []
    i, n = 0, len(field)
    while i < n:
        ch = field[i]
        if ch != "\\" or i + 1 >= n:
            out.append(ch)
            i += 1
            continue
        nxt = field[i + 1]
        if nxt in _COPY_ESCAPES:
            out.append(_COPY_ESCAPES[nxt])
            i += 2
        elif nxt in "01234567":
            j = i + 1
            while j < n and j < i + 4 and field[j] in "01234567":
                j += 1
            out.append(chr(int(field[i + 1 : j], 8)))
            i = j
        elif nxt == "x" and i + 2 < n and field[i + 2] in "0123456789abcdefABCDEF":
            j = i + 2
            while j < n and j < i + 4 and field[j] in "0123456789abcdefABCDEF":
                j += 1
            out.append(chr(int(field[i + 2 : j], 16)))
            i = j
        else:  # any other escaped character stands for itself
            out.append(nxt)
            i += 2
    return "".join(out)


def parse_copy_row(line: str) -> list[str | None]:
    """One COPY-text row (without its newline) to its field values."""
    return [unescape_copy_field(f) for f in line.split("\t")]


def parse_copy_header(header: str) -> list[str]:
    """Column names of ``COPY schema.table (a, "B c", ...) FROM stdin;``."""
    start = header.index("(")
    end = header.rindex(")")
    inner = header[start + 1 : end]
    names: list[str] = []
    buf: list[str] = []
    quoted = False
    i = 0
    while i < len(inner):
        ch = inner[i]
        if quoted:
            if ch == '"' and i + 1 < len(inner) and inner[i + 1] == '"':
                buf.append('"')
                i += 1
            elif ch == '"':
                quoted = False
            else:
                buf.append(ch)
        elif ch == '"':
            quoted = True
        elif ch == ",":
            names.append("".join(buf).strip())
            buf = []
        else:
            buf.append(ch)
        i += 1
    names.append("".join(buf).strip())
    return [n for n in names if n]


def parse_copy_line(line: str) -> tuple[TableName, list[str]]:
    """The table and the columns of pg_restore's ``COPY <table> (<columns>) FROM stdin;`` line."""
    m = _COPY_RE.match(line)
    if not m:
        raise ValueError(f"not a COPY ... FROM stdin line: {line[:200]!r}")
    try:
        parts = _split_parts(m.group("target"))
    except TableNameError as exc:
        raise ValueError(f"the COPY line's table cannot be read: {exc}") from None
    if len(parts) != 2:
        raise ValueError(f"the COPY line does not name a schema-qualified table: {line[:200]!r}")
    columns = parse_copy_header(line) if m.group("cols") is not None else []
    return TableName(parts[0], parts[1]), columns


class CopyStream:
    """pg_restore's output: lines while looking for a table's COPY line, blocks for its data, and
    what was read past a terminator handed back (:meth:`unread`) for the next table."""

    def __init__(self, raw) -> None:
        self.raw = raw
        self.buf = b""

    def unread(self, data: bytes) -> None:
        self.buf = data + self.buf

    def readline(self) -> bytes:
        """The next line with its newline; the rest of the stream without one at its end; ``b""``
        at the end."""
        while b"\n" not in self.buf:
            chunk = self.raw.read1(BLOCK)
            if not chunk:
                line, self.buf = self.buf, b""
                return line
            self.buf += chunk
        i = self.buf.index(b"\n") + 1
        line, self.buf = self.buf[:i], self.buf[i:]
        return line

    def read(self, size: int = -1) -> bytes:
        if self.buf:
            data = self.buf if size < 0 else self.buf[:size]
            self.buf = self.buf[len(data) :]
            return data
        return self.raw.read() if size < 0 else self.raw.read1(size)

    def close(self) -> None:
        self.raw.close()


class CopyTextReader:
    """``pg_restore -a -L <entries> -f - <dump>``: the COPY text of the ``entries``' data, table after
    table in the list's order (pg_restore reads and decompresses the archive; nothing here parses a
    dump format). A context manager: leaving it kills a pg_restore still running and removes its
    files. pg_restore's messages go to a file, never to a pipe nobody reads."""

    def __init__(self, dump_path: str | os.PathLike, entries: list[TocEntry], tools: PgTools) -> None:
        self.dump_path = Path(dump_path)
        #: the client encoding of the last ``SET client_encoding`` line read (PostgreSQL's name)
        self.encoding: str | None = None
        self._listfile = write_list_file(entries)
        self._errfile = tempfile.TemporaryFile()
        cmd = [tools.path("pg_restore"), "-a", "-L", str(self._listfile), "-f", "-", str(self.dump_path)]
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._errfile
        )
        assert self._proc.stdout is not None
        self.out = CopyStream(self._proc.stdout)

    def next_copy_line(self, table: object) -> str:
        """The next ``COPY ... FROM stdin;`` line for ``table`` (named if it is missing), without its
        newline (a quoted name's own newlines kept: the statement may span several lines), decoded in
        the archive's client encoding (names may hold any character);
        :attr:`encoding` follows the lines read on the way."""
        while True:
            line = self.out.readline()
            if not line:
                raise self.failure(table, "no COPY statement for the table")
            if m := ENCODING_LINE_RE.match(line.rstrip(b"\n")):
                self.encoding = m.group("enc").decode()
            if line.startswith(b"COPY "):
                # a quoted name may hold a newline (pg_dump writes it as is): the statement goes on
                # until a line ends it outside any quoted name
                while not (line.endswith(b" FROM stdin;\n") and line.count(b'"') % 2 == 0):
                    more = self.out.readline()
                    if not more:
                        raise self.failure(table, "the COPY statement ended before FROM stdin")
                    line += more
                try:
                    return line.decode(python_encoding(self.encoding or "UTF8")).rstrip("\n")
                except UnicodeDecodeError as exc:
                    raise RestoreError(
                        f"the archive's COPY statement for {table} is not valid {self.encoding or 'UTF8'}: {exc}"
                    ) from None

    def finish(self, table: object) -> None:
        """After the last table's data: the rest of the output read and pg_restore's exit status
        checked (a failure names ``table``)."""
        self.out.read()
        if self._proc.wait() != 0:
            raise self.failure(table, "pg_restore reported an error")

    def failure(self, table: object, what: str) -> RestoreError:
        """The error for ``table``: what went wrong, pg_restore's exit status and its messages (server
        text redacted); pg_restore is stopped first."""
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        self._errfile.seek(0)
        err = self._errfile.read().decode("utf-8", "replace").strip()
        detail = f": {redact_server_text(err)}" if err else ""
        return RestoreError(
            f"reading the data of {table} from {self.dump_path.name} failed ({what}, pg_restore exit "
            f"status {self._proc.returncode}){detail}"
        )

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self.out.close()
        self._errfile.close()
        self._listfile.unlink(missing_ok=True)

    def __enter__(self) -> CopyTextReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
