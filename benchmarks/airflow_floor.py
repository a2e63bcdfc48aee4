"""Airflow's floor: what `airflow dags test` costs for a DAG of the reference DAG's shape that does
nothing, measured the way `make bench` measures B (issue 14, part 3).

A DAG of ``--tasks`` no-op ``@task`` functions in a chain, one of them mapped over two values (the
reference DAG maps ``prepare_masking`` and ``anonymize_table``), runs ``--repeat`` times under
``airflow dags test`` in an isolated ``AIRFLOW_HOME`` (SQLite). Each run is profiled with
``benchmarks/run.py``'s own functions: start-up (process spawned -> first task starts), the gaps
between tasks, the tail (last task ends -> process exits) and the wall time. What the reference DAG
spends beyond these figures in ``make bench``'s B is the provider's.

    PYTHONPATH=provider:benchmarks .venv/bin/python benchmarks/airflow_floor.py --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import _airflow_exe, profile_run, task_spans  # noqa: E402

from scalingo_staging_sync.testing.sandbox import airflow_env, merged_environ  # noqa: E402

DAG_ID = "airflow_floor"
DAG_TEMPLATE = """\
from __future__ import annotations

import pendulum
from airflow.sdk import dag, task


@task
def noop(item: int = 0) -> None:
    return None


@dag(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def floor():
    previous = noop.override(task_id="t0")()
    for i in range(1, {tasks}):
        if i == {mapped_at}:
            current = noop.override(task_id=f"t{{i}}").expand(item=[1, 2])
        else:
            current = noop.override(task_id=f"t{{i}}")()
        previous >> current
        previous = current


floor()
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tasks", type=int, default=18, help="tasks in the chain (default 18, as the reference DAG)"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args(argv)
    if args.tasks < 3:
        parser.error("--tasks: at least 3")
    base = Path(tempfile.mkdtemp(prefix="sss-airflow-floor-"))
    dags = base / "dags"
    dags.mkdir()
    (dags / "floor.py").write_text(
        DAG_TEMPLATE.format(dag_id=DAG_ID, tasks=args.tasks, mapped_at=args.tasks // 2)
    )
    home = base / "airflow"
    env = merged_environ(airflow_env(home, dags))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for key in [k for k in env if k.startswith("AIRFLOW__SCALINGO")]:
        env.pop(key)
    subprocess.run([_airflow_exe(env), "db", "migrate"], env=env, check=True, capture_output=True)
    runs = []
    for i in range(args.repeat + 1):  # the first run is a warm-up (bytecode, first DAG parse)
        spawned_at = time.time()
        started = time.monotonic()
        proc = subprocess.run(
            [_airflow_exe(env), "dags", "test", DAG_ID], env=env, capture_output=True, text=True
        )
        wall = time.monotonic() - started
        finished_at = time.time()
        if proc.returncode != 0:
            sys.exit(f"airflow dags test failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        _run_id, tis = task_spans(home / "airflow.db", DAG_ID)
        if len(tis) != args.tasks + 1 or any(t["state"] != "success" for t in tis):
            sys.exit(f"unexpected task instances: {[(t['task_id'], t['state']) for t in tis]}")
        profile = profile_run(tis, spawned_at, finished_at)
        row = {
            "wall_s": round(wall, 3),
            **{k: profile[k] for k in ("startup_s", "between_tasks_s", "shutdown_s", "tasks_busy_s")},
            # the first task pays the in-process execution API's start (the reference DAG's gate)
            "first_task_span_s": profile["tasks"]["t0"]["span_s"],
        }
        print(("warm-up " if i == 0 else f"run {i} ") + json.dumps(row), flush=True)
        if i:
            runs.append(row)
    medians = {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}
    result = {
        "tasks": args.tasks,
        "instances": args.tasks + 1,
        "repeat": args.repeat,
        "median": medians,
        "runs": runs,
    }
    print(json.dumps({"median": medians}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
