"""Core client against the real HTTP fake server: happy path and every fault."""

from __future__ import annotations

import base64
import json
import threading
import time
from datetime import timedelta

import pytest
from scalingo_helpers import APP, make_client

from scalingo_staging_sync.scalingo.archive import extract_dump
from scalingo_staging_sync.scalingo.client import jwt_expiry
from scalingo_staging_sync.scalingo.download import sha256_file
from scalingo_staging_sync.scalingo.errors import (
    AddonNotFoundError,
    BackupFailedError,
    BackupNotReadyError,
    ScalingoArchiveError,
    ScalingoAuthError,
    ScalingoDownloadError,
    ScalingoNotFoundError,
    ScalingoRateLimitError,
    ScalingoServerError,
)


def test_happy_path_latest_backup_download_and_extract(fake, fake_app, client, chinook_dump, tmp_path):
    old = fake.add_backup(APP, chinook_dump, age=timedelta(days=2))
    new = fake.add_backup(APP, chinook_dump, age=timedelta(hours=3))
    addon = client.get_postgresql_addon(APP)
    assert addon["id"] == fake_app.id
    backups = client.list_backups(APP, addon["id"])
    assert [b["id"] for b in backups] == [new.id, old.id]
    latest = client.latest_done_backup(APP, addon["id"])
    assert latest["id"] == new.id
    assert latest["name"].endswith("_" + fake_app.resource_id)

    result = client.download_backup(APP, addon["id"], latest, tmp_path / "dl" / f"{latest['name']}.tar.gz")
    assert result.size == new.archive.stat().st_size == latest["size"]
    assert result.sha256 == sha256_file(new.archive)
    assert result.resumes == 0
    assert not list((tmp_path / "dl").glob("*.part"))
    dump = extract_dump(result.path, tmp_path / "x")
    assert dump.suffix == ".pgsql"
    assert dump.read_bytes() == chinook_dump.read_bytes()
    assert dump.read_bytes()[:5] == b"PGDMP"
    assert client.get_database(APP, addon["id"])["readable_version"] == "16.9.0-1"


def test_jwt_has_real_exp_and_is_cached(fake, fake_app, client):
    client.list_addons(APP)
    client.list_addons(APP)
    assert len(fake.requests_to(r"/tokens/exchange$")) == 1
    exchange_auth = [r.auth for r in fake.requests_to(r"/tokens/exchange$")]
    assert exchange_auth == ["basic"]
    token = client._user_jwt()
    exp = jwt_expiry(token)
    assert exp is not None and time.time() + 3500 < exp <= time.time() + 3601
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert payload["exp"] == int(exp)


def test_short_lived_jwt_is_refreshed_before_exp(tmp_path, chinook_dump):
    from scalingo_staging_sync.testing.fake_scalingo import FakeScalingoAPI

    # lifetimes under the refresh margins (5 min, 1 min): each token is used for half of what is left of
    # it, then exchanged again before it expires; not exchanged before every request. 20 s tokens: the
    # first five requests have 9.5 s before the refresh even on a loaded machine, and 10.1 s later the
    # refresh (at most 10 s after the exchange) is due
    with FakeScalingoAPI(workdir=tmp_path, jwt_ttl=20, addon_token_ttl=20) as fake:
        fake.add_addon(APP, dump_path=chinook_dump)
        with make_client(fake) as client:
            addon_id = client.get_postgresql_addon(APP)["id"]
            for _ in range(2):
                client.list_addons(APP)
                client.list_backups(APP, addon_id)
            assert len(fake.requests_to(r"/tokens/exchange$")) == 1
            assert len(fake.requests_to(r"/addons/[^/]+/token$")) == 1
            time.sleep(10.1)
            client.list_addons(APP)
            client.list_backups(APP, addon_id)
        assert len(fake.requests_to(r"/tokens/exchange$")) == 2
        assert len(fake.requests_to(r"/addons/[^/]+/token$")) == 2
        assert not [r for r in fake.requests if r.path.endswith("/addons")] or all(
            r.auth == "bearer" for r in fake.requests_to(r"/addons$")
        )


