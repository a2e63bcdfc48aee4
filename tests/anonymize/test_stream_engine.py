"""Masking engine (c), ``anonymize.stream``: the COPY text masked on the worker by DuckDB gives the
masking trigger's table, byte for byte, for every transformer it takes (NULLs, empty strings,
non-ASCII text, COPY escapes, ``varchar(n)`` limits, BC and five-digit-year dates), on PostgreSQL 16
and 18; the loader uses it only where it applies, and fails closed."""

from __future__ import annotations

import pytest
from pg_helpers import copy_text_in, copy_text_out, new_database
from psycopg import sql

from scalingo_staging_sync.anonymize.executor import install_masking_trigger
from scalingo_staging_sync.anonymize.planner import read_table
from scalingo_staging_sync.anonymize.salt import derive_key, key_settings, target_with_key
from scalingo_staging_sync.anonymize.sql import trigger_name, trigger_statements
from scalingo_staging_sync.anonymize.stream import (
    StreamMasker,
    StreamMaskError,
    StreamMasking,
    StreamUnsupported,
    check_engine,
    select_list,
)
from scalingo_staging_sync.restore.copytext import copy_escape, unescape_copy_field
from scalingo_staging_sync.restore.loader import load_table_data
from scalingo_staging_sync.restore.pgtools import find_pg_tools
from scalingo_staging_sync.restore.runner import run_pg_restore
from scalingo_staging_sync.restore.toc import read_toc
from scalingo_staging_sync.tablename import TableName
from tests.restore.restore_helpers import superuser_target, unique_db

pytest.importorskip("duckdb")

SALT = "stream-engine-test-salt-0123456789"

#: column -> (type, spec)
COLUMNS = {
    "email": ("text", {"transformer": "email"}),
    "email40": ("varchar(40)", {"transformer": "email", "case_insensitive": True}),
    "email_dom": ("varchar(60)", {"transformer": "email", "domain": "staging.test"}),
    "first_name": ("text", {"transformer": "first_name"}),
    "last_name": ("varchar(6)", {"transformer": "last_name"}),
    "city": ("text", {"transformer": "city"}),
    "phone": ("text", {"transformer": "phone"}),
    "phone_opt": ("varchar(12)", {"transformer": "phone", "prefix": "0", "digits": 9}),
    "address": ("text", {"transformer": "address"}),
    "address20": ("varchar(20)", {"transformer": "address"}),
    "postal": ("varchar(10)", {"transformer": "postal_code"}),
    "postal7": ("text", {"transformer": "postal_code", "digits": 7}),
    "company": ("text", {"transformer": "company"}),
    "full": ("text", {"transformer": "full_name"}),
    "full12": ("varchar(12)", {"transformer": "full_name"}),
    "hashed": ("text", {"transformer": "hash"}),
    "hash_md5": ("text", {"transformer": "hash", "algorithm": "md5", "length": 20}),
    "hash64": ("varchar(64)", {"transformer": "hash", "length": 64}),
    "hash_b64": ("varchar(15)", {"transformer": "hash", "encoding": "base64url"}),
    "hash_b64md5": ("text", {"transformer": "hash", "algorithm": "md5", "encoding": "base64url"}),
    "birth_date": ("date", {"transformer": "date_shift"}),
    "shift30": ("date", {"transformer": "date_shift", "max_days": 30}),
    "stamp": ("timestamp", {"transformer": "date_shift"}),
    "stamp_tz": ("timestamptz", {"transformer": "date_shift", "max_days": 30}),
    "ip_text": ("text", {"transformer": "ip"}),
    "ip_inet": ("inet", {"transformer": "ip"}),
    "wiped": ("text", {"transformer": "null"}),
    "fixed_tab": ("text", {"transformer": "fixed", "value": "a\tb\\c é"}),
    # fixed on other types: the value's text read by COPY as the trigger's CAST reads it
    "fixed_json": ("jsonb", {"transformer": "fixed", "value": '{"b": [1, 2], "a": "x\\ny\\tz é"}'}),
    "fixed_num": ("numeric(6,1)", {"transformer": "fixed", "value": 12.345}),
    "fixed_at": ("timestamptz", {"transformer": "fixed", "value": "2024-03-01 10:00"}),
    "fixed_flag": ("boolean", {"transformer": "fixed", "value": True}),
    "note": ("text", None),
    "num": ("int", None),
    # derived: the new values of other columns of the row, masked or not (escapes, NULLs, numbers)
    "full_from": ("text", {"transformer": "full_name", "from": ["first_name", "note", "num"]}),
    "full_from12": ("varchar(12)", {"transformer": "full_name", "from": ["first_name", "last_name"]}),
    "full_wiped": ("text", {"transformer": "full_name", "from": ["wiped", "fixed_tab"]}),
    "email_md5": ("varchar(40)", {"transformer": "md5_of", "column": "email"}),
    "note_md5": ("text", {"transformer": "md5_of", "column": "note"}),
    "date_md5": ("text", {"transformer": "md5_of", "column": "birth_date"}),
    "stamp_md5": ("text", {"transformer": "md5_of", "column": "stamp_tz"}),
}
SPECS = {c: spec for c, (_t, spec) in COLUMNS.items() if spec is not None}
DDL = "CREATE TABLE {} (id int, " + ", ".join(f'"{c}" {t}' for c, (t, _s) in COLUMNS.items()) + ")"

