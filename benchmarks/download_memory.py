"""Peak RSS of a backup download: serve a large archive through the fake Scalingo API (in a separate
process, so only the downloader is measured) and download it with ScalingoHook / ScalingoClient.

    .venv/bin/python benchmarks/download_memory.py --size-mb 1024

The archive is a sparse file (gzip magic + holes) of the requested size; the download streams it to
disk in 1 MiB chunks with sha256, so the peak RSS must stay flat whatever the size.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from pathlib import Path


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def serve(archive: str, conn_queue, stop_event) -> None:
    from scalingo_staging_sync.testing.fake_scalingo import FakeScalingoAPI

    with FakeScalingoAPI() as fake:
        fake.add_addon("bench-app")
        backup = fake.add_backup("bench-app", archive=archive)
        conn_queue.put((fake.airflow_conn_json(), backup.id))
        stop_event.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=1024)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="sss-bench-"))
    archive = work / "20260101010000_bench_app_4553.tar.gz"
    with open(archive, "wb") as fh:
        fh.write(b"\x1f\x8b\x08\x00" + os.urandom(4 * 1024 * 1024))  # gzip magic + random head
        fh.truncate(args.size_mb * 1024 * 1024)  # sparse tail
    queue, stop = multiprocessing.Queue(), multiprocessing.Event()
    server = multiprocessing.Process(target=serve, args=(str(archive), queue, stop), daemon=True)
    server.start()
    conn_json, backup_id = queue.get(timeout=30)
    os.environ["AIRFLOW_CONN_SCALINGO_DEFAULT"] = conn_json

    from scalingo_staging_sync.hooks.scalingo import ScalingoHook

    hook = ScalingoHook()
    addon = hook.get_postgresql_addon("bench-app")
    backup = hook.get_backup("bench-app", addon["id"], backup_id)
    before = peak_rss_mb()
    print(f"peak RSS before download: {before:.1f} MB")
    start = time.monotonic()
    result = hook.download_backup("bench-app", addon["id"], backup, work / "dl" / archive.name)
    elapsed = time.monotonic() - start
    after = peak_rss_mb()
    print(
        f"downloaded {result.size / 1e6:.0f} MB in {elapsed:.1f} s ({result.size / 1e6 / elapsed:.0f} MB/s), sha256 {result.sha256[:16]}..."
    )
    print(f"peak RSS after download:  {after:.1f} MB (growth {after - before:.1f} MB)")
    print(
        json.dumps(
            {
                "size_bytes": result.size,
                "peak_rss_before_mb": round(before, 1),
                "peak_rss_after_mb": round(after, 1),
                "seconds": round(elapsed, 1),
            }
        )
    )
    stop.set()
    server.join(10)
    for p in sorted(work.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    work.rmdir()
    return 0 if result.size == args.size_mb * 1024 * 1024 else 1


if __name__ == "__main__":
    sys.exit(main())
