"""The reference DAG's wiring: the provider's operators composed, values passed by templates.

    safety_gate ─> gate_passed ───────────────────────────────────────────────────────┐
               └─> fetch_backup ─> plan_anonymization (from the archive alone: rules   ├─> restore_schema
                   checked, every data-carrying entry classified) ─────────────────────┘
                                   plan_anonymization ─> dry_run_stop (prints the plan)
    restore_schema ─> prepare_masking (mapped: proof + masking trigger per table) ─> load_data (every
    table's data, one pg_restore --jobs, masked rows written once) ─> anonymize_table (mapped: drop
    trigger + count, or UPDATE in place)
         ─> restore_post_data ─> finalize_masked_data (matviews refreshed, ANALYZE on masked data)
         ─> pii_scan + verify_anonymization (side by side) ─> run_seeds ─> promote ─> post_sync_commands
         ─> cleanup (teardown) ─> audit_report (teardown, records the cleanup outcome)

A rule error fails plan_anonymization before staging is touched. A dry run passes the gate's checks,
which skips gate_passed only: the archive is fetched and planned (both only read; "new" is read as
"latest"), dry_run_stop prints the plan and the classification, and restore_schema and everything after
it are skipped with gate_passed; the cleanup removes the downloaded archive.

Parsing reads no file and opens no connection: the rules file and the connections are read when tasks
run. The only parse-time work is listing the configured rules folder, for the trigger form's
``rules_file`` choices. Every value a task needs comes from an earlier task's XCom through a template
(task ids from :mod:`scalingo_staging_sync.task_ids`); operators never pull XCom by task id themselves.
"""

from __future__ import annotations

import copy
from typing import Any

from scalingo_staging_sync import task_ids as T

DAG_ID = "scalingo_staging_sync"
SCALINGO_CONN_ID = "scalingo_default"
STAGING_CONN_ID = "staging_db"

DAG_DOC = __doc__


#: the template macro through which every template reads the gate's XComs (see :func:`gate_xcom`)
GATE_XCOM_MACRO = "gate_xcom"
_GATE_XCOM_CACHE: dict[tuple[Any, ...], Any] = {}


def gate_xcom(ti: Any, key: str) -> Any:
    """The gate's XCom ``key`` (``settings`` or ``preflight``), pulled once per task instance.

    A task reads many run settings, one templated field (and one Slack-callback field) each: through
    ``ti.xcom_pull`` that is one execution-API round trip per field (up to 10 for one task) for the
    same value. The gate's XComs are final once a downstream task runs, so the first pull of a task
    instance (try) is kept and each field gets its own copy. The gate itself (its success callback)
    always pulls; a missing value (None) is never kept."""
    if ti.task_id == T.GATE:
        return ti.xcom_pull(task_ids=T.GATE, key=key)
    ident = (getattr(ti, "id", None), ti.dag_id, ti.run_id, ti.task_id, ti.map_index, ti.try_number, key)
    value = _GATE_XCOM_CACHE.get(ident)
    if value is None:
        value = ti.xcom_pull(task_ids=T.GATE, key=key)
        if value is None:
            return None
        if len(_GATE_XCOM_CACHE) >= 32:  # one task instance at a time per process: never grows
            _GATE_XCOM_CACHE.clear()
        _GATE_XCOM_CACHE[ident] = value
    return copy.deepcopy(value)


def _pull(task_id: str, key: str | None = None) -> str:
    """Jinja expression of a task's XCom (the gate's through :func:`gate_xcom`)."""
    if task_id == T.GATE and key:
        return f"{GATE_XCOM_MACRO}(ti, '{key}')"
    return f"ti.xcom_pull(task_ids='{task_id}'" + (f", key='{key}')" if key else ")")


def setting(key: str) -> str:
    """Template of one run setting (the gate's ``settings`` XCom)."""
    return "{{ " + _pull(T.GATE, "settings") + "['" + key + "'] }}"


def result(task_id: str, key: str | None = None, *, field: str | None = None) -> str:
    """Template of a task's XCom (``return_value`` or ``key``), or one field of it (None when absent)."""
    pull = _pull(task_id, key)
    if field:
        return "{{ (" + pull + " or {}).get('" + field + "') }}"
    return "{{ " + pull + " }}"


