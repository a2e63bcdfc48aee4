"""The reference DAG on Chinook with a support-ticket table whose summaries name the customers ("Call
from Luís Gonçalves about his invoice"): no name detector or content pattern sees a name, the copies of
the masked customers' sampled originals do. The PII gate fails the run, naming the column and the
masked table, and the staging data that was there stays (real Airflow run, embedded PostgreSQL, the
fake Scalingo API over HTTP)."""

from __future__ import annotations

import pytest
from airflow_helpers import task_states
from reference_helpers import audit_report, run_reference

from scalingo_staging_sync.testing.postgres import load_chinook
from scalingo_staging_sync.testing.sandbox import start_sandbox

pytestmark = pytest.mark.airflow


def chinook_with_tickets(pg, dbname):
    load_chinook(pg, dbname)
    pg.execute(
        "CREATE TABLE support_ticket (ticket_id int PRIMARY KEY, summary text NOT NULL);"
        "INSERT INTO support_ticket SELECT customer_id, 'Call from ' || first_name || ' ' || last_name"
        " || ' about invoice ' || (customer_id * 7) FROM customer WHERE customer_id % 3 = 0",
        dbname,
    )


def test_names_of_masked_customers_copied_into_tickets_fail_the_gate(dag, tmp_path_factory, monkeypatch):
    box = start_sandbox(tmp_path_factory.mktemp("copies"), load_dataset=chinook_with_tickets)
    for key, value in box.env.items():
        monkeypatch.setenv(key, value)
    try:
        dag_run = run_reference(dag, box, source_app=box.source_app)
        states = task_states(dag_run)
        assert str(dag_run.state) == "failed", states
        assert states["pii_scan"] == "failed" and states["promote"] == "upstream_failed", states
        report = audit_report(box, dag_run)
        assert report["pii_scan"]["unmasked"] == ["public.support_ticket.summary"], report["pii_scan"]
        finding = next(
            f for f in report["pii_scan"]["findings"] if f["column"] == "public.support_ticket.summary"
        )
        assert "names or e-mail addresses of the people of public.customer" in finding["reason"], finding
        marker = box.staging.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'previous_staging_marker'",
            box.staging_db,
        )
        assert marker == [(1,)]  # the staging data that was there is kept
    finally:
        box.stop()
