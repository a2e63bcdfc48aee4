"""A production database built to hold every class of data-carrying archive entry that issue 10 lists:

* a ruled parent with an inheritance child (``people`` / ``vip_people``), a materialized view on it;
* a bare exclusion (``sessions`` = ``public.sessions``) beside a ruled ``crm.sessions``;
* an excluded partitioned parent (``audit_log``) and a ruled partitioned parent (``orders``);
* quoted, mixed-case names and two 60-byte non-ASCII table names sharing their first 63 bytes;
* large objects (scanned documents) referenced from a table;
* sequences, a UNIQUE e-mail column, a CHECK constraint.

Every sensitive original is a long, distinctive string, so that ``find_originals`` can look for it as a
substring anywhere in the staging cluster (every table of every database, ``pg_stats``, large objects)
without false positives.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

# Two 60-byte table names (29 two-byte characters + 2 ASCII) sharing their first 58 bytes: anything
# derived from them by adding a prefix or suffix is cut at 63 bytes by PostgreSQL and would collide.
LONG_A = "é" * 29 + "ax"
LONG_B = "é" * 29 + "bx"
assert len(LONG_A.encode()) == len(LONG_B.encode()) == 60

PEOPLE = [
    ("Gwendolyn Archambault-Fairweather", "gwendolyn.archambault@heliotrope-mail.test", "+33 6 12 34 56 71"),
    ("Bartholomew Quincy-Oyelaran", "bartholomew.quincy@heliotrope-mail.test", "+33 6 12 34 56 72"),
    ("Evangelina Castellanos-Wirth", "evangelina.castellanos@heliotrope-mail.test", "+33 6 12 34 56 73"),
]
VIPS = [
    ("Maximilienne Delacroix-Ostrander", "maximilienne.delacroix@heliotrope-mail.test", "+33 6 12 34 56 74"),
]
SESSION_TOKENS = [
    "sess-token-9f8e7d6c5b4a39281706f5e4d3c2b1a0",
    "sess-token-0a1b2c3d4e5f60718293a4b5c6d7e8f9",
]
CRM_CONTACTS = ["ottoline.vanderbilt@crm-contacts.test", "leopold.achterberg@crm-contacts.test"]
AUDIT_ACTORS = ["auditor.philippa.montgomery@corp-audit.test", "auditor.ignatius.oyelowo@corp-audit.test"]
ORDER_EMAILS = [
    "buyer.rosalind.featherstonehaugh@shop-orders.test",
    "buyer.cornelius.abernathy@shop-orders.test",
]
MIXED_EMAILS = ["client.anastasia.wolkonsky@mixed-case.test"]
LONG_EMAILS = ["long.name.a.seraphina.blackwood@unicode.test", "long.name.b.thaddeus.lockwood@unicode.test"]
DOCUMENTS = [b"PASSPORT scan of Gwendolyn Archambault-Fairweather, number 19XX88231 (confidential)"]

SCHEMA_SQL = """
CREATE SCHEMA crm;
CREATE SCHEMA "Mixed Case";

CREATE TABLE people (
    id serial PRIMARY KEY,
    full_name text NOT NULL,
    email text NOT NULL UNIQUE,
    phone text,
    CONSTRAINT people_email_has_at CHECK (position('@' in email) > 1)
);
CREATE TABLE vip_people (tier int NOT NULL DEFAULT 1) INHERITS (people);

CREATE TABLE sessions (id serial PRIMARY KEY, token text NOT NULL, created date NOT NULL DEFAULT current_date);
CREATE TABLE crm.sessions (id serial PRIMARY KEY, contact_email text NOT NULL, note text);

