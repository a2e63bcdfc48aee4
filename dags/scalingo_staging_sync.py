"""Reference DAG: refresh a Scalingo staging database from a production backup, anonymized.

Wiring only: every task calls the provider (operators, or plain callables in
``scalingo_staging_sync.workflow``). Parsing reads no file, opens no connection and calls no network:
the rules file and the connections are read when tasks run.

    safety_gate ─> fetch_backup ─> restore_schema ─> plan_anonymization ─> prepare_masking (mapped: proof +
    masking trigger per table) ─> load_data (every table's data, one pg_restore --jobs, masked rows written
    once) ─> anonymize_table (mapped: drop trigger + count, or UPDATE in place)
         ─> restore_post_data ─> pii_scan ─> verify_anonymization ─> run_seeds ─> promote ─> post_sync_commands
         ─> audit_report (teardown) ─> cleanup (teardown)
"""

from __future__ import annotations

import os

import pendulum
from airflow.providers.standard.operators.python import ShortCircuitOperator
from airflow.sdk import DAG, Param, task

from scalingo_staging_sync import workflow
from scalingo_staging_sync.operators import (
    AnonymizeTableOperator,
    PgRestoreOperator,
    PiiScanOperator,
    ResidualVerificationOperator,
    ScalingoBackupOperator,
)

DAG_ID = "scalingo_staging_sync"
SCALINGO_CONN_ID = "scalingo_default"
STAGING_CONN_ID = "staging_db"
# Connection cap of the mapped anonymization (the rules' parallel_connections is enforced at run time too).
MAX_PARALLEL_TABLES = int(os.environ.get("SCALINGO_STAGING_SYNC_MAX_PARALLEL_TABLES", "3"))


def _setting(key: str) -> str:
    return "{{ ti.xcom_pull(task_ids='safety_gate', key='settings')['" + key + "'] }}"


DUMP_PATH = "{{ ti.xcom_pull(task_ids='fetch_backup')['dump_path'] }}"


def _restored(key: str) -> str:
    return "{{ ti.xcom_pull(task_ids='restore_schema')['" + key + "'] }}"


