"""The reference DAG on the schema zoo (tests/e2e/schema_zoo.py): a production database using the
PostgreSQL features real applications use (domains, enums, arrays, jsonb, generated columns, identity,
composite and deferrable foreign keys, list/hash partitions, RLS, UNLOGGED, TOAST, triggers, views...).
The run succeeds, no original value is left anywhere in the staging cluster, row counts match, foreign
keys and unique keys hold and the generated columns describe the masked values. Real Airflow runs
(dag.test), real embedded PostgreSQL (production 16, staging 16 or 18), the fake Scalingo API over HTTP."""

from __future__ import annotations

import pytest
from airflow_helpers import every_step_ran, task_states
from e2e.hard_dataset import find_originals
from e2e.schema_zoo import (
    ACCOUNTS,
    MOTTOS,
    RULES_YAML,
    load_schema_zoo,
    row_counts,
    sensitive_values,
)
from reference_helpers import run_reference

from scalingo_staging_sync.testing.sandbox import start_sandbox

pytestmark = pytest.mark.airflow


def zoo_box(tmp_path_factory, monkeypatch, *, rules_text: str = RULES_YAML, **sandbox_kwargs):
    rules = tmp_path_factory.mktemp("rules") / "zoo.yaml"
    rules.write_text(rules_text)
    box = start_sandbox(
        tmp_path_factory.mktemp("sandbox"),
        load_dataset=load_schema_zoo,
        source_db="zoo",
        rules_file=rules,
        **sandbox_kwargs,
    )
    for key, value in box.env.items():
        monkeypatch.setenv(key, value)
    return box


@pytest.mark.parametrize("staging_version", [16, 18], ids=["prod16-staging16", "prod16-staging18"])
def test_reference_dag_on_the_schema_zoo(dag, tmp_path_factory, monkeypatch, staging_version):
    box = zoo_box(tmp_path_factory, monkeypatch, staging_version=staging_version)
    try:
        assert find_originals(box.prod, sensitive_values()), "the finder must see production's originals"
        dag_run = run_reference(dag, box, source_app=box.source_app)
        st = task_states(dag_run, prefer_unsuccessful=True)
        assert str(dag_run.state) == "success", st
        assert every_step_ran(st), st

        hits = find_originals(box.staging, sensitive_values())
        assert hits == [], hits

        db = box.staging_db

        def q(query):
            return box.staging.execute(query, db)

        for table, count in row_counts().items():
            assert q(f"SELECT count(*) FROM {table}") == [(count,)], table  # noqa: S608 - test constants
        # every foreign key, CHECK and key is there and validated (PG 18 also lists NOT NULL: left out),
        # every unique index valid
        prod_cons = box.prod.execute(
            "SELECT conname, contype, convalidated FROM pg_constraint c JOIN pg_namespace n "
            "ON n.oid = c.connamespace WHERE n.nspname IN ('public', 'Back Office') AND contype <> 'n' ORDER BY 1",
            box.source_db,
        )
        staged_cons = q(
            "SELECT conname, contype, convalidated FROM pg_constraint c JOIN pg_namespace n "
            "ON n.oid = c.connamespace WHERE n.nspname IN ('public', 'Back Office') AND contype <> 'n' ORDER BY 1"
        )
        assert staged_cons == prod_cons
        assert q("SELECT count(*) FROM pg_index WHERE NOT indisvalid") == [(0,)]
        # the FK to the masked unique e-mail lines up (both sides masked with the same transformer)
        assert q("SELECT count(*) FROM newsletter_subscriptions n JOIN accounts a USING (email)") == [(3,)]
        # generated columns describe the masked names
        rows = q("SELECT first_name, last_name, full_name, search::text, email, login_email FROM accounts")
        originals = {a[0] for a in ACCOUNTS}
        for first, last, full, search, email, login in rows:
            assert first not in originals and full == f"{first} {last}"
            assert email.endswith("@example.com") and login.endswith("@example.com")
            assert first.lower() in search
        # unmasked values are copied byte for byte (tabs, newlines, backslashes, non-ASCII)
        assert sorted(r[0] for r in q("SELECT motto FROM accounts")) == sorted(MOTTOS)
        # the RLS policy, the user trigger, the view and the refreshed materialized view are there
        assert q(
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = 'tenant_docs'"
        ) == [(True, True)]
        assert q("SELECT count(*) FROM pg_trigger WHERE tgname = 'crm_contacts_lower'") == [(1,)]
        assert q("SELECT count(*) FROM account_directory d JOIN accounts a USING (id, email)") == [(3,)]
        assert q("SELECT count(*) FROM account_emails m JOIN accounts a USING (id, email)") == [(3,)]
        assert q("SELECT relpersistence FROM pg_class WHERE relname = 'login_sessions'") == [("u",)]
        # sequences and identities continue after production's values
        assert q("SELECT max(account_no) FROM accounts") == [(3,)]
        q("INSERT INTO orgs (name) VALUES ('new org')")
        assert q("SELECT max(id) FROM orgs") == [(3,)]
        # no masking trigger or function is left behind
        assert q("SELECT count(*) FROM pg_proc WHERE proname LIKE '\\_sss\\_mask\\_%'") == [(0,)]
    finally:
        box.stop()