CREATE TABLE audit_log (id bigserial, at date NOT NULL, actor_email text NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE audit_log_2025 PARTITION OF audit_log FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE audit_log_2026 PARTITION OF audit_log FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');

CREATE TABLE orders (id bigserial, region text NOT NULL, customer_email text NOT NULL, amount numeric(10,2))
    PARTITION BY LIST (region);
CREATE TABLE orders_eu PARTITION OF orders FOR VALUES IN ('eu');
CREATE TABLE orders_us PARTITION OF orders FOR VALUES IN ('us');

CREATE TABLE "Mixed Case"."Client Records" (id serial PRIMARY KEY, "Email Address" text NOT NULL);

CREATE TABLE documents (id serial PRIMARY KEY, kind text NOT NULL, scan oid);

CREATE MATERIALIZED VIEW people_directory AS SELECT id, email FROM people;
"""


def load_hard_dataset(pg, dbname: str = "hard") -> str:
    """Create ``dbname`` on the embedded server ``pg`` and fill it; returns the name."""
    pg.create_database(dbname)
    with psycopg.connect(pg.conninfo(dbname), autocommit=True) as conn:
        conn.execute(SCHEMA_SQL)
        for table in (LONG_A, LONG_B):
            conn.execute(
                sql.SQL("CREATE TABLE {} (id serial PRIMARY KEY, email text NOT NULL)").format(
                    sql.Identifier(table)
                )
            )
        for name, email, phone in PEOPLE:
            conn.execute(
                "INSERT INTO people (full_name, email, phone) VALUES (%s, %s, %s)", (name, email, phone)
            )
        for name, email, phone in VIPS:
            conn.execute(
                "INSERT INTO vip_people (full_name, email, phone, tier) VALUES (%s, %s, %s, 2)",
                (name, email, phone),
            )
        for token in SESSION_TOKENS:
            conn.execute("INSERT INTO sessions (token) VALUES (%s)", (token,))
        for email in CRM_CONTACTS:
            conn.execute(
                "INSERT INTO crm.sessions (contact_email, note) VALUES (%s, 'called back')", (email,)
            )
        for i, email in enumerate(AUDIT_ACTORS):
            conn.execute(
                "INSERT INTO audit_log (at, actor_email) VALUES (%s, %s)", (f"{2025 + i}-03-01", email)
            )
        for i, email in enumerate(ORDER_EMAILS):
            conn.execute(
                "INSERT INTO orders (region, customer_email, amount) VALUES (%s, %s, 12.5)",
                ("eu" if i == 0 else "us", email),
            )
        for email in MIXED_EMAILS:
            conn.execute('INSERT INTO "Mixed Case"."Client Records" ("Email Address") VALUES (%s)', (email,))
        for table, email in ((LONG_A, LONG_EMAILS[0]), (LONG_B, LONG_EMAILS[1])):
            conn.execute(
                sql.SQL("INSERT INTO {} (email) VALUES (%s)").format(sql.Identifier(table)), (email,)
            )
        for document in DOCUMENTS:
            conn.execute(
                "INSERT INTO documents (kind, scan) VALUES ('passport', lo_from_bytea(0, %s))", (document,)
            )
        conn.execute("REFRESH MATERIALIZED VIEW people_directory")
        conn.execute("ANALYZE")  # so that a pg_dump --statistics archive carries originals in its stats
    return dbname


def sensitive_values() -> list[str]:
    """Every original that must not be found anywhere in staging after a run."""
    values = [v for row in PEOPLE + VIPS for v in row]
    values += SESSION_TOKENS + CRM_CONTACTS + AUDIT_ACTORS + ORDER_EMAILS + MIXED_EMAILS + LONG_EMAILS
    values += ["19XX88231"]  # inside the large object
    return values


RULES_YAML = f"""
source_app: hard-production
require_confirmation: true
anonymization_tables:
  - table: people
    columns:
      full_name: full_name
      email: email
      phone: phone
  - table: crm.sessions
    columns:
      contact_email: email
  - table: orders
    columns:
      customer_email: email
  - table: '"Mixed Case"."Client Records"'
    columns:
      Email Address: email
  - table: '"{LONG_A}"'
    columns:
      email: email
  - table: '"{LONG_B}"'
    columns:
      email: email
exclude_tables: [sessions, audit_log]
pii_scan:
  on_unmasked: fail
  allow:
    - column: crm.sessions.note
      reason: "free-text call outcome, reviewed: no personal data"
    - column: public.documents.kind
      reason: "document type label"
    - column: public.orders.region
      reason: "sales region"
verification:
  enabled: true
restore:
  mode: auto
  keep_previous: false
"""


def _text_columns_query() -> str:
    return (
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "AND n.nspname NOT LIKE 'pg_toast%'"
    )


def database_names(pg) -> set[str]:
    """The databases of ``pg`` one can connect to."""
    return {
        r[0] for r in pg.execute("SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate")
    }


def find_originals(pg, values: list[str], *, skip_databases=()) -> list[str]:
    """Every place of the whole cluster (all databases but ``skip_databases``: tables, matviews, pg_stats,
    large objects) where one of ``values`` appears as a substring. Empty: nothing survived."""
    hits: list[str] = []
    databases = sorted(database_names(pg) - set(skip_databases))
    for db in databases:
        with psycopg.connect(pg.conninfo(db), autocommit=True) as conn:
            for schema, table in conn.execute(_text_columns_query()).fetchall():
                rows = conn.execute(
                    sql.SQL("SELECT t::text FROM {} t").format(sql.Identifier(schema, table))
                ).fetchall()
                blob = "\n".join(r[0] for r in rows)
                hits += [f"{db}:{schema}.{table}: {v}" for v in values if v in blob]
            stats = conn.execute(
                "SELECT schemaname, tablename, attname, coalesce(most_common_vals::text, '') || "
                "coalesce(histogram_bounds::text, '') FROM pg_stats "
                "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
            ).fetchall()
            for schema, table, column, text in stats:
                hits += [f"{db}:pg_stats {schema}.{table}.{column}: {v}" for v in values if v in (text or "")]
            blobs = conn.execute("SELECT loid, data FROM pg_largeobject").fetchall()
            for loid, data in blobs:
                text = bytes(data).decode("utf-8", "replace")
                hits += [f"{db}:large object {loid}: {v}" for v in values if v in text]
    return hits


def production_dump(prod_pg, path, db: str, sql: str):
    """``sql`` run in a new production database ``db``, dumped to ``path`` (the database dropped)."""
    prod_pg.create_database(db)
    try:
        prod_pg.execute(sql, db)
        return prod_pg.pg_dump(db, path)
    finally:
        prod_pg.drop_database(db)