# COPY text values (escaped as COPY TO writes them)
TEXTS = [
    "Jean.Dupont@Example.COM", r"\N", "", "élodie.zoë@exämple.fr", "李@例子.中国", r"tab\there",
    r"new\nline", r"back\\slash", r"cr\rn", " 7  Chemin  des Ânes ", r"\\N", r"\\.", "+33 6 12 34 56 78",
    "+999123456789012", "+999000000000001", "0123456789", "12345", " 12345 ", "1234567", "0123456",
    "alex", "ALEX", "Acacia Street", "1 Acacia Street", "Acorn Labs", "x" * 45, "Zoë 李", r"ab\\\\c",
    r"\b\f\v", "Jamie Abbott", "abbott", "ключ", "a  b", " ", "🙂 emoji", "long " * 20, "é" * 41,
    # ASCII-only case folding: DuckDB's lower() is used only on all-ASCII values; these letters have a
    # lower case (Unicode) that A-Z folding must not apply: É, Ω, İ (two code points lowered), ǅ (title
    # case), Ⅻ (a numeral), K (Kelvin sign, lowered to ASCII k), ẞ
    "ÉLODIE Ânes", "Ωmega Street", "İstanbul", "ǅemal", "Ⅻ Acacia", "\u212aelvin", "ẞtraße", "MIXED ascii É",
]  # fmt: skip
DATES = [
    "1980-02-29", r"\N", "infinity", "-infinity", "0044-03-15 BC", "0001-01-01 BC", "12345-01-01",
    "2000-01-01", "1900-03-01", "9999-12-31", "0001-01-01", "1970-01-01",
]  # fmt: skip


STAMPS = [
    "2020-01-01 10:00:00", r"\N", "infinity", "-infinity", "0044-03-15 12:00:00 BC", "12345-06-01 00:00:00",
    "2020-02-29 23:59:59.999999", "1970-01-01 00:00:00.5", "0001-01-01 00:00:00", "0001-12-31 23:59:59 BC",
]  # fmt: skip
# as pg_dump writes them from a session in any TimeZone: the masking session hashes their UTC text
STAMPS_TZ = [
    "2020-01-01 10:00:00+00", "2020-01-01 01:00:00+05:30", "2020-12-31 22:00:00.25-03", r"\N",
    "1900-01-01 00:00:00+00:09:21", "0044-03-15 00:30:00+01 BC", "0001-01-01 00:00:00+01", "infinity",
    "-infinity", "12345-01-01 20:00:00-05", "2024-03-31 02:30:00.5+02", "2024-02-29 23:59:59.123+00",
    "1969-12-31 23:59:59-00:00:01",
]  # fmt: skip


INETS = [
    "192.168.1.5", "10.0.0.0/8", "::1", "2001:db8::1/64", "fe80::1ff:fe23:4567:890a", "::ffff:1.2.3.4",
    r"\N", "240.0.0.1", "0.0.0.0/0", "2001:db8:85a3::8a2e:370:7334", "::", "255.255.255.255/31",
]  # fmt: skip


#: originals of the columns of other types (all replaced by a fixed value)
OTHER_VALUES = {
    "jsonb": [r'{"email": "a@b.c"}', r"\N"],
    "numeric(6,1)": ["1.5", r"\N"],
    "boolean": ["f", r"\N"],
}


def _decoded_len(text: str) -> int:
    return len(text.replace("\\\\", "\x00").replace("\\t", "\t").replace("\\n", "\n").replace("\\r", "\r"))


def _rows() -> bytes:
    lines = []
    for i in range(len(TEXTS) * 2):
        fields = [str(i)]
        for j, (typ, _spec) in enumerate(COLUMNS.values()):
            if typ == "date":
                fields.append(DATES[(i + j) % len(DATES)])
                continue
            if typ in ("timestamp", "timestamptz"):
                values = STAMPS if typ == "timestamp" else STAMPS_TZ
                fields.append(values[(i + j) % len(values)])
                continue
            if typ in OTHER_VALUES:
                fields.append(OTHER_VALUES[typ][(i + j) % 2])
                continue
            if typ == "inet":
                fields.append(INETS[(i + j) % len(INETS)])
                continue
            if typ == "int":
                fields.append(r"\N" if i % 5 == 0 else str(i * 37 - 500))
                continue
            limit = int(typ[8:-1]) if typ.startswith("varchar(") else None
            k = (i + 7 * j) % len(TEXTS)
            while limit is not None and TEXTS[k] != r"\N" and _decoded_len(TEXTS[k]) > limit:
                k = (k + 1) % len(TEXTS)
            fields.append(TEXTS[k])
        lines.append("\t".join(fields))
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def pgdb(staging_pg):
    with new_database(staging_pg, "stream") as name:
        yield staging_pg, name


