"""Peak RSS of storing a dump on S3 and materializing it: a moto S3 server runs in a separate process
(moto keeps objects in memory, so only the uploader/downloader is measured), reached through an Airflow
``aws`` connection.

    PYTHONPATH=provider .venv/bin/python benchmarks/storage_memory.py --size-mb 200

The dump is random bytes behind a ``PGDMP`` magic. After a small warm-up transfer (imports, connection,
client pools) the peak RSS is read, then ``store_archive`` (multipart upload + read-back sha256 + rename)
and ``materialize`` (streamed download + sha256) run; the growth must stay flat whatever the size.
Not a timed test: the seconds are printed for information only.
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


def serve(bucket: str, conn_queue, stop_event) -> None:
    from scalingo_staging_sync.testing.s3 import MotoS3Server

    with MotoS3Server() as s3:
        conn_queue.put(s3.create_bucket(bucket))
        stop_event.wait()


def write_dump(path: Path, size: int) -> None:
    block = os.urandom(1024 * 1024)
    with open(path, "wb") as fh:
        fh.write(b"PGDMP")
        left = size - 5
        while left > 0:
            n = min(left, len(block))
            fh.write(block[:n])
            left -= n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=200)
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="sss-storage-bench-"))
    os.environ.setdefault("AIRFLOW_HOME", str(work / "airflow"))
    queue, stop = multiprocessing.Queue(), multiprocessing.Event()
    server = multiprocessing.Process(target=serve, args=("bench", queue, stop), daemon=True)
    server.start()
    os.environ["AIRFLOW_CONN_SSS_BENCH_S3"] = queue.get(timeout=60)

    from scalingo_staging_sync.storage import materialize, remove_stored, store_archive

    small, big = work / "warmup.pgsql", work / "bench.pgsql"
    write_dump(small, 9 * 1024 * 1024)
    write_dump(big, args.size_mb * 1024 * 1024)
    warm = store_archive(small, "s3://bench", conn_id="sss_bench_s3", run_key="warmup")
    materialize(warm, work / "cache")
    before = peak_rss_mb()

    start = time.monotonic()
    stored = store_archive(big, "s3://bench", conn_id="sss_bench_s3", run_key="bench")
    upload_s = time.monotonic() - start
    after_upload = peak_rss_mb()
    start = time.monotonic()
    path = materialize(stored, work / "cache")
    download_s = time.monotonic() - start
    after_download = peak_rss_mb()
    ok = path.stat().st_size == stored.size == big.stat().st_size
    remove_stored(stored)
    remove_stored(warm)

    result = {
        "size_bytes": stored.size,
        "peak_rss_before_mb": round(before, 1),
        "peak_rss_after_upload_mb": round(after_upload, 1),
        "peak_rss_after_materialize_mb": round(after_download, 1),
        "growth_mb": round(after_download - before, 1),
        "upload_s": round(upload_s, 1),
        "materialize_s": round(download_s, 1),
    }
    print(json.dumps(result))
    stop.set()
    server.join(10)
    for p in sorted(work.rglob("*"), reverse=True):
        p.unlink() if p.is_file() or p.is_symlink() else p.rmdir()
    work.rmdir()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
