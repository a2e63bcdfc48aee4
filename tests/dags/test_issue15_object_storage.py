"""Issue 15: the reference DAG with its backup on S3-compatible storage and no shared disk between tasks.

Real parts: the reference DAG run by ``dag.test()`` through ``scalingo_staging_sync.testing.sandbox``
(embedded PostgreSQL production and staging, the fake Scalingo API over HTTP), a moto S3 server on
127.0.0.1 reached through an Airflow ``aws`` connection (``AIRFLOW_CONN_SSS_TEST_S3``).

Separate workers cannot run here, so each task gets its own cache directory: the cache-dir resolution
(``operators._dump.cache_dir``, which reads ``[scalingo_staging_sync] cache_dir`` on a real worker) is
monkeypatched to ``<tmp>/workers/<task id>-<map index>/cache`` for the running task. The backup task's
temporary download directory is deleted by the task itself; every other task reads the dump only from
its own cache, downloaded from the bucket.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from airflow_helpers import stored_xcom, task_states
from reference_helpers import (
    drop_employee_rule,
    run_masked_to_success,
    run_reference,
    write_rules,
)

DUMP_CONSUMERS = {"restore_schema", "plan_anonymization", "prepare_masking", "load_data", "restore_post_data"}

pytestmark = pytest.mark.airflow


class Workers:
    """One cache directory per task (as separate workers would have), and what each task read."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.reads: list[tuple[str, str, Path]] = []  # (task id, worker key, local dump path)

    def key(self) -> tuple[str, str]:
        from airflow.sdk import get_current_context

        ti = get_current_context()["ti"]
        map_index = getattr(ti, "map_index", -1)
        return ti.task_id, f"{ti.task_id}-{map_index}"

    def cache_dir(self) -> str:
        return str(self.root / self.key()[1] / "cache")

    def leftovers(self) -> list[Path]:
        """Everything under the workers' caches except the (empty) cache roots themselves."""
        return [p for p in self.root.rglob("*") if not (p.is_dir() and p.name == "cache") and p.is_file()] + [
            p for p in self.root.glob("*/cache/*")
        ]


@pytest.fixture
def on_s3(box, s3_bucket, monkeypatch, tmp_path):
    """The sandbox's download_dir on the moto bucket, and a separate cache directory per task."""
    from scalingo_staging_sync.operators import _dump

    monkeypatch.setenv("SCALINGO_STAGING_SYNC_DOWNLOAD_DIR", f"{s3_bucket.url}/backups")
    monkeypatch.setenv("SCALINGO_STAGING_SYNC_DOWNLOAD_CONN_ID", s3_bucket.conn_id)
    monkeypatch.delenv("SCALINGO_STAGING_SYNC_CACHE_DIR", raising=False)
    monkeypatch.delenv("SCALINGO_STAGING_SYNC_CACHE_SCOPE", raising=False)
    workers = Workers(tmp_path / "workers")
    monkeypatch.setattr(_dump, "cache_dir", workers.cache_dir)
    real_local_dump = _dump.local_dump

    def recording_local_dump(dump_ref):
        path = real_local_dump(dump_ref)
        task_id, key = workers.key()
        workers.reads.append((task_id, key, Path(path)))
        return path

    monkeypatch.setattr(_dump, "local_dump", recording_local_dump)
    return workers


def _assert_no_dump_anywhere(box, s3_bucket, workers: Workers) -> None:
    assert s3_bucket.keys() == [], f"objects left in the bucket: {s3_bucket.keys()}"
    assert s3_bucket.server.multipart_uploads(s3_bucket.name) == []
    assert workers.leftovers() == [], f"cached copies left on the workers: {workers.leftovers()}"
    assert not (Path(box.env["SCALINGO_STAGING_SYNC_DOWNLOAD_DIR"]).exists()), "local download dir was used"


def test_reference_dag_runs_with_its_backup_on_s3_and_no_shared_disk(dag, box, s3_bucket, on_s3):
    # every row masked, as in the local-disk run (tests/dags/test_reference_dag.py)
    dag_run, _ = run_masked_to_success(dag, box)

    # the backup went to the bucket, verified, and the XCom carries the stored reference
    backup = stored_xcom(dag_run, "fetch_backup")
    stored = backup["stored_dump"]
    assert stored["url"].startswith(f"{s3_bucket.url}/backups/") and stored["url"].endswith(".pgsql")
    assert stored["conn_id"] == s3_bucket.conn_id and len(stored["sha256"]) == 64 and stored["size"] > 0
    assert backup["dump_path"] is None and backup["archive_path"] is None

    # each dump-consuming task read its own worker's copy, downloaded from the bucket
    consumers = {task_id for task_id, _, _ in on_s3.reads}
    assert consumers == DUMP_CONSUMERS, consumers
    for task_id, key, path in on_s3.reads:
        assert path.is_relative_to(on_s3.root / key / "cache"), (task_id, path)
    object_path = "/" + stored["url"].split("://", 1)[1]
    downloads = s3_bucket.server.count("GET", object_path)
    assert downloads >= len({key for _, key, _ in on_s3.reads}), downloads

    # cleanup removed the stored dump; no cached copy is left on any worker
    backup_cleanup = stored_xcom(dag_run, "cleanup")["backup"]
    assert backup_cleanup["stored"] == stored["url"] and backup_cleanup["errors"] == []
    _assert_no_dump_anywhere(box, s3_bucket, on_s3)


def test_a_failed_run_leaves_no_dump_in_the_bucket(dag, box, s3_bucket, on_s3, tmp_path, monkeypatch):
    # employee's PII is left unmasked: the PII gate fails the run
    monkeypatch.setenv("SCALINGO_STAGING_SYNC_RULES", str(write_rules(tmp_path, drop_employee_rule)))
    dag_run = run_reference(dag, box)
    states = task_states(dag_run)
    assert str(dag_run.state) == "failed", states
    assert states["pii_scan"] == "failed" and states["cleanup"] == "success", states
    assert stored_xcom(dag_run, "cleanup")["backup"]["stored"].startswith(s3_bucket.url)
    _assert_no_dump_anywhere(box, s3_bucket, on_s3)
