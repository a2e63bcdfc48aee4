"""The README's "Reusing the operators in your own DAG" example is a DAG that Airflow can load."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_custom_dag_example_loads(airflow_db, tmp_path):
    from airflow.dag_processing.dagbag import DagBag

    text = README.read_text()
    section = text.split("### Reusing the operators in your own DAG", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    (tmp_path / "refresh_demo_db.py").write_text(code)
    bag = DagBag(dag_folder=str(tmp_path))
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag("refresh_demo_db")
    assert {"backup", "schema", "plan", "mask", "others", "post", "scan", "promote", "cleanup"} <= set(
        dag.task_ids
    )
    assert dag.get_task("cleanup").is_teardown
