"""PII scan of each class of data the archive can carry, on PostgreSQL 16 and 18: excluded tables
(must be empty, never flagged by name), conditional rules (rows outside the condition are sampled and
fail unless allow-listed), materialized views, and large objects (content scanned when kept, none
allowed otherwise)."""

from __future__ import annotations

import pytest
from pg_helpers import new_database

from scalingo_staging_sync.pii.scanner import UnmaskedPiiError, enforce, scan_database
from scalingo_staging_sync.tablename import TableName


@pytest.fixture
def db(staging_pg):
    with new_database(staging_pg, "pii_cls") as name:
        yield staging_pg, name


def scan(pg, db, **kwargs):
    with pg.connect(db) as conn:
        return scan_database(conn, database=db, **kwargs)


AUDIT = """
CREATE TABLE audit_log (id int, at date, actor_email text, ip inet) PARTITION BY RANGE (at);
CREATE TABLE audit_log_2025 PARTITION OF audit_log FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE audit_log_2026 PARTITION OF audit_log FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE sessions (id int, user_email text);
CREATE TABLE sessions_old () INHERITS (sessions);
"""


def test_excluded_tables_are_checked_empty_not_flagged_by_name(db):
    pg, name = db
    pg.execute(AUDIT, name)
    excluded = [TableName.parse("audit_log"), TableName.parse("public.sessions")]
    report = scan(pg, name, excluded_tables=excluded)
    assert report.passed, report.to_dict()
    assert report.findings == []  # actor_email, ip, user_email: not flagged by name
    assert report.excluded == {  # the partitioned parent holds no rows: its partitions are checked
        "public.audit_log_2025": "empty",
        "public.audit_log_2026": "empty",
        "public.sessions": "empty",
        "public.sessions_old": "empty",
    }
    # without the exclusion, the same columns are flagged
    assert not scan(pg, name).passed


def test_excluded_table_holding_rows_fails(db):
    pg, name = db
    pg.execute(AUDIT, name)
    pg.execute("INSERT INTO audit_log VALUES (1, '2026-03-01', 'leak@corp.test', '10.1.2.3')", name)
    pg.execute("INSERT INTO sessions_old VALUES (1, 'x@corp.test')", name)
    report = scan(pg, name, excluded_tables=["audit_log", "sessions"])
    assert not report.passed
    assert report.excluded_not_empty == ["public.audit_log_2026", "public.sessions_old"]
    assert report.excluded["public.sessions"] == "empty"  # its own rows (ONLY): the child's are its own
    assert report.findings == []
    with pytest.raises(UnmaskedPiiError, match="public.audit_log_2026, public.sessions_old") as info:
        enforce(report)
    assert "leak@corp.test" not in str(info.value) and "leak" not in str(report.to_dict())


CONDITIONAL = """
CREATE TABLE users (id int PRIMARY KEY, email text, role text, nickname text);
INSERT INTO users SELECT g, CASE WHEN g <= 8 THEN 'u' || g || '@example.com' ELSE 'staff' || g || '@corp.test' END,
    CASE WHEN g <= 8 THEN 'customer' ELSE 'staff' END, 'nick' || g FROM generate_series(1, 12) g;
INSERT INTO users VALUES (13, 'nullrole@corp.test', NULL, 'n13');
"""
MASKED = ["public.users.email", "public.users.nickname"]


