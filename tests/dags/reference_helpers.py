"""Helpers shared by the tests that run the reference DAG (tests/dags/): load it, run it against a
sandbox, read its audit report, write a variant of the shipped rules file. Imported as
``reference_helpers`` (pytest puts tests/dags/ on sys.path for the test modules in it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from airflow_helpers import every_step_ran, task_states

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
RULES = REPO / "config" / "anonymization.yaml"
CUSTOMER_SQL = "SELECT customer_id, first_name, last_name, email, phone, address FROM customer ORDER BY 1"


def load_reference_dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag("scalingo_staging_sync")


def run_reference(dag, box, **conf):
    """dag.test with this sandbox's target, every param given (dag.test keeps param values between runs
    of one DAG object); ``conf`` overrides the defaults."""
    defaults = {
        "source_app": None,
        "target_app": box.target_app,
        "confirm_target": box.target_app,
        "dry_run": False,
        "backup": "latest",
        "exclude_tables": [],
        "rules_file": None,
    }
    return dag.test(run_conf={**defaults, **conf})


def audit_report(box, dag_run=None) -> dict:
    """The audit report of ``dag_run`` (found by its run id), or without a run the latest one written."""
    audit_dir = Path(box.env["SCALINGO_STAGING_SYNC_AUDIT_DIR"])
    if dag_run is not None:
        from scalingo_staging_sync.audit.writers import safe_filename

        path = audit_dir / f"{safe_filename(dag_run.run_id)}.json"
        assert path.is_file(), f"no audit report for {dag_run.run_id}"
        return json.loads(path.read_text())
    files = sorted(audit_dir.glob("*.json"))
    assert files, "no audit report written"
    return json.loads(files[-1].read_text())


def write_rules(tmp_path: Path, mutate=None, name: str = "rules.yaml") -> Path:
    """The shipped Chinook rules file, changed by ``mutate`` (if given), written to ``tmp_path / name``."""
    rules = yaml.safe_load(RULES.read_text())
    if mutate:
        mutate(rules)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(rules))
    return path


def drop_employee_rule(rules: dict) -> None:
    """A ``write_rules`` mutation: employee's PII left unmasked, so the PII scan fails the run after the
    data is restored."""
    rules["anonymization_tables"] = [
        t for t in rules["anonymization_tables"] if t["table"] != "public.employee"
    ]


def use_scalingo_role(box, monkeypatch) -> str:
    """Staging reached with what a Scalingo addon grants: no CREATEDB, not the database owner, ALL on the
    database and CREATE on public; the app's own tables are its (the reference DAG then restores in
    place). Returns the role's name."""
    box.staging.execute("CREATE ROLE app_user LOGIN NOCREATEDB NOSUPERUSER")
    box.staging.execute(f'GRANT ALL ON DATABASE "{box.staging_db}" TO app_user')
    box.staging.execute("GRANT ALL ON SCHEMA public TO app_user", box.staging_db)
    box.staging.execute("ALTER TABLE previous_staging_marker OWNER TO app_user", box.staging_db)
    monkeypatch.setenv(
        "AIRFLOW_CONN_STAGING_DB", box.staging.airflow_conn_json(box.staging_db, user="app_user")
    )
    return "app_user"


def run_masked_to_success(dag, box) -> tuple[Any, list]:
    """A reference-DAG run (default params) that must succeed, every task included, leaving every
    production customer (rows of CUSTOMER_SQL) in staging with e-mail, names, phone and address changed
    (NULL stays NULL) and the untouched invoice_line copied as is. Returns the run and the production
    customers."""
    prod_customers = box.prod.execute(CUSTOMER_SQL, box.source_db)
    dag_run = run_reference(dag, box)
    states = task_states(dag_run)
    assert str(dag_run.state) == "success", states
    assert every_step_ran(states), states

    staged = box.staging.execute(CUSTOMER_SQL, box.staging_db)
    assert len(staged) == len(prod_customers) == 59
    prod_by_id = {row[0]: row for row in prod_customers}
    for row in staged:
        original = prod_by_id[row[0]]
        assert row[3].endswith("@example.com") and row[3] != original[3]
        for index in (1, 2, 4, 5):  # names, phone, address: changed; NULL stays NULL
            assert (row[index] is None) if original[index] is None else row[index] != original[index]
    assert box.staging.execute("SELECT count(*) FROM invoice_line", box.staging_db) == [(2240,)]
    return dag_run, prod_customers
