"""Airflow's fixed overhead, and the provider's share of it (issue 14, part 3).

    PYTHONPATH=provider .venv/bin/python benchmarks/overhead.py [--repeat 5] [--runs 3] [--json out.json]

Three measurements, all real (embedded PostgreSQL, the fake Scalingo API over HTTP, Airflow's own
``dag.test()``); the instrumentation only wraps real calls to time and count them:

1. **Imports** (``--repeat`` fresh interpreters per module, medians): the cost of importing each
   operator module and the reference DAG after ``import airflow.sdk`` (Airflow's own, reported as the
   baseline), the heavy third-party packages each one pulls in, and what a task pays at start in a
   fresh worker process (DAG file parsed, then the modules its ``execute`` imports lazily).
2. **The gate's execute, phase by phase**, on a sandbox (``scalingo_staging_sync.testing.sandbox``):
   rules load + validation, settings, the staging connection read, the salt, the leftovers recovery,
   each preflight check, every Scalingo API request and every PostgreSQL connection opened.
3. **Per-task start-up** in ``dag.test()`` runs of the reference DAG (``--runs``; the first one also
   starts Airflow's in-process execution API): from Airflow starting the task to the operator's
   ``execute``, split into our imports, the template XCom pulls and the rest (Airflow's own), plus per
   task the PostgreSQL connections, Scalingo requests, subprocesses, execution-API messages, XCom pulls
   (by key) and pushes, and the XCom rows in the metadata DB.
"""

from __future__ import annotations

import argparse
import ast
import builtins
import functools
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DAG_FILE = REPO / "dags" / "scalingo_staging_sync.py"
OPERATORS = ("gate", "backup", "restore", "plan", "masking", "anonymize", "pii_scan", "verify", "promote")
OPERATORS += ("post_sync", "audit")
#: third-party packages worth naming when a module pulls them in
HEAVY = (
    "pglast",
    "jsonschema",
    "yaml",
    "httpx",
    "requests",
    "urllib3",
    "psycopg",
    "psycopg2",
    "psycopg_binary",
    "sqlparse",
    "tenacity",
    "boto3",
    "botocore",
    "aiobotocore",
    "s3fs",
    "fsspec",
    "slack_sdk",
    "pydantic",
    "pendulum",
    "sqlalchemy",
    "tarfile",
)


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 4) if values else None


def log(msg: str) -> None:
    print(f"[overhead {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ============================================================================ 1. imports
IMPORT_SNIPPET = r"""
import importlib, json, sys, time
heavy = set(sys.argv[3].split(","))
def load(names):
    before = set(sys.modules)
    t = time.perf_counter()
    for name in names:
        importlib.import_module(name)
    dt = time.perf_counter() - t
    new = set(sys.modules) - before
    return dt, len(new), sorted({n.split(".")[0] for n in new} & heavy)
t0 = time.perf_counter()
import airflow.sdk  # Airflow's own import cost: the baseline every task pays anyway
airflow_s = time.perf_counter() - t0
out = {"airflow_sdk_s": airflow_s}
target = sys.argv[1]
lazy = [n for n in sys.argv[2].split(",") if n]
if target.endswith(".py"):  # the DAG file, parsed like the DAG processor does
    import importlib.util
    t = time.perf_counter()
    before = set(sys.modules)
    spec = importlib.util.spec_from_file_location("ref_dag", target)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    new = set(sys.modules) - before
    out.update(module_s=time.perf_counter() - t, module_new=len(new),
               module_heavy=sorted({n.split(".")[0] for n in new} & heavy))
else:
    out["module_s"], out["module_new"], out["module_heavy"] = load([target])
if lazy:  # what the task's execute imports on top, in a worker that has parsed the DAG file
    import importlib.util
    spec = importlib.util.spec_from_file_location("ref_dag", sys.argv[4])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out["lazy_s"], out["lazy_new"], out["lazy_heavy"] = load(lazy)
print(json.dumps(out))
"""


def lazy_imports(module: str) -> list[str]:
    """The provider / third-party modules a module imports inside its functions (what its tasks load
    at execute time, every code path counted), read from its source."""
    import importlib.util

    path = Path(importlib.util.find_spec(module).origin)  # the package on PYTHONPATH (a worktree or not)
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import):
                    names.update(a.name for a in inner.names)
                elif isinstance(inner, ast.ImportFrom) and inner.module and not inner.level:
                    names.add(inner.module)
    return sorted(n for n in names if n != "importlib")


