"""PII scanner against real PostgreSQL: Chinook with customers masked and employees missed."""

from __future__ import annotations

import json

import pytest
from pii_helpers import CUSTOMER_MASKED

from scalingo_staging_sync.pii.scanner import (
    TableInfo,
    UnmaskedPiiError,
    enforce,
    masked_columns_from_plan,
    sample_plan,
    scan_database,
)
from scalingo_staging_sync.testing.postgres import load_chinook

RAW_EMAIL = "jane.roe.secret@gmail.com"


@pytest.fixture(scope="module")
def chinook_scan_db(staging_pg16):
    """Chinook on the staging server, customers masked by hand, plus a few extra PII holders."""
    db = load_chinook(staging_pg16, "chinook_pii")
    staging_pg16.execute(
        """
        UPDATE customer SET first_name = 'Demo', last_name = 'User' || customer_id,
            address = '1 rue de la Paix', city = 'Paris', country = 'France', postal_code = '75000',
            phone = NULL, fax = NULL, email = 'user' || customer_id || '@example.com';
        CREATE TABLE public.event_log (id int PRIMARY KEY, payload jsonb, note text);
        INSERT INTO public.event_log
          SELECT g, jsonb_build_object('kind', 'signup', 'who', jsonb_build_object('contact', 'jane.roe.secret@gmail.com')),
                 'nothing to see'
          FROM generate_series(1, 40) g;
        CREATE SCHEMA crm;
        CREATE TABLE crm."Leads" (id int, "contactInfo" text, status text);
        INSERT INTO crm."Leads" SELECT g, 'call +33 6 12 34 56 ' || lpad((g % 100)::text, 2, '0'), 'new'
          FROM generate_series(1, 25) g;
        CREATE EXTENSION IF NOT EXISTS vector;
        CREATE TABLE public.ext_owned (email text);
        INSERT INTO public.ext_owned VALUES ('owned.by.extension@gmail.com');
        ALTER EXTENSION vector ADD TABLE public.ext_owned;
        """,
        db,
    )
    return db


def _scan(pg, db, **kwargs):
    with pg.connect(db) as conn:
        return scan_database(conn, database=db, **kwargs)


def test_gate_fails_on_missed_employee_table(staging_pg16, chinook_scan_db):
    report = _scan(staging_pg16, chinook_scan_db, masked_columns=CUSTOMER_MASKED)
    unmasked = {f.qualified_name for f in report.unmasked}
    for column in ("first_name", "last_name", "birth_date", "address", "phone", "email", "postal_code"):
        assert f"public.employee.{column}" in unmasked
    # every customer column the rules mask is reported masked, not unmasked
    assert not any(name.startswith("public.customer.") for name in unmasked)
    statuses = {f.qualified_name: f.status for f in report.findings}
    assert statuses["public.customer.email"] == "masked"
    # content detection confirms the employee emails on the sample
    employee_email = next(f for f in report.findings if f.qualified_name == "public.employee.email")
    assert employee_email.severity == "high"
    assert employee_email.sample_count == employee_email.sampled_values == 8
    assert {"kind", "detector"} <= set(employee_email.reasons[0])
    with pytest.raises(UnmaskedPiiError) as excinfo:
        enforce(report, "fail")
    message = str(excinfo.value)
    for column in ("public.employee.first_name", "public.employee.email", "public.employee.birth_date"):
        assert column in message
    enforce(report, "warn")  # does not raise


def test_innocent_columns_and_scope(staging_pg16, chinook_scan_db):
    report = _scan(staging_pg16, chinook_scan_db, masked_columns=CUSTOMER_MASKED)
    names = {f.qualified_name for f in report.findings}
    assert "public.artist.name" not in names and "public.track.composer" not in names
    assert "public.album.title" not in names
    # the jsonb column with an innocent name is caught by content
    payload = next(f for f in report.findings if f.qualified_name == "public.event_log.payload")
    assert [r["detector"] for r in payload.reasons] == ["email"]
    assert payload.sample_count == 40
    assert "public.event_log.note" not in names
    # a table in another schema, camelCase names
    lead = next(f for f in report.findings if f.qualified_name == "crm.Leads.contactInfo")
    assert {r["detector"] for r in lead.reasons} >= {"phone_fr"}
    assert "crm" in report.schemas
    # extension-owned table skipped
    assert not any(n.startswith("public.ext_owned") for n in names)
    # never a raw value in the report
    assert RAW_EMAIL not in json.dumps(report.to_dict())
    assert "owned.by.extension" not in json.dumps(report.to_dict())