def result_or_key(task_id: str, key: str) -> str:
    """Template of a task's ``return_value``, or its XCom ``key`` when it has none (a task that failed
    pushes its partial result under ``key`` before raising)."""
    return "{{ " + _pull(task_id) + " or " + _pull(task_id, key) + " }}"


def params(rules_files: list[str], *, sections: bool = True) -> dict[str, Any]:
    """The trigger form: titles, descriptions, sections, suggestions."""
    from airflow.sdk import Param

    def p(default: Any, section: str, **kw: Any) -> Any:
        if sections:
            kw["section"] = section
        return Param(default, **kw)

    what, safety, advanced = "What to copy", "Safety", "Notifications and rules"
    return {
        "source_app": p(
            None,
            what,
            type=["null", "string"],
            title="Source app",
            description="Scalingo app whose PostgreSQL backup is copied. Empty: source_app of the rules file.",
        ),
        "backup": p(
            "latest",
            what,
            type="string",
            minLength=1,
            title="Backup",
            examples=["latest", "new"],
            description='"latest" (newest backup whose status is done), "new" (ask Scalingo for a fresh one '
            "and wait for it), or a backup id.",
        ),
        "exclude_tables": p(
            [],
            what,
            type="array",
            items={"type": "string", "minLength": 1},
            title="Tables without data",
            description="Tables whose data is not copied (schema kept), added to the rules file's exclude_tables.",
        ),
        "target_app": p(
            None,
            safety,
            type=["null", "string"],
            title="Target (staging) app",
            description="Scalingo app of the staging database. Empty: target_app of the rules file, then "
            "[scalingo_staging_sync] target_app. Never a production app.",
        ),
        "dry_run": p(
            False,
            safety,
            type="boolean",
            title="Dry run (preflight only)",
            description="Run every preflight check and print the plan; change nothing. Needs no confirmation.",
        ),
        "confirm_target": p(
            None,
            safety,
            type=["null", "string"],
            title="Confirm the target app",
            description="Manual runs, when the rules set require_confirmation: type the target app name.",
        ),
        "rules_file": p(
            None,
            advanced,
            type=["null", "string"],
            enum=[None, *rules_files],
            title="Rules file",
            description="One of the reviewed rules files of the configured rules folder "
            "([scalingo_staging_sync] rules_folder). Empty: [scalingo_staging_sync] rules_file.",
        ),
        "download_dir": p(
            None,
            advanced,
            type=["null", "string"],
            title="Download directory",
            description="Where the backup is downloaded: a local directory or an object-storage URL "
            "(s3://bucket/prefix). Empty: the rules file's download_dir, then the config section's.",
        ),
        "slack_conn_id": p(
            None,
            advanced,
            type=["null", "string"],
            title="Slack connection",
            description="Slack connection for run notifications (overrides the rules file). Empty: the rules "
            "file's slack_conn_id, then the config section's.",
        ),
    }