def test_expired_token_mid_run_is_refreshed_once(fake, fake_app, client, chinook_dump, tmp_path):
    backup = fake.add_backup(APP, chinook_dump)
    addon_id = client.get_postgresql_addon(APP)["id"]
    client.list_backups(APP, addon_id)
    fake.expire_tokens()  # both the user JWT and the addon token are now refused with 401
    got = client.latest_done_backup(APP, addon_id)
    assert got["id"] == backup.id
    result = client.download_backup(APP, addon_id, got, tmp_path / "b.tar.gz")
    assert result.size == backup.archive.stat().st_size
    assert len(fake.requests_to(r"/tokens/exchange$")) == 2
    # initial addon token; after expiry: one refused with the expired JWT (401), one with the new JWT
    assert len(fake.requests_to(r"/addons/[^/]+/token$")) == 3


def test_retry_once_on_429_plain_text(fake, fake_app, client):
    fake.fail_next(429, times=1, path_contains="/addons")
    assert client.get_postgresql_addon(APP)["id"] == fake_app.id
    assert len(fake.requests_to(r"/apps/[^/]+/addons$")) == 2


def test_retry_once_on_500(fake, fake_app, client):
    fake.fail_next(500, times=1, path_contains="/backups")
    assert client.list_backups(APP, fake_app.id) == []
    assert len(fake.requests_to(r"/backups$")) == 2


def test_persistent_429_gives_typed_error(fake, fake_app):
    fake.fail_next(429, times=100, path_contains="/addons")
    with (
        make_client(fake, max_attempts=3) as client,
        pytest.raises(ScalingoRateLimitError, match="rate limit"),
    ):
        client.list_addons(APP)
    assert len(fake.requests_to(r"/addons$")) == 3


def test_a_429_without_retry_after_waits_longer_than_a_5xx(fake, fake_app, caplog):
    """The documented 429 carries no Retry-After and the limit counts requests per minute: its retry
    waits RATE_LIMIT_WAIT_FACTOR x backoff_s (15 s by default), a 5xx's only the exponential backoff."""
    from scalingo_staging_sync.scalingo.client import RATE_LIMIT_WAIT_FACTOR

    assert RATE_LIMIT_WAIT_FACTOR == 15
    fake.fail_next(429, times=1, path_contains="/addons")
    fake.fail_next(503, times=1, path_contains="/backups")
    with caplog.at_level("WARNING"), make_client(fake, backoff_s=0.02, backoff_max_s=5.0) as client:
        client.list_addons(APP)
        client.list_backups(APP, fake_app.id)
    waits = [r.getMessage() for r in caplog.records if r.getMessage().startswith("retry 1/")]
    assert len(waits) == 2
    assert " in 0.3 s after: " in waits[0] and "HTTP 429" in waits[0]  # 15 x 0.02
    assert " in 0.0 s after: " in waits[1] and "HTTP 503" in waits[1]  # the first backoff, 0.02


def test_persistent_500_gives_server_error(fake, fake_app):
    fake.fail_next(503, times=100, path_contains="/addons")
    with make_client(fake, max_attempts=2) as client, pytest.raises(ScalingoServerError):
        client.list_addons(APP)


def test_no_retry_on_other_4xx(fake, fake_app, client):
    fake.fail_next(403, times=1, path_contains="/addons")
    with pytest.raises(ScalingoAuthError, match="owner or full collaborator"):
        client.list_addons(APP)
    assert len(fake.requests_to(r"/addons$")) == 1


def test_connection_error_is_retried_then_typed(tmp_path):
    from scalingo_staging_sync.scalingo.client import ScalingoClient

    with ScalingoClient(
        "tk-us-x" * 3,
        auth_url="http://127.0.0.1:9",
        api_url="http://127.0.0.1:9",
        db_api_url="http://127.0.0.1:9",
        backoff_s=0.01,
        max_attempts=2,
    ) as client:
        with pytest.raises(ScalingoServerError, match="cannot reach Scalingo"):
            client.list_apps()


def test_bad_token_is_auth_error_naming_the_fix(fake, fake_app):
    from scalingo_staging_sync.scalingo.client import ScalingoClient

    with ScalingoClient(
        "tk-us-wrong-token-123", auth_url=fake.url, api_url=fake.url, db_api_url=fake.url
    ) as c:
        with pytest.raises(ScalingoAuthError, match="password field of the Scalingo connection"):
            c.list_addons(APP)


