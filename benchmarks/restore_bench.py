"""Restore benchmark: bare ``pg_restore -j N --no-owner --no-acl`` of an archive into an empty
database vs this provider's phased restore (pre-data, data, post-data into a scratch database,
with progress parsing, TOC filtering, checks and per-table row counts) of the same archive.

Runs alternate (bare, ours, ours, bare, ...) on one embedded PostgreSQL server, each repeated
``--repeats`` times; prints medians and the ratio ours / bare (target < 1.05).

    .venv/bin/python benchmarks/restore_bench.py --scale 0.3 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from datagen import generate  # noqa: E402

from scalingo_staging_sync.pgconn import PgTarget  # noqa: E402
from scalingo_staging_sync.restore import targets  # noqa: E402
from scalingo_staging_sync.restore.api import restore  # noqa: E402
from scalingo_staging_sync.restore.pgtools import find_pg_tools  # noqa: E402
from scalingo_staging_sync.testing.postgres import pg_bin_dir, start_embedded_postgres  # noqa: E402


def bare_restore(pg, dump: Path, jobs: int, dbname: str) -> float:
    pg.create_database(dbname)
    cmd = [
        str(pg.bin_dir / "pg_restore"),
        f"-j{jobs}",
        "--no-owner",
        "--no-acl",
        "-d",
        pg.conninfo(dbname),
        str(dump),
    ]
    started = time.monotonic()
    subprocess.run(cmd, check=True, capture_output=True)
    elapsed = time.monotonic() - started
    pg.drop_database(dbname)
    return elapsed


def our_restore(pg, dump: Path, jobs: int, dbname: str, count_rows: bool = True) -> float:
    target = PgTarget(host=pg.host, port=pg.port, user=pg.user, dbname=dbname)
    tools = find_pg_tools(pg_bin_dir(pg.version))
    started = time.monotonic()
    for section in ("pre-data", "data", "post-data"):
        restore(dump, target, section=section, mode="swap", jobs=jobs, tools=tools, count_rows=count_rows)
    elapsed = time.monotonic() - started
    targets.cleanup(target, "swap")
    return elapsed


def run(
    scale: float = 0.3, repeats: int = 2, jobs: int | None = None, version: int = 16, count_rows: bool = True
) -> dict:
    jobs = jobs or max(1, os.cpu_count() or 1)
    base = Path(tempfile.mkdtemp(prefix="sss-restore-bench-"))
    pg = start_embedded_postgres(version, base)
    try:
        pg.create_database("bench_prod")
        gen = generate(pg.conninfo("bench_prod"), scale)
        dump = pg.pg_dump("bench_prod", base / "bench.pgsql")
        pg.drop_database("bench_prod")
        bare_times: list[float] = []
        our_times: list[float] = []
        for i in range(repeats):
            order = ("bare", "ours") if i % 2 == 0 else ("ours", "bare")
            for kind in order:
                if kind == "bare":
                    bare_times.append(bare_restore(pg, dump, jobs, f"bench_bare_{i}"))
                else:
                    our_times.append(our_restore(pg, dump, jobs, "bench_staging", count_rows))
                print(
                    f"run {i + 1} {kind}: {(bare_times if kind == 'bare' else our_times)[-1]:.2f} s",
                    flush=True,
                )
        bare, ours = statistics.median(bare_times), statistics.median(our_times)
        return {
            "benchmark": "restore",
            "scale": scale,
            "rows": gen,
            "dump_bytes": dump.stat().st_size,
            "jobs": jobs,
            "pg_version": version,
            "repeats": repeats,
            "count_rows": count_rows,
            "bare_s": [round(t, 3) for t in bare_times],
            "ours_s": [round(t, 3) for t in our_times],
            "bare_median_s": round(bare, 3),
            "ours_median_s": round(ours, 3),
            "ratio": round(ours / bare, 3),
            "target_ratio": 1.05,
        }
    finally:
        pg.stop()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=0.3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--pg-version", type=int, default=16, choices=(16, 18))
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument("--no-count-rows", action="store_true", help="estimated row counts (no count(*))")
    args = parser.parse_args(argv)
    result = run(args.scale, args.repeats, args.jobs, args.pg_version, not args.no_count_rows)
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))
        print(
            f"restore: bare pg_restore {result['bare_median_s']:.2f} s, ours {result['ours_median_s']:.2f} s, "
            f"ratio {result['ratio']:.3f} (target < {result['target_ratio']})"
        )
    return result


if __name__ == "__main__":
    main()