def test_a_foreign_key_masked_on_one_side_is_refused_before_staging_is_touched(
    dag, tmp_path_factory, monkeypatch, capfd
):
    """accounts.email masked, newsletter_subscriptions.email (which references it) not: the plan task
    refuses the run, naming both columns and the fix; staging is never touched."""
    import yaml

    rules = yaml.safe_load(RULES_YAML)
    rules["anonymization_tables"] = [
        r for r in rules["anonymization_tables"] if r["table"] != "newsletter_subscriptions"
    ]
    box = zoo_box(tmp_path_factory, monkeypatch, rules_text=yaml.safe_dump(rules, allow_unicode=True))
    try:
        databases = box.staging.execute("SELECT datname FROM pg_database ORDER BY 1")
        dag_run = run_reference(dag, box, source_app=box.source_app)
        st = task_states(dag_run, prefer_unsuccessful=True)
        assert str(dag_run.state) == "failed", st
        assert st["plan_anonymization"] == "failed", st
        assert st["promote"] == "upstream_failed", st
        for task in ("dry_run_stop", "restore_schema", "load_data", "promote"):
            assert st[task] == "upstream_failed", (task, st)
        log = capfd.readouterr()
        text = log.out + log.err
        assert "PlanError" in text and "anonymization_tables[0].columns.email: foreign key" in text
        assert (
            "public.newsletter_subscriptions.email is not masked but public.accounts.email is masked" in text
        )
        assert box.staging.execute("SELECT datname FROM pg_database ORDER BY 1") == databases
        assert box.staging.execute("SELECT count(*) FROM previous_staging_marker", box.staging_db) == [(1,)]
    finally:
        box.stop()


def test_a_domain_check_the_masked_value_fails_is_refused_before_staging_is_touched(
    dag, tmp_path_factory, monkeypatch, capfd
):
    """ "Back Office"."Staff Members"."E-mail" is a staff_email (CHECK VALUE LIKE '%@zoo-staff.test'):
    masked with plain ``email`` (u...@example.com) its rows would fail to load. The plan task refuses the
    run, naming the domain, the column and the fix; staging is never touched."""
    rules_text = RULES_YAML.replace("E-mail: {transformer: email, domain: zoo-staff.test}", "E-mail: email")
    assert rules_text != RULES_YAML
    box = zoo_box(tmp_path_factory, monkeypatch, rules_text=rules_text)
    try:
        databases = box.staging.execute("SELECT datname FROM pg_database ORDER BY 1")
        dag_run = run_reference(dag, box, source_app=box.source_app)
        st = task_states(dag_run, prefer_unsuccessful=True)
        assert str(dag_run.state) == "failed", st
        assert st["plan_anonymization"] == "failed", st
        for task in ("dry_run_stop", "restore_schema", "load_data", "promote"):
            assert st[task] == "upstream_failed", (task, st)
        log = capfd.readouterr()
        text = log.out + log.err
        assert (
            "anonymization_tables[3].columns.E-mail: Back Office.Staff Members.E-mail has domain "
            "public.staff_email, whose CHECK constraint staff_email_check" in text
        )
        assert "(E-mail: {transformer: email, domain: <domain>}) or use a fixed value" in text
        assert box.staging.execute("SELECT datname FROM pg_database ORDER BY 1") == databases
        assert box.staging.execute("SELECT count(*) FROM previous_staging_marker", box.staging_db) == [(1,)]
    finally:
        box.stop()