def test_allow_list_passes(staging_pg16, chinook_scan_db):
    allow = [
        "public.employee.*",
        "public.invoice.*",
        {"column": "public.event_log.payload", "reason": "test events, synthetic"},
        {"column": "crm.Leads.contactInfo", "reason": "fake leads"},
    ]
    report = _scan(staging_pg16, chinook_scan_db, masked_columns=CUSTOMER_MASKED, allow=allow)
    assert report.unmasked == [], [f.qualified_name for f in report.unmasked]
    assert report.passed
    payload = next(f for f in report.findings if f.qualified_name == "public.event_log.payload")
    assert payload.status == "allowed" and payload.allow_reason == "test events, synthetic"
    enforce(report, "fail")


def test_schemas_filter_and_unknown_masked(staging_pg16, chinook_scan_db):
    report = _scan(staging_pg16, chinook_scan_db, schemas=["crm"], masked_columns=["crm.Leads.gone"])
    assert report.schemas == ["crm"] and report.tables_scanned == 1
    assert report.unknown_masked == ["crm.Leads.gone"]


def test_masked_columns_from_plan():
    plan = [
        {
            "table": "public.customer",
            "schema": "public",
            "name": "customer",
            "masked_columns": ["email", "phone"],
        },
        {"table": "crm.leads", "schema": "crm", "name": "leads", "masked_columns": ["contact"]},
    ]
    assert masked_columns_from_plan(plan) == [
        "public.customer.email",
        "public.customer.phone",
        "crm.leads.contact",
    ]


def test_sampling_is_bounded_on_a_large_table(staging_pg16):
    db = "pii_big"
    staging_pg16.create_database(db)
    staging_pg16.execute(
        """
        CREATE TABLE big (id int, blob text, contact text);
        INSERT INTO big SELECT g, repeat('x', 50), 'person' || g || '@mail.example.org'
          FROM generate_series(1, 60000) g;
        """,
        db,
    )
    with staging_pg16.connect(db) as conn:
        report = scan_database(conn, database=db, sample_rows=500)
    assert report.rows_sampled == 500
    contact = next(f for f in report.findings if f.column == "contact")
    assert contact.sample_count == 500 and contact.status == "unmasked"
    # after ANALYZE the estimate drives TABLESAMPLE
    staging_pg16.execute("ANALYZE big", db)
    with staging_pg16.connect(db) as conn:
        report = scan_database(conn, database=db, sample_rows=500)
    assert report.rows_sampled == 500


def test_sample_plan():
    small = TableInfo("public", "t", 1, "r", est_rows=100, pages=3)
    assert sample_plan(small, 1000) is None
    big = TableInfo("public", "t", 1, "r", est_rows=1_000_000, pages=10_000)
    assert sample_plan(big, 1000) == pytest.approx(0.3)
    unanalyzed = TableInfo("public", "t", 1, "r", est_rows=-1, pages=10_000)
    assert 0 < sample_plan(unanalyzed, 1000) < 50