@pytest.mark.parametrize("arrow_folding", [False, True], ids=["translate", "arrow-folding"])
def test_stream_output_is_the_trigger_output_byte_for_byte(pgdb, monkeypatch, arrow_folding):
    from scalingo_staging_sync.anonymize import stream

    if arrow_folding and not stream.arrow_folding_available():
        pytest.skip("pyarrow is not installed")

    monkeypatch.setattr(stream, "CHUNK", 6000)  # several DuckDB queries, on blocks of whole lines
    pg, name = pgdb
    key = derive_key(SALT)
    data = _rows()
    with pg.connect(name) as conn:
        for setting, value in key_settings(key).items():
            conn.execute("SELECT set_config(%s, %s, false)", (setting, value))
        conn.execute(sql.SQL(DDL).format(sql.Identifier("by_trigger")))
        conn.execute(sql.SQL(DDL).format(sql.Identifier("by_stream")))
        cat = read_table(conn, "public", "by_trigger")
        create_fn, create_trigger, _drop = trigger_statements(
            "public", "by_trigger", SPECS, cat.columns, conn
        )
        conn.execute(create_fn)
        conn.execute(create_trigger)
        copy_text_in(conn, "by_trigger", data)
        columns = ["id", *COLUMNS]
        with StreamMasker(
            TableName("public", "by_stream"), SPECS, cat.columns, columns, key, arrow_folding=arrow_folding
        ) as m:
            assert m.arrow_folding is arrow_folding
            assert ("sss_ascii_lower(" in m.select) is arrow_folding
            # fed in pieces cut anywhere, as the loader reads them
            blocks = [out for i in range(0, len(data), 333) for out in m.feed(data[i : i + 333])]
            masked = b"".join([*blocks, *m.finish()])
            assert len(blocks) > 3
        assert masked.count(b"\n") == data.count(b"\n")
        copy_text_in(conn, "by_stream", masked)
        expected = copy_text_out(conn, "by_trigger")
        assert copy_text_out(conn, "by_stream") == expected
        # it masked: no original address, e-mail or phone is left, the null column is empty
        rows = conn.execute(
            "SELECT email, phone, wiped, fixed_tab, note FROM by_stream ORDER BY id"
        ).fetchall()
        assert all(r[0] in (None, "") or r[0].startswith("u") for r in rows)  # '' is kept: keeps_empty
        assert all(r[1] in (None, "") or r[1].startswith("+999") for r in rows)
        assert all(r[2] is None for r in rows) and all(r[3] == "a\tb\\c é" for r in rows)
        assert {r[4] for r in rows} >= {"tab\there", "back\\slash", None, ""}  # passed through as it was


def test_arrow_folding_is_translate_for_every_character():
    """The Arrow ASCII kernels behind the stream engine's case folding give ``translate``'s A-Z
    mapping for every Unicode character, alone and next to ASCII letters: no other letter changes
    case, no character is cut or altered."""
    import duckdb

    from scalingo_staging_sync.anonymize.stream import (
        _UP,
        arrow_folding_available,
        register_arrow_folding,
    )

    if not arrow_folding_available():
        pytest.skip("pyarrow is not installed")
    chars = [chr(c) for c in range(1, 0x110000) if not 0xD800 <= c <= 0xDFFF]
    values = ["".join(chars[i : i + 61]) + "Ab" for i in range(0, len(chars), 61)] + chars[:2000]
    values += [None, "", "ÉLODIE Ânes", "\u212aelvin", "ǅemal"]
    con = duckdb.connect()
    register_arrow_folding(con)
    con.execute("CREATE TABLE t AS SELECT unnest($1::VARCHAR[]) AS v", [values])
    lower, upper = _UP.lower(), _UP
    differ = con.execute(
        "SELECT count(*) FILTER (WHERE sss_ascii_lower(v) IS DISTINCT FROM translate(v, $1, $2)),"
        " count(*) FILTER (WHERE sss_ascii_upper(v) IS DISTINCT FROM translate(v, $2, $1)),"
        " count(*) FILTER (WHERE sss_ascii_lower(v) <> v), count(*) FROM t",
        [upper, lower],
    ).fetchone()
    assert differ[:2] == (0, 0)
    assert differ[2] > len(chars) // 61 and differ[3] == len(values)  # it did fold A-Z
    kelvin = "\u212a"  # K, the Kelvin sign: Unicode lowers it to an ASCII k
    folded = con.execute("SELECT sss_ascii_lower($1)", [f"ÉLODIE Ânes {kelvin} K"]).fetchone()[0]
    assert folded == f"Élodie Ânes {kelvin} k"


