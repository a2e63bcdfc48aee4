"""Where backups go when nothing names a directory, and the run's own folder: decided in settings.py
(the download root and the run folder) and followed by ScalingoBackupOperator. Real fake-Scalingo HTTP
server, real Chinook dump, real files; the system temp dir is redirected to this test's directory."""

from __future__ import annotations

import json
import tempfile

import pytest

from scalingo_staging_sync.anonymize.rules import parse_rules_text
from scalingo_staging_sync.settings import RunSettings
from scalingo_staging_sync.storage import safe_segment
from scalingo_staging_sync.testing.fake_scalingo import FakeScalingoAPI

APP = "dl-prod"
RUN_ID = "manual__2026-01-01T00:00:00+00:00"


@pytest.fixture
def worker_tmp(tmp_path, monkeypatch):
    path = tmp_path / "system-tmp"
    path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    for env in ("SCALINGO_STAGING_SYNC_DOWNLOAD_DIR", "AIRFLOW__SCALINGO_STAGING_SYNC__DOWNLOAD_DIR"):
        monkeypatch.delenv(env, raising=False)
    return path


@pytest.fixture
def fake_backup(tmp_path, chinook_dump, monkeypatch):
    with FakeScalingoAPI(workdir=tmp_path / "fake") as fake:
        fake.add_app(APP)
        fake.add_addon(APP, dump_path=chinook_dump, version="16.9.0-1")
        backup = fake.add_backup(APP, chinook_dump)
        conn = json.loads(fake.airflow_conn_json())
        conn["extra"].update(backoff_s=0.01, backoff_max_s=0.05)
        monkeypatch.setenv("AIRFLOW_CONN_SCALINGO_DEFAULT", json.dumps(conn))
        yield backup


def test_run_settings_put_each_run_in_its_folder_under_the_default_root(worker_tmp):
    settings = RunSettings.build(
        params={}, rules=parse_rules_text("source_app: a\n"), config={}, run_id=RUN_ID
    )
    assert settings.download_dir == str(worker_tmp / "scalingo_staging_sync" / safe_segment(RUN_ID))
    assert safe_segment(RUN_ID) != RUN_ID  # the run id was made safe for a path
    url = RunSettings.build(
        params={},
        rules=parse_rules_text("source_app: a\n"),
        config={"download_dir": "s3://b/dl/"},
        run_id="r1",
    )
    assert url.download_dir == "s3://b/dl/r1"


def test_the_operator_without_download_dir_downloads_under_the_default_root(worker_tmp, fake_backup):
    from scalingo_staging_sync.operators import ScalingoBackupOperator

    out = ScalingoBackupOperator(task_id="fetch_backup", app=APP).execute({"run_id": RUN_ID})
    root = worker_tmp / "scalingo_staging_sync" / "backups"
    assert out["archive_path"] == str(root / f"{fake_backup.name}.tar.gz")
    assert out["dump_path"].startswith(str(root / fake_backup.name) + "/")
    assert open(out["dump_path"], "rb").read(5) == b"PGDMP"


def test_a_configured_url_gets_the_run_folder_an_explicit_one_does_not(
    worker_tmp, fake_backup, s3_bucket, monkeypatch
):
    from scalingo_staging_sync.operators import ScalingoBackupOperator
    from scalingo_staging_sync.storage import StoredDump

    monkeypatch.setenv("SCALINGO_STAGING_SYNC_DOWNLOAD_DIR", f"{s3_bucket.url}/configured")
    monkeypatch.setenv("SCALINGO_STAGING_SYNC_DOWNLOAD_CONN_ID", s3_bucket.conn_id)
    out = ScalingoBackupOperator(task_id="fetch_backup", app=APP).execute({"run_id": RUN_ID})
    stored = StoredDump.from_dict(out["stored_dump"])
    assert stored.url == f"{s3_bucket.url}/configured/{safe_segment(RUN_ID)}/{fake_backup.name}.pgsql"
    assert stored.run_key == RUN_ID

    # the reference DAG passes the run's own folder (RunSettings.download_dir): used as it is
    explicit = ScalingoBackupOperator(
        task_id="fetch_backup", app=APP, download_dir=f"{s3_bucket.url}/run-7"
    ).execute({"run_id": RUN_ID})
    stored = StoredDump.from_dict(explicit["stored_dump"])
    assert stored.url == f"{s3_bucket.url}/run-7/{fake_backup.name}.pgsql"
    assert stored.run_key == RUN_ID
    assert sorted(s3_bucket.keys()) == [
        f"configured/{safe_segment(RUN_ID)}/{fake_backup.name}.pgsql",
        f"run-7/{fake_backup.name}.pgsql",
    ]