def build_reference_dag(
    dag_id: str = DAG_ID,
    *,
    scalingo_conn_id: str = SCALINGO_CONN_ID,
    staging_conn_id: str = STAGING_CONN_ID,
    schedule: Any = "config",
    max_parallel_tables: int | None = None,
    **dag_kwargs: Any,
):
    """Build the reference DAG (``schedule`` and ``max_parallel_tables`` default to the config section)."""
    import pendulum
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG

    from scalingo_staging_sync import config
    from scalingo_staging_sync.notifications.slack import SyncSlackNotifier
    from scalingo_staging_sync.operators import (
        AuditReportOperator,
        DryRunStopOperator,
        FinalizeMaskedDataOperator,
        FinishMaskingOperator,
        MaskedDataLoadOperator,
        PgRestoreOperator,
        PiiScanOperator,
        PlanAnonymizationOperator,
        PostSyncCommandsOperator,
        PrepareMaskingOperator,
        PromoteStagingOperator,
        ResidualVerificationOperator,
        RunSeedsOperator,
        SafetyGateOperator,
        ScalingoBackupOperator,
        StagingCleanupOperator,
    )
    from scalingo_staging_sync.operators.gate import list_rules_files

    if schedule == "config":
        schedule = config.get("schedule")
    if max_parallel_tables is None:
        max_parallel_tables = int(config.get("max_parallel_tables") or 3)
    slack = {
        "slack_conn_id": "{{ (" + _pull(T.GATE, "settings") + " or {}).get('slack_conn_id') "
        "or params.slack_conn_id }}",
        "channel": result(T.GATE, "settings", field="slack_channel"),
        "target_app": result(T.GATE, "settings", field="target_app"),
        "source_app": result(T.GATE, "settings", field="source_app"),
    }
    phase = {"on_success_callback": SyncSlackNotifier(event="phase", **slack)}
    dump = result(T.BACKUP)  # local dump_path, or stored_dump (object storage): operators._dump.local_dump
    restored_db = result(T.RESTORE_SCHEMA, field="database")
    restored_mode = result(T.RESTORE_SCHEMA, field="mode")
    archive_plan = result(T.PLAN, "archive_plan")

    defaults = {
        "start_date": pendulum.datetime(2026, 1, 1, tz="UTC"),
        "catchup": False,
        "max_active_runs": 1,
        "render_template_as_native_obj": True,
        "tags": ["scalingo", "staging", "anonymization"],
        "description": "Production backup -> anonymized, PII-scanned, verified staging database",
        "doc_md": DAG_DOC,
        "default_args": {"on_failure_callback": SyncSlackNotifier(event="failure", **slack)},
        "params": params(list_rules_files(config.get("rules_folder")), sections=True),
    }
    defaults.update(dag_kwargs)
    # the templates read the gate's XComs through this macro; a caller's own macros are kept
    defaults["user_defined_macros"] = {
        **(defaults.get("user_defined_macros") or {}),
        GATE_XCOM_MACRO: gate_xcom,
    }
    with DAG(dag_id=dag_id, schedule=schedule, **defaults) as dag:
        gate = SafetyGateOperator(
            task_id=T.GATE,
            scalingo_conn_id=scalingo_conn_id,
            staging_conn_id=staging_conn_id,
            on_success_callback=SyncSlackNotifier(event="start", **slack),
            # a dry run skips only gate_passed, which guards the restore: the backup is fetched and
            # planned (read only), dry_run_stop prints the plan, and nothing from restore_schema on runs
            dry_run_skips=[T.GATE_PASSED],
            # no seeds in this run: run_seeds is skipped by the gate, no task start and, under a
            # scheduler, no scheduling loop on the chain (promote waits for the checks directly).
            # Not post_sync_commands: it is the last step before the teardowns, the one that turns a
            # failed promote (or check) into a failed run; skipped beforehand, it would hide it
            skip_when_empty={T.SEEDS: "seeds"},
        )
        gate_passed = EmptyOperator(task_id=T.GATE_PASSED)
        backup = ScalingoBackupOperator(
            task_id=T.BACKUP,
            scalingo_conn_id=scalingo_conn_id,
            app=setting("source_app"),
            # a dry run never asks Scalingo for a new backup: it reads the latest one
            backup="{% set s = " + _pull(T.GATE, "settings") + " %}"
            "{{ 'latest' if s['dry_run'] and s['backup'] == 'new' else s['backup'] }}",
            addon_id=setting("addon_id"),
            download_dir=setting("download_dir"),
            download_conn_id=setting("download_conn_id"),
            **phase,
        )
        plan = PlanAnonymizationOperator(
            task_id=T.PLAN,
            rules_file=setting("rules_file"),
            dump_path=dump,
            exclude_tables=setting("exclude_tables"),
            pg_bin_dir=setting("pg_bin_dir"),
            **phase,
        )
        dry_run_stop = DryRunStopOperator(
            task_id=T.DRY_RUN_STOP, dry_run=setting("dry_run"), archive_plan=archive_plan
        )
        restore_schema = PgRestoreOperator(
            task_id=T.RESTORE_SCHEMA,
            postgres_conn_id=staging_conn_id,
            dump_path=dump,
            section="pre-data",
            mode=setting("restore_mode"),
            exclude_tables=setting("exclude_tables"),
            maintenance=setting("maintenance"),
            target_app=setting("target_app"),
            pg_bin_dir=setting("pg_bin_dir"),
            scalingo_conn_id=scalingo_conn_id,
            plan=archive_plan,
            **phase,
        )

        per_table = {
            "postgres_conn_id": staging_conn_id,
            "database": restored_db,
            "retry_attempts": setting("retry_attempts"),
            "retry_base_delay_s": setting("retry_base_delay_s"),
            "max_active_tis_per_dagrun": max_parallel_tables,
            # no phase notifier: a mapped instance is one table, not a phase, so it never posts one
            # (SyncSlackNotifier skips mapped instances); the tables and rows are in the success message
        }
        prepare = PrepareMaskingOperator.partial(
            task_id=T.PREPARE_MASKING, dump_path=dump, pg_bin_dir=setting("pg_bin_dir"), **per_table
        ).expand(plan=plan.output)
        later_sections = {
            "postgres_conn_id": staging_conn_id,
            "dump_path": dump,
            "mode": restored_mode,  # the mode restore_schema resolved: same database for every section
            "exclude_tables": setting("exclude_tables"),
            "jobs": setting("restore_jobs"),
            "pg_bin_dir": setting("pg_bin_dir"),
            "plan": archive_plan,
            **phase,
        }
        load_data = MaskedDataLoadOperator(
            task_id=T.LOAD_DATA,
            masking_engine=setting("masking_engine"),
            trigger_rule="none_failed_min_one_success",  # no masked table: prepare_masking is skipped
            **later_sections,
        )
        finish = FinishMaskingOperator.partial(
            task_id=T.FINISH_MASKING,
            parallel_connections=setting("parallel_connections"),
            email_domain=setting("email_domain"),
            **per_table,
        ).expand(prepared=prepare.output)
        post_data = PgRestoreOperator(
            task_id=T.RESTORE_POST_DATA,
            section="post-data",
            trigger_rule="none_failed_min_one_success",  # no masked table: anonymize_table is skipped
            **later_sections,
        )
        finalize = FinalizeMaskedDataOperator(
            task_id=T.FINALIZE,
            postgres_conn_id=staging_conn_id,
            database=restored_db,
            masked_columns=result(T.PLAN, "masked_columns"),
            conditional=result(T.PLAN, "conditional"),
            partially_masked=result(T.PLAN, "partially_masked"),
            jobs=setting("restore_jobs"),
            **phase,
        )
        pii = PiiScanOperator(
            task_id=T.PII_SCAN,
            postgres_conn_id=staging_conn_id,
            database=restored_db,
            enabled=setting("pii_enabled"),
            # the plan's, and the materialized-view columns that only carry them (refreshed from masked data)
            masked_columns="{{ (ti.xcom_pull(task_ids='" + T.PLAN + "', key='masked_columns') or []) + "
            "((ti.xcom_pull(task_ids='" + T.FINALIZE + "') or {}).get('masked_view_columns') or []) }}",
            allow=setting("pii_allow"),
            on_unmasked=setting("pii_on_unmasked"),
            extra_patterns=setting("pii_patterns"),
            sample_rows=setting("pii_sample_rows"),
            excluded_tables="{{ (ti.xcom_pull(task_ids='" + T.PLAN + "', key='archive_plan') or {})"
            ".get('excluded_tables') }}",
            conditional=result(T.PLAN, "conditional"),
            partially_masked=result(T.PLAN, "partially_masked"),
            # the proofs' phrases of sampled originals: a column holding copies of them fails the gate
            anonymize_results="{{ " + _pull(T.FINISH_MASKING) + " or [] }}",
            large_objects="{{ " + _pull(T.GATE, "settings") + "['large_objects'] == 'keep' }}",
            **phase,
        )
        verify = ResidualVerificationOperator(
            task_id=T.VERIFY,
            postgres_conn_id=staging_conn_id,
            database=restored_db,
            # [] when no table is masked (the mapped tasks are skipped): None is refused as "nothing given"
            anonymize_results="{{ " + _pull(T.FINISH_MASKING) + " or [] }}",
            enabled=setting("verification_enabled"),
            check_stats=True,
            **phase,
        )
        seeds = RunSeedsOperator(
            task_id=T.SEEDS,
            postgres_conn_id=staging_conn_id,
            database=restored_db,
            seeds=setting("seeds"),
            rules_file=setting("rules_file"),
            **phase,
        )
        promote = PromoteStagingOperator(
            task_id=T.PROMOTE,
            postgres_conn_id=staging_conn_id,
            mode=restored_mode,
            keep_previous=setting("keep_previous"),
            # run_seeds is skipped when the run has no seeds; promote still needs the checks to pass
            # (linked to them directly below), and a dry run, which skips them all, skips it too
            trigger_rule="none_failed_min_one_success",
            maintenance=setting("maintenance"),
            scalingo_conn_id=scalingo_conn_id,
            **phase,
        )
        commands = PostSyncCommandsOperator(
            task_id=T.POST_SYNC_COMMANDS,
            scalingo_conn_id=scalingo_conn_id,
            commands=setting("post_sync_commands"),
            target_app=setting("target_app"),
            **phase,
        )
        # Teardowns without a setup: they run whatever happened (a refused run gets its audit too, a dry
        # run its cleanup), and like every teardown they never decide the run's state.
        # The mode restore_schema resolved; when restore_schema failed (no XCom) after a passed gate of a
        # real run, "auto": whatever it began (a scratch database, in-place state) is finished and proven.
        # A refused or dry run: empty, the staging database is never touched.
        real_run_gate_passed = (
            "(" + _pull(T.GATE, "preflight") + " or {}).get('passed') and not "
            "(" + _pull(T.GATE, "settings") + " or {}).get('dry_run')"
        )
        cleanup_mode = (
            "{{ (ti.xcom_pull(task_ids='" + T.RESTORE_SCHEMA + "') or {}).get('mode') or "
            "('auto' if " + real_run_gate_passed + " else '') }}"
        )
        cleanup = StagingCleanupOperator(
            task_id=T.CLEANUP,
            postgres_conn_id=staging_conn_id,
            mode=cleanup_mode,
            verified="{{ True if ti.xcom_pull(task_ids='" + T.PROMOTE + "') else None }}",
            maintenance=result(T.GATE, "settings", field="maintenance"),
            download_dir=result(T.GATE, "settings", field="download_dir"),
            stored_dump=result(T.BACKUP, field="stored_dump"),
            download_conn_id=result(T.GATE, "settings", field="download_conn_id"),
            scalingo_conn_id=scalingo_conn_id,
        ).as_teardown()
        audit = AuditReportOperator(
            task_id=T.AUDIT,
            settings=result(T.GATE, "settings"),
            preflight=result(T.GATE, "preflight"),
            backup=result(T.BACKUP),
            restore="{{ {"
            + ", ".join(
                f"'{t}': ti.xcom_pull(task_ids='{t}')"
                for t in (T.RESTORE_SCHEMA, T.LOAD_DATA, T.RESTORE_POST_DATA)
            )
            + "} }}",
            plan=result(T.PLAN),
            archive_plan=archive_plan,
            tables=result(T.FINISH_MASKING),
            pii=result_or_key(T.PII_SCAN, "pii_scan"),
            verification=result_or_key(T.VERIFY, "verification"),
            seeds=result(T.SEEDS),
            promotion=result(T.PROMOTE),
            commands=result(T.POST_SYNC_COMMANDS),
            cleanup=result_or_key(T.CLEANUP, "cleanup"),
            phases=list(T.PHASES),
            on_success_callback=SyncSlackNotifier(
                event="success", labels=setting("translations"), summary_task_id=T.AUDIT, **slack
            ),
            on_failure_callback=None,
        ).as_teardown()

        # Under a scheduler each link of the chain costs a scheduling loop (about a second), so the
        # links that guard nothing run side by side: the download does not wait for gate_passed, and
        # the restore does not wait for dry_run_stop (which only prints the plan). What stops a dry run
        # is gate_passed, skipped by the gate: restore_schema (all_success) is skipped with it, and
        # everything after it with restore_schema.
        gate >> [gate_passed, backup]
        backup >> plan >> [dry_run_stop, restore_schema]
        gate_passed >> restore_schema
        restore_schema >> prepare >> load_data >> finish >> post_data
        restore_schema >> load_data >> post_data  # also when no table is masked (mapped tasks skipped)
        # the PII scan and the verification only read the masked data: side by side (one scheduler
        # transition less on the run's critical path), and both must pass before anything is promoted
        post_data >> finalize >> [pii, verify] >> seeds >> promote >> commands >> cleanup >> audit
        # the gate skips run_seeds when the run has no seeds: promote waits for the checks too
        [pii, verify] >> promote
    return dag
