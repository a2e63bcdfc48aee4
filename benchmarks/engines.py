"""Masking engines side by side: CPU microseconds per masked row, on the same data, in one run.

Engines (issue 14):

* ``none``      COPY into the table, no trigger (the no-masking baseline);
* ``single``    COPY without a trigger but with single-row inserts, as any BEFORE ROW trigger forces (a
  volatile column default, ``random()``, makes ``CopyFrom`` give up its batched ``heap_multi_insert``):
  the share of the trigger's fixed cost that is COPY losing its batching, not the PL/pgSQL call;
* ``noop``      COPY through a PL/pgSQL BEFORE INSERT trigger that only ``RETURN NEW`` (the call cost);
* ``trigger``   engine (a): COPY through the masking trigger (``anonymize.sql.trigger_statements``);
* ``setbased``  engine (b): COPY into an UNLOGGED load table, then ``INSERT INTO t SELECT <exprs>``;
* ``stream``    engine (c), the shipped one (``anonymize.stream.StreamMasker``, its query planned per
  table): the COPY text is masked on the worker by DuckDB, then copied into the table without a trigger;
  its case folding goes through Arrow's ASCII kernels where pyarrow is installed;
* ``stream_translate``  the same with ``translate()`` for the case folding (what it does without
  pyarrow): the same text, another cost;
* ``trigger_literal_key`` experiment: the trigger with the key as a literal instead of a setting read
  per row (not shippable: it writes the key into the catalog), to price that read.

What is measured: **CPU**, not wall time (the machine is shared). For the database side, the backend's
``utime + stime`` from ``/proc/<backend pid>/stat`` around the statement(s) (clock ticks: 10 ms, so use
at least 100k rows); for the worker side of the stream engines, ``getrusage(RUSAGE_SELF)`` around the
transformation (DuckDB runs with ``threads=1``, spilling the block to a temporary file and back). The
COPY text is read once with ``COPY ... TO STDOUT`` (the same text ``pg_restore -a`` emits) and fed from
memory, so the client's cost of sending it is the same for every engine and is not counted, and neither
is ``pg_restore``'s own CPU (the same for every engine). Tables are created ``LIKE`` the source without
indexes (as after pre-data). Engines run alternately, ``--repeat`` rounds in a rotating order; the report
gives medians, µs per row, the extra µs per row and the ratio against ``none`` of the same run, and the
outputs' digests (every masking engine must give the same table). Wall-clock seconds are reported too,
labelled ``wall``, for information only.

    PYTHONPATH=provider:benchmarks .venv/bin/python benchmarks/engines.py --scale 0.1 --repeat 5 --families \
        --engines none,noop,trigger,trigger_literal_key,setbased,stream

The prototypes engine (c) was chosen from (pure Python, and DuckDB with PostgreSQL's ``hashtextextended``
written in DuckDB SQL) were retired when word picks and date shifts moved to the keyed md5; they are in
the history (``git show 71f7b99:benchmarks/stream_prototype.py``, ``...:benchmarks/stream_duckdb.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from datagen import generate  # noqa: E402
from psycopg import sql  # noqa: E402

from scalingo_staging_sync.anonymize.planner import read_table  # noqa: E402
from scalingo_staging_sync.anonymize.salt import derive_key, key_settings  # noqa: E402
from scalingo_staging_sync.anonymize.sql import column_expressions, trigger_statements  # noqa: E402
from scalingo_staging_sync.anonymize.transformers import KEY_GUC  # noqa: E402
from scalingo_staging_sync.testing.postgres import start_embedded_postgres  # noqa: E402

SALT = "benchmark-salt-0123456789abcdef"
#: the bench rules (benchmarks/anonymize_bench.py): users and orders
TABLES = {
    "users": {
        "email": {"transformer": "email"},
        "first_name": {"transformer": "first_name"},
        "last_name": {"transformer": "last_name"},
        "phone": {"transformer": "phone"},
        "address": {"transformer": "address"},
        "birth_date": {"transformer": "date_shift"},
    },
    "orders": {"shipping_address": {"transformer": "address"}},
}
#: one column masked at a time (transformer families): table, column, transformer spec
FAMILIES = {
    "email (keyed md5)": ("users", {"email": {"transformer": "email"}}),
    "phone (keyed md5)": ("users", {"phone": {"transformer": "phone"}}),
    "hash sha256": ("users", {"email": {"transformer": "hash"}}),
    "first_name (keyed pick)": ("users", {"first_name": {"transformer": "first_name"}}),
    "address (keyed pick)": ("users", {"address": {"transformer": "address"}}),
    "date_shift (keyed)": ("users", {"birth_date": {"transformer": "date_shift"}}),
    "postal_code (keyed md5)": ("users", {"phone": {"transformer": "postal_code"}}),
    "company (keyed pick)": ("users", {"last_name": {"transformer": "company"}}),
    # streamed since 2026-12-06 (their tables were masked by the trigger before)
    "date_shift on timestamptz": ("users", {"created_at": {"transformer": "date_shift"}}),
    "ip on text": ("users", {"phone": {"transformer": "ip"}}),
    "email + md5_of it (derived)": (
        "users",
        {"email": {"transformer": "email"}, "phone": {"transformer": "md5_of", "column": "email"}},
    ),
    "names + full_name from them (derived)": (
        "users",
        {
            "first_name": {"transformer": "first_name"},
            "last_name": {"transformer": "last_name"},
            "address": {"transformer": "full_name", "from": ["first_name", "last_name"]},
        },
    ),
}
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: ``--distinct``: the masked text columns made as varied as a real table's (datagen repeats 10 first
#: names, 10 last names and a few thousand addresses): 400 first names (two of 20 syllables), 8,000
#: last names (three), every address different; about a third of the values with non-ASCII letters
#: (upper case ones too)
DISTINCT_SQL = """
CREATE FUNCTION pg_temp.word(seed bigint, n int) RETURNS text LANGUAGE sql IMMUTABLE AS $$
  SELECT initcap(string_agg((ARRAY['ka','lo','mi','ré','su','an','to','é','ber','nard','li','ne','za',
         'ö','ph','ine','ça','ro','ma','ël'])[1 + abs(hashint8(seed * 31 + i)) % 20], ''))
  FROM generate_series(1, n) i
