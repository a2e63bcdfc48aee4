"""Task ids of the reference DAG, defined once (the DAG factory, the notifier's default and the tests
read them from here)."""

from __future__ import annotations

GATE = "safety_gate"
BACKUP = "fetch_backup"
RESTORE_SCHEMA = "restore_schema"
PLAN = "plan_anonymization"
PREPARE_MASKING = "prepare_masking"
LOAD_DATA = "load_data"
FINISH_MASKING = "anonymize_table"
RESTORE_POST_DATA = "restore_post_data"
PII_SCAN = "pii_scan"
VERIFY = "verify_anonymization"
SEEDS = "run_seeds"
PROMOTE = "promote"
POST_SYNC_COMMANDS = "post_sync_commands"
CLEANUP = "cleanup"
AUDIT = "audit_report"

#: the run's phases in order (the audit's phase list; Slack posts one message per phase)
PHASES = (
    GATE,
    BACKUP,
    RESTORE_SCHEMA,
    PLAN,
    PREPARE_MASKING,
    LOAD_DATA,
    FINISH_MASKING,
    RESTORE_POST_DATA,
    PII_SCAN,
    VERIFY,
    SEEDS,
    PROMOTE,
    POST_SYNC_COMMANDS,
    CLEANUP,
)
