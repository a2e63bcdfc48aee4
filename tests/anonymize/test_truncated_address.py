"""An ``address`` cut to a ``varchar(n)`` never gives the original back. The street pick excludes the
original's second word, but the cut can still rebuild the original: ``left('12 Maple Road', 7)`` is the
original ``'12 Mapl'`` (whose word ``mapl`` is no street) when its keyed number happens to be 12. When
the cut output equals the original (ASCII case-insensitively, spaces trimmed) the next house number is
written instead. Checked on PostgreSQL (on-load trigger and in-place UPDATE) and on the stream engine,
which must give the same bytes.

The originals that came back before the guard are found with the real keyed hash: PostgreSQL masks
every ``'<1..999> <Street> <Suffix>'`` cut to ``n`` with the uncut expression (a ``text`` column's, which
the guard leaves alone) and keeps those whose cut output is the candidate itself."""

from __future__ import annotations

import pytest
from pg_helpers import new_database
from psycopg import sql

from scalingo_staging_sync.anonymize import transformers as tr
from scalingo_staging_sync.anonymize.salt import derive_key
from scalingo_staging_sync.anonymize.sql import column_expressions
from scalingo_staging_sync.anonymize.transformers import ColumnInfo

from .cut_helpers import mask_every_way, set_session_key

#: under this salt, 9 candidates came back as themselves before the guard, cut to 6, 7, 8, 9 and 10
#: characters ('155 Li', '298 Mil', '614 Rowa', '68 Orchar', '508 Junipe'...); 27 originals with their
#: upper- and lower-case forms
SALT = "truncated-address-salt-0005"
LENGTHS = (5, 6, 7, 8, 9, 10, 11, 12)
#: candidates per length that do not come back, masked too (the guard must leave their output alone)
OTHERS = 40
COLUMNS = {f"addr_{n}": n for n in LENGTHS}
SPECS = {col: {"transformer": "address"} for col in COLUMNS}
DDL = "CREATE TABLE {} (id int, " + ", ".join(f'"{c}" varchar({n})' for c, n in COLUMNS.items()) + ")"
TEXT = ColumnInfo("v", "text", "text")


def _uncut(conn, values: list[str]) -> dict[str, str]:
    """{value: its whole address line}, by the SQL expression of a ``text`` column (never cut, never
    guarded)."""
    expr = column_expressions({"v": {"transformer": "address"}}, {"v": TEXT})["v"]
    query = sql.SQL("SELECT v, {} FROM unnest({}::text[]) v").format(expr, sql.Literal(values))
    rows = conn.execute(query).fetchall()
    return dict(rows)


def _candidates(n: int) -> list[str]:
    """Every '<1..999> <Street> <Suffix>' cut to n, and the same without trailing spaces."""
    lines = (
        f"{k} {s} {suffix}"[:n] for k in range(1, 1000) for s in tr.STREETS for suffix in tr.STREET_SUFFIXES
    )
    return list(dict.fromkeys(v for line in lines for v in (line, line.rstrip(" "))))


def _same(out: str, original: str) -> bool:
    """Equal as the transformer compares: ASCII case-insensitively, spaces trimmed (originals and
    outputs here are ASCII)."""
    return out.strip(" ").lower() == original.strip(" ").lower()


