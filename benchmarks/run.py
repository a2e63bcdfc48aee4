"""`make bench`: bare pg_restore (A) vs the reference DAG end to end (B) on a generated dataset.

    .venv/bin/python benchmarks/run.py --scale 3            # make bench (SCALE=3)
    .venv/bin/python benchmarks/run.py --scale 1 --repeat 3
    .venv/bin/python benchmarks/run.py --quick              # scale 0.01, 1 repeat, no extras (smoke)

Set-up: an embedded PostgreSQL 16 "production" filled by benchmarks/datagen.py at ``--scale`` (scale 1:
1 M users, 3 M orders, 3 M events), dumped with ``pg_dump -Fc`` and served as a Scalingo backup
(.tar.gz) by the fake Scalingo API (scalingo_staging_sync.testing.sandbox), an embedded PostgreSQL 16
staging server, and an isolated Airflow (SQLite metadata DB) under a temporary AIRFLOW_HOME.

Measured, alternating A and B (A B, B A, ...) ``--repeat`` times:
  A  ``pg_restore -jN --no-owner --no-acl`` of the dump into a fresh empty database on the staging
     server (the sandbox's pg_restore, N = ``--jobs``, default = cores).
  B  ``airflow dags test scalingo_staging_sync`` (download over loopback, extraction, phased restore
     with on-load masking, PII scan, verification, promotion, Airflow overhead), with the same N as
     the rules' ``restore.jobs``. Per-task wall-clock spans come from the Airflow metadata DB
     (task_instance start/end), so mapped tasks running side by side are not double counted.
Ratios (medians): (i) B wall / A, (ii) B data phases / A, where the data phases are
restore_schema + span(anonymize_table[*] and load_unmasked_data) + restore_post_data.

Extras (``--skip-extras`` to skip): hook download vs curl from the same fake server and archive (+
extraction, peak RSS of the downloader), PII scan cost as a table grows 10x, DAG parse time.

Results: a table on stdout and JSON in benchmarks/results/bench-scale<S>-<date>.json + latest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from datagen import generate  # noqa: E402

from scalingo_staging_sync.testing.sandbox import (  # noqa: E402
    SOURCE_APP,
    airflow_env,
    find_dags_folder,
    merged_environ,
    start_sandbox,
)

DAG_ID = "scalingo_staging_sync"
SOURCE_DB = "bench_prod"
BARE_DB = "bench_bare"
TARGET_RATIO_WALL = 1.5  # issue 14: (i) <= 1.5 (moonshot 1.2)
TARGET_RATIO_DATA = 1.3  # issue 14: (ii) <= 1.3 (moonshot 1.05)
DATA_TASKS = (
    "restore_schema",
    "plan_anonymization",
    "prepare_masking",
    "load_data",
    "anonymize_table",
    "restore_post_data",
)
_T0 = time.monotonic()

# users: the user_anonymization strategy covers email, first/last name, phone, address, birth_date;
# orders: the shipping address; events: no personal data. The PII scanner flags 7 columns on this
# dataset, all of them masked ones (users.email/first_name/last_name/phone/address/birth_date,
# orders.shipping_address); nothing else (events.kind/payload, amounts, timestamps) is flagged, so the
# allow-list is empty.
RULES_TEMPLATE = """\
# Rules for the benchmark dataset (benchmarks/datagen.py), written by benchmarks/run.py.
source_app: {source_app}
require_confirmation: true
parallel_connections: 3
email_domain: example.com
anonymization_tables:
  - table: public.users
    strategy: user_anonymization
  - table: public.orders
    columns:
      shipping_address: address
exclude_tables: []
pii_scan:
  on_unmasked: fail
  allow: []
verification:
  enabled: true
restore:
  mode: auto
  keep_previous: false
  jobs: {jobs}