def test_rows_outside_a_condition_fail_unless_allow_listed(db):
    pg, name = db
    pg.execute(CONDITIONAL, name)  # rows with role = 'customer' were masked; staff rows and NULL role kept
    conditional = {TableName.parse("users"): "role = 'customer'"}
    report = scan(pg, name, masked_columns=MASKED, conditional=conditional)
    assert not report.passed
    assert sorted(f.qualified_name for f in report.unmasked) == MASKED
    email = next(f for f in report.findings if f.column == "email")
    assert email.sampled_values == 5  # 4 staff rows + the NULL-role row: only rows outside the condition
    assert {r["detector"] for r in email.reasons} >= {"outside_condition", "email"}
    assert report.outside_condition == {"public.users.email": 5, "public.users.nickname": 5}
    assert "outside the rule's condition" in email.reason
    # the gate's error says what to do about rows outside a condition, not "mask them with a rule"
    pg.execute("CREATE TABLE contacts (id int PRIMARY KEY, phone text)", name)
    pg.execute("INSERT INTO contacts VALUES (1, '+33 6 12 34 56 78')", name)
    both = scan(pg, name, masked_columns=MASKED, conditional=conditional)
    with pytest.raises(UnmaskedPiiError) as info:
        enforce(both, "fail")
    message = str(info.value)
    assert "Mask public.contacts.phone with a rule in anonymization_tables" in message
    assert (
        "public.users.email, public.users.nickname are masked only in the rows their rule's condition selects"
        in message
    )
    assert "Widen or drop the condition" in message
    pg.execute("DROP TABLE contacts", name)

    allowed = scan(
        pg,
        name,
        masked_columns=MASKED,
        conditional=conditional,
        allow=[{"column": "public.users.email", "reason": "staff addresses are public"}, "users.nickname"],
    )
    assert allowed.passed, allowed.to_dict()
    assert {f.status for f in allowed.findings} == {"allowed"}

    # the same rule without a condition: the columns count as masked
    plain = scan(pg, name, masked_columns=MASKED)
    assert plain.passed and {f.status for f in plain.findings} == {"masked"}

    # a condition that covers every row leaves nothing outside: masked
    everyone = scan(pg, name, masked_columns=MASKED, conditional={"users": "id > 0"})
    assert everyone.passed and everyone.outside_condition == {}


KEYS = """
CREATE TABLE country (country_id int PRIMARY KEY, label text);
CREATE TABLE address (address_id bigint PRIMARY KEY, address text, country_id int REFERENCES country,
    city_uuid uuid, national_id int, legacy_address_id text);
CREATE TABLE users (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), email text, encrypted_password text,
    reset_password_sent_at timestamp(6), confirmed_at timestamptz, email_verified boolean, sign_in_count int,
    emails_count int, phone_number bigint, birth_year smallint);
INSERT INTO users (email, encrypted_password, reset_password_sent_at, email_verified, emails_count, phone_number,
    birth_year) VALUES ('jane@gmail.com', '$2a$12$abc', now(), true, 3, 33612345678, 1980);
INSERT INTO country VALUES (1, 'x');
INSERT INTO address SELECT g, g || ' rue des Lilas', 1, gen_random_uuid(), 1000 + g, g || ' rue des Lilas'
    FROM generate_series(1, 5) g;
"""


def test_a_column_whose_type_cannot_hold_what_it_is_named_about_is_not_personal_data(db):
    """``address_id int`` holds the key of an address, not an address (pagila's, any ORM's foreign keys);
    ``reset_password_sent_at timestamp`` an instant, ``email_verified boolean`` a flag (Devise's). A name
    detector fires on such a column only when its match takes the last token in (``national_id``,
    ``phone_number``) or names the person whatever follows (``birth_year``). A text column keeps its
    name finding: it could hold anything."""
    pg, name = db
    pg.execute(KEYS, name)
    report = scan(pg, name, masked_columns=[])
    flagged = {f.qualified_name for f in report.unmasked}
    assert "public.address.address" in flagged and "public.address.national_id" in flagged
    assert "public.address.legacy_address_id" in flagged
    for key in ("public.address.address_id", "public.address.country_id", "public.country.country_id",
                "public.address.city_uuid"):  # fmt: skip
        assert key not in {f.qualified_name for f in report.findings}, key
    # a Devise users table: the instants, flags and counts about an e-mail or a password are not one
    users = {f.column for f in report.unmasked if f.table == "users"}
    assert users == {"email", "encrypted_password", "phone_number", "birth_year"}, users


