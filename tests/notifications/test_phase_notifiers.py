"""Where the reference DAG attaches its per-phase Slack notifier."""

from __future__ import annotations


def test_the_reference_dag_attaches_phase_notifiers_only_where_they_can_post():
    """A phase notifier on a mapped task never posts (one message per phase, not per table): the reference
    DAG gives one to each unmapped phase task and none to the mapped per-table tasks."""
    from scalingo_staging_sync import task_ids as T
    from scalingo_staging_sync.example_dags.reference import build_reference_dag
    from scalingo_staging_sync.notifications.slack import SyncSlackNotifier

    dag = build_reference_dag("tidy_phase_notifiers", schedule=None)

    def phase_notifiers(task):
        callbacks = task.on_success_callback or []
        callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
        return [c for c in callbacks if isinstance(c, SyncSlackNotifier) and c.event == "phase"]

    mapped = {t.task_id for t in dag.tasks if type(t).__name__ == "MappedOperator"}
    assert mapped == {T.PREPARE_MASKING, T.FINISH_MASKING}
    for task_id in mapped:
        assert phase_notifiers(dag.get_task(task_id)) == [], task_id
    for task_id in (
        T.BACKUP,
        T.PLAN,
        T.RESTORE_SCHEMA,
        T.LOAD_DATA,
        T.RESTORE_POST_DATA,
        T.PII_SCAN,
        T.PROMOTE,
    ):
        assert len(phase_notifiers(dag.get_task(task_id))) == 1, task_id
