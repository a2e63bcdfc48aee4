"""``finalize_masked_data``'s ANALYZE on one session or several (``analyze_masked(jobs=N)``), alternated,
on ``make bench``'s data loaded as the reference DAG loads it (the stream engine, then post-data).

    PYTHONPATH=provider:benchmarks .venv/bin/python benchmarks/analyze_bench.py --dump <a datagen dump> \\
        [--jobs 1,2] [--rounds 4] [--json out.json]

Without ``--dump`` the data is generated at ``--scale`` (default 1). Each round runs every ``--jobs``
value once, in rotating order; ANALYZE samples the same pages every time, so rounds compare.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from load_profile import generated_dump, load_once  # noqa: E402

from scalingo_staging_sync.anonymize.postload import analyze_masked  # noqa: E402
from scalingo_staging_sync.pgconn import PgTarget  # noqa: E402
from scalingo_staging_sync.testing.postgres import start_embedded_postgres  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dump", type=Path, help="a custom-format dump of benchmarks/datagen.py data")
    parser.add_argument("--scale", type=float, default=1.0, help="datagen scale when no --dump")
    parser.add_argument("--jobs", default="1,2", help="comma-separated session counts to compare")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    jobs = [int(j) for j in args.jobs.split(",") if j.strip()]
    base = Path(tempfile.mkdtemp(prefix="sss-analyze-"))
    pg = start_embedded_postgres(16, base)
    dump = args.dump or generated_dump(pg, args.scale, base / "prod.pgc")
    loaded = load_once(pg, dump, "stream", 2, post_data=True)
    print(f"loaded: data {loaded['data_s']} s, post-data {loaded['post_data_s']} s", flush=True)
    target = PgTarget(host=pg.host, port=pg.port, user=pg.user, dbname="load_profile")
    runs: dict[int, list[float]] = {j: [] for j in jobs}
    for i in range(args.rounds):
        for j in jobs[i % len(jobs) :] + jobs[: i % len(jobs)]:
            started = time.monotonic()
            analyze_masked(target, jobs=j)
            runs[j].append(round(time.monotonic() - started, 3))
            print(f"round {i + 1}, {j} session(s): {runs[j][-1]} s", flush=True)
    medians = {j: statistics.median(r) for j, r in runs.items()}
    print(json.dumps({"median_s": medians}))
    if args.json:
        args.json.write_text(
            json.dumps({"dump": str(dump), "runs": runs, "median_s": medians}, indent=1) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
