"""Residual-value verification of one large table: with a primary key (keys found through its index) and
without one (keyed by unmasked columns, no index: one join, one scan of the table).

    PYTHONPATH=provider .venv/bin/python benchmarks/verify_bench.py --rows 1000000 --repeat 3

A table of ``--rows`` rows on an embedded PostgreSQL 16, 200 sampled keys (the proof's usual size), the
masked column changed and analyzed; the wall time of ``verification.verify_residuals``, medians.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from scalingo_staging_sync.fingerprint import ALGORITHM, fingerprint
from scalingo_staging_sync.pgconn import PgTarget
from scalingo_staging_sync.testing.postgres import start_embedded_postgres
from scalingo_staging_sync.verification import verify_residuals

SALT = "verify-bench-salt-0123456789abcdef"
TABLES = {
    "primary key": (
        "CREATE TABLE t (id bigint PRIMARY KEY, at timestamptz, actor text, email text)",
        ["id"],
    ),
    "no primary key": ("CREATE TABLE t (id bigint, at timestamptz, actor text, email text)", ["at", "actor"]),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    pg = start_embedded_postgres(16, Path(tempfile.mkdtemp(prefix="sss-verify-bench-")))
    for label, (ddl, key_columns) in TABLES.items():
        pg.create_database("v", drop=True)
        fill = (
            "INSERT INTO t SELECT g, timestamptz '2024-01-01' + g * interval '1 second', 'actor' || (g %% 1000), "
            "'u' || g || '@x.test' FROM generate_series(1, %s) g"
        )
        pg.execute(ddl, "v")
        pg.execute(fill, "v", params=(args.rows,))
        select = ", ".join(f"{c}::text" for c in key_columns)
        sample = pg.execute(f"SELECT {select}, email FROM t TABLESAMPLE SYSTEM (1) LIMIT 200", "v")  # noqa: S608
        n = len(key_columns)
        proof = {
            "algorithm": ALGORITHM,
            "key_columns": key_columns,
            "rows": [{"key": list(r[:n]), "values": {"email": fingerprint(SALT, r[n])}} for r in sample],
        }
        pg.execute("UPDATE t SET email = md5(email); ANALYZE t", "v")
        target = PgTarget(host=pg.host, port=pg.port, user=pg.user, dbname="v")
        result = {
            "table": "public.t",
            "mode": "on_load",
            "rows": args.rows,
            "masked_columns": ["email"],
            "proof": proof,
        }
        times = []
        for _ in range(args.repeat):
            started = time.monotonic()
            report = verify_residuals(target, [result], SALT)
            times.append(time.monotonic() - started)
            assert report["tables"][0]["keys_found"] == len(sample)
        print(
            f"{label}: {args.rows} rows, {len(sample)} keys: verification {statistics.median(times):.3f} s (median of {args.repeat})"
        )
        pg.drop_database("v")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
