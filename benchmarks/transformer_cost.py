"""CPU cost of one transformer's SQL expression per value, for several option sets side by side.

Each option set masks the same generated values in one ``SELECT count(DISTINCT ...)`` on an embedded
PostgreSQL, in rotating order, ``--repeat`` rounds; the report gives the median wall time per value
of each, the distinct outputs (a unique transformer keeps them all) and the ratio to the first set.

    PYTHONPATH=provider .venv/bin/python benchmarks/transformer_cost.py --transformer ip --type inet \\
        --values ipv4 --options '{}' '{"unique": true}'
    PYTHONPATH=provider .venv/bin/python benchmarks/transformer_cost.py --transformer hash --type text \\
        --values text --options '{"length": 15}' '{"encoding": "base64url", "length": 15}'
    PYTHONPATH=provider .venv/bin/python benchmarks/transformer_cost.py --transformer json --type jsonb \\
        --values document --options '{"paths": {"email": "email"}}'
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from psycopg import sql

from scalingo_staging_sync.anonymize import transformers as tr
from scalingo_staging_sync.testing.postgres import start_embedded_postgres

#: generated inputs: IPv4 addresses spread over the space, or distinct text values
VALUES = {
    "ipv4": "SELECT '0.0.0.0'::inet + g::bigint * 21473 AS v FROM generate_series(1, {n}) g",
    "text": "SELECT 'person-' || g || '@example.org' AS v FROM generate_series(1, {n}) g",
    # a JSON document (as text; cast to the --type column: text or jsonb) with one path to mask
    "document": (
        "SELECT json_build_object('email', 'person-' || g || '@example.org', 'theme', 'dark', 'n', g)::text AS v "
        "FROM generate_series(1, {n}) g"
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transformer", required=True)
    parser.add_argument("--type", default="text", help="the column's SQL type (inet, text, varchar(15)...)")
    parser.add_argument("--values", choices=sorted(VALUES), default="text")
    parser.add_argument(
        "--options", nargs="+", default=["{}"], help="JSON option sets, the first is the baseline"
    )
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--pg", type=int, default=16)
    args = parser.parse_args()

    base_type = args.type.split("(")[0].replace("character varying", "varchar")
    length = int(args.type.split("(")[1].rstrip(")")) if "(" in args.type else None
    column = tr.ColumnInfo("v", args.type, base_type, max_length=length)
    transformer = tr.get_transformer(args.transformer)
    option_sets = [json.loads(o) for o in args.options]
    pg = start_embedded_postgres(args.pg, Path(tempfile.mkdtemp(prefix="sss-transformer-cost-")))
    times: dict[int, list[float]] = {i: [] for i in range(len(option_sets))}
    distinct: dict[int, int] = {}
    try:
        with pg.connect("postgres") as conn:
            conn.execute("SET scalingo_staging_sync.key = 'transformer-cost-benchmark'")
            conn.execute(
                sql.SQL("CREATE TEMP TABLE t AS SELECT v::{} AS v FROM ({}) s").format(
                    sql.SQL(args.type), sql.SQL(VALUES[args.values].format(n=args.rows))
                )
            )
            queries = [
                sql.SQL("SELECT count(DISTINCT ({})::text) FROM t").format(
                    transformer.expression(sql.Identifier("v"), tr.BuildContext(column, options))
                )
                for options in option_sets
            ]
            conn.execute("SELECT count(*) FROM t").fetchone()  # warm the table
            for round_ in range(args.repeat):
                order = list(range(len(queries)))
                order = order[round_ % len(order) :] + order[: round_ % len(order)]
                for i in order:
                    started = time.perf_counter()
                    distinct[i] = conn.execute(queries[i]).fetchone()[0]
                    times[i].append(time.perf_counter() - started)
    finally:
        pg.stop()
    baseline = statistics.median(times[0])
    print(
        f"{args.transformer} on {args.type}, {args.rows} {args.values} values, median of {args.repeat} rounds"
    )
    for i, options in enumerate(option_sets):
        median = statistics.median(times[i])
        print(
            f"  {json.dumps(options):40} {median * 1e6 / args.rows:6.2f} µs/value  "
            f"x{median / baseline:4.2f}  distinct outputs {distinct[i]}"
        )


if __name__ == "__main__":
    main()
