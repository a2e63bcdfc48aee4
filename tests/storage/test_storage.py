"""store_archive / materialize / remove_stored on a real S3-compatible server (moto, server mode)
reached through an Airflow ``aws`` connection, and on local paths and file:// URLs."""

from __future__ import annotations

import filecmp
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from scalingo_staging_sync.errors import SyncError
from scalingo_staging_sync.storage import (
    SIDECAR_NAME,
    StorageConfigError,
    StorageError,
    StorageIntegrityError,
    StorageRemovalError,
    StoredDump,
    cache_entry_dir,
    join_location,
    materialize,
    remove_local_caches,
    remove_stored,
    safe_segment,
    sha256_of,
    store_archive,
)
from scalingo_staging_sync.testing.archive import build_backup_archive

RUN = "manual__2026-12-02T06:00:00.123456+00:00"
MiB = 1024 * 1024


def _key(stored: StoredDump, bucket) -> str:
    prefix = f"s3://{bucket.name}/"
    assert stored.url.startswith(prefix)
    return stored.url[len(prefix) :]


def test_upload_then_materialize_on_two_workers_reuses_the_verified_cache(s3_bucket, make_dump, tmp_path):
    dump = make_dump(tmp_path / "src" / "20261202_prod.pgsql", 20 * MiB + 123)
    stored = store_archive(dump, f"{s3_bucket.url}/backups", conn_id=s3_bucket.conn_id, run_key=RUN)

    key = f"backups/{safe_segment(RUN)}/20261202_prod.pgsql"
    assert stored.url == f"s3://{s3_bucket.name}/{key}"
    assert s3_bucket.keys() == [key]  # no temporary .part-* key left behind
    assert (stored.size, stored.sha256, stored.kind) == (dump.stat().st_size, sha256_of(dump), "dump")
    assert (stored.conn_id, stored.run_key) == (s3_bucket.conn_id, RUN)
    as_json = json.loads(json.dumps(stored.to_dict()))
    assert StoredDump.from_dict(as_json) == stored

    server = s3_bucket.server
    worker_a, worker_b = tmp_path / "worker-a", tmp_path / "worker-b"
    path_a = materialize(as_json, worker_a)
    gets_after_a = server.count("GET", f"/{s3_bucket.name}/{key}")
    assert gets_after_a >= 1
    path_b = materialize(as_json, worker_b)
    assert path_a != path_b
    assert path_a.is_relative_to(worker_a) and path_b.is_relative_to(worker_b)
    assert path_a == cache_entry_dir(stored, worker_a) / "20261202_prod.pgsql"
    for path in (path_a, path_b):
        assert filecmp.cmp(path, dump, shallow=False)
        assert not list(path.parent.glob("*.part"))
    gets_after_b = server.count("GET", f"/{s3_bucket.name}/{key}")
    assert gets_after_b > gets_after_a

    # same worker again: the verified copy is reused, nothing is downloaded, the file is untouched
    mtime = path_a.stat().st_mtime_ns
    assert materialize(as_json, worker_a) == path_a
    assert server.count("GET", f"/{s3_bucket.name}/{key}") == gets_after_b
    assert path_a.stat().st_mtime_ns == mtime

    # even with the object gone the cached copy serves (no network), but a new worker cannot get one
    remove_stored(stored)
    assert materialize(as_json, worker_a) == path_a
    with pytest.raises(StorageIntegrityError, match="does not exist"):
        materialize(as_json, tmp_path / "worker-c")


def test_a_cached_copy_altered_on_disk_is_downloaded_again(s3_bucket, make_dump, tmp_path):
    dump = make_dump(tmp_path / "d.pgsql", 3 * MiB)
    stored = store_archive(dump, s3_bucket.url, conn_id=s3_bucket.conn_id, run_key="r1")
    cache = tmp_path / "cache"
    path = materialize(stored, cache)
    with open(path, "r+b") as fh:  # truncated by a disk-full, say
        fh.truncate(1000)
    gets = s3_bucket.server.count("GET", f"/{s3_bucket.name}/r1/d.pgsql")
    assert materialize(stored, cache) == path
    assert filecmp.cmp(path, dump, shallow=False)
    assert s3_bucket.server.count("GET", f"/{s3_bucket.name}/r1/d.pgsql") > gets
    # verify="full" re-hashes the cached copy: same-size corruption is caught too
    with open(path, "r+b") as fh:
        fh.seek(100)
        fh.write(b"X")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, json.loads((path.parent / SIDECAR_NAME).read_text())["dump_mtime_ns"]))
    assert materialize(stored, cache, verify="full") == path
    assert filecmp.cmp(path, dump, shallow=False)


