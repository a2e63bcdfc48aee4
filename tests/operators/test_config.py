"""The [scalingo_staging_sync] config section: declared in the provider info, listed by
`airflow config list`, read with Airflow's precedence and the legacy variables as fallbacks."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from scalingo_staging_sync import config, get_provider_info

VENV_BIN = Path(os.environ.get("VIRTUAL_ENV") or Path(__import__("sys").executable).parent.parent) / "bin"


def test_provider_info_declares_the_section_every_module_and_the_notifier():
    info = get_provider_info()
    options = info["config"]["scalingo_staging_sync"]["options"]
    for key in ("rules_folder", "rules_file", "target_app", "download_dir", "download_conn_id", "audit_dir"):
        assert options[key]["description"], key
    for key in ("pg_bin_dir", "cache_dir", "max_parallel_tables", "schedule"):
        assert key in options
    assert info["notifications"] == ["scalingo_staging_sync.notifications.slack.SyncSlackNotifier"]
    modules = {m for entry in info["operators"] for m in entry["python-modules"]}
    from scalingo_staging_sync.operators import _EXPORTS

    assert set(_EXPORTS.values()) <= modules
    from scalingo_staging_sync import __version__

    assert info["versions"] == [__version__]


def test_airflow_config_list_shows_the_section(tmp_path):
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__SCALINGO_STAGING_SYNC__TARGET_APP": "my-staging-app",
        "PYTHONPATH": str(Path(config.__file__).resolve().parents[1]),
    }
    out = subprocess.run(
        [str(VENV_BIN / "airflow"), "config", "list", "--section", "scalingo_staging_sync", "--show-values"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    ).stdout
    assert "[scalingo_staging_sync]" in out
    assert "target_app = my-staging-app" in out
    for key in config.OPTIONS:
        assert key in out, key


def test_precedence_airflow_config_then_legacy_env_then_default(monkeypatch):
    monkeypatch.delenv("AIRFLOW__SCALINGO_STAGING_SYNC__SCHEDULE", raising=False)
    monkeypatch.delenv("SCALINGO_STAGING_SYNC_SCHEDULE", raising=False)
    assert config.get("schedule") == "0 7 * * 0"
    monkeypatch.setenv("SCALINGO_STAGING_SYNC_SCHEDULE", "@daily")
    assert config.get("schedule") == "@daily"
    monkeypatch.setenv("AIRFLOW__SCALINGO_STAGING_SYNC__SCHEDULE", "@hourly")
    assert config.get("schedule") == "@hourly"
    monkeypatch.delenv("APP", raising=False)
    monkeypatch.setenv("APP", "the-airflow-app-itself")
    monkeypatch.delenv("SCALINGO_STAGING_SYNC_TARGET_APP", raising=False)
    monkeypatch.delenv("AIRFLOW__SCALINGO_STAGING_SYNC__TARGET_APP", raising=False)
    assert config.get("target_app") is None  # APP is no longer read
    with pytest.raises(KeyError, match="known"):
        config.get("no_such_key")