"""


def log(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:7.1f}s] {msg}", flush=True)


class Heartbeat:
    """Prints a progress line every ``every`` seconds while a long step runs."""

    def __init__(self, label: str, every: float = 30.0, detail=None):
        self.label, self.every, self.detail = label, every, detail
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = time.monotonic()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            extra = ""
            if self.detail:
                try:
                    extra = self.detail() or ""
                except Exception:  # progress only
                    extra = ""
            log(f"  ... {self.label}: {time.monotonic() - self._started:.0f} s {extra}")

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


# ----------------------------------------------------------------------------- Airflow metadata DB
def _parse_ts(value) -> float | None:
    if value is None:
        return None
    dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _sqlite(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)


def running_tasks(db: Path) -> str:
    with _sqlite(db) as conn:
        rows = conn.execute(
            "SELECT task_id, map_index FROM task_instance WHERE state = 'running' ORDER BY task_id, map_index"
        ).fetchall()
    names = [f"{t}[{m}]" if m >= 0 else t for t, m in rows]
    return "running: " + (", ".join(names) if names else "-")


def task_spans(db: Path, dag_id: str) -> tuple[str, list[dict]]:
    """Task instances of the latest run of ``dag_id``: task_id, map_index, state, start, end (epoch s)."""
    with _sqlite(db) as conn:
        run_id = conn.execute(
            "SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)
        ).fetchone()[0]
        rows = conn.execute(
            "SELECT task_id, map_index, state, start_date, end_date FROM task_instance "
            "WHERE dag_id = ? AND run_id = ? ORDER BY start_date",
            (dag_id, run_id),
        ).fetchall()
    out = [
        {"task_id": t, "map_index": m, "state": s, "start": _parse_ts(a), "end": _parse_ts(b)}
        for t, m, s, a, b in rows
    ]
    return run_id, out


_LOG_TS = r"^(\d{4}-\d\d-\d\dT[\d:.]+Z) "


def task_startup_from_log(log_path: Path) -> dict[str, float]:
    """Seconds between ``[DAG TEST] starting task_id=X`` and the execution API's ``Task started`` for
    each task (summed over map indexes): Airflow's per-task start cost inside the task's span (the
    first task also pays for starting the in-process execution API)."""
    import re

    start_re = re.compile(_LOG_TS + r".*\[DAG TEST\] starting task_id=(\S+)")
    started_re = re.compile(_LOG_TS + r".*\bTask started\b")
    out: dict[str, float] = {}
    pending: tuple[str, float] | None = None
    for line in log_path.read_text(errors="replace").splitlines():
        if m := start_re.match(line):
            pending = (m.group(2), _parse_ts(m.group(1)))
        elif pending and (m := started_re.match(line)):
            out[pending[0]] = round(out.get(pending[0], 0.0) + _parse_ts(m.group(1)) - pending[1], 3)
            pending = None
    return out


def _union_length(intervals: list[tuple[float, float]]) -> float:
    total, cur_start, cur_end = 0.0, None, None
    for start, end in sorted(intervals):
        if cur_end is None or start > cur_end:
            if cur_end is not None:
                total += cur_end - cur_start
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    if cur_end is not None:
        total += cur_end - cur_start
    return total


def profile_run(tis: list[dict], spawned_at: float, finished_at: float) -> dict:
    """Per-task wall spans, the data-phase time and where the rest of the wall time went."""
    ran = [t for t in tis if t["start"] is not None and t["end"] is not None]
    tasks: dict[str, dict] = {}
    for t in ran:
        entry = tasks.setdefault(t["task_id"], {"start": t["start"], "end": t["end"], "sum_s": 0.0, "n": 0})
        entry["start"] = min(entry["start"], t["start"])
        entry["end"] = max(entry["end"], t["end"])
        entry["sum_s"] += t["end"] - t["start"]
        entry["n"] += 1
    first = min((t["start"] for t in ran), default=spawned_at)
    last = max((t["end"] for t in ran), default=finished_at)
    phases = {
        task_id: {
            "span_s": round(e["end"] - e["start"], 3),
            "sum_s": round(e["sum_s"], 3),
            "instances": e["n"],
            "offset_s": round(e["start"] - first, 3),
        }
        for task_id, e in sorted(tasks.items(), key=lambda kv: kv[1]["start"])
    }

    def span(task_id: str) -> float:
        return phases.get(task_id, {}).get("span_s", 0.0)

    # The data phases: from the start of restore_schema to the end of restore_post_data (pre-data,
    # plan, masking triggers, the shared data load, trigger removal / in-place UPDATEs, post-data).
    ends = [t for t in ran if t["task_id"] in ("restore_schema", "restore_post_data")]
    data_s = (max(t["end"] for t in ends) - min(t["start"] for t in ends)) if len(ends) == 2 else 0.0
    middle_span = data_s - span("restore_schema") - span("restore_post_data")
    window = [tasks[t] for t in ("restore_schema", "restore_post_data") if t in tasks]
    busy = _union_length([(t["start"], t["end"]) for t in ran])
    return {
        "tasks": phases,
        "data_phases_s": round(data_s, 3),
        "instances": [
            {
                "task_id": t["task_id"],
                "map_index": t["map_index"],
                "offset_s": round(t["start"] - first, 3),
                "duration_s": round(t["end"] - t["start"], 3),
            }
            for t in ran
        ],
        "masked_and_unmasked_span_s": round(middle_span, 3),
        "data_window_s": round(window[-1]["end"] - window[0]["start"], 3) if len(window) == 2 else None,
        "startup_s": round(first - spawned_at, 3),
        "shutdown_s": round(finished_at - last, 3),
        "tasks_busy_s": round(busy, 3),
        "between_tasks_s": round((last - first) - busy, 3),
    }


# ----------------------------------------------------------------------------- the two contenders
def checkpoint(box) -> None:
    box.staging.execute("CHECKPOINT")


def run_bare(box, dump: Path, jobs: int) -> float:
    box.staging.create_database(BARE_DB)  # drops a previous one first
    checkpoint(box)
    cmd = [
        str(box.staging.bin_dir / "pg_restore"),
        f"-j{jobs}",
        "--no-owner",
        "--no-acl",
        "-d",
        box.staging.conninfo(BARE_DB),
        str(dump),
    ]
    with Heartbeat("A pg_restore"):
        started = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        elapsed = time.monotonic() - started
    if proc.returncode:
        raise RuntimeError(f"pg_restore failed ({proc.returncode}): {proc.stderr[-2000:]}")
    box.staging.drop_database(BARE_DB)
    return elapsed


def _airflow_exe(env: dict[str, str]) -> str:
    return shutil.which("airflow", path=env.get("PATH")) or str(Path(sys.executable).parent / "airflow")


def run_dag(box, env: dict[str, str], home: Path, log_path: Path) -> dict:
    conf = json.dumps({"target_app": box.target_app, "confirm_target": box.target_app})
    audit_dir = Path(box.env["SCALINGO_STAGING_SYNC_AUDIT_DIR"])
    before = set(audit_dir.glob("*.json")) if audit_dir.is_dir() else set()
    checkpoint(box)
    db = home / "airflow.db"
    with open(log_path, "w") as out, Heartbeat("B airflow dags test", detail=lambda: running_tasks(db)):
        spawned_at = time.time()
        started = time.monotonic()
        proc = subprocess.run(
            [_airflow_exe(env), "dags", "test", DAG_ID, "-c", conf],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        wall = time.monotonic() - started
        finished_at = time.time()
    new = sorted(set(audit_dir.glob("*.json")) - before, key=lambda p: p.stat().st_mtime)
    report = json.loads(new[-1].read_text()) if new else {}
    run_id, tis = task_spans(db, DAG_ID)
    profile = profile_run(tis, spawned_at, finished_at)
    try:
        profile["task_start_overhead_s"] = task_startup_from_log(log_path)
    except Exception as exc:  # profiling detail only
        profile["task_start_overhead_s"] = {"error": str(exc)}
    return {
        "wall_s": round(wall, 3),
        "returncode": proc.returncode,
        "result": report.get("result"),
        "stopped_at": report.get("stopped_at"),
        "run_id": run_id,
        "audit_phases_s": {p["task_id"]: p.get("duration_s") for p in report.get("phases") or []},
        "audit_tables": [
            {k: t.get(k) for k in ("table", "mode", "rows")} for t in report.get("tables") or []
        ],
        "pii_counts": (report.get("pii_scan") or {}).get("counts"),
        "pii_unmasked": (report.get("pii_scan") or {}).get("unmasked"),
        "log": str(log_path),
        **profile,
    }


# ----------------------------------------------------------------------------- extras
def pii_growth(box, sample_rows: int = 1000, repeat: int = 3) -> dict:
    from pii_scan_bench import GENERATE, timed_table

    pg, db = box.prod, "pii_bench"
    pg.create_database(db)
    sizes = {"t_100k": 100_000, "t_1m": 1_000_000}
    with pg.connect(db) as conn:
        for name, rows in sizes.items():
            conn.execute(GENERATE.format(name=name, rows=rows))
    results = {name: timed_table(pg, db, name, sample_rows, repeat) for name in sizes}
    pg.drop_database(db)
    cost = {name: r["query_s"] + r["detect_s"] for name, r in results.items()}
    return {
        "sample_rows": sample_rows,
        "rows": sizes,
        "per_table_ms": {name: round(c * 1000, 2) for name, c in cost.items()},
        "query_ms": {name: round(r["query_s"] * 1000, 2) for name, r in results.items()},
        "detect_ms": {name: round(r["detect_s"] * 1000, 2) for name, r in results.items()},
        "ratio_1m_over_100k": round(cost["t_1m"] / cost["t_100k"], 2),
    }


PARSE_SNIPPET = """
import json, runpy, sys, time
t0 = time.perf_counter()
runpy.run_path(sys.argv[1])
t1 = time.perf_counter()
runpy.run_path(sys.argv[1])
t2 = time.perf_counter()
print(json.dumps({"first_s": t1 - t0, "again_s": t2 - t1}))
"""


def parse_time(env: dict[str, str], dag_file: Path, repeat: int = 5) -> dict:
    """Import the DAG file in a fresh interpreter (first: with Airflow's imports; again: the file alone)."""
    runs = []
    for _ in range(repeat):
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-c", PARSE_SNIPPET, str(dag_file)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        process_s = time.monotonic() - started
        runs.append({**json.loads(proc.stdout.strip().splitlines()[-1]), "process_s": process_s})
    return {
        "repeat": repeat,
        "fresh_import_median_s": round(statistics.median(r["first_s"] for r in runs), 3),
        "reparse_median_s": round(statistics.median(r["again_s"] for r in runs), 4),
        "interpreter_total_median_s": round(statistics.median(r["process_s"] for r in runs), 3),
    }


# ----------------------------------------------------------------------------- report
def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def summarize(a_runs: list[float], b_runs: list[dict]) -> dict:
    a = _median(a_runs)
    b_wall = _median([r["wall_s"] for r in b_runs])
    b_data = _median([r["data_phases_s"] for r in b_runs])
    task_ids = list(dict.fromkeys(t for r in b_runs for t in r["tasks"]))
    phases = {
        t: {
            "span_s": _median([r["tasks"][t]["span_s"] for r in b_runs if t in r["tasks"]]),
            "sum_s": _median([r["tasks"][t]["sum_s"] for r in b_runs if t in r["tasks"]]),
            "instances": max(r["tasks"][t]["instances"] for r in b_runs if t in r["tasks"]),
        }
        for t in task_ids
    }
    for t, p in phases.items():
        p["start_overhead_s"] = _median(
            [
                r.get("task_start_overhead_s", {}).get(t)
                for r in b_runs
                if isinstance(r.get("task_start_overhead_s"), dict)
            ]
        )
    overhead = {
        k: _median([r[k] for r in b_runs])
        for k in ("startup_s", "between_tasks_s", "shutdown_s", "tasks_busy_s", "data_window_s")
    }
    ratio_i = round(b_wall / a, 3) if a and b_wall else None
    ratio_ii = round(b_data / a, 3) if a and b_data else None
    return {
        "A_median_s": a,
        "B_wall_median_s": b_wall,
        "B_data_phases_median_s": b_data,
        "ratio_i_wall": ratio_i,
        "ratio_ii_data": ratio_ii,
        "target_ratio_i": TARGET_RATIO_WALL,
        "target_ratio_ii": TARGET_RATIO_DATA,
        "ratio_i_met": ratio_i is not None and ratio_i <= TARGET_RATIO_WALL,
        "ratio_ii_met": ratio_ii is not None and ratio_ii <= TARGET_RATIO_DATA,
        "phases_median": phases,
        "airflow_median": overhead,
        "all_b_success": all(r["result"] == "success" and r["returncode"] == 0 for r in b_runs),
    }


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(result: dict) -> None:
    s = result["summary"]
    print()
    print("=" * 78)
    print(
        f"make bench: scale {result['scale']} ({result['dataset']['users']} users, {result['dataset']['orders']} "
        f"orders, {result['dataset']['events']} events; dump {result['dataset']['dump_bytes'] / 1e6:.0f} MB), "
        f"jobs {result['jobs']}"
    )
    print("=" * 78)
    print(
        f"{'run':<6}{'A pg_restore (s)':>18}{'B dags test (s)':>18}{'B data phases (s)':>20}{'B result':>12}"
    )
    a_runs, b_runs = result["runs"]["A_s"], result["runs"]["B"]
    for i in range(max(len(a_runs), len(b_runs))):
        a = f"{a_runs[i]:.2f}" if i < len(a_runs) else "-"
        b = b_runs[i] if i < len(b_runs) else None
        wall = f"{b['wall_s']:.2f}" if b else "-"
        data = f"{b['data_phases_s']:.2f}" if b else "-"
        outcome = str(b["result"]) if b else "-"
        print(f"{i + 1:<6}{a:>18}{wall:>18}{data:>20}{outcome:>12}")
    print(
        f"{'median':<6}{_fmt(s['A_median_s'], '.2f'):>18}{_fmt(s['B_wall_median_s'], '.2f'):>18}"
        f"{_fmt(s['B_data_phases_median_s'], '.2f'):>20}"
    )
    print(
        f"ratio (i)  B wall / A        = {_fmt(s['ratio_i_wall'], '.3f')}  (target <= {TARGET_RATIO_WALL}: "
        f"{'met' if s['ratio_i_met'] else 'NOT met'})"
    )
    print(
        f"ratio (ii) B data phases / A = {_fmt(s['ratio_ii_data'], '.3f')}  (target <= {TARGET_RATIO_DATA}: "
        f"{'met' if s['ratio_ii_met'] else 'NOT met'})"
    )
    print()
    print("B per task (median over runs; span = wall clock first start -> last end, sum = over map indexes):")
    print(
        f"  {'task':<24}{'span (s)':>10}{'sum (s)':>10}{'n':>4}{'% of B':>8}{'of which task start (s)':>25}"
    )
    for task_id, p in s["phases_median"].items():
        share = 100 * (p["span_s"] or 0) / s["B_wall_median_s"]
        start = f"{p['start_overhead_s']:.2f}" if p.get("start_overhead_s") is not None else "-"
        print(
            f"  {task_id:<24}{p['span_s']:>10.2f}{p['sum_s']:>10.2f}{p['instances']:>4}{share:>7.1f}%{start:>25}"
        )
    o = s["airflow_median"]
    print(
        f"  {'(airflow start-up)':<24}{o['startup_s']:>10.2f}\n"
        f"  {'(between tasks)':<24}{o['between_tasks_s']:>10.2f}\n"
        f"  {'(after last task)':<24}{o['shutdown_s']:>10.2f}"
    )
    extras = result.get("extras") or {}
    if "download" in extras:
        d = extras["download"]
        print(
            f"download {d['archive_bytes'] / 1e6:.0f} MB: hook {d['hook_median_s']:.2f} s ({d['hook_mb_s']} MB/s), "
            f"curl {d['curl_median_s']:.2f} s ({d['curl_mb_s']} MB/s), hook/curl {d['hook_vs_curl_time_ratio']}; "
            f"extract: hook {d['hook_extract_median_s']:.2f} s, tar -xzf {d['tar_extract_median_s']:.2f} s; "
            f"downloader peak RSS {d['peak_rss_before_mb']:.0f} MB -> {d['peak_rss_after_download_mb']:.0f} MB "
            f"(after extract {d['peak_rss_after_extract_mb']:.0f} MB)"
        )
    if "pii_scan" in extras:
        p = extras["pii_scan"]
        print(
            f"PII scan per table: 100k rows {p['per_table_ms']['t_100k']} ms, 1M rows {p['per_table_ms']['t_1m']} ms "
            f"(x{p['ratio_1m_over_100k']} for 10x rows)"
        )
    if "parse" in extras:
        p = extras["parse"]
        print(
            f"DAG parse: fresh interpreter import {p['fresh_import_median_s']:.2f} s (Airflow imports included), "
            f"re-parse {p['reparse_median_s'] * 1000:.1f} ms, whole interpreter {p['interpreter_total_median_s']:.2f} s"
        )
    print(
        f"machine: {result['machine']['summary']}; load average {result['machine']['loadavg_start']} -> "
        f"{result['machine']['loadavg_end']}"
    )


def machine_info(box) -> dict:
    mem_gb = None
    try:
        with open("/proc/meminfo") as fh:
            mem_gb = round(int(fh.readline().split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    pg_version = box.staging.execute("SHOW server_version")[0][0]
    pg_restore = subprocess.run(
        [str(box.staging.bin_dir / "pg_restore"), "--version"], capture_output=True, text=True
    ).stdout.strip()
    try:
        from importlib.metadata import version

        airflow_version = version("apache-airflow")
    except Exception:
        airflow_version = None
    summary = (
        f"{os.cpu_count()} cores ({cpu}), {mem_gb} GB RAM, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, PostgreSQL {pg_version} (embedded, default settings), "
        f"Airflow {airflow_version}"
    )
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "mem_gb": mem_gb,
        "python": platform.python_version(),
        "postgres": pg_version,
        "pg_restore": pg_restore,
        "airflow": airflow_version,
        "summary": summary,
    }


def code_state() -> dict:
    """The commit measured and the files that differed from it (B runs the working tree)."""

    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    dirty = git("diff", "--name-only", "HEAD").splitlines()
    return {"commit": git("rev-parse", "HEAD") or None, "modified_files": dirty}


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ----------------------------------------------------------------------------- main
def run(args: argparse.Namespace) -> dict:
    jobs = args.jobs or max(1, os.cpu_count() or 1)
    base = Path(tempfile.mkdtemp(prefix=f"sss-bench-{args.scale}-"))
    rules = base / "bench_rules.yaml"
    rules.write_text(RULES_TEMPLATE.format(source_app=SOURCE_APP, jobs=jobs))
    dataset: dict = {}
    load_avg_start = _loadavg()
    code = code_state()
    if code["modified_files"]:
        log(f"note: measuring the working tree of {code['commit']} with changes in {code['modified_files']}")

    def load_dataset(pg, dbname: str) -> str:
        pg.create_database(dbname)
        log(f"generating the dataset at scale {args.scale} (benchmarks/datagen.py)...")
        with Heartbeat("datagen"):
            dataset.update(generate(pg.conninfo(dbname), args.scale))
        log(f"  {dataset}; now pg_dump -Fc and the Scalingo archive (.tar.gz)...")
        dataset["_dump_started"] = time.monotonic()
        return dbname

    log(f"work dir {base}; starting embedded PostgreSQL 16 production + staging and the fake Scalingo API")
    box = start_sandbox(base / "sandbox", load_dataset=load_dataset, source_db=SOURCE_DB, rules_file=rules)
    dataset["dump_and_archive_s"] = round(time.monotonic() - dataset.pop("_dump_started"), 1)
    dump = box.dump_path
    archive = next((box.base_dir / "fake-scalingo").rglob("*.tar.gz"), None)
    dataset["dump_bytes"] = dump.stat().st_size
    dataset["archive_bytes"] = archive.stat().st_size if archive else None
    log(
        f"dump {dataset['dump_bytes'] / 1e6:.0f} MB, archive {(dataset['archive_bytes'] or 0) / 1e6:.0f} MB "
        f"in {dataset['dump_and_archive_s']} s"
    )
    try:
        home = base / "airflow"
        env = merged_environ(airflow_env(home, find_dags_folder()), box.env)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        log("airflow db migrate (SQLite, once)...")
        subprocess.run([_airflow_exe(env), "db", "migrate"], env=env, check=True, capture_output=True)
        machine = machine_info(box)
        log(f"machine: {machine['summary']}")

        a_runs: list[float] = []
        b_runs: list[dict] = []
        loads: list[dict] = []
        for i in range(args.repeat):
            for kind in ("A", "B") if i % 2 == 0 else ("B", "A"):
                load = _loadavg()
                if kind == "A":
                    log(
                        f"run {i + 1}/{args.repeat} A: pg_restore -j{jobs} --no-owner --no-acl into an empty database"
                    )
                    a_runs.append(round(run_bare(box, dump, jobs), 3))
                    log(f"run {i + 1}/{args.repeat} A: {a_runs[-1]:.2f} s (load average before {load})")
                else:
                    log_path = base / f"dags-test-{i + 1}.log"
                    log(f"run {i + 1}/{args.repeat} B: airflow dags test {DAG_ID} (log {log_path})")
                    b = run_dag(box, env, home, log_path)
                    b_runs.append(b)
                    log(
                        f"run {i + 1}/{args.repeat} B: {b['wall_s']:.2f} s, data phases {b['data_phases_s']:.2f} s, "
                        f"result {b['result']!r} (load average before {load})"
                    )
                    if b["result"] != "success" or b["returncode"]:
                        log(f"  B did not succeed: stopped at {b['stopped_at']}; see {log_path}")
                loads.append({"run": i + 1, "kind": kind, "loadavg_before": load})

        extras: dict = {}
        if not args.skip_extras:
            log(
                "extra: download, hook vs curl (same fake server, same archive), with extraction and peak RSS"
            )
            extras["download"] = _download_extra(box, env, base)
            log("extra: PII scan cost as a table grows 10x (100k -> 1M rows, benchmarks/pii_scan_bench.py)")
            extras["pii_scan"] = pii_growth(box)
            log("extra: DAG parse time (fresh interpreter, median of 5)")
            extras["parse"] = parse_time(env, find_dags_folder() / "scalingo_staging_sync.py")
        machine["loadavg_start"] = load_avg_start
        machine["loadavg_end"] = _loadavg()
        return {
            "benchmark": "make bench",
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "scale": args.scale,
            "jobs": jobs,
            "repeat": args.repeat,
            "dataset": dataset,
            "machine": machine,
            "code": code,
            "runs": {"A_s": a_runs, "B": b_runs, "order_and_load": loads},
            "summary": summarize(a_runs, b_runs),
            "extras": extras,
            "work_dir": str(base) if args.keep else None,
        }
    finally:
        if args.keep:
            for stop in (box.fake.stop, box.staging.stop, box.prod.stop):
                try:
                    stop()
                except Exception:
                    pass
            log(f"kept {base} (databases stopped)")
        else:
            box.stop()
            shutil.rmtree(base, ignore_errors=True)


def _download_extra(box, env: dict[str, str], base: Path) -> dict:
    from download_compare import compare

    return compare(box.source_app, env, base / "download-extra", repeat=3, log=log)


def write_results(result: dict, results_dir: Path) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    scale = f"{result['scale']:g}"
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M")
    path = results_dir / f"bench-scale{scale}-{stamp}.json"
    text = json.dumps(result, indent=2) + "\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    (results_dir / "latest.json").write_text(text)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=3.0, help="dataset scale (1 = 1 M users), default 3")
    parser.add_argument("--repeat", type=int, default=2, help="A/B pairs, alternated (default 2)")
    parser.add_argument("--jobs", type=int, default=None, help="pg_restore jobs for A and B (default: cores)")
    parser.add_argument("--skip-extras", action="store_true", help="no download/PII-scan/parse measurements")
    parser.add_argument(
        "--keep", action="store_true", help="keep the work dir (dump, logs, audit, AIRFLOW_HOME)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: scale 0.01, 1 repeat, no extras")
    parser.add_argument("--results-dir", type=Path, default=HERE / "results", help="where the JSON goes")
    args = parser.parse_args(argv)
    if args.quick:
        args.scale, args.repeat, args.skip_extras = 0.01, 1, True
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    # a background run stopped with SIGTERM still stops its embedded servers (finally: in run())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = run(args)
    path = write_results(result, args.results_dir)
    print_table(result)
    print(f"results: {path} (and {path.parent / 'latest.json'})")
    return 0 if result["summary"]["all_b_success"] else 1


if __name__ == "__main__":
    sys.exit(main())
