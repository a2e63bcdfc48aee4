"""ScalingoHook: connection parsing, test_connection, delegation, secrets kept out of logs."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest
from scalingo_helpers import APP

from scalingo_staging_sync.hooks.scalingo import ScalingoHook
from scalingo_staging_sync.scalingo.errors import ScalingoAuthError


def test_hook_class_attributes():
    assert ScalingoHook.conn_name_attr == "scalingo_conn_id"
    assert ScalingoHook.default_conn_name == "scalingo_default"
    assert ScalingoHook.conn_type == "scalingo"
    assert ScalingoHook.hook_name == "Scalingo"


def test_test_connection_ok(fake, fake_app, scalingo_conn):
    ok, message = ScalingoHook().test_connection()
    assert ok, message
    assert "token accepted" in message and "1 app(s)" in message
    assert fake.api_token not in message


def test_test_connection_bad_token(fake, fake_app, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SCALINGO_DEFAULT", fake.airflow_conn_json(api_token="tk-us-not-valid-x"))
    ok, message = ScalingoHook().test_connection()
    assert not ok
    assert "refused" in message and "password field" in message
    assert "tk-us-not-valid-x" not in message


def test_missing_token_names_the_fix(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SCALINGO_DEFAULT", json.dumps({"conn_type": "scalingo"}))
    with pytest.raises(ScalingoAuthError, match="password field"):
        ScalingoHook().get_conn()


def test_bad_url_extra_names_the_field(monkeypatch):
    conn = {
        "conn_type": "scalingo",
        "password": "tk-us-abcdef",
        "extra": {"db_api_url": "db-api.example.com"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_SCALINGO_DEFAULT", json.dumps(conn))
    with pytest.raises(Exception, match="'scalingo_default'.*db_api_url='db-api.example.com'"):
        ScalingoHook().get_conn()


def test_connection_uri_form(fake, fake_app, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SCALINGO_URI", fake.connection_uri())
    hook = ScalingoHook("scalingo_uri")
    assert hook.get_postgresql_addon(APP)["id"] == fake_app.id


def test_region_discovery_through_hook(fake, fake_app, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SCALINGO_DEFAULT", fake.airflow_conn_json(overrides=False))
    hook = ScalingoHook()
    assert hook.get_postgresql_addon(APP)["id"] == fake_app.id
    assert hook.get_conn().endpoints().source == "regions endpoint"


def test_formation_scale_and_restore(fake, fake_app, scalingo_conn):
    hook = ScalingoHook()
    before = hook.get_formation(APP)
    assert {c["name"]: c["amount"] for c in before} == {"web": 2, "worker": 1}
    result = hook.scale(APP, {"web": 0, "worker": 0}, poll_interval=0.01)
    assert result["operation"]["status"] == "done"
    assert {c["name"]: c["amount"] for c in hook.get_formation(APP)} == {"web": 0, "worker": 0}
    # restore the formation read before (the API's list form)
    hook.scale(APP, [{"name": c["name"], "amount": c["amount"]} for c in before], poll_interval=0.01)
    assert hook.get_formation(APP) == before
    assert len(fake.requests_to(r"/operations/")) >= 2


def test_scale_unknown_container_is_clear(fake, fake_app, scalingo_conn):
    with pytest.raises(Exception, match="HTTP 422.*web2 does not exist"):
        ScalingoHook().scale(APP, {"web2": 1})


def test_run_detached_follows_operation(fake, fake_app, scalingo_conn):
    hook = ScalingoHook()
    result = hook.run_detached(
        APP, "bundle exec rake db:seed", env={"SEED_SECRET": "s3cr3t-value"}, size="L", poll_interval=0.01
    )
    assert result["operation"]["status"] == "done"
    assert result["container"]["type"] == "one-off"
    assert fake.runs[-1] == {
        "command": "bundle exec rake db:seed",
        "env": {"SEED_SECRET": "s3cr3t-value"},
        "size": "L",
        "detached": True,
    }


def test_run_detached_failure_names_the_app(fake, fake_app, scalingo_conn):
    fake.fail_command("migrate")
    with pytest.raises(Exception, match=f"one-off run operation .* of app '{APP}' failed: 'command exited"):
        ScalingoHook().run_detached(APP, "rails db:migrate", poll_interval=0.01)


def test_secrets_never_reach_the_logs(fake, fake_app, scalingo_conn, chinook_dump, tmp_path, caplog):
    """Run a full flow (with token expiry, a 429 and a resumed download) at DEBUG level and check no
    API token, user JWT, addon token or signed download token appears in any log record."""
    caplog.set_level(logging.DEBUG)
    fake.add_backup(APP, chinook_dump, age=timedelta(hours=1))
    hook = ScalingoHook()
    addon = hook.get_postgresql_addon(APP)
    hook.list_backups(APP, addon["id"])
    fake.expire_tokens()
    fake.fail_next(429, path_contains="/backups")
    fake.cut_download()
    backup = hook.latest_done_backup(APP, addon["id"])
    url = hook.archive_url(APP, addon["id"], backup["id"])
    result = hook.download_backup(APP, addon["id"], backup, tmp_path / "a.tar.gz")
    assert result.resumes == 1
    hook.run_detached(APP, "echo hi", env={"API_KEY": "very-secret-env-value"}, poll_interval=0.01)
    ScalingoHook().test_connection()

    secrets = [fake.api_token, url, *fake._jwts, *(t for t in fake._addon_tokens), *fake._download_tokens]
    assert len(fake._jwts) >= 2 and len(fake._addon_tokens) >= 2 and len(fake._download_tokens) >= 2
    secrets.append("very-secret-env-value")
    text = "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records)
    assert "urllib3" in text and "/download" in text  # the records we scan do include the HTTP lines
    for secret in secrets:
        assert secret not in text, f"secret leaked into logs: {secret[:12]}..."


def test_the_connections_host_is_the_base_url_of_every_scalingo_service(fake, fake_app, monkeypatch):
    """A connection with a ``host`` and no URL extra (a proxy, or a stand-in serving auth, the regional API
    and the Database API at once): the host is used for all three, not silently ignored for Scalingo's
    own hosts (which, unreachable from here, failed the run)."""
    from urllib.parse import urlsplit

    netloc = urlsplit(fake.url).netloc
    as_json = {"conn_type": "scalingo", "password": fake.api_token, "host": fake.url}
    monkeypatch.setenv("AIRFLOW_CONN_SCALINGO_DEFAULT", json.dumps(as_json))
    monkeypatch.setenv(
        "AIRFLOW_CONN_SCALINGO_URI", f"scalingo://:{fake.api_token}@{netloc}"
    )  # http: loopback
    for conn_id in ("scalingo_default", "scalingo_uri"):
        hook = ScalingoHook(conn_id)
        assert hook.get_postgresql_addon(APP)["id"] == fake_app.id
        endpoints = hook.get_conn().endpoints()
        assert endpoints.source == "overrides"
        assert {endpoints.auth, endpoints.api, endpoints.db_api} == {f"http://{netloc}"}


def test_connection_base_url_forms():
    from types import SimpleNamespace

    from scalingo_staging_sync.hooks.scalingo import connection_base_url

    def conn(host, port=None, schema=None):
        return SimpleNamespace(host=host, port=port, schema=schema)

    assert connection_base_url(conn(None)) is None and connection_base_url(conn("  ")) is None
    assert (
        connection_base_url(conn("scalingo.internal", 8443, "proxy/"))
        == "https://scalingo.internal:8443/proxy"
    )
    assert connection_base_url(conn("localhost", 8000)) == "http://localhost:8000"
    assert (
        connection_base_url(conn("https://gw.example.com/scalingo", 9000))
        == "https://gw.example.com:9000/scalingo"
    )
    assert connection_base_url(conn("http://127.0.0.1:8000", 9999)) == "http://127.0.0.1:8000"  # its own port


def test_scaling_a_stopped_app_fails_at_once_with_what_to_do(fake, fake_app, scalingo_conn):
    """A 409 on an app that waiting will not free (``stopped``, read from ``GET /v1/apps/{app}``) is an
    error at once, not a wait until the timeout; a busy one (``scaling``) is asked again until free."""
    app = fake.apps[APP]
    app.status = "stopped"
    with pytest.raises(Exception, match=r"HTTP 409.*the app is 'stopped': start it"):
        ScalingoHook().scale(APP, {"web": 0}, poll_interval=5, timeout=600)
    assert len(fake.requests_to(r"/scale$")) == 1
    app.status = "running"
    fake.fail_next(409, times=2, path_contains="/scale", method="POST")  # another operation in progress
    assert ScalingoHook().scale(APP, {"web": 0}, poll_interval=0.05)["operation"]["status"] == "done"
    assert len(fake.requests_to(r"/scale$")) == 4