OSCAR = """
CREATE TABLE reviews_productreview (id int PRIMARY KEY, title text, body text, name text, email text,
    picture text);
INSERT INTO reviews_productreview VALUES
    (1, 'Great', 'Works well', 'Dawn Lewis', 'dawn53@yahoo.com', 'https://cdn.test/p/1.jpg'),
    (2, 'Broken', 'Arrived broken', 'Emmanuel Bousquet', 'emmanuel_bousquet11@orange.fr', NULL);
CREATE TABLE catalogue_category (id int PRIMARY KEY, name text, picture text);
INSERT INTO catalogue_category VALUES (1, 'Kitchen', 'https://cdn.test/c/1.jpg');
CREATE TABLE communication_eventtype (id int PRIMARY KEY, name text, email_subject_template text,
    email_body_template text);
INSERT INTO communication_eventtype VALUES (1, 'Order placed', 'Order {{ number }}', 'Dear {{ name }}');
CREATE TABLE address_useraddress (id int PRIMARY KEY, line1 text, num_orders_as_billing_address int,
    is_default_for_shipping boolean);
INSERT INTO address_useraddress VALUES (1, '238 Cisneros Road', 3, true);
CREATE TABLE address_country (iso text PRIMARY KEY, is_shipping_country boolean);
INSERT INTO address_country VALUES ('FR', true);
-- the key mailed to an anonymous visitor to confirm or cancel an alert: a credential of production
CREATE TABLE customer_productalert (id int PRIMARY KEY, email text, key varchar(128) NOT NULL);
INSERT INTO customer_productalert SELECT g, 'visitor' || g || '@example.org',
    CASE WHEN g % 10 = 0 THEN '' ELSE substr(md5('k' || g) || md5('j' || g), 1, 40) END
    FROM generate_series(1, 30) g;
-- random keys outside a table of people (Active Storage's, which the app needs), short or worded keys
CREATE TABLE active_storage_blobs (id int PRIMARY KEY, key text NOT NULL, filename text);
INSERT INTO active_storage_blobs SELECT g, substr(md5('b' || g), 1, 28), 'f' || g || '.png'
    FROM generate_series(1, 30) g;
CREATE TABLE wishlists (id int PRIMARY KEY, owner_email text, key varchar(6));
INSERT INTO wishlists SELECT g, 'o' || g || '@example.org', substr(md5('w' || g), 1, 6) FROM generate_series(1, 30) g;
CREATE TABLE user_settings (id int PRIMARY KEY, email text, key text, value text);
INSERT INTO user_settings SELECT g, 'u' || g || '@example.org', 'newsletter_frequency_setting', 'weekly'
    FROM generate_series(1, 30) g;
"""


def test_a_table_whose_columns_describe_people_is_a_table_of_people_and_templates_are_not_emails(db):
    """django-oscar: an anonymous reviewer's ``name`` sits next to their ``email`` in
    ``reviews_productreview`` (not a table named after people): it was left unmasked in staging.
    A category's ``name`` and ``picture`` are not a person's. The e-mail templates, an address's order
    count and a country's shipping flag failed the gate by their names alone."""
    pg, name = db
    pg.execute(OSCAR, name)
    report = scan(pg, name, masked_columns=[])
    flagged = {f.qualified_name for f in report.unmasked}
    assert {"public.reviews_productreview.name", "public.reviews_productreview.picture"} <= flagged
    assert "public.reviews_productreview.email" in flagged and "public.address_useraddress.line1" in flagged
    key = next(f for f in report.unmasked if f.qualified_name == "public.customer_productalert.key")
    assert [(r["detector"], r.get("matches")) for r in key.reasons] == [("auth.random_key", 27)]
    for clean in ("public.active_storage_blobs.key", "public.wishlists.key", "public.user_settings.key"):
        assert clean not in {f.qualified_name for f in report.findings}, clean
    for clean in ("public.catalogue_category.name", "public.catalogue_category.picture",
                  "public.communication_eventtype.email_subject_template",
                  "public.communication_eventtype.email_body_template",
                  "public.address_useraddress.num_orders_as_billing_address",
                  "public.address_country.is_shipping_country"):  # fmt: skip
        assert clean not in {f.qualified_name for f in report.findings}, clean


def test_condition_cannot_smuggle_a_statement(db):
    pg, name = db
    pg.execute(CONDITIONAL, name)
    report = scan(pg, name, masked_columns=MASKED, conditional={"users": "true); DROP TABLE users; --"})
    assert not report.passed and "public.users" in report.errors
    assert pg.execute("SELECT count(*) FROM users", name) == [(13,)]


def test_materialized_views_are_scanned(db):
    pg, name = db
    pg.execute(
        """
        CREATE TABLE t (id int, note text);
        INSERT INTO t SELECT g, 'reach me at person' || g || '@corp.test' FROM generate_series(1, 20) g;
        CREATE MATERIALIZED VIEW contacts AS SELECT id, note AS blurb FROM t;
        CREATE MATERIALIZED VIEW never_refreshed AS SELECT id FROM t WITH NO DATA;
        """,
        name,
    )
    report = scan(pg, name, masked_columns=["public.t.note"])
    flagged = {f.qualified_name: f for f in report.unmasked}
    assert "public.contacts.blurb" in flagged and flagged["public.contacts.blurb"].sample_count == 20
    assert "public.never_refreshed" in report.errors  # cannot be read: fails closed
    assert not report.passed


