"""A DAG written as a user would, from the README's example, using the operators alone: it runs end to end
on Chinook (real PostgreSQL, fake Scalingo API over HTTP) with render_template_as_native_obj OFF."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from airflow_helpers import sync_dag

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
RULES = REPO / "config" / "anonymization.yaml"

pytestmark = pytest.mark.airflow


def example_code() -> str:
    section = README.read_text().split("## Reusing the operators in your own DAG", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_custom_dag_from_the_docs_runs_end_to_end_without_native_rendering(airflow_db, box, tmp_path):
    from airflow.dag_processing.dagbag import DagBag

    code = example_code()
    assert "render_template_as_native_obj" not in code  # the default: strings
    code = code.replace('SOURCE_APP = "my-prod-app"', f"SOURCE_APP = {box.source_app!r}")
    code = code.replace('RULES = "/opt/airflow/config/rules.yaml"', f"RULES = {str(RULES)!r}")
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "refresh_demo_db.py").write_text(code)
    bag = DagBag(dag_folder=str(tmp_path / "dags"))
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag("refresh_demo_db")
    assert dag.render_template_as_native_obj is False
    sync_dag(dag, tmp_path / "empty-dags")

    prod = box.prod.execute("SELECT customer_id, email FROM customer ORDER BY 1", box.source_db)
    run = dag.test()
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert str(run.state) == "success", states
    staged = box.staging.execute("SELECT customer_id, email FROM customer ORDER BY 1", box.staging_db)
    assert len(staged) == len(prod) == 59
    assert all(s[1].endswith("@example.com") and s[1] != p[1] for s, p in zip(staged, prod, strict=True))
    databases = {r[0] for r in box.staging.execute("SELECT datname FROM pg_database")}
    # keep_previous="{{ False }}" rendered as the string "False": no __previous copy is kept
    assert not any(d.endswith("__previous") for d in databases), databases
    assert not any(d.endswith("__incoming") for d in databases), databases
