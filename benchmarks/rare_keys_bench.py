"""Time the PII scan's rare-key listing of one JSON column (``documents_with_flagged_keys``), for the
package found on ``sys.path`` (``PYTHONPATH`` on an export of a commit compares two commits):

    PYTHONPATH=provider .venv/bin/python benchmarks/rare_keys_bench.py --dsn postgresql:///supaprod \\
        auth audit_log_entries payload
"""

from __future__ import annotations

import argparse
import statistics
import time

import psycopg

from scalingo_staging_sync.pii.scanner import documents_with_flagged_keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("schema")
    parser.add_argument("table")
    parser.add_argument("column")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        times, docs = [], []
        for _ in range(args.repeat):
            start = time.perf_counter()
            docs = documents_with_flagged_keys(conn, args.schema, args.table, args.column, only=True)
            times.append(time.perf_counter() - start)
    print(
        f"{args.schema}.{args.table}.{args.column}: median {statistics.median(times) * 1000:.1f} ms per listing "
        f"({args.repeat} calls), {len(docs)} documents of flagged keys"
    )


if __name__ == "__main__":
    main()
