"""Where the stream engine's CPU goes, column by column, on few values and on varied ones.

The stream engine masks a table's COPY text with one DuckDB query per block
(``anonymize.stream.StreamMasker``). This runs that query's shape on a file of COPY text shaped like the
bench's users table (email, first and last name, phone, address, birth date), with one masked column at
a time and with all six, and subtracts the same query passing every column through: CPU microseconds
per row for each transformer, in one process, side by side; each with the two forms of the ASCII-only
case folding the engine has (same text): ``translate``, and Arrow's ASCII kernels, which the engine
uses wherever pyarrow is installed (``anonymize.stream.register_arrow_folding``).

Two kinds of values:

* ``datagen``: ``benchmarks/datagen.py``'s own (10 first names, 10 last names, about 3,800 addresses):
  what ``make bench`` masks;
* ``varied``: as ``engines.py --distinct`` (400 first names, 8,000 last names, every address
  different, about half of the text with accented letters): closer to a real table.

Two diagnostics for ``address`` (not shipped; the first gives the shipped text, checked), with Arrow
folding:

* ``address, inline``: the keyed hash written out where it is used instead of the shipped
  ``LATERAL`` subquery (DuckDB then computes the repeated hash once per row, not once per distinct
  value);
* ``address, no case folding``: the same without the ASCII-only case folding of the value before its
  hash (different text: this only measures what the folding costs).

    PYTHONPATH=provider .venv/bin/python benchmarks/stream_columns.py --rows 500000 --repeat 3

What is measured: the process's CPU time (``getrusage``; DuckDB with ``threads=1``, as the engine runs)
of ``COPY (SELECT <select list> FROM read_csv(<block>)) TO <file>``, the engine's own reader and writer
options; best of ``--repeat`` rounds, minus the pass-through query's best, per row.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
from pathlib import Path

import duckdb

from scalingo_staging_sync.anonymize import stream as st
from scalingo_staging_sync.anonymize import transformers as tr
from scalingo_staging_sync.anonymize.transformers import ColumnInfo

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engines import TABLES  # noqa: E402

#: the bench rules' users table (``engines.TABLES``), in its columns' order
SPECS = TABLES["users"]
COLUMNS = list(SPECS)
CATALOG = {c: ColumnInfo(c, "text", "text") for c in COLUMNS} | {
    "birth_date": ColumnInfo("birth_date", "date", "date")
}

_SYLLABLES = (
    "['ka','lo','mi','ré','su','an','to','é','ber','nard','li','ne','za','ö','ph','ine','ça','ro','ma','ël']"
)


def _word(seed: str, n: int) -> str:
    """DuckDB: a capitalised word of ``n`` syllables drawn by ``seed`` (engines.py's DISTINCT_SQL)."""
    w = " || ".join(f"{_SYLLABLES}[1 + (hash({seed} * 31 + {k}) % 20)::BIGINT]" for k in range(1, n + 1))
    return f"(SELECT upper(left(w, 1)) || substr(w, 2) FROM (SELECT {w} AS w))"  # noqa: S608 (constants)


#: value kinds: DuckDB expressions of the row number ``g`` (1-based), in COLUMNS' order
KINDS = {
    "datagen": [
        "'user' || g || '@mail' || (g % 97) || '.example.org'",
        "['Alice','Bruno','Chloé','David','Emma','Farid','Gaëlle','Hugo','Inès','Jules'][1 + g % 10]",
        "['Martin','Bernard','Dubois','Thomas','Robert','Richard','Petit','Durand','Leroy','Moreau'][1 + (g // 10) % 10]",
        "'+33 6 ' || lpad((g % 100000000)::VARCHAR, 8, '0')",
        "(g % 200) || ' rue de la République, ' || lpad((g % 95 + 1)::VARCHAR, 2, '0') || '000 Ville'",
        "(DATE '1950-01-01' + (g % 20000)::INT)::VARCHAR",
    ],
    "varied": [
        "'user' || g || '@mail' || (g % 97) || '.example.org'",
        _word("(g % 400)", 2),
        _word("(100000 + hash(g) % 8000)", 3),
        "'+33 6 ' || lpad((hash(g) % 100000000)::VARCHAR, 8, '0')",
        f"(1 + g % 299) || ' ' || ['rue', 'avenue', 'Boulevard', 'Allée'][1 + g % 4] || ' ' || {_word('g', 3)} || ' ' || g",
        "(DATE '1950-01-01' + (hash(g) % 20000)::INT)::VARCHAR",
    ],
}


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _address_variants(arrow: bool = True) -> dict[str, str]:
    """The diagnostic forms of the address expression (column c4), as select lists."""
    b = st._Builder()
    c = st.unescape_sql("c4")

    def address(n: str, x: str) -> str:
        street = b.pick_ex(tr.STREETS, f"({x} >> 20)", f"split_part({n}, ' ', 2)")
        suffix = f"{st._arr(tr.STREET_SUFFIXES)}[1 + ({x} >> 40) % {len(tr.STREET_SUFFIXES)}]"
        return f"(1 + {x} % 999)::VARCHAR || ' ' || {street} || ' ' || {suffix}"

    norm = st._alower(f"trim({c}, ' ')", arrow)
    bare = f"trim({c}, ' ')"
    forms = {
        "address, inline": address(norm, f"({st._hash_int('address', norm)})"),
        "address, no case folding": address(bare, f"({st._hash_int('address', bare)})"),
    }
    return {
        label: ", ".join(f"{expr} AS c4" if i == 4 else f"c{i}" for i in range(len(COLUMNS)))
        for label, expr in forms.items()
    }


def measure(rows: int, repeat: int, workdir: str) -> dict:
    con = duckdb.connect()
    con.execute("SET threads = 1")
    con.execute("SET VARIABLE sss_key = 'bench-key'")
    st.register_arrow_folding(con)
    types = "{" + ", ".join(f"'c{i}': 'VARCHAR'" for i in range(len(COLUMNS))) + "}"
    out = os.path.join(workdir, "out.copy")
    result: dict = {"rows": rows, "repeat": rows and repeat, "kinds": {}}
    shipped_address = st.select_list({"address": SPECS["address"]}, CATALOG, COLUMNS, arrow_folding=True)
    for kind, exprs in KINDS.items():
        src = os.path.join(workdir, f"{kind}.copy")
        select = ", ".join(f"{e} AS c{i}" for i, e in enumerate(exprs))
        con.execute(
            f"COPY (SELECT {select} FROM range(1, {rows} + 1) r(g)) TO '{src}' "  # noqa: S608 (constants)
            "(FORMAT csv, delim '\t', quote '', escape '', header false)"
        )
        reader = (
            f"read_csv('{src}', delim='\t', quote='', escape='', header=false, nullstr='\\N', "
            f"auto_detect=false, columns={types})"
        )
        queries = {"pass-through": ", ".join(f"c{i}" for i in range(len(COLUMNS)))}
        for arrow, form in ((False, "translate"), (True, "arrow")):
            for col in COLUMNS:
                queries[f"{col} ({form})"] = st.select_list(
                    {col: SPECS[col]}, CATALOG, COLUMNS, arrow_folding=arrow
                )
            queries[f"all six ({form})"] = st.select_list(SPECS, CATALOG, COLUMNS, arrow_folding=arrow)
        queries |= _address_variants()
        best = {label: float("inf") for label in queries}
        for _ in range(repeat):
            for label, sel in queries.items():
                before = cpu()
                con.execute(
                    f"COPY (SELECT {sel} FROM {reader}) TO '{out}' "  # noqa: S608 (constants and temp paths)
                    "(FORMAT csv, delim '\t', quote '', escape '', header false, nullstr '\\N')"
                )
                best[label] = min(best[label], cpu() - before)
        base = best.pop("pass-through")
        distinct = con.execute(
            f"SELECT count(DISTINCT c1), count(DISTINCT c2), count(DISTINCT c4) FROM {reader}"  # noqa: S608
        ).fetchone()
        differ = con.execute(
            f"SELECT count(*) FROM (SELECT {shipped_address} FROM {reader}) a "  # noqa: S608
            f"POSITIONAL JOIN (SELECT {_address_variants()['address, inline']} FROM {reader}) b "
            "WHERE a.c4 IS DISTINCT FROM b.c4"
        ).fetchone()[0]
        result["kinds"][kind] = {
            "pass_through_us_per_row": round(base / rows * 1e6, 3),
            "extra_us_per_row": {k: round((v - base) / rows * 1e6, 3) for k, v in best.items()},
            "distinct": {"first_name": distinct[0], "last_name": distinct[1], "address": distinct[2]},
            "inline_address_rows_that_differ": differ,
            "translate_and_arrow_rows_that_differ": con.execute(
                f"SELECT count(*) FROM (SELECT {st.select_list(SPECS, CATALOG, COLUMNS)} FROM {reader}) a "  # noqa: S608
                f"POSITIONAL JOIN (SELECT {st.select_list(SPECS, CATALOG, COLUMNS, arrow_folding=True)} FROM {reader}) b "
                "WHERE " + " OR ".join(f"a.c{i} IS DISTINCT FROM b.c{i}" for i in range(len(COLUMNS)))
            ).fetchone()[0],
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sss-stream-columns-") as workdir:
        result = measure(args.rows, args.repeat, workdir)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    kinds = list(result["kinds"])
    print(f"CPU µs per row over a pass-through, {args.rows} rows, best of {args.repeat}")
    print(f"{'':28}" + "".join(f"{k:>12}" for k in kinds))
    print(
        f"{'(pass-through itself)':28}"
        + "".join(f"{result['kinds'][k]['pass_through_us_per_row']:>12.3f}" for k in kinds)
    )
    for label in result["kinds"][kinds[0]]["extra_us_per_row"]:
        print(
            f"{label:28}" + "".join(f"{result['kinds'][k]['extra_us_per_row'][label]:>12.3f}" for k in kinds)
        )
    for k in kinds:
        print(
            f"{k}: distinct values {result['kinds'][k]['distinct']}; "
            f"inline address rows that differ from the shipped form: {result['kinds'][k]['inline_address_rows_that_differ']}; "
            f"rows that differ between the two foldings: {result['kinds'][k]['translate_and_arrow_rows_that_differ']}"
        )


if __name__ == "__main__":
    main()
