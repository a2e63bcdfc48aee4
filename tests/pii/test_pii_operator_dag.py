"""PiiScanOperator and ResidualVerificationOperator in real ``dag.test()`` runs."""

from __future__ import annotations

import pytest
from airflow_helpers import session_task_states, stored_xcom, sync_dag
from pii_helpers import CUSTOMER_MASKED

from scalingo_staging_sync.fingerprint import ALGORITHM, fingerprint
from scalingo_staging_sync.testing.postgres import load_chinook

pytestmark = pytest.mark.airflow
SALT = "dag-test-salt-0123456789"


@pytest.fixture(scope="module")
def chinook_gate(staging_pg16):
    db = load_chinook(staging_pg16, "chinook_gate")
    staging_pg16.execute(
        "UPDATE customer SET first_name = 'Demo', last_name = 'User', email = 'u' || customer_id || '@example.com', "
        "phone = NULL, fax = NULL, company = NULL, address = NULL, city = NULL, country = NULL, postal_code = NULL",
        db,
    )
    return db


def _gate_dag(dag_id, allow):
    from airflow.sdk import DAG

    from scalingo_staging_sync.operators import PiiScanOperator

    with DAG(dag_id, schedule=None) as dag:
        PiiScanOperator(
            task_id="pii_scan",
            postgres_conn_id="staging_gate",
            database="{{ params.db }}",
            masked_columns=CUSTOMER_MASKED,
            allow=allow,
            params={"db": "chinook_gate"},
        )
    return dag


def test_gate_fails_in_dag_and_names_employee_columns(
    airflow_db, staging_pg16, chinook_gate, tmp_path, monkeypatch
):
    monkeypatch.setenv("AIRFLOW_CONN_STAGING_GATE", staging_pg16.airflow_conn_json("postgres"))
    dag = _gate_dag("sss_pii_gate_fail", allow=[])
    sync_dag(dag, tmp_path, bundle_path=tmp_path)
    run = dag.test()
    assert str(run.state) == "failed"
    assert session_task_states(run)["pii_scan"] == "failed"
    report = stored_xcom(run, "pii_scan", key="pii_scan")  # findings reach XCom even though the task failed
    assert report and not report["passed"]
    assert {"public.employee.email", "public.employee.first_name", "public.employee.birth_date"} <= set(
        report["unmasked"]
    )
    assert not any(c.startswith("public.customer.") for c in report["unmasked"])


def test_gate_passes_with_allow_list(airflow_db, staging_pg16, chinook_gate, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_STAGING_GATE", staging_pg16.airflow_conn_json("postgres"))
    allow = ["public.employee.*", {"column": "public.invoice.*", "reason": "billing addresses are synthetic"}]
    dag = _gate_dag("sss_pii_gate_pass", allow=allow)
    sync_dag(dag, tmp_path, bundle_path=tmp_path)
    run = dag.test()
    assert str(run.state) == "success"
    report = stored_xcom(run, "pii_scan")
    assert report["passed"] and report["unmasked"] == []
    assert report["counts"]["allowed"] > 0 and report["counts"]["masked"] >= 1


def test_verification_operator_in_dag(airflow_db, staging_pg16, tmp_path, monkeypatch):
    from airflow.sdk import DAG

    from scalingo_staging_sync.operators.verify import ResidualVerificationOperator

    db = load_chinook(staging_pg16, "chinook_verify_dag")
    rows = staging_pg16.execute("SELECT employee_id::text, email FROM employee", db)
    proof = {
        "algorithm": ALGORITHM,
        "key_columns": ["employee_id"],
        "rows": [{"key": [k], "values": {"email": fingerprint(SALT, e)}} for k, e in rows],
    }
    staging_pg16.execute(
        "UPDATE employee SET email = 'e' || employee_id || '@example.com' WHERE employee_id <= 4", db
    )
    monkeypatch.setenv("AIRFLOW_CONN_STAGING_VERIFY", staging_pg16.airflow_conn_json(db))
    monkeypatch.setenv("AIRFLOW_VAR_SCALINGO_STAGING_SYNC_SALT", SALT)
    result = {
        "table": "public.employee",
        "mode": "in_place",
        "rows": 4,
        "masked_columns": ["email"],
        "proof": proof,
    }
    with DAG("sss_verify_dag", schedule=None) as dag:
        ResidualVerificationOperator(
            task_id="verify_anonymization", postgres_conn_id="staging_verify", anonymize_results=[result]
        )
    sync_dag(dag, tmp_path, bundle_path=tmp_path)
    run = dag.test()
    assert str(run.state) == "failed"
    report = stored_xcom(run, "verify_anonymization", key="verification")
    assert report["failures"] == [
        "public.employee: column public.employee.email still holds 4 of 8 sampled original values"
    ]
