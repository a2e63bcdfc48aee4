"""The ``scalingo-staging-sync`` command line run in a fresh interpreter, as the console script runs it,
for the CLI tests (tests/test_cli_*.py, tests/dags/test_suggested_rules_dag.py). A plain module on
sys.path (tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import scalingo_staging_sync

#: the provider/ folder of the package the tests import, for the CLI run in a subprocess
PACKAGE_ROOT = str(Path(scalingo_staging_sync.__file__).resolve().parents[1])


def run_cli(
    *args: str, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``python -m scalingo_staging_sync.cli ARGS`` with this package first on PYTHONPATH; ``env`` adds
    variables to the inherited environment."""
    return subprocess.run(
        [sys.executable, "-m", "scalingo_staging_sync.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": PACKAGE_ROOT, **(env or {})},
        timeout=timeout,
    )
