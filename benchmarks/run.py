"""`make bench`: bare pg_restore (A) vs the reference DAG end to end, under `airflow dags test` (B) and
under a real scheduler with the LocalExecutor (C), on a generated dataset; plus per-engine figures.

    .venv/bin/python benchmarks/run.py --scale 3            # make bench (SCALE=3)
    .venv/bin/python benchmarks/run.py --scale 1 --repeat 3
    .venv/bin/python benchmarks/run.py --quick              # scale 0.01, 1 repeat, engine figures only (smoke)

Set-up: an embedded PostgreSQL 16 "production" filled by benchmarks/datagen.py at ``--scale`` (scale 1:
1 M users, 3 M orders, 3 M events), dumped with ``pg_dump -Fc`` and served as a Scalingo backup
(.tar.gz) by the fake Scalingo API (scalingo_staging_sync.testing.sandbox), an embedded PostgreSQL 16
staging server, and an isolated Airflow (SQLite metadata DB) under a temporary AIRFLOW_HOME.

Before the runs, not timed: the production server's autovacuum is turned off once the dump exists
(production is only read afterwards), and one bare restore warms the fresh staging server up (the
first bulk load into it was 20-66 % slower than the next ones in every run before this warm-up; new
WAL segment files and cold caches are the likely causes), and one dry run of the DAG warms the
LocalExecutor stack up (its first task ever was 3.0-3.7 s slower than in the runs after it; a
long-lived stack pays that once) (``--no-warmup``: neither). Before each run,
not timed either: a CHECKPOINT, a wait (at most 120 s) for the staging server's autovacuum workers
that the previous run's tables started, and a ``sync`` of the page cache's dirty pages (recorded per
run; it takes one variable out, but it does not explain why the first A was 5-39 % slower than the
second in every run with the warm-up before it, 2026-12-02 20:27 to 2026-12-04 03:10: 0-1 MB were
dirty before each run of 2026-12-04 03:33, whose two A were 8 % apart).

Measured, alternating A, B and C (A B C, C B A, ...) ``--repeat`` times:
  A  ``pg_restore -jN --no-owner --no-acl`` of the dump into a fresh empty database on the staging
     server (the sandbox's pg_restore, N = ``--jobs``, default = cores).
  B  ``airflow dags test scalingo_staging_sync`` (download over loopback, extraction, phased restore
     with on-load masking, PII scan, verification, promotion, Airflow overhead), with the same N as
     the rules' ``restore.jobs``. Per-task wall-clock spans come from the Airflow metadata DB
     (task_instance start/end), so mapped tasks running side by side are not double counted.
  C  the same DAG and conf triggered over the REST API of an ``airflow standalone`` (scheduler,
     dag-processor, triggerer, api-server; LocalExecutor, SQLite metadata DB, its own AIRFLOW_HOME
     with B's environment) started once before the runs (not timed) and stopped after them: mapped
     tasks run side by side as in production. While A and B run, the whole stack is stopped
     (SIGSTOP; ``--no-pause-stack`` leaves it idling) and it is resumed and healthy again before C.
     Wall = the dag_run's start_date -> end_date in the metadata DB; the client's trigger -> finished
     is reported too.
Ratios (medians): (i) B wall / A, (ii) B data phases / A, (i-local) C wall / A, (ii-local) C data
phases / A, where the data phases are restore_schema + span(anonymize_table[*] and load_unmasked_data)
+ restore_post_data.

Extras (``--skip-extras`` to skip): hook download vs curl from the same fake server and archive (+
extraction, peak RSS of the downloader), PII scan cost as a table grows 10x, DAG parse time, and the
CPU µs per masked row of the masking engine the product ships (the PL/pgSQL trigger) against a plain
COPY, by benchmarks/engines.py (``--engines-scale``, ``--engines-rounds``; ``--quick`` runs only this
one, at scale 0.01).

Results: a table on stdout and JSON in benchmarks/results/bench-scale<S>-<date>.json + latest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
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
TARGET_RATIO_WALL_LOCAL = 1.35  # issue 14: (i) <= 1.35 under LocalExecutor
TARGET_RATIO_DATA_LOCAL = 1.3
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
    strategy: user_anonymization{users_extra}
  - table: public.orders
    columns:
      shipping_address: address{orders_extra}
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


def task_spans(db: Path, dag_id: str, run_id: str | None = None) -> tuple[str, list[dict]]:
    """Task instances of ``run_id`` (default: the latest run of ``dag_id``): task_id, map_index, state,
    start, end (epoch s)."""
    with _sqlite(db) as conn:
        if run_id is None:
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
    # most task instances running at the same moment (1 under `dags test`; mapped tasks side by side
    # under a real executor)
    edges = sorted([(t["start"], 1) for t in ran] + [(t["end"], -1) for t in ran])
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
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
        "max_parallel_tasks": most,
    }


# ----------------------------------------------------------------------------- the two contenders
def checkpoint(box) -> None:
    box.staging.execute("CHECKPOINT")


_AUTOVACUUM_WORKERS = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"


def quiet_production(box) -> None:
    """After the dump the production server is only read (the engine extras): its autovacuum, which the
    freshly generated tables start (tens of millions of inserted rows), would otherwise run next to the
    first timed runs. Off, and its workers stopped."""
    box.prod.execute("ALTER SYSTEM SET autovacuum = off")
    box.prod.execute("SELECT pg_reload_conf()")
    box.prod.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
    )
    box.prod.execute("CHECKPOINT")


def _dirty_mb() -> float | None:
    """The page cache's dirty and under-writeback memory (``/proc/meminfo``), in MB."""
    try:
        fields = dict(
            line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line
        )
        return round(sum(int(fields[k].split()[0]) for k in ("Dirty", "Writeback")) / 1024, 1)
    except (OSError, KeyError, ValueError):
        return None


