"""docker-compose.yaml: the services, mounts and environment users rely on."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
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
            "SCALINGO_STAGING_SYNC_TARGET_APP",
            "AIRFLOW_VAR_SCALINGO_STAGING_SYNC_SALT",
        ):
            assert key in env, (name, key)
        mounts = {m.split(":")[1] for m in service["volumes"]}
        assert {"/opt/airflow/dags", "/opt/airflow/config"} <= mounts, name
        assert service["build"]["dockerfile"] == "Dockerfile"
    assert "backups" in COMPOSE["volumes"]
    assert "backups:/opt/airflow/backups" in SERVICES["airflow-worker"]["volumes"]


def test_no_secret_is_written_in_the_file():
    text = (ROOT / "docker-compose.yaml").read_text()
    assert "tk-us-" not in text
    assert "${SCALINGO_API_TOKEN" in text


def test_image_installs_the_provider_and_postgresql_17_client_tools():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "postgresql-client-17" in dockerfile
    assert "pip install" in dockerfile and "/opt/scalingo-staging-sync" in dockerfile
    assert '"/opt/scalingo-staging-sync[stream]"' in dockerfile  # the default masking engine's DuckDB
    assert "FROM apache/airflow:${AIRFLOW_VERSION}" in dockerfile


_DEFAULT_RE = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?::-(?P<default>[^}]*))?\}")


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's ``${VAR:-default}`` with ``env`` (defaults otherwise); ``$$`` is a literal ``$``."""
    env = env or {}
    out = _DEFAULT_RE.sub(lambda m: env.get(m.group("name"), m.group("default") or ""), value)
    return out.replace("$$", "$")


def test_no_placeholder_salt_and_no_fab_user_variables():
    text = (ROOT / "docker-compose.yaml").read_text()
    assert "change-me" not in text
    # Airflow 3's image creates FAB users from these; with the simple auth manager they do nothing.
    assert "_AIRFLOW_WWW_USER" not in text
    # APP is the name of the container's own app on Scalingo: never the target.
    for service in SERVICES.values():
        assert "APP" not in (service.get("environment") or {})


def test_salt_token_and_ui_password_are_required_with_a_message_saying_how():
    text = (ROOT / "docker-compose.yaml").read_text()
    for var in ("SCALINGO_STAGING_SYNC_SALT", "SCALINGO_API_TOKEN", "AIRFLOW_ADMIN_PASSWORD"):
        match = re.search(r"\$\{" + var + r":\?(?P<message>[^}]+)\}", text)
        assert match, f"{var} must be required with ${{{var}:?message}}"
        assert match.group("message").startswith(f"set {var} "), match.group("message")
    assert "openssl rand -base64" in text and "rand -hex" not in text


def test_login_simple_auth_manager_users_and_password_file_from_the_environment(tmp_path):
    env = SERVICES["airflow-apiserver"]["environment"]
    assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith("simple_auth_manager.SimpleAuthManager")
    users = interpolate(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"])
    assert users == "admin:admin"
    assert interpolate(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"], {"AIRFLOW_ADMIN_USER": "ops"}) == (
        "ops:admin"
    )
    password_file = env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    auth_dir = str(Path(password_file).parent)
    # airflow-init writes the file on a volume that the api-server mounts (and only they do).
    for name in ("airflow-init", "airflow-apiserver"):
        assert f"auth:{auth_dir}" in SERVICES[name]["volumes"], name
    others = [n for n, s in SERVICES.items() if n not in ("airflow-init", "airflow-apiserver")]
    for name in others:
        assert not any(v.startswith("auth:") for v in SERVICES[name].get("volumes") or []), name

    # Run airflow-init's own script (the python part) and read the file back with Airflow's code.
    init = SERVICES["airflow-init"]
    assert "AIRFLOW_ADMIN_PASSWORD" in init["environment"]
    script = init["command"][1]
    program = script.split("<<'EOF'\n", 1)[1].split("\nEOF\n", 1)[0]
    target = tmp_path / "auth" / "passwords.json"
    target.parent.mkdir()
    password = 'p4ss "with" quotes $ and spaces'
    subprocess.run(
        [sys.executable, "-c", program],
        env={
            **os.environ,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(target),
            "AIRFLOW_ADMIN_USER": "admin",
            "AIRFLOW_ADMIN_PASSWORD": password,
        },
        check=True,
    )
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    check = (
        "from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager as M;"
        "import json,sys; print(M.get_generated_password_file()); print(json.dumps(M.get_passwords()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", check],
        env={**os.environ, "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(target)},
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    assert out[-2] == str(target)
    assert json.loads(out[-1]) == {"admin": password}


def test_airflow_cli_profile_as_in_the_official_file():
    cli = SERVICES["airflow-cli"]
    assert cli["profiles"] == ["airflow-cli"]
    assert cli["command"] == ["bash", "-c", "airflow"]
    assert cli["environment"]["CONNECTION_CHECK_MAX_COUNT"] == "0"


def test_s3_profile_two_celery_workers_sharing_no_backup_volume():
    workers = {n: s for n, s in SERVICES.items() if n.startswith("airflow-worker-s3-")}
    assert len(workers) == 2
    named_volumes = set(COMPOSE["volumes"])
    private: dict[str, set[str]] = {}
    for name, worker in workers.items():
        assert worker["profiles"] == ["s3"]
        assert worker["command"] == "celery worker"
        env = worker["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
        for key in ("SCALINGO_STAGING_SYNC_DOWNLOAD_DIR", "AIRFLOW__SCALINGO_STAGING_SYNC__DOWNLOAD_DIR"):
            assert interpolate(env[key]) == "s3://scalingo-staging-sync/backups", (name, key)
        conn_id = env["AIRFLOW__SCALINGO_STAGING_SYNC__DOWNLOAD_CONN_ID"]
        conn = json.loads(interpolate(env[f"AIRFLOW_CONN_{conn_id.upper()}"]))
        assert conn["conn_type"] == "aws"
        assert conn["extra"]["endpoint_url"] == "http://s3:5000"
        volumes = [v.split(":")[0] for v in worker["volumes"]]
        assert "backups" not in volumes, name
        private[name] = {v for v in volumes if v in named_volumes and v not in ("airflow-logs", "audit")}
        cache_dir = env["SCALINGO_STAGING_SYNC_CACHE_DIR"]
        assert any(v.endswith(":" + cache_dir) for v in worker["volumes"]), name
        assert worker["depends_on"]["s3-init"]["condition"] == "service_completed_successfully"
    a, b = private.values()
    assert a and b and not (a & b), private
    # the S3-compatible service and the bucket set-up belong to the same profile
    assert SERVICES["s3"]["profiles"] == ["s3"] and SERVICES["s3-init"]["profiles"] == ["s3"]
    assert SERVICES["s3"]["image"].startswith("motoserver/moto:")
    init = SERVICES["s3-init"]["command"][1]
    for call in ("create-bucket", "put-public-access-block", "put-bucket-encryption", "put-bucket-lifecycle"):
        assert call in init
    assert "redis" in SERVICES and "profiles" not in SERVICES["redis"]