def _lo(pg, name, content: bytes) -> None:
    with pg.connect(name) as conn:
        conn.execute("SELECT lo_from_bytea(0, %s)", (content,))


def test_large_objects_content_is_scanned_when_kept(db):
    pg, name = db
    _lo(pg, name, b"%PDF-1.4 payslip for jane.roe@corp.test IBAN FR76 3000 6000 0112 3456 7890 189")
    _lo(pg, name, b"\x89PNG\r\n\x1a\n\x00\x00 binary scan")
    report = scan(pg, name, large_objects=True)
    assert report.large_objects["count"] == 2 and report.large_objects["sampled"] == 2
    assert report.large_objects["bytes_read"] > 80
    assert report.large_objects["matches"].get("email") == 1
    finding = next(f for f in report.findings if f.qualified_name == "pg_catalog.pg_largeobject.data")
    assert finding.status == "unmasked" and not report.passed
    assert "jane" not in str(report.to_dict())
    allowed = scan(pg, name, large_objects=True, allow=["pg_catalog.pg_largeobject.data"])
    assert allowed.passed


@pytest.mark.parametrize(
    "content",
    [
        "name;email\r\nJosé Núñez;jose.nunez@corp.test\r\n".encode("utf-16"),  # with a BOM
        "name;email\r\nJosé Núñez;jose.nunez@corp.test\r\n".encode("utf-16-le"),  # Excel's "Unicode text"
        "name;email\r\nJosé Núñez;jose.nunez@corp.test\r\n".encode("utf-16-be"),
        "name;email\r\nJosé Núñez;jose.nunez@corp.test\r\n".encode("cp1252"),  # not UTF-8
    ],
    ids=["utf16-bom", "utf16-le", "utf16-be", "cp1252"],
)
def test_large_objects_in_other_text_encodings_are_read(db, content):
    pg, name = db
    _lo(pg, name, content)
    report = scan(pg, name, large_objects=True)
    assert report.large_objects["matches"].get("email") == 1, report.large_objects
    assert not report.passed


def test_large_objects_present_but_not_kept_fail(db):
    pg, name = db
    assert scan(pg, name).large_objects == {"kept": False, "count": 0, "unexpected": False}
    _lo(pg, name, b"harmless")
    report = scan(pg, name, large_objects=False)
    assert not report.passed and report.large_objects["unexpected"]
    with pytest.raises(UnmaskedPiiError, match="1 large object"):
        enforce(report)
    clean = scan(pg, name, large_objects=True)
    assert clean.passed and clean.large_objects["matches"] == {}


def test_rule_on_a_parent_covers_inheritance_children_in_the_scan(db):
    pg, name = db
    pg.execute(
        """
        CREATE TABLE people (id int, email text);
        CREATE TABLE vip_people (level int) INHERITS (people);
        INSERT INTO vip_people VALUES (1, 'u0123456789abcdef@example.com', 1);
        """,
        name,
    )
    report = scan(pg, name, masked_columns=["people.email"])
    vip = next(f for f in report.findings if f.qualified_name == "public.vip_people.email")
    assert vip.status == "masked" and report.passed
    conditional = scan(pg, name, masked_columns=["people.email"], conditional={"people": "id > 5"})
    # the parent's condition applies to the child's rows; each table is sampled for its own rows
    assert [f.qualified_name for f in conditional.unmasked] == ["public.vip_people.email"]


