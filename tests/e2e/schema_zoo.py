"""A "schema zoo" production database: the PostgreSQL features real applications use, each holding
personal data the rules mask, so that a reference-DAG run on it shows what the product does with them.

What it holds (the embedded servers ship no contrib extension: no citext, pgcrypto, hstore, uuid-ossp):

* an enum, a domain over text with a CHECK (masked with ``email``, whose output satisfies it), a domain
  whose CHECK only accepts one e-mail domain (masked with ``email`` and that ``domain`` option), a
  ``varchar`` domain, ``text[]``, ``jsonb`` with PII inside (masked on load by the ``json`` transformer), a uuid
  primary key, identity columns, bigserial, numeric / money / interval / bytea / inet, a tsvector and a
  full name both STORED generated from masked columns, a CHECK with a DEFAULT;
* a composite primary key referenced by a deferrable composite foreign key, a self-referencing foreign
  key, a foreign key from a second table to a masked unique column (both sides masked with ``email``,
  so they stay consistent), a unique index on an expression of a masked column;
* list- and hash-partitioned tables with masked columns, a table in a schema whose mixed-case name has
  a space, a view and a materialized view (with a unique index) over masked columns (its computed
  ``lower(login_email) AS login`` counts as masked: no allow-list entry), a user BEFORE
  INSERT trigger, row-level security (forced), an UNLOGGED table, TOASTed (> 8 kB) masked values,
  COMMENTs, non-ASCII text and values holding tabs, newlines and backslashes.

Every sensitive original is a long distinctive string, so ``find_originals`` (hard_dataset) can look
for it as a substring anywhere in the staging cluster.
"""

from __future__ import annotations

import json

import psycopg

ACCOUNTS = [
    # (first, last, email, login, recovery e-mail in jsonb, last ip)
    ("Philomena", "Wrightsonbury", "philomena.wrightsonbury@zoo-mail.test", "Philo.Wright@Zoo-Login.test",
     "recovery.philomena.w@zoo-recovery.test", "203.0.113.71"),
    ("Aurelio", "Castellamonte", "aurelio.castellamonte@zoo-mail.test", "aurelio.castel@zoo-login.test",
     "recovery.aurelio.c@zoo-recovery.test", "203.0.113.72"),
    ("Zénobie", "Ørsted-Łukasiewicz", "zenobie.orsted@zoo-mail.test", "zenobie.orsted@zoo-login.test",
     "recovery.zenobie.o@zoo-recovery.test", "203.0.113.73"),
]  # fmt: skip
NICKNAMES = ["nick-philo-quasimodo", "nick-aurelio-bellerophon", "nick-zenobie-andromeda"]
# a masked value with a tab, a newline, a backslash and non-ASCII letters
BIOS = [
    "bio of Philomena\twith tab\nand newline \\ backslash — naïve café",
    "bio of Aurelio: \\N is not null here\r\n\"quoted\" 'single'",
    "bio of Zénobie: 日本語のテキスト\tand\ttabs",
]
# unmasked, copied byte for byte: tabs, newlines, backslashes, non-ASCII
MOTTOS = ["carpe\tdiem\nnon\\ducor", "ça va — ñandú 🚀", "\\x41 is not A"]
STAFF = [
    ("Cornelius Vanderpoel-Hargreave", "cornelius.vanderpoel@zoo-staff.test"),
    ("Octavia Blomqvist-Arambourou", "octavia.blomqvist@zoo-staff.test"),
    ("Leocadia Thistlewood-Papadakis", "leocadia.thistlewood@zoo-staff.test"),
]
EVENT_ACTORS = ["actor.ignatius.pemberton@zoo-events.test", "actor.rosamund.kettleborough@zoo-events.test"]
MESSAGE_PHONES = ["+33 7 98 76 54 31", "+33 7 98 76 54 32", "+33 7 98 76 54 33"]
MESSAGE_BODIES = [
    "message from Ferdinand Oyelaran-Whitcombe",
    "message from Gertrude Nakashima-Bellweather",
    "message from Hyacinth Abernethy-Solano",
]
SESSION_TOKENS = [
    "unlogged-token-7d1e2f3a4b5c6d7e8f90a1b2c3d4e5f6",
    "unlogged-token-0f9e8d7c6b5a49382716a5b4c3d2e1f0",
]
SESSION_EMAILS = [
    "session.theodora.quennell@zoo-sessions.test",
    "session.ambrose.fitzwilliam@zoo-sessions.test",
]
TENANT_OWNERS = ["tenant.owner.wilhelmina@zoo-tenants.test", "tenant.owner.bartholomeus@zoo-tenants.test"]
# a TOASTed value (> 8 kB, compressible and not) holding a name in its middle
TOAST_NAME = "Evangeline Fitzgerald-Okonkwo-Marchetti"
LONG_TEXT = ("lorem ipsum " * 900) + TOAST_NAME + "".join(f"{i:x}" for i in range(3000))
CONTACT_NAMES = ["Ludovica Beauchamp-Ferreira", "Maximiliano Underhill-Dąbrowski"]
CONTACT_EMAILS = ["ludovica.beauchamp@zoo-crm.test", "maximiliano.underhill@zoo-crm.test"]
COMMENT_EMAIL = "dpo.hortensia.vanderlinde@zoo-corp.test"

