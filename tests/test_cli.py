"""The `airflow` CLI sees the provider, its `scalingo` connection type, and the demo runs end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def _cli(*args: str, tmp_path: Path) -> str:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    proc = subprocess.run([str(BIN / "airflow"), *args], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_airflow_lists_the_provider_and_the_scalingo_connection_type(tmp_path):
    assert "airflow-provider-scalingo-staging-sync" in _cli("providers", "list", tmp_path=tmp_path)
    hooks = _cli("providers", "hooks", tmp_path=tmp_path)
    line = next(line for line in hooks.splitlines() if line.startswith("scalingo "))
    assert "scalingo_staging_sync.hooks.scalingo.ScalingoHook" in line


@pytest.mark.airflow
def test_make_demo_runs_the_reference_dag_end_to_end(tmp_path):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "TMPDIR": str(tmp_path)}
    for key in [k for k in env if k.startswith(("AIRFLOW_", "SCALINGO_STAGING_SYNC_"))]:
        env.pop(key)  # the demo builds its own Airflow home and connections
    proc = subprocess.run(
        [sys.executable, "-m", "scalingo_staging_sync.testing.demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "scalingo-staging-sync demo: success" in out
    assert "PII scan: passed" in out and "0 unmasked" in out
    assert "@example.com" in out.split("after:")[-1]