def settle(box, limit_s: float = 120.0) -> dict:
    """Before a timed run: wait until no autovacuum worker runs on the staging server (the one a previous
    run's tables started), at most ``limit_s``, then write the page cache's dirty pages out (``sync``:
    what the previous run wrote, e.g. a download, is not written back during this one); what was
    waited for is recorded, not timed."""
    started = time.monotonic()
    workers = box.staging.execute(_AUTOVACUUM_WORKERS)[0][0]
    first = workers
    while workers and time.monotonic() - started < limit_s:
        time.sleep(0.5)
        workers = box.staging.execute(_AUTOVACUUM_WORKERS)[0][0]
    waited = time.monotonic() - started
    dirty = _dirty_mb()
    synced = time.monotonic()
    os.sync()
    return {
        "autovacuum_workers": first,
        "waited_s": round(waited, 2),
        "still_running": workers,
        "dirty_mb": dirty,
        "sync_s": round(time.monotonic() - synced, 2),
    }


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


def audit_fields(report: dict) -> dict:
    """What B and C record from a run's audit report."""
    return {
        "result": report.get("result"),
        "stopped_at": report.get("stopped_at"),
        "audit_phases_s": {p["task_id"]: p.get("duration_s") for p in report.get("phases") or []},
        "audit_tables": [
            {k: t.get(k) for k in ("table", "mode", "rows", "engine")} for t in report.get("tables") or []
        ],
        "pii_counts": (report.get("pii_scan") or {}).get("counts"),
        "pii_unmasked": (report.get("pii_scan") or {}).get("unmasked"),
    }


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
    # the DAG run's own duration, as C's wall and as Airflow shows a run: the dag_run's start_date ->
    # end_date in the metadata DB (the process's start-up before it and its exit after it are not in it)
    times = dag_run_times(db, run_id) if run_id else {}
    dag_run = (times["end"] - times["start"]) if times.get("start") and times.get("end") else None
    return {
        "wall_s": round(wall, 3),
        "dag_run_s": round(dag_run, 3) if dag_run is not None else None,
        "returncode": proc.returncode,
        "run_id": run_id,
        **audit_fields(report),
        "log": str(log_path),
        **profile,
    }


