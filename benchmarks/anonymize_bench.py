"""Anonymization benchmark: on-load masking (BEFORE INSERT trigger during each table's COPY) vs in-place
UPDATE after the data section, on generated data (benchmarks/datagen.py), both before post-data.

For each masked table it reports: the bare load time of its data (no masking), the on-load time (load
with the masking trigger), the in-place UPDATE time, and rows/s of the masking phase. It also times
whole pipelines (pre-data + data + masking + post-data) and a 2-way ctid-range split of the in-place
UPDATE of the largest table (experiment: is splitting a big table faster on this machine?).

    .venv/bin/python benchmarks/anonymize_bench.py --scale 0.2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from datagen import generate  # noqa: E402
from psycopg import sql  # noqa: E402

from scalingo_staging_sync.anonymize.executor import RetryPolicy, run_table_plan  # noqa: E402
from scalingo_staging_sync.anonymize.planner import plan_anonymization  # noqa: E402
from scalingo_staging_sync.anonymize.rules import parse_rules_text  # noqa: E402
from scalingo_staging_sync.anonymize.salt import derive_key  # noqa: E402
from scalingo_staging_sync.anonymize.sql import column_expressions, update_statement  # noqa: E402
from scalingo_staging_sync.anonymize.transformers import KEY_GUC  # noqa: E402
from scalingo_staging_sync.pgconn import PgTarget  # noqa: E402
from scalingo_staging_sync.restore.pgtools import find_pg_tools  # noqa: E402
from scalingo_staging_sync.restore.runner import run_pg_restore  # noqa: E402
from scalingo_staging_sync.testing.postgres import start_embedded_postgres  # noqa: E402

SALT = "benchmark-salt-0123456789abcdef"
RULES = """
source_app: bench
anonymization_tables:
  - table: users
    columns: {email: email, first_name: first_name, last_name: last_name, phone: phone,
              address: address, birth_date: date_shift}
  - table: orders
    columns: {shipping_address: address}