with DAG(
    dag_id=DAG_ID,
    description="Production backup -> anonymized, PII-scanned, verified staging database",
    schedule=os.environ.get("SCALINGO_STAGING_SYNC_SCHEDULE", "0 7 * * 0"),  # Sundays 07:00 UTC
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    render_template_as_native_obj=True,
    tags=["scalingo", "staging", "anonymization"],
    doc_md=__doc__,
    default_args={
        "on_failure_callback": workflow.notify_task_failure,
        "on_success_callback": workflow.notify_phase_done,
    },
    params={
        "source_app": Param(
            None,
            type=["null", "string"],
            description="Scalingo app whose PostgreSQL backup is copied. Empty: source_app of the rules file.",
        ),
        "target_app": Param(
            os.environ.get("APP") or None,
            type=["null", "string"],
            description="Scalingo app of the staging database (default: env APP). Never a production app.",
        ),
        "backup": Param(
            "latest",
            type="string",
            minLength=1,
            description='"latest" (newest backup whose status is done), "new" (ask Scalingo for a fresh one and '
            "wait for it), or a backup id.",
        ),
        "exclude_tables": Param(
            [],
            type="array",
            items={"type": "string", "minLength": 1},
            description="Tables whose data is not copied (schema kept), added to the rules file's exclude_tables.",
        ),
        "dry_run": Param(
            False,
            type="boolean",
            description="Only check and print the plan (backup, tables, rules, exclusions, mode); change nothing.",
        ),
        "confirm_target": Param(
            None,
            type=["null", "string"],
            description="Manual runs, when the rules set require_confirmation: type the target app name to confirm.",
        ),
        "slack_conn_id": Param(
            None,
            type=["null", "string"],
            description="Slack incoming-webhook connection for run notifications (overrides the rules file).",
        ),
        "rules_file": Param(
            None,
            type=["null", "string"],
            description="Path of the anonymization rules file. Empty: env SCALINGO_STAGING_SYNC_RULES.",
        ),
    },
) as dag:
    safety_gate = ShortCircuitOperator(
        task_id="safety_gate",
        python_callable=workflow.safety_gate,
        op_kwargs={"scalingo_conn_id": SCALINGO_CONN_ID, "staging_conn_id": STAGING_CONN_ID},
    )

    fetch_backup = ScalingoBackupOperator(
        task_id="fetch_backup",
        scalingo_conn_id=SCALINGO_CONN_ID,
        app=_setting("source_app"),
        backup=_setting("backup"),
        addon_id=_setting("addon_id"),
        download_dir=_setting("download_dir"),
    )

    restore_schema = PgRestoreOperator(
        task_id="restore_schema",
        postgres_conn_id=STAGING_CONN_ID,
        dump_path=DUMP_PATH,
        section="pre-data",
        mode=_setting("restore_mode"),
        exclude_tables=_setting("exclude_tables"),
        maintenance=_setting("maintenance"),
        target_app=_setting("target_app"),
        scalingo_conn_id=SCALINGO_CONN_ID,
    )

    @task
    def plan_anonymization() -> list[dict]:
        return workflow.plan_anonymization(STAGING_CONN_ID)

    plan = plan_anonymization()

    # Masking on load, one mapped task per table: take the residual-value proof from the archive and
    # install the table's masking trigger (tables with conditions or inline queries: nothing yet).
    per_table = {
        "postgres_conn_id": STAGING_CONN_ID,
        "database": _restored("database"),
        "retry_attempts": _setting("retry_attempts"),
        "retry_base_delay_s": _setting("retry_base_delay_s"),
        "max_active_tis_per_dagrun": MAX_PARALLEL_TABLES,
    }
    prepare_masking = AnonymizeTableOperator.partial(
        task_id="prepare_masking", step="prepare", dump_path=DUMP_PATH, **per_table
    ).expand(plan=plan)

    # Every table's data in one pg_restore --jobs (the same scheduling as a bare restore): rows of
    # masked tables go through their triggers, so they are written once, already masked.
    later_sections = {
        "postgres_conn_id": STAGING_CONN_ID,
        "dump_path": DUMP_PATH,
        "mode": _restored("mode"),  # the mode restore_schema resolved: same database for every section
        "exclude_tables": _setting("exclude_tables"),
        "jobs": _setting("restore_jobs"),
    }
    load_data = PgRestoreOperator(
        task_id="load_data",
        section="data",
        mask_on_load=True,
        **later_sections,
        trigger_rule="none_failed_min_one_success",  # no masked table: prepare_masking is skipped
    )

    # Then, per table: drop the trigger and count the rows, or UPDATE in place (conditional rules,
    # inline queries, custom strategies), each retried on its own.
    anonymize_table = AnonymizeTableOperator.partial(
        task_id="anonymize_table",
        step="finish",
        prepare_task_id="prepare_masking",
        parallel_connections=_setting("parallel_connections"),
        email_domain=_setting("email_domain"),
        **per_table,
    ).expand(plan=plan)

    restore_post_data = PgRestoreOperator(
        task_id="restore_post_data",
        section="post-data",
        **later_sections,
        trigger_rule="none_failed_min_one_success",  # no masked table: anonymize_table is skipped
    )

    pii_scan = PiiScanOperator(
        task_id="pii_scan",
        postgres_conn_id=STAGING_CONN_ID,
        database=_restored("database"),
        masked_columns="{{ ti.xcom_pull(task_ids='plan_anonymization', key='masked_columns') }}",
        allow=_setting("pii_allow"),
        on_unmasked=_setting("pii_on_unmasked"),
        extra_patterns=_setting("pii_patterns"),
        sample_rows=_setting("pii_sample_rows"),
    )

    verify_anonymization = ResidualVerificationOperator(
        task_id="verify_anonymization",
        postgres_conn_id=STAGING_CONN_ID,
        database=_restored("database"),
        anonymize_results="{{ ti.xcom_pull(task_ids='anonymize_table') }}",
        enabled=_setting("verification_enabled"),
    )

    @task
    def run_seeds() -> list[dict]:
        return workflow.run_seeds(STAGING_CONN_ID)

    promote = PgRestoreOperator(
        task_id="promote",
        postgres_conn_id=STAGING_CONN_ID,
        section="promote",
        mode=_restored("mode"),
        keep_previous=_setting("keep_previous"),
        maintenance=_setting("maintenance"),
        target_app=_setting("target_app"),
        scalingo_conn_id=SCALINGO_CONN_ID,
    )

    @task
    def post_sync_commands() -> list[dict]:
        return workflow.post_sync_commands(SCALINGO_CONN_ID)

    @task
    def audit_report() -> dict:
        return workflow.audit_report()

    @task
    def cleanup() -> dict:
        return workflow.cleanup(STAGING_CONN_ID, SCALINGO_CONN_ID)

    seeded = run_seeds()
    commands = post_sync_commands()
    # Teardowns without a setup: they run whatever happened (a refused run gets its audit too, a dry run
    # its cleanup), and like every teardown they never decide the run's state.
    audit = audit_report().as_teardown()
    cleaned = cleanup().as_teardown()

    safety_gate >> fetch_backup >> restore_schema >> plan
    plan >> prepare_masking >> load_data >> anonymize_table >> restore_post_data
    plan >> load_data >> restore_post_data  # also when no table is masked (mapped tasks skipped)
    restore_post_data >> pii_scan >> verify_anonymization >> seeded >> promote >> commands >> audit >> cleaned
