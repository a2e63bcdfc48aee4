"""ASCII-only case folding in the stream engine: DuckDB's ``translate`` against the shipped form.

The stream engine normalises a value before its keyed hash with ASCII-only case folding (A-Z only, as
the SQL expressions do, whatever the database's collation). DuckDB's ``translate`` does that exactly
but costs about as much as the keyed md5 and the word pick together; ``lower`` maps non-ASCII letters
too, so the shipped expression (``anonymize.stream._alower``) uses ``lower`` only where every
character is one byte, and elsewhere Arrow's ``ascii_lower`` kernel where pyarrow is installed
(``shipped with Arrow``), ``translate`` otherwise. This measures the three, side by side in one process,
on three kinds of values, and checks that they give the same text for every value.

    PYTHONPATH=provider .venv/bin/python benchmarks/casefold.py --rows 2000000 --repeat 5

What is measured: the process's CPU time (``getrusage``, DuckDB with ``threads=1``) of
``SELECT sum(hash(<expr>))`` over an in-memory table, minus the same query on the bare value, per
value; medians of ``--repeat`` rounds, the expressions alternating within each round.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics

import duckdb

from scalingo_staging_sync.anonymize.stream import _UP, _alower, register_arrow_folding

#: value kinds: a DuckDB expression of the row number ``i``
KINDS = {
    "ascii": "(i % 299) || ' Rue Lamarck ' || i",
    "non-ascii, lower case": "(i % 299) || ' rue de la République ' || i",
    "non-ascii, upper case": "'Élodie ' || (i % 299) || ' Allée ' || i",
}


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    con = duckdb.connect()
    con.execute("SET threads = 1")
    register_arrow_folding(con)
    exprs = {
        "bare value": "v",
        "translate": f"translate(v, '{_UP}', '{_UP.lower()}')",
        "shipped (_alower)": _alower("v"),
        "shipped with Arrow": _alower("v", arrow=True),
    }
    result: dict = {"rows": args.rows, "repeat": args.repeat, "duckdb": duckdb.__version__, "kinds": {}}
    for kind, make in KINDS.items():
        con.execute(f"CREATE OR REPLACE TABLE t AS SELECT {make} AS v FROM range({args.rows}) r(i)")  # noqa: S608
        check = (
            f"SELECT count(*) FROM t WHERE {exprs['translate']} IS DISTINCT FROM {exprs['shipped (_alower)']}"  # noqa: S608
            f" OR {exprs['translate']} IS DISTINCT FROM {exprs['shipped with Arrow']}"
        )
        differ = con.execute(check).fetchone()[0]
        times: dict[str, list[float]] = {name: [] for name in exprs}
        for _ in range(args.repeat):
            for name, expr in exprs.items():
                started = cpu()
                con.execute(f"SELECT sum(hash({expr})) FROM t").fetchone()  # noqa: S608
                times[name].append(cpu() - started)
        bare = statistics.median(times["bare value"])
        result["kinds"][kind] = {
            "values_that_differ": differ,
            "us_per_value": {
                name: round((statistics.median(t) - bare) / args.rows * 1e6, 3)
                for name, t in times.items()
                if name != "bare value"
            },
        }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"ASCII-only case folding, DuckDB {result['duckdb']}, {args.rows} values, medians of {args.repeat}"
        )
        for kind, r in result["kinds"].items():
            cells = ", ".join(f"{name} {us:.3f} µs" for name, us in r["us_per_value"].items())
            print(f"  {kind:24s} {cells}; values that differ: {r['values_that_differ']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
