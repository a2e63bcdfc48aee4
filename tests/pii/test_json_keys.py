"""The PII scan reads the keys of sampled json/jsonb documents as it reads column names (real
PostgreSQL): a credential or a name under a key no content detector can judge is a finding, unless a
``json`` rule masks that path; the finding names the paths, and suggest builds the rule from them."""

from __future__ import annotations

from pg_helpers import new_database

from scalingo_staging_sync.pgconn import PgTarget
from scalingo_staging_sync.pii.scanner import scan_target

SCHEMA = """
CREATE TABLE mfa_authenticator (id int PRIMARY KEY, type text, data jsonb NOT NULL);
INSERT INTO mfa_authenticator SELECT i, 'totp', jsonb_build_object('secret', upper(md5(i::text)))
FROM generate_series(1, 30) i;
CREATE TABLE orders (id int PRIMARY KEY, doc jsonb);
INSERT INTO orders SELECT i, jsonb_build_object(
    'shipping', jsonb_build_object('email', 'c' || i || '@shop.example', 'name', 'Name' || i || ' Surname'),
    'items', jsonb_build_array(jsonb_build_object('name', 'Widget', 'qty', i)))
FROM generate_series(1, 30) i;
CREATE TABLE webhooks (id int PRIMARY KEY, payload json);
INSERT INTO webhooks SELECT i, json_build_object('event', 'paid', 'next_page_token', 'CAUQ' || i)
FROM generate_series(1, 30) i;
"""


def test_credentials_and_names_under_json_keys_are_findings(staging_pg16):
    pg = staging_pg16
    with new_database(pg, "jsonkeys") as name:
        pg.execute(SCHEMA, name)
        target = PgTarget(host=pg.host, port=pg.port, user=pg.user, dbname=name)
        report = scan_target(target)
        by_column = {f.qualified_name: f for f in report.findings}
        mfa = by_column["public.mfa_authenticator.data"]
        assert mfa.status == "unmasked" and mfa.severity == "high"
        assert "json key:auth.secret at secret (30/30 sampled)" in mfa.reason
        orders = by_column["public.orders.doc"]
        assert "json key:personal.name_in_person_table at shipping.name" in orders.reason
        assert "items" not in orders.reason  # a product's name is nobody's
        assert "public.webhooks.payload" not in by_column

        # a json rule masking the e-mail path leaves the name beside it: still a finding; masking both
        # clears it (the name is judged beside the e-mail even when the e-mail is masked)
        only_email = scan_target(
            target,
            masked_columns=["public.orders.doc"],
            partially_masked={"public.orders.doc": ["shipping.email"]},
        )
        left = {f.qualified_name: f for f in only_email.unmasked}["public.orders.doc"]
        assert "shipping.name" in left.reason and "shipping.email" not in left.reason
        both = scan_target(
            target,
            masked_columns=["public.orders.doc"],
            partially_masked={"public.orders.doc": ["shipping.email", "shipping.name"]},
        )
        assert "public.orders.doc" not in {f.qualified_name for f in both.unmasked}


def test_keys_of_json_documents_kept_in_text_are_read_too(staging_pg16):
    """A Rails ``serialize`` column holds JSON as text: its documents' keys are judged as a jsonb
    column's (a TOTP secret under ``otp_secret``, names no content detector sees), and a json rule on
    the text column clears them. Text that is not all documents (log lines opening with '['), a text
    array whose literal opens with '{"', and a key holding a random token (a device key's id, whose
    letters make ``ssn`` when split as camelCase) are not read so."""
    pg = staging_pg16
    with new_database(pg, "jsontextkeys") as name:
        pg.execute(
            """
CREATE TABLE users (id int PRIMARY KEY, settings text, log text, tags text[], devices text);
INSERT INTO users SELECT i,
  json_build_object('otp_secret', upper(md5(i::text)), 'profile', json_build_object('first_name', 'Gwen' || i))::text,
  CASE WHEN i % 2 = 0 THEN '[info] signed in' ELSE 'signed out' END,
  ARRAY['first name', 'x'],
  json_build_object('ed25519:q7XSsnR4tTu6MZ3MRxSz0YZQ' || i, 'AAAAC3NzaC1lZDI1NTE5AAAAIGb' || i)::text
FROM generate_series(1, 30) i;
""",
            name,
        )
        target = PgTarget(host=pg.host, port=pg.port, user=pg.user, dbname=name)
        by_column = {f.qualified_name: f for f in scan_target(target).findings}
        settings = by_column["public.users.settings"]
        assert settings.status == "unmasked"
        assert "json key:auth.secret at otp_secret (30/30 sampled)" in settings.reason, settings.reason
        assert "profile.first_name" in settings.reason, settings.reason
        assert not {"public.users.log", "public.users.tags", "public.users.devices"} & set(by_column), (
            by_column
        )
        masked = scan_target(
            target,
            masked_columns=["public.users.settings"],
            partially_masked={"public.users.settings": ["otp_secret", "profile.first_name"]},
        )
        assert "public.users.settings" not in {f.qualified_name for f in masked.unmasked}


def test_the_keys_of_a_large_tables_documents_are_listed_from_the_whole_table(staging_pg16):
    """The rare-key listing read a json column's *first* 10,000 documents: a key that only the newest
    rows of a large table hold (a field added last year) was never listed. A table of more than twice
    as many rows is read through pages drawn from the whole table; the same pages for the listing
    and for the documents of each key found."""
    import psycopg

    from scalingo_staging_sync.pii.scanner import documents_with_flagged_keys

    pg = staging_pg16
    with new_database(pg, "jsonkeysnewest") as name:
        pg.execute(
            "CREATE TABLE events (id int PRIMARY KEY, doc jsonb);"
            "INSERT INTO events SELECT i, jsonb_build_object('kind', 'visit', 'n', i) FROM generate_series(1, 10000) i;"
            "INSERT INTO events SELECT i, jsonb_build_object('kind', 'signup', 'user_phone', '3361234' || i)"
            " FROM generate_series(10001, 20000) i;"
            "ANALYZE events;",
            name,
        )
        with psycopg.connect(pg.conninfo(name), autocommit=True) as conn:
            docs = documents_with_flagged_keys(conn, "public", "events", "doc", only=True, scan_rows=1000)
            assert docs and all("user_phone" in d for d in docs), docs[:3]