SCHEMA_SQL = """
CREATE SCHEMA "Back Office";

CREATE TYPE mood AS ENUM ('happy', 'sad', 'meh');
CREATE DOMAIN email_address AS text CHECK (VALUE ~ '^[^@[:space:]]+@[^@[:space:]]+$');
CREATE DOMAIN short_label AS varchar(40) CHECK (length(VALUE) > 0);
CREATE DOMAIN staff_email AS text CHECK (VALUE LIKE '%@zoo-staff.test');

CREATE TABLE accounts (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    account_no bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    email email_address NOT NULL UNIQUE,
    login_email text NOT NULL,
    first_name text NOT NULL,
    last_name text NOT NULL,
    full_name text GENERATED ALWAYS AS (first_name || ' ' || last_name) STORED,
    search tsvector GENERATED ALWAYS AS (to_tsvector('simple', first_name || ' ' || last_name)) STORED,
    mood mood NOT NULL DEFAULT 'meh',
    label short_label,
    nicknames text[],
    balance numeric(12, 2) NOT NULL DEFAULT 0 CHECK (balance >= 0),
    wallet money,
    session_length interval,
    avatar bytea,
    last_ip inet,
    bio text,
    motto text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX accounts_login_lower ON accounts (lower(login_email));
COMMENT ON TABLE accounts IS 'customer accounts; data protection officer: dpo.hortensia.vanderlinde@zoo-corp.test';
COMMENT ON COLUMN accounts.email IS 'login e-mail (unique)';

CREATE TABLE account_settings (
    account_id uuid PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    prefs jsonb NOT NULL DEFAULT '{}'
);

CREATE TABLE newsletter_subscriptions (
    id bigserial PRIMARY KEY,
    email text NOT NULL REFERENCES accounts (email),
    subscribed_on date NOT NULL DEFAULT current_date
);

CREATE TABLE orgs (id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, name text NOT NULL);
CREATE TABLE memberships (
    org_id int NOT NULL REFERENCES orgs (id),
    account_id uuid NOT NULL REFERENCES accounts (id),
    role text NOT NULL DEFAULT 'member' CHECK (role IN ('member', 'admin')),
    PRIMARY KEY (org_id, account_id)
);
CREATE TABLE membership_events (
    id bigserial PRIMARY KEY,
    org_id int NOT NULL,
    account_id uuid NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (org_id, account_id) REFERENCES memberships (org_id, account_id)
        DEFERRABLE INITIALLY DEFERRED
);

CREATE TABLE "Back Office"."Staff Members" (
    id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    manager_id int REFERENCES "Back Office"."Staff Members" (id),
    "Full Name" text NOT NULL,
    "E-mail" staff_email NOT NULL UNIQUE
);
COMMENT ON TABLE "Back Office"."Staff Members" IS 'staff directory';

CREATE TABLE events (id bigserial, kind text NOT NULL, actor_email text NOT NULL, payload jsonb,
                     PRIMARY KEY (id, kind)) PARTITION BY LIST (kind);
CREATE TABLE events_login PARTITION OF events FOR VALUES IN ('login');
CREATE TABLE events_other PARTITION OF events DEFAULT;

CREATE TABLE messages (id bigserial PRIMARY KEY, sender_phone text, body text NOT NULL)
    PARTITION BY HASH (id);
CREATE TABLE messages_p0 PARTITION OF messages FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE messages_p1 PARTITION OF messages FOR VALUES WITH (MODULUS 2, REMAINDER 1);

CREATE UNLOGGED TABLE login_sessions (token text PRIMARY KEY, email text NOT NULL);

CREATE TABLE tenant_docs (id serial PRIMARY KEY, tenant int NOT NULL, owner_email text NOT NULL,
                          title text NOT NULL);
ALTER TABLE tenant_docs ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_docs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_docs
    USING (tenant = current_setting('app.tenant', true)::int);

CREATE TABLE long_documents (id serial PRIMARY KEY, body text NOT NULL);

CREATE TABLE crm_contacts (id serial PRIMARY KEY, contact_name text NOT NULL, contact_email text,
                           email_lower text);
CREATE FUNCTION crm_contacts_lower() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.email_lower := lower(NEW.contact_email);
    RETURN NEW;
END $$;
CREATE TRIGGER crm_contacts_lower BEFORE INSERT OR UPDATE ON crm_contacts
    FOR EACH ROW EXECUTE FUNCTION crm_contacts_lower();

CREATE VIEW account_directory AS SELECT id, email, full_name FROM accounts;
CREATE MATERIALIZED VIEW account_emails AS SELECT id, email, lower(login_email) AS login FROM accounts;
CREATE UNIQUE INDEX account_emails_id ON account_emails (id);
"""


