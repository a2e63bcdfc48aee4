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

import json
from pathlib import Path

import pytest
import yaml

from scalingo_staging_sync.testing.sandbox import start_sandbox

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
RULES = REPO / "config" / "anonymization.yaml"
CUSTOMER_SQL = "SELECT customer_id, first_name, last_name, email, phone, address FROM customer ORDER BY 1"
DUMP_CONSUMERS = {"restore_schema", "plan_anonymization", "prepare_masking", "load_data", "restore_post_data"}

pytestmark = pytest.mark.airflow


@pytest.fixture(scope="module")
def dag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag("scalingo_staging_sync")


@pytest.fixture
def box(tmp_path_factory, monkeypatch):
    sandbox = start_sandbox(tmp_path_factory.mktemp("sandbox"))
    for key, value in sandbox.env.items():
        monkeypatch.setenv(key, value)
    yield sandbox
    sandbox.stop()


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


def _run(dag, box, **conf):
    defaults = {"target_app": box.target_app, "confirm_target": box.target_app, "dry_run": False}
    defaults.update({"backup": "latest", "exclude_tables": [], "source_app": None, "rules_file": None})
    return dag.test(run_conf={**defaults, **conf})


def _states(dag_run) -> dict[str, str]:
    states: dict[str, str] = {}
    for ti in dag_run.get_task_instances():
        states.setdefault(ti.task_id, str(ti.state.value if hasattr(ti.state, "value") else ti.state))
    return states


def _xcom(run, task_id: str, key: str = "return_value"):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(dag_id=run.dag_id, run_id=run.run_id, task_id=task_id, key=key)
            .one_or_none()
        )
        if row is None:
            return None
        return json.loads(row.value) if isinstance(row.value, str) else row.value


def _audit(box) -> dict:
    files = sorted(Path(box.env["SCALINGO_STAGING_SYNC_AUDIT_DIR"]).glob("*.json"))
    assert files, "no audit report written"
    return json.loads(files[-1].read_text())


def _assert_no_dump_anywhere(box, s3_bucket, workers: Workers) -> None:
    assert s3_bucket.keys() == [], f"objects left in the bucket: {s3_bucket.keys()}"
    assert s3_bucket.server.multipart_uploads(s3_bucket.name) == []
    assert workers.leftovers() == [], f"cached copies left on the workers: {workers.leftovers()}"
    assert not (Path(box.env["SCALINGO_STAGING_SYNC_DOWNLOAD_DIR"]).exists()), "local download dir was used"


def test_reference_dag_runs_with_its_backup_on_s3_and_no_shared_disk(dag, box, s3_bucket, on_s3):
    prod_customers = box.prod.execute(CUSTOMER_SQL, box.source_db)
    dag_run = _run(dag, box)
    states = _states(dag_run)
    assert str(dag_run.state) == "success", states
    assert all(s == "success" for s in states.values()), states

    # every row masked, as in the local-disk run (tests/dags/test_reference_dag.py)
    staged = box.staging.execute(CUSTOMER_SQL, box.staging_db)
    assert len(staged) == len(prod_customers) == 59
    prod_by_id = {row[0]: row for row in prod_customers}
    for row in staged:
        original = prod_by_id[row[0]]
        assert row[3].endswith("@example.com") and row[3] != original[3]
        for index in (1, 2, 4, 5):
            assert (row[index] is None) if original[index] is None else row[index] != original[index]
    assert box.staging.execute("SELECT count(*) FROM invoice_line", box.staging_db) == [(2240,)]

    # the backup went to the bucket, verified, and the XCom carries the stored reference
    backup = _xcom(dag_run, "fetch_backup")
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
    backup_cleanup = _xcom(dag_run, "cleanup")["backup"]
    assert backup_cleanup["stored"] == stored["url"] and backup_cleanup["errors"] == []
    _assert_no_dump_anywhere(box, s3_bucket, on_s3)


def _write_rules(tmp_path: Path, mutate) -> Path:
    rules = yaml.safe_load(RULES.read_text())
    mutate(rules)
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    return path


def test_a_failed_run_leaves_no_dump_in_the_bucket(dag, box, s3_bucket, on_s3, tmp_path, monkeypatch):
    def drop_employee(rules):  # employee's PII is left unmasked: the PII gate fails the run
        rules["anonymization_tables"] = [
            t for t in rules["anonymization_tables"] if t["table"] != "public.employee"
        ]

    monkeypatch.setenv("SCALINGO_STAGING_SYNC_RULES", str(_write_rules(tmp_path, drop_employee)))
    dag_run = _run(dag, box)
    states = _states(dag_run)
    assert str(dag_run.state) == "failed", states
    assert states["pii_scan"] == "failed" and states["cleanup"] == "success", states
    assert _xcom(dag_run, "cleanup")["backup"]["stored"].startswith(s3_bucket.url)
    _assert_no_dump_anywhere(box, s3_bucket, on_s3)
