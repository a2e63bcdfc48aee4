"""AnonymizeTableOperator in real ``dag.test()`` runs: Chinook customer and employee masked on load
from the real dump (one mapped task per table), and a failing mapped table failing the run."""

from __future__ import annotations

import json

import pytest
from airflow_helpers import session_task_states, sync_dag

from scalingo_staging_sync.fingerprint import fingerprint

from .conftest import SALT, execute

pytestmark = pytest.mark.airflow

RULES = """
source_app: prod-app
anonymization_tables:
  - table: customer
    columns: {first_name: first_name, last_name: last_name, email: email, phone: phone, fax: null,
              address: address, city: city, postal_code: postal_code, company: company}
  - table: public.employee
    strategy: user_anonymization
"""


def _mapped_results(run, task_id):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (
            session.query(XComModel)
            .filter_by(dag_id=run.dag_id, run_id=run.run_id, task_id=task_id, key="return_value")
            .all()
        )
        return [json.loads(r.value) if isinstance(r.value, str) else r.value for r in rows]


def _dag(dag_id, rules_path, dump_path, pg_bin_dir, extra_item=None):
    from airflow.sdk import DAG, task

    from scalingo_staging_sync.operators import AnonymizeTableOperator

    with DAG(dag_id, schedule=None) as dag:

        @task
        def plan_anonymization() -> list[dict]:
            from scalingo_staging_sync.anonymize.planner import plan_anonymization as plan
            from scalingo_staging_sync.anonymize.rules import load_rules
            from scalingo_staging_sync.hooks.postgres import pg_target_from_connection
            from scalingo_staging_sync.restore.pgtools import find_pg_tools

            items = plan(
                pg_target_from_connection("staging_db"),
                load_rules(rules_path),
                dump_path=dump_path,
                tools=find_pg_tools(pg_bin_dir),
            )
            return items + ([extra_item] if extra_item else [])

        @task
        def promote() -> str:
            return "promoted"

        masked = AnonymizeTableOperator.partial(
            task_id="anonymize_table",
            postgres_conn_id="staging_db",
            dump_path=dump_path,
            pg_bin_dir=pg_bin_dir,
            retry_attempts=1,
            max_active_tis_per_dagrun=2,
        ).expand(plan=plan_anonymization())
        masked >> promote()
    return dag


@pytest.fixture
def staging_chinook(db, chinook_dump, monkeypatch):
    """Chinook's pre-data restored into a fresh database, reachable as connection staging_db."""
    from scalingo_staging_sync.restore.pgtools import find_pg_tools
    from scalingo_staging_sync.restore.runner import run_pg_restore

    pg, target = db
    run_pg_restore(chinook_dump, target, section="pre-data", tools=find_pg_tools(pg.bin_dir))
    monkeypatch.setenv("AIRFLOW_CONN_STAGING_DB", pg.airflow_conn_json(target.dbname))
    return pg, target


def test_chinook_customer_and_employee_masked_through_the_dag(
    airflow_db, staging_chinook, chinook_dump, prod_pg, chinook_prod, tmp_path
):
    pg, target = staging_chinook
    rules_path = tmp_path / "rules.yml"
    rules_path.write_text(RULES)
    dag = _dag("sss_anonymize_chinook", str(rules_path), str(chinook_dump), str(pg.bin_dir))
    sync_dag(dag, tmp_path, bundle_path=tmp_path)
    run = dag.test()
    assert str(run.state) == "success", session_task_states(run, by_map_index=True)
    results = {r["table"]: r for r in _mapped_results(run, "anonymize_table")}
    assert results["public.customer"]["rows"] == 59 and results["public.employee"]["rows"] == 8
    assert {r["mode"] for r in results.values()} == {"on_load"}
    # production values are gone, and the proof fingerprints match the production originals
    prod = dict(prod_pg.execute("SELECT customer_id, email FROM customer", chinook_prod))
    staged = dict(execute(target, "SELECT customer_id, email FROM customer"))
    assert all(staged[k] != v and staged[k].endswith("@example.com") for k, v in prod.items())
    sample = results["public.customer"]["proof"]["rows"][0]
    assert sample["values"]["email"] == fingerprint(SALT, prod[int(sample["key"][0])])
    emp = execute(target, "SELECT first_name, last_name, email, birth_date FROM employee")
    prod_emp = prod_pg.execute("SELECT first_name, last_name, email, birth_date FROM employee", chinook_prod)
    assert not {r[0] for r in emp} & {r[0] for r in prod_emp}
    assert not {r[2] for r in emp} & {r[2] for r in prod_emp}
    assert all(r[3] is None for r in emp)  # user_anonymization: birth_date -> NULL (nullable here)
    assert SALT not in json.dumps(list(results.values()))