def test_unknown_app_404(fake, fake_app, client):
    with pytest.raises(ScalingoNotFoundError, match="'no-such-app' not found in region 'osc-fr1'"):
        client.get_postgresql_addon("no-such-app")


def test_app_without_postgresql_addon(fake, client):
    fake.add_app("front")
    fake.add_addon("front", provider_id="redis")
    with pytest.raises(AddonNotFoundError, match="no PostgreSQL addon.*redis"):
        client.get_postgresql_addon("front")


def test_several_postgresql_addons_need_explicit_id(fake, fake_app, client, chinook_dump):
    second = fake.add_addon(APP, dump_path=chinook_dump)
    with pytest.raises(AddonNotFoundError, match="pass addon_id") as err:
        client.get_postgresql_addon(APP)
    assert fake_app.id in str(err.value) and second.id in str(err.value)
    assert client.get_postgresql_addon(APP, second.id)["id"] == second.id
    with pytest.raises(AddonNotFoundError, match="ad-nope"):
        client.get_postgresql_addon(APP, "ad-nope")


def test_latest_skips_error_and_running_backups(fake, fake_app, client, chinook_dump):
    good = fake.add_backup(APP, chinook_dump, age=timedelta(days=1))
    fake.add_backup(APP, chinook_dump, status="error", age=timedelta(hours=2))
    fake.add_backup(APP, chinook_dump, status="running", age=timedelta(minutes=5))
    assert client.latest_done_backup(APP, fake_app.id)["id"] == good.id


def test_no_done_backup_is_not_ready(fake, fake_app, client, chinook_dump):
    fake.add_backup(APP, chinook_dump, status="error")
    with pytest.raises(BackupNotReadyError, match="backup='new'"):
        client.latest_done_backup(APP, fake_app.id)


def test_new_backup_waits_until_done(fake, fake_app, client, tmp_path):
    created = client.create_backup(APP, fake_app.id)
    assert created["status"] == "scheduled" and created["method"] == "manual"
    done = client.wait_for_backup(APP, fake_app.id, created["id"], poll_interval=0.01, timeout=10)
    assert done["status"] == "done" and done["size"] > 0
    polls = fake.requests_to(rf"/backups/{created['id']}$")
    assert len(polls) == 2  # new_backup_polls=2
    result = client.download_backup(APP, fake_app.id, done, tmp_path / "new.tar.gz")
    assert extract_dump(result.path, tmp_path / "x").read_bytes()[:5] == b"PGDMP"


def _manual_backups(fake, addon):
    return [b for b in addon.backups if b.method == "manual"]


def test_a_backup_created_before_a_5xx_answer_is_used_not_asked_for_twice(fake, fake_app, caplog):
    """The gateway answered 502 after Scalingo created the backup: the client finds it in the list and
    does not POST again (a second manual backup would take a slot of the plan's quota)."""
    old = fake.add_backup(APP, fake_app.dump_path, status="done", method="manual", age=timedelta(hours=3))
    fake.fail_next(502, times=1, path_contains="/backups", after_handling=True, method="POST")
    with caplog.at_level("WARNING"), make_client(fake, backoff_s=0.01) as client:
        created = client.create_backup(APP, fake_app.id)
    # the list before the POST (what exists is never adopted), the POST, then the list again
    assert [r.method for r in fake.requests_to(r"/databases/[^/]+/backups$")] == ["GET", "POST", "GET"]
    manual = _manual_backups(fake, fake_app)
    assert len(manual) == 2 and created["id"] == manual[-1].id != old.id
    assert created["status"] in ("scheduled", "running")  # listing it may count as a poll
    assert any("no second backup is asked for" in r.getMessage() for r in caplog.records)