def _originals(conn) -> tuple[dict[str, list[str]], list[tuple[str, str]]]:
    """({column: its originals}, the (column, original) pairs that the unguarded cut gives back exactly):
    per length, each candidate whose cut output is itself (as written, upper and lower case), then
    ``OTHERS`` candidates that do not come back."""
    originals: dict[str, list[str]] = {}
    exact: list[tuple[str, str]] = []
    for col, n in COLUMNS.items():
        candidates = _candidates(n)
        uncut = _uncut(conn, candidates)
        back = [v for v in candidates if _same(uncut[v][:n], v)]
        exact += [(col, v) for v in back if uncut[v][:n] == v]
        others = [v for v in candidates[:: len(candidates) // OTHERS] if v not in back][:OTHERS]
        originals[col] = list(dict.fromkeys([*(w for v in back for w in (v, v.upper(), v.lower())), *others]))
    return originals, exact


def _copy_text(originals: dict[str, list[str]]) -> bytes:
    rows = max(len(v) for v in originals.values()) + 1  # the last row is all NULL
    lines = []
    for i in range(rows):
        fields = [str(i), *(vals[i] if i < len(vals) else r"\N" for vals in originals.values())]
        lines.append("\t".join(fields))
    return ("\n".join(lines) + "\n").encode()


def _expected(conn, originals: dict[str, list[str]]) -> dict[str, list[str]]:
    """The outputs the guard gives: the cut output, or, when that is the original, the same line with
    the next house number (999 -> 1), cut."""
    uncut = _uncut(conn, sorted({v for vals in originals.values() for v in vals}))
    expected = {}
    for col, n in COLUMNS.items():
        outs = []
        for v in originals[col]:
            line = uncut[v]
            if _same(line[:n], v):
                number, rest = line.split(" ", 1)
                line = f"{1 + int(number) % 999} {rest}"
            outs.append(line[:n])
        expected[col] = outs
    return expected


def _check(rows, originals, expected) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str, str]]]:
    """(column, original, output) of every output equal to its original (as the transformer compares),
    and (column, original, output, expected output) of every output that is not the expected one; NULL
    stays NULL."""
    leaks, unexpected = [], []
    for row in rows:
        i = row[0]
        for j, col in enumerate(COLUMNS, start=1):
            if i >= len(originals[col]):
                assert row[j] is None
                continue
            original, out = originals[col][i], row[j]
            if _same(out, original):
                leaks.append((col, original, out))
            if out != expected[col][i]:
                unexpected.append((col, original, out, expected[col][i]))
    return leaks, unexpected


@pytest.fixture
def pgdb(staging_pg16):
    with new_database(staging_pg16, "truncaddr") as name:
        yield staging_pg16, name


@pytest.mark.parametrize("engine", ["sql", "stream-translate", "stream-arrow-folding"])
def test_cut_addresses_are_never_the_original(pgdb, engine):
    """Trigger and UPDATE (and the stream engine, byte for byte): no original comes back, and every
    output is the cut output except where that was the original (then the next house number)."""
    pg, name = pgdb
    key = derive_key(SALT)
    with pg.connect(name) as conn:
        set_session_key(conn, key)
        originals, exact = _originals(conn)
        # the premise: without the guard, these originals (as written) came back, in 5 of the lengths
        assert len(exact) >= 9, exact
        assert len({col for col, _v in exact}) >= 5, exact
        rows = mask_every_way(
            conn,
            DDL,
            SPECS,
            _copy_text(originals),
            key,
            stream=engine != "sql",
            arrow_folding=engine == "stream-arrow-folding",
        )
        expected = _expected(conn, originals)
    leaks, unexpected = _check(rows, originals, expected)
    assert not leaks, f"{len(leaks)} originals kept, e.g. {leaks[:5]}"
    assert not unexpected, f"{len(unexpected)} unexpected outputs, e.g. {unexpected[:5]}"


def test_the_guard_is_only_on_cut_columns():
    """A column the whole output fits (text, varchar(19) and wider) keeps the expression it had, with no
    comparison; a column that cuts it compares the cut output with the original."""
    specs = {"a": {"transformer": "address"}}

    def text_of(info: ColumnInfo) -> str:
        return column_expressions(specs, {"a": info})["a"].as_string(None)

    unguarded = text_of(ColumnInfo("a", "text", "text"))
    assert "rtrim" not in unguarded
    for n in (19, 20, 70):
        assert text_of(ColumnInfo("a", f"character varying({n})", "varchar", max_length=n)) == unguarded
    for n in (5, 12, 18):
        guarded = text_of(ColumnInfo("a", f"character varying({n})", "varchar", max_length=n))
        assert guarded.startswith("""CASE WHEN ("a") = '' THEN ("a") ELSE CASE WHEN rtrim(lower(left(""")
        assert "(1 + (('x' ||" in guarded  # the next number