def test_failing_mapped_table_fails_the_run(airflow_db, staging_chinook, chinook_dump, tmp_path):
    pg, target = staging_chinook
    rules_path = tmp_path / "rules.yml"
    rules_path.write_text(RULES)
    broken = {
        "table": "public.vanished",
        "schema": "public",
        "name": "vanished",
        "mode": "in_place",
        "columns": {"x": {"transformer": "null"}},
        "strategy": None,
        "condition": None,
        "query": None,
        "key_columns": [],
        "masked_columns": ["x"],
        "warnings": [],
    }
    dag = _dag("sss_anonymize_failure", str(rules_path), None, str(pg.bin_dir), extra_item=broken)
    sync_dag(dag, tmp_path, bundle_path=tmp_path)
    run = dag.test()
    states = session_task_states(run, by_map_index=True)
    assert str(run.state) == "failed"
    assert states[("anonymize_table", 2)] == "failed"
    assert states[("promote", -1)] in ("upstream_failed", "None")  # nothing is promoted


def test_the_data_load_refuses_a_planned_table_whose_masking_trigger_is_gone(
    airflow_db, staging_chinook, chinook_dump, tmp_path
):
    """Two runs on one staging: the second one replaces the database the first prepared, taking its
    masking triggers with it. The first run's data load must not load those tables unmasked: it
    refuses, names them, and loads nothing."""
    from airflow.sdk import DAG, task

    from scalingo_staging_sync.operators import (
        MaskedDataLoadOperator,
        PlanAnonymizationOperator,
        PrepareMaskingOperator,
    )

    pg, target = staging_chinook
    rules_path = tmp_path / "rules.yml"
    rules_path.write_text(RULES)
    common = {"postgres_conn_id": "staging_db", "pg_bin_dir": str(pg.bin_dir)}
    with DAG("sss_trigger_gone", schedule=None) as dag:
        plan = PlanAnonymizationOperator(
            task_id="plan", rules_file=str(rules_path), dump_path=str(chinook_dump), **common
        )
        prepare = PrepareMaskingOperator.partial(
            task_id="prepare", dump_path=str(chinook_dump), **common
        ).expand(plan=plan.output)

        @task
        def another_run_replaces_the_tables() -> None:  # its pre-data: the same tables, no trigger
            from scalingo_staging_sync.anonymize.executor import drop_masking_trigger

            with target.connect() as conn:
                drop_masking_trigger(conn, {"schema": "public", "name": "customer"})

        load = MaskedDataLoadOperator(
            task_id="load",
            dump_path=str(chinook_dump),
            plan="{{ ti.xcom_pull(task_ids='plan', key='archive_plan') }}",
            mode="in_place",
            **common,
        )
        prepare >> another_run_replaces_the_tables() >> load
    sync_dag(dag, tmp_path, bundle_path=tmp_path)
    run = dag.test()
    states = session_task_states(run, by_map_index=True)
    assert states[("load", -1)] == "failed", states
    assert execute(target, "SELECT count(*) FROM customer") == [(0,)]
    assert execute(target, "SELECT count(*) FROM track") == [(0,)]  # nothing loaded at all
