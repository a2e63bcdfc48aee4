"""Airflow operators of the provider (imported lazily so DAG parsing stays cheap)."""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ScalingoBackupOperator": "scalingo_staging_sync.operators.backup",
    "PgRestoreOperator": "scalingo_staging_sync.operators.restore",
    "AnonymizeTableOperator": "scalingo_staging_sync.operators.anonymize",
    "PiiScanOperator": "scalingo_staging_sync.operators.pii_scan",
    "ResidualVerificationOperator": "scalingo_staging_sync.operators.verify",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