def test_without_arrow_functions_the_masker_folds_with_translate(monkeypatch):
    """Arrow folding that cannot be registered (a broken pyarrow) falls back to ``translate`` when it
    was not asked for, with the same text; asked for explicitly, the error is raised."""
    from scalingo_staging_sync.anonymize import stream
    from scalingo_staging_sync.anonymize.transformers import ColumnInfo

    if not stream.arrow_folding_available():
        pytest.skip("pyarrow is not installed")
    specs = {
        "address": {"transformer": "address"},
        "email": {"transformer": "email", "case_insensitive": True},
    }
    catalog = {c: ColumnInfo(c, "text", "text") for c in ("id", "address", "email")}
    data = "".join(f"{i}\t{t}\t{t}\n" for i, t in enumerate(TEXTS)).encode()
    key = derive_key(SALT)
    table = TableName("public", "t")
    with StreamMasker(table, specs, catalog, ["id", "address", "email"], key) as m:
        assert m.arrow_folding
        with_arrow = m.mask(data)

    def broken(con):
        raise RuntimeError("no arrow here")

    monkeypatch.setattr(stream, "register_arrow_folding", broken)
    with StreamMasker(table, specs, catalog, ["id", "address", "email"], key) as m:
        assert not m.arrow_folding and "sss_ascii_lower" not in m.select
        assert m.mask(data) == with_arrow
    with pytest.raises(RuntimeError, match="no arrow here"):
        StreamMasker(table, specs, catalog, ["id", "address", "email"], key, arrow_folding=True)


