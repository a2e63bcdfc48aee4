"""The preflight (safety gate and dry run): every check passes on a good setup, and each one refuses
with a detail saying how to fix it -- with staging exactly as it was and no write reaching the
Scalingo API (no scaling, no command). Real PostgreSQL, the fake Scalingo API over HTTP, both modes."""

from __future__ import annotations

import os
import stat

import pytest
from conftest import SOURCE_APP, TARGET_APP

from scalingo_staging_sync import preflight
from scalingo_staging_sync.preflight import CHECKS, run_preflight
from scalingo_staging_sync.restore import targets
from scalingo_staging_sync.safety import SafetyCheckFailed


def run(env, *, manual: bool = False, **overrides):
    kwargs = dict(
        staging=env.staging,
        scalingo=env.client,
        run_is_manual=manual,
        salt=env.salt,
        environ=env.environ,
        pg_bin_dir=env.pg_bin_dir,
    )
    kwargs.update(overrides)
    settings = kwargs.pop("settings", env.settings)
    return run_preflight(settings, **kwargs)


def failed(result) -> dict[str, str]:
    return {c.name: c.detail for c in result.checks if not c.passed}


def test_every_check_passes_on_a_good_setup_and_is_listed(env):
    before = env.snapshot()
    result = run(env)
    assert failed(result) == {}, result.to_json()
    assert [c.name for c in result.checks] == list(CHECKS)
    facts = result.facts
    assert facts["addon_id"] and facts["backup"]["status"] == "done"
    assert facts["pg_tools"]["pg_restore_major"] == 16 and facts["pg_tools"]["psql_major"] == 16
    assert facts["target_location"]["dbname"] == env.staging.dbname
    assert facts["target_location"]["source"] == f"$SCALINGO_POSTGRESQL_URL of app {TARGET_APP}"
    assert facts["leftovers"] == []
    result.raise_if_failed()
    assert env.snapshot() == before and env.writes_to_scalingo() == []
    # the salt and the database password never reach the report
    text = str(result.to_json())
    assert env.salt not in text
    assert env.fake.apps[TARGET_APP].addons[0].password not in text


def test_dry_run_lists_every_check_and_never_needs_confirm_target(env):
    settings = env.settings.replace(dry_run=True, require_confirmation=True, confirm_target=None)
    result = run(env, settings=settings, manual=True)
    assert result.passed, failed(result)
    assert [c.name for c in result.checks] == [c for c in CHECKS if c != "manual_run_confirmed"]
    # the same manual run for real must be confirmed
    real = run(env, settings=settings.replace(dry_run=False), manual=True)
    assert set(failed(real)) == {"manual_run_confirmed"}
    assert "confirm_target" in failed(real)["manual_run_confirmed"]


def _placeholder_salt(env):
    return {"salt": "change-me-to-a-long-random-secret"}


def _no_salt(env):
    return {"salt": None}


def _short_salt(env):
    return {"salt": "Sh0rt-but-not-a-placeholder!"}


def _no_tools(env, tmp_path):
    return {"pg_bin_dir": str(tmp_path)}


def _missing_seed(env):
    return {"settings": env.settings.replace(seeds=("seeds/users.sql", "seeds/missing.sql"))}


