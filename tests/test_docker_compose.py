"""docker-compose.yaml: the services, mounts and environment users rely on."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
SERVICES = COMPOSE["services"]
AIRFLOW_SERVICES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
)


def test_airflow_components_run_the_right_commands():
    commands = {name: SERVICES[name]["command"] for name in AIRFLOW_SERVICES}
    assert commands == {
        "airflow-apiserver": "api-server",
        "airflow-scheduler": "scheduler",
        "airflow-dag-processor": "dag-processor",
        "airflow-triggerer": "triggerer",
        "airflow-worker": "celery worker",
    }


def test_celery_with_redis_and_a_metadata_database():
    env = SERVICES["airflow-worker"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    assert "@postgres/airflow" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert {"redis", "postgres"} <= set(SERVICES)


def test_staging_postgres_17_is_the_target_connection():
    assert SERVICES["staging-postgres"]["image"] == "postgres:17"
    env = SERVICES["airflow-worker"]["environment"]
    assert '"host": "staging-postgres"' in env["AIRFLOW_CONN_STAGING_DB"]
    assert env["SCALINGO_STAGING_SYNC_PG_BIN"] == "/usr/lib/postgresql/17/bin"


def test_every_airflow_component_shares_provider_env_and_mounts():
    for name in AIRFLOW_SERVICES:
        service = SERVICES[name]
        env = service["environment"]
        for key in (
            "SCALINGO_STAGING_SYNC_RULES",
            "SCALINGO_STAGING_SYNC_AUDIT_DIR",
            "SCALINGO_STAGING_SYNC_PG_BIN",
            "AIRFLOW_CONN_SCALINGO_DEFAULT",
            "AIRFLOW_CONN_STAGING_DB",
            "APP",
        ):
            assert key in env, (name, key)
        mounts = {m.split(":")[1] for m in service["volumes"]}
        assert {"/opt/airflow/dags", "/opt/airflow/config", "/opt/airflow/backups"} <= mounts, name
        assert service["build"]["dockerfile"] == "Dockerfile"
    assert "backups" in COMPOSE["volumes"]


def test_no_secret_is_written_in_the_file():
    text = (ROOT / "docker-compose.yaml").read_text()
    assert "tk-us-" not in text
    assert "${SCALINGO_API_TOKEN" in text


def test_image_installs_the_provider_and_postgresql_17_client_tools():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "postgresql-client-17" in dockerfile
    assert "pip install" in dockerfile and "/opt/scalingo-staging-sync" in dockerfile
    assert "FROM apache/airflow:${AIRFLOW_VERSION}" in dockerfile
