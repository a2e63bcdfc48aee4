"""Shared helpers of the issue-10 DAG tests (tests/dags/test_issue10_*.py): the hard dataset in a
sandbox, a reference DAG run, task states, the audit report."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from scalingo_staging_sync.testing.sandbox import start_sandbox

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the e2e dataset package
from e2e.hard_dataset import RULES_YAML, load_hard_dataset  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"


def load_reference_dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag("scalingo_staging_sync")


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
    defaults = {
        "source_app": box.source_app,
        "target_app": box.target_app,
        "confirm_target": box.target_app,
        "dry_run": False,
        "backup": "latest",
        "exclude_tables": [],
        "rules_file": None,
    }
    return dag.test(run_conf={**defaults, **conf})


def states(dag_run) -> dict[str, str]:
    out: dict[str, str] = {}
    for ti in dag_run.get_task_instances():
        state = str(ti.state.value if hasattr(ti.state, "value") else ti.state)
        if out.get(ti.task_id) in (None, "success"):
            out[ti.task_id] = state
    return out


def audit(box) -> dict:
    files = sorted(Path(box.env["SCALINGO_STAGING_SYNC_AUDIT_DIR"]).glob("*.json"))
    assert files, "no audit report written"
    return json.loads(files[-1].read_text())


def xcom(dag_run, task_id: str, key: str = "return_value"):
    for ti in dag_run.get_task_instances():
        if ti.task_id == task_id:
            return ti.xcom_pull(task_ids=task_id, key=key)
    return None
