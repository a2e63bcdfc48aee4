"""The data section with and without ``COPY ... FREEZE``, and what it changes for post-data.

Three ways to load the same archive, each as ``pre-data``, ``data``, ``post-data`` with
``restore.runner.run_pg_restore`` into a fresh database of one embedded PostgreSQL 16 server, with
``-j N``; the order rotates between repeats and a CHECKPOINT precedes each run:

* ``pg_restore``: the data section by ``pg_restore --section=data`` (``freeze=False``: what the
  product did before ``restore.loader``);
* ``freeze``: the data section by ``restore.loader`` (``COPY ... FREEZE`` in the transaction that
  truncates each table; the default);
* ``bare``: a bare ``pg_restore -jN --no-owner --no-acl`` of the whole archive (the end-to-end
  benchmark's baseline A), for scale.

Wall seconds per phase, medians, and the ratios to ``bare``. ``--mask`` installs the product's
masking triggers (``anonymize.sql.trigger_statements``, the bench rules of ``benchmarks/engines.py``:
users with 6 masked columns, orders with one) after pre-data, with the key in the sessions, as
``load_data`` does; without it, this isolates how rows are stored.

    PYTHONPATH=provider .venv/bin/python benchmarks/freeze_bench.py --scale 3 --repeat 2
    PYTHONPATH=provider .venv/bin/python benchmarks/freeze_bench.py --dump /path/to/dump.pgc --repeat 3 --mask
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from datagen import generate  # noqa: E402

from scalingo_staging_sync.pgconn import PgTarget  # noqa: E402
from scalingo_staging_sync.restore.pgtools import find_pg_tools  # noqa: E402
from scalingo_staging_sync.restore.runner import run_pg_restore  # noqa: E402
from scalingo_staging_sync.testing.postgres import pg_bin_dir, start_embedded_postgres  # noqa: E402

VARIANTS = ("pg_restore", "freeze", "bare")
#: also measurable: ``relay``, the loader without FREEZE (what its pass through the worker costs alone),
#: and ``stream``: the loader with the stream masking engine (DuckDB on the worker; masking on, whatever
#: ``--mask`` says)
ALL_VARIANTS = (*VARIANTS, "relay", "stream")


def _with_masking_triggers(target: PgTarget) -> PgTarget:
    """The product's masking triggers on users and orders; ``target`` with the masking key in its
    sessions' options (pg_restore reads them from PGOPTIONS, the loader from the connection)."""
    from dataclasses import replace

    from engines import SALT, TABLES
    from psycopg import sql

    from scalingo_staging_sync.anonymize.planner import read_table
    from scalingo_staging_sync.anonymize.salt import derive_key, key_settings
    from scalingo_staging_sync.anonymize.sql import trigger_function_name, trigger_statements
    from scalingo_staging_sync.anonymize.stream import spec_comment

    with target.connect() as conn:
        for table, specs in TABLES.items():
            columns = read_table(conn, "public", table).columns
            create_fn, create_trigger, _ = trigger_statements("public", table, specs, columns, conn)
            conn.execute(create_fn)
            conn.execute(create_trigger)
            # as the product installs it: the specs the stream engine reads
            name = sql.Identifier("public", trigger_function_name("public", table))
            conn.execute(
                sql.SQL("COMMENT ON FUNCTION {}() IS {}").format(name, sql.Literal(spec_comment(specs)))
            )
    options = " ".join(f"-c {k}={v}" for k, v in key_settings(derive_key(SALT)).items())
    return replace(target, options={**target.options, "options": options})


def _drop_masking_triggers(target: PgTarget) -> None:
    from engines import TABLES

    from scalingo_staging_sync.anonymize.planner import read_table
    from scalingo_staging_sync.anonymize.sql import trigger_statements

    with target.connect() as conn:
        for table, specs in TABLES.items():
            columns = read_table(conn, "public", table).columns
            conn.execute(trigger_statements("public", table, specs, columns, conn)[2])


