"""The gate's ``dry_run_skips``: on a dry run only the named tasks are skipped (what waits for them is
skipped with them, what runs beside them still runs); a name that is not directly downstream of the
gate fails the gate before any check. The reference DAG uses it so that neither the download nor the
restore waits for a task that guards nothing on a real run."""

from __future__ import annotations

from pathlib import Path

import pendulum
import pytest
from airflow_helpers import stored_xcom, sync_dag, task_states

pytestmark = pytest.mark.airflow


def _marks_and_params(tmp_path: Path, box, dag_id: str, dry_run: bool):
    """A folder the tasks mark when they run, the callable that marks it, and the gate's params."""
    marks = tmp_path / dag_id
    marks.mkdir()

    def mark(name):
        (marks / name).write_text("ran")

    params = {
        "target_app": box.target_app,
        "confirm_target": None if dry_run else box.target_app,
        "dry_run": dry_run,
        "backup": "latest",
        "exclude_tables": [],
    }
    return marks, mark, params


def _gate_dag(tmp_path: Path, box, dag_id: str, dry_run_skips, dry_run: bool):
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG

    from scalingo_staging_sync.operators import SafetyGateOperator

    marks, mark, params = _marks_and_params(tmp_path, box, dag_id, dry_run)
    with DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
        gate = SafetyGateOperator(task_id="safety_gate", params_override=params, dry_run_skips=dry_run_skips)
        guard = EmptyOperator(task_id="guard")
        reader = PythonOperator(task_id="reader", python_callable=mark, op_args=["reader"])
        writer = PythonOperator(task_id="writer", python_callable=mark, op_args=["writer"])
        gate >> [guard, reader]
        [guard, reader] >> writer
    sync_dag(dag, tmp_path / f"dags-{dag_id}")
    return dag, marks


def test_a_dry_run_skips_only_the_named_task_and_what_waits_for_it(airflow_db, box, tmp_path):
    dag, marks = _gate_dag(tmp_path, box, "gate_skips_dry", ["guard"], dry_run=True)
    states = task_states(dag.test())
    assert states["safety_gate"] == "success", states
    assert states["guard"] == "skipped" and states["writer"] == "skipped", states
    assert states["reader"] == "success", states  # beside the guard: it runs on a dry run
    assert sorted(p.name for p in marks.iterdir()) == ["reader"]


def test_a_real_run_skips_nothing(airflow_db, box, tmp_path):
    dag, marks = _gate_dag(tmp_path, box, "gate_skips_real", ["guard"], dry_run=False)
    states = task_states(dag.test())
    assert all(s == "success" for s in states.values()), states
    assert sorted(p.name for p in marks.iterdir()) == ["reader", "writer"]


def test_a_name_not_downstream_of_the_gate_fails_it_naming_it(airflow_db, box, tmp_path, capfd):
    dag, marks = _gate_dag(tmp_path, box, "gate_skips_stray", ["writer"], dry_run=True)
    run = dag.test()
    printed = "".join(capfd.readouterr())
    assert "dry_run_skips names ['writer'], not directly downstream of 'safety_gate'" in printed
    states = task_states(run)
    assert str(run.state) == "failed" and states["safety_gate"] == "failed", states
    assert not any(marks.iterdir()), "nothing after a failed gate runs"


def test_a_single_string_or_an_empty_list_is_refused_at_parse_time():
    from scalingo_staging_sync.operators.gate import GateConfigError, SafetyGateOperator

    with pytest.raises(GateConfigError, match=r"\['guard'\]"):
        SafetyGateOperator(task_id="safety_gate", dry_run_skips="guard")
    # an empty list would make a dry run run everything after the gate
    with pytest.raises(GateConfigError, match=r"dry_run_skips=\[\] skips nothing"):
        SafetyGateOperator(task_id="safety_gate", dry_run_skips=[])


def test_the_reference_dag_runs_side_by_side_what_guards_nothing(dag):
    """Under a scheduler each link costs a scheduling loop: the download waits only for the gate, the
    restore only for the plan and the guard, and dry_run_stop (printing the plan) for the plan."""
    from scalingo_staging_sync import task_ids as T

    up = {t.task_id: set(t.upstream_task_ids) for t in dag.tasks}
    assert dag.get_task(T.GATE).dry_run_skips == (T.GATE_PASSED,)
    assert up[T.GATE_PASSED] == {T.GATE} and up[T.BACKUP] == {T.GATE}
    assert up[T.RESTORE_SCHEMA] == {T.PLAN, T.GATE_PASSED}
    assert up[T.DRY_RUN_STOP] == {T.PLAN}
    assert not dag.get_task(T.DRY_RUN_STOP).downstream_task_ids


