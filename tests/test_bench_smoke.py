"""`make bench` smoke test: benchmarks/run.py end to end at a tiny scale (no timing assertions): A (bare
pg_restore), B (`airflow dags test`), C (a run under `airflow standalone` with the LocalExecutor) and the
engine figures."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.airflow


def _bench_script(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``benchmarks/<script>`` with ``args`` in the project's interpreter, without the caller's
    Airflow settings (a benchmark builds its own isolated AIRFLOW_HOME); fail with its output's tail
    when it fails."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["PYTHONPATH"] = str(REPO / "provider")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_bench_runner_writes_a_complete_result(tmp_path):
    proc = _bench_script("run.py", "--quick", "--results-dir", str(tmp_path), timeout=540)
    for label in ("ratio (i) ", "ratio (i) run ", "ratio (ii) ", "ratio (i-local) ", "ratio (ii-local) "):
        assert label in proc.stdout, label
    _assert_nothing_left_behind(proc.stdout)

    files = sorted(tmp_path.glob("bench-scale0.01-*.json"))
    assert len(files) == 1 and (tmp_path / "latest.json").is_file()
    result = json.loads(files[0].read_text())
    assert result == json.loads((tmp_path / "latest.json").read_text())
    assert result["scale"] == 0.01 and result["repeat"] == 1 and result["jobs"] >= 1
    assert result["dataset"]["users"] == 10_000 and result["dataset"]["dump_bytes"] > 0

    summary = result["summary"]
    for key in (
        "A_median_s",
        "B_wall_median_s",
        "B_data_phases_median_s",
        "ratio_i_wall",
        "B_dag_run_median_s",
        "ratio_i_dag_run",
        "ratio_ii_data",
        "C_wall_median_s",
        "C_client_median_s",
        "C_data_phases_median_s",
        "ratio_i_local",
        "ratio_ii_local",
    ):
        assert summary[key] > 0, key
    assert summary["all_b_success"] is True and summary["all_c_success"] is True
    assert summary["target_ratio_i_local"] == 1.35
    assert len(result["runs"]["A_s"]) == 1 and len(result["runs"]["B"]) == 1 and len(result["runs"]["C"]) == 1
    # T: B again with masking_engine trigger (B streams: DuckDB is installed)
    assert [e["kind"] for e in result["runs"]["order_and_load"]] == ["A", "B", "T", "C"]
    assert summary["engine"] == "stream"
    trigger = summary["trigger_engine"]
    assert trigger["all_success"] is True and trigger["ratio_i_wall"] > trigger["ratio_ii_data"] > 0
    t = result["runs"]["B_trigger"][0]
    assert {x["engine"] for x in t["audit_tables"]} == {"trigger"}
    assert {x["engine"] for x in result["runs"]["B"][0]["audit_tables"]} == {"stream"}
    assert "with the trigger engine (T runs)" in proc.stdout

    b = result["runs"]["B"][0]
    # the DAG run (dag_run start -> end) lies inside the process: its start-up before, its exit after
    assert b["data_phases_s"] < b["dag_run_s"] < b["wall_s"]
    assert b["result"] == "success" and b["returncode"] == 0
    assert b["wall_s"] >= b["data_phases_s"] > 0
    for task_id in (
        "fetch_backup",
        "restore_schema",
        "prepare_masking",
        "load_data",
        "anonymize_table",
        "restore_post_data",
    ):
        assert b["tasks"][task_id]["span_s"] > 0, task_id
    assert b["tasks"]["anonymize_table"]["instances"] == 2  # users, orders
    assert {t["table"] for t in b["audit_tables"]} == {"public.users", "public.orders"}
    assert b["pii_counts"]["unmasked"] == 0

    # C: the same DAG triggered under a real scheduler (LocalExecutor), every task instance successful
    # but run_seeds, which the gate skips (the bench's rules have no seeds)
    assert result["local"]["executor_loaded"] == "LocalExecutor"
    c = result["runs"]["C"][0]
    assert c["state"] == "success" and c["task_states"] == ["skipped", "success"], c
    assert c["skipped_tasks"] == ["run_seeds"], c
    assert c["result"] == "success" and c["run_id"].startswith("manual__")
    # the stack's CPU during C, per component: the task processes are the executor workers' children
    stack_cpu = summary["C_stack_cpu_median_s"]
    assert {"scheduler", "api-server", "executor workers"} <= set(stack_cpu), stack_cpu
    assert stack_cpu["scheduler"]["own"] > 0 and stack_cpu["executor workers"]["children"] > 0, stack_cpu
    assert "CPU s of the stack's components during a run" in proc.stdout
    assert c["client_s"] >= c["wall_s"] >= c["data_phases_s"] > 0
    assert set(c["tasks"]) == set(b["tasks"])
    for task_id in ("restore_schema", "load_data", "anonymize_table", "restore_post_data", "audit_report"):
        assert c["tasks"][task_id]["span_s"] > 0, task_id
    assert c["tasks"]["anonymize_table"]["instances"] == 2
    assert {t["table"] for t in c["audit_tables"]} == {"public.users", "public.orders"}
    assert c["pii_counts"]["unmasked"] == 0
    assert set(summary["C_phases_median"]) == set(c["tasks"])
    # long tasks report progress in the task log files the LocalExecutor's task processes write
    progress = c["log_progress"]
    assert progress["fetch_backup"]["download"] >= 1, progress
    for task_id in ("restore_schema", "load_data", "restore_post_data"):
        assert progress[task_id]["toc_entries"] >= 1, (task_id, progress)

    # --quick skips the extras but the engine figures (scale 0.01)
    assert set(result["extras"]) == {"engines"}
    engines = result["extras"]["engines"]
    assert engines["engines"] == ["none", "trigger", "stream"] and engines["postgres"] == 16
    assert set(engines["tables"]) == {"users", "orders"}
    for table, rows in (("users", 10_000), ("orders", 30_000)):
        t = engines["tables"][table]
        assert t["rows"] == rows and t["masked_columns"]
        assert t["none_cpu_us_per_row"] >= 0
        for engine in ("trigger", "stream"):
            assert t[f"{engine}_cpu_us_per_row"] > 0
            assert t[f"{engine}_extra_us_per_masked_row"] == pytest.approx(
                t[f"{engine}_cpu_us_per_row"] - t["none_cpu_us_per_row"], abs=0.02
            )
        # both engines gave the same table
        assert t["raw"]["outputs_identical"] == ["stream", "trigger"] and "MISMATCH" not in t["raw"]
    assert "masking engines, CPU µs per row" in proc.stdout
    assert result["machine"]["cores"] >= 1 and result["machine"]["postgres"].startswith("16")


def _assert_nothing_left_behind(stdout: str) -> None:
    """No process of the run is left: the embedded servers (data dirs under the work dir) and the
    LocalExecutor stack (AIRFLOW_HOME under the work dir)."""
    import psutil

    work_dir = re.search(r"work dir (\S+);", stdout).group(1)
    left = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if work_dir in " ".join(p.info["cmdline"] or []) or p.environ().get(
                "AIRFLOW_HOME", ""
            ).startswith(work_dir):
                left.append((p.info["pid"], p.info["cmdline"]))
        except psutil.Error:
            pass
    assert not left, f"processes of the run left behind: {left}"


def test_load_profile_times_each_table_per_engine(tmp_path):
    """benchmarks/load_profile.py at a tiny scale: both engines load every table, the stream engine
    masks users and orders on the worker, the trigger engine leaves them to their triggers."""
    out = tmp_path / "profile.json"
    _bench_script("load_profile.py", "--scale", "0.01", "--engines", "stream,trigger", "--json", str(out))
    result = json.loads(out.read_text())
    by_engine = {r["engine"]: r for r in result["runs"]}
    assert set(by_engine) == {"stream", "trigger"}
    for run in by_engine.values():
        assert set(run["table_done_at_s"]) == {"public.users", "public.orders", "public.events"}
    assert by_engine["stream"]["masked"] == {"public.users": "stream", "public.orders": "stream"}
    trigger = by_engine["trigger"]["masked"]
    assert set(trigger) == {"public.users", "public.orders"} and all(
        h.startswith("trigger") for h in trigger.values()
    )


def test_load_profile_refuses_distinct_with_a_dump(tmp_path):
    """--distinct only shapes the data the script generates: with --dump it is refused, not ignored."""
    dump = tmp_path / "some.pgc"
    dump.write_bytes(b"PGDMP")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["PYTHONPATH"] = str(REPO / "provider")
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "load_profile.py"), "--dump", str(dump), "--distinct"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "--distinct applies to the data this script generates, not to --dump" in proc.stderr


def test_airflow_floor_profiles_a_no_op_dag(tmp_path):
    """benchmarks/airflow_floor.py with a short chain: every instance (the mapped one twice) succeeds and
    the run is profiled with the figures make bench reports for B."""
    out = tmp_path / "floor.json"
    _bench_script("airflow_floor.py", "--tasks", "4", "--repeat", "1", "--json", str(out))
    result = json.loads(out.read_text())
    assert result["instances"] == 5 and len(result["runs"]) == 1
    for key in ("wall_s", "startup_s", "between_tasks_s", "shutdown_s", "first_task_span_s"):
        assert result["median"][key] >= 0, key
    assert result["median"]["wall_s"] > result["median"]["startup_s"]


def test_casefold_compares_translate_with_the_shipped_folding():
    """benchmarks/casefold.py at a tiny size: both expressions measured on the three kinds of values,
    and the shipped folding gives translate's text for every value."""
    proc = _bench_script("casefold.py", "--rows", "3000", "--repeat", "1", "--json", timeout=120)
    result = json.loads(proc.stdout)
    assert set(result["kinds"]) == {"ascii", "non-ascii, lower case", "non-ascii, upper case"}
    for kind in result["kinds"].values():
        assert kind["values_that_differ"] == 0
        assert set(kind["us_per_value"]) == {"translate", "shipped (_alower)", "shipped with Arrow"}


