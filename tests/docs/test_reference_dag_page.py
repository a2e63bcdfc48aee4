"""docs/reference-dag.md describes the DAG that ships: its params table names exactly the DAG's params,
and every task of the DAG appears on the page."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PAGE = REPO / "docs" / "reference-dag.md"


def test_params_and_tasks_match_the_reference_dag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag("scalingo_staging_sync")
    text = PAGE.read_text()
    section = text.split("## Params", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)` \|", section, re.M))
    assert documented == set(dag.params.keys()), "update the params table of docs/reference-dag.md"
    missing = [task_id for task_id in dag.task_ids if task_id not in text]
    assert not missing, f"tasks not described in docs/reference-dag.md: {missing}"
