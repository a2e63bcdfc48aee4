"""Shared helpers of the issue-10 DAG tests (tests/dags/test_issue10_*.py): the hard dataset in a
sandbox, a reference DAG run naming the source app, task states, XComs."""

from __future__ import annotations

import sys
from pathlib import Path

from airflow_helpers import task_states
from reference_helpers import run_reference

from scalingo_staging_sync.testing.sandbox import start_sandbox

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the e2e dataset package
from e2e.hard_dataset import RULES_YAML, load_hard_dataset  # noqa: E402


def hard_box(tmp_path_factory, monkeypatch, *, rules_text: str = RULES_YAML, **sandbox_kwargs):
    rules = tmp_path_factory.mktemp("rules") / "hard.yaml"
    rules.write_text(rules_text)
    box = start_sandbox(
        tmp_path_factory.mktemp("sandbox"),
        load_dataset=load_hard_dataset,
        source_db="hard",
        rules_file=rules,
        **sandbox_kwargs,
    )
    for key, value in box.env.items():
        monkeypatch.setenv(key, value)
    return box


def run(dag, box, **conf):
    """The reference DAG on this sandbox, its source app named explicitly."""
    return run_reference(dag, box, **{"source_app": box.source_app, **conf})


def states(dag_run) -> dict[str, str]:
    """Task states; of a mapped task's instances, the first one that did not succeed."""
    return task_states(dag_run, prefer_unsuccessful=True)


def xcom(dag_run, task_id: str, key: str = "return_value"):
    for ti in dag_run.get_task_instances():
        if ti.task_id == task_id:
            return ti.xcom_pull(task_ids=task_id, key=key)
    return None
