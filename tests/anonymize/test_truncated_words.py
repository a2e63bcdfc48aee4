"""Word-list outputs cut to a ``varchar(n)`` never give the original back: the first word is picked from
the list cut to ``n`` (``transformers.fit_words``), so the exclusion of the original's word compares
what is written. Checked on PostgreSQL (on-load trigger and in-place UPDATE) and on the stream engine,
which must give the same bytes."""

from __future__ import annotations

from collections import Counter

import pytest
from pg_helpers import copy_text_in, copy_text_out, new_database
from psycopg import sql

from scalingo_staging_sync.anonymize import transformers as tr
from scalingo_staging_sync.anonymize.planner import read_table
from scalingo_staging_sync.anonymize.salt import derive_key, key_settings
from scalingo_staging_sync.anonymize.sql import column_expressions, trigger_statements, update_statement
from scalingo_staging_sync.anonymize.transformers import ColumnInfo, get_transformer

#: under this salt (as under most), each of the five transformers gave some of these originals back
#: before the fix (first_name 4 distinct originals, last_name 6, city 8, full_name 4, company 6)
SALT = "truncated-words-salt-31"

#: transformer -> (the strings its originals are cut from, the lengths tried)
SOURCES = {
    "first_name": (tr.FIRST_NAMES, (3, 4, 5, 6, 7, 8)),
    "last_name": (tr.LAST_NAMES, (3, 4, 5, 6, 7, 8)),
    "city": (tr.CITIES, (3, 4, 5, 6, 7, 8, 10)),
    # full_name and company: the cut falls inside the first word (3..8) or after it (10, 12, 15)
    "full_name": (
        (*tr.FIRST_NAMES, *(f"{w} {tr.LAST_NAMES[(7 * i) % 50]}" for i, w in enumerate(tr.FIRST_NAMES))),
        (3, 4, 5, 6, 7, 8, 10, 12, 15),
    ),
    "company": (
        (*tr.COMPANY_WORDS, *(f"{w} {tr.COMPANY_SUFFIXES[i % 8]}" for i, w in enumerate(tr.COMPANY_WORDS))),
        (3, 4, 5, 6, 7, 8, 10, 12, 15),
    ),
}
#: column -> (transformer, n, its originals: every source cut to n, as written, upper and lower case)
COLUMNS = {
    f"{name}_{n}": (
        name,
        n,
        list(dict.fromkeys(v for s in sources for v in (s[:n], s[:n].upper(), s[:n].lower()))),
    )
    for name, (sources, lengths) in SOURCES.items()
    for n in lengths
}
SPECS = {col: {"transformer": name} for col, (name, _n, _v) in COLUMNS.items()}
ROWS = max(len(values) for _name, _n, values in COLUMNS.values())
DDL = (
    "CREATE TABLE {} (id int, " + ", ".join(f'"{c}" varchar({n})' for c, (_t, n, _v) in COLUMNS.items()) + ")"
)


def _copy_text() -> bytes:
    lines = []
    for i in range(ROWS):
        fields = [str(i), *(values[i] if i < len(values) else r"\N" for _t, _n, values in COLUMNS.values())]
        lines.append("\t".join(fields))
    return ("\n".join(lines) + "\n").encode()


def _leaks(rows) -> list[tuple[str, str, str]]:
    """(column, original, output) of every output equal to its original, case-insensitively, or (for
    full_name and company) whose first word is the original's first word."""
    leaks = []
    for row in rows:
        i = row[0]
        for j, (col, (name, _n, values)) in enumerate(COLUMNS.items(), start=1):
            if i >= len(values):
                assert row[j] is None
                continue
            orig, out = values[i], row[j]
            if out.lower() == orig.lower():
                leaks.append((col, orig, out))
            elif name in ("full_name", "company") and out.split(" ")[0].lower() == orig.split(" ")[0].lower():
                leaks.append((col, orig, out))
    return leaks


def _summary(leaks) -> str:
    per_column = Counter(col for col, _orig, _out in leaks)
    return f"{len(leaks)} originals kept, per column {dict(sorted(per_column.items()))}, e.g. {leaks[:3]}"


@pytest.fixture
def pgdb(staging_pg16):
    with new_database(staging_pg16, "truncw") as name:
        yield staging_pg16, name


def _masked_by_sql(conn):
    """Load the originals through the on-load trigger (table ``by_trigger``) and mask them in place
    with the UPDATE (table ``src``); both give the same bytes, returned."""
    conn.execute(sql.SQL(DDL).format(sql.Identifier("src")))
    conn.execute(sql.SQL(DDL).format(sql.Identifier("by_trigger")))
    cat = read_table(conn, "public", "by_trigger")
    create_fn, create_trigger, _drop = trigger_statements("public", "by_trigger", SPECS, cat.columns, conn)
    conn.execute(create_fn)
    conn.execute(create_trigger)
    copy_text_in(conn, "by_trigger", _copy_text())
    copy_text_in(conn, "src", _copy_text())
    assert copy_text_out(conn, "src") == _copy_text()
    conn.execute(update_statement("public", "src", column_expressions(SPECS, cat.columns)))
    by_trigger = copy_text_out(conn, "by_trigger")
    assert copy_text_out(conn, "src") == by_trigger
    return cat, by_trigger