def test_a_backup_request_failing_before_scalingo_acted_is_sent_again(fake, fake_app):
    """A 503 before anything was created (no backup listed since the request): asked for again, once."""
    fake.add_backup(APP, fake_app.dump_path, status="running", method="manual", age=timedelta(minutes=10))
    fake.fail_next(503, times=1, path_contains="/backups", method="POST")
    with make_client(fake, backoff_s=0.01) as client:
        created = client.create_backup(APP, fake_app.id)
    assert [r.method for r in fake.requests_to(r"/databases/[^/]+/backups$")] == [
        "GET",
        "POST",
        "GET",
        "POST",
    ]
    assert len(_manual_backups(fake, fake_app)) == 2  # the old running one (not adopted) and the new one
    assert created["id"] == _manual_backups(fake, fake_app)[-1].id


def test_a_backup_made_just_before_the_request_is_not_taken_for_its_result(fake, fake_app):
    """Another manual backup made a second before a request that failed before Scalingo acted is within
    the clock-skew window, but it was listed before the POST: not this request's, which is sent again."""
    other = fake.add_backup(APP, fake_app.dump_path, status="done", method="manual", age=timedelta(seconds=1))
    fake.fail_next(503, times=1, path_contains="/backups", method="POST")
    with make_client(fake, backoff_s=0.01) as client:
        created = client.create_backup(APP, fake_app.id)
    assert created["id"] != other.id
    assert [r.method for r in fake.requests_to(r"/databases/[^/]+/backups$")] == [
        "GET",
        "POST",
        "GET",
        "POST",
    ]
    assert len(_manual_backups(fake, fake_app)) == 2


def test_a_backup_without_method_created_before_a_5xx_is_used(fake, fake_app):
    """A backup whose ``method`` is null (the field is not promised) counts as manual, like an absent one."""
    fake.fail_next(502, times=1, path_contains="/backups", after_handling=True, method="POST")
    fake_app.new_backup_method = None
    with make_client(fake, backoff_s=0.01) as client:
        created = client.create_backup(APP, fake_app.id)
    assert len(fake_app.backups) == 1 and fake_app.backups[0].method is None
    assert created["id"] == fake_app.backups[0].id


def test_a_backup_created_before_a_5xx_is_used_whatever_its_method(fake, fake_app):
    """The documented answer to the backups POST shows ``"method": "periodic"`` for the backup it creates
    (developers.scalingo.com/databases/backups): a backup made since a request answered 502 is this
    request's even so; a second POST would take another manual-backup slot."""
    fake.add_backup(APP, fake_app.dump_path, status="done", method="periodic", age=timedelta(hours=3))
    fake.fail_next(502, times=1, path_contains="/backups", after_handling=True, method="POST")
    fake_app.new_backup_method = "periodic"
    with make_client(fake, backoff_s=0.01) as client:
        created = client.create_backup(APP, fake_app.id)
    assert [r.method for r in fake.requests_to(r"/databases/[^/]+/backups$")] == ["GET", "POST", "GET"]
    assert len(fake_app.backups) == 2 and created["id"] == fake_app.backups[-1].id


@pytest.mark.parametrize("step", ["/v1/tokens/exchange", "/addons", "/backups"])
def test_an_answer_cut_off_is_retried_like_a_dropped_connection(fake, fake_app, chinook_dump, step):
    """The connection breaks in the middle of a JSON answer (``IncompleteRead``): before, the raw requests
    ChunkedEncodingError escaped, was not retried and was no ScalingoApiError (the deferrable wait died)."""
    fake.add_backup(APP, chinook_dump, age=timedelta(hours=1))
    fake.cut_answer(step)
    with make_client(fake, backoff_s=0.01) as client:
        addon = client.get_postgresql_addon(APP)
        assert client.latest_done_backup(APP, addon["id"])["status"] == "done"
    assert len([r for r in fake.requests if step in r.path]) >= 2  # cut once, then asked again


def test_a_backup_request_whose_answer_is_cut_off_is_not_sent_twice(fake, fake_app):
    """The POST was carried out, its answer broke off: the backup made is found in the list and used."""
    fake.cut_answer("/backups", method="POST")
    with make_client(fake, backoff_s=0.01) as client:
        created = client.create_backup(APP, fake_app.id)
    assert [r.method for r in fake.requests_to(r"/databases/[^/]+/backups$")] == ["GET", "POST", "GET"]
    assert (
        len(_manual_backups(fake, fake_app)) == 1 and created["id"] == _manual_backups(fake, fake_app)[0].id
    )


