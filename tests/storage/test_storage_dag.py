"""The storage API inside real Airflow runs (``dag.test()``): the backup stored on S3 (moto) through an
Airflow ``aws`` connection, each consuming task materialising it into its own cache directory (as
separate workers would) and restoring from it with ``pg_restore --jobs``, and a teardown that removes
the remote dump and the caches, also after a failed run."""

from __future__ import annotations

import subprocess

import pytest
from airflow_helpers import session_task_states, sync_dag


def _storage_dag(dag_id, *, dump, bucket, pg, workers, fail_restore=False):
    from airflow.sdk import DAG, get_current_context, task

    @task
    def fetch_backup() -> dict:
        from scalingo_staging_sync.storage import store_archive

        run_id = get_current_context()["run_id"]
        return store_archive(dump, f"{bucket.url}/backups", conn_id=bucket.conn_id, run_key=run_id).to_dict()

    @task
    def list_toc(stored: dict) -> dict:
        from scalingo_staging_sync.storage import materialize

        path = materialize(stored, workers[0])
        out = subprocess.run(
            [str(pg.bin_dir / "pg_restore"), "--list", str(path)], check=True, capture_output=True, text=True
        ).stdout
        return {"path": str(path), "entries": sum(1 for line in out.splitlines() if line and line[0] != ";")}

    @task
    def restore(stored: dict) -> dict:
        from scalingo_staging_sync.storage import materialize

        path = materialize(stored, workers[1])
        if fail_restore:
            raise RuntimeError("restore failed on purpose")
        pg.create_database("storage_dag_target")
        subprocess.run(
            [
                str(pg.bin_dir / "pg_restore"),
                "--no-owner",
                "--jobs",
                "2",
                "-d",
                pg.conninfo("storage_dag_target"),
                str(path),
            ],
            check=True,
            capture_output=True,
        )
        return {"path": str(path)}

    @task
    def cleanup(stored: dict) -> None:
        from scalingo_staging_sync.storage import remove_local_caches, remove_stored

        remove_stored(stored)
        for cache in workers:  # in production each worker prunes its own; here they share the machine
            remove_local_caches(get_current_context()["run_id"], cache)

    with DAG(dag_id, schedule=None, catchup=False) as dag:
        stored = fetch_backup()
        done = [list_toc(stored), restore(stored)]
        clean = cleanup(stored)
        done >> clean.as_teardown(setups=stored)
    return dag


@pytest.mark.parametrize("fail_restore", [False, True], ids=["success", "failed-run"])
def test_reference_flow_on_s3_without_a_shared_disk(
    airflow_db, s3_bucket, chinook_dump, prod_pg, staging_pg16, tmp_path, fail_restore
):
    workers = [tmp_path / "worker-a-cache", tmp_path / "worker-b-cache"]
    dag = _storage_dag(
        f"storage_flow_{'fail' if fail_restore else 'ok'}",
        dump=str(chinook_dump),
        bucket=s3_bucket,
        pg=staging_pg16,
        workers=workers,
        fail_restore=fail_restore,
    )
    sync_dag(dag, tmp_path, bundle_path=tmp_path)
    run = dag.test()
    states = session_task_states(run)
    assert states["cleanup"] == "success"
    assert s3_bucket.keys() == []  # no dump left in the bucket, successful run or not
    assert s3_bucket.server.multipart_uploads(s3_bucket.name) == []
    for cache in workers:
        assert not any(cache.rglob("*.pgsql"))
    # the consuming tasks read the dump from the bucket, not from a shared disk
    assert any(r.method == "GET" and r.path.endswith("/chinook.pgsql") for r in s3_bucket.server.requests)
    if fail_restore:
        assert states["restore"] == "failed" and str(run.state) == "failed"
        return
    assert states == {
        "fetch_backup": "success",
        "list_toc": "success",
        "restore": "success",
        "cleanup": "success",
    }
    rows = staging_pg16.execute("SELECT count(*) FROM customer", "storage_dag_target")[0][0]
    assert rows == prod_pg.execute("SELECT count(*) FROM customer", "chinook")[0][0] > 0