$$;
UPDATE users SET first_name = pg_temp.word(id % 5000, 2),
                 last_name = pg_temp.word(100000 + id % 100000, 3),
                 address = (1 + id % 299) || ' ' || (ARRAY['rue', 'avenue', 'Boulevard', 'Allée'])[1 + id % 4]
                           || ' ' || pg_temp.word(id, 3) || ' ' || id;
UPDATE orders SET shipping_address = (1 + id % 299) || ' ' || (ARRAY['rue', 'avenue', 'Boulevard', 'Allée'])[1 + id % 4]
                           || ' ' || pg_temp.word(user_id, 3) || ' ' || id;
VACUUM FULL users;
VACUUM FULL orders;
"""


def proc_cpu(pid: int) -> float:
    """utime + stime of a process, seconds (clock-tick resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class Bench:
    def __init__(self, pg, dbname: str, copy_text: dict[str, bytes]):
        self.pg = pg
        self.dbname = dbname
        self.copy_text = copy_text
        self.conn = pg.connect(dbname)
        self.pid = self.conn.info.backend_pid
        for name, value in key_settings(derive_key(SALT)).items():
            self.conn.execute("SELECT set_config(%s, %s, false)", (name, value))

    def fresh(self, table: str) -> str:
        """An empty copy of ``table`` (columns only, like after pre-data), named ``<table>_run``."""
        run = f"{table}_run"
        self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(run)))
        self.conn.execute(
            sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(
                sql.Identifier(run), sql.Identifier(table)
            )
        )
        return run

    def copy_in(self, table: str, data: bytes, columns: list[str] | None = None) -> None:
        target = sql.Identifier(table)
        if columns:
            target = sql.SQL("{} ({})").format(target, sql.SQL(", ").join(map(sql.Identifier, columns)))
        with (
            self.conn.cursor() as cur,
            cur.copy(sql.SQL("COPY {} FROM STDIN").format(target)) as cp,
        ):
            view = memoryview(data)
            for i in range(0, len(view), 1 << 20):
                cp.write(view[i : i + (1 << 20)])

    def measured(self, func) -> tuple[float, float]:
        """(backend CPU s, wall s) of ``func()``."""
        self.conn.execute("SELECT 1")
        cpu0, wall0 = proc_cpu(self.pid), time.monotonic()
        func()
        return proc_cpu(self.pid) - cpu0, time.monotonic() - wall0

    def run(self, engine: str, table: str, specs: dict) -> dict[str, float]:
        run = self.fresh(table)
        data = self.copy_text[table]
        worker = 0.0
        if engine == "none":
            db, wall = self.measured(lambda: self.copy_in(run, data))
        elif engine == "single":
            columns = list(read_table(self.conn, "public", run).columns)
            self.conn.execute(
                sql.SQL("ALTER TABLE {} ADD COLUMN _bench_single double precision DEFAULT random()").format(
                    sql.Identifier(run)
                )
            )
            db, wall = self.measured(lambda: self.copy_in(run, data, columns))
            self.conn.execute(sql.SQL("ALTER TABLE {} DROP COLUMN _bench_single").format(sql.Identifier(run)))
        elif engine == "noop":
            self.conn.execute(
                "CREATE OR REPLACE FUNCTION _bench_noop() RETURNS trigger LANGUAGE plpgsql AS "
                "'BEGIN RETURN NEW; END'"
            )
            self.conn.execute(
                sql.SQL(
                    "CREATE TRIGGER noop BEFORE INSERT ON {} FOR EACH ROW EXECUTE FUNCTION _bench_noop()"
                ).format(sql.Identifier(run))
            )
            db, wall = self.measured(lambda: self.copy_in(run, data))
        elif engine == "trigger":
            cat = read_table(self.conn, "public", run)
            create_fn, create_trigger, _drop = trigger_statements(
                "public", run, specs, cat.columns, self.conn
            )
            self.conn.execute(create_fn)
            self.conn.execute(create_trigger)
            db, wall = self.measured(lambda: self.copy_in(run, data))
        elif engine == "setbased":
            load = f"{table}_load"
            self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(load)))
            self.conn.execute(
                sql.SQL("CREATE UNLOGGED TABLE {} (LIKE {})").format(
                    sql.Identifier(load), sql.Identifier(table)
                )
            )
            cat = read_table(self.conn, "public", run)
            exprs = column_expressions(specs, cat.columns)
            cols = list(cat.columns)
            select = sql.SQL(", ").join(exprs.get(c, sql.Identifier(c)) for c in cols)
            insert = sql.SQL("INSERT INTO {} SELECT {} FROM {}").format(
                sql.Identifier(run), select, sql.Identifier(load)
            )

            def both():
                self.copy_in(load, data)
                self.conn.execute(insert)
                self.conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(load)))

            db, wall = self.measured(both)
        elif engine in ("stream", "stream_translate"):
            # the shipped engine (c): anonymize.stream.StreamMasker, planning of its query included;
            # stream_translate: the same with translate() for case folding, as without pyarrow
            from scalingo_staging_sync.anonymize.stream import StreamMasker
            from scalingo_staging_sync.tablename import TableName

            cat = read_table(self.conn, "public", run)
            key = derive_key(SALT)
            out: list[bytes] = []
            w0 = time.monotonic()
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            arrow = None if engine == "stream" else False
            with StreamMasker(
                TableName("public", run), specs, cat.columns, list(cat.columns), key, arrow_folding=arrow
            ) as m:
                out.append(m.mask(data))
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            worker = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
            db, _wall = self.measured(lambda: self.copy_in(run, out[0]))
            wall = time.monotonic() - w0
        elif engine == "trigger_literal_key":
            # experiment only (not shippable: it writes the key into the catalog): what the per-row
            # read of the key setting costs
            cat = read_table(self.conn, "public", run)
            create_fn, create_trigger, _drop = trigger_statements(
                "public", run, specs, cat.columns, self.conn
            )
            text = create_fn.as_string(self.conn)
            settings = key_settings(derive_key(SALT))
            key_lit = settings[KEY_GUC]
            text = text.replace(f"current_setting(''{KEY_GUC}'')", f"''{key_lit}''::text")
            assert "current_setting" not in text, text[:600]
            self.conn.execute(text)
            self.conn.execute(create_trigger)
            db, wall = self.measured(lambda: self.copy_in(run, data))
        else:
            raise ValueError(engine)
        return {"db_cpu_s": db, "worker_cpu_s": worker, "cpu_s": db + worker, "wall_s": wall}

    def result_digest(self, table: str) -> str:
        run = f"{table}_run"
        return self.conn.execute(
            sql.SQL("SELECT md5(string_agg(t::text, E'\\n' ORDER BY id)) FROM {} t").format(
                sql.Identifier(run)
            )
        ).fetchone()[0]