def subprocess_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        }
    )
    return env


def import_costs(repeat: int) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="sss-overhead-imports-"))
    env = subprocess_env(home)
    targets = [(f"scalingo_staging_sync.operators.{m}", True) for m in OPERATORS]
    targets += [("scalingo_staging_sync.example_dags.reference", False), (str(DAG_FILE), False)]
    samples: dict[str, list[dict]] = defaultdict(list)
    walls: dict[str, list[float]] = defaultdict(list)
    for round_ in range(repeat):
        # process wall time: bare `import airflow.sdk` vs the DAG file parse on top (one each per round)
        for label, code in (
            ("python -c 'import airflow.sdk'", "import airflow.sdk"),
            (
                "python -c 'import airflow.sdk; <parse the DAG file>'",
                "import airflow.sdk, runpy; runpy.run_path(" + repr(str(DAG_FILE)) + ")",
            ),
        ):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
            walls[label].append(time.perf_counter() - started)
        order = targets if round_ % 2 == 0 else list(reversed(targets))
        for target, with_lazy in order:
            lazy = lazy_imports(target) if with_lazy else []
            proc = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    IMPORT_SNIPPET,
                    target,
                    ",".join(lazy),
                    ",".join(HEAVY),
                    str(DAG_FILE),
                ],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            samples[target].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    out: dict[str, Any] = {"repeat": repeat, "process_wall_s": {k: median(v) for k, v in walls.items()}}
    out["process_wall_s"]["DAG file parse (difference)"] = round(
        out["process_wall_s"]["python -c 'import airflow.sdk; <parse the DAG file>'"]
        - out["process_wall_s"]["python -c 'import airflow.sdk'"],
        4,
    )
    modules = {}
    for target, runs in samples.items():
        entry = {
            "airflow_sdk_s": median([r["airflow_sdk_s"] for r in runs]),
            "module_s": median([r["module_s"] for r in runs]),
            "module_new_modules": runs[-1]["module_new"],
            "module_heavy": runs[-1]["module_heavy"],
        }
        if "lazy_s" in runs[-1]:
            entry.update(
                lazy_imports=lazy_imports(target),
                lazy_s=median([r["lazy_s"] for r in runs]),
                lazy_new_modules=runs[-1]["lazy_new"],
                lazy_heavy=runs[-1]["lazy_heavy"],
            )
        modules[target.replace(str(REPO) + "/", "")] = entry
    out["modules"] = modules
    return out


