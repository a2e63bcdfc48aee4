"""The backup task's download and extraction: one after the other, or the extraction reading the archive
as it downloads (``scalingo.archive.download_and_extract``, what ``ScalingoBackupOperator`` does since
2026-12-04), alternated on the same archive served by the fake Scalingo API over HTTP on 127.0.0.1.

    PYTHONPATH=provider .venv/bin/python benchmarks/download_extract_bench.py --dump <a pg_dump file> \\
        [--rounds 4] [--rate-mb-s 100] [--json out.json]

Without ``--dump`` a 200 MB dump-like file (half random bytes, half repeated text) is written. The local
server sends about 850 MB/s, far faster than a download from Scalingo; ``--rate-mb-s`` paces it like a
network (the extraction then hides inside the download).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

APP = "bench-prod"


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _dump_like(path: Path, size_mb: int) -> Path:
    line = b"1234\tsome text that repeats\t2026-12-04 10:00:00+00\t\\N\n" * 1024
    with open(path, "wb") as out:
        out.write(b"PGDMP\x01\x0e\x00")
        for i in range(size_mb):
            out.write(secrets.token_bytes(1 << 20) if i % 2 else line[: 1 << 20].ljust(1 << 20, b"x"))
    return path


def main(argv: list[str] | None = None) -> int:
    from scalingo_staging_sync.scalingo.archive import download_and_extract, extract_dump
    from scalingo_staging_sync.scalingo.client import ScalingoClient
    from scalingo_staging_sync.testing.fake_scalingo import FakeScalingoAPI

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dump", type=Path, help="the pg_dump file the backup archive wraps")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--rate-mb-s", type=float, default=None, help="the fake server sends at about this rate (a network)"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="sss-dl-extract-"))
    try:
        dump = args.dump or _dump_like(base / "dump.pgsql", 200)
        with FakeScalingoAPI(workdir=base / "fake", download_rate_mb_s=args.rate_mb_s) as fake:
            fake.add_app(APP)
            addon = fake.add_addon(APP, dump_path=dump, version="16.9.0-1")
            backup = fake.add_backup(APP, dump)
            client = ScalingoClient(
                fake.api_token, auth_url=fake.url, api_url=fake.url, db_api_url=fake.url, backoff_s=0.01
            )
            meta = client.latest_done_backup(APP, addon.id)
            archive = base / "dl" / "b.tar.gz"

            def sequential() -> None:
                client.download_backup(APP, addon.id, meta, archive)
                extract_dump(archive, base / "dl" / "x")

            def pipelined() -> None:
                download_and_extract(
                    lambda f: client.download_backup(APP, addon.id, meta, archive, follower=f),
                    archive,
                    base / "dl" / "x",
                )

            ways = {"sequential": sequential, "pipelined": pipelined}
            runs: dict[str, list[dict]] = {name: [] for name in ways}
            for i in range(args.rounds):
                order = list(ways) if i % 2 == 0 else list(reversed(ways))
                for name in order:
                    shutil.rmtree(base / "dl", ignore_errors=True)
                    os.sync()
                    cpu, started = _cpu_s(), time.monotonic()
                    ways[name]()
                    runs[name].append(
                        {"s": round(time.monotonic() - started, 3), "cpu_s": round(_cpu_s() - cpu, 3)}
                    )
                    print(f"round {i + 1} {name}: {runs[name][-1]}", flush=True)
            out = {
                "archive_bytes": backup.archive.stat().st_size,
                "dump_bytes": dump.stat().st_size,
                "rounds": args.rounds,
                "rate_mb_s": args.rate_mb_s,
                "runs": runs,
                "median_s": {name: statistics.median(r["s"] for r in rs) for name, rs in runs.items()},
                "median_cpu_s": {
                    name: statistics.median(r["cpu_s"] for r in rs) for name, rs in runs.items()
                },
            }
            client.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(json.dumps({k: out[k] for k in ("archive_bytes", "rate_mb_s", "median_s", "median_cpu_s")}))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