def _download_under_a_file(env, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    return {"settings": env.settings.replace(download_dir=str(blocker / "run"))}


def _unknown_source(env):
    return {"settings": env.settings.replace(source_app="no-such-app")}


def _source_without_postgresql(env):
    env.fake.add_app("cache-only")
    env.fake.add_addon("cache-only", provider_id="redis")
    return {"settings": env.settings.replace(source_app="cache-only")}


def _unknown_backup(env):
    return {"settings": env.settings.replace(backup="0123456789abcdef01234567")}


def _running_backup(env):
    backup = env.fake.add_backup(SOURCE_APP, status="running")
    return {"settings": env.settings.replace(backup=backup.id)}


def _target_bound_elsewhere(env):
    env.fake.add_app("other-staging")
    env.fake.add_addon("other-staging")  # its own database, not staging_db
    return {"settings": env.settings.replace(target_app="other-staging")}


def _target_without_postgresql(env):
    env.fake.add_app("front-staging")
    return {"settings": env.settings.replace(target_app="front-staging")}


def _target_is_own_container(env):
    return {"environ": {"APP": TARGET_APP, "CONTAINER": "web-1", "CONTAINER_SIZE": "M"}}


def _production_target(env):
    env.fake.add_app("shop-production")
    env.fake.add_addon("shop-production", host=env.staging.host, port=env.staging.port, database="x")
    return {"settings": env.settings.replace(target_app="shop-production")}


REFUSALS = {
    "placeholder salt": (_placeholder_salt, "salt_valid", "known placeholder"),
    "no salt": (_no_salt, "salt_valid", "no anonymization salt"),
    "short salt": (_short_salt, "salt_valid", "fewer than the 32 required"),
    "no client tools": (_no_tools, "pg_client_tools", "no pg_restore in"),
    "missing seed": (_missing_seed, "seed_files_readable", "seeds[1]: 'seeds/missing.sql' not found"),
    "download dir under a file": (_download_under_a_file, "download_dir_writable", "is not a directory"),
    "unknown source app": (_unknown_source, "source_addon_found", "'no-such-app' not found"),
    "source without postgresql": (_source_without_postgresql, "source_addon_found", "no PostgreSQL addon"),
    "unknown backup": (_unknown_backup, "backup_available", "not found"),
    "running backup": (_running_backup, "backup_available", "is 'running', not 'done'"),
    "target bound elsewhere": (
        _target_bound_elsewhere,
        "target_app_bound_to_staging",
        "staging connection points at",
    ),
    "target without postgresql": (
        _target_without_postgresql,
        "target_app_bound_to_staging",
        "no PostgreSQL addon",
    ),
    "$APP is the target": (_target_is_own_container, "target_app_not_own_container", "this Airflow runs in"),
    "production target": (_production_target, "target_app_not_production", "production pattern"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_each_check_refuses_with_staging_untouched_and_no_scalingo_write(env, case, tmp_path):
    breaker, check, words = REFUSALS[case]
    args = (env, tmp_path) if breaker.__code__.co_argcount == 2 else (env,)
    overrides = breaker(*args)
    before = env.snapshot()
    result = run(env, **overrides)
    problems = failed(result)
    assert check in problems, result.to_json()
    assert words in problems[check]
    if case in ("target bound elsewhere", "$APP is the target", "short salt", "placeholder salt"):
        assert set(problems) == {check}  # nothing else is blamed
    with pytest.raises(SafetyCheckFailed, match=check):
        result.raise_if_failed()
    assert env.snapshot() == before
    assert env.writes_to_scalingo() == []  # no scale, no one-off run, no backup created


def test_a_target_app_on_another_database_is_refused_before_any_scaling(env):
    """The bound check reads the target app's own addon through the API: host, port and database
    must all match; a same-host app on another database is refused too."""
    env.fake.add_app("neighbour-staging")
    env.fake.add_addon(
        "neighbour-staging", host=env.staging.host, port=env.staging.port, database="neighbour_db"
    )
    result = run(env, settings=env.settings.replace(target_app="neighbour-staging"))
    detail = failed(result)["target_app_bound_to_staging"]
    assert "/neighbour_db" in detail and f"/{env.staging.dbname}" in detail
    assert env.fake.requests_to(r"/scale$") == [] and env.fake.requests_to(r"/run$") == []
    assert env.fake.requests_to(r"/apps/neighbour-staging/variables$")  # it really asked the API


def test_bound_check_falls_back_to_the_database_api_hostname(env):
    """Without SCALINGO_POSTGRESQL_URL the addon's Database API hostname and resource id are used."""
    env.fake.set_variable(TARGET_APP, "SCALINGO_POSTGRESQL_URL", None)
    result = run(env)
    location = result.facts["target_location"]
    assert location["source"].startswith("Database API hostname")
    # on Shared Resources the database is named after the resource id: here it is not -> refused
    assert "target_app_bound_to_staging" in failed(result)
    addon = env.fake.apps[TARGET_APP].addons[0]
    assert location["host"] == env.staging.host and location["dbname"] == addon.resource_id


def test_app_outside_a_scalingo_container_is_not_compared(env):
    # APP alone (no CONTAINER) is not a Scalingo container: the old variable is simply not read
    result = run(env, environ={"APP": TARGET_APP})
    assert result.passed
    assert (
        "not running in a Scalingo container"
        in {c.name: c.detail for c in result.checks}["target_app_not_own_container"]
    )
    other = run(env, environ={"APP": "airflow-on-scalingo", "CONTAINER": "web-1"})
    assert other.passed and other.facts["scalingo_container_app"] == "airflow-on-scalingo"


def test_new_backup_needs_a_reachable_database_api(env):
    assert run(env, settings=env.settings.replace(backup="new")).passed
    env.fake.fail_next(500, times=10, path_contains="/api/databases/")
    result = run(env, settings=env.settings.replace(backup="new"))
    assert set(failed(result)) == {"backup_available"}


def test_unreadable_staging_connection_fails_closed(env):
    result = run(env, staging=None, staging_error="connection 'staging_db' has no host")
    problems = failed(result)
    assert problems["staging_connection_readable"] == "connection 'staging_db' has no host"
    assert {"target_host_not_production", "target_app_bound_to_staging", "no_leftover_state"} <= set(problems)


def test_download_location_checker_for_object_storage(env):
    url_settings = env.settings.replace(download_dir="s3://bucket/downloads/run")
    plain = run(env, settings=url_settings)
    detail = {c.name: c.detail for c in plain.checks}["download_dir_writable"]
    assert plain.passed and "not checked" in detail
    checked = run(env, settings=url_settings, download_checker=lambda loc: f"{loc} writable (probe written)")
    assert checked.passed
    refused = run(env, settings=url_settings, download_checker=lambda loc: None)
    assert set(failed(refused)) == {"download_dir_writable"}

    def boom(loc):
        raise PermissionError("AccessDenied on PutObject")

    raised = run(env, settings=url_settings, download_checker=boom)
    assert "AccessDenied" in failed(raised)["download_dir_writable"]


def test_unreadable_seed_file_is_refused(env, tmp_path):
    if os.geteuid() == 0:
        # root reads anything: a directory in place of the file is what it cannot read
        seed = tmp_path / "seeds" / "dir.sql"
        seed.mkdir()
        words = "not found"
    else:  # pragma: no cover - CI runs as root
        seed = tmp_path / "seeds" / "secret.sql"
        seed.write_text("SELECT 1;")
        seed.chmod(0)
        words = "cannot be read"
    result = run(env, settings=env.settings.replace(seeds=(f"seeds/{seed.name}",)))
    assert words in failed(result)["seed_files_readable"]
    assert not stat.S_ISREG(seed.stat().st_mode) or os.geteuid() != 0


def test_leftovers_refuse_a_real_run_until_the_gate_finishes_them(env):
    db = env.staging.dbname
    if env.mode == "swap":
        targets.create_scratch(env.staging)
        with env.staging.with_dbname(f"{db}__incoming").connect() as conn:
            conn.execute("CREATE TABLE customer (email text); INSERT INTO customer VALUES ('real@person.fr')")
    else:
        targets.write_state(env.staging, "unmasked")
    dry = run(env, settings=env.settings.replace(dry_run=True))
    detail = {c.name: c.detail for c in dry.checks}["no_leftover_state"]
    assert dry.passed and "A real run first does: would" in detail
    real = run(env)
    assert "recover_leftovers" in failed(real)["no_leftover_state"]
    report = targets.recover_leftovers(env.staging)  # what the gate calls before anything else
    assert report["proven"] is True
    assert run(env).passed


def test_preflight_never_imports_airflow():
    import subprocess
    import sys

    code = (
        "import sys, scalingo_staging_sync.preflight, scalingo_staging_sync.restore.targets;"
        "sys.exit(1 if 'airflow' in sys.modules else 0)"
    )
    env = {**os.environ, "PYTHONPATH": str(os.path.dirname(os.path.dirname(preflight.__file__)))}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0


def test_the_target_database_url_is_read_through_the_api_and_masked(env):
    from scalingo_staging_sync.secrets import redact

    location = env.client.postgresql_location(TARGET_APP)
    assert (location["host"], location["port"], location["dbname"]) == (
        env.staging.host,
        env.staging.port,
        env.staging.dbname,
    )
    assert "password" not in location and "user" not in location
    addon = env.fake.apps[TARGET_APP].addons[0]
    assert addon.password not in redact(f"log line with {addon.password}")
    assert env.client.get_variable(TARGET_APP, "NO_SUCH_VARIABLE") is None