# ============================================================================ 2 + 3. dag.test runs
class Probe:
    """Wraps real calls (never replaces them) to attribute time and counts to the running task and,
    inside the gate, to the gate's phase."""

    def __init__(self) -> None:
        self.task: tuple[str, int] | None = None
        self.phases: list[str] = []
        self.in_execute = False
        self.tasks: dict[tuple[str, int], dict[str, Any]] = {}
        self.gate: dict[str, Any] = {}
        self._import_depth = 0

    # ---------------------------------------------------------------- bookkeeping
    def rec(self) -> dict[str, Any] | None:
        if self.task is None:
            return None
        return self.tasks.setdefault(
            self.task,
            {
                "pg_connects": [],
                "scalingo_requests": [],
                "subprocesses": [],
                "api_messages": Counter(),
                "xcom_pulls": [],
                "xcom_pushes": [],
                "imports_before_execute_s": 0.0,
                "imports_in_execute_s": 0.0,
                "modules_loaded": 0,
                "template_pull_s": 0.0,
            },
        )

    def phase_name(self) -> str | None:
        return self.phases[-1] if self.phases else None

    def timed_phase(self, name: str, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            self.phases.append(name)
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.phases.pop()
                if self.task and self.task[0] == "safety_gate":
                    self.gate.setdefault(name, 0.0)
                    self.gate[name] += time.perf_counter() - started

        return wrapper

    # ---------------------------------------------------------------- install
    def install(self) -> None:
        import psycopg
        from airflow.sdk.definitions import dag as dag_module
        from airflow.sdk.execution_time import supervisor, task_runner

        probe = self

        real_import = builtins.__import__

        def timed_import(name, globals=None, locals=None, fromlist=(), level=0):
            if probe._import_depth or probe.task is None:
                return real_import(name, globals, locals, fromlist, level)
            before = len(sys.modules)
            probe._import_depth += 1
            started = time.perf_counter()
            try:
                return real_import(name, globals, locals, fromlist, level)
            finally:
                probe._import_depth -= 1
                loaded = len(sys.modules) - before
                if loaded:
                    rec = probe.rec()
                    key = "imports_in_execute_s" if probe.in_execute else "imports_before_execute_s"
                    rec[key] += time.perf_counter() - started
                    rec["modules_loaded"] += loaded

        builtins.__import__ = timed_import

        real_run_task = dag_module._run_task

        def run_task(*, ti, task, run_triggerer=False):
            probe.task = (ti.task_id, ti.map_index)
            rec = probe.rec()
            rec.setdefault("run_task_start", time.perf_counter())
            try:
                return real_run_task(ti=ti, task=task, run_triggerer=run_triggerer)
            finally:
                rec["run_task_end"] = time.perf_counter()
                probe.task = None

        dag_module._run_task = run_task

        real_connect = psycopg.connect

        def connect(*args, **kwargs):
            started = time.perf_counter()
            try:
                return real_connect(*args, **kwargs)
            finally:
                rec = probe.rec()
                if rec is not None:
                    rec["pg_connects"].append(
                        {"phase": probe.phase_name(), "s": round(time.perf_counter() - started, 4)}
                    )

        psycopg.connect = connect

        real_popen_init = subprocess.Popen.__init__

        def popen_init(self, args, *a, **kw):
            rec = probe.rec()
            if rec is not None:
                argv = args if isinstance(args, (list, tuple)) else [args]
                rec["subprocesses"].append(
                    {"cmd": " ".join(Path(str(argv[0])).name.split()[:1] + [str(x) for x in argv[1:2]])}
                )
            return real_popen_init(self, args, *a, **kw)

        subprocess.Popen.__init__ = popen_init

        real_send = supervisor.InProcessSupervisorComms.send

        def comms_send(self, msg):
            rec = probe.rec()
            if rec is not None:
                rec["api_messages"][type(msg).__name__] += 1
            return real_send(self, msg)

        supervisor.InProcessSupervisorComms.send = comms_send

        real_pull = task_runner.RuntimeTaskInstance.xcom_pull

        def xcom_pull(self, task_ids=None, dag_id=None, key="return_value", *args, **kwargs):
            started = time.perf_counter()
            try:
                return real_pull(self, task_ids, dag_id, key, *args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                rec = probe.rec()
                if rec is not None:
                    rec["xcom_pulls"].append(
                        {"task_ids": str(task_ids), "key": key, "in_execute": probe.in_execute}
                    )
                    if not probe.in_execute:
                        rec["template_pull_s"] += elapsed

        task_runner.RuntimeTaskInstance.xcom_pull = xcom_pull

        real_push = task_runner._xcom_push

        def xcom_push(ti, key, value, *args, **kwargs):
            rec = probe.rec()
            if rec is not None:
                rec["xcom_pushes"].append({"key": key, "bytes": len(json.dumps(value, default=str))})
            return real_push(ti, key, value, *args, **kwargs)

        task_runner._xcom_push = xcom_push
        self._wrap_operators()
        self._wrap_gate()

    def _wrap_operators(self) -> None:
        import importlib

        probe = self
        for name in OPERATORS:
            module = importlib.import_module(f"scalingo_staging_sync.operators.{name}")
            for obj in vars(module).values():
                if not isinstance(obj, type) or obj.__module__ != module.__name__:
                    continue
                for meth in ("execute", "execute_complete"):
                    fn = obj.__dict__.get(meth)
                    if fn is None or getattr(fn, "_overhead_probe", False):
                        continue

                    def make(fn):
                        @functools.wraps(fn)
                        def wrapper(self, *args, **kwargs):
                            rec = probe.rec()
                            if rec is not None:
                                rec.setdefault("execute_start", time.perf_counter())
                            probe.in_execute = True
                            try:
                                return fn(self, *args, **kwargs)
                            finally:
                                probe.in_execute = False
                                if rec is not None:
                                    rec["execute_end"] = time.perf_counter()

                        wrapper._overhead_probe = True
                        return wrapper

                    setattr(obj, meth, make(fn))

    def _wrap_gate(self) -> None:
        from scalingo_staging_sync import config, preflight, settings
        from scalingo_staging_sync.anonymize import rules, salt
        from scalingo_staging_sync.hooks import postgres
        from scalingo_staging_sync.operators import gate
        from scalingo_staging_sync.scalingo.client import ScalingoClient

        probe = self
        gate.resolve_rules_choice = self.timed_phase("rules: choose the file", gate.resolve_rules_choice)
        rules.load_rules = self.timed_phase("rules: load + validate", rules.load_rules)
        config.section = self.timed_phase("settings: config section", config.section)
        build = settings.RunSettings.build.__func__
        settings.RunSettings.build = classmethod(self.timed_phase("settings: RunSettings.build", build))
        postgres.pg_target_from_connection = self.timed_phase(
            "staging connection read (PostgresHook)", postgres.pg_target_from_connection
        )
        salt.read_salt = self.timed_phase("salt (Variable)", salt.read_salt)
        cls = gate.SafetyGateOperator
        cls._recover = self.timed_phase("recover leftovers (gate)", cls._recover)
        cls._gate = self.timed_phase("gate total (_gate)", cls._gate)
        preflight.run_preflight = self.timed_phase("preflight total", preflight.run_preflight)
        real_check = preflight.PreflightResult.run

        def run_check(self, name, fn):
            return probe.timed_phase(f"preflight: {name}", real_check)(self, name, fn)

        preflight.PreflightResult.run = run_check

        real_send = ScalingoClient._send

        def send(self, method, url, **kwargs):
            started = time.perf_counter()
            try:
                return real_send(self, method, url, **kwargs)
            finally:
                rec = probe.rec()
                if rec is not None:
                    from urllib.parse import urlsplit

                    rec["scalingo_requests"].append(
                        {
                            "phase": probe.phase_name(),
                            "request": f"{method} {urlsplit(url).path}",
                            "s": round(time.perf_counter() - started, 4),
                        }
                    )

        ScalingoClient._send = send


def xcom_rows(db: Path, run_id: str) -> dict[str, list[str]]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "SELECT task_id, map_index, key FROM xcom WHERE run_id = ? ORDER BY task_id, map_index", (run_id,)
        ).fetchall()
    finally:
        con.close()
    out: dict[str, list[str]] = defaultdict(list)
    for task_id, map_index, key in rows:
        out[task_id].append(key if map_index < 0 else f"{key}[{map_index}]")
    return dict(out)


def summarize_run(probe: Probe, dag_run, db: Path) -> dict[str, Any]:
    tasks: dict[str, dict[str, Any]] = {}
    for (task_id, _map_index), rec in probe.tasks.items():
        start, end = rec.get("run_task_start"), rec.get("run_task_end")
        ex_start, ex_end = rec.get("execute_start"), rec.get("execute_end")
        entry = tasks.setdefault(
            task_id,
            {
                "instances": 0,
                "run_task_s": 0.0,
                "startup_s": 0.0,
                "startup_our_imports_s": 0.0,
                "startup_template_xcom_s": 0.0,
                "execute_s": 0.0,
                "after_execute_s": 0.0,
                "execute_imports_s": 0.0,
                "pg_connects": 0,
                "pg_connect_s": 0.0,
                "scalingo_requests": 0,
                "subprocesses": [],
                "api_messages": Counter(),
                "xcom_pulls": Counter(),
                "xcom_pushes": Counter(),
            },
        )
        entry["instances"] += 1
        if start is not None and end is not None:
            entry["run_task_s"] += end - start
        if ex_start is not None and start is not None:
            entry["startup_s"] += ex_start - start
            entry["execute_s"] += (ex_end or ex_start) - ex_start
            entry["after_execute_s"] += (end or ex_end) - (ex_end or ex_start)
        entry["startup_our_imports_s"] += rec["imports_before_execute_s"]
        entry["startup_template_xcom_s"] += rec["template_pull_s"]
        entry["execute_imports_s"] += rec["imports_in_execute_s"]
        entry["pg_connects"] += len(rec["pg_connects"])
        entry["pg_connect_s"] += sum(c["s"] for c in rec["pg_connects"])
        entry["scalingo_requests"] += len(rec["scalingo_requests"])
        entry["subprocesses"] += [s["cmd"] for s in rec["subprocesses"]]
        entry["api_messages"].update(rec["api_messages"])
        entry["xcom_pulls"].update(
            f"{p['task_ids']}:{p['key']}" + ("" if not p["in_execute"] else " (in execute)")
            for p in rec["xcom_pulls"]
        )
        entry["xcom_pushes"].update(p["key"] for p in rec["xcom_pushes"])
    for entry in tasks.values():
        for key in list(entry):
            if isinstance(entry[key], float):
                entry[key] = round(entry[key], 4)
            elif isinstance(entry[key], Counter):
                entry[key] = dict(entry[key])
    gate_rec = probe.tasks.get(("safety_gate", -1), {})
    return {
        "state": str(dag_run.state),
        "run_id": dag_run.run_id,
        "tasks": tasks,
        "gate_phases_s": {k: round(v, 4) for k, v in probe.gate.items()},
        "gate_pg_connects": [c["phase"] for c in gate_rec.get("pg_connects", [])],
        "gate_scalingo_requests": [
            f"{r['phase']}: {r['request']} ({r['s'] * 1000:.1f} ms)"
            for r in gate_rec.get("scalingo_requests", [])
        ],
        "xcom_rows": xcom_rows(db, dag_run.run_id),
    }


def dag_runs(runs: int) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="sss-overhead-airflow-"))
    os.environ.update(subprocess_env(home))
    os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
    from scalingo_staging_sync.testing.sandbox import start_sandbox

    log(f"AIRFLOW_HOME {home}; resetting the metadata DB (SQLite)")
    from airflow.utils import db as airflow_db

    airflow_db.resetdb()
    log("starting the sandbox: embedded PostgreSQL 16 production (Chinook) + staging, fake Scalingo API")
    box = start_sandbox(Path(tempfile.mkdtemp(prefix="sss-overhead-sandbox-")))
    try:
        os.environ.update(box.env)
        probe = Probe()
        probe.install()  # before the DAG is built: the gate binds its python_callable at construction
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(REPO / "dags"))
        assert not bag.import_errors, bag.import_errors
        dag = bag.get_dag("scalingo_staging_sync")
        results = []
        for i in range(runs):
            probe.tasks.clear()
            probe.gate.clear()
            conf = {
                "target_app": box.target_app,
                "confirm_target": box.target_app,
                "dry_run": False,
                "backup": "latest",
                "exclude_tables": [],
                "source_app": None,
                "rules_file": None,
            }
            started = time.perf_counter()
            dag_run = dag.test(run_conf=conf)
            wall = time.perf_counter() - started
            summary = summarize_run(probe, dag_run, home / "airflow.db")
            summary["wall_s"] = round(wall, 3)
            log(f"run {i + 1}/{runs}: {summary['state']} in {wall:.2f} s")
            results.append(summary)
        return {"runs": results}
    finally:
        box.stop()


