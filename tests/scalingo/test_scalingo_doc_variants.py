"""The client against each behaviour docs/scalingo-api.md allows (or leaves open), served for real by
the fake's variant options: the order of the backup list, unknown / missing fields, hidden backups,
pagination, an API without the undocumented "show backup" route, Retry-After as seconds or as an HTTP
date, a bounded retry time, a one-off run never retried, the archive URL given by a redirect, a signed URL
redirecting to object storage, chunked and connection-close bodies, truncation with no size announced,
the CLI's provider-name rule, a path prefix in the base URLs, and the operator's file names."""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import timedelta
from email.utils import formatdate

import pytest
from scalingo_helpers import APP, make_client

from scalingo_staging_sync.scalingo.archive import extract_dump
from scalingo_staging_sync.scalingo.client import ScalingoClient
from scalingo_staging_sync.scalingo.download import sha256_file
from scalingo_staging_sync.scalingo.errors import (
    AddonNotFoundError,
    ScalingoApiError,
    ScalingoArchiveError,
    ScalingoDownloadError,
    ScalingoServerError,
)
from scalingo_staging_sync.testing.fake_scalingo import FakeScalingoAPI


@pytest.fixture
def make_fake(tmp_path):
    """``make_fake(**variant_options)``: a started fake with an app and its PostgreSQL addon."""
    with contextlib.ExitStack() as stack:

        def factory(**options):
            fake = stack.enter_context(
                FakeScalingoAPI(workdir=tmp_path / f"fake{len(stack._exit_callbacks)}", **options)
            )
            return fake

        yield factory


def _setup(fake, dump, **addon_kwargs):
    fake.add_app(APP)
    fake.add_addon(APP, provider_id="redis")
    return fake.add_addon(APP, dump_path=dump, **addon_kwargs)


def _download_latest(client, addon_id, dest):
    meta = client.latest_done_backup(APP, addon_id)
    return meta, client.download_backup(APP, addon_id, meta, dest)


# ---------------------------------------------------------------------------- backup list
@pytest.mark.parametrize("order", ["oldest", "shuffled"])
def test_newest_done_backup_by_created_at_whatever_the_list_order(make_fake, chinook_dump, order):
    fake = make_fake(backups_order=order)
    addon = _setup(fake, chinook_dump)
    ages = [timedelta(days=6), timedelta(hours=5), timedelta(days=2), timedelta(days=1)]
    backups = [fake.add_backup(APP, chinook_dump, age=age) for age in ages]
    fake.add_backup(APP, chinook_dump, status="running", age=timedelta(minutes=1))
    fake.add_backup(APP, chinook_dump, status="error", age=timedelta(minutes=30))
    with make_client(fake) as client:
        assert client.latest_done_backup(APP, addon.id)["id"] == backups[1].id
        listed = client.list_backups(APP, addon.id)
        assert [b["created_at"] for b in listed] == sorted((b["created_at"] for b in listed), reverse=True)


def test_paginated_backup_list_is_read_to_the_last_page(make_fake, chinook_dump):
    fake = make_fake(backups_per_page=2, backups_order="oldest")
    addon = _setup(fake, chinook_dump)
    for days in (9, 8, 7, 6):
        fake.add_backup(APP, chinook_dump, age=timedelta(days=days))
    newest = fake.add_backup(APP, chinook_dump, age=timedelta(hours=1))  # alone on page 3
    with make_client(fake) as client:
        assert len(client.list_backups(APP, addon.id)) == 5
        assert client.latest_done_backup(APP, addon.id)["id"] == newest.id
    pages = sorted(r.path for r in fake.requests_to(r"/backups$"))
    assert len(pages) >= 3


def test_hidden_backup_is_never_picked(make_fake, chinook_dump):
    fake = make_fake()
    addon = _setup(fake, chinook_dump)
    visible = fake.add_backup(APP, chinook_dump, age=timedelta(days=1), hidden=False)
    fake.add_backup(APP, chinook_dump, age=timedelta(hours=1), hidden=True)
    with make_client(fake) as client:
        assert client.latest_done_backup(APP, addon.id)["id"] == visible.id