def test_cut_word_outputs_are_never_the_original_on_postgresql(pgdb):
    pg, name = pgdb
    with pg.connect(name) as conn:
        for setting, value in key_settings(derive_key(SALT)).items():
            conn.execute("SELECT set_config(%s, %s, false)", (setting, value))
        _masked_by_sql(conn)
        rows = conn.execute("SELECT * FROM by_trigger ORDER BY id").fetchall()
    assert len(rows) == ROWS
    leaks = _leaks(rows)
    assert not leaks, _summary(leaks)


@pytest.mark.parametrize("arrow_folding", [False, True], ids=["translate", "arrow-folding"])
def test_cut_word_outputs_of_the_stream_engine_are_the_trigger_bytes(pgdb, arrow_folding):
    pytest.importorskip("duckdb")
    from scalingo_staging_sync.anonymize import stream
    from scalingo_staging_sync.tablename import TableName

    if arrow_folding and not stream.arrow_folding_available():
        pytest.skip("pyarrow is not installed")
    pg, name = pgdb
    key = derive_key(SALT)
    with pg.connect(name) as conn:
        for setting, value in key_settings(key).items():
            conn.execute("SELECT set_config(%s, %s, false)", (setting, value))
        cat, by_trigger = _masked_by_sql(conn)
        conn.execute(sql.SQL(DDL).format(sql.Identifier("by_stream")))
        with stream.StreamMasker(
            TableName("public", "by_stream"),
            SPECS,
            cat.columns,
            ["id", *COLUMNS],
            key,
            arrow_folding=arrow_folding,
        ) as m:
            masked = b"".join([*m.feed(_copy_text()), *m.finish()])
        assert masked == by_trigger
        copy_text_in(conn, "by_stream", masked)
        rows = conn.execute("SELECT * FROM by_stream ORDER BY id").fetchall()
    leaks = _leaks(rows)
    assert not leaks, _summary(leaks)


def test_fit_words_cuts_only_what_fit_cuts():
    """Not cut (text, or a length the longest output fits): the list itself, so the output is
    unchanged. Cut: the words cut to n, first occurrence kept, order kept."""
    from scalingo_staging_sync.anonymize.transformers import fit_words

    text = ColumnInfo("c", "text", "text")
    assert fit_words(tr.FIRST_NAMES, text, 9) is tr.FIRST_NAMES
    wide = ColumnInfo("c", "character varying(9)", "varchar", max_length=9)
    assert fit_words(tr.FIRST_NAMES, wide, 9) is tr.FIRST_NAMES
    # full_name cut at 12: its first words all fit, the list is the same
    v12 = ColumnInfo("c", "character varying(12)", "varchar", max_length=12)
    assert fit_words(tr.FIRST_NAMES, v12, 19) == tr.FIRST_NAMES
    v3 = ColumnInfo("c", "character varying(3)", "varchar", max_length=3)
    cut = fit_words(tr.FIRST_NAMES, v3, 9)
    assert cut == tuple(dict.fromkeys(w[:3] for w in tr.FIRST_NAMES))
    assert len(cut) == len({w.lower() for w in cut}) == 49  # "Cameron" and "Camille" both give "Cam"
    assert cut[:3] == ("Ale", "And", "Ari")


def test_a_length_leaving_one_word_is_refused():
    """Every built-in list keeps at least 2 distinct words at any length the transformers accept
    (min_length 3; even at 1 character): a list cut to one word is refused, naming the column and
    the length."""
    for name in ("first_name", "last_name", "city", "full_name", "company"):
        for n in range(1, 20):
            info = ColumnInfo("c", f"character varying({n})", "varchar", max_length=n)
            assert not any("distinct word" in e for e in get_transformer(name).check(info, {}))

    class OneLetter(tr.FirstNameTransformer):
        name = "one_letter_names"
        words = ("Ann", "Abe", "Alf")

    info = ColumnInfo("nick", "character varying(1)", "varchar", max_length=1)
    assert OneLetter().check(info, {}) == [
        "transformer 'one_letter_names' needs at least 3 characters; column is character varying(1)"
    ]
    OneLetter.min_length = 1
    assert OneLetter().check(info, {}) == [
        "transformer 'one_letter_names' cannot mask column nick (character varying(1)): its words cut to "
        "1 characters leave 1 distinct word(s), so the output could be the original"
    ]
    info4 = ColumnInfo("nick", "character varying(4)", "varchar", max_length=4)
    assert OneLetter().check(info4, {}) == []
