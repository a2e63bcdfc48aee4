"""Issue 15 at the operator level: a consuming task refuses an altered object, leases on one worker's
cache, the cleanup operator removing what an interrupted backup left and naming what it cannot delete,
and ``storage.probe_writable``. Real moto S3 server on 127.0.0.1 through Airflow ``aws`` connections."""

from __future__ import annotations

import json
import random
import socket
from pathlib import Path

import pytest
from airflow_helpers import stored_xcom, sync_dag

from scalingo_staging_sync import storage
from scalingo_staging_sync.operators import _dump

MiB = 1024 * 1024


def _fake_dump(path: Path, size: int, seed: int = 0) -> Path:
    """A file shaped like a pg_dump custom archive (``PGDMP`` magic + pseudo-random bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"PGDMP" + random.Random(seed).randbytes(size - 5))
    return path


def _key(stored, bucket) -> str:
    return stored.url.split(f"{bucket.url}/", 1)[1]


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "worker-cache"
    monkeypatch.setenv("SCALINGO_STAGING_SYNC_CACHE_DIR", str(path))
    monkeypatch.delenv("AIRFLOW__SCALINGO_STAGING_SYNC__CACHE_DIR", raising=False)
    monkeypatch.delenv("SCALINGO_STAGING_SYNC_CACHE_SCOPE", raising=False)
    return path


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_a_consuming_task_refuses_an_object_whose_sha256_does_not_match(s3_bucket, cache, tmp_path):
    from airflow.sdk.exceptions import AirflowFailException

    from scalingo_staging_sync.operators import PgRestoreOperator

    dump = _fake_dump(tmp_path / "prod.pgsql", 2 * MiB)
    stored = storage.store_archive(dump, f"{s3_bucket.url}/backups", conn_id=s3_bucket.conn_id, run_key="r1")
    forged = bytearray(dump.read_bytes())
    forged[-8:] = b"tampered"  # same size, other bytes
    s3_bucket.server.client().put_object(
        Bucket=s3_bucket.name, Key=_key(stored, s3_bucket), Body=bytes(forged)
    )

    op = PgRestoreOperator(
        task_id="restore_schema", dump_path={"stored_dump": stored.to_dict()}, section="pre-data"
    )
    with pytest.raises(AirflowFailException) as info:  # not retryable: the object was altered
        op.execute({})
    message = str(info.value)
    assert "StorageIntegrityError" in message and stored.url in message and stored.sha256 in message
    assert _files(cache) == [], "nothing of the refused object may stay on the worker"


def test_an_interrupted_upload_is_refused_and_leaves_nothing(s3_bucket, tmp_path):
    """The backup operator's upload is ``store_archive``: a failure mid-stream (here the progress callback
    raising, as Airflow stopping the task does) leaves no object, final or temporary."""
    dump = _fake_dump(tmp_path / "big.pgsql", 20 * MiB)

    def stop(done, total):
        if done > 9 * MiB:
            raise KeyboardInterrupt("task stopped")

    with pytest.raises(KeyboardInterrupt):
        storage.store_archive(dump, f"{s3_bucket.url}/backups", conn_id=s3_bucket.conn_id, progress=stop)
    assert s3_bucket.keys() == []
    assert s3_bucket.server.multipart_uploads(s3_bucket.name) == []


def test_tasks_on_one_worker_share_a_lease_and_the_last_one_deletes_it(s3_bucket, cache, tmp_path):
    dump = _fake_dump(tmp_path / "d.pgsql", 3 * MiB)
    stored = storage.store_archive(dump, f"{s3_bucket.url}/b", conn_id=s3_bucket.conn_id, run_key="run-7")
    object_path = "/" + stored.url.split("://", 1)[1]
    s3_bucket.server.reset_requests()

    first, lease1 = storage.lease_dump(stored.to_dict(), cache)
    second, lease2 = storage.lease_dump(stored.to_dict(), cache)
    assert first == second and first.read_bytes() == dump.read_bytes()
    assert s3_bucket.server.count("GET", object_path) == 1, "the second task reuses the verified copy"
    assert lease1.release() is False and first.exists(), "still used by the other task"
    assert lease2.release() is True and not first.exists()
    assert list(cache.iterdir()) == [], "the run's cache directory goes with its last entry"


def test_local_dump_reads_every_form_of_the_backup_result(s3_bucket, cache, tmp_path):
    dump = _fake_dump(tmp_path / "d.pgsql", 1 * MiB)
    stored = storage.store_archive(dump, f"{s3_bucket.url}/b", conn_id=s3_bucket.conn_id, run_key="run-8")
    result = {"dump_path": None, "archive_path": None, "stored_dump": stored.to_dict()}
    for ref in (result, stored.to_dict(), repr(result), json.dumps(result)):  # native or text templates
        path = _dump.local_dump(ref)
        assert path.read_bytes() == dump.read_bytes() and path.is_relative_to(cache)
    _dump.release_dumps()
    assert _files(cache) == []
    # a local run: the path passes through, nothing is cached or deleted
    assert _dump.local_dump({"dump_path": str(dump), "stored_dump": None}) == dump
    _dump.release_dumps()
    assert dump.exists()
    with pytest.raises(_dump.DumpNotFoundError, match="without its recorded size and sha256"):
        _dump.local_dump(stored.url)


def _cleanup_dag(dag_id, **kwargs):
    from airflow.sdk import DAG

    from scalingo_staging_sync.operators import StagingCleanupOperator

    with DAG(dag_id, schedule=None, catchup=False) as dag:
        StagingCleanupOperator(task_id="cleanup", mode=None, retries=0, **kwargs)
    return dag


def test_cleanup_removes_what_an_interrupted_backup_left_under_the_run_prefix(
    airflow_db, s3_bucket, tmp_path
):
    """The backup task died before recording a stored dump: its temporary object is still found and
    deleted under the run's download directory."""
    client = s3_bucket.server.client()
    client.put_object(Bucket=s3_bucket.name, Key="backups/run-1/prod.pgsql.part-0123abcd", Body=b"PGDMP...")
    client.put_object(Bucket=s3_bucket.name, Key="backups/run-10/other-run.pgsql", Body=b"PGDMP...")
    dag = _cleanup_dag(
        "issue15_cleanup_leftovers",
        download_dir=f"{s3_bucket.url}/backups/run-1",
        download_conn_id=s3_bucket.conn_id,
    )
    sync_dag(dag, tmp_path, bundle_path=tmp_path)
    run = dag.test()
    assert str(run.state) == "success"
    assert s3_bucket.keys() == ["backups/run-10/other-run.pgsql"], "only this run's prefix is touched"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dead_s3_conn() -> str:
    """An Airflow ``aws`` connection (JSON) to a port nothing listens on, tried once."""
    return json.dumps(
        {
            "conn_type": "aws",
            "login": "k",
            "password": "s",
            "extra": {
                "endpoint_url": f"http://127.0.0.1:{_closed_port()}",
                "region_name": "us-east-1",
                "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2},
            },
        }
    )


