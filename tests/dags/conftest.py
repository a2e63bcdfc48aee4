"""Fixtures of the reference-DAG tests (the sandbox fixture ``box`` is in tests/conftest.py)."""

from __future__ import annotations

import pytest
from reference_helpers import load_reference_dag


@pytest.fixture(scope="module")
def dag(airflow_db):
    """The reference DAG as Airflow parses it from dags/, once per test module."""
    return load_reference_dag()