def test_the_staging_databases_own_timeouts_do_not_bound_the_scan(staging_pg16):
    """The staging role or database may set a lock_timeout (or statement_timeout) for its application;
    the scan of a sync turns them off in its session, as the load and verification do. Before, a table
    still locked for a moment by another session (autovacuum truncating it, a seed, an admin) failed
    the scan with ``canceling statement due to lock timeout``."""
    import threading

    import psycopg
    from psycopg import sql

    from scalingo_staging_sync.pgconn import PgTarget
    from scalingo_staging_sync.pii.scanner import scan_target

    db = "pii_timeouts"
    staging_pg16.create_database(db)
    staging_pg16.execute(
        "CREATE TABLE contacts (id int, contact text);"
        "INSERT INTO contacts SELECT g, 'person' || g || '@mail.example.org' FROM generate_series(1, 50) g",
        db,
    )
    with staging_pg16.connect(db) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET lock_timeout = '50ms'").format(sql.Identifier(db)))
    target = PgTarget(host=staging_pg16.host, port=staging_pg16.port, user=staging_pg16.user, dbname=db)
    holder = psycopg.connect(
        host=staging_pg16.host, port=staging_pg16.port, user=staging_pg16.user, dbname=db
    )
    try:
        holder.execute("LOCK TABLE contacts IN ACCESS EXCLUSIVE MODE")  # held until the commit below
        with target.connect(autocommit=True) as conn, pytest.raises(psycopg.errors.LockNotAvailable):
            conn.execute("SELECT contact FROM contacts LIMIT 1")  # the premise
        release = threading.Timer(1.0, holder.commit)
        release.start()
        try:
            report = scan_target(target, sample_rows=50)
        finally:
            release.join()
    finally:
        holder.close()
        staging_pg16.drop_database(db)
    contact = next(f for f in report.findings if f.column == "contact")
    assert contact.status == "unmasked" and contact.sample_count == 50


def _pages_and_scan(pg, db: str, ddl: str, table: str, sample_rows: int):
    """``(pages of table, scan report)`` of a new database ``db`` made by ``ddl``, dropped after."""
    pg.create_database(db)
    pg.execute(ddl, db)
    try:
        with pg.connect(db) as conn:
            pages = conn.execute("SELECT pg_relation_size(%s::regclass) / 8192", (table,)).fetchone()[0]
            return pages, scan_database(conn, database=db, sample_rows=sample_rows)
    finally:
        pg.drop_database(db)


def test_a_small_table_is_sampled_from_all_its_rows_not_its_first_ones(staging_pg16):
    """A table under SMALL_TABLE_PAGES with more rows than sample_rows: its first 1000 rows are system
    tickets, the 5000 after them carry e-mails. Read with LIMIT only, the scan saw the first 1000 and
    passed a table of personal data; rows in random order find them."""
    pages, report = _pages_and_scan(
        staging_pg16,
        "pii_small_order",
        """
        CREATE TABLE tickets (id int, body text);
        INSERT INTO tickets SELECT g, 'system job ' || g || ' finished' FROM generate_series(1, 1000) g;
        INSERT INTO tickets SELECT g, 'please call me back at customer' || g || '@gmail.com'
          FROM generate_series(1001, 6000) g;
        ANALYZE tickets;
        """,
        "tickets",
        1000,
    )
    assert pages <= 128  # the premise: a small table, read without TABLESAMPLE
    body = next(f for f in report.findings if f.column == "body")
    assert body.status == "unmasked" and body.sample_count > 500


def test_a_large_table_is_sampled_from_all_its_pages_not_its_first_third(staging_pg16):
    """TABLESAMPLE SYSTEM returns about three times sample_rows rows, page by page in physical order:
    LIMIT alone kept those of the table's first third. Mattermost's newest posts, the only ones whose
    props held an attachment with a customer's e-mail, were never read. Here the last quarter of the
    rows carries e-mail addresses; the sample's rows are drawn from all the sampled pages."""
    pages, report = _pages_and_scan(
        staging_pg16,
        "pii_large_order",
        """
        CREATE TABLE posts (id int, filler text, body text);
        INSERT INTO posts SELECT g, repeat('x', 400), 'system job ' || g || ' finished'
          FROM generate_series(1, 30000) g;
        INSERT INTO posts SELECT g, repeat('x', 400), 'please write to customer' || g || '@gmail.com'
          FROM generate_series(30001, 40000) g;
        ANALYZE posts;
        """,
        "posts",
        400,
    )
    assert pages > 128 * 10  # the premise: read through TABLESAMPLE
    assert report.rows_sampled == 400
    body = next((f for f in report.findings if f.column == "body"), None)
    assert body is not None and body.status == "unmasked"
    assert 40 <= body.sample_count <= 200, body.sample_count  # a quarter of 400, give or take