def test_unknown_fields_everywhere_are_ignored(make_fake, chinook_dump, tmp_path):
    fake = make_fake(extra_fields=True)
    addon = _setup(fake, chinook_dump)
    backup = fake.add_backup(APP, chinook_dump)
    with make_client(fake) as client:
        assert client.get_postgresql_addon(APP)["id"] == addon.id
        created = client.create_backup(APP, addon.id)
        client.wait_for_backup(APP, addon.id, created["id"], poll_interval=0.01, timeout=10)
        meta, result = _download_latest(client, addon.id, tmp_path / "x.tar.gz")
    assert meta["id"] == created["id"]
    assert result.sha256 == sha256_file(fake.backup(created["id"]).archive)
    assert backup.id != created["id"]


def test_optional_fields_missing(make_fake, chinook_dump, tmp_path):
    """No plan / status / provider name on addons; no started_at, method, type, null size on backups."""
    fake = make_fake(minimal_fields=True)
    addon = _setup(fake, chinook_dump)
    backup = fake.add_backup(APP, chinook_dump, size_unknown=True)
    with make_client(fake) as client:
        assert client.get_postgresql_addon(APP)["id"] == addon.id
        meta, result = _download_latest(client, addon.id, tmp_path / "m.tar.gz")
        assert "size" not in meta and "started_at" not in meta
        created = client.create_backup(APP, addon.id)
        assert created["status"] == "scheduled" and "started_at" not in created
    assert result.sha256 == sha256_file(backup.archive)
    assert extract_dump(result.path, tmp_path / "x").read_bytes() == chinook_dump.read_bytes()


def test_api_without_the_show_backup_route_is_polled_through_the_list(make_fake, chinook_dump):
    fake = make_fake(backup_show_route=False)
    addon = _setup(fake, chinook_dump, new_backup_polls=4)
    with make_client(fake) as client:
        created = client.create_backup(APP, addon.id)
        done = client.wait_for_backup(APP, addon.id, created["id"], poll_interval=0.01, timeout=10)
        assert done["status"] == "done" and done["id"] == created["id"]
    # the missing route is asked once, then every poll is one list request
    assert len(fake.requests_to(rf"/backups/{created['id']}$")) == 1


# ---------------------------------------------------------------------------- retries
def _gap_after_failure(fake, pattern):
    hits = fake.requests_to(pattern)
    assert len(hits) == 2, hits
    return hits[1].time - hits[0].time


def test_429_retry_after_in_seconds_is_honoured(make_fake, chinook_dump):
    fake = make_fake()
    _setup(fake, chinook_dump)
    fake.fail_next(429, path_contains="/addons", retry_after="1")
    with make_client(fake, backoff_s=0.01, backoff_max_s=0.05) as client:
        client.list_addons(APP)
    assert _gap_after_failure(fake, r"/addons$") >= 0.9


def test_429_retry_after_as_http_date_is_honoured(make_fake, chinook_dump):
    fake = make_fake()
    _setup(fake, chinook_dump)
    # the date has a one-second resolution and is written before the client reads it: 5 s ahead leaves
    # at least 1 s to wait even on a loaded machine (the backoff alone would be 0.01 s)
    fake.fail_next(429, path_contains="/addons", retry_after=formatdate(time.time() + 5, usegmt=True))
    with make_client(fake, backoff_s=0.01, backoff_max_s=0.05) as client:
        client.list_addons(APP)
    assert _gap_after_failure(fake, r"/addons$") >= 0.9


def test_retries_stop_within_the_retry_budget(make_fake, chinook_dump):
    """A 503 asking to come back in 30 s, with 2 s of retry budget left: fail now, do not sleep 30 s."""
    fake = make_fake()
    _setup(fake, chinook_dump)
    fake.fail_next(503, times=100, path_contains="/addons", retry_after="30")
    started = time.monotonic()
    with make_client(fake, max_attempts=10, retry_budget_s=2) as client:
        with pytest.raises(ScalingoServerError, match="HTTP 503"):
            client.list_addons(APP)
    assert time.monotonic() - started < 20
    assert len(fake.requests_to(r"/addons$")) == 1


def test_one_off_run_is_not_retried_after_a_server_error(make_fake, chinook_dump):
    fake = make_fake()
    _setup(fake, chinook_dump)
    fake.fail_next(500, times=1, path_contains="/run")
    with make_client(fake) as client, pytest.raises(ScalingoServerError):
        client.run_detached(APP, "rake db:migrate", wait=False)
    assert len(fake.requests_to(r"/run$")) == 1  # the command may have started: never twice
    fake.fail_next(429, times=1, path_contains="/run")  # a 429 was not processed: retried
    with make_client(fake) as client:
        client.run_detached(APP, "rake db:migrate", wait=False)
    assert len(fake.runs) == 1