def aggregate(runs: list[dict]) -> dict[str, Any]:
    """Medians over the runs after the first (the first also starts the execution API), and the first."""
    later = runs[1:] or runs
    tasks: dict[str, dict[str, Any]] = {}
    for task_id in runs[0]["tasks"]:
        tasks[task_id] = {
            key: median([r["tasks"][task_id][key] for r in later if task_id in r["tasks"]])
            for key in (
                "run_task_s",
                "startup_s",
                "startup_our_imports_s",
                "startup_template_xcom_s",
                "execute_s",
                "after_execute_s",
                "execute_imports_s",
                "pg_connect_s",
            )
        }
        last = later[-1]["tasks"].get(task_id, runs[0]["tasks"][task_id])
        for key in ("instances", "pg_connects", "scalingo_requests", "subprocesses", "api_messages"):
            tasks[task_id][key] = last[key]
        tasks[task_id]["xcom_pulls"] = last["xcom_pulls"]
        tasks[task_id]["xcom_pushes"] = last["xcom_pushes"]
        tasks[task_id]["first_run"] = {
            k: runs[0]["tasks"][task_id][k]
            for k in ("run_task_s", "startup_s", "startup_our_imports_s", "execute_s", "execute_imports_s")
        }
    phases = sorted({p for r in runs for p in r["gate_phases_s"]})
    return {
        "wall_s": {"first": runs[0]["wall_s"], "later_median": median([r["wall_s"] for r in later])},
        "tasks": tasks,
        "gate_phases_s": {
            p: {
                "first": runs[0]["gate_phases_s"].get(p),
                "later_median": median([r["gate_phases_s"].get(p) for r in later]),
            }
            for p in phases
        },
        "gate_pg_connects": later[-1]["gate_pg_connects"],
        "gate_scalingo_requests": later[-1]["gate_scalingo_requests"],
        "xcom_rows": later[-1]["xcom_rows"],
    }


