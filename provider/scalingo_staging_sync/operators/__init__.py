"""Airflow operators of the provider, one per step (imported lazily so DAG parsing stays cheap)."""

from __future__ import annotations

import importlib

_EXPORTS = {
    "SafetyGateOperator": "scalingo_staging_sync.operators.gate",
    "ScalingoBackupOperator": "scalingo_staging_sync.operators.backup",
    "PgRestoreOperator": "scalingo_staging_sync.operators.restore",
    "PlanAnonymizationOperator": "scalingo_staging_sync.operators.plan",
    "PrepareMaskingOperator": "scalingo_staging_sync.operators.masking",
    "MaskedDataLoadOperator": "scalingo_staging_sync.operators.masking",
    "FinishMaskingOperator": "scalingo_staging_sync.operators.masking",
    "FinalizeMaskedDataOperator": "scalingo_staging_sync.operators.masking",
    "DryRunStopOperator": "scalingo_staging_sync.operators.plan",
    "AnonymizeTableOperator": "scalingo_staging_sync.operators.anonymize",
    "PiiScanOperator": "scalingo_staging_sync.operators.pii_scan",
    "ResidualVerificationOperator": "scalingo_staging_sync.operators.verify",
    "RunSeedsOperator": "scalingo_staging_sync.operators.post_sync",
    "PromoteStagingOperator": "scalingo_staging_sync.operators.promote",
    "StagingCleanupOperator": "scalingo_staging_sync.operators.promote",
    "PostSyncCommandsOperator": "scalingo_staging_sync.operators.post_sync",
    "AuditReportOperator": "scalingo_staging_sync.operators.audit",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
