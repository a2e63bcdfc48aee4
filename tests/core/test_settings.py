"""Typed run settings: one precedence (param > rules > config), one JSON round trip."""

from __future__ import annotations

import json

import pytest

from scalingo_staging_sync.anonymize.rules import parse_rules_text
from scalingo_staging_sync.settings import RunSettings, SettingsError
from scalingo_staging_sync.tablename import TableName

RULES = """
source_app: my-prod
target_app: rules-staging
slack_conn_id: rules_slack
exclude_tables: [sessions, crm."A.b"]
anonymization_tables:
  - table: users
    strategy: user_anonymization
    translation: Users
"""


def _build(params=None, config=None, text=RULES):
    return RunSettings.build(
        params=params or {},
        rules=parse_rules_text(text),
        config=config or {},
        run_id="manual__2026-01-01T00:00:00+00:00",
    )


def test_param_then_rules_then_config():
    assert _build({"target_app": "param-staging"}, {"target_app": "cfg"}).target_app == "param-staging"
    assert _build({}, {"target_app": "cfg"}).target_app == "rules-staging"
    no_target = RULES.replace("target_app: rules-staging\n", "")
    assert _build({}, {"target_app": "cfg-staging"}, no_target).target_app == "cfg-staging"
    assert _build({"slack_conn_id": "p"}).slack_conn_id == "p"
    assert _build({}, {"slack_conn_id": "c"}).slack_conn_id == "rules_slack"


def test_download_dir_param_then_rules_then_config():
    with_rules = RULES + "download_dir: s3://rules-bucket/dl\n"
    cfg = {"download_dir": "/cfg/dl"}
    assert _build({"download_dir": "s3://param/dl"}, cfg, with_rules).download_dir.startswith(
        "s3://param/dl/"
    )
    assert _build({}, cfg, with_rules).download_dir.startswith("s3://rules-bucket/dl/")
    assert _build({}, cfg).download_dir.startswith("/cfg/dl/")


def test_names_are_table_names_and_round_trip_through_json():
    settings = _build({"exclude_tables": ["x", "public.sessions"]}, {"download_dir": "s3://bucket/dl"})
    assert settings.exclude_tables == (
        TableName("public", "sessions"),
        TableName("crm", "A.b"),
        TableName("public", "x"),
    )
    assert settings.download_dir.startswith("s3://bucket/dl/manual__")  # a URL stays a URL
    assert settings.translations == {"public.users": "Users"}
    data = json.loads(json.dumps(settings.to_json()))
    assert RunSettings.from_json(data) == settings


def test_bad_values_name_themselves():
    with pytest.raises(SettingsError, match="a.b.c"):
        _build({"exclude_tables": ["a.b.c"]})
    with pytest.raises(SettingsError, match="unknown keys"):
        RunSettings.from_json({**_build().to_json(), "surprise": 1})


def test_masking_engine_comes_from_the_config_section_and_is_checked():
    assert _build().masking_engine == "auto"
    assert _build({}, {"masking_engine": "trigger"}).masking_engine == "trigger"
    with pytest.raises(SettingsError, match="masking_engine 'duck' is not one of auto, stream, trigger"):
        _build({}, {"masking_engine": "duck"})