def _idle_dag(tmp_path: Path, box, dag_id: str, skip_when_empty, *, wiring: str = "good"):
    """gate >> step >> idle >> after, and step >> after (``after`` accepts a skipped ``idle``).

    Other ``wiring``: ``"leaf"`` (idle is followed by a teardown only), ``"no-direct-link"`` (after
    does not wait for step), ``"all-success"`` (after keeps the default trigger rule)."""
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG

    from scalingo_staging_sync.operators import SafetyGateOperator

    marks, mark, params = _marks_and_params(tmp_path, box, dag_id, dry_run=False)
    rule = "all_success" if wiring == "all-success" else "none_failed_min_one_success"
    with DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
        gate = SafetyGateOperator(
            task_id="safety_gate",
            params_override=params,
            dry_run_skips=["step"],
            skip_when_empty=skip_when_empty,
        )
        step, idle = (PythonOperator(task_id=n, python_callable=mark, op_args=[n]) for n in ("step", "idle"))
        after = PythonOperator(task_id="after", python_callable=mark, op_args=["after"], trigger_rule=rule)
        if wiring == "leaf":
            gate >> step >> [idle, after]
            idle >> after.as_teardown()
        else:
            gate >> step >> idle >> after
            if wiring != "no-direct-link":
                step >> after
    sync_dag(dag, tmp_path / f"dags-{dag_id}")
    return dag, marks


@pytest.mark.parametrize(
    ("setting", "idle_state"),
    [("exclude_tables", "skipped"), ("target_app", "success")],
    ids=["empty-setting-skips", "set-setting-runs"],
)
def test_a_step_whose_setting_is_empty_is_skipped_and_what_follows_it_runs(
    airflow_db, box, tmp_path, setting, idle_state
):
    dag, marks = _idle_dag(tmp_path, box, f"gate_idle_{idle_state}", {"idle": setting})
    run = dag.test()
    states = task_states(run)
    assert str(run.state) == "success", states
    assert states["idle"] == idle_state, states
    assert states["step"] == "success" and states["after"] == "success", states
    ran = ["after", "step"] if idle_state == "skipped" else ["after", "idle", "step"]
    assert sorted(p.name for p in marks.iterdir()) == ran
    # the gate's decision is still in XCom when it skipped a step
    assert stored_xcom(run, "safety_gate") is True


@pytest.mark.parametrize(
    ("skip_when_empty", "wiring", "message"),
    [
        (
            {"elsewhere": "seeds"},
            "good",
            "skip_when_empty names ['elsewhere'], not downstream of 'safety_gate'",
        ),
        (
            {"idle": "no_such_setting"},
            "good",
            "skip_when_empty['idle'] = 'no_such_setting' is not a run setting",
        ),
        # skipped beforehand, a task followed by teardowns only would turn a failure before it into a
        # successful run
        ({"idle": "exclude_tables"}, "leaf", "'idle', which has no task after it but teardowns"),
        (
            {"idle": "exclude_tables"},
            "no-direct-link",
            "'after' after it does not wait for ['step'] directly",
        ),
        ({"idle": "exclude_tables"}, "all-success", "'after' after it has trigger_rule 'all_success'"),
    ],
    ids=["task-not-downstream", "unknown-setting", "last-before-teardowns", "no-direct-link", "all-success"],
)
def test_a_wrong_skip_when_empty_fails_the_gate_naming_it(
    airflow_db, box, tmp_path, capfd, skip_when_empty, wiring, message
):
    dag, marks = _idle_dag(
        tmp_path,
        box,
        f"gate_idle_wrong_{wiring}_" + "_".join(skip_when_empty),
        skip_when_empty,
        wiring=wiring,
    )
    run = dag.test()
    printed = "".join(capfd.readouterr())
    assert message in printed
    assert str(run.state) == "failed" and task_states(run)["safety_gate"] == "failed"
    # nothing after a failed gate runs, but a teardown
    assert sorted(p.name for p in marks.iterdir()) == (["after"] if wiring == "leaf" else [])


def test_skip_when_empty_must_map_task_ids_to_settings():
    from scalingo_staging_sync.operators.gate import GateConfigError, SafetyGateOperator

    with pytest.raises(GateConfigError, match=r"skip_when_empty=\['run_seeds'\]: give a mapping"):
        SafetyGateOperator(task_id="safety_gate", skip_when_empty=["run_seeds"])


def test_the_reference_dag_skips_the_seeds_step_without_a_gap(dag):
    """No seeds: the gate skips run_seeds, and promote waits for both checks directly, so the skipped
    step costs no scheduling loop and promote still needs both checks. post_sync_commands is never
    skipped beforehand: the last step before the teardowns carries a failed promote into the run's
    state."""
    from scalingo_staging_sync import task_ids as T

    up = {t.task_id: set(t.upstream_task_ids) for t in dag.tasks}
    assert dag.get_task(T.GATE).skip_when_empty == {T.SEEDS: "seeds"}
    assert up[T.PROMOTE] == {T.PII_SCAN, T.VERIFY, T.SEEDS}
    assert dag.get_task(T.PROMOTE).trigger_rule == "none_failed_min_one_success"
    assert up[T.CLEANUP] == {T.POST_SYNC_COMMANDS}
