"""Typed run settings: built once per run from params, the rules file and configuration.

Precedence, for every setting that more than one source can give: **param, then rules file, then
configuration** (the ``[scalingo_staging_sync]`` Airflow config section, which Airflow also reads from
``AIRFLOW__SCALINGO_STAGING_SYNC__<KEY>`` environment variables). The core never reads Airflow: the
adapter hands the config section over as a plain mapping.

The value is serialised to XCom once (``to_json``) and read back as the same type (``from_json``).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from scalingo_staging_sync.errors import SyncError
from scalingo_staging_sync.storage import join_location, safe_segment
from scalingo_staging_sync.tablename import TableName, parse_table_names


class SettingsError(SyncError, ValueError):
    """A param, rule or configuration value of the run is wrong; raised before anything is touched."""


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _first(*values: Any) -> str | None:
    for value in values:
        text = _text(value)
        if text is not None:
            return text
    return None


# ---------------------------------------------------------------------------------------- downloads
# The one place that decides where backups are downloaded: the root, each run's folder under it, and
# the directory of a ScalingoBackupOperator given none.


def default_download_root() -> Path:
    """``<system temp>/scalingo_staging_sync``: the download root when no param, rules file or config
    names one."""
    return Path(tempfile.gettempdir()) / "scalingo_staging_sync"


def download_root(*candidates: Any) -> str:
    """The first non-empty of ``candidates`` (in precedence order), else :func:`default_download_root`."""
    return _first(*candidates) or str(default_download_root())


def run_download_dir(root: str | Path, run_id: str) -> str:
    """The run's own folder under ``root`` (a local path or an object-storage URL):
    ``<root>/<run id made safe>`` (:func:`~scalingo_staging_sync.storage.safe_segment`)."""
    return join_location(root, safe_segment(run_id))


def operator_download_dir(configured: Any = None) -> str:
    """Where :class:`~scalingo_staging_sync.operators.backup.ScalingoBackupOperator` downloads when it is
    given no ``download_dir``: ``configured`` (the config section's ``download_dir``), else
    ``<download root>/backups``. On object storage the run's folder (:func:`run_download_dir`) is added
    under it; a ``download_dir`` given to the operator is used as it is (the reference DAG passes
    :attr:`RunSettings.download_dir`, already the run's own)."""
    return _first(configured) or str(default_download_root() / "backups")


def _masking_engine(value: Any) -> str:
    from scalingo_staging_sync.anonymize.stream import engine_name

    try:
        return engine_name(_first(value))
    except ValueError as exc:
        raise SettingsError(
            f"[scalingo_staging_sync] {exc} "
            "(AIRFLOW__SCALINGO_STAGING_SYNC__MASKING_ENGINE or SCALINGO_STAGING_SYNC_MASKING_ENGINE)"
        ) from None


@dataclass(frozen=True)
class RunSettings:
    """Everything the steps of one run need, resolved once (see the module docstring for precedence)."""

    run_id: str
    rules_file: str
    rules_sha256: str | None
    source_app: str | None
    target_app: str | None
    backup: str = "latest"
    addon_id: str | None = None
    dry_run: bool = False
    confirm_target: str | None = None
    require_confirmation: bool = False
    exclude_tables: tuple[TableName, ...] = ()
    download_dir: str = ""
    download_conn_id: str | None = None
    restore_mode: str = "auto"
    keep_previous: bool = True
    restore_jobs: int | None = None
    masking_engine: str = "auto"
    maintenance: bool = False
    parallel_connections: int = 3
    retry_attempts: int = 3
    retry_base_delay_s: float = 1.0
    email_domain: str = "example.com"
    pii_enabled: bool = True
    pii_on_unmasked: str = "fail"
    pii_allow: tuple[Any, ...] = ()
    pii_patterns: Mapping[str, Any] = field(default_factory=dict)
    pii_sample_rows: int = 1000
    verification_enabled: bool = True
    large_objects: str = "drop"
    seeds: tuple[str, ...] = ()
    post_sync_commands: tuple[str, ...] = ()
    slack_conn_id: str | None = None
    slack_channel: str | None = None
    translations: Mapping[str, str] = field(default_factory=dict)
    audit_dir: str | None = None
    pg_bin_dir: str | None = None
    production_app_patterns: tuple[str, ...] = ("prod", "production")
    production_host_patterns: tuple[str, ...] = ("prod", "production")
    started_at: float = 0.0

    # ------------------------------------------------------------------ build
    @classmethod
    def build(
        cls,
        *,
        params: Mapping[str, Any],
        rules: Any,
        config: Mapping[str, Any] | None = None,
        run_id: str,
        rules_path: str | Path | None = None,
        now: float | None = None,
    ) -> RunSettings:
        """Resolve the run's settings. ``rules`` is a loaded :class:`~scalingo_staging_sync.anonymize.rules.Rules`."""
        config = dict(config or {})
        params = dict(params or {})
        try:
            exclude = parse_table_names(
                [*list(rules.exclude_tables), *list(params.get("exclude_tables") or [])],
                what="exclude_tables",
            )
        except SyncError as exc:
            raise SettingsError(str(exc)) from None
        root = download_root(
            params.get("download_dir"), getattr(rules, "download_dir", None), config.get("download_dir")
        )
        restore = rules.restore
        translations: dict[str, str] = {}
        for rule in rules.anonymization_tables:
            if rule.translation:
                translations[str(TableName.parse(rule.table))] = rule.translation
        pii = rules.pii_scan
        return cls(
            run_id=run_id,
            rules_file=str(rules_path or rules.path or ""),
            rules_sha256=rules.sha256,
            source_app=_first(params.get("source_app"), rules.source_app),
            target_app=_first(params.get("target_app"), rules.target_app, config.get("target_app")),
            backup=_first(params.get("backup")) or "latest",
            dry_run=bool(params.get("dry_run") or False),
            confirm_target=_first(params.get("confirm_target")),
            require_confirmation=bool(rules.require_confirmation),
            exclude_tables=tuple(exclude),
            download_dir=run_download_dir(root, run_id),
            download_conn_id=_first(config.get("download_conn_id")),
            restore_mode=restore.mode,
            keep_previous=bool(restore.keep_previous),
            restore_jobs=restore.jobs,
            masking_engine=_masking_engine(config.get("masking_engine")),
            maintenance=bool(restore.maintenance),
            parallel_connections=int(rules.parallel_connections),
            retry_attempts=int(rules.retry.attempts),
            retry_base_delay_s=float(rules.retry.base_delay_s),
            email_domain=rules.email_domain,
            pii_enabled=bool(pii.enabled),
            pii_on_unmasked=pii.on_unmasked,
            pii_allow=tuple(pii.allow),
            pii_patterns=dict(pii.patterns or {}),
            pii_sample_rows=int(pii.sample_rows),
            verification_enabled=bool(rules.verification.enabled),
            large_objects=str(getattr(rules, "large_objects", "drop") or "drop"),
            seeds=tuple(rules.seeds),
            post_sync_commands=tuple(rules.post_sync_commands),
            slack_conn_id=_first(
                params.get("slack_conn_id"), rules.slack_conn_id, config.get("slack_conn_id")
            ),
            slack_channel=_first(rules.slack_channel),
            translations=translations,
            audit_dir=_first(rules.audit_dir, config.get("audit_dir")),
            pg_bin_dir=_first(config.get("pg_bin_dir")),
            production_app_patterns=tuple(rules.production_patterns.apps),
            production_host_patterns=tuple(rules.production_patterns.hosts),
            started_at=time.time() if now is None else now,
        )

    # ------------------------------------------------------------------ derived
    @property
    def run_key(self) -> str:
        """The run id made safe for file and object names."""
        return safe_segment(self.run_id)

    def replace(self, **changes: Any) -> RunSettings:
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ JSON (XCom)
    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "exclude_tables":
                value = [str(t) for t in value]
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            out[f.name] = value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | RunSettings) -> RunSettings:
        if isinstance(data, RunSettings):
            return data
        if not isinstance(data, Mapping):
            raise SettingsError(
                f"run settings must be the mapping written by the safety gate, got {type(data).__name__}; "
                "did the gate task run?"
            )
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise SettingsError(f"run settings: unknown keys {unknown} (written by another version?)")
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            if name == "exclude_tables":
                value = tuple(TableName.parse(v) for v in value or ())
            elif isinstance(value, list):
                value = tuple(value)
            kwargs[name] = value
        return cls(**kwargs)