def test_a_backup_request_failing_every_time_ends_with_the_server_error(fake, fake_app):
    fake.fail_next(500, times=100, path_contains="/backups")
    with make_client(fake, max_attempts=3, backoff_s=0.01) as client, pytest.raises(ScalingoServerError):
        client.create_backup(APP, fake_app.id)
    posts = [r for r in fake.requests_to(r"/databases/[^/]+/backups$") if r.method == "POST"]
    assert len(posts) == 3 and not _manual_backups(fake, fake_app)


def test_a_created_backup_listed_late_is_waited_for(fake, fake_app, client, monkeypatch):
    """Right after its creation a backup may be missing from Scalingo's list for a moment: the wait polls
    it as running for UNLISTED_GRACE_S, and fails with BackupNotListedError only after that."""
    from scalingo_staging_sync.scalingo import client as client_module
    from scalingo_staging_sync.scalingo.errors import BackupNotListedError

    assert client_module.UNLISTED_GRACE_S == 60.0
    created = client.create_backup(APP, fake_app.id)
    backup = next(b for b in fake_app.backups if b.id == created["id"])
    fake_app.backups.remove(backup)
    threading.Timer(0.3, fake_app.backups.append, [backup]).start()
    done = client.wait_for_backup(APP, fake_app.id, created["id"], poll_interval=0.05, timeout=10)
    assert done["id"] == created["id"] and done["status"] == "done"
    monkeypatch.setattr(client_module, "UNLISTED_GRACE_S", 0.2)
    started = time.monotonic()
    with pytest.raises(BackupNotListedError, match="'nope' not found"):
        client.wait_for_backup(APP, fake_app.id, "nope", poll_interval=0.01, timeout=10)
    assert 0.2 <= time.monotonic() - started < 5


def test_new_backup_in_error_fails(fake, client, chinook_dump):
    addon = fake.add_addon("other", dump_path=chinook_dump, new_backup_status="error", new_backup_polls=1)
    created = client.create_backup("other", addon.id)
    with pytest.raises(BackupFailedError, match="status 'error'"):
        client.wait_for_backup("other", addon.id, created["id"], poll_interval=0.01, timeout=10)


def test_wait_times_out(fake, fake_app, client, chinook_dump):
    running = fake.add_backup(APP, chinook_dump, status="running")
    with pytest.raises(BackupNotReadyError, match="raise the timeout"):
        client.wait_for_backup(APP, fake_app.id, running.id, poll_interval=0.05, timeout=0.2)


def test_download_resumes_with_range_after_cut(fake, fake_app, client, chinook_dump, tmp_path):
    backup = fake.add_backup(APP, chinook_dump)
    fake.cut_download()  # drop the connection half-way through
    meta = client.latest_done_backup(APP, fake_app.id)
    result = client.download_backup(APP, fake_app.id, meta, tmp_path / "r.tar.gz")
    assert result.resumes == 1
    assert result.sha256 == sha256_file(backup.archive)
    downloads = fake.requests_to(r"/download$")
    assert downloads[0].range is None
    half = backup.archive.stat().st_size // 2
    assert downloads[1].range == f"bytes={half}-"


def test_download_fails_after_too_many_cuts(fake, fake_app, client, chinook_dump, tmp_path):
    fake.add_backup(APP, chinook_dump)
    fake.cut_download(after_bytes=1000, times=50)
    meta = client.latest_done_backup(APP, fake_app.id)
    with pytest.raises(ScalingoDownloadError, match="connection lost"):
        client.download_backup(APP, fake_app.id, meta, tmp_path / "r.tar.gz", max_resumes=2)
    assert not list(tmp_path.glob("r.tar.gz*"))


