"""The trigger form (titles, sections, suggestions, rules_file as an enum of the rules folder), the
rules-file choice, the staging connection read through PostgresHook, and slack_channel delivered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scalingo_staging_sync.errors import SyncError
from scalingo_staging_sync.operators.gate import RulesFileChoiceError, list_rules_files, resolve_rules_choice


@pytest.fixture
def rules_folder(tmp_path) -> Path:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "shop.yaml").write_text("source_app: shop\n")
    (folder / "crm.json").write_text('{"source_app": "crm"}')
    (folder / "notes.txt").write_text("not rules")
    (folder / "old.yml").mkdir()  # a directory, not a rules file
    (tmp_path / "outside.yaml").write_text("source_app: evil\n")
    return folder


def test_rules_files_listed_and_a_choice_never_a_free_path(rules_folder, tmp_path):
    assert list_rules_files(str(rules_folder)) == ["crm.json", "shop.yaml"]
    assert list_rules_files(str(tmp_path / "missing")) == [] and list_rules_files(None) == []
    assert (
        resolve_rules_choice("shop.yaml", str(rules_folder), None) == (rules_folder / "shop.yaml").resolve()
    )
    for bad in ("../outside.yaml", str(tmp_path / "outside.yaml"), "notes.txt", "old.yml"):
        with pytest.raises(RulesFileChoiceError, match="choose one of") as info:
            resolve_rules_choice(bad, str(rules_folder), None)
        assert not info.value.retryable
    with pytest.raises(RulesFileChoiceError, match="rules_folder"):
        resolve_rules_choice("shop.yaml", None, None)
    default = tmp_path / "outside.yaml"
    assert resolve_rules_choice(None, str(rules_folder), str(default)) == default.resolve()


def test_trigger_form_params_have_titles_sections_and_choices(rules_folder, monkeypatch):
    monkeypatch.setenv("AIRFLOW__SCALINGO_STAGING_SYNC__RULES_FOLDER", str(rules_folder))
    from scalingo_staging_sync.example_dags.reference import build_reference_dag

    dag = build_reference_dag(dag_id="form_probe")
    schemas = {name: dag.params.get_param(name).schema for name in dag.params}
    assert set(schemas) == {
        "source_app", "backup", "exclude_tables", "target_app", "dry_run", "confirm_target", "rules_file",
        "slack_conn_id", "download_dir",
    }  # fmt: skip
    for name, schema in schemas.items():
        assert schema.get("title"), name
        assert dag.params.get_param(name).description, name
        assert schema.get("section"), name
    assert len({s["section"] for s in schemas.values()}) == 3
    assert schemas["backup"]["examples"] == ["latest", "new"]
    assert schemas["rules_file"]["enum"] == [None, "crm.json", "shop.yaml"]


def test_staging_connection_through_postgres_hook(monkeypatch):
    from scalingo_staging_sync.hooks.postgres import StagingConnectionError, pg_target_from_connection

    conn = {
        "conn_type": "postgres",
        "host": "db.example.net",
        "port": 6543,
        "login": "app",
        "password": "s3cret-pass",
        "schema": "staging",
        "extra": {"sslmode": "verify-full", "sslrootcert": "/etc/ca.pem", "application_name": "sync"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_PROBE_DB", json.dumps(conn))
    target = pg_target_from_connection("probe_db")
    assert (target.host, target.port, target.user, target.dbname) == (
        "db.example.net",
        6543,
        "app",
        "staging",
    )
    assert target.options == {
        "sslmode": "verify-full",
        "sslrootcert": "/etc/ca.pem",
        "application_name": "sync",
    }
    env = target.libpq_env({})
    assert env["PGSSLMODE"] == "verify-full" and env["PGSSLROOTCERT"] == "/etc/ca.pem"
    assert env["PGAPPNAME"] == "sync" and env["PGPASSWORD"] == "s3cret-pass"
    assert "sslmode=verify-full" in target.conninfo()
    assert pg_target_from_connection("probe_db", database="staging__incoming").dbname == "staging__incoming"

    monkeypatch.setenv(
        "AIRFLOW_CONN_PROBE_DB", json.dumps({**conn, "extra": {"sslmode": "require", "bogus": 1}})
    )
    with pytest.raises(StagingConnectionError, match="bogus") as info:
        pg_target_from_connection("probe_db")
    assert isinstance(info.value, SyncError) and not info.value.retryable
    monkeypatch.setenv("AIRFLOW_CONN_PROBE_DB", json.dumps({**conn, "schema": None, "extra": {}}))
    with pytest.raises(StagingConnectionError, match="schema"):
        pg_target_from_connection("probe_db")


def test_slack_channel_reaches_slack(monkeypatch):
    from scalingo_staging_sync.notifications.slack import notify
    from scalingo_staging_sync.testing.slack_receiver import SlackReceiver

    with SlackReceiver() as slack:
        monkeypatch.setenv("AIRFLOW_CONN_SLACK_HOOK", slack.airflow_conn_json())
        assert notify("slack_hook", "hello", channel="#staging")
        monkeypatch.setenv(
            "AIRFLOW_CONN_SLACK_API",
            json.dumps(
                {
                    "conn_type": "slack",
                    "password": "xoxb-test",
                    "extra": {"base_url": slack.url.rsplit("/services", 1)[0] + "/api/"},
                }
            ),
        )
        notify("slack_api", "through the API", channel="#ops")
        posts = list(slack.posts)
    assert posts[0].body == {"text": "hello", "channel": "#staging"}
    api = [p for p in posts if p.path.endswith("/chat.postMessage")]
    assert api and api[0].body["channel"] == "#ops" and api[0].body["text"] == "through the API"