# ============================================================================ report
def print_report(result: dict[str, Any]) -> None:
    imports = result.get("imports")
    if imports:
        print(f"\n== 1. imports (fresh interpreter, median of {imports['repeat']}) ==")
        for label, value in imports["process_wall_s"].items():
            print(f"  {label:<58} {value * 1000:8.1f} ms")
        print(f"  {'module':<48}{'import (ms)':>12}{'execute-time imports (ms)':>27}  heavy packages")
        for name, m in imports["modules"].items():
            lazy = f"{m['lazy_s'] * 1000:.1f}" if "lazy_s" in m else "-"
            heavy = ", ".join(m["module_heavy"]) or "-"
            if m.get("lazy_heavy"):
                heavy += " | execute: " + ", ".join(m["lazy_heavy"])
            print(f"  {name:<48}{m['module_s'] * 1000:>12.1f}{lazy:>27}  {heavy}")
        first = next(iter(imports["modules"].values()))
        print(f"  (baseline: `import airflow.sdk` {first['airflow_sdk_s'] * 1000:.0f} ms in-process)")
    dag = result.get("dag")
    if dag:
        agg = dag["aggregate"]
        print(
            f"\n== 2. the gate's execute by phase (s; first run / median of later runs) ==  "
            f"wall of dag.test: first {agg['wall_s']['first']:.2f} s, later {agg['wall_s']['later_median']:.2f} s"
        )
        for phase, v in agg["gate_phases_s"].items():
            first = v["first"] if v["first"] is not None else float("nan")
            print(f"  {phase:<48}{first:>9.4f}{v['later_median'] or 0:>9.4f}")
        print(f"  PostgreSQL connections opened by the gate, by phase: {agg['gate_pg_connects']}")
        print("  Scalingo requests of the gate:")
        for r in agg["gate_scalingo_requests"]:
            print(f"    {r}")
        print("\n== 3. per task (median of later runs; s) ==")
        header = f"  {'task':<22}{'span':>7}{'start':>7}{'tmpl':>6}{'exec':>7}{'after':>7}"
        print(header + f"{'pg':>4}{'api':>5}{'pulls':>6}{'push':>5}  first run: span/start")
        for task_id, t in agg["tasks"].items():
            n_api = sum(t["api_messages"].values())
            print(
                f"  {task_id:<22}{t['run_task_s']:>7.3f}{t['startup_s']:>7.3f}"
                f"{t['startup_template_xcom_s']:>6.3f}{t['execute_s']:>7.3f}{t['after_execute_s']:>7.3f}"
                f"{t['pg_connects']:>4}{n_api:>5}"
                f"{sum(t['xcom_pulls'].values()):>6}{sum(t['xcom_pushes'].values()):>5}"
                f"  {t['first_run']['run_task_s']:.3f}/{t['first_run']['startup_s']:.3f}"
            )
        tasks = agg["tasks"].values()
        print(
            f"  {'all tasks (sum)':<22}{sum(t['run_task_s'] for t in tasks):>7.3f}{sum(t['startup_s'] for t in tasks):>7.3f}"
            f"{sum(t['startup_template_xcom_s'] for t in tasks):>6.3f}{sum(t['execute_s'] for t in tasks):>7.3f}"
            f"{sum(t['after_execute_s'] for t in tasks):>7.3f}{sum(t['pg_connects'] for t in tasks):>4}"
            f"{sum(sum(t['api_messages'].values()) for t in tasks):>5}{sum(sum(t['xcom_pulls'].values()) for t in tasks):>6}"
            f"{sum(sum(t['xcom_pushes'].values()) for t in tasks):>5}"
        )
        print(
            "  span: Airflow starting the task -> done; start: -> our execute (of which tmpl: the template"
            " XCom pulls);\n  exec: execute; after: execute -> done (success callback, XCom push, state);"
            " pg: PostgreSQL connections;\n  api: execution-API messages; pulls/push: XCom pulls and pushes."
            " Imports: see section 1 (this\n  process imported the provider before the runs, to instrument it)"
        )
        print("  XCom pulls per task (task_ids:key x count):")
        for task_id, t in agg["tasks"].items():
            pulls = ", ".join(f"{k} x{v}" for k, v in t["xcom_pulls"].items())
            print(f"    {task_id:<22}{pulls}")
        print(f"  XCom rows in the metadata DB (last run): {agg['xcom_rows']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5, help="fresh interpreters per module (imports)")
    parser.add_argument(
        "--runs", type=int, default=3, help="dag.test runs (the first starts the execution API)"
    )
    parser.add_argument("--skip-imports", action="store_true")
    parser.add_argument("--skip-dag", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the full result here")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {
        "benchmark": "benchmarks/overhead.py",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "provider": str(Path(__import__("scalingo_staging_sync").__file__).parent),
        "loadavg_start": list(os.getloadavg()),
    }
    if not args.skip_imports:
        log(f"imports: {len(OPERATORS) + 2} targets x {args.repeat} fresh interpreters")
        result["imports"] = import_costs(args.repeat)
    if not args.skip_dag:
        log(f"dag.test: {args.runs} runs of the reference DAG on a sandbox")
        runs = dag_runs(args.runs)["runs"]
        result["dag"] = {"runs": runs, "aggregate": aggregate(runs)}
    result["loadavg_end"] = list(os.getloadavg())
    print_report(result)
    print(f"\nload average: start {result['loadavg_start']}, end {result['loadavg_end']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
