"""ScalingoBackupOperator and ScalingoBackupTrigger against the fake API (real HTTP, real dump)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from datetime import timedelta

import pytest
from scalingo_helpers import APP

from scalingo_staging_sync.operators import ScalingoBackupOperator
from scalingo_staging_sync.scalingo.download import sha256_file
from scalingo_staging_sync.scalingo.errors import (
    AddonNotFoundError,
    BackupFailedError,
    BackupNotReadyError,
    ScalingoArchiveError,
    ScalingoNotFoundError,
)
from scalingo_staging_sync.triggers.backup import ScalingoBackupTrigger


@contextlib.contextmanager
def fails_with(core_error: type, match: str):
    """A non-retryable core error reaches Airflow as AirflowFailException (no retries spent), caused by
    the core error, with the core error's message."""
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match=match) as info:
        yield info
    assert isinstance(info.value.__cause__, core_error), repr(info.value.__cause__)
    assert not core_error.retryable


def _op(tmp_path, **kwargs):
    params = {"task_id": "backup", "app": APP, "download_dir": str(tmp_path / "dl"), "poll_interval": 0.01}
    params.update(kwargs)
    return ScalingoBackupOperator(**params)


def test_latest_returns_complete_xcom(fake, fake_app, scalingo_conn, chinook_dump, tmp_path):
    fake.add_backup(APP, chinook_dump, age=timedelta(days=1))
    newest = fake.add_backup(APP, chinook_dump, age=timedelta(hours=1))
    running = fake.add_backup(APP, chinook_dump, status="running")  # never picked by "latest"
    out = _op(tmp_path).execute({})
    assert out["backup_id"] == newest.id != running.id
    assert out["addon_id"] == fake_app.id
    assert out["size"] == newest.archive.stat().st_size
    assert out["sha256"] == sha256_file(newest.archive)
    assert out["pg_version"] == "16.9.0-1" and out["pg_major"] == 16
    assert out["resource_id"] == fake_app.resource_id
    assert out["db_hostname"] == fake_app.hostname
    assert out["dump_format"] == "custom"
    assert open(out["dump_path"], "rb").read() == chinook_dump.read_bytes()
    assert out["archive_path"].endswith(f"{newest.name}.tar.gz")
    assert open(out["archive_path"] + ".sha256").read().split()[0] == out["sha256"]
    assert out["reused"] is False
    json.dumps(out)  # XCom-serializable


def test_reuses_archive_only_when_checksum_matches(fake, fake_app, scalingo_conn, chinook_dump, tmp_path):
    backup = fake.add_backup(APP, chinook_dump)
    first = _op(tmp_path, backup=backup.id).execute({})
    downloads = len(fake.requests_to(r"/download$"))
    second = _op(tmp_path, backup=backup.id).execute({})
    assert second["reused"] is True and second["sha256"] == first["sha256"]
    assert len(fake.requests_to(r"/download$")) == downloads
    # corrupt the archive in place (same size): the sidecar no longer matches -> downloaded again
    with open(first["archive_path"], "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00\x01\x02\x03")
    third = _op(tmp_path, backup=backup.id).execute({})
    assert third["reused"] is False and third["sha256"] == first["sha256"]
    assert len(fake.requests_to(r"/download$")) == downloads + 1


def test_new_backup_waits_blocking(fake, fake_app, scalingo_conn, tmp_path):
    out = _op(tmp_path, backup="new").execute({})
    created = fake.backup(out["backup_id"])
    assert created.method == "manual" and created.status == "done"
    assert out["dump_format"] == "custom"


def test_explicit_backup_in_error(fake, fake_app, scalingo_conn, chinook_dump, tmp_path):
    bad = fake.add_backup(APP, chinook_dump, status="error")
    with fails_with(BackupFailedError, match=f"'{bad.id}'.*'error'"):
        _op(tmp_path, backup=bad.id).execute({})


def test_explicit_backup_still_running(fake, fake_app, scalingo_conn, chinook_dump, tmp_path):
    running = fake.add_backup(APP, chinook_dump, status="running")
    with pytest.raises(BackupNotReadyError, match="not 'done'"):
        _op(tmp_path, backup=running.id).execute({})


def test_unknown_app_and_missing_addon(fake, fake_app, scalingo_conn, tmp_path):
    with fails_with(ScalingoNotFoundError, match="'ghost' not found"):
        _op(tmp_path, app="ghost").execute({})
    fake.add_addon("cache-only", provider_id="redis")
    with fails_with(AddonNotFoundError, match="no PostgreSQL addon"):
        _op(tmp_path, app="cache-only").execute({})