def test_cleanup_fails_loudly_and_names_the_object_it_cannot_delete(airflow_db, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_ISSUE15_DEAD_S3", _dead_s3_conn())
    stored = {
        "url": "s3://gone-bucket/backups/run-11/prod.pgsql",
        "size": 10,
        "sha256": "a" * 64,
        "kind": "dump",
        "conn_id": "issue15_dead_s3",
        "run_key": "run-11",
    }
    dag = _cleanup_dag("issue15_cleanup_fails", stored_dump=stored)
    sync_dag(dag, tmp_path, bundle_path=tmp_path)
    run = dag.test()
    assert str(run.state) == "failed"
    recorded = stored_xcom(run, "cleanup", "cleanup")["backup"]  # pushed before the task raised
    assert recorded["stored"] == stored["url"]
    assert any(
        "cannot delete the stored dump s3://gone-bucket/backups/run-11/prod.pgsql" in e
        for e in recorded["errors"]
    ), recorded


def test_probe_writable(s3_bucket, tmp_path, monkeypatch):
    storage.probe_writable(f"{s3_bucket.url}/backups", s3_bucket.conn_id)
    assert s3_bucket.keys() == [], "the probe object is deleted"
    storage.probe_writable(f"s3://{s3_bucket.conn_id}@{s3_bucket.name}/backups")  # conn id in the URL
    storage.probe_writable(str(tmp_path / "local" / "backups"))
    assert list((tmp_path / "local" / "backups").iterdir()) == []
    with pytest.raises(storage.StorageConfigError, match="no-such-bucket-15"):
        storage.probe_writable("s3://no-such-bucket-15/backups", s3_bucket.conn_id)
    with pytest.raises(storage.StorageConfigError, match="missing_conn_15"):
        storage.probe_writable(f"{s3_bucket.url}/backups", "missing_conn_15")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(storage.StorageConfigError, match="not writable"):
        storage.probe_writable(str(blocker / "sub"))


def test_cleanup_of_a_file_url_download_dir_removes_it(tmp_path):
    run_dir = tmp_path / "shared" / "run-12"
    _fake_dump(run_dir / "prod" / "prod.pgsql", 1024)
    done = _dump.remove_run_dumps(download_dir=f"file://{run_dir}", run_key="run-12")
    assert done["errors"] == [] and done["removed_objects"] == [str(run_dir / "prod" / "prod.pgsql")]
    assert not run_dir.exists()


@pytest.fixture
def worker_tmp(tmp_path, monkeypatch) -> Path:
    """The worker's temporary directory (where the backup task downloads before storing)."""
    import tempfile

    path = tmp_path / "worker-tmp"
    path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    return path


def test_backup_operator_stores_the_dump_under_the_configured_url_per_run(
    box, s3_bucket, cache, worker_tmp, monkeypatch
):
    from scalingo_staging_sync.operators import ScalingoBackupOperator

    monkeypatch.setenv("SCALINGO_STAGING_SYNC_DOWNLOAD_DIR", f"{s3_bucket.url}/backups")
    monkeypatch.setenv("SCALINGO_STAGING_SYNC_DOWNLOAD_CONN_ID", s3_bucket.conn_id)
    out = ScalingoBackupOperator(task_id="fetch_backup", app=box.source_app).execute(
        {"run_id": "manual__r13"}
    )
    stored = storage.StoredDump.from_dict(out["stored_dump"])
    assert stored.url == f"{s3_bucket.url}/backups/manual__r13/{out['backup_name']}.pgsql"
    assert stored.run_key == "manual__r13" and stored.conn_id == s3_bucket.conn_id and stored.kind == "dump"
    assert s3_bucket.keys() == [f"backups/manual__r13/{out['backup_name']}.pgsql"]
    assert out["dump_path"] is None and out["archive_path"] is None
    assert list(worker_tmp.iterdir()) == [], "the temporary download is deleted"
    assert _files(cache) == [], "cache_scope=task: the backup worker keeps no copy"
    # the stored object is the production dump, byte for byte
    path = _dump.local_dump(out)
    assert path.read_bytes() == box.dump_path.read_bytes()
    _dump.release_dumps()
    json.dumps(out)


def test_backup_operator_upload_failure_leaves_nothing(box, s3_bucket, cache, worker_tmp, monkeypatch):
    from scalingo_staging_sync.operators import ScalingoBackupOperator

    monkeypatch.setenv("AIRFLOW_CONN_ISSUE15_DEAD_S3", _dead_s3_conn())
    op = ScalingoBackupOperator(
        task_id="fetch_backup",
        app=box.source_app,
        download_dir="s3://unreachable-15/backups/run-14",
        download_conn_id="issue15_dead_s3",
    )
    with pytest.raises(storage.StorageError, match="unreachable-15"):
        op.execute({"run_id": "run-14"})
    assert list(worker_tmp.iterdir()) == [], "the temporary download is deleted after a failed upload"