def test_backup_size_differing_from_a_complete_archive_is_kept(
    fake, fake_app, client, chinook_dump, tmp_path, caplog
):
    """The docs call ``size`` the "backup size in bytes" (developers.scalingo.com/databases/backups), not
    the archive's byte count: a complete archive (Content-Length met, gzip read to its end marker with
    CRC and length) is kept, with a warning, whatever number the backup announces."""
    backup = fake.add_backup(APP, chinook_dump, reported_size=123)
    meta = client.latest_done_backup(APP, fake_app.id)
    with caplog.at_level("WARNING"):
        result = client.download_backup(APP, fake_app.id, meta, tmp_path / "w.tar.gz")
    assert result.size == backup.archive.stat().st_size != 123
    assert result.sha256 == sha256_file(backup.archive)
    assert any("the backup's size says 123" in r.getMessage() for r in caplog.records)


def test_truncated_archive_whose_size_differs_is_refused(fake, fake_app, client, chinook_dump, tmp_path):
    """The archive itself is cut short (the server serves what it has, Content-Length included): the
    backup's size is the only sign, and the gzip stream that does not reach its end marker confirms it."""
    whole = fake.add_backup(APP, chinook_dump, age=timedelta(days=2)).archive.read_bytes()
    short = tmp_path / "short.tar.gz"
    short.write_bytes(whole[: len(whole) // 2])
    fake.add_backup(APP, archive=short, reported_size=len(whole))
    meta = client.latest_done_backup(APP, fake_app.id)
    assert meta["size"] == len(whole)
    with pytest.raises(
        ScalingoDownloadError, match=f"received {len(whole) // 2} bytes but .* {len(whole)} .*truncated"
    ):
        client.download_backup(APP, fake_app.id, meta, tmp_path / "w.tar.gz")
    assert not list(tmp_path.glob("w.tar.gz*"))


def test_not_gzip_body_is_refused(fake, fake_app, client, tmp_path):
    bogus = tmp_path / "bogus.tar.gz"
    bogus.write_bytes(b"fail to get archive from storage backend: NoSuchKey")
    fake.add_backup(APP, archive=bogus)
    meta = client.latest_done_backup(APP, fake_app.id)
    with pytest.raises(ScalingoDownloadError, match="not a gzip archive.*NoSuchKey"):
        client.download_backup(APP, fake_app.id, meta, tmp_path / "dl.tar.gz")


def test_archive_without_dump(fake, fake_app, client, tmp_path):
    fake.add_backup(APP, None, include_dump=False, extra_files={"README.txt": b"hello"})
    meta = client.latest_done_backup(APP, fake_app.id)
    result = client.download_backup(APP, fake_app.id, meta, tmp_path / "n.tar.gz")
    with pytest.raises(ScalingoArchiveError, match=r"no PostgreSQL dump.*README\.txt"):
        extract_dump(result.path, tmp_path / "x")


def test_archive_with_parent_traversal(fake, fake_app, client, chinook_dump, tmp_path):
    fake.add_backup(APP, chinook_dump, traversal_member=True)
    meta = client.latest_done_backup(APP, fake_app.id)
    result = client.download_backup(APP, fake_app.id, meta, tmp_path / "t" / "t.tar.gz")
    with pytest.raises(ScalingoArchiveError, match=r"'\.\./.*\.pgsql' climbs out"):
        extract_dump(result.path, tmp_path / "t" / "x")
    assert not list(tmp_path.rglob("*.pgsql"))


def test_archive_with_symlink(fake, fake_app, client, chinook_dump, tmp_path):
    fake.add_backup(APP, chinook_dump, symlink_member=True)
    meta = client.latest_done_backup(APP, fake_app.id)
    result = client.download_backup(APP, fake_app.id, meta, tmp_path / "s.tar.gz")
    with pytest.raises(ScalingoArchiveError, match="is a link to '/etc/passwd'"):
        extract_dump(result.path, tmp_path / "x")


def test_archive_with_non_dump_pgsql(fake, fake_app, client, tmp_path):
    fake.add_backup(APP, None, include_dump=False, extra_files={"20240101000000_x.pgsql": b"not a dump"})
    meta = client.latest_done_backup(APP, fake_app.id)
    result = client.download_backup(APP, fake_app.id, meta, tmp_path / "p.tar.gz")
    with pytest.raises(ScalingoArchiveError, match="not a pg_dump archive"):
        extract_dump(result.path, tmp_path / "x")


def test_backup_by_id_and_unknown_id(fake, fake_app, client, chinook_dump):
    backup = fake.add_backup(APP, chinook_dump)
    assert client.get_backup(APP, fake_app.id, backup.id)["id"] == backup.id
    with pytest.raises(ScalingoNotFoundError, match="'nope'"):
        client.get_backup(APP, fake_app.id, "nope")


def test_archive_url_of_running_backup_is_not_ready(fake, fake_app, client, chinook_dump):
    running = fake.add_backup(APP, chinook_dump, status="running")
    with pytest.raises(BackupNotReadyError, match="only backups in status 'done'"):
        client.archive_url(APP, fake_app.id, running.id)


def test_regions_endpoint_resolves_hosts(fake, fake_app):
    from scalingo_staging_sync.scalingo.client import ScalingoClient

    with ScalingoClient(fake.api_token, auth_url=fake.url) as c:  # no api/db-api overrides
        assert c.get_postgresql_addon(APP)["id"] == fake_app.id
        assert c.endpoints().source == "regions endpoint"
        assert c.endpoints().api == fake.url
    with ScalingoClient(fake.api_token, auth_url=fake.url, region="nowhere-1") as c:
        with pytest.raises(Exception, match="unknown Scalingo region 'nowhere-1'.*osc-fr1"):
            c.endpoints()


def test_static_region_fallback_when_regions_endpoint_fails(fake, fake_app, monkeypatch):
    from scalingo_staging_sync.scalingo import regions
    from scalingo_staging_sync.scalingo.client import ScalingoClient

    fake.fail_next(500, times=10, path_contains="/regions")
    monkeypatch.setattr(regions, "DEFAULT_AUTH_URL", fake.url)  # the fake plays Scalingo's own auth host
    with ScalingoClient(fake.api_token, auth_url=fake.url, backoff_s=0.01, max_attempts=2) as c:
        ep = c.endpoints()
        assert ep.source == "static table"
        assert ep.api == "https://api.osc-fr1.scalingo.com"


def test_another_auth_url_never_falls_back_to_scalingos_real_hosts(fake, fake_app):
    """An auth URL that is not Scalingo's (a proxy, a stand-in) whose regions endpoint fails: the static
    table's real hosts would receive this connection's tokens; the client stops and says what to set."""
    from scalingo_staging_sync.scalingo.client import ScalingoApiError, ScalingoClient

    fake.fail_next(500, times=10, path_contains="/regions")
    with ScalingoClient(fake.api_token, auth_url=fake.url, backoff_s=0.01, max_attempts=2) as c:
        with pytest.raises(ScalingoApiError) as err:
            c.endpoints()
    message = str(err.value)
    assert "region 'osc-fr1'" in message and f"{fake.url}/v1/regions cannot be read" in message
    assert "api_url" in message and "db_api_url" in message and "scalingo.com" in message


def test_bad_base_url_is_explained():
    from scalingo_staging_sync.scalingo.client import ScalingoClient

    with pytest.raises(ValueError, match="api_url='api.osc-fr1.scalingo.com' is not a base URL"):
        ScalingoClient("tk-us-abcdef", api_url="api.osc-fr1.scalingo.com")
    c = ScalingoClient("tk-us-abcdef", api_url="https://api.example.com/v1/")
    assert c._api_override == "https://api.example.com"


def test_a_deprovisioned_or_suspended_postgresql_addon_does_not_hide_the_running_one(fake, chinook_dump):
    """Scalingo lists an addon a while after it is deprovisioned (``deprovisioned_at`` set) or while it is
    suspended: with one running PostgreSQL addon beside them, that one is the app's database; with two
    running ones, the choice is still the user's (addon_id)."""
    fake.add_app("moved")
    fake.add_addon("moved", dump_path=chinook_dump, status="suspended", deprovisioned=True)
    fake.add_addon("moved", dump_path=chinook_dump, status="suspended")
    live = fake.add_addon("moved", dump_path=chinook_dump)
    with make_client(fake) as client:
        assert client.get_postgresql_addon("moved")["id"] == live.id
        fake.add_addon("moved", dump_path=chinook_dump)
        with pytest.raises(AddonNotFoundError, match=r"4 PostgreSQL addons .*\(suspended\).*pass addon_id="):
            client.get_postgresql_addon("moved")
