"""`make bench` smoke test: benchmarks/run.py end to end at a tiny scale (no timing assertions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.airflow


def test_bench_runner_writes_a_complete_result(tmp_path):
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for key in [k for k in env if k.startswith("AIRFLOW")]:
        env.pop(key)  # the runner builds its own isolated AIRFLOW_HOME
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick", "--results-dir", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "ratio (i)" in proc.stdout and "ratio (ii)" in proc.stdout

    files = sorted(tmp_path.glob("bench-scale0.01-*.json"))
    assert len(files) == 1 and (tmp_path / "latest.json").is_file()
    result = json.loads(files[0].read_text())
    assert result == json.loads((tmp_path / "latest.json").read_text())
    assert result["scale"] == 0.01 and result["repeat"] == 1 and result["jobs"] >= 1
    assert result["dataset"]["users"] == 10_000 and result["dataset"]["dump_bytes"] > 0

    summary = result["summary"]
    for key in ("A_median_s", "B_wall_median_s", "B_data_phases_median_s", "ratio_i_wall", "ratio_ii_data"):
        assert summary[key] > 0, key
    assert summary["all_b_success"] is True
    assert len(result["runs"]["A_s"]) == 1 and len(result["runs"]["B"]) == 1

    b = result["runs"]["B"][0]
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
    assert result["extras"] == {}  # --quick skips them
    assert result["machine"]["cores"] >= 1 and result["machine"]["postgres"].startswith("16")