def test_stream_columns_prices_each_transformer_with_both_foldings():
    """benchmarks/stream_columns.py at a tiny size: every column priced with both case foldings on both
    kinds of values, which give the same text (and the diagnostic inline address, the shipped one)."""
    proc = _bench_script("stream_columns.py", "--rows", "3000", "--repeat", "1", "--json", timeout=180)
    result = json.loads(proc.stdout)
    assert set(result["kinds"]) == {"datagen", "varied"}
    for kind in result["kinds"].values():
        assert kind["translate_and_arrow_rows_that_differ"] == 0
        assert kind["inline_address_rows_that_differ"] == 0
        labels = set(kind["extra_us_per_row"])
        for form in ("translate", "arrow"):
            assert {f"{c} ({form})" for c in ("email", "address", "birth_date", "all six")} <= labels
    assert result["kinds"]["varied"]["distinct"]["address"] == 3000  # every address different


def test_engines_on_distinct_values_give_the_same_tables(tmp_path):
    """benchmarks/engines.py --distinct at a tiny scale: the masked text columns are as varied as a real
    table's, and the trigger and stream engines still give identical tables."""
    out = tmp_path / "engines.json"
    _bench_script(
        "engines.py", "--scale", "0.01", "--repeat", "1", "--engines", "none,trigger,stream_translate,stream", "--distinct",
        "--out", str(out), timeout=300,
    )  # fmt: skip
    result = json.loads(out.read_text())
    users = result["tables"]["users"]["rows"]
    assert result["distinct"] is True
    assert result["distinct_values"]["address"] == users  # every address different
    assert result["distinct_values"]["first_name"] == 400 and result["distinct_values"]["last_name"] > 5_000
    for table in ("users", "orders"):
        assert "MISMATCH" not in result["tables"][table]
        assert result["tables"][table]["outputs_identical"] == ["stream", "stream_translate", "trigger"]