def test_payment_required_names_the_fix(make_fake, chinook_dump):
    fake = make_fake()
    _setup(fake, chinook_dump)
    fake.fail_next(402, path_contains="/addons")
    with make_client(fake) as client, pytest.raises(ScalingoApiError, match="Billing"):
        client.list_addons(APP)


def test_refused_backup_creation_names_the_way_out(make_fake, chinook_dump):
    fake = make_fake()
    addon = _setup(fake, chinook_dump)
    fake.fail_next(409, path_contains="/backups", method="POST")
    with make_client(fake) as client, pytest.raises(ScalingoApiError, match="backup='latest'"):
        client.create_backup(APP, addon.id)


def test_a_refused_addon_token_is_not_reported_as_a_refused_backup(make_fake, chinook_dump):
    """create_backup asks for the addon token first: that request's 4xx keeps its own message."""
    fake = make_fake()
    addon = _setup(fake, chinook_dump)
    fake.fail_next(422, path_contains=f"/addons/{addon.id}/token")
    with make_client(fake) as client, pytest.raises(ScalingoApiError) as raised:
        client.create_backup(APP, addon.id)
    assert raised.value.status == 422 and str(raised.value.url).endswith("/token")
    assert "refused to create a backup" not in str(raised.value)
    assert fake.requests_to(r"/backups$") == []


# ---------------------------------------------------------------------------- download URL and body
def test_archive_url_given_by_a_redirect(make_fake, chinook_dump, tmp_path):
    fake = make_fake(archive_redirect=True)
    addon = _setup(fake, chinook_dump)
    backup = fake.add_backup(APP, chinook_dump)
    with make_client(fake) as client:
        url = client.archive_url(APP, addon.id, backup.id)
        assert "/download?token=" in url
        _, result = _download_latest(client, addon.id, tmp_path / "r.tar.gz")
    assert result.sha256 == sha256_file(backup.archive)
    assert {r.auth for r in fake.requests_to(r"/download$")} == {None}


def test_signed_url_redirecting_to_storage_gets_no_auth(make_fake, chinook_dump, tmp_path):
    import requests

    fake = make_fake(download_redirect=True)
    addon = _setup(fake, chinook_dump)
    backup = fake.add_backup(APP, chinook_dump)
    session = requests.Session()
    session.headers["Authorization"] = "Bearer must-not-travel"  # e.g. set by a shared session
    with make_client(fake, session=session) as client:
        _, result = _download_latest(client, addon.id, tmp_path / "s.tar.gz")
    assert result.sha256 == sha256_file(backup.archive)
    storage = [r for r in fake.requests if r.server == "storage"]
    assert storage and {r.auth for r in storage} == {None}
    assert {r.auth for r in fake.requests_to(r"/download$")} == {None}


def test_storage_url_signature_is_never_logged(make_fake, chinook_dump, tmp_path):
    """urllib3 logs each request line (path and query) at DEBUG: the storage signature is masked there.
    The handler sits on urllib3's logger itself: Airflow's logging setup replaces the root handlers."""

    class Collect(logging.Handler):
        lines: list[str] = []

        def emit(self, record):
            self.lines.append(record.getMessage())

    fake = make_fake(download_redirect=True)
    addon = _setup(fake, chinook_dump)
    backup = fake.add_backup(APP, chinook_dump)
    pool_logger = logging.getLogger("urllib3.connectionpool")
    handler, level = Collect(logging.DEBUG), pool_logger.level
    pool_logger.addHandler(handler)
    pool_logger.setLevel(logging.DEBUG)
    try:
        with make_client(fake) as client:
            _download_latest(client, addon.id, tmp_path / "s.tar.gz")
    finally:
        pool_logger.removeHandler(handler)
        pool_logger.setLevel(level)
    signature = fake._storage.RequestHandlerClass._storage_signature(
        type("H", (), {"fake": fake})(), backup.id
    )
    logged = "\n".join(Collect.lines)
    assert "/storage/" in logged  # urllib3 did log the request line
    assert "/download?" in logged and signature not in logged
    assert not [token for token in fake._download_tokens if token in logged]


