"""pg_restore's COPY text: encodings, the reader, and ``stream_table_copy`` on real archives."""

from __future__ import annotations

import io

import pytest

from scalingo_staging_sync.restore.copytext import CopyStream, parse_copy_row, python_encoding
from scalingo_staging_sync.restore.errors import RestoreError
from scalingo_staging_sync.restore.pgtools import find_pg_tools
from scalingo_staging_sync.restore.runner import stream_table_copy
from tests.restore.restore_helpers import unique_db


@pytest.mark.parametrize(
    ("pg", "py"),
    [("UTF8", "utf-8"), ("LATIN1", "iso8859-1"), ("WIN1252", "cp1252"), ("EUC_JP", "euc_jp"),
     ("SQL_ASCII", "latin-1"), ("SJIS", "shift_jis"), ("LATIN9", "iso8859-15"), ("KOI8R", "koi8_r"), ("NO_SUCH", "utf-8")],
)  # fmt: skip
def test_python_encoding_of_postgresql_names(pg, py):
    assert python_encoding(pg) == py


def test_copy_stream_lines_blocks_and_unread(monkeypatch):
    import scalingo_staging_sync.restore.copytext as copytext

    monkeypatch.setattr(copytext, "BLOCK", 3)  # lines longer than a read
    out = CopyStream(io.BufferedReader(io.BytesIO(b"SET a;\nCOPY x FROM stdin;\n1\tz\n\\.\ntail")))
    assert out.readline() == b"SET a;\n"
    assert out.readline() == b"COPY x FROM stdin;\n"
    data = b""
    while len(data) < 9:  # a read returns what is buffered first, then at most the size asked
        chunk = out.read(3)
        assert chunk and len(chunk) <= 3
        data += chunk
    assert data[:7] == b"1\tz\n\\.\n"  # a row and its terminator
    out.unread(data[7:])  # handed back: read again by the next readline
    assert out.readline() == b"tail"  # the end, without a newline
    assert out.readline() == b""


def test_escapes_and_null():
    assert parse_copy_row("1\t\\N\t\t\\\\N\t\\t\\n\\r\\\\") == ["1", None, "", "\\N", "\t\n\r\\"]


def test_stream_decodes_the_archives_encoding(prod_pg, tmp_path):
    """A LATIN1 database's dump: the rows come back as the text they hold, not mojibake."""
    db = unique_db("latin1")
    prod_pg.execute(f"CREATE DATABASE {db} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    prod_pg.execute("CREATE TABLE t (id int, name text); INSERT INTO t VALUES (1, 'Zoë Ångström')", db)
    dump = prod_pg.pg_dump(db, tmp_path / "latin1.pgc")
    tools = find_pg_tools(str(prod_pg.bin_dir))
    header, row = list(stream_table_copy(dump, "public.t", tools))
    assert header == "COPY public.t (id, name) FROM stdin;"
    assert parse_copy_row(row) == ["1", "Zoë Ångström"]


def test_loader_reads_a_latin1_archives_names_and_rows(prod_pg, staging_pg16, tmp_path):
    """A LATIN1 archive whose column name is not ASCII: the COPY line is read in the archive's
    encoding (it used to be read as UTF-8 and refused), the rows arrive as the text they hold."""
    from scalingo_staging_sync.restore.loader import load_table_data
    from scalingo_staging_sync.restore.runner import run_pg_restore
    from scalingo_staging_sync.restore.toc import read_toc
    from tests.restore.restore_helpers import superuser_target

    src = unique_db("latin1_src")
    prod_pg.execute(f"CREATE DATABASE {src} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    prod_pg.execute("CREATE TABLE t (id int, \"prénom\" text); INSERT INTO t VALUES (1, 'Zoë')", src)
    dump = prod_pg.pg_dump(src, tmp_path / "latin1.pgc")
    pg = staging_pg16
    tools = find_pg_tools(str(pg.bin_dir))
    db = unique_db("latin1_dst")
    pg.create_database(db)
    target = superuser_target(pg, db)
    run_pg_restore(dump, target, section="pre-data", tools=tools)
    entries = [e for e in read_toc(dump, tools) if e.desc == "TABLE DATA"]
    (loaded,) = load_table_data(dump, target, entries, tools=tools)
    assert loaded.rows == 1 and loaded.frozen
    assert pg.execute('SELECT "prénom" FROM t', db) == [("Zoë",)]


def test_stream_of_a_cut_archive_fails_and_names_the_table(prod_pg, tmp_path):
    db = unique_db("cut")
    prod_pg.create_database(db)
    prod_pg.execute(
        "CREATE TABLE big AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g", db
    )
    dump = prod_pg.pg_dump(db, tmp_path / "whole.pgc")
    tools = find_pg_tools(str(prod_pg.bin_dir))
    from scalingo_staging_sync.restore.toc import read_toc

    entries = read_toc(dump, tools)
    data = dump.read_bytes()
    cut = tmp_path / "cut.pgc"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(RestoreError, match=r"public\.big") as info:
        list(stream_table_copy(cut, "public.big", tools, entries=entries))
    assert "c4ca4238" not in str(info.value)  # no row (md5 of '1') in the message