def test_an_interrupted_upload_leaves_no_complete_looking_object(s3_bucket, make_dump, tmp_path):
    dump = make_dump(tmp_path / "big.pgsql", 30 * MiB)

    def stop_half_way(done: int, total: int) -> None:
        if done > total // 2:
            raise RuntimeError("task terminated by the scheduler")

    with pytest.raises(StorageError, match="big.pgsql") as info:
        store_archive(dump, s3_bucket.url, conn_id=s3_bucket.conn_id, run_key="r", progress=stop_half_way)
    assert info.value.retryable
    assert s3_bucket.keys() == []
    assert s3_bucket.server.multipart_uploads(s3_bucket.name) == []  # aborted, not completed
    # parts had really been sent before the interruption
    assert any(r.method == "PUT" and "partNumber=" in r.query for r in s3_bucket.server.requests)


def test_a_killed_upload_leaves_no_object_under_the_final_key(s3_bucket, make_dump, tmp_path):
    """SIGKILL half way (no exception handler runs): the multipart upload of the temporary key is
    never completed, so no object exists; a lifecycle rule aborts the stale upload."""
    dump = make_dump(tmp_path / "killed.pgsql", 40 * MiB)
    script = textwrap.dedent(
        f"""
        import time
        from scalingo_staging_sync.storage import store_archive
        def slow(done, total):
            if done > 20 * 1024 * 1024:
                time.sleep(3600)
        store_archive({str(dump)!r}, {s3_bucket.url!r}, conn_id={s3_bucket.conn_id!r}, run_key="k",
                      progress=slow)
        """
    )
    server = s3_bucket.server
    proc = subprocess.Popen([sys.executable, "-c", script], env=dict(os.environ))
    try:
        deadline = time.monotonic() + 120
        while not any(
            r.method == "PUT" and "partNumber=2" in r.query and s3_bucket.name in r.path
            for r in server.requests
        ):
            assert proc.poll() is None, "the uploader exited before it was killed"
            assert time.monotonic() < deadline, "no part was uploaded"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert s3_bucket.keys() == []
    assert len(server.multipart_uploads(s3_bucket.name)) == 1
    stored = StoredDump(
        f"{s3_bucket.url}/k/killed.pgsql", dump.stat().st_size, sha256_of(dump), conn_id=s3_bucket.conn_id
    )
    with pytest.raises(StorageIntegrityError, match="does not exist"):
        materialize(stored, tmp_path / "cache")


def test_a_tampered_object_is_refused_at_materialize(s3_bucket, make_dump, tmp_path):
    dump = make_dump(tmp_path / "t.pgsql", 2 * MiB)
    stored = store_archive(dump, s3_bucket.url, conn_id=s3_bucket.conn_id, run_key="r")
    forged = bytearray(dump.read_bytes())
    forged[-10:] = b"0123456789"  # same size, different content
    s3_bucket.server.client().put_object(
        Bucket=s3_bucket.name, Key=_key(stored, s3_bucket), Body=bytes(forged)
    )
    cache = tmp_path / "cache"
    with pytest.raises(StorageIntegrityError) as info:
        materialize(stored.to_dict(), cache)
    message = str(info.value)
    import hashlib

    assert (
        stored.url in message and stored.sha256 in message and hashlib.sha256(forged).hexdigest() in message
    )
    assert not info.value.retryable
    entry = cache_entry_dir(stored, cache)
    assert sorted(p.name for p in entry.iterdir()) == [".lock"]  # nothing usable left in the cache


def test_remove_stored_leaves_the_bucket_empty_and_is_idempotent(s3_bucket, make_dump, tmp_path):
    dump = make_dump(tmp_path / "r.pgsql", 1 * MiB)
    stored = store_archive(dump, f"{s3_bucket.url}/x", conn_id=s3_bucket.conn_id, run_key=RUN)
    # the leftover of an upload killed after its temporary object was completed
    s3_bucket.server.client().put_object(
        Bucket=s3_bucket.name, Key=_key(stored, s3_bucket) + ".part-0badc0ffee00", Body=b"x"
    )
    cache = tmp_path / "cache"
    materialize(stored, cache)
    assert (cache / safe_segment(RUN)).is_dir()

    assert remove_stored(stored.to_dict()) is True
    assert s3_bucket.keys() == []
    assert remove_stored(stored) is False  # already gone: success
    assert remove_local_caches(RUN, cache) is True
    assert not (cache / safe_segment(RUN)).exists()
    assert remove_local_caches(RUN, cache) is False


