"""Refresh Scalingo staging databases from production backups, anonymized and verified.

Two layers (see docs/CONTRACTS.md, "Layering"):

* the core, which knows nothing of Airflow: ``scalingo`` (API client), ``restore`` (pg_restore
  driving), ``anonymize`` (rules, transformers, SQL), ``pii`` (detection), ``audit`` (report);
* thin Airflow adapters: ``hooks``, ``operators``, ``triggers``, ``notifications``.

``testing`` ships a fake Scalingo API server and embedded-PostgreSQL helpers for users' own tests.
"""

from __future__ import annotations

#: the one definition of the version (pyproject.toml reads it: ``dynamic = ["version"]``)
__version__ = "0.2.0"

DISTRIBUTION_NAME = "airflow-provider-scalingo-staging-sync"


def get_provider_info() -> dict:
    """Provider metadata read by Airflow through the ``apache_airflow_provider`` entry point."""
    from scalingo_staging_sync.config import provider_config

    return {
        "package-name": DISTRIBUTION_NAME,
        "name": "Scalingo staging sync",
        "description": "Copy a Scalingo production PostgreSQL backup into staging, anonymized and verified.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Scalingo",
                "external-doc-url": "https://developers.scalingo.com/",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Scalingo",
                "python-modules": [
                    "scalingo_staging_sync.hooks.scalingo",
                    "scalingo_staging_sync.hooks.postgres",
                ],
            }
        ],
        "operators": [
            {
                "integration-name": "Scalingo",
                "python-modules": [
                    "scalingo_staging_sync.operators.gate",
                    "scalingo_staging_sync.operators.backup",
                    "scalingo_staging_sync.operators.restore",
                    "scalingo_staging_sync.operators.plan",
                    "scalingo_staging_sync.operators.masking",
                    "scalingo_staging_sync.operators.anonymize",
                    "scalingo_staging_sync.operators.pii_scan",
                    "scalingo_staging_sync.operators.verify",
                    "scalingo_staging_sync.operators.promote",
                    "scalingo_staging_sync.operators.post_sync",
                    "scalingo_staging_sync.operators.audit",
                ],
            }
        ],
        "notifications": ["scalingo_staging_sync.notifications.slack.SyncSlackNotifier"],
        "config": provider_config(),
        "triggers": [
            {
                "integration-name": "Scalingo",
                "python-modules": ["scalingo_staging_sync.triggers.backup"],
            }
        ],
        "connection-types": [
            {
                "hook-class-name": "scalingo_staging_sync.hooks.scalingo.ScalingoHook",
                "hook-name": "Scalingo",
                "connection-type": "scalingo",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "login", "port"],
                    "relabeling": {"password": "API token", "host": "Base URL (optional)"},
                    "placeholders": {
                        "password": "tk-us-...",
                        "host": "one URL for auth, API and Database API",
                    },
                },
                "conn-fields": {
                    "region": {
                        "label": "Region",
                        "schema": {"type": ["string", "null"], "default": "osc-fr1"},
                        "description": "Scalingo region of the apps (osc-fr1, osc-secnum-fr1, ...).",
                    },
                    "auth_url": {
                        "label": "Auth URL",
                        "schema": {"type": ["string", "null"]},
                        "description": "Optional. Base URL of the auth service, e.g. https://auth.scalingo.com",
                    },
                    "api_url": {
                        "label": "API URL",
                        "schema": {"type": ["string", "null"]},
                        "description": "Optional. Base URL of the regional API, e.g. https://api.osc-fr1.scalingo.com",
                    },
                    "db_api_url": {
                        "label": "Database API URL",
                        "schema": {"type": ["string", "null"]},
                        "description": "Optional. Base URL of the database API, e.g. https://db-api.osc-fr1.scalingo.com",
                    },
                },
            }
        ],
    }
