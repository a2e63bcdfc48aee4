"""Task ids of the reference DAG, defined once (the DAG factory, the notifier's default and the tests
read them from here)."""

from __future__ import annotations

GATE = "safety_gate"
#: the only task the gate skips on a dry run; it guards RESTORE_SCHEMA, which is skipped with it.
#: fetch_backup and the plan still run on a dry run (they only read) and DRY_RUN_STOP prints the plan
GATE_PASSED = "gate_passed"
BACKUP = "fetch_backup"
PLAN = "plan_anonymization"
DRY_RUN_STOP = "dry_run_stop"
RESTORE_SCHEMA = "restore_schema"
PREPARE_MASKING = "prepare_masking"
LOAD_DATA = "load_data"
FINISH_MASKING = "anonymize_table"
RESTORE_POST_DATA = "restore_post_data"
FINALIZE = "finalize_masked_data"
PII_SCAN = "pii_scan"
VERIFY = "verify_anonymization"
SEEDS = "run_seeds"
PROMOTE = "promote"
POST_SYNC_COMMANDS = "post_sync_commands"
CLEANUP = "cleanup"
AUDIT = "audit_report"

#: the run's phases in order (the audit's phase list; Slack posts one message per unmapped phase)
PHASES = (
    GATE,
    GATE_PASSED,
    BACKUP,
    PLAN,
    DRY_RUN_STOP,
    RESTORE_SCHEMA,
    PREPARE_MASKING,
    LOAD_DATA,
    FINISH_MASKING,
    RESTORE_POST_DATA,
    FINALIZE,
    PII_SCAN,
    VERIFY,
    SEEDS,
    PROMOTE,
    POST_SYNC_COMMANDS,
    CLEANUP,
)
