"""PII scan cost vs table size: a 100k-row and a 1M-row table, same columns (not a timed test).

    .venv/bin/python benchmarks/pii_scan_bench.py [--sample-rows 1000] [--repeat 3]

Starts an embedded PostgreSQL 16, generates both tables with generate_series (emails, phones, notes,
a jsonb payload), ANALYZEs them, then times ``scan_database`` on each (best of N) and prints the
times, the split between the sample query and the Python detectors, and the ratio 1M/100k (about 1
when sampling keeps the cost flat). For comparison it also times one full pass of the same email
regex in SQL (``count(*) WHERE col ~ ...``) over each table.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from scalingo_staging_sync.pii import scanner
from scalingo_staging_sync.pii.detectors import build_patterns
from scalingo_staging_sync.testing.postgres import start_embedded_postgres

GENERATE = """
DROP TABLE IF EXISTS {name};
CREATE TABLE {name} (
  id bigint PRIMARY KEY, contact text, phone varchar(32), note text, payload jsonb, amount numeric
);
INSERT INTO {name}
SELECT g, 'person' || g || '@mail.example.org', '+33 6 ' || lpad((g % 100000000)::text, 8, '0'),
       'order ' || g || ' shipped', jsonb_build_object('k', g, 'who', 'p' || g || '@example.net'), g * 1.5
FROM generate_series(1, {rows}) g;
ANALYZE {name};
"""


def timed_table(pg, db, table, sample_rows, repeat):
    """Best of ``repeat``: the per-table work of scan_database (one sample query + detectors)."""
    _, content = build_patterns()
    best = None
    for _ in range(repeat):
        with pg.connect(db) as conn:
            info = next(t for t in scanner.list_tables(conn, ["public"]) if t.name == table)
            columns = [c.name for c in info.columns if c.sampled]
            t0 = time.perf_counter()
            rows = scanner.sample_table(conn, info, columns, sample_rows, scanner.DEFAULT_MAX_VALUE_CHARS)
            t1 = time.perf_counter()
            scanner.count_content_matches(rows, len(columns), content)
            t2 = time.perf_counter()
        run = {"query_s": t1 - t0, "detect_s": t2 - t1, "rows": len(rows), "pages": info.pages}
        if best is None or run["query_s"] + run["detect_s"] < best["query_s"] + best["detect_s"]:
            best = run
    return best


def sql_full_regex(pg, db, table):
    from psycopg import sql

    query = sql.SQL("SELECT count(*) FROM {} WHERE contact ~* {}").format(
        sql.Identifier(table), sql.Literal(r"[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}")
    )
    t0 = time.perf_counter()
    with pg.connect(db) as conn:
        conn.execute(query).fetchall()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sample-rows", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    pg = start_embedded_postgres(16, tempfile.mkdtemp(prefix="sss-bench-"))
    try:
        db = "pii_bench"
        pg.create_database(db)
        for name, rows in (("t_100k", 100_000), ("t_1m", 1_000_000)):
            t0 = time.perf_counter()
            with pg.connect(db) as conn:
                conn.execute(GENERATE.format(name=name, rows=rows))
            print(f"generated {name}: {rows} rows in {time.perf_counter() - t0:.1f}s")
        results = {
            name: timed_table(pg, db, name, args.sample_rows, args.repeat) for name in ("t_100k", "t_1m")
        }
        for name, res in results.items():
            print(
                f"{name} ({res['pages']} pages): sample query {res['query_s'] * 1000:.1f} ms for {res['rows']} rows, "
                f"Python detectors {res['detect_s'] * 1000:.1f} ms; "
                f"for comparison one SQL email regex over the whole table: {sql_full_regex(pg, db, name) * 1000:.0f} ms"
            )
        small, big = results["t_100k"], results["t_1m"]
        cost_small, cost_big = small["query_s"] + small["detect_s"], big["query_s"] + big["detect_s"]
        print(
            f"per-table scan cost: 100k rows {cost_small * 1000:.1f} ms, 1M rows {cost_big * 1000:.1f} ms, "
            f"ratio 1M/100k = {cost_big / cost_small:.2f} (table size ratio 10)"
        )
        with pg.connect(db) as conn:
            t0 = time.perf_counter()
            report = scanner.scan_database(conn, database=db, sample_rows=args.sample_rows)
            total = time.perf_counter() - t0
        print(
            f"scan_database of both tables: {total * 1000:.1f} ms, {report.rows_sampled} rows sampled, "
            f"findings {[f.qualified_name for f in report.findings]}"
        )
    finally:
        pg.stop()


if __name__ == "__main__":
    main()