def rotate(items: list[str], i: int) -> list[str]:
    k = i % len(items)
    return items[k:] + items[:k]


def compare(bench: Bench, table: str, specs: dict, engines: list[str], repeat: int, rows: int) -> dict:
    samples: dict[str, list[dict]] = {e: [] for e in engines}
    digests: dict[str, str] = {}
    for i in range(repeat):
        for engine in rotate(engines, i):
            samples[engine].append(bench.run(engine, table, specs))
            if engine not in ("none", "single", "noop"):
                digests.setdefault(engine, bench.result_digest(table))
    out: dict = {"rows": rows, "engines": {}}
    base = statistics.median(s["cpu_s"] for s in samples["none"])
    for engine, runs in samples.items():
        cpu = statistics.median(s["cpu_s"] for s in runs)
        out["engines"][engine] = {
            "cpu_s_median": round(cpu, 3),
            "db_cpu_s_median": round(statistics.median(s["db_cpu_s"] for s in runs), 3),
            "worker_cpu_s_median": round(statistics.median(s["worker_cpu_s"] for s in runs), 3),
            "cpu_us_per_row": round(cpu / rows * 1e6, 2),
            "extra_cpu_us_per_row_vs_none": round((cpu - base) / rows * 1e6, 2),
            "cpu_ratio_vs_none": round(cpu / base, 2) if base else None,
            "wall_s_median": round(statistics.median(s["wall_s"] for s in runs), 3),
        }
    # every masking engine computes the same transformers: the same table
    if len(set(digests.values())) > 1:
        out["MISMATCH"] = dict(digests)
    elif digests:
        out["outputs_identical"] = sorted(digests)
    return out


