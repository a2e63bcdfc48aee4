"""The worker-side engine (c) prototype (benchmarks/stream_prototype.py) gives the SQL expressions'
bytes: PostgreSQL's ``hash_bytes_extended`` reproduced in Python, COPY text escapes, NULLs, empty and
non-ASCII values, ``varchar(n)`` limits, on PG 16 and 18. The prototype is not shipped (it loses on CPU,
see docs/notes-perf.md); these tests back the byte-identity claim of the measurement."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pg_helpers import copy_text_in, copy_text_out, new_database
from psycopg import sql

from scalingo_staging_sync.anonymize.planner import read_table
from scalingo_staging_sync.anonymize.salt import derive_key, derive_seed, key_settings
from scalingo_staging_sync.anonymize.sql import trigger_statements

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from stream_prototype import CopyMasker, escape, hash_bytes_extended, unescape  # noqa: E402

SALT = "perf-test-salt-0123456789abcdef"

SPECS = {
    "email": {"transformer": "email"},
    "email40": {"transformer": "email", "case_insensitive": True},
    "first_name": {"transformer": "first_name"},
    "last_name": {"transformer": "last_name"},
    "city": {"transformer": "city"},
    "phone": {"transformer": "phone"},
    "address": {"transformer": "address"},
    "postal": {"transformer": "postal_code"},
    "company": {"transformer": "company"},
    "hashed": {"transformer": "hash"},
    "birth_date": {"transformer": "date_shift"},
    "wiped": {"transformer": "null"},
}
DDL = """CREATE TABLE {} (id int, email text, email40 varchar(40), first_name text, last_name varchar(6),
city text, phone text, address text, postal varchar(10), company text, hashed text, birth_date date, wiped text,
note text)"""
# COPY text rows: NULLs, empty strings, non-ASCII, escapes (tab, newline, backslash, CR), upper case,
# originals of the output's shape, a word equal to the first pick, infinity
ROWS = [
    r"1	Jean.Dupont@Example.COM	Jean.Dupont@Example.COM	Jean	Dupont	Paris	+33 6 12 34 56 78	12 rue de la Paix	75001	ACME SA	secret	1980-02-29	x	plain",
    r"2	\N	\N	\N	\N	\N	\N	\N	\N	\N	\N	\N	\N	\N",
    r"3									\N		-infinity		",
    r"4	élodie.zoë@exämple.fr	李@例子.中国	Élodie Zoë	Zoë 李	Zürich	+999123456789012	 7  Chemin  des Ânes 	 12345 	Café & Fils	ключ	infinity	y	ünï",
    "5	tab\\there@x.org	new\\nline@x.org	back\\\\slash	cr\\rn	a\\tb	+1 (555) 010-9999	1\\t2\\n3	ab\\\\c	\\\\\\\\	\\t	2000-01-01	\\\\N	\\\\.",
    r"6	ALEX@EXAMPLE.COM	alex	alex	ABBOTT	ashford	+999000000000001	1 Acacia Street	00000	Acorn Labs	x	1900-03-01	z	z",
]


@pytest.fixture
def pgdb(staging_pg):
    with new_database(staging_pg, "perf") as name:
        yield staging_pg, name


def _load_through_trigger(conn, key: str, data: bytes):
    """Table ``by_trigger`` (DDL) with the masking trigger of SPECS under ``key``, and ``data`` (COPY
    text) copied into it through the trigger; returns the table's catalog entry."""
    for name_, value in key_settings(key).items():
        conn.execute("SELECT set_config(%s, %s, false)", (name_, value))
    conn.execute(sql.SQL(DDL).format(sql.Identifier("by_trigger")))
    cat = read_table(conn, "public", "by_trigger")
    create_fn, create_trigger, _drop = trigger_statements("public", "by_trigger", SPECS, cat.columns, conn)
    conn.execute(create_fn)
    conn.execute(create_trigger)
    copy_text_in(conn, "by_trigger", data)
    return cat


