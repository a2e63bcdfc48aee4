"""Where the data section's time goes: each table's load time and the machine's CPU use, second by
second, for one engine, on a ``benchmarks/datagen.py`` dump.

Pre-data is restored into a fresh database of one embedded PostgreSQL 16 server, the product's masking
triggers are installed as ``load_data`` installs them (the bench rules of ``benchmarks/engines.py``),
and the data section is loaded by ``restore.runner.run_pg_restore`` with ``-j N``: through the stream
engine (``--engine stream``), the same with ``translate()`` for its case folding, as without pyarrow
(``--engine stream_translate``), or the triggers (``--engine trigger``). ``--engines stream,trigger
--repeat 2`` alternates them. Without ``--dump``, the data is generated at ``--scale``; ``--distinct``
then makes its masked text columns as varied as a real table's (``engines.DISTINCT_SQL``).

    PYTHONPATH=provider:benchmarks .venv/bin/python benchmarks/load_profile.py --dump /path/to/dump.pgc \\
        --engines stream,trigger --repeat 2

The CPU figure is the whole machine's (``/proc/stat``): 100 % is every core busy. A table that loads
alone at the end shows as the share of the cores it keeps busy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import freeze_bench as fb  # noqa: E402

from scalingo_staging_sync.pgconn import PgTarget  # noqa: E402
from scalingo_staging_sync.restore.pgtools import find_pg_tools  # noqa: E402
from scalingo_staging_sync.restore.runner import run_pg_restore  # noqa: E402
from scalingo_staging_sync.testing.postgres import pg_bin_dir, start_embedded_postgres  # noqa: E402


def _cpu() -> tuple[int, int]:
    with open("/proc/stat") as f:
        values = list(map(int, f.readline().split()[1:]))
    return sum(values), values[3] + values[4]  # all, idle + iowait


class CpuSampler(threading.Thread):
    """The machine's busy share (%) each second, until stopped."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[int] = []
        self._halt = threading.Event()

    def run(self) -> None:
        total0, idle0 = _cpu()
        while not self._halt.wait(1.0):
            total, idle = _cpu()
            self.samples.append(round(100 * (1 - (idle - idle0) / max(1, total - total0))))
            total0, idle0 = total, idle

    def stop(self) -> list[int]:
        self._halt.set()
        self.join()
        return self.samples