def test_the_keyed_integer_in_duckdb_for_every_length(pgdb):
    """Word picks and date shifts read a 60-bit integer from the keyed md5's first 15 hex digits: DuckDB
    gives PostgreSQL's value on values of 0 to 100 bytes, non-ASCII ones and every COPY escape."""
    import duckdb

    from scalingo_staging_sync.anonymize.stream import _hash_int
    from scalingo_staging_sync.anonymize.transformers import KEY_GUC, hex_int, keyed_md5

    pg, name = pgdb
    key = derive_key(SALT)
    values = ["", "é", "李" * 9, "jean", "a\tb\\c\n"] + [
        "abcdefghijklmnopqrstuvwxyz0123456789"[: n % 36] * (1 + n // 36) for n in range(101)
    ]
    con = duckdb.connect()
    con.execute("SET VARIABLE sss_key = $1::VARCHAR", [key])
    con.execute("CREATE TABLE t AS SELECT unnest($1::VARCHAR[]) AS v", [values])
    got = dict(con.execute(f"SELECT v, {_hash_int('address', 'v')} FROM t").fetchall())  # noqa: S608 (DuckDB text of constants)
    with pg.connect(name) as conn:
        conn.execute("SELECT set_config(%s, %s, false)", (KEY_GUC, key))
        want = conn.execute(
            sql.SQL("SELECT v, {} FROM unnest(%s::text[]) v").format(
                hex_int(keyed_md5("address", sql.Identifier("v")), 1, 15)
            ),
            (values,),
        ).fetchall()
    assert len(want) == len(values)
    for v, h in want:
        assert got[v] == h, len(v.encode())


def test_unsupported_columns_are_named():
    from scalingo_staging_sync.anonymize.transformers import ColumnInfo

    text = ColumnInfo("t", "text", "text")
    stamp = ColumnInfo("s", "timestamp with time zone", "timestamptz")
    cases = [
        ({"d": {"transformer": "md5_of", "column": "s"}}, {"d": text, "s": stamp}, r"reads s \(timestamp"),
        ({"d": {"transformer": "full_name", "from": ["g"]}}, {"d": text, "g": text}, "reads g, which is not"),
        ({"d": {"transformer": "md5_of", "column": "d"}}, {"d": text}, "cycle: d -> d"),
        (
            {"d": {"transformer": "md5_of", "column": "n"}, "n": {"transformer": "fixed", "value": 1.50}},
            {"d": text, "n": ColumnInfo("n", "numeric", "numeric")},
            "reads n, a fixed numeric",
        ),
        (
            {"t": {"transformer": "fixed", "value": "101"}},
            {"t": ColumnInfo("t", "bit(3)", "bit")},
            "pads or cuts",
        ),
        ({"t": {"transformer": "email"}}, {"t": ColumnInfo("t", "character(20)", "bpchar", 20)}, "padded"),
        ({"t": {"transformer": "ip", "unique": True}}, {"t": ColumnInfo("t", "inet", "inet")}, "unique"),
        ({"t": {"transformer": "ip"}}, {"t": ColumnInfo("t", "cidr", "cidr")}, "ip on cidr"),
        ({"t": {"transformer": "email"}}, {"t": ColumnInfo("t", "citext", "citext")}, "text and varchar"),
        ({"x": {"transformer": "email"}}, {"t": text}, "not in the archive"),
    ]
    for specs, catalog, why in cases:
        with pytest.raises(StreamUnsupported, match=why):
            select_list(specs, catalog, [c for c in catalog if c != "g"])


def test_ip_addresses_are_written_as_postgresql_writes_them(pgdb):
    """The ip transformer's outputs, ``'2001:db8::'::inet + x`` and ``'240.0.0.0'::inet + x % 2^28``,
    written by DuckDB as PostgreSQL's ``host()`` writes them, for x with every pattern of zero words
    (PostgreSQL writes the longest run of zero words as '::', the first of equal ones)."""
    import duckdb

    from scalingo_staging_sync.anonymize.stream import _v4_text, _v6_text

    words = [0, 1, 0xABC, 0xFFFF]
    xs = [
        (a << 48) | (b << 32) | (c << 16) | d for a in words[:3] for b in words for c in words for d in words
    ]
    xs += [2**61 - 1, 2**60, 2**48, 2**28 - 1, 2**28, 12345678901234]
    pg, name = pgdb
    with pg.connect(name) as conn:
        want = conn.execute(
            "SELECT host('2001:db8::'::inet + x), host('240.0.0.0'::inet + x %% 268435456) FROM unnest(%s::bigint[]) x",
            (xs,),
        ).fetchall()
    con = duckdb.connect()
    query = f"SELECT {_v6_text('x')}, {_v4_text('x')} FROM unnest($1::BIGINT[]) t(x)"  # noqa: S608
    got = con.execute(query, [xs]).fetchall()
    assert got == want and len(set(want)) == len(set(xs))


def test_a_duckdb_error_names_the_table_and_quotes_no_value():
    from scalingo_staging_sync.anonymize.transformers import ColumnInfo

    specs = {"born": {"transformer": "date_shift"}}
    catalog = {"id": ColumnInfo("id", "integer", "int4"), "born": ColumnInfo("born", "date", "date")}
    key = derive_key(SALT)
    with StreamMasker(TableName("s", "people"), specs, catalog, ["id", "born"], key) as m:
        with pytest.raises(StreamMaskError) as err:
            m.mask(b"1\tsecret-value-1234\n")
    message = str(err.value)
    assert "s.people" in message
    assert "secret-value" not in message and key not in message


def test_a_failed_block_stops_the_pipeline_and_leaves_no_file(monkeypatch, tmp_path):
    """Blocks are masked on a thread while the previous one is sent: a bad block in the middle fails
    the table, in order (the good block before it comes out first), and close() removes every file."""
    from scalingo_staging_sync.anonymize import stream
    from scalingo_staging_sync.anonymize.transformers import ColumnInfo

    monkeypatch.setattr(stream, "CHUNK", 64)
    specs = {"born": {"transformer": "date_shift"}}
    catalog = {"id": ColumnInfo("id", "integer", "int4"), "born": ColumnInfo("born", "date", "date")}
    good = b"".join(b"%d\t2020-01-%02d\n" % (i, 1 + i % 28) for i in range(40))
    key = derive_key(SALT)
    out: list[bytes] = []
    m = StreamMasker(TableName("s", "people"), specs, catalog, ["id", "born"], key, workdir=tmp_path)
    with m, pytest.raises(StreamMaskError, match="s.people"):
        out += m.feed(good)
        out += m.feed(b"41\tnot-a-date\n" * 8)  # masked while the good block is handed out
        assert b"".join(out).count(b"\n") == 40 and b"2020-01-01" not in b"".join(out)
        out += m.feed(good)  # its result is the bad block's failure
        out += m.finish()
    assert list(tmp_path.iterdir()) == []


def test_engine_names_are_checked():
    assert check_engine(None) == "auto" and check_engine("trigger") == "trigger"
    with pytest.raises(ValueError, match="masking_engine 'fast'"):
        check_engine("fast")
    assert copy_escape("a\tb\\c\nd") == "a\\tb\\\\c\\nd"
    tricky = "tab\t nl\n cr\r bs\\ \b\f\v é \\N"
    assert unescape_copy_field(copy_escape(tricky)) == tricky


SOURCE_SQL = r"""
CREATE TABLE people (id int PRIMARY KEY, email text, name text, born date, note text,
    seen timestamptz, visit timestamp);
CREATE TABLE derived (id int PRIMARY KEY, email text, email_md5 text);
CREATE TABLE plain (id int, v text);
CREATE TABLE documents (id int PRIMARY KEY, doc jsonb);
INSERT INTO people SELECT g, 'Person.' || g || '@Example.org',
    CASE g % 4 WHEN 0 THEN E'Zoë \\ b' WHEN 1 THEN E'tab\there' WHEN 2 THEN NULL ELSE 'Jean Dupont' END,
    date '1960-01-01' + g, 'keep ' || g,
    CASE WHEN g % 7 <> 0 THEN timestamptz '2024-03-30 21:00:00+00' + g * interval '37 min 13.5 s' END,
    timestamp '1999-12-31 23:00:00' + g * interval '17 min 1.25 s' FROM generate_series(1, 3000) g;
INSERT INTO derived SELECT g, 'd' || g || '@example.org', md5('d' || g || '@example.org')
FROM generate_series(1, 500) g;
INSERT INTO plain SELECT g, 'v' || g FROM generate_series(1, 100) g;
INSERT INTO documents SELECT g, jsonb_build_object('email', 'doc' || g || '@example.org')
FROM generate_series(1, 50) g;
"""
ITEMS = [
    {
        "schema": "public",
        "name": "people",
        "columns": {
            "email": {"transformer": "email"},
            "name": {"transformer": "full_name"},
            "born": {"transformer": "date_shift"},
            "seen": {"transformer": "date_shift"},
            "visit": {"transformer": "date_shift", "max_days": 10},
        },
    },
    {
        "schema": "public",
        "name": "derived",
        "columns": {
            "email": {"transformer": "email"},
            "email_md5": {"transformer": "md5_of", "column": "email"},
        },
    },
    {
        "schema": "public",
        "name": "documents",
        "columns": {"doc": {"transformer": "json", "paths": {"email": "email"}}},
    },
]
FINGERPRINT = "SELECT count(*), md5(string_agg(t::text, '|' ORDER BY id)) FROM {} t"


@pytest.fixture(scope="module")
def source_dump(prod_pg, tmp_path_factory):
    db = unique_db("stream_src")
    prod_pg.create_database(db)
    prod_pg.execute(SOURCE_SQL, db)
    # pg_dump writes timestamptz values in the database's TimeZone: offsets other than +00
    prod_pg.execute(sql.SQL("ALTER DATABASE {} SET timezone = 'Asia/Kolkata'").format(sql.Identifier(db)), db)
    return prod_pg.pg_dump(db, tmp_path_factory.mktemp("stream") / "src.pgc")


def _prepared(pg, dump, tools):
    """A staging database with the archive's pre-data and the masking triggers of ITEMS."""
    db = unique_db("stream")
    pg.create_database(db)
    target = superuser_target(pg, db)
    run_pg_restore(dump, target, section="pre-data", tools=tools)
    with target.connect(autocommit=True) as conn:
        for item in ITEMS:
            install_masking_trigger(conn, item)
    return db, target


def _load_into(pg, db, target, dump, tools, engine: str | None):
    """Load the archive's data (again: each table is truncated in its load) with ``engine``."""
    filt = StreamMasking(engine) if engine else None
    keyed = target_with_key(target, derive_key(SALT))
    entries = [e for e in read_toc(dump, tools) if e.desc == "TABLE DATA"]
    loaded = load_table_data(dump, keyed, entries, tools=tools, jobs=2, copy_filter=filt)
    enabled = {
        item["name"]: pg.execute(
            "SELECT tgenabled::text FROM pg_trigger WHERE tgname = %s",
            db,
            (trigger_name("public", item["name"]),),
        )[0][0]
        for item in ITEMS
    }
    prints = {
        t: pg.execute(FINGERPRINT.format(t), db)[0] for t in ("people", "derived", "plain", "documents")
    }
    return {str(t.table): t for t in loaded}, prints, enabled, filt


def _load(pg, dump, tools, engine: str | None):
    db, target = _prepared(pg, dump, tools)
    return _load_into(pg, db, target, dump, tools, engine)


@pytest.mark.parametrize("version", [16, 18])
def test_the_loader_masks_on_the_worker_where_it_applies(request, prod_pg, source_dump, version):
    pg = request.getfixturevalue(f"staging_pg{version}")
    tools = find_pg_tools(str(pg.bin_dir))
    by_trigger, want, _enabled, _ = _load(pg, source_dump, tools, None)
    by_stream, got, enabled, filt = _load(pg, source_dump, tools, "stream")
    assert got == want  # the same tables, byte for byte
    assert want["people"][0] == 3000 and want["derived"][0] == 500 and want["documents"][0] == 50
    # people and derived (md5_of) streamed (their triggers disabled in the load's transaction),
    # documents kept its trigger (json), plain has no trigger
    assert by_stream["public.people"].filtered and not by_trigger["public.people"].filtered
    assert by_stream["public.derived"].filtered
    assert not by_stream["public.documents"].filtered and not by_stream["public.plain"].filtered
    assert enabled == {"people": "D", "derived": "D", "documents": "A"}
    assert filt.used["public.people"] == filt.used["public.derived"] == "stream"
    assert "json" in filt.used["public.documents"]
    assert by_stream["public.people"].frozen  # FREEZE still applies after the trigger is disabled


def _heap_fetches(pg, db: str) -> int:
    """Heap fetches of an index-only scan of every people row: 0 when COPY marked every page
    all-visible (batched inserts with FREEZE), one per row when it inserted row by row."""
    with pg.connect(db) as conn:
        conn.execute("CREATE INDEX IF NOT EXISTS people_id_probe ON people (id)")
        conn.execute("SET enable_seqscan = off")
        conn.execute("SET enable_bitmapscan = off")
        plan = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) SELECT id FROM people WHERE id > 0").fetchone()[0]
    node = plan[0]["Plan"]
    assert node["Node Type"] == "Index Only Scan", node
    return node["Heap Fetches"]