def test_removal_failure_names_the_object(tmp_path, monkeypatch, make_dump):
    # an aws connection whose endpoint is a closed port on 127.0.0.1: the delete cannot be done
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    conn = {
        "conn_type": "aws",
        "login": "k",
        "password": "s",
        "extra": {
            "endpoint_url": f"http://127.0.0.1:{port}",
            "region_name": "us-east-1",
            "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1},
        },
    }
    monkeypatch.setenv("AIRFLOW_CONN_SSS_DEAD_S3", json.dumps(conn))
    stored = StoredDump("s3://nowhere/run/prod.pgsql", 10, "0" * 64, conn_id="sss_dead_s3")
    with pytest.raises(StorageRemovalError, match="s3://nowhere/run/prod.pgsql") as info:
        remove_stored(stored)
    assert isinstance(info.value, SyncError) and info.value.retryable


def test_file_url_and_local_paths(make_dump, tmp_path):
    dump = make_dump(tmp_path / "src" / "l.pgsql", 1 * MiB + 7)
    shared = tmp_path / "shared backups"
    stored = store_archive(dump, shared.as_uri(), run_key=RUN)  # file:///.../shared%20backups
    expected = shared / safe_segment(RUN) / "l.pgsql"
    assert stored.url == str(expected) and stored.conn_id is None
    assert filecmp.cmp(expected, dump, shallow=False)
    assert not list(expected.parent.glob("*.part-*"))
    # a local dump passes through unchanged: no cache copy
    assert materialize(stored, tmp_path / "cache") == expected
    assert not (tmp_path / "cache").exists()
    assert materialize(stored, verify="full") == expected

    # a plain path as destination, and storing a file onto itself only hashes it
    plain = store_archive(dump, str(tmp_path / "plain"))
    assert plain.url == str(tmp_path / "plain" / "l.pgsql")
    in_place = store_archive(dump, str(dump.parent))
    assert in_place.url == str(dump) and in_place.sha256 == stored.sha256

    with open(expected, "ab") as fh:
        fh.write(b"more")
    with pytest.raises(StorageIntegrityError, match="bytes, expected"):
        materialize(stored)
    assert remove_stored(stored) is True and not expected.exists()
    assert not expected.parent.exists()  # the run's (now empty) directory goes too
    assert remove_stored(stored) is False


def test_a_scalingo_archive_is_extracted_into_the_cache(s3_bucket, make_dump, tmp_path):
    dump = make_dump(tmp_path / "inner.pgsql", 2 * MiB, seed=3)
    archive = build_backup_archive(dump, tmp_path / "dl", "20261202060000_prod")
    stored = store_archive(archive, s3_bucket.url, conn_id=s3_bucket.conn_id, run_key="arch")
    assert stored.kind == "archive" and stored.sha256 == sha256_of(archive)
    path = materialize(stored, tmp_path / "cache")
    assert path.name == "20261202060000_prod.pgsql"
    assert filecmp.cmp(path, dump, shallow=False)
    assert not list(path.parent.parent.glob("*.tar.gz"))  # the archive itself is not kept
    assert materialize(stored, tmp_path / "cache", verify="full") == path


def test_a_real_pg_dump_records_its_server_version(s3_bucket, chinook_dump, tmp_path):
    stored = store_archive(chinook_dump, s3_bucket.url, conn_id=s3_bucket.conn_id, run_key="pg")
    assert stored.pg_version and stored.pg_version.startswith("16.")
    path = materialize(stored, tmp_path / "cache")
    assert path.read_bytes()[:5] == b"PGDMP" and filecmp.cmp(path, chinook_dump, shallow=False)