def load_schema_zoo(pg, dbname: str = "zoo") -> str:
    """Create ``dbname`` on the embedded server ``pg`` and fill it; returns the name."""
    pg.create_database(dbname)
    with psycopg.connect(pg.conninfo(dbname), autocommit=True) as conn:
        conn.execute(SCHEMA_SQL)
        ids = []
        for i, (first, last, email, login, recovery, ip) in enumerate(ACCOUNTS):
            row = conn.execute(
                "INSERT INTO accounts (email, login_email, first_name, last_name, mood, label, nicknames, "
                "balance, wallet, session_length, avatar, last_ip, bio, motto) VALUES "
                "(%s, %s, %s, %s, %s, %s, %s, %s, %s::numeric::money, %s::interval, %s, %s, %s, %s) "
                "RETURNING id",
                (email, login, first, last, ("happy", "sad", "meh")[i], f"tier-{i}", [NICKNAMES[i], "x"],
                 10 * i + 0.5, 12.34 * (i + 1), f"{i + 1} hours 5 minutes", bytes([0, 1, 2, 255, i]), ip,
                 BIOS[i], MOTTOS[i]),
            ).fetchone()  # fmt: skip
            ids.append(row[0])
            conn.execute(
                "INSERT INTO account_settings (account_id, prefs) VALUES (%s, %s)",
                (row[0], json.dumps({"theme": "dark", "recovery_email": recovery, "notify": True})),
            )
            conn.execute("INSERT INTO newsletter_subscriptions (email) VALUES (%s)", (email,))
        conn.execute("INSERT INTO orgs (name) VALUES ('Zoo Holdings'), ('Zoo Labs')")
        for i, account in enumerate(ids):
            conn.execute(
                "INSERT INTO memberships (org_id, account_id, role) VALUES (%s, %s, %s)",
                (1 + i % 2, account, "admin" if i == 0 else "member"),
            )
            conn.execute(
                "INSERT INTO membership_events (org_id, account_id) VALUES (%s, %s)", (1 + i % 2, account)
            )
        manager = None
        for name, email in STAFF:
            manager = conn.execute(
                'INSERT INTO "Back Office"."Staff Members" (manager_id, "Full Name", "E-mail") '
                "VALUES (%s, %s, %s) RETURNING id",
                (manager, name, email),
            ).fetchone()[0]
        for i, email in enumerate(EVENT_ACTORS):
            conn.execute(
                "INSERT INTO events (kind, actor_email, payload) VALUES (%s, %s, %s)",
                (("login", "purchase")[i], email, json.dumps({"n": i})),
            )
        for phone, body in zip(MESSAGE_PHONES, MESSAGE_BODIES, strict=True):
            conn.execute("INSERT INTO messages (sender_phone, body) VALUES (%s, %s)", (phone, body))
        for token, email in zip(SESSION_TOKENS, SESSION_EMAILS, strict=True):
            conn.execute("INSERT INTO login_sessions (token, email) VALUES (%s, %s)", (token, email))
        for i, email in enumerate(TENANT_OWNERS):
            conn.execute(
                "INSERT INTO tenant_docs (tenant, owner_email, title) VALUES (%s, %s, 'contract')",
                (i + 1, email),
            )
        conn.execute("INSERT INTO long_documents (body) VALUES (%s)", (LONG_TEXT,))
        for name, email in zip(CONTACT_NAMES, CONTACT_EMAILS, strict=True):
            conn.execute(
                "INSERT INTO crm_contacts (contact_name, contact_email) VALUES (%s, %s)", (name, email)
            )
        conn.execute("REFRESH MATERIALIZED VIEW account_emails")
        conn.execute("ANALYZE")
    return dbname