def run_variant(pg, dump: Path, variant: str, jobs: int, mask: bool = False) -> dict[str, float]:
    db = "freeze_bench"
    pg.create_database(db)  # drops the previous one
    pg.execute("CHECKPOINT")
    if variant == "bare":
        started = time.monotonic()
        subprocess.run(
            [
                str(pg.bin_dir / "pg_restore"),
                f"-j{jobs}",
                "--no-owner",
                "--no-acl",
                "-d",
                pg.conninfo(db),
                str(dump),
            ],
            check=True,
            capture_output=True,
        )
        return {"total": round(time.monotonic() - started, 2)}
    target = PgTarget(host=pg.host, port=pg.port, user=pg.user, dbname=db)
    tools = find_pg_tools(pg_bin_dir(pg.version))
    phases: dict[str, float] = {}
    mask = mask or variant == "stream"
    for section in ("pre-data", "data", "post-data"):
        started = time.monotonic()
        into = target
        if section == "data" and mask:
            into = _with_masking_triggers(target)
        if variant == "relay" and section == "data":
            import functools

            from scalingo_staging_sync.restore import loader

            original = loader.load_table_data
            loader.load_table_data = functools.partial(original, freeze=False)
            try:
                run_pg_restore(dump, into, section=section, jobs=jobs, tools=tools, freeze=True)
            finally:
                loader.load_table_data = original
        else:
            copy_filter = None
            if variant == "stream" and section == "data":
                from scalingo_staging_sync.anonymize.stream import StreamMasking

                copy_filter = StreamMasking("stream")
            run_pg_restore(
                dump, into, section=section, jobs=jobs, tools=tools, freeze=variant != "pg_restore",
                copy_filter=copy_filter,
            )  # fmt: skip
            if copy_filter is not None and set(copy_filter.used.values()) != {"stream"}:
                raise SystemExit(f"the stream engine did not mask every table: {copy_filter.used}")
        phases[section] = round(time.monotonic() - started, 2)
        if section == "data" and mask:
            _drop_masking_triggers(target)
    phases["total"] = round(sum(phases.values()), 2)
    return phases


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=1.0, help="datagen scale when no --dump (default 1)")
    parser.add_argument(
        "--dump", type=Path, help="an existing custom-format dump of benchmarks/datagen.py data"
    )
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the result here")
    parser.add_argument(
        "--mask", action="store_true", help="masking triggers on users and orders (bench rules)"
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated, among {', '.join(ALL_VARIANTS)} (default: {','.join(VARIANTS)}; bare is always run)",
    )
    args = parser.parse_args(argv)
    variants = tuple(dict.fromkeys([*(v.strip() for v in args.variants.split(",") if v.strip()), "bare"]))
    unknown = [v for v in variants if v not in ALL_VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}: choose among {', '.join(ALL_VARIANTS)}")
    base = Path(tempfile.mkdtemp(prefix="sss-freeze-bench-"))
    pg = start_embedded_postgres(16, base)
    try:
        dump = args.dump
        if dump is None:
            pg.create_database("prod")
            print(f"generating the dataset at scale {args.scale}...", flush=True)
            print(generate(pg.conninfo("prod"), args.scale), flush=True)
            dump = pg.pg_dump("prod", base / "prod.pgc")
            pg.drop_database("prod")
        runs: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
        for i in range(args.repeat):
            order = variants[i % len(variants) :] + variants[: i % len(variants)]
            for variant in order:
                result = run_variant(pg, dump, variant, args.jobs, mask=args.mask)
                runs[variant].append(result)
                print(f"run {i + 1} {variant}: {result}", flush=True)
        medians = {v: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for v, rs in runs.items()}
        bare = medians["bare"]["total"]
        summary = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "dump": str(dump),
            "dump_bytes": dump.stat().st_size,
            "jobs": args.jobs,
            "mask": args.mask,
            "repeat": args.repeat,
            "runs": runs,
            "medians": medians,
            "ratio_to_bare": {v: round(m["total"] / bare, 3) for v, m in medians.items()},
        }
        print(json.dumps({k: summary[k] for k in ("medians", "ratio_to_bare")}, indent=1))
        if args.json:
            args.json.write_text(json.dumps(summary, indent=1) + "\n")
    finally:
        pg.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