def test_locations_and_bad_values():
    assert join_location("s3://bucket/x", "run") == "s3://bucket/x/run"
    assert join_location("s3://bucket/x/", "run", "f") == "s3://bucket/x/run/f"
    assert join_location("/data/backups", "run") == "/data/backups/run"
    with pytest.raises(StorageConfigError, match="'../etc'"):
        join_location("s3://b", "../etc")
    assert safe_segment("run_1") == "run_1"
    assert safe_segment(RUN) != safe_segment(RUN.replace(":", "_"))
    assert "/" not in safe_segment("a/b") and ":" not in safe_segment(RUN)
    with pytest.raises(StorageConfigError, match="'md5'"):
        StoredDump("s3://b/k", 1, "md5")
    with pytest.raises(StorageConfigError, match="lacks"):
        StoredDump.from_dict({"url": "s3://b/k"})
    with pytest.raises(StorageConfigError, match="not a file"):
        store_archive("/nonexistent/dump.pgsql", "s3://b")


def test_cache_dir_from_the_environment(monkeypatch, make_dump, tmp_path):
    from scalingo_staging_sync.storage import CACHE_DIR_ENV, resolve_cache_dir

    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "env-cache"))
    assert resolve_cache_dir() == tmp_path / "env-cache"
    assert resolve_cache_dir(tmp_path / "arg") == tmp_path / "arg"
    with pytest.raises(StorageConfigError, match="local directory"):
        resolve_cache_dir("s3://bucket/cache")


def test_concurrent_materialize_on_one_worker_downloads_once(s3_bucket, make_dump, tmp_path):
    import threading

    dump = make_dump(tmp_path / "c.pgsql", 20 * MiB)
    stored = store_archive(dump, s3_bucket.url, conn_id=s3_bucket.conn_id, run_key="c")
    path = f"/{s3_bucket.name}/c/c.pgsql"
    before = s3_bucket.server.count("GET", path)
    materialize(stored, tmp_path / "other-worker")
    one_download = s3_bucket.server.count("GET", path) - before

    results, errors = [], []

    def task():
        try:
            results.append(materialize(stored, tmp_path / "shared-worker"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=task) for _ in range(3)]
    before = s3_bucket.server.count("GET", path)
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    assert len(set(results)) == 1 and filecmp.cmp(results[0], dump, shallow=False)
    assert s3_bucket.server.count("GET", path) - before == one_download


def test_stale_caches_of_other_runs_are_pruned_unless_in_use(s3_bucket, make_dump, tmp_path):
    from scalingo_staging_sync.storage import _locked, prune_caches

    cache = tmp_path / "cache"
    old = store_archive(
        make_dump(tmp_path / "o.pgsql", MiB, seed=1), s3_bucket.url, conn_id=s3_bucket.conn_id, run_key="old"
    )
    busy = store_archive(
        make_dump(tmp_path / "b.pgsql", MiB, seed=2), s3_bucket.url, conn_id=s3_bucket.conn_id, run_key="busy"
    )
    new = store_archive(
        make_dump(tmp_path / "n.pgsql", MiB, seed=3), s3_bucket.url, conn_id=s3_bucket.conn_id, run_key="new"
    )
    old_path, busy_path = materialize(old, cache), materialize(busy, cache)
    long_ago = time.time() - 3 * 24 * 3600
    for p in (old_path, busy_path):
        os.utime(p.parent / SIDECAR_NAME, (long_ago, long_ago))

    with _locked(busy_path.parent):  # another task of that run is materializing it right now
        materialize(new, cache)  # prunes with the default max age (24 h)
        assert not old_path.exists() and not (cache / "old").exists()
        assert busy_path.exists()
    # once released the stale entry goes; a recent entry stays whatever its run
    assert prune_caches(cache, max_age_s=3600) == [busy_path.parent]
    new_path = materialize(new, cache, prune=False)
    assert prune_caches(cache, max_age_s=3600) == [] and new_path.exists()


def test_the_uploading_worker_keeps_its_copy_as_cache(s3_bucket, make_dump, tmp_path):
    from scalingo_staging_sync.storage import cache_local_copy

    dump = make_dump(tmp_path / "dl" / "w.pgsql", 3 * MiB)
    expected_bytes = dump.read_bytes()
    # the conn id may also ride in the URL, ObjectStoragePath-style; it is recorded beside the URL
    stored = store_archive(dump, f"s3://{s3_bucket.conn_id}@{s3_bucket.name}/b", run_key="w")
    assert stored.url == f"s3://{s3_bucket.name}/b/w/w.pgsql" and stored.conn_id == s3_bucket.conn_id
    cached = cache_local_copy(stored, dump, tmp_path / "cache")
    assert not dump.exists() and cached.read_bytes() == expected_bytes
    gets = s3_bucket.server.count("GET", f"/{s3_bucket.name}/b/w/w.pgsql")
    assert materialize(stored, tmp_path / "cache") == cached
    assert s3_bucket.server.count("GET", f"/{s3_bucket.name}/b/w/w.pgsql") == gets
    with pytest.raises(StorageConfigError, match="credentials in an Airflow connection"):
        store_archive(cached, f"s3://key:secret@{s3_bucket.name}/b")