def _worker_cpu() -> float:
    """CPU seconds of this process (the loader's threads: relays, DuckDB) so far."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def stream_chunk_mb() -> float:
    from scalingo_staging_sync.anonymize import stream

    return stream.CHUNK / (1 << 20)


def load_once(pg, dump: Path, engine: str, jobs: int, post_data: bool = False) -> dict:
    from scalingo_staging_sync.anonymize.stream import StreamMasking

    db = "load_profile"
    pg.create_database(db)  # drops the previous one
    target = PgTarget(host=pg.host, port=pg.port, user=pg.user, dbname=db)
    tools = find_pg_tools(pg_bin_dir(pg.version))
    run_pg_restore(dump, target, section="pre-data", jobs=jobs, tools=tools)
    into = fb._with_masking_triggers(target)
    pg.execute("CHECKPOINT")
    tables: dict[str, float] = {}

    def progress(loaded, done, total) -> None:
        tables[str(loaded.table)] = round(time.monotonic() - started, 2)

    from scalingo_staging_sync.restore import loader

    original = loader.load_table_data

    def with_progress(*args, **kwargs):
        kwargs["progress"] = progress
        return original(*args, **kwargs)

    from scalingo_staging_sync.anonymize import stream

    copy_filter = StreamMasking("trigger" if engine == "trigger" else "stream")
    sampler = CpuSampler()
    loader.load_table_data = with_progress
    arrow = stream.arrow_folding_available
    if engine == "stream_translate":
        stream.arrow_folding_available = lambda: False
    try:
        sampler.start()
        started = time.monotonic()
        worker_before = _worker_cpu()
        run_pg_restore(dump, into, section="data", jobs=jobs, tools=tools, copy_filter=copy_filter)
        seconds = round(time.monotonic() - started, 2)
        worker_cpu = round(_worker_cpu() - worker_before, 2)
    finally:
        loader.load_table_data = original
        stream.arrow_folding_available = arrow
        samples = sampler.stop()
    post: dict = {}
    if post_data:
        from freeze_bench import _drop_masking_triggers

        _drop_masking_triggers(target)
        sampler = CpuSampler()
        sampler.start()
        started = time.monotonic()
        try:
            run_pg_restore(dump, target, section="post-data", jobs=jobs, tools=tools)
        finally:
            samples_post = sampler.stop()
        post = {
            "post_data_s": round(time.monotonic() - started, 2),
            "post_data_cpu_busy_pct_per_s": samples_post,
            "post_data_cpu_busy_pct_mean": round(statistics.mean(samples_post), 1) if samples_post else None,
        }
    return post | {
        "engine": engine,
        "block_mb": stream_chunk_mb(),
        "data_s": seconds,
        "worker_cpu_s": worker_cpu,
        "table_done_at_s": tables,
        "masked": copy_filter.used,
        "cpu_busy_pct_per_s": samples,
        "cpu_busy_pct_mean": round(statistics.mean(samples), 1) if samples else None,
    }


def generated_dump(pg, scale: float, out: Path, *, distinct: bool = False) -> Path:
    """A ``pg_dump -Fc`` at ``out`` of ``benchmarks/datagen.py`` data at ``scale``, generated on ``pg``
    (``distinct``: masked text columns as varied as a real table's, ``engines.DISTINCT_SQL``)."""
    pg.create_database("prod")
    print(fb.generate(pg.conninfo("prod"), scale), flush=True)
    if distinct:
        from engines import DISTINCT_SQL

        with pg.connect("prod") as conn:
            for statement in DISTINCT_SQL.split(";\n"):
                if statement.strip():
                    conn.execute(statement)
    dump = pg.pg_dump("prod", out)
    pg.drop_database("prod")
    return dump


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dump", type=Path, help="a custom-format dump of benchmarks/datagen.py data")
    parser.add_argument("--scale", type=float, default=1.0, help="datagen scale when no --dump (default 1)")
    parser.add_argument("--engines", default="stream", help="comma-separated: stream, trigger")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--block-mb", type=int, default=None, help="the stream engine's block (default: the shipped CHUNK)"
    )
    parser.add_argument(
        "--post-data", action="store_true", help="also restore post-data after each load, timed and sampled"
    )
    parser.add_argument(
        "--distinct",
        action="store_true",
        help="without --dump: masked text columns as varied as a real table's",
    )
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args(argv)
    if args.distinct and args.dump:
        parser.error(
            "--distinct applies to the data this script generates, not to --dump: generate with "
            "--scale and --distinct, or make the dump's values varied yourself (engines.DISTINCT_SQL)"
        )
    from scalingo_staging_sync.anonymize import stream

    if args.block_mb:
        stream.CHUNK = args.block_mb << 20
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if not engines or set(engines) - {"stream", "stream_translate", "trigger"}:
        parser.error(f"--engines {args.engines!r}: choose among stream, stream_translate, trigger")
    base = Path(tempfile.mkdtemp(prefix="sss-load-profile-"))
    pg = start_embedded_postgres(16, base)
    dump = args.dump or generated_dump(pg, args.scale, base / "prod.pgc", distinct=args.distinct)
    runs = []
    for i in range(args.repeat):
        for engine in engines[i % len(engines) :] + engines[: i % len(engines)]:
            result = load_once(pg, dump, engine, args.jobs, post_data=args.post_data)
            runs.append(result)
            print(
                f"run {i + 1} {engine}: data {result['data_s']} s (worker CPU {result['worker_cpu_s']} s), "
                f"tables done at {result['table_done_at_s']}, "
                f"CPU busy {result['cpu_busy_pct_mean']} % (per s: {result['cpu_busy_pct_per_s']})"
                + (
                    f"; post-data {result['post_data_s']} s, CPU busy {result['post_data_cpu_busy_pct_mean']} % "
                    f"(per s: {result['post_data_cpu_busy_pct_per_s']})"
                    if "post_data_s" in result
                    else ""
                ),
                flush=True,
            )
    medians = {e: statistics.median(r["data_s"] for r in runs if r["engine"] == e) for e in engines}
    worker = {e: statistics.median(r["worker_cpu_s"] for r in runs if r["engine"] == e) for e in engines}
    summary = {
        "dump": str(dump),
        "jobs": args.jobs,
        "repeat": args.repeat,
        "data_s_median": medians,
        "worker_cpu_s_median": worker,
        "runs": runs,
    }
    print(json.dumps({"data_s_median": medians, "worker_cpu_s_median": worker}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
