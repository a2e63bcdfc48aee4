"""Cost of planning before the restore: ``build_inventory`` + ``plan_from_archive`` vs a bare
``pg_restore`` of the same archive (the bench dataset of benchmarks/datagen.py).

    PYTHONPATH=provider .venv/bin/python benchmarks/inventory_bench.py --scale 1 --jobs 2

An embedded PostgreSQL 16 is filled by ``datagen.generate(scale)``, dumped with ``pg_dump -Fc`` (as
benchmarks/run.py does), then: (1) inventory + plan with the bench rules, ``--repeat`` times;
(2) ``pg_restore -jN --no-owner --no-acl`` into a fresh database, ``--repeat`` times. Prints the
medians and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from datagen import generate  # noqa: E402

from scalingo_staging_sync.anonymize.rules import parse_rules_text  # noqa: E402
from scalingo_staging_sync.inventory import plan_from_archive  # noqa: E402
from scalingo_staging_sync.restore.pgtools import find_pg_tools  # noqa: E402
from scalingo_staging_sync.testing.postgres import start_embedded_postgres  # noqa: E402

RULES = """\
source_app: bench
anonymization_tables:
  - table: public.users
    strategy: user_anonymization
  - table: public.orders
    columns:
      shipping_address: address
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="sss-invbench-"))
    pg = start_embedded_postgres(16, base)
    try:
        pg.create_database("bench_prod")
        t0 = time.monotonic()
        counts = generate(pg.conninfo("bench_prod"), args.scale)
        print(f"datagen scale {args.scale}: {counts} ({time.monotonic() - t0:.1f} s)", flush=True)
        dump = pg.pg_dump("bench_prod", base / "bench.pgsql")
        print(f"archive: {dump.stat().st_size / 1e6:.1f} MB", flush=True)
        tools = find_pg_tools(pg.bin_dir)
        rules = parse_rules_text(RULES)
        plan_s, restore_s = [], []
        for i in range(args.repeat):
            t = time.monotonic()
            plan = plan_from_archive(dump, rules, tools=tools)
            plan_s.append(time.monotonic() - t)
            name = f"bench_bare_{i}"
            pg.create_database(name)
            cmd = [str(tools.path("pg_restore")), f"-j{args.jobs}", "--no-owner", "--no-acl",
                   "-d", pg.conninfo(name), str(dump)]  # fmt: skip
            t = time.monotonic()
            subprocess.run(cmd, check=True, capture_output=True)
            restore_s.append(time.monotonic() - t)
            pg.drop_database(name)
            print(
                f"run {i + 1}: inventory+plan {plan_s[-1]:.3f} s, pg_restore {restore_s[-1]:.1f} s",
                flush=True,
            )
        p, r = statistics.median(plan_s), statistics.median(restore_s)
        print(f"summary {plan.summary}; items {[i['table'] for i in plan.items]}")
        print(
            f"median inventory+plan {p:.3f} s; median bare pg_restore -j{args.jobs} {r:.1f} s; ratio {100 * p / r:.2f} %"
        )
    finally:
        pg.stop()


if __name__ == "__main__":
    main()