def test_a_cache_dir_shared_with_other_files_only_loses_cache_entries(s3_bucket, make_dump, tmp_path):
    from scalingo_staging_sync.storage import prune_caches

    cache = tmp_path / "tmp-like"
    foreign = [cache / "someone-else" / "data", cache / "someone-else" / ("a" * 64), cache / "run1" / "notes"]
    for path in foreign:
        path.mkdir(parents=True)
        (path / "f").write_text("keep me")
    long_ago = time.time() - 10 * 24 * 3600
    for path in foreign:
        os.utime(path, (long_ago, long_ago))
    stored = store_archive(
        make_dump(tmp_path / "s.pgsql", MiB), s3_bucket.url, conn_id=s3_bucket.conn_id, run_key="run1"
    )
    materialize(stored, cache)
    assert prune_caches(cache, max_age_s=0, keep=("run1",)) == []
    assert remove_local_caches("run1", cache) is True
    assert all((path / "f").read_text() == "keep me" for path in foreign)
    assert not any((cache / "run1").glob("*/*.pgsql"))


def test_a_source_that_grows_during_the_upload_is_refused_and_deleted(s3_bucket, make_dump, tmp_path):
    dump = make_dump(tmp_path / "g.pgsql", 12 * MiB)

    def still_being_written(done: int, total: int) -> None:
        if done == 8 * MiB:  # the downloader was still appending to it
            with open(dump, "ab") as fh:
                fh.write(b"late bytes")

    with pytest.raises(StorageIntegrityError, match="changed while it was stored") as info:
        store_archive(
            dump, s3_bucket.url, conn_id=s3_bucket.conn_id, run_key="g", progress=still_being_written
        )
    assert info.value.retryable
    assert s3_bucket.keys() == [] and s3_bucket.server.multipart_uploads(s3_bucket.name) == []


def test_the_core_module_does_not_import_airflow():
    code = "import sys, scalingo_staging_sync.storage as s; s.join_location('s3://b', 'r'); print('airflow' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=dict(os.environ)
    )
    assert out.stdout.strip() == "False"


def test_a_missing_connection_is_named_not_replaced_by_default_credentials(make_dump, tmp_path):
    dump = make_dump(tmp_path / "m.pgsql", 1000)
    with pytest.raises(StorageConfigError, match="'sss_no_such_conn'.*does not exist"):
        store_archive(dump, "s3://bucket/x", conn_id="sss_no_such_conn")
    stored = StoredDump("s3://bucket/x/m.pgsql", 1000, "0" * 64, conn_id="sss_no_such_conn")
    with pytest.raises(StorageConfigError):
        materialize(stored, tmp_path / "cache")
    with pytest.raises(StorageRemovalError, match="s3://bucket/x/m.pgsql.*sss_no_such_conn") as info:
        remove_stored(stored)
    assert not info.value.retryable


def test_an_unsafe_archive_is_refused_at_materialize_and_nothing_is_cached(s3_bucket, make_dump, tmp_path):
    from scalingo_staging_sync.scalingo.errors import ScalingoArchiveError

    dump = make_dump(tmp_path / "inner.pgsql", MiB)
    archive = build_backup_archive(dump, tmp_path / "dl", "evil", traversal_member=True)
    stored = store_archive(archive, s3_bucket.url, conn_id=s3_bucket.conn_id, run_key="evil")
    cache = tmp_path / "cache"
    with pytest.raises(ScalingoArchiveError, match=r"\.\./evil\.pgsql"):
        materialize(stored, cache)
    entry = cache_entry_dir(stored, cache)
    assert (
        not (entry / SIDECAR_NAME).exists()
        and not list(entry.rglob("*.pgsql"))
        and not list(entry.rglob("*.tar.gz"))
    )
    assert not (tmp_path / "evil.pgsql").exists() and not (cache / "evil.pgsql").exists()