def sensitive_values() -> list[str]:
    """Every original that must not be found anywhere in staging after a run."""
    values = [v for a in ACCOUNTS for v in a]
    values += NICKNAMES + [b.split("\t")[0].split(":")[0] for b in BIOS]
    values += [n for s in STAFF for n in s] + EVENT_ACTORS + MESSAGE_BODIES
    values += SESSION_TOKENS + SESSION_EMAILS + TENANT_OWNERS + [TOAST_NAME] + CONTACT_NAMES + CONTACT_EMAILS
    values += [p.replace(" ", "") for p in MESSAGE_PHONES] + MESSAGE_PHONES
    values += [a[1].lower() for a in ACCOUNTS] + [a[3].lower() for a in ACCOUNTS]  # tsvector, lower()
    return values


def row_counts() -> dict[str, int]:
    return {
        "accounts": len(ACCOUNTS),
        "account_settings": len(ACCOUNTS),
        "newsletter_subscriptions": len(ACCOUNTS),
        "orgs": 2,
        "memberships": len(ACCOUNTS),
        "membership_events": len(ACCOUNTS),
        '"Back Office"."Staff Members"': len(STAFF),
        "events": len(EVENT_ACTORS),
        "messages": len(MESSAGE_PHONES),
        "login_sessions": len(SESSION_TOKENS),
        "tenant_docs": len(TENANT_OWNERS),
        "long_documents": 1,
        "crm_contacts": len(CONTACT_NAMES),
        "account_emails": len(ACCOUNTS),
    }


# The jsonb recovery e-mail is masked on load by the json transformer; the PII scan judges the rest.
RULES_YAML = r"""
source_app: zoo-production
anonymization_tables:
  - table: accounts
    columns:
      email: email
      login_email: email
      first_name: first_name
      last_name: last_name
      nicknames: null
      last_ip: ip  # an address of the same family in a reserved range
      avatar: null  # a picture of the person (personal.photo)
      bio: hash
  - table: account_settings
    columns:
      prefs:
        transformer: json
        paths: {recovery_email: email}
  - table: newsletter_subscriptions
    columns:
      email: email
  - table: '"Back Office"."Staff Members"'
    columns:
      Full Name: full_name
      E-mail: {transformer: email, domain: zoo-staff.test}
  - table: events
    columns:
      actor_email: email
  - table: messages
    columns:
      sender_phone: phone
      body: hash
  - table: login_sessions
    columns:
      token: hash
      email: email
  - table: tenant_docs
    columns:
      owner_email: email
  - table: long_documents
    columns:
      body: hash
  - table: crm_contacts
    columns:
      contact_name: full_name
      contact_email: email
      email_lower: email
pii_scan:
  on_unmasked: fail
  allow:
    - column: public.accounts.motto
      reason: "public motto, reviewed"
    - column: public.accounts.label
      reason: "tier label"
    - column: public.orgs.name
      reason: "company names"
verification:
  enabled: true
restore:
  mode: auto
  keep_previous: false
"""