def test_hash_bytes_extended_matches_hashtextextended(pgdb):
    pg, name = pgdb
    values = [
        "",
        "a",
        "abc",
        "abcd",
        "é",
        "|first_name|jean",
        "x" * 11,
        "y" * 12,
        "z" * 13,
        "w" * 24,
        "李" * 9,
    ]
    seeds = [0, 1, -1, 123456789012345, -(2**63), 2**63 - 1, derive_seed(derive_key(SALT))]
    with pg.connect(name) as conn:
        for v in values:
            for s in seeds:
                got = conn.execute('SELECT hashtextextended(%s COLLATE "C", %s)', (v, s)).fetchone()[0]
                assert hash_bytes_extended(v.encode(), s) == got & 0xFFFFFFFFFFFFFFFF, (v, s)


def test_copy_escapes_round_trip():
    for field in (b"plain", b"a\\tb", b"\\\\", b"x\\ny\\rz", b"\\\\N", b""):
        assert escape(unescape(field)) == field
    assert unescape(b"\\N") is None and escape(None) == b"\\N"
    assert unescape(b"\\101\\x42\\q") == b"ABq"


def test_prototype_output_is_the_trigger_output_byte_for_byte(pgdb):
    pg, name = pgdb
    key = derive_key(SALT)
    data = ("\n".join(ROWS) + "\n").encode()
    with pg.connect(name) as conn:
        cat = _load_through_trigger(conn, key, data)
        conn.execute(sql.SQL(DDL).format(sql.Identifier("by_stream")))
        masked = CopyMasker(SPECS, cat.columns, list(cat.columns), key).mask_block(data)
        copy_text_in(conn, "by_stream", masked)
        expected = copy_text_out(conn, "by_trigger")
        assert copy_text_out(conn, "by_stream") == expected
        # the prototype's own COPY text is already the server's canonical text
        assert masked == expected
        # and the masking did mask: no original e-mail, name or phone survives
        rows = conn.execute("SELECT email, first_name, phone, wiped FROM by_stream ORDER BY id").fetchall()
        assert rows[0][0].startswith("u") and rows[0][1] != "Jean" and rows[0][2].startswith("+999")
        assert all(r[3] is None for r in rows)


def test_duckdb_sql_hash_matches_hashtextextended(pgdb):
    """The DuckDB SQL form of hash_bytes_extended (benchmarks/stream_duckdb.py, the exact engine (c)
    the notes recommend). DuckDB is not a project dependency: skipped unless it is importable."""
    duckdb = pytest.importorskip("duckdb")
    from stream_duckdb import hash_bytes_extended_sql

    pg, name = pgdb
    values = [
        "",
        "a",
        "abcd",
        "é",
        "x" * 11,
        "y" * 12,
        "z" * 13,
        "w" * 24,
        "李" * 9,
        "|address|12 rue de la paix",
    ]
    seed = derive_seed(derive_key(SALT))
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT unnest($1::VARCHAR[]) AS v", [values])
    got = dict(con.execute(f"SELECT v, {hash_bytes_extended_sql('v', seed)} FROM t").fetchall())  # noqa: S608
    with pg.connect(name) as conn:
        for v in values:
            want = conn.execute('SELECT hashtextextended(%s COLLATE "C", %s)', (v, seed)).fetchone()[0]
            assert got[v] == want & 0xFFFFFFFFFFFFFFFF, v


def test_duckdb_exact_engine_output_is_the_trigger_output_byte_for_byte(pgdb):
    """The exact DuckDB engine (c) on the same edge rows: its COPY text is the trigger's, byte for byte.
    Skipped unless DuckDB is importable (not a project dependency)."""
    pytest.importorskip("duckdb")
    from stream_duckdb import DuckMasker

    pg, name = pgdb
    key = derive_key(SALT)
    data = ("\n".join(ROWS) + "\n").encode()
    with pg.connect(name) as conn:
        cat = _load_through_trigger(conn, key, data)
        expected = copy_text_out(conn, "by_trigger")
    masked = DuckMasker(SPECS, cat.columns, list(cat.columns), key, exact=True).mask_block(data)
    assert masked.split(b"\n") == expected.split(b"\n")