def test_a_streamed_table_is_copied_in_batches_with_its_trigger_back_disabled(
    prod_pg, staging_pg16, source_dump
):
    """The trigger is dropped for the load and created again before the commit: a disabled row trigger
    would still make COPY insert row by row (pages not all-visible, a slower post-data)."""
    tools = find_pg_tools(str(staging_pg16.bin_dir))
    seen = {}
    for engine in ("stream", "trigger"):
        db, target = _prepared(staging_pg16, source_dump, tools)
        staging_pg16.execute("ALTER TABLE people SET (autovacuum_enabled = false)", db)
        _loaded, _prints, enabled, filt = _load_into(staging_pg16, db, target, source_dump, tools, engine)
        seen[engine] = (_heap_fetches(staging_pg16, db), enabled["people"], filt.used["public.people"])
    assert seen["stream"] == (0, "D", "stream")
    assert seen["trigger"][0] == 3000 and seen["trigger"][1] == "A"  # the probe sees row-by-row inserts


def test_a_retried_load_masks_whatever_the_engine(prod_pg, staging_pg16, source_dump):
    """A load retried after a stream load (its trigger left disabled) masks again: by stream, or by
    the trigger, which it turns back on in the table's load transaction."""
    tools = find_pg_tools(str(staging_pg16.bin_dir))
    _loaded, want, _enabled, _ = _load(staging_pg16, source_dump, tools, None)
    db, target = _prepared(staging_pg16, source_dump, tools)
    _loaded, first, enabled, _ = _load_into(staging_pg16, db, target, source_dump, tools, "stream")
    assert first == want and enabled["people"] == "D"
    loaded, again, enabled, _ = _load_into(staging_pg16, db, target, source_dump, tools, "stream")
    assert again == want and loaded["public.people"].filtered
    loaded, by_trigger, enabled, filt = _load_into(staging_pg16, db, target, source_dump, tools, "trigger")
    assert by_trigger == want and not loaded["public.people"].filtered
    assert (
        enabled == {"people": "A", "derived": "A", "documents": "A"}
        and "masking_engine 'trigger'" in filt.used["public.people"]
    )


