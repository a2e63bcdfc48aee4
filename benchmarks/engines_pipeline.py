"""Engines (a) and (c) as a table load really runs: from the archive, CPU of every process involved.

``benchmarks/engines.py`` prices the masking alone (COPY text fed from memory). This one loads each masked
table of the bench data from a ``pg_dump -Fc`` archive, the way the DAG does, and counts **all** the CPU:

* ``none``: ``pg_restore -a -t <table> -d <db>`` into the table without trigger;
* ``trigger`` (a): the same through the masking trigger (the key in ``PGOPTIONS``, as the executor);
* ``stream`` (c): ``pg_restore -a -t <table> -f <fifo>`` -> DuckDB (``read_csv`` of the FIFO, the shipped
  engine's masking expressions, ``anonymize.stream.StreamMasker.select``, ``COPY TO`` a second FIFO) ->
  the worker copies that into the table with psycopg's ``COPY FROM STDIN`` (no trigger: the database
  never receives an unmasked row). One query for the whole table (the shipped engine runs one per
  64 MB block, on a thread).

CPU = ``pg_restore`` (``RUSAGE_CHILDREN``) + this process (``RUSAGE_SELF``: DuckDB with ``threads=1`` and the
COPY relay) + the server (postmaster's own and reaped children's time, plus its live children's time, from
``/proc``). Rounds alternate the engine order; medians. DuckDB is a dev dependency.

    PYTHONPATH=provider:benchmarks .venv/bin/python benchmarks/engines_pipeline.py --scale 0.3 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from datagen import generate  # noqa: E402
from engines import SALT, TABLES, rotate  # noqa: E402
from psycopg import sql  # noqa: E402

from scalingo_staging_sync.anonymize.planner import read_table  # noqa: E402
from scalingo_staging_sync.anonymize.salt import derive_key, key_settings  # noqa: E402
from scalingo_staging_sync.anonymize.sql import trigger_statements  # noqa: E402
from scalingo_staging_sync.testing.postgres import start_embedded_postgres  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def server_cpu(postmaster: int) -> float:
    """CPU seconds of the server: the postmaster, its reaped children, and its live children."""
    f = _stat(postmaster)
    total = sum(int(x) for x in f[11:15])  # utime stime cutime cstime
    for child in Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split():
        try:
            c = _stat(int(child))
        except FileNotFoundError:
            continue
        total += int(c[11]) + int(c[12])
    return total / CLK_TCK


def own_cpu() -> tuple[float, float]:
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime, c.ru_utime + c.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=0.3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--engines", default="none,trigger,stream", help="of none,trigger,stream (none first)"
    )
    args = parser.parse_args()
    from scalingo_staging_sync.anonymize.stream import StreamMasker
    from scalingo_staging_sync.tablename import TableName

    base = Path(tempfile.mkdtemp(prefix="sss-pipeline-"))
    pg = start_embedded_postgres(16, base)
    key = derive_key(SALT)
    settings = key_settings(key)
    env = dict(os.environ, PGOPTIONS=" ".join(f"-c {k}={v}" for k, v in settings.items()))
    restore = str(pg.bin_dir / "pg_restore")
    report: dict = {"scale": args.scale, "repeat": args.repeat, "tables": {}}
    try:
        pg.create_database("prod")
        report["datagen"] = generate(pg.conninfo("prod"), args.scale)
        dump = pg.pg_dump("prod", base / "prod.dump")
        pg.create_database("stage")
        conn = pg.connect("stage")
        postmaster = int(_stat(conn.info.backend_pid)[1])
        # the tables as pre-data leaves them: no index, no constraint yet
        subprocess.run([restore, "--section=pre-data", "-d", pg.conninfo("stage"), str(dump)], check=True)
        for table, specs in TABLES.items():
            cat = read_table(conn, "public", table)
            columns = list(cat.columns)
            create_fn, create_trigger, drop = trigger_statements("public", table, specs, cat.columns, conn)
            samples: dict[str, list[float]] = {e: [] for e in args.engines.split(",")}
            parts: dict[str, list[dict]] = {e: [] for e in samples}
            for i in range(args.repeat):
                for engine in rotate(list(samples), i):
                    conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(table)))
                    conn.execute(drop)
                    if engine == "trigger":
                        conn.execute(create_fn)
                        conn.execute(create_trigger)
                    conn.execute("CHECKPOINT")
                    srv0, (self0, kids0) = server_cpu(postmaster), own_cpu()
                    if engine in ("none", "trigger"):
                        subprocess.run(
                            [restore, "-a", "-t", table, "-d", pg.conninfo("stage"), str(dump)],
                            env=env,
                            check=True,
                        )
                    else:
                        masker = StreamMasker(TableName("public", table), specs, cat.columns, columns, key)
                        types = "{" + ", ".join(f"'c{i}': 'VARCHAR'" for i in range(len(columns))) + "}"
                        fifo_dir = Path(tempfile.mkdtemp(dir=base))
                        src, dst = fifo_dir / "in", fifo_dir / "out"
                        os.mkfifo(src)
                        os.mkfifo(dst)
                        proc = subprocess.Popen([restore, "-a", "-t", table, "-f", str(src), str(dump)])
                        # pg_restore -f writes SQL around the COPY block; DuckDB needs the COPY rows only
                        rows_fifo = fifo_dir / "rows"
                        os.mkfifo(rows_fifo)

                        def strip(src=src, rows_fifo=rows_fifo) -> None:
                            with open(src, "rb") as f, open(rows_fifo, "wb") as out:
                                in_copy = False
                                for line in f:
                                    if not in_copy:
                                        in_copy = line.startswith(b"COPY ")
                                        continue
                                    if line == b"\\.\n":
                                        in_copy = False
                                        continue
                                    out.write(line)

                        def load(dst=dst, table=table) -> None:
                            with (
                                pg.connect("stage") as c2,
                                c2.cursor().copy(
                                    sql.SQL("COPY {} FROM STDIN").format(sql.Identifier(table))
                                ) as cp,
                                open(dst, "rb") as f,
                            ):
                                while chunk := f.read(1 << 20):
                                    cp.write(chunk)

                        threads = [threading.Thread(target=strip), threading.Thread(target=load)]
                        for t in threads:
                            t.start()
                        masker.con.execute(
                            f"COPY (SELECT {masker.select} FROM read_csv('{rows_fifo}', delim='\t', quote='', "  # noqa: S608 (DuckDB text of constants)
                            f"escape='', header=false, all_varchar=true, nullstr='\\N', auto_detect=false, "
                            f"columns={types})) TO '{dst}' (FORMAT csv, delim '\t', quote '', escape '', "
                            "header false, nullstr '\\N')"
                        )
                        for t in threads:
                            t.join()
                        proc.wait()
                        masker.close()
                    srv1, (self1, kids1) = server_cpu(postmaster), own_cpu()
                    part = {"server": srv1 - srv0, "worker": self1 - self0, "pg_restore": kids1 - kids0}
                    parts[engine].append(part)
                    samples[engine].append(sum(part.values()))
            rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[
                0
            ]
            base_cpu = statistics.median(samples["none"])
            report["tables"][table] = {
                e: {
                    "cpu_s_median": round(statistics.median(v), 3),
                    "cpu_us_per_row": round(statistics.median(v) / rows * 1e6, 2),
                    "ratio_vs_none": round(statistics.median(v) / base_cpu, 2),
                    "parts_median": {
                        k: round(statistics.median(p[k] for p in parts[e]), 3)
                        for k in ("server", "worker", "pg_restore")
                    },
                }
                for e, v in samples.items()
            } | {"rows": rows}
        conn.close()
    finally:
        pg.stop()
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
