"""The ``[scalingo_staging_sync]`` Airflow config section (declared in ``get_provider_info()["config"]``).

Lookup order for each key: Airflow's configuration (``airflow.cfg`` or ``AIRFLOW__SCALINGO_STAGING_SYNC__<KEY>``),
then the legacy environment variable (``SCALINGO_STAGING_SYNC_<...>``, kept working as a fallback), then
the default below. Airflow is imported inside the functions: the core never reads it.
"""

from __future__ import annotations

import os
from typing import Any

SECTION = "scalingo_staging_sync"

#: key -> (legacy environment variable, default, description)
OPTIONS: dict[str, tuple[str | None, str | None, str]] = {
    "rules_folder": (
        "SCALINGO_STAGING_SYNC_RULES_FOLDER",
        None,
        "Folder of reviewed rules files. The trigger form offers the *.yaml/*.yml/*.json files found here "
        "(an enum, never a free path).",
    ),
    "rules_file": (
        "SCALINGO_STAGING_SYNC_RULES",
        None,
        "Rules file used when the run's rules_file param is empty (a path on the workers).",
    ),
    "target_app": (
        "SCALINGO_STAGING_SYNC_TARGET_APP",
        None,
        "Scalingo app of the staging database, when neither the param nor the rules file names it. "
        "The APP environment variable is no longer read.",
    ),
    "download_dir": (
        "SCALINGO_STAGING_SYNC_DOWNLOAD_DIR",
        None,
        "Where backups are downloaded: a local directory or an object-storage URL (s3://bucket/prefix). "
        "Default: <tmp>/scalingo_staging_sync.",
    ),
    "download_conn_id": (
        "SCALINGO_STAGING_SYNC_DOWNLOAD_CONN_ID",
        None,
        "Airflow connection of the object storage named by download_dir (e.g. aws_default).",
    ),
    "audit_dir": (
        "SCALINGO_STAGING_SYNC_AUDIT_DIR",
        None,
        "Directory of the audit reports (JSON and text), when the rules file has no audit_dir. "
        "Default: $AIRFLOW_HOME/scalingo_staging_sync/audit.",
    ),
    "pg_bin_dir": (
        "SCALINGO_STAGING_SYNC_PG_BIN",
        None,
        "Directory of pg_restore and psql. Default: found on PATH.",
    ),
    "masking_engine": (
        "SCALINGO_STAGING_SYNC_MASKING_ENGINE",
        "auto",
        "How the data load masks the on-load tables: 'stream' masks their COPY text on the worker with "
        "DuckDB (the [stream] extra) before it reaches PostgreSQL, 'trigger' with a PL/pgSQL trigger in "
        "the database, 'auto' streams when DuckDB is installed. Same output either way; tables the stream "
        "engine cannot mask keep their trigger.",
    ),
    "cache_dir": (
        "SCALINGO_STAGING_SYNC_CACHE_DIR",
        None,
        "Per-worker cache of the dump materialised from an object-storage download_dir (a local directory "
        "on each worker). Default: <tmp>/scalingo_staging_sync/cache.",
    ),
    "cache_scope": (
        "SCALINGO_STAGING_SYNC_CACHE_SCOPE",
        "task",
        "How long a worker keeps its cached copy of the dump (object-storage download_dir only): 'task' "
        "deletes it when the last task using it on that worker ends (no production dump stays on a "
        "worker; tasks running at the same time share one download); 'run' keeps it for later tasks of "
        "the run on the same worker (fewer downloads): the cleanup task deletes its own worker's copy and "
        "other workers prune theirs after SCALINGO_STAGING_SYNC_CACHE_MAX_AGE_S.",
    ),
    "max_parallel_tables": (
        "SCALINGO_STAGING_SYNC_MAX_PARALLEL_TABLES",
        "3",
        "At most this many tables are masked at the same time (mapped tasks per run; read when the DAG is parsed).",
    ),
    "schedule": (
        "SCALINGO_STAGING_SYNC_SCHEDULE",
        "0 7 * * 0",
        "Cron schedule of the reference DAG (read when the DAG is parsed). Default: Sundays 07:00 UTC.",
    ),
    "slack_conn_id": (
        "SCALINGO_STAGING_SYNC_SLACK_CONN_ID",
        None,
        "Slack connection for run notifications, when neither the param nor the rules file names one.",
    ),
}


def get(key: str, default: Any = None) -> str | None:
    """One key of the section (see the module docstring for the lookup order)."""
    if key not in OPTIONS:
        raise KeyError(f"[{SECTION}] has no option {key!r}; known: {', '.join(sorted(OPTIONS))}")
    legacy, fallback, _ = OPTIONS[key]
    value: Any = None
    try:
        from airflow.configuration import conf

        value = conf.get(SECTION, key, fallback=None)
    except Exception:  # noqa: BLE001 - Airflow not configured: fall back to the environment
        value = None
    if value is None or str(value).strip() == "":
        value = os.environ.get(legacy) if legacy else None
    if value is None or str(value).strip() == "":
        value = fallback if default is None else default
    return None if value is None else str(value).strip()


def section() -> dict[str, str | None]:
    """Every key of the section, resolved (handed to the core as a plain mapping)."""
    return {key: get(key) for key in OPTIONS}


def provider_config() -> dict[str, Any]:
    """The ``config`` entry of ``get_provider_info()``: what ``airflow config list`` shows."""
    options = {}
    for key, (legacy, default, description) in OPTIONS.items():
        text = description + (f" Legacy fallback: the environment variable {legacy}." if legacy else "")
        if default is not None:
            text += f" Default: {default}."
        options[key] = {
            "description": text,
            "version_added": "0.2.0",
            "type": "integer" if key == "max_parallel_tables" else "string",
            "example": default,
            # no default here: it would hide the legacy environment variable (applied in get())
            "default": None,
        }
    return {
        SECTION: {
            "description": "Settings of the Scalingo staging sync provider (precedence: DAG param, then "
            "rules file, then this section).",
            "options": options,
        }
    }