def summary(report: dict) -> str:
    """A plain table: CPU µs per row, extra µs per row and ratio against ``none`` (same run)."""
    lines = [f"CPU per row, medians of {report['repeat']} rounds, PostgreSQL {report['pg']} (wall: see JSON)"]
    for table, res in report["tables"].items():
        check = res.get("MISMATCH") and "OUTPUTS DIFFER" or "outputs identical within hash family"
        lines.append(f"{table} ({res['rows']} rows; {check})")
        for engine, e in res["engines"].items():
            ratio = e["cpu_ratio_vs_none"]
            lines.append(
                f"  {engine:<22} {e['cpu_us_per_row']:7.2f} us/row  extra {e['extra_cpu_us_per_row_vs_none']:6.2f}"
                f"  x{ratio if ratio is not None else float('nan'):.2f} vs none"
            )
    for label, fam in report.get("families", {}).items():
        lines.append(f"family {label}: " + ", ".join(f"{e} +{v}" for e, v in fam.items()))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=0.05, help="datagen scale (0.05: 50k users)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--pg", type=int, default=16, choices=(16, 18))
    parser.add_argument(
        "--engines",
        default=None,
        help="comma-separated (default: none,single,noop,trigger,setbased, and stream when duckdb imports)",
    )
    parser.add_argument("--families", action="store_true", help="also one transformer family at a time")
    parser.add_argument(
        "--distinct",
        action="store_true",
        help="masked text columns as varied as a real table's (see DISTINCT_SQL), not datagen's few values",
    )
    parser.add_argument(
        "--with-timestamps",
        action="store_true",
        help="also date_shift on users.created_at and orders.created_at (timestamptz): tables the stream "
        "engine left to the trigger before 2026-12-06",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    tables = {t: dict(specs) for t, specs in TABLES.items()}
    if args.with_timestamps:
        for specs in tables.values():
            specs["created_at"] = {"transformer": "date_shift"}
    if args.engines:
        engines = args.engines.split(",")
    else:
        engines = ["none", "single", "noop", "trigger", "setbased"]
        try:
            import duckdb  # noqa: F401

            engines.append("stream")
        except ImportError:
            pass
    base = Path(tempfile.mkdtemp(prefix="sss-engines-"))
    pg = start_embedded_postgres(args.pg, base)
    report: dict = {
        "scale": args.scale,
        "repeat": args.repeat,
        "pg": args.pg,
        "distinct": args.distinct,
        "with_timestamps": args.with_timestamps,
        "tables": {},
        "families": {},
    }
    try:
        pg.create_database("bench")
        report["datagen"] = generate(pg.conninfo("bench"), args.scale)
        if args.distinct:
            with pg.connect("bench") as conn:
                conn.autocommit = True
                for statement in DISTINCT_SQL.split(";\n"):
                    if statement.strip():
                        conn.execute(statement)
                report["distinct_values"] = {
                    col: conn.execute(
                        sql.SQL("SELECT count(DISTINCT {}) FROM users").format(sql.Identifier(col))
                    ).fetchone()[0]
                    for col in ("first_name", "last_name", "address")
                }
        copy_text: dict[str, bytes] = {}
        rows: dict[str, int] = {}
        with pg.connect("bench") as conn:
            for table in TABLES:
                buf = bytearray()
                with conn.cursor().copy(sql.SQL("COPY {} TO STDOUT").format(sql.Identifier(table))) as cp:
                    for chunk in cp:
                        buf += chunk
                copy_text[table] = bytes(buf)
                rows[table] = buf.count(b"\n")
        bench = Bench(pg, "bench", copy_text)
        for table, specs in tables.items():
            report["tables"][table] = compare(bench, table, specs, engines, args.repeat, rows[table])
        total_rows = sum(rows.values())
        for engine in engines:
            cpu = sum(report["tables"][t]["engines"][engine]["cpu_s_median"] for t in TABLES)
            base_cpu = sum(report["tables"][t]["engines"]["none"]["cpu_s_median"] for t in TABLES)
            report.setdefault("all_tables", {})[engine] = {
                "cpu_us_per_row": round(cpu / total_rows * 1e6, 2),
                "cpu_ratio_vs_none": round(cpu / base_cpu, 2),
            }
        if args.families:
            fam_engines = [e for e in engines if e in ("none", "noop", "trigger", "stream")]
            for label, (table, specs) in FAMILIES.items():
                res = compare(bench, table, specs, fam_engines, args.repeat, rows[table])
                report["families"][label] = {
                    e: res["engines"][e]["extra_cpu_us_per_row_vs_none"] for e in fam_engines
                }
        bench.conn.close()
    finally:
        pg.stop()
    text = json.dumps(report, indent=2)
    print(text)
    print(summary(report))
    if args.out:
        args.out.write_text(text + "\n")
    if any(res.get("MISMATCH") for res in report["tables"].values()):
        sys.exit("the masking engines gave different tables (see MISMATCH above)")


if __name__ == "__main__":
    main()
