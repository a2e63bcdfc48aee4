"""A complete local stand-in for production + staging: for the demo, end-to-end tests and benchmarks.

``start_sandbox()`` starts an embedded PostgreSQL 16 (``prod_version``) "production" loaded with a dataset (Chinook by
default), dumps it with ``pg_dump -Fc``, serves the dump as a Scalingo backup through
:class:`~scalingo_staging_sync.testing.fake_scalingo.FakeScalingoAPI`, starts an embedded staging
PostgreSQL holding a previous staging copy, and returns the environment (Airflow connections, salt
variable, rules file, pg tools) that the reference DAG needs::

    with start_sandbox() as box:
        os.environ.update(box.env)
        dag.test(run_conf={"confirm_target": box.target_app})
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from scalingo_staging_sync.testing.postgres import EmbeddedPostgres, load_chinook, start_embedded_postgres

SOURCE_APP = "chinook-production"
TARGET_APP = "chinook-staging"
STAGING_DB = "staging"


#: the Chinook rules shipped with the package: a copy of the checkout's config/anonymization.yaml (a test
#: keeps them identical), for a sandbox started from an installed package
PACKAGED_RULES_FILE = Path(__file__).resolve().parent / "data" / "chinook.rules.yaml"


def default_rules_file() -> Path:
    """The Chinook rules of the repository checkout (config/anonymization.yaml), else the package's copy."""
    here = Path(__file__).resolve()
    for parent in (Path.cwd(), *here.parents):
        candidate = parent / "config" / "anonymization.yaml"
        if candidate.is_file():
            return candidate
    return PACKAGED_RULES_FILE


@dataclass
class Sandbox:
    base_dir: Path
    prod: EmbeddedPostgres
    staging: EmbeddedPostgres
    fake: object
    dump_path: Path
    rules_file: Path
    source_app: str = SOURCE_APP
    target_app: str = TARGET_APP
    staging_db: str = STAGING_DB
    source_db: str = "chinook"
    env: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        for stop in (self.fake.stop, self.staging.stop, self.prod.stop):
            try:
                stop()
            except Exception:
                pass
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _seed_previous_staging(staging: EmbeddedPostgres, dbname: str) -> None:
    staging.create_database(dbname)
    staging.execute(
        "CREATE TABLE previous_staging_marker (note text); "
        "INSERT INTO previous_staging_marker VALUES ('the staging copy before this run')",
        dbname,
    )


def start_sandbox(
    base_dir: str | Path | None = None,
    *,
    staging_version: int = 16,
    load_dataset: Callable[[EmbeddedPostgres, str], object] | None = None,
    source_db: str = "chinook",
    rules_file: str | Path | None = None,
    extra_env: dict[str, str] | None = None,
    prod_version: int = 16,
    dump_args: list[str] | None = None,
) -> Sandbox:
    """``prod_version``: the production server's major version (16 or 18), whose own ``pg_dump`` makes
    the backup; ``dump_args``: more ``pg_dump`` arguments (e.g. ``["--statistics"]`` with 18). The
    client tools of the run are the staging server's: use ``staging_version >= prod_version``."""
    from scalingo_staging_sync.testing.fake_scalingo import FakeScalingoAPI

    if staging_version < prod_version:
        raise ValueError(
            f"staging_version {staging_version} < prod_version {prod_version}: the run's pg_restore (the "
            "staging server's) cannot read a newer archive"
        )

    base = Path(base_dir) if base_dir else Path(tempfile.mkdtemp(prefix="sss-sandbox-"))
    base.mkdir(parents=True, exist_ok=True)
    prod = start_embedded_postgres(prod_version, base)
    staging = start_embedded_postgres(staging_version, base)
    (load_dataset or load_chinook)(prod, source_db)
    dump_path = prod.pg_dump(source_db, base / f"{source_db}.pgsql", extra=list(dump_args or []))
    _seed_previous_staging(staging, STAGING_DB)

    fake = FakeScalingoAPI(workdir=base / "fake-scalingo").start()
    fake.add_app(TARGET_APP)
    # the target app's own PostgreSQL addon is the staging database (the gate checks the binding)
    fake.add_addon(TARGET_APP, host=staging.host, port=staging.port, database=STAGING_DB)
    fake.add_addon(SOURCE_APP, dump_path=dump_path, version=f"{prod.version}.0.0-1")
    fake.add_backup(SOURCE_APP, dump_path)

    rules = Path(rules_file) if rules_file else default_rules_file()
    env = {
        "AIRFLOW_CONN_SCALINGO_DEFAULT": fake.airflow_conn_json(),
        "AIRFLOW_CONN_STAGING_DB": staging.airflow_conn_json(STAGING_DB),
        # urlsafe, not hex: 64 hex digits miss one of the 16 a quarter of the time (salt rule: >= 16 distinct)
        "AIRFLOW_VAR_SCALINGO_STAGING_SYNC_SALT": secrets.token_urlsafe(48),
        "SCALINGO_STAGING_SYNC_RULES": str(rules),
        "SCALINGO_STAGING_SYNC_PG_BIN": str(staging.bin_dir),
        "SCALINGO_STAGING_SYNC_DOWNLOAD_DIR": str(base / "downloads"),
        "SCALINGO_STAGING_SYNC_AUDIT_DIR": str(base / "audit"),
        "SCALINGO_STAGING_SYNC_TARGET_APP": TARGET_APP,
        "APP": TARGET_APP,  # as a Scalingo container sets it; no longer read as the target app
        **(extra_env or {}),
    }
    return Sandbox(
        base_dir=base,
        prod=prod,
        staging=staging,
        fake=fake,
        dump_path=dump_path,
        rules_file=rules,
        source_db=source_db,
        env=env,
    )


def airflow_env(home: str | Path, dags_folder: str | Path) -> dict[str, str]:
    """Environment for an isolated Airflow (SQLite metadata DB under ``home``)."""
    home = Path(home)
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
    }


def find_dags_folder() -> Path:
    """The repository's dags/ (next to config/), for the demo and benchmarks run from a checkout; else
    the package's example_dags folder (the same two-line DAG file)."""
    for start in (Path.cwd(), Path(__file__).resolve()):
        for parent in (start, *start.parents):
            if (parent / "dags" / "scalingo_staging_sync.py").is_file():
                return parent / "dags"
    from scalingo_staging_sync.example_dags import FOLDER

    return FOLDER


def merged_environ(*parts: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    for part in parts:
        env.update(part)
    return env