"""
MASKED = ["public.users", "public.orders"]
RETRY = RetryPolicy(attempts=1)


def timed(func, *args, **kwargs):
    started = time.monotonic()
    out = func(*args, **kwargs)
    return time.monotonic() - started, out


def fresh(pg, name: str) -> PgTarget:
    pg.create_database(name)
    return PgTarget(host=pg.host, port=pg.port, user=pg.user, dbname=name)


def count(target: PgTarget, table: str) -> int:
    with target.connect() as conn:
        schema, name = table.split(".")
        return conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, name))
        ).fetchone()[0]


def run(scale: float, jobs: int) -> dict:
    base = Path(tempfile.mkdtemp(prefix="sss-anon-bench-"))
    pg = start_embedded_postgres(16, base)
    tools = find_pg_tools(pg.bin_dir)
    rules = parse_rules_text(RULES)
    report: dict = {"scale": scale, "jobs": jobs, "tables": {}, "pipelines": {}}
    try:
        pg.create_database("prod")
        report["datagen"] = generate(pg.conninfo("prod"), scale)
        dump = pg.pg_dump("prod", base / "prod.dump")

        # 1. bare pipeline: pre-data, data -jN, post-data (no masking)
        t = fresh(pg, "bare")
        total = 0.0
        for section in ("pre-data", "data", "post-data"):
            d, _ = timed(run_pg_restore, dump, t, section=section, jobs=jobs, tools=tools)
            total += d
        report["pipelines"]["bare_restore_s"] = round(total, 2)

        # 2. per-table bare load (data of one table, no trigger) for reference
        t = fresh(pg, "loads")
        run_pg_restore(dump, t, section="pre-data", tools=tools)
        for table in MASKED:
            d, _ = timed(run_pg_restore, dump, t, section="data", only_data=[table], jobs=1, tools=tools)
            report["tables"][table] = {"rows": count(t, table), "bare_load_s": round(d, 2)}

        # 3. on-load pipeline: masked tables through the trigger (2 in parallel, like mapped tasks),
        #    other tables' data with -jN in parallel with them, then post-data
        t = fresh(pg, "onload")
        started = time.monotonic()
        run_pg_restore(dump, t, section="pre-data", tools=tools)
        items = plan_anonymization(t, rules, dump_path=str(dump), tools=tools)
        results: dict = {}

        def one(item):
            results[item["table"]] = run_table_plan(
                item, t, SALT, dump_path=str(dump), tools=tools, retry=RETRY
            )

        threads = [threading.Thread(target=one, args=(i,)) for i in items]
        for th in threads:
            th.start()
        run_pg_restore(dump, t, section="data", exclude_data=MASKED, jobs=max(1, jobs - 1), tools=tools)
        for th in threads:
            th.join()
        run_pg_restore(dump, t, section="post-data", jobs=jobs, tools=tools)
        report["pipelines"]["on_load_s"] = round(time.monotonic() - started, 2)
        for table, res in results.items():
            report["tables"][table]["on_load_s"] = res["duration_s"]
        # on-load alone, one table at a time (phase time per table without contention)
        t = fresh(pg, "onload_alone")
        run_pg_restore(dump, t, section="pre-data", tools=tools)
        for item in items:
            r = run_table_plan(item, t, SALT, dump_path=str(dump), tools=tools, retry=RETRY)
            report["tables"][item["table"]]["on_load_alone_s"] = r["duration_s"]

        # 4. in-place pipeline: pre-data, data -jN, UPDATE per table (2 in parallel), post-data
        t = fresh(pg, "inplace")
        started = time.monotonic()
        run_pg_restore(dump, t, section="pre-data", tools=tools)
        run_pg_restore(dump, t, section="data", jobs=jobs, tools=tools)
        items = plan_anonymization(t, rules)
        results = {}

        def upd(item):
            results[item["table"]] = run_table_plan(item, t, SALT, retry=RETRY)

        threads = [threading.Thread(target=upd, args=(i,)) for i in items]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        run_pg_restore(dump, t, section="post-data", jobs=jobs, tools=tools)
        report["pipelines"]["in_place_s"] = round(time.monotonic() - started, 2)
        for table, res in results.items():
            report["tables"][table]["in_place_update_s"] = res["duration_s"]

        # 5. in-place UPDATE of the largest masked table alone, then split in 2 ctid ranges
        big = max(MASKED, key=lambda tb: report["tables"][tb]["rows"])
        item = next(i for i in plan_anonymization(t, rules) if i["table"] == big)
        for label in ("single", "ctid_split_2"):
            t2 = fresh(pg, f"split_{label}")
            run_pg_restore(dump, t2, section="pre-data", tools=tools)
            run_pg_restore(dump, t2, section="data", only_data=[big], jobs=1, tools=tools)
            if label == "single":
                d = run_table_plan(item, t2, SALT, retry=RETRY)["duration_s"]
            else:
                d = _ctid_split(t2, item, 2)
            report["tables"][big][f"in_place_{label}_s"] = round(d, 2)
        for data in report["tables"].values():
            rows = data["rows"]
            for key in ("on_load_alone_s", "in_place_update_s"):
                if data.get(key):
                    data[key.replace("_s", "_rows_per_s")] = int(rows / data[key])
            if data.get("on_load_alone_s"):
                data["on_load_overhead_s"] = round(data["on_load_alone_s"] - data["bare_load_s"], 2)
        p = report["pipelines"]
        p["on_load_ratio"] = round(p["on_load_s"] / p["bare_restore_s"], 2)
        p["in_place_ratio"] = round(p["in_place_s"] / p["bare_restore_s"], 2)
    finally:
        pg.stop()
    return report


def _ctid_split(target: PgTarget, item: dict, parts: int) -> float:
    """Experiment: the same UPDATE split by ctid page ranges over ``parts`` connections (bounded by the
    table's size before the UPDATE, so new row versions appended at the end are not updated twice)."""
    from scalingo_staging_sync.anonymize.planner import read_table

    with target.connect() as conn:
        pages = conn.execute(
            "SELECT pg_relation_size(%s::regclass) / current_setting('block_size')::int", (item["table"],)
        ).fetchone()[0]
        cat = read_table(conn, item["schema"], item["name"])
    exprs = column_expressions(item["columns"], cat.columns)
    key = derive_key(SALT)
    bounds = [pages * i // parts for i in range(parts + 1)]

    def worker(lo: int, hi: int) -> None:
        cond = f"ctid >= '({lo},0)'::tid AND ctid < '({hi},0)'::tid"
        stmt = update_statement(item["schema"], item["name"], exprs, cond)
        with target.connect(autocommit=False) as conn:
            conn.execute("SELECT set_config(%s, %s, true)", (KEY_GUC, key))
            conn.execute(stmt)
            conn.commit()

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(bounds[i], bounds[i + 1])) for i in range(parts)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=0.2)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON report there too")
    args = parser.parse_args()
    report = run(args.scale, args.jobs)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