def test_operator_refuses_traversal_archive(fake, fake_app, scalingo_conn, chinook_dump, tmp_path):
    fake.add_backup(APP, chinook_dump, traversal_member=True)
    with fails_with(ScalingoArchiveError, match="climbs out"):
        _op(tmp_path).execute({})
    assert not (tmp_path / fake_app.resource_id).exists()


def test_object_storage_file_url(fake, fake_app, scalingo_conn, chinook_dump, tmp_path):
    fake.add_backup(APP, chinook_dump)
    out = _op(tmp_path, download_dir=f"file://{tmp_path}/shared").execute({})
    assert out["dump_path"].startswith(str(tmp_path / "shared"))
    assert open(out["dump_path"], "rb").read(5) == b"PGDMP"


def _run_trigger(trigger):
    async def first_event():
        async for event in trigger.run():
            return event.payload

    return asyncio.run(first_event())


def test_trigger_run_for_real(fake, fake_app, scalingo_conn):
    from scalingo_staging_sync.hooks.scalingo import ScalingoHook

    created = ScalingoHook().create_backup(APP, fake_app.id)
    trigger = ScalingoBackupTrigger("scalingo_default", APP, fake_app.id, created["id"], poll_interval=0.01)
    classpath, kwargs = trigger.serialize()
    assert classpath == "scalingo_staging_sync.triggers.backup.ScalingoBackupTrigger"
    event = _run_trigger(ScalingoBackupTrigger(**json.loads(json.dumps(kwargs))))
    assert event["status"] == "done" and event["backup"]["id"] == created["id"]
    assert event["backup"]["status"] == "done"
    assert len(fake.requests_to(rf"/backups/{created['id']}$")) == 2


def test_trigger_failed_and_timeout(fake, scalingo_conn, chinook_dump, monkeypatch):
    addon = fake.add_addon("bad-app", dump_path=chinook_dump, new_backup_status="error")
    bad = fake.add_backup(
        "bad-app", chinook_dump, addon_id=addon.id, status="running", polls_until_done=1, final_status="error"
    )
    event = _run_trigger(
        ScalingoBackupTrigger("scalingo_default", "bad-app", addon.id, bad.id, poll_interval=0.01)
    )
    assert event["status"] == "failed" and event["error_type"] == "BackupFailedError"
    stuck = fake.add_backup("bad-app", chinook_dump, addon_id=addon.id, status="running")
    event = _run_trigger(
        ScalingoBackupTrigger(
            "scalingo_default", "bad-app", addon.id, stuck.id, poll_interval=0.01, timeout=0.05
        )
    )
    assert event["status"] == "timeout"
    # a backup never listed: an error once the grace for a just-created one is over
    monkeypatch.setattr("scalingo_staging_sync.triggers.backup.UNLISTED_GRACE_S", 0.2)
    started = time.monotonic()
    event = _run_trigger(
        ScalingoBackupTrigger("scalingo_default", "bad-app", addon.id, "nope", poll_interval=0.01)
    )
    assert event["status"] == "error" and event["error_type"] == "BackupNotListedError"
    assert "not found" in event["message"] and time.monotonic() - started >= 0.2


def test_trigger_waits_for_a_created_backup_that_is_listed_late(fake, fake_app, scalingo_conn):
    """Right after its creation a backup may be missing from Scalingo's list for a moment: polled as
    running, not failed."""
    from scalingo_staging_sync.hooks.scalingo import ScalingoHook

    created = ScalingoHook().create_backup(APP, fake_app.id)
    backup = next(b for b in fake_app.backups if b.id == created["id"])
    fake_app.backups.remove(backup)
    threading.Timer(0.3, fake_app.backups.append, [backup]).start()
    event = _run_trigger(
        ScalingoBackupTrigger("scalingo_default", APP, fake_app.id, created["id"], poll_interval=0.05)
    )
    assert event["status"] == "done" and event["backup"]["id"] == created["id"]


def test_deferrable_operator_defers_then_completes(fake, fake_app, scalingo_conn, tmp_path):
    from airflow.sdk.exceptions import TaskDeferred

    op = _op(tmp_path, backup="new", deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({})
    trigger = deferred.value.trigger
    assert isinstance(trigger, ScalingoBackupTrigger) and deferred.value.method_name == "execute_complete"
    event = _run_trigger(trigger)
    out = op.execute_complete({}, event, **deferred.value.kwargs)
    assert out["backup_id"] == trigger.backup_id and out["dump_format"] == "custom"
    with fails_with(BackupFailedError, match="boom"):
        op.execute_complete({}, {"status": "failed", "error_type": "BackupFailedError", "message": "boom"})