def test_a_failed_stream_load_rolls_back_and_leaves_the_trigger_on(prod_pg, staging_pg16, tmp_path):
    """A value DuckDB cannot take fails the table: rolled back to empty, its trigger still ENABLE
    ALWAYS (the DISABLE is rolled back with it), and no value in the error."""

    db = unique_db("stream_bad")
    prod_pg.create_database(db)
    prod_pg.execute("CREATE TABLE t (id int, born text); INSERT INTO t VALUES (1, 'not-a-date-42');", db)
    dump = prod_pg.pg_dump(db, tmp_path / "bad.pgc")
    tools = find_pg_tools(str(staging_pg16.bin_dir))
    stg = unique_db("stream_bad")
    staging_pg16.create_database(stg)
    target = superuser_target(staging_pg16, stg)
    run_pg_restore(dump, target, section="pre-data", tools=tools)
    item = {"schema": "public", "name": "t", "columns": {"born": {"transformer": "date_shift"}}}
    with target.connect(autocommit=True) as conn:
        # the column is text in staging but the spec is date_shift: only possible by hand; the
        # comment is what the stream engine reads, so make it claim a date column
        conn.execute("ALTER TABLE t ALTER COLUMN born TYPE date USING NULL")
        install_masking_trigger(conn, item)
    entries = [e for e in read_toc(dump, tools) if e.desc == "TABLE DATA"]
    keyed = target_with_key(target, derive_key(SALT))
    with pytest.raises(StreamMaskError) as err:
        load_table_data(dump, keyed, entries, tools=tools, copy_filter=StreamMasking("stream"))
    assert "not-a-date" not in str(err.value) and "public.t" in str(err.value)
    assert staging_pg16.execute("SELECT count(*) FROM t", stg)[0][0] == 0
    state = staging_pg16.execute(
        "SELECT tgenabled::text FROM pg_trigger WHERE tgname = %s", stg, (trigger_name("public", "t"),)
    )
    assert state[0][0] == "A"