@pytest.mark.parametrize("framing", ["chunked", "close"])
def test_body_without_content_length(make_fake, chinook_dump, tmp_path, framing):
    fake = make_fake(download_framing=framing)
    addon = _setup(fake, chinook_dump)
    backup = fake.add_backup(APP, chinook_dump, size_unknown=True)
    with make_client(fake) as client:
        _, result = _download_latest(client, addon.id, tmp_path / "c.tar.gz")
    assert result.sha256 == sha256_file(backup.archive)


def test_chunked_body_cut_is_resumed(make_fake, chinook_dump, tmp_path):
    fake = make_fake(download_framing="chunked")
    addon = _setup(fake, chinook_dump)
    backup = fake.add_backup(APP, chinook_dump, size_unknown=True)
    fake.cut_download(after_bytes=4096)
    with make_client(fake) as client:
        _, result = _download_latest(client, addon.id, tmp_path / "c.tar.gz")
    assert result.resumes == 1 and result.sha256 == sha256_file(backup.archive)


def test_truncated_body_with_no_size_anywhere_is_refused(make_fake, chinook_dump, tmp_path):
    """Connection-close body, size null: the cut looks like a normal end to HTTP."""
    fake = make_fake(download_framing="close")
    addon = _setup(fake, chinook_dump)
    fake.add_backup(APP, chinook_dump, size_unknown=True)
    fake.cut_download(after_bytes=4096)
    with make_client(fake) as client, pytest.raises(ScalingoDownloadError, match="truncated"):
        _download_latest(client, addon.id, tmp_path / "t.tar.gz")
    assert not list(tmp_path.glob("t.tar.gz*"))


def test_download_server_error_is_retried(make_fake, chinook_dump, tmp_path):
    fake = make_fake()
    addon = _setup(fake, chinook_dump)
    backup = fake.add_backup(APP, chinook_dump)
    fake.fail_next(503, times=1, path_contains="/download", retry_after="0")
    with make_client(fake) as client:
        _, result = _download_latest(client, addon.id, tmp_path / "d.tar.gz")
    assert result.sha256 == sha256_file(backup.archive)
    assert len(fake.requests_to(r"/download$")) == 2


# ---------------------------------------------------------------------------- addons, hosts
def test_addon_found_by_the_cli_provider_name_rule(make_fake, chinook_dump):
    fake = make_fake()
    fake.add_app(APP)
    fake.add_addon(APP, provider_id="redis")
    addon = fake.add_addon(APP, provider_id="pg-next", provider_name="PostgreSQL", dump_path=chinook_dump)
    with make_client(fake) as client:
        assert client.get_postgresql_addon(APP)["id"] == addon.id
        assert client.get_postgresql_addon(APP, addon.resource_id)["id"] == addon.id


def test_legacy_provider_id_among_several_addons(make_fake, chinook_dump):
    fake = make_fake()
    fake.add_app(APP)
    fake.add_addon(APP, provider_id="redis")
    fake.add_addon(APP, provider_id="mongodb")
    addon = fake.add_addon(APP, provider_id="scalingo-postgresql", dump_path=chinook_dump)
    with make_client(fake) as client:
        assert client.get_postgresql_addon(APP)["id"] == addon.id
        with pytest.raises(AddonNotFoundError, match="not PostgreSQL"):
            client.get_postgresql_addon(APP, fake.apps[APP].addons[0].id)


def test_hosts_served_under_a_path_prefix(make_fake, chinook_dump, tmp_path):
    fake = make_fake(base_path="/scalingo")
    addon = _setup(fake, chinook_dump)
    backup = fake.add_backup(APP, chinook_dump)
    assert fake.url.endswith("/scalingo")
    with ScalingoClient(fake.api_token, auth_url=fake.url, backoff_s=0.01) as client:
        assert client.endpoints().source == "regions endpoint"
        _, result = _download_latest(client, addon.id, tmp_path / "p.tar.gz")
    assert result.sha256 == sha256_file(backup.archive)
    with ScalingoClient(fake.api_token, api_url=fake.url + "/v1/", db_api_url=fake.url + "/api") as c:
        assert c._api_override == c._db_api_override == fake.url