def test_plan_keys_of_tables_whose_names_need_quoting_match(db):
    """The plan names masked columns with TableName's quoted form (``crm."Order.Items".email``): the scan
    matches it, and an allow-list entry in that form, for a table whose name holds a dot or a quote."""
    pg, name = db
    pg.execute(
        'CREATE SCHEMA crm; CREATE TABLE crm."Order.Items" (id int, email text, buyer text);'
        'CREATE TABLE crm."say ""hi""" (id int, email text);'
        "INSERT INTO crm.\"Order.Items\" VALUES (1, 'u0123456789abcdef@example.com', 'Jane Roe');"
        'INSERT INTO crm."say ""hi""" VALUES (1, \'jane.roe@corp.test\')',
        name,
    )
    dotted, quoted = TableName("crm", "Order.Items"), TableName("crm", 'say "hi"')
    assert str(dotted) == 'crm."Order.Items"' and str(quoted) == 'crm."say ""hi"""'
    report = scan(
        pg,
        name,
        masked_columns=[f"{dotted}.email", f"{quoted}.email"],
        allow=[{"column": f"{dotted}.buyer", "reason": "reviewed"}],
    )
    statuses = {f.qualified_name: f.status for f in report.findings}
    # findings name them the same way, so a name copied from a finding into pii_scan.allow matches
    assert statuses['crm."Order.Items".email'] == "masked"
    assert statuses['crm."say ""hi""".email'] == "masked"
    assert report.unknown_masked == [] and report.passed, report.to_dict()
    # an unmasked one is named the same way, and that name, copied into pii_scan.allow, allows it
    unmasked = scan(pg, name, masked_columns=[f"{dotted}.email"])
    assert [f.qualified_name for f in unmasked.unmasked] == ['crm."say ""hi""".email']
    allowed = scan(pg, name, masked_columns=[f"{dotted}.email"], allow=[unmasked.unmasked[0].qualified_name])
    assert allowed.passed and not allowed.unmasked


def test_the_tables_a_caller_listed_are_the_ones_scanned(db):
    """`scan --copies` lists the tables once for the copy index and the scan (``tables=``): the scan
    reads those, and lists none of its own."""
    from scalingo_staging_sync.pii.scanner import list_tables

    pg, name = db
    pg.execute(
        "CREATE TABLE people (id int, email text); INSERT INTO people VALUES (1, 'ann@corp.test');"
        "CREATE TABLE notes (id int, body text); INSERT INTO notes VALUES (1, 'call bob@corp.test');",
        name,
    )
    with pg.connect(name) as conn:
        listed = [t for t in list_tables(conn) if t.qualified_name == "public.notes"]
        report = scan_database(conn, database=name, tables=listed)
    assert report.tables_scanned == 1
    assert {f.qualified_name for f in report.unmasked} == {"public.notes.body"}


def test_a_migration_tools_bookkeeping_is_kept_and_said_why(db):
    """Keycloak's Liquibase ``databasechangelog`` names its developers as changesets' authors
    (``bburke@redhat.com``); masked, Liquibase runs every changeset again when the staging Keycloak
    starts. The scan allows it with the reason; the same table with a column Liquibase does not create
    is the app's own and is flagged."""
    pg, name = db
    pg.execute(
        "CREATE TABLE databasechangelog (id varchar(255) NOT NULL, author varchar(255) NOT NULL,"
        " filename varchar(255) NOT NULL, dateexecuted timestamp NOT NULL, orderexecuted int NOT NULL,"
        " exectype varchar(10) NOT NULL, md5sum varchar(35), description varchar(255),"
        " comments varchar(255), tag varchar(255), liquibase varchar(20), contexts varchar(255),"
        " labels varchar(255), deployment_id varchar(10));"
        "INSERT INTO databasechangelog (id, author, filename, dateexecuted, orderexecuted, exectype)"
        " SELECT 'cs-' || g, 'dev' || (g % 5) || '@redhat.test', 'META-INF/jpa-changelog-' || g || '.xml',"
        " now(), g, 'EXECUTED' FROM generate_series(1, 40) g;"
        "CREATE SCHEMA other; CREATE TABLE other.databasechangelog (id int, author text, email text);"
        "INSERT INTO other.databasechangelog SELECT g, 'dev@redhat.test', 'x' FROM generate_series(1, 5) g;",
        name,
    )
    report = scan(pg, name)
    found = {f.qualified_name: f for f in report.findings}
    kept = found["public.databasechangelog.author"]
    assert kept.status == "allowed" and "Liquibase's migration bookkeeping" in kept.allow_reason
    assert found["other.databasechangelog.author"].status == "unmasked"
    assert {f.qualified_name for f in report.unmasked} >= {"other.databasechangelog.author"}
    assert "public.databasechangelog.author" not in {f.qualified_name for f in report.unmasked}