def test_without_duckdb_auto_keeps_the_triggers_and_stream_is_refused(
    prod_pg, staging_pg16, source_dump, monkeypatch
):
    """A worker without DuckDB: ``auto`` loads through the triggers (same tables), ``stream`` is refused
    before anything is loaded, naming the extra to install."""
    from scalingo_staging_sync.anonymize import stream

    tools = find_pg_tools(str(staging_pg16.bin_dir))
    _loaded, want, _enabled, _ = _load(staging_pg16, source_dump, tools, None)
    monkeypatch.setattr(stream, "duckdb_available", lambda: False)
    with pytest.raises(ValueError, match=r"\[stream\]"):
        StreamMasking("stream")
    loaded, got, enabled, filt = _load(staging_pg16, source_dump, tools, "auto")
    assert got == want and not any(t.filtered for t in loaded.values())
    assert (
        enabled == {"people": "A", "derived": "A", "documents": "A"}
        and "no DuckDB" in filt.used["public.people"]
    )


def test_timestamps_stream_only_in_the_masking_sessions_styles(pgdb):
    """date_shift hashes a timestamp's text as the session prints it: a session whose TimeZone is
    not UTC (or whose DateStyle is not ISO) leaves the table to its trigger, which masks as before."""
    pg, name = pgdb
    item = {
        "schema": "public",
        "name": "visits",
        "columns": {"seen_at": {"transformer": "date_shift"}, "email": {"transformer": "email"}},
    }
    with pg.connect(name) as conn:
        conn.execute("CREATE TABLE visits (id int, seen_at timestamptz, email text)")
        install_masking_trigger(conn, item)
        for setting, value in key_settings(derive_key(SALT)).items():
            conn.execute("SELECT set_config(%s, %s, false)", (setting, value))
        table, columns = TableName("public", "visits"), ["id", "seen_at", "email"]
        for style, value, why in (
            ("TimeZone", "Europe/Paris", "TimeZone Europe/Paris"),
            ("DateStyle", "SQL, DMY", "DateStyle SQL"),
        ):
            conn.execute("SELECT set_config(%s, %s, false)", (style, value))
            filt = StreamMasking("auto")
            assert filt(conn, table, columns) is None and why in filt.used["public.visits"]
            conn.execute("RESET ALL")
            for setting, v in key_settings(derive_key(SALT)).items():
                conn.execute("SELECT set_config(%s, %s, false)", (setting, v))
        filt = StreamMasking("auto")
        conn.execute("BEGIN")  # the masker drops the trigger in the load's transaction
        masker = filt(conn, table, columns)
        assert masker is not None and filt.used["public.visits"] == "stream"
        masker.close()
        conn.execute("ROLLBACK")


@pytest.mark.parametrize("later_offset", [False, True], ids=["all-utc", "an-offset-later"])
def test_timestamptz_at_utc_are_shifted_without_a_move(pgdb, monkeypatch, later_offset):
    """pg_dump in a UTC session writes every timestamptz at +00: the stream engine shifts them as
    they are written (no move to UTC); a block holding another offset switches the table to the
    general form from that block on. Either way the trigger's table, byte for byte."""
    from scalingo_staging_sync.anonymize import stream
    from scalingo_staging_sync.anonymize.transformers import ColumnInfo

    monkeypatch.setattr(stream, "CHUNK", 400)
    utc = [
        s
        for s in STAMPS_TZ
        if s.endswith("+00") or s.endswith("+00 BC") or s in ("infinity", "-infinity", r"\N")
    ]
    utc += ["0044-03-15 00:30:00+00 BC", "12345-01-01 20:00:00+00", "2024-02-29 23:59:59.5+00"]
    rows = [f"{i}\t{utc[i % len(utc)]}" for i in range(60)]
    if later_offset:
        rows += [f"{i}\t2024-06-01 01:30:00+05:30" for i in range(60, 70)]
    data = ("\n".join(rows) + "\n").encode()
    specs = {"at": {"transformer": "date_shift", "max_days": 20}}
    pg, name = pgdb
    key = derive_key(SALT)
    with pg.connect(name) as conn:
        for setting, value in key_settings(key).items():
            conn.execute("SELECT set_config(%s, %s, false)", (setting, value))
        for t in ("by_trigger", "by_stream"):
            conn.execute(sql.SQL("CREATE TABLE {} (id int, at timestamptz)").format(sql.Identifier(t)))
        cat = {
            "id": ColumnInfo("id", "integer", "int4"),
            "at": ColumnInfo("at", "timestamptz", "timestamptz"),
        }
        create_fn, create_trigger, _drop = trigger_statements("public", "by_trigger", specs, cat, conn)
        conn.execute(create_fn)
        conn.execute(create_trigger)
        copy_text_in(conn, "by_trigger", data)
        with StreamMasker(TableName("public", "by_stream"), specs, cat, ["id", "at"], key) as m:
            assert "error(" in m.select  # the +00 form first
            blocks = [out for i in range(0, len(data), 97) for out in m.feed(data[i : i + 97])]
            masked = b"".join([*blocks, *m.finish()])
            assert m.utc_only is not later_offset
        copy_text_in(conn, "by_stream", masked)
        assert copy_text_out(conn, "by_stream") == copy_text_out(conn, "by_trigger")