def test_errors_never_carry_the_token(make_fake, chinook_dump, tmp_path):
    fake = make_fake()
    addon = _setup(fake, chinook_dump)
    backup = fake.add_backup(APP, chinook_dump)
    fake.fail_next(403, path_contains="/download")  # e.g. the signed URL refused by the storage
    with make_client(fake) as client, pytest.raises(ScalingoDownloadError) as info:
        client.download_backup(APP, addon.id, {"id": backup.id, "status": "done"}, tmp_path / "e")
    tokens = list(fake._download_tokens) + [fake.api_token]
    assert "HTTP 403" in str(info.value)
    assert not [t for t in tokens if t in str(info.value)]


# ---------------------------------------------------------------------------- operator
def test_operator_never_uses_an_api_name_as_a_path(fake, fake_app, scalingo_conn, chinook_dump, tmp_path):
    from scalingo_staging_sync.operators import ScalingoBackupOperator

    backup = fake.add_backup(APP, chinook_dump)
    backup.name = "../../escaped"
    out = ScalingoBackupOperator(task_id="b", app=APP, download_dir=str(tmp_path / "dl")).execute({})
    assert out["backup_name"] == backup.id
    assert out["archive_path"] == str(tmp_path / "dl" / f"{backup.id}.tar.gz")
    assert not list(tmp_path.glob("escaped*"))


def test_operator_does_not_keep_an_archive_that_does_not_extract(fake, fake_app, scalingo_conn, tmp_path):
    from airflow.sdk.exceptions import AirflowFailException

    from scalingo_staging_sync.operators import ScalingoBackupOperator

    fake.add_backup(APP, None, include_dump=False, extra_files={"README.txt": b"hello"})
    op = ScalingoBackupOperator(task_id="b", app=APP, download_dir=str(tmp_path / "dl"))
    with pytest.raises(AirflowFailException) as info:
        op.execute({})
    assert isinstance(info.value.__cause__, ScalingoArchiveError)
    assert not list((tmp_path / "dl").glob("*.tar.gz*"))  # the next try downloads again


# ---------------------------------------------------------------------------- connection, regions
def test_retry_budget_comes_from_the_connection(fake, monkeypatch):
    import json

    from scalingo_staging_sync.hooks.scalingo import ScalingoHook

    conn = json.loads(fake.airflow_conn_json())
    conn["extra"].update(retry_budget_s=7, max_attempts=2)
    monkeypatch.setenv("AIRFLOW_CONN_SCALINGO_DEFAULT", json.dumps(conn))
    client = ScalingoHook().get_conn()
    assert (client.retry_budget_s, client.max_attempts) == (7.0, 2)


def test_secnum_region_maps_to_its_own_hosts_from_the_static_table(fake, monkeypatch):
    from scalingo_staging_sync.scalingo import regions

    fake.fail_next(500, times=10, path_contains="/regions")
    monkeypatch.setattr(regions, "DEFAULT_AUTH_URL", fake.url)  # the fake plays Scalingo's own auth host
    with ScalingoClient(
        fake.api_token, auth_url=fake.url, region="osc-secnum-fr1", backoff_s=0.01, max_attempts=2
    ) as client:
        ep = client.endpoints()
    assert (ep.api, ep.db_api, ep.source) == (
        "https://api.osc-secnum-fr1.scalingo.com",
        "https://db-api.osc-secnum-fr1.scalingo.com",
        "static table",
    )


def test_regions_endpoint_refusing_the_bearer_is_read_unauthenticated(fake, fake_app):
    fake.fail_next(401, times=2, path_contains="/regions")  # the JWT, then the refreshed JWT
    with ScalingoClient(fake.api_token, auth_url=fake.url, backoff_s=0.01) as client:
        assert client.endpoints().source == "regions endpoint"
        assert client.get_postgresql_addon(APP)["id"] == fake_app.id
    assert [r.auth for r in fake.requests_to(r"/regions$")] == ["bearer", "bearer", None]


def test_refused_api_token_is_not_hidden_by_the_region_lookup(fake, fake_app):
    from scalingo_staging_sync.scalingo.errors import ScalingoAuthError

    with ScalingoClient("tk-us-not-the-token", auth_url=fake.url, backoff_s=0.01) as client:
        with pytest.raises(ScalingoAuthError, match="password field of the Scalingo connection"):
            client.get_postgresql_addon(APP)
    assert not fake.requests_to(r"/regions$")
