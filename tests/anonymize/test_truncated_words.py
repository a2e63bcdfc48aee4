"""Word-list outputs cut to a ``varchar(n)`` never give the original back: the first word is picked from
the list cut to ``n`` (``transformers.fit_words``), so the exclusion of the original's word compares
what is written. Checked on PostgreSQL (on-load trigger and in-place UPDATE) and on the stream engine,
which must give the same bytes."""

from __future__ import annotations

from collections import Counter

import pytest
from pg_helpers import new_database

from scalingo_staging_sync.anonymize import transformers as tr
from scalingo_staging_sync.anonymize.salt import derive_key
from scalingo_staging_sync.anonymize.transformers import ColumnInfo, get_transformer

from .cut_helpers import mask_every_way

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


def test_cut_word_outputs_are_never_the_original_on_postgresql(pgdb):
    pg, name = pgdb
    key = derive_key(SALT)
    with pg.connect(name) as conn:
        rows = mask_every_way(conn, DDL, SPECS, _copy_text(), key)
    assert len(rows) == ROWS
    leaks = _leaks(rows)
    assert not leaks, _summary(leaks)


@pytest.mark.parametrize("arrow_folding", [False, True], ids=["translate", "arrow-folding"])
def test_cut_word_outputs_of_the_stream_engine_are_the_trigger_bytes(pgdb, arrow_folding):
    pg, name = pgdb
    key = derive_key(SALT)
    with pg.connect(name) as conn:
        rows = mask_every_way(conn, DDL, SPECS, _copy_text(), key, stream=True, arrow_folding=arrow_folding)
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
