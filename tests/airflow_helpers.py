"""Helpers shared by the tests that run real Airflow DAGs (``dag.test()``): putting a test-local DAG in the
metadata database, reading task states and XComs of a finished run. A plain module: pytest puts tests/ on
sys.path (tests/conftest.py), so any test directory imports it as ``airflow_helpers``."""

from __future__ import annotations

import json
from pathlib import Path


def sync_dag(dag, dag_folder: Path, *, bundle_path: Path | None = None) -> None:
    """Serialize a test-local DAG into the metadata DB (dag.test() needs it there). ``dag_folder`` is
    created if missing; ``bundle_path`` is passed to the DagBag when given."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    dag_folder.mkdir(exist_ok=True)
    kwargs = {} if bundle_path is None else {"bundle_path": bundle_path}
    bag = DagBag(dag_folder=str(dag_folder), **kwargs)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)


def task_states(dag_run, *, prefer_unsuccessful: bool = False) -> dict[str, str]:
    """Task id -> state of a finished run. Of several instances of one task (mapped tasks), the first one
    listed; with ``prefer_unsuccessful``, the first one that did not succeed, if any."""
    states: dict[str, str] = {}
    for ti in dag_run.get_task_instances():
        state = str(ti.state.value if hasattr(ti.state, "value") else ti.state)
        recorded = states.get(ti.task_id)
        if recorded is None or (prefer_unsuccessful and recorded == "success"):
            states[ti.task_id] = state
    return states


#: the reference DAG's steps the gate skips when the run has nothing for them (no seeds)
IDLE_STEPS = ("run_seeds",)


def every_step_ran(states: dict[str, str], *, idle: tuple[str, ...] = IDLE_STEPS) -> bool:
    """True when every task of a reference-DAG run succeeded, the steps with nothing to do (``idle``:
    by default ``run_seeds``, with no seeds) skipped by the gate."""
    return all(s == ("skipped" if t in idle else "success") for t, s in states.items()) and all(
        t in states for t in idle
    )


def session_task_states(run, *, by_map_index: bool = False) -> dict:
    """Task id (or ``(task id, map index)``) -> state, read in one metadata-DB session; of several
    instances under one key, the last one listed."""
    from airflow.utils.session import create_session

    with create_session() as session:
        return {
            ((ti.task_id, ti.map_index) if by_map_index else ti.task_id): str(ti.state)
            for ti in run.get_task_instances(session=session)
        }


def stored_xcom(run, task_id: str, key: str = "return_value"):
    """The XCom a task of a finished run pushed, read from the metadata DB (None if there is none)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(dag_id=run.dag_id, run_id=run.run_id, task_id=task_id, key=key)
            .one_or_none()
        )
        if row is None:
            return None
        return json.loads(row.value) if isinstance(row.value, str) else row.value