# ----------------------------------------------------------------------------- C: a real scheduler
#: a cron that never fires in the run's lifetime (29 February, start_date 2026, no catchup): unpausing
#: the DAG must not start a scheduled sync next to the measured runs
NO_SCHEDULED_RUN = "0 0 29 2 *"
LOCAL_START_TIMEOUT_S = 420
LOCAL_RUN_TIMEOUT_S = 7200
TERMINAL_STATES = ("success", "failed")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def local_airflow_env(home: Path, box) -> dict[str, str]:
    """The environment of B (isolated Airflow, SQLite, the sandbox's connections and rules) with the
    LocalExecutor, a free API port and no scheduled runs. Its own AIRFLOW_HOME (metadata DB): B's
    ``dags test`` runs must not land in the live scheduler's database (it would schedule their tasks)."""
    port = _free_port()
    env = merged_environ(airflow_env(home, find_dags_folder()), box.env)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        {
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            # the scheduler's and triggerer's log servers (8793, 8794 by default) may be taken by
            # another Airflow on the machine
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(_free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(_free_port()),
            "SCALINGO_STAGING_SYNC_SCHEDULE": NO_SCHEDULED_RUN,
            "AIRFLOW__SCALINGO_STAGING_SYNC__SCHEDULE": NO_SCHEDULED_RUN,
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


class LocalAirflow:
    """``airflow standalone`` (scheduler, dag-processor, triggerer, api-server; LocalExecutor, SQLite
    metadata DB) in its own process group, driven through the REST API."""

    def __init__(self, env: dict[str, str], home: Path, log_path: Path):
        self.env, self.home, self.log_path = env, home, log_path
        self.url = env["AIRFLOW__API__BASE_URL"]
        self.db = home / "airflow.db"
        self.proc: subprocess.Popen | None = None
        self._token: str | None = None
        self.started_s: float | None = None
        self.paused = False

    # -- process
    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "w") as out:
            # own session = own process group: stopped as a whole (components, executor workers, tasks)
            self.proc = subprocess.Popen(
                [_airflow_exe(self.env), "standalone"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started = time.monotonic()
        deadline = started + LOCAL_START_TIMEOUT_S
        with Heartbeat("C airflow standalone start-up"):
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"airflow standalone exited ({self.proc.returncode}):\n{self.log_tail()}"
                    )
                if self._healthy() and self._password() and self._dag_ready():
                    self.started_s = round(time.monotonic() - started, 1)
                    return
                time.sleep(1)
        raise RuntimeError(
            f"airflow standalone not ready after {LOCAL_START_TIMEOUT_S} s:\n{self.log_tail()}"
        )

    def processes(self) -> list:
        import psutil

        if self.proc is None:
            return []
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def cpu_s(self) -> float:
        """CPU seconds (user + system) used so far by the stack's live processes."""
        import psutil

        total = 0.0
        for p in self.processes():
            try:
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
            except psutil.Error:
                pass
        return total

    def cpu_by_component(self) -> dict[str, dict[str, float]]:
        """CPU seconds used so far by each component of the stack (api-server, scheduler, ...), live
        processes only: ``own`` (the component's processes) and ``children`` (processes they started
        and waited for: the LocalExecutor worker's task processes, i.e. the DAG's own work)."""
        import psutil

        out: dict[str, dict[str, float]] = {}
        for p in self.processes():
            try:
                name = _component(p.cmdline())
                t = p.cpu_times()
            except psutil.Error:
                continue
            entry = out.setdefault(name, {"own": 0.0, "children": 0.0})
            entry["own"] += t.user + t.system
            entry["children"] += t.children_user + t.children_system
        return out

    def pause(self) -> None:
        """SIGSTOP to the whole process group, so that the idle stack takes no CPU from A and B."""
        if self.proc is not None and self.proc.poll() is None and not self.paused:
            os.killpg(self.proc.pid, signal.SIGSTOP)
            self.paused = True

    def resume(self) -> float:
        """SIGCONT to the process group, then wait until every component reports healthy again (their
        heartbeats are stale after a pause); the seconds that took (not timed in C)."""
        if self.proc is None or not self.paused:
            return 0.0
        os.killpg(self.proc.pid, signal.SIGCONT)
        self.paused = False
        started = time.monotonic()
        deadline = started + LOCAL_START_TIMEOUT_S
        time.sleep(1)
        while time.monotonic() < deadline:
            if self._healthy():
                return round(time.monotonic() - started, 1)
            time.sleep(0.5)
        raise RuntimeError(f"airflow standalone not healthy again after a pause:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL to whatever of it is left after 60 s."""
        import psutil

        if self.proc is None:
            return
        known = self.processes()
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        _, alive = psutil.wait_procs(known, timeout=30)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        self.proc = None

    def executor_loaded(self) -> str | None:
        """The executor the scheduler says it loaded (its log: ``Loaded executor: :LocalExecutor:``)."""
        import re

        try:
            match = re.search(r"Loaded executor: :?(\w+)", self.log_path.read_text(errors="replace"))
        except OSError:
            return None
        return match.group(1) if match else None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "".join(self.log_path.read_text(errors="replace").splitlines(keepends=True)[-lines:])
        except OSError:
            return ""

    # -- REST
    def _password(self) -> str | None:
        try:
            return json.loads((self.home / "simple_auth_manager_passwords.json.generated").read_text())[
                "admin"
            ]
        except (OSError, ValueError, KeyError):
            return None

    def _healthy(self) -> bool:
        import requests

        try:
            health = requests.get(f"{self.url}/api/v2/monitor/health", timeout=5).json()
        except (requests.RequestException, ValueError):
            return False
        components = ("metadatabase", "scheduler", "triggerer", "dag_processor")
        return all((health.get(c) or {}).get("status") == "healthy" for c in components)

    def _dag_ready(self) -> bool:
        import requests

        try:
            return self.api("GET", f"/dags/{DAG_ID}").get("dag_id") == DAG_ID
        except requests.RequestException:
            return False

    def token(self) -> str:
        import requests

        if self._token is None:
            response = requests.post(
                f"{self.url}/auth/token",
                json={"username": "admin", "password": self._password()},
                timeout=60,
            )
            response.raise_for_status()
            self._token = response.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        import requests

        response = requests.request(
            method,
            f"{self.url}/api/v2{path}",
            json=body,
            headers={"Authorization": f"Bearer {self.token()}"},
            timeout=60,
        )
        response.raise_for_status()
        return response.json()

    def unpause(self) -> None:
        self.api("PATCH", f"/dags/{DAG_ID}", {"is_paused": False})

    def trigger(self, conf: dict) -> str:
        return self.api("POST", f"/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": conf})["dag_run_id"]

    def state(self, run_id: str) -> str:
        return self.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")["state"]


def dag_run_times(db: Path, run_id: str) -> dict:
    with _sqlite(db) as conn:
        queued, start, end, state = conn.execute(
            "SELECT queued_at, start_date, end_date, state FROM dag_run WHERE dag_id = ? AND run_id = ?",
            (DAG_ID, run_id),
        ).fetchone()
    return {"queued": _parse_ts(queued), "start": _parse_ts(start), "end": _parse_ts(end), "state": state}


#: the stack's components, by what their command line holds (the first that matches)
COMPONENTS = (
    ("LocalExecutor", "executor workers"),
    ("api_server", "api-server"),
    ("api-server", "api-server"),
    ("dag-processor", "dag-processor"),
    ("scheduler", "scheduler"),
    ("triggerer", "triggerer"),
    ("serve-logs", "serve-logs"),
    ("standalone", "standalone"),
)


def _component(cmdline: list[str]) -> str:
    line = " ".join(cmdline)
    return next((name for key, name in COMPONENTS if key in line), "other")


def cpu_delta(after: dict, before: dict) -> dict[str, dict[str, float]]:
    """Per component, the CPU seconds used between two :meth:`LocalAirflow.cpu_by_component`
    snapshots (a process that ended in between is left out; its waited-for children stay counted)."""
    out = {}
    for name, now in after.items():
        was = before.get(name, {"own": 0.0, "children": 0.0})
        out[name] = {k: round(max(0.0, now[k] - was[k]), 2) for k in ("own", "children")}
    return out


def run_local(box, stack: LocalAirflow, conf: dict | None = None) -> dict:
    """One run of the DAG under the live scheduler: trigger over REST, poll until it ends, then the
    dag_run's start -> end (wall) and the task spans from the metadata DB. ``conf``: the run's conf
    (default: a confirmed run into the sandbox's target app)."""
    conf = conf or {"target_app": box.target_app, "confirm_target": box.target_app}
    audit_dir = Path(box.env["SCALINGO_STAGING_SYNC_AUDIT_DIR"])
    before = set(audit_dir.glob("*.json")) if audit_dir.is_dir() else set()
    checkpoint(box)
    cpu_before = stack.cpu_by_component()
    with Heartbeat("C LocalExecutor run", detail=lambda: running_tasks(stack.db)):
        triggered_at = time.time()
        started = time.monotonic()
        run_id = stack.trigger(conf)
        state = None
        while time.monotonic() - started < LOCAL_RUN_TIMEOUT_S:
            state = stack.state(run_id)
            if state in TERMINAL_STATES:
                break
            if stack.proc is None or stack.proc.poll() is not None:
                raise RuntimeError(f"airflow standalone died during run C:\n{stack.log_tail()}")
            time.sleep(0.5)
        client = time.monotonic() - started
    stack_cpu = cpu_delta(stack.cpu_by_component(), cpu_before)
    times = dag_run_times(stack.db, run_id)
    wall = (times["end"] - times["start"]) if times["start"] and times["end"] else None
    new = sorted(set(audit_dir.glob("*.json")) - before, key=lambda p: p.stat().st_mtime)
    report = json.loads(new[-1].read_text()) if new else {}
    _, tis = task_spans(stack.db, DAG_ID, run_id)
    profile = profile_run(tis, times["start"] or triggered_at, times["end"] or time.time())
    return {
        "wall_s": round(wall, 3) if wall is not None else None,
        "client_s": round(client, 3),
        "queued_s": round(times["start"] - times["queued"], 3)
        if times["start"] and times["queued"]
        else None,
        "state": times["state"] or state,
        "task_states": sorted({t["state"] for t in tis}),
        # the steps the gate skips when the run has nothing for them (no seeds: run_seeds)
        "skipped_tasks": sorted({t["task_id"] for t in tis if t["state"] == "skipped"}),
        "run_id": run_id,
        **audit_fields(report),
        "log_progress": task_log_progress(stack.home, run_id),
        # what the stack's components used while the run went on: its own processes ("own") and
        # the task processes they waited for ("children": the executor workers' are the DAG's tasks)
        "stack_cpu_s": stack_cpu,
        **profile,
    }


#: progress lines that long tasks write to their task log (the README's promise: bytes and rate while
#: downloading, tables while restoring, rows while loading)
PROGRESS_PATTERNS = {
    "download": re.compile(r"bytes.*MB/s"),
    "toc_entries": re.compile(r"\d+/\d+ TOC entries done"),
    "load_rows": re.compile(r"load progress: \S+: \d+ rows"),
}


def task_log_progress(home: Path, run_id: str) -> dict[str, dict[str, int]]:
    """Per task of run C: how many progress lines of each kind its task log files (written by the
    LocalExecutor's task processes under ``$AIRFLOW_HOME/logs``) hold."""
    out: dict[str, dict[str, int]] = {}
    for path in sorted((home / "logs").rglob("*.log")):
        parts = {p.split("=", 1)[0]: p.split("=", 1)[1] for p in path.parts if "=" in p}
        if parts.get("run_id") != run_id or "task_id" not in parts:
            continue
        text = path.read_text(errors="replace")
        counts = out.setdefault(parts["task_id"], dict.fromkeys(PROGRESS_PATTERNS, 0))
        for kind, pattern in PROGRESS_PATTERNS.items():
            counts[kind] += len(pattern.findall(text))
    return out


def c_succeeded(c: dict) -> bool:
    return c["state"] == "success" and c["result"] == "success"


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


#: the masking engines the product ships, against plain COPY: engine (a), the PL/pgSQL BEFORE INSERT
#: trigger, and engine (c), the COPY text masked on the worker by DuckDB (anonymize.stream; its CPU is
#: the worker's plus the backend's); benchmarks/engines.py measures the alternatives that were not shipped
SHIPPED_ENGINES = ("trigger", "stream")
ENGINES_DB = "engines_bench"


def engine_costs(pg, scale: float, rounds: int) -> dict:
    """CPU µs per masked row of each shipped masking engine, by benchmarks/engines.py (the backend's
    CPU around a COPY of the table's text from memory into a fresh table, with and without the
    engine; rounds alternate in a rotating order, medians) on its own datagen dataset at ``scale``."""
    import engines as eng
    from psycopg import sql

    names = ["none", *SHIPPED_ENGINES]
    started = time.monotonic()
    pg.create_database(ENGINES_DB)
    try:
        generate(pg.conninfo(ENGINES_DB), scale)
        copy_text: dict[str, bytes] = {}
        rows: dict[str, int] = {}
        with pg.connect(ENGINES_DB) as conn:
            for table in eng.TABLES:
                buf = bytearray()
                with conn.cursor().copy(sql.SQL("COPY {} TO STDOUT").format(sql.Identifier(table))) as cp:
                    for chunk in cp:
                        buf += chunk
                copy_text[table] = bytes(buf)
                rows[table] = buf.count(b"\n")
        bench = eng.Bench(pg, ENGINES_DB, copy_text)
        try:
            measured = {
                table: eng.compare(bench, table, specs, names, rounds, rows[table])
                for table, specs in eng.TABLES.items()
            }
        finally:
            bench.conn.close()
    finally:
        pg.drop_database(ENGINES_DB)
    tables = {}
    for table, res in measured.items():
        entry = {
            "rows": res["rows"],
            "masked_columns": sorted(eng.TABLES[table]),
            "none_cpu_us_per_row": res["engines"]["none"]["cpu_us_per_row"],
        }
        for name in SHIPPED_ENGINES:
            e = res["engines"][name]
            # every row of these tables is masked: extra µs per row = extra µs per masked row
            entry[f"{name}_cpu_us_per_row"] = e["cpu_us_per_row"]
            entry[f"{name}_extra_us_per_masked_row"] = e["extra_cpu_us_per_row_vs_none"]
            entry[f"{name}_cpu_ratio_vs_none"] = e["cpu_ratio_vs_none"]
        entry["raw"] = res
        tables[table] = entry
    return {
        "scale": scale,
        "rounds": rounds,
        "engines": names,
        "postgres": pg.version,
        "measure": "backend CPU (utime + stime, /proc) of COPY from memory into a fresh table; medians",
        "tables": tables,
        "elapsed_s": round(time.monotonic() - started, 1),
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


def _phases_median(runs: list[dict]) -> dict:
    task_ids = list(dict.fromkeys(t for r in runs for t in r["tasks"]))
    return {
        t: {
            "span_s": _median([r["tasks"][t]["span_s"] for r in runs if t in r["tasks"]]),
            "sum_s": _median([r["tasks"][t]["sum_s"] for r in runs if t in r["tasks"]]),
            "instances": max(r["tasks"][t]["instances"] for r in runs if t in r["tasks"]),
        }
        for t in task_ids
    }


def summarize_local(a: float | None, c_runs: list[dict]) -> dict:
    """Run C (LocalExecutor): wall = the dag_run's start -> end in the metadata DB."""
    c_wall = _median([r["wall_s"] for r in c_runs])
    c_data = _median([r["data_phases_s"] for r in c_runs])
    ratio_i = round(c_wall / a, 3) if a and c_wall else None
    ratio_ii = round(c_data / a, 3) if a and c_data else None
    return {
        "C_wall_median_s": c_wall,
        "C_client_median_s": _median([r["client_s"] for r in c_runs]),
        "C_queued_median_s": _median([r["queued_s"] for r in c_runs]),
        "C_data_phases_median_s": c_data,
        "ratio_i_local": ratio_i,
        "ratio_ii_local": ratio_ii,
        "ratio_i_local_client": round(_median([r["client_s"] for r in c_runs]) / a, 3)
        if a and c_runs
        else None,
        "target_ratio_i_local": TARGET_RATIO_WALL_LOCAL,
        "target_ratio_ii_local": TARGET_RATIO_DATA_LOCAL,
        "ratio_i_local_met": ratio_i is not None and ratio_i <= TARGET_RATIO_WALL_LOCAL,
        "ratio_ii_local_met": ratio_ii is not None and ratio_ii <= TARGET_RATIO_DATA_LOCAL,
        "C_phases_median": _phases_median(c_runs),
        "C_airflow_median": {
            k: _median([r[k] for r in c_runs])
            for k in ("startup_s", "between_tasks_s", "shutdown_s", "tasks_busy_s", "data_window_s")
        },
        "C_max_parallel_tasks": max((r["max_parallel_tasks"] for r in c_runs), default=None),
        "C_stack_cpu_median_s": _stack_cpu_median(c_runs),
        "all_c_success": bool(c_runs) and all(c_succeeded(r) for r in c_runs),
    }


def _stack_cpu_median(c_runs: list[dict]) -> dict[str, dict[str, float]]:
    """Per component of the LocalExecutor stack, the median CPU seconds it used during a C run."""
    names = dict.fromkeys(n for r in c_runs for n in r.get("stack_cpu_s") or {})
    return {
        name: {
            k: _median([(r.get("stack_cpu_s") or {}).get(name, {}).get(k, 0.0) for r in c_runs])
            for k in ("own", "children")
        }
        for name in names
    }


def summarize(
    a_runs: list[float],
    b_runs: list[dict],
    c_runs: list[dict] | None = None,
    t_runs: list[dict] | None = None,
) -> dict:
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
    b_dag_run = _median([r.get("dag_run_s") for r in b_runs])
    ratio_i_dag_run = round(b_dag_run / a, 3) if a and b_dag_run else None
    return {
        "A_median_s": a,
        "B_wall_median_s": b_wall,
        "B_dag_run_median_s": b_dag_run,
        "B_data_phases_median_s": b_data,
        "ratio_i_wall": ratio_i,
        "ratio_i_dag_run": ratio_i_dag_run,
        "ratio_ii_data": ratio_ii,
        "target_ratio_i": TARGET_RATIO_WALL,
        "target_ratio_ii": TARGET_RATIO_DATA,
        "ratio_i_met": ratio_i is not None and ratio_i <= TARGET_RATIO_WALL,
        "ratio_i_dag_run_met": ratio_i_dag_run is not None and ratio_i_dag_run <= TARGET_RATIO_WALL,
        "ratio_ii_met": ratio_ii is not None and ratio_ii <= TARGET_RATIO_DATA,
        "phases_median": phases,
        "airflow_median": overhead,
        "all_b_success": all(r["result"] == "success" and r["returncode"] == 0 for r in b_runs),
        "engine": _b_engine(b_runs),
        "trigger_engine": _per_engine(a, t_runs or []),
        **summarize_local(a, c_runs or []),
    }


def _b_engine(b_runs: list[dict]) -> str:
    """Which engine masked B's on-load tables (the audit report's ``engine`` of each table)."""
    engines = {t.get("engine") for r in b_runs for t in r.get("audit_tables") or [] if t.get("engine")}
    return "+".join(sorted(engines)) or "none"


def _per_engine(a: float | None, runs: list[dict]) -> dict | None:
    """(i) and (ii) of the B runs made with another masking engine (the same A)."""
    if not runs:
        return None
    wall = _median([r["wall_s"] for r in runs])
    data = _median([r["data_phases_s"] for r in runs])
    return {
        "B_wall_median_s": wall,
        "B_data_phases_median_s": data,
        "ratio_i_wall": round(wall / a, 3) if a and wall else None,
        "ratio_ii_data": round(data / a, 3) if a and data else None,
        "all_success": all(r["result"] == "success" and r["returncode"] == 0 for r in runs),
    }


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(result: dict) -> None:
    s = result["summary"]
    print()
    print("=" * 100)
    print(
        f"make bench: scale {result['scale']} ({result['dataset']['users']} users, {result['dataset']['orders']} "
        f"orders, {result['dataset']['events']} events; dump {result['dataset']['dump_bytes'] / 1e6:.0f} MB), "
        f"jobs {result['jobs']}"
    )
    print(
        "A = bare pg_restore; B = airflow dags test; C = a triggered run under the LocalExecutor "
        "(airflow standalone)"
    )
    print("=" * 100)
    print(
        f"{'run':<5}{'A (s)':>9}{'B wall (s)':>12}{'B data (s)':>12}{'B result':>10}"
        f"{'C wall (s)':>12}{'C client (s)':>14}{'C data (s)':>12}{'C result':>10}"
    )
    a_runs, b_runs, c_runs = result["runs"]["A_s"], result["runs"]["B"], result["runs"].get("C") or []
    for i in range(max(len(a_runs), len(b_runs), len(c_runs))):
        a = f"{a_runs[i]:.2f}" if i < len(a_runs) else "-"
        b = b_runs[i] if i < len(b_runs) else None
        c = c_runs[i] if i < len(c_runs) else None
        print(
            f"{i + 1:<5}{a:>9}{_fmt(b and b['wall_s'], '.2f'):>12}{_fmt(b and b['data_phases_s'], '.2f'):>12}"
            f"{str(b['result']) if b else '-':>10}{_fmt(c and c['wall_s'], '.2f'):>12}"
            f"{_fmt(c and c['client_s'], '.2f'):>14}{_fmt(c and c['data_phases_s'], '.2f'):>12}"
            f"{str(c['result']) if c else '-':>10}"
        )
    print(
        f"{'median':<5}{_fmt(s['A_median_s'], '.2f'):>9}{_fmt(s['B_wall_median_s'], '.2f'):>12}"
        f"{_fmt(s['B_data_phases_median_s'], '.2f'):>12}{'':>10}{_fmt(s['C_wall_median_s'], '.2f'):>12}"
        f"{_fmt(s['C_client_median_s'], '.2f'):>14}{_fmt(s['C_data_phases_median_s'], '.2f'):>12}"
    )

    def verdict(met: bool) -> str:
        return "met" if met else "NOT met"

    print(
        f"ratio (i)        B wall / A        = {_fmt(s['ratio_i_wall'], '.3f')}  (target <= {TARGET_RATIO_WALL}: "
        f"{verdict(s['ratio_i_met'])})"
    )
    print(
        f"ratio (i) run    B DAG run / A     = {_fmt(s.get('ratio_i_dag_run'), '.3f')}  (the dag_run's start -> end, "
        f"as C's wall: {_fmt(s.get('B_dag_run_median_s'), '.2f')} s; target <= {TARGET_RATIO_WALL}: "
        f"{verdict(bool(s.get('ratio_i_dag_run_met')))})"
    )
    print(
        f"ratio (ii)       B data phases / A = {_fmt(s['ratio_ii_data'], '.3f')}  (target <= {TARGET_RATIO_DATA}: "
        f"{verdict(s['ratio_ii_met'])})"
    )
    te = s.get("trigger_engine")
    if te:
        print(
            f"B's masking engine: {s['engine']}; with the trigger engine (T runs): (i) = "
            f"{_fmt(te['ratio_i_wall'], '.3f')}, (ii) = {_fmt(te['ratio_ii_data'], '.3f')} "
            f"(B wall {_fmt(te['B_wall_median_s'], '.2f')} s, data phases {_fmt(te['B_data_phases_median_s'], '.2f')} s)"
        )
    print(
        f"ratio (i-local)  C wall / A        = {_fmt(s['ratio_i_local'], '.3f')}  (target <= "
        f"{TARGET_RATIO_WALL_LOCAL}: {verdict(s['ratio_i_local_met'])}; trigger -> finished / A = "
        f"{_fmt(s['ratio_i_local_client'], '.3f')})"
    )
    print(
        f"ratio (ii-local) C data phases / A = {_fmt(s['ratio_ii_local'], '.3f')}  (target <= "
        f"{TARGET_RATIO_DATA_LOCAL}: {verdict(s['ratio_ii_local_met'])})"
    )
    print(
        "C wall = the dag_run's start_date -> end_date in the metadata DB; C client = POST dagRuns -> the "
        "client sees it finished (0.5 s polls)"
    )
    print()
    print(
        "per task (median over runs; span = wall clock first start -> last end, sum = over map indexes; "
        "task start = B's [DAG TEST] start -> Task started):"
    )
    print(
        f"  {'task':<24}{'B span (s)':>11}{'B sum (s)':>10}{'n':>4}{'% of B':>8}{'task start':>11}"
        f"{'C span (s)':>11}{'C sum (s)':>10}{'% of C':>8}"
    )
    c_phases = s.get("C_phases_median") or {}
    for task_id in dict.fromkeys([*s["phases_median"], *c_phases]):
        p = s["phases_median"].get(task_id)
        q = c_phases.get(task_id)
        b_share = (
            f"{100 * (p['span_s'] or 0) / s['B_wall_median_s']:.1f}%" if p and s["B_wall_median_s"] else "-"
        )
        c_share = (
            f"{100 * (q['span_s'] or 0) / s['C_wall_median_s']:.1f}%" if q and s["C_wall_median_s"] else "-"
        )
        start = _fmt(p and p.get("start_overhead_s"), ".2f")
        print(
            f"  {task_id:<24}{_fmt(p and p['span_s'], '.2f'):>11}{_fmt(p and p['sum_s'], '.2f'):>10}"
            f"{(p or q)['instances']:>4}{b_share:>8}{start:>11}{_fmt(q and q['span_s'], '.2f'):>11}"
            f"{_fmt(q and q['sum_s'], '.2f'):>10}{c_share:>8}"
        )
    o = s["airflow_median"]
    co = s.get("C_airflow_median") or {}
    for label, key in (
        ("(airflow start-up)", "startup_s"),
        ("(between tasks)", "between_tasks_s"),
        ("(after last task)", "shutdown_s"),
    ):
        print(f"  {label:<24}{_fmt(o[key], '.2f'):>11}{'':>33}{_fmt(co.get(key), '.2f'):>11}")
    local = result.get("local") or {}
    idle = [e["local_stack_cpu_s"] for e in result["runs"]["order_and_load"] if "local_stack_cpu_s" in e]
    print(
        f"C: {local.get('executor')} (the scheduler loaded {local.get('executor_loaded')}) with a "
        f"{local.get('metadata_db')} metadata DB; start-up {local.get('start_up_s')} s "
        f"(not timed); queued -> running {_fmt(s['C_queued_median_s'], '.2f')} s (median); at most "
        f"{s['C_max_parallel_tasks']} task instances at once; the idle stack used "
        f"{', '.join(f'{x:.1f}' for x in idle) or '-'} CPU s during the A and B runs"
    )
    stack_cpu = s.get("C_stack_cpu_median_s") or {}
    if stack_cpu:
        parts = [
            f"{name} {v['own']:.2f}"
            + (f" (+ {v['children']:.2f} in the task processes)" if v["children"] else "")
            for name, v in sorted(stack_cpu.items(), key=lambda kv: -kv[1]["own"])
        ]
        print(f"C: CPU s of the stack's components during a run (median): {', '.join(parts)}")
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
    if "engines" in extras:
        e = extras["engines"]
        print(
            f"masking engines, CPU µs per row (PostgreSQL {e['postgres']}, scale {e['scale']}, medians of "
            f"{e['rounds']} rounds; benchmarks/engines.py):"
        )
        print(
            f"  {'table':<10}{'rows':>10}{'masked cols':>13}{'none':>9}"
            + "".join(f"{name:>10}{'extra/masked row':>18}" for name in SHIPPED_ENGINES)
        )
        for table, t in e["tables"].items():
            print(
                f"  {table:<10}{t['rows']:>10}{len(t['masked_columns']):>13}{t['none_cpu_us_per_row']:>9.2f}"
                + "".join(
                    f"{t[f'{name}_cpu_us_per_row']:>10.2f}{t[f'{name}_extra_us_per_masked_row']:>18.2f}"
                    for name in SHIPPED_ENGINES
                )
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
    extra = "\n    columns:\n      created_at: date_shift" if args.with_timestamps else ""
    rules.write_text(
        RULES_TEMPLATE.format(
            source_app=SOURCE_APP,
            jobs=jobs,
            users_extra=extra,
            orders_extra="\n      created_at: date_shift" if args.with_timestamps else "",
        )
    )
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
    quiet_production(box)
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
        t_runs: list[dict] = []  # B with the trigger engine, when B streams (DuckDB installed)
        c_runs: list[dict] = []
        loads: list[dict] = []
        from scalingo_staging_sync.anonymize.stream import duckdb_available

        trigger_env = {**env, "AIRFLOW__SCALINGO_STAGING_SYNC__MASKING_ENGINE": "trigger"}
        kinds = ("A", "B", "T", "C") if args.trigger_runs and duckdb_available() else ("A", "B", "C")
        local_home = base / "airflow-local"
        local_env = local_airflow_env(local_home, box)
        extra_env = dict(item.split("=", 1) for item in args.local_env)
        local_env.update(extra_env)
        stack = LocalAirflow(local_env, local_home, base / "airflow-standalone.log")
        local: dict = {
            "executor": "LocalExecutor",
            "metadata_db": "sqlite",
            "log": str(stack.log_path),
            "extra_env": extra_env,
            "paused_during_A_and_B": args.pause_stack,
        }
        try:
            log(f"C: starting airflow standalone (LocalExecutor, SQLite; not timed) on {stack.url}...")
            stack.start()
            stack.unpause()
            local["start_up_s"] = stack.started_s
            local["executor_loaded"] = stack.executor_loaded()
            log(f"C: scheduler, dag-processor, triggerer and api-server healthy in {stack.started_s} s")
            if args.warmup:
                # the first bulk load into a fresh server was 20-66 % slower than the next ones (new WAL
                # segment files, cold caches): one bare restore, not timed, before the runs
                if args.pause_stack:
                    stack.pause()
                log(f"warm-up (not timed): pg_restore -j{jobs} into an empty database")
                local["warmup_A_s"] = round(run_bare(box, dump, jobs), 3)
                log(f"warm-up: {local['warmup_A_s']:.2f} s")
                # the first task a fresh stack ever runs took 3.0-3.7 s longer than the same task in the
                # runs after it (the task-side imports of a new LocalExecutor worker): a long-lived
                # production stack pays that once, not per sync. One dry run, not timed, pays it here
                stack.resume()
                log("warm-up (not timed): one dry run of the DAG under the LocalExecutor")
                warm = run_local(box, stack, conf={"target_app": box.target_app, "dry_run": True})
                local["warmup_C_dry_run"] = {"wall_s": warm["wall_s"], "state": warm["state"]}
                log(f"warm-up: dry run {warm['state']} in {warm['wall_s']} s")
            for i in range(args.repeat):
                for kind in kinds if i % 2 == 0 else kinds[::-1]:
                    if kind == "C":
                        resumed = stack.resume()
                        if resumed:
                            local.setdefault("resume_s", []).append(resumed)
                    elif args.pause_stack:
                        stack.pause()  # A and B measure themselves, not the idle stack next to them
                    settled = settle(box)
                    if settled["autovacuum_workers"]:
                        log(
                            f"run {i + 1}/{args.repeat} {kind}: waited {settled['waited_s']} s for "
                            f"{settled['autovacuum_workers']} autovacuum worker(s) on staging (not timed; "
                            f"{settled['still_running']} still running)"
                        )
                    log(
                        f"run {i + 1}/{args.repeat} {kind}: sync of {_fmt(settled['dirty_mb'], '.0f')} MB of "
                        f"dirty pages took {settled['sync_s']} s (not timed)"
                    )
                    load = _loadavg()
                    stack_cpu = stack.cpu_s()
                    if kind == "A":
                        log(
                            f"run {i + 1}/{args.repeat} A: pg_restore -j{jobs} --no-owner --no-acl into an empty database"
                        )
                        a_runs.append(round(run_bare(box, dump, jobs), 3))
                        log(f"run {i + 1}/{args.repeat} A: {a_runs[-1]:.2f} s (load average before {load})")
                    elif kind in ("B", "T"):
                        # B: the default engine (auto: stream when DuckDB is installed); T: the trigger
                        log_path = base / f"dags-test-{kind}-{i + 1}.log"
                        engine = "masking_engine trigger" if kind == "T" else "default masking engine"
                        log(
                            f"run {i + 1}/{args.repeat} {kind}: airflow dags test {DAG_ID}, {engine} (log {log_path})"
                        )
                        b = run_dag(box, trigger_env if kind == "T" else env, home, log_path)
                        (t_runs if kind == "T" else b_runs).append(b)
                        log(
                            f"run {i + 1}/{args.repeat} {kind}: {b['wall_s']:.2f} s, data phases {b['data_phases_s']:.2f} s, "
                            f"result {b['result']!r} (load average before {load})"
                        )
                        if b["result"] != "success" or b["returncode"]:
                            log(f"  {kind} did not succeed: stopped at {b['stopped_at']}; see {log_path}")
                    else:
                        log(f"run {i + 1}/{args.repeat} C: trigger {DAG_ID} under the LocalExecutor (REST)")
                        c = run_local(box, stack)
                        c_runs.append(c)
                        log(
                            f"run {i + 1}/{args.repeat} C: {_fmt(c['wall_s'], '.2f')} s (dag_run start -> end; "
                            f"trigger -> finished {c['client_s']:.2f} s), data phases {c['data_phases_s']:.2f} s, "
                            f"state {c['state']!r}, result {c['result']!r} (load average before {load})"
                        )
                        if not c_succeeded(c):
                            log(f"  C did not succeed: stopped at {c['stopped_at']}; see {stack.log_path}")
                    entry = {"run": i + 1, "kind": kind, "loadavg_before": load, "settle": settled}
                    if kind != "C":
                        # the idle LocalExecutor stack runs next to A and B: what it took meanwhile
                        entry["local_stack_cpu_s"] = round(stack.cpu_s() - stack_cpu, 2)
                    loads.append(entry)
        finally:
            log("C: stopping airflow standalone (its whole process group)")
            if stack.paused and stack.proc is not None:
                os.killpg(stack.proc.pid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
                stack.paused = False
            stack.stop()

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
        if not args.skip_extras or args.quick:
            log(
                f"extra: CPU per masked row of the shipped masking engine (benchmarks/engines.py: "
                f"{', '.join(['none', *SHIPPED_ENGINES])}; scale {args.engines_scale}, {args.engines_rounds} rounds)"
            )
            extras["engines"] = engine_costs(box.prod, args.engines_scale, args.engines_rounds)
        machine["loadavg_start"] = load_avg_start
        machine["loadavg_end"] = _loadavg()
        return {
            "benchmark": "make bench",
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "scale": args.scale,
            "jobs": jobs,
            "with_timestamps": args.with_timestamps,
            "repeat": args.repeat,
            "dataset": dataset,
            "machine": machine,
            "code": code,
            "runs": {"A_s": a_runs, "B": b_runs, "B_trigger": t_runs, "C": c_runs, "order_and_load": loads},
            "local": local,
            "summary": summarize(a_runs, b_runs, c_runs, t_runs),
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
        "--no-pause-stack",
        dest="pause_stack",
        action="store_false",
        help="leave C's idle airflow standalone running during A and B (by default it is stopped with SIGSTOP)",
    )
    parser.add_argument(
        "--no-trigger-runs",
        dest="trigger_runs",
        action="store_false",
        help="no T runs (B with masking_engine trigger, made when B streams)",
    )
    parser.add_argument(
        "--no-warmup",
        dest="warmup",
        action="store_false",
        help="no untimed bare restore and DAG dry run before the runs (by default they warm the fresh "
        "staging server and LocalExecutor stack up)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work dir (dump, logs, audit, AIRFLOW_HOME)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: scale 0.01, 1 repeat, no extras but the engine figures at scale 0.01",
    )
    parser.add_argument(
        "--engines-scale",
        type=float,
        default=None,
        help="dataset scale of the engine figures (default 0.1; 0.01 with --quick)",
    )
    parser.add_argument(
        "--engines-rounds", type=int, default=3, help="rounds of the engine figures (default 3)"
    )
    parser.add_argument(
        "--local-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment of C's airflow standalone (e.g. a scheduler setting), repeatable",
    )
    parser.add_argument(
        "--with-timestamps",
        action="store_true",
        help="the rules also shift users.created_at and orders.created_at (date_shift on timestamptz): "
        "tables the stream engine left to their trigger before 2026-12-06",
    )
    parser.add_argument("--results-dir", type=Path, default=HERE / "results", help="where the JSON goes")
    args = parser.parse_args(argv)
    bad = [item for item in args.local_env if "=" not in item or not item.split("=", 1)[0]]
    if bad:
        parser.error(f"--local-env takes KEY=VALUE, not {bad[0]!r}")
    if args.quick:
        args.scale, args.repeat, args.skip_extras, args.warmup = 0.01, 1, True, False
    if args.engines_scale is None:
        args.engines_scale = 0.01 if args.quick else 0.1
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    # a background run stopped with SIGTERM still stops its embedded servers (finally: in run())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = run(args)
    path = write_results(result, args.results_dir)
    print_table(result)
    print(f"results: {path} (and {path.parent / 'latest.json'})")
    ok = result["summary"]["all_b_success"] and result["summary"]["all_c_success"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
