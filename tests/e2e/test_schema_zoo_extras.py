"""Schema zoo, extras: real-world schema features the zoo (``test_schema_zoo``) does not hold, each in a
production database dumped with the embedded server's ``pg_dump -Fc`` and driven through the same core
(``run_core``: archive plan, pre-data, masked load with the ``stream`` or ``trigger`` engine, finish,
post-data, materialized views, PII scan, verification, promotion), as a superuser through a scratch
database and in place as a role with Scalingo's grants.

- Extensions: the embedded servers ship only ``vector`` (pgvector) besides plpgsql, so citext, hstore,
  pg_trgm, uuid-ossp, pgcrypto, unaccent and btree_gist cannot be created here. Their real-world uses are
  stood in for by built-ins: a unique ``lower(email)`` index for citext, ``gen_random_uuid()`` defaults
  for uuid-ossp/pgcrypto, a GIN full-text expression index on a masked column (with a text search
  configuration of the application's) for a trigram index, a GiST exclusion constraint on a range for
  btree_gist; ``vector`` itself with an HNSW index, as a no-primary-key table's key, in a schema of its
  own, and one the Scalingo-like role cannot create.
- Row-level security with ``FORCE ROW LEVEL SECURITY`` on masked tables (also partitioned), a
  materialized view over one.
- User triggers (BEFORE INSERT/UPDATE rewriting rows, AFTER writing an audit table, disabled, ENABLE
  ALWAYS, a constraint trigger) and rules, a publication.
- Column collations ("C", "POSIX", a libc collation of the application's; the embedded servers are built
  without ICU) on masked columns under unique indexes, partial and expression unique indexes.
- Unlogged tables, multi-megabyte TOASTed values, comments, extended statistics (also on expressions) on
  masked columns, tsvector columns (trigger-maintained and generated).
- A Rails app's (Devise columns) and a Django app's own tables; typed tables; domains over domains;
  unique STORED generated columns; PostgreSQL 18 virtual generated columns and named NOT NULL.
- Many tables (300, a rule on 150 and a ``CREATE RULE`` on each of those).
- A second in-place run into the same database, and the staging role's own timeouts.
"""

from __future__ import annotations

import time

import psycopg
import pytest
import yaml
from psycopg import sql

from scalingo_staging_sync.anonymize.rules import parse_rules_text
from scalingo_staging_sync.inventory import plan_from_archive
from scalingo_staging_sync.restore.pgtools import find_pg_tools
from scalingo_staging_sync.testing.postgres import pg_bin_dir
from tests.e2e import test_schema_zoo as zoo
from tests.e2e.hard_dataset import production_dump
from tests.e2e.test_schema_zoo import _checksum, _columns, _fetch, run_core, staging_role_styles

pytest.importorskip("duckdb")

EXTRAS_SQL = r"""
CREATE EXTENSION IF NOT EXISTS vector;

-- the embedded servers are built without ICU: libc collations only
CREATE COLLATION app_c_utf8 (provider = libc, locale = 'C.UTF-8');
-- full-text search of the application's own (pg_search's setup, without unaccent)
CREATE TEXT SEARCH DICTIONARY app_simple (TEMPLATE = pg_catalog.simple);
CREATE TEXT SEARCH CONFIGURATION app_search (COPY = pg_catalog.simple);
ALTER TEXT SEARCH CONFIGURATION app_search ALTER MAPPING FOR asciiword WITH app_simple;

-- Rails' own tables
CREATE TABLE schema_migrations (version varchar NOT NULL PRIMARY KEY);
CREATE TABLE ar_internal_metadata (key varchar NOT NULL PRIMARY KEY, value varchar,
                                   created_at timestamp(6) NOT NULL, updated_at timestamp(6) NOT NULL);

-- a Rails users table: uuid key by default, a case-insensitive e-mail (citext's stand-in), a "C" login,
-- an ICU display name, a full-text GIN expression index on a masked column (pg_trgm's stand-in), a
-- vector column with an HNSW index, extended statistics on masked columns, comments
CREATE TABLE users (
    id uuid NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    email varchar NOT NULL COLLATE "POSIX",
    login text COLLATE "C" NOT NULL,
    display_name varchar(120) COLLATE app_c_utf8,
    bio text,
    encrypted_password varchar NOT NULL DEFAULT '',
    embedding vector(3),
    deleted_at timestamp(6),
    reset_password_token varchar,
    current_sign_in_ip inet,
    last_sign_in_ip inet,
    confirmed_at timestamp(6),
    birth_date date,
    search_vector tsvector,  -- pg_search's column, kept up to date by the application
    search_generated tsvector GENERATED ALWAYS AS (to_tsvector('public.app_search', coalesce(bio, ''))) STORED,
    created_at timestamp(6) NOT NULL,
    updated_at timestamp(6) NOT NULL
);
CREATE UNIQUE INDEX index_users_on_email ON users (lower(email));  -- citext's use without it
CREATE UNIQUE INDEX index_users_on_login ON users (login);
CREATE UNIQUE INDEX index_users_on_lower_display_name ON users (lower(display_name)) WHERE deleted_at IS NULL;
CREATE INDEX index_users_on_bio_fts ON users USING gin (to_tsvector('public.app_search', coalesce(bio, '')));
CREATE INDEX index_users_on_login_pattern ON users (login text_pattern_ops);
CREATE INDEX index_users_on_embedding ON users USING hnsw (embedding vector_l2_ops);
CREATE UNIQUE INDEX index_users_on_reset_password_token ON users (reset_password_token);
CREATE STATISTICS users_names_stats (mcv, ndistinct, dependencies) ON display_name, login FROM users;
CREATE STATISTICS users_expr_stats (mcv) ON lower(email), display_name FROM users;
CREATE PUBLICATION app_pub FOR TABLE users;
COMMENT ON TABLE users IS 'People who log in';
COMMENT ON COLUMN users.email IS 'login e-mail, case-insensitive';

-- triggers and rules of the application
CREATE TABLE audit_log (id bigserial PRIMARY KEY, row_id uuid, op text NOT NULL, old_email text, new_email text,
                        at timestamptz NOT NULL DEFAULT now());
CREATE FUNCTION set_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.updated_at := '2000-01-01 00:00:00'; RETURN NEW; END $$;
CREATE FUNCTION rewrite_email() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.email := upper(NEW.email); NEW.bio := 'rewritten by trigger'; RETURN NEW; END $$;
CREATE FUNCTION audit_users() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE users SET search_vector = to_tsvector('simple', coalesce(display_name, '') || ' ' || email);
INSERT INTO audit_log (row_id, op, old_email, new_email)
    VALUES (NEW.id, TG_OP, CASE WHEN TG_OP = 'UPDATE' THEN OLD.email END, NEW.email);
    RETURN NULL;
END $$;
CREATE FUNCTION noop_trigger() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE TABLE contacts (id serial PRIMARY KEY, email text NOT NULL, phone text, kind text NOT NULL,
                       updated_at timestamp NOT NULL);
CREATE TABLE contacts_archive (id int, email text);
CREATE RULE contacts_no_delete AS ON DELETE TO contacts DO INSTEAD NOTHING;
CREATE RULE contacts_log AS ON INSERT TO contacts DO ALSO INSERT INTO contacts_archive VALUES (NEW.id, NEW.email);
CREATE RULE contacts_upd AS ON UPDATE TO contacts DO ALSO
    INSERT INTO audit_log (op, old_email, new_email) VALUES ('RULE', OLD.email, NEW.email);

-- row-level security, forced on the owner: a policy that reads a setting (unset: no rows) and one
-- that errors when the setting is unset
CREATE TABLE tenant_notes (id int PRIMARY KEY, tenant_id int NOT NULL, author_email text NOT NULL, body text);
ALTER TABLE tenant_notes ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_notes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_notes
    USING (tenant_id = current_setting('app.tenant_id', true)::int);
CREATE MATERIALIZED VIEW tenant_note_counts AS SELECT tenant_id, count(*) AS notes FROM tenant_notes GROUP BY 1;
CREATE TABLE tenant_invoices (id int PRIMARY KEY, tenant_id int NOT NULL, payer_email text, amount numeric);
ALTER TABLE tenant_invoices ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_invoices FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_strict ON tenant_invoices FOR ALL
    USING (tenant_id = current_setting('app.tenant_id')::int)
    WITH CHECK (tenant_id = current_setting('app.tenant_id')::int);

-- unlogged, a GiST exclusion on a range (btree_gist's use without it), TOASTed multi-megabyte values
CREATE UNLOGGED TABLE login_attempts (id bigserial PRIMARY KEY, email text, ip inet, at timestamptz NOT NULL);
CREATE TABLE bookings (id int PRIMARY KEY, guest_email text NOT NULL, during tsrange NOT NULL,
                       EXCLUDE USING gist (during WITH &&));
-- analytics rows without a primary key: keyed by a vector, a range, a timestamp and a path
CREATE TABLE page_views (at timestamptz NOT NULL, path text NOT NULL, user_agent text, ip inet,
                         embedding vector(2), during tsrange);
CREATE TABLE documents (id int PRIMARY KEY, owner_email text, body text, scan bytea);
COMMENT ON COLUMN documents.body IS 'full text, may hold personal data';

-- Django's own tables
CREATE TABLE django_migrations (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, app varchar(255) NOT NULL,
                                name varchar(255) NOT NULL, applied timestamptz NOT NULL);
CREATE TABLE django_content_type (id integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                                  app_label varchar(100) NOT NULL, model varchar(100) NOT NULL,
                                  CONSTRAINT django_content_type_app_label_model_76bd3d3b_uniq UNIQUE (app_label, model));
CREATE TABLE auth_user (
    id integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, password varchar(128) NOT NULL,
    last_login timestamptz, is_superuser boolean NOT NULL, username varchar(150) NOT NULL UNIQUE,
    first_name varchar(150) NOT NULL, last_name varchar(150) NOT NULL, email varchar(254) NOT NULL,
    is_staff boolean NOT NULL, is_active boolean NOT NULL, date_joined timestamptz NOT NULL
);
CREATE INDEX auth_user_username_6821ab7c_like ON auth_user (username varchar_pattern_ops);
CREATE TABLE auth_group (id integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, name varchar(150) NOT NULL UNIQUE);
CREATE TABLE auth_user_groups (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    user_id integer NOT NULL REFERENCES auth_user (id) DEFERRABLE INITIALLY DEFERRED,
    group_id integer NOT NULL REFERENCES auth_group (id) DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT auth_user_groups_user_id_group_id_94350c0c_uniq UNIQUE (user_id, group_id)
);
CREATE TABLE django_admin_log (
    id integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, action_time timestamptz NOT NULL, object_id text,
    object_repr varchar(200) NOT NULL, action_flag smallint NOT NULL CHECK (action_flag >= 0),
    change_message text NOT NULL,
    content_type_id integer REFERENCES django_content_type (id) DEFERRABLE INITIALLY DEFERRED,
    user_id integer NOT NULL REFERENCES auth_user (id) DEFERRABLE INITIALLY DEFERRED
);
CREATE TABLE django_session (session_key varchar(40) NOT NULL PRIMARY KEY, session_data text NOT NULL,
                             expire_date timestamptz NOT NULL);
CREATE INDEX django_session_session_key_c0390e0f_like ON django_session (session_key varchar_pattern_ops);
CREATE INDEX django_session_expire_date_a5c62663 ON django_session (expire_date);
"""

LOAD_SQL = r"""
INSERT INTO schema_migrations SELECT to_char(20240101000000 + g * 1000000, 'FM99999999999999')
    FROM generate_series(1, 40) g;
INSERT INTO ar_internal_metadata VALUES ('environment', 'production', '2024-01-01', '2024-01-01'),
                                        ('schema_sha1', 'abc123', '2024-01-01', '2024-01-01');
INSERT INTO users (email, login, display_name, bio, encrypted_password, embedding, deleted_at, reset_password_token,
                   current_sign_in_ip, last_sign_in_ip, confirmed_at, birth_date, created_at, updated_at)
SELECT CASE WHEN g % 3 = 0 THEN 'Mixed.Case.' || g || '@Prod-Users.test' ELSE 'user.' || g || '@prod-users.test' END,
       'login_' || g,
       CASE g % 4 WHEN 0 THEN 'Émilie Ærø ' || g WHEN 1 THEN 'zoé ' || g WHEN 2 THEN 'ZOE ' || g || 'x'
                  ELSE NULL END,
       CASE WHEN g % 5 = 0 THEN NULL ELSE 'I love hiking in the Alps, call me: user ' || g END,
       '$2a$12$' || md5(g::text),
       CASE WHEN g % 7 = 0 THEN NULL ELSE ('[' || g || ',' || g * 2 || ',' || g * 3 || ']')::vector END,
       CASE WHEN g % 10 = 0 THEN timestamp '2025-05-05 10:00:00' END,
       CASE WHEN g % 2 = 0 THEN md5('reset' || g) END, ('192.168.1.' || g)::inet, NULL,
       timestamp '2024-02-02 10:11:12.654321' + g * interval '1 hour', date '1980-01-01' + g * 97,
       ('2024-03-0' || (1 + g % 9) || ' 12:00:00')::timestamp,
       ('2024-04-0' || (1 + g % 9) || ' 08:30:00.123456')::timestamp
FROM generate_series(1, 60) g;
INSERT INTO audit_log (row_id, op, old_email, new_email, at)
SELECT id, 'INSERT', NULL, email, '2024-05-01 00:00:00+00' FROM users;
INSERT INTO contacts (email, phone, kind, updated_at)
SELECT 'Contact.' || g || '@prod-contacts.test', '+33 6 12 34 56 ' || lpad(g::text, 2, '0'), 'lead',
       ('2024-06-0' || (1 + g % 9) || ' 09:00:00')::timestamp
FROM generate_series(1, 25) g;
INSERT INTO tenant_notes SELECT g, 1 + g % 3, 'note.author.' || g || '@prod-notes.test', 'secret note ' || g
FROM generate_series(1, 30) g;
INSERT INTO tenant_invoices SELECT g, 1 + g % 4, 'payer.' || g || '@prod-payers.test', g * 10.5
FROM generate_series(1, 20) g;
INSERT INTO login_attempts (email, ip, at)
SELECT 'attempt.' || g || '@prod-logins.test', ('10.1.2.' || g)::inet, '2025-01-01 00:00:00+00'
FROM generate_series(1, 30) g;
INSERT INTO bookings SELECT g, 'guest.' || g || '@prod-bookings.test',
    tsrange('2025-01-01'::timestamp + g * interval '1 day', '2025-01-01'::timestamp + (g + 1) * interval '1 day')
FROM generate_series(1, 20) g;
INSERT INTO page_views
SELECT '2025-03-03 03:03:03.5+00'::timestamptz + (g % 7) * interval '1 minute', '/products/' || (g % 5),
       'Mozilla/5.0 user ' || g, ('172.16.0.' || g)::inet,
       CASE WHEN g % 4 = 0 THEN NULL ELSE ('[' || g % 3 || ',0.5]')::vector END,
       CASE WHEN g % 3 = 0 THEN NULL ELSE tsrange('2025-01-01', ('2025-01-0' || (2 + g % 5))::timestamp) END
FROM generate_series(1, 40) g;
INSERT INTO documents
SELECT g, 'owner.' || g || '@prod-docs.test',
       (SELECT string_agg(md5(g::text || ':' || i), ' ') FROM generate_series(1, 90000) i),
       (SELECT string_agg(decode(md5(i::text || 'x' || g), 'hex'), ''::bytea) FROM generate_series(1, 90000) i)
FROM generate_series(1, 3) g;
INSERT INTO django_migrations (app, name, applied)
SELECT 'app' || g % 5, '000' || g || '_initial', '2023-01-01 00:00:00+00' FROM generate_series(1, 12) g;
INSERT INTO django_content_type (app_label, model) VALUES ('auth', 'user'), ('auth', 'group'), ('sessions', 'session');
INSERT INTO auth_user (password, last_login, is_superuser, username, first_name, last_name, email, is_staff,
                       is_active, date_joined)
SELECT 'pbkdf2_sha256$600000$' || md5(g::text), CASE WHEN g % 4 = 0 THEN NULL ELSE timestamptz '2025-02-02 02:02:02+00' END,
       g = 1, 'django.user.' || g, CASE WHEN g % 6 = 0 THEN '' ELSE 'Firstname' || g END, 'Lastname' || g,
       CASE WHEN g % 5 = 0 THEN '' ELSE 'django.' || g || '@prod-django.test' END, g < 3, true,
       '2023-06-06 06:06:06+00'
FROM generate_series(1, 30) g;
INSERT INTO auth_group (name) VALUES ('editors'), ('admins');
INSERT INTO auth_user_groups (user_id, group_id) SELECT g, 1 + g % 2 FROM generate_series(1, 30, 2) g;
INSERT INTO django_admin_log (action_time, object_id, object_repr, action_flag, change_message, content_type_id, user_id)
SELECT '2025-01-01 00:00:00+00', g::text, 'Firstname' || g || ' <django.' || g || '@prod-django.test>', 2,
       '[{"changed": {"fields": ["Email address"]}}]', 1, g
FROM generate_series(1, 10) g;
INSERT INTO django_session
SELECT md5('session' || g), encode(convert_to('{"_auth_user_id": "' || g || '", "email": "django.' || g
       || '@prod-django.test"}', 'UTF8'), 'base64'), '2026-01-01 00:00:00+00'
FROM generate_series(1, 25) g;
"""

# the application's triggers are created after the rows (as a migration adds them): production's rows
# were never rewritten by them, so a trigger firing on staging would show
TRIGGERS_SQL = """
CREATE TRIGGER users_updated_at BEFORE INSERT OR UPDATE ON users FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER users_rewrite_email BEFORE INSERT OR UPDATE OF email ON users
    FOR EACH ROW EXECUTE FUNCTION rewrite_email();
CREATE TRIGGER users_audit AFTER INSERT OR UPDATE ON users FOR EACH ROW EXECUTE FUNCTION audit_users();
CREATE TRIGGER contacts_updated_at BEFORE INSERT OR UPDATE ON contacts
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER users_disabled BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION rewrite_email();
ALTER TABLE users DISABLE TRIGGER users_disabled;
ALTER TABLE users ENABLE ALWAYS TRIGGER users_audit;
CREATE CONSTRAINT TRIGGER bookings_audit AFTER INSERT OR UPDATE ON bookings DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION noop_trigger();
REFRESH MATERIALIZED VIEW tenant_note_counts;
ANALYZE;
"""

EXTRAS_RULES = r"""
source_app: extras-production
anonymization_tables:
  - table: users
    columns:
      email: email
      login: {transformer: hash, length: 24}
      display_name: {transformer: hash, length: 20}
      bio: hash
      encrypted_password: {transformer: fixed, value: "x"}
      reset_password_token: hash
      current_sign_in_ip: null
      last_sign_in_ip: null
      confirmed_at: date_shift
      birth_date: date_shift
      search_vector: null
  - table: page_views
    columns:
      user_agent: hash
      ip: null
  - table: audit_log
    columns:
      old_email: email
      new_email: email
  - table: contacts
    condition: "kind = 'lead'"
    columns:
      email: email
      phone: phone
  - table: contacts_archive
    columns:
      email: email
  - table: tenant_notes
    columns:
      author_email: email
      body: hash
  - table: tenant_invoices
    columns:
      payer_email: email
  - table: login_attempts
    columns:
      email: email
      ip: null
  - table: bookings
    columns:
      guest_email: email
  - table: documents
    columns:
      owner_email: email
      body: hash
  - table: auth_user
    columns:
      username: {transformer: hash, length: 32}
      first_name: first_name
      last_name: last_name
      email: email
      password: {transformer: fixed, value: "!"}
  - table: django_admin_log
    columns:
      object_repr: {transformer: hash, length: 40}
      change_message: {transformer: fixed, value: "[]"}
  - table: django_session
    columns:
      session_key: {transformer: hash, length: 40}
      session_data: hash
pii_scan:
  on_unmasked: fail
  allow:
    - column: public.documents.scan
      reason: "scanned images, reviewed"
verification:
  enabled: true
"""

#: table -> (masked columns, ORDER BY)
EXTRAS_MASKED = {
    "users": (
        [
            "email",
            "login",
            "display_name",
            "bio",
            "encrypted_password",
            "reset_password_token",
            "current_sign_in_ip",
            "last_sign_in_ip",
            "confirmed_at",
            "birth_date",
            "search_vector",
            "search_generated",
        ],
        "id",
    ),  # fmt: skip
    "page_views": (["user_agent", "ip"], "at, path"),
    "django_admin_log": (["object_repr", "change_message"], "id"),
    "audit_log": (["old_email", "new_email"], "id"),
    "contacts": (["email", "phone"], "id"),
    "contacts_archive": (["email"], "id"),
    "tenant_notes": (["author_email", "body"], "id"),
    "tenant_invoices": (["payer_email"], "id"),
    "login_attempts": (["email", "ip"], "id"),
    "bookings": (["guest_email"], "id"),
    "documents": (["owner_email", "body"], "id"),
    "auth_user": (["username", "first_name", "last_name", "email", "password"], "id"),
    "django_session": (["session_key", "session_data"], "expire_date, session_data"),
}
EXTRAS_UNRULED = {
    "schema_migrations": "version",
    "ar_internal_metadata": "key",
    "django_migrations": "id",
    "django_content_type": "id",
    "auth_group": "id",
    "auth_user_groups": "id",
}


def load_extras(pg, dbname: str) -> None:
    pg.create_database(dbname)
    with psycopg.connect(pg.conninfo(dbname), autocommit=True) as conn:
        conn.execute(EXTRAS_SQL)
        conn.execute(LOAD_SQL)
        conn.execute(TRIGGERS_SQL)


@pytest.fixture(scope="module")
def extras_dump(prod_pg, tmp_path_factory):
    db = "schema_zoo_extras_prod"
    load_extras(prod_pg, db)
    dump = prod_pg.pg_dump(db, tmp_path_factory.mktemp("extras") / "extras.pgsql")
    yield prod_pg, db, dump
    prod_pg.drop_database(db)


@pytest.fixture
def scalingo_extensions(monkeypatch):
    """Scalingo enables an extension on the database for the app (the app role is no superuser and
    ``vector`` is not a trusted extension): the in-place databases of ``run_core`` get it beforehand."""
    made = zoo.make_scalingo_db

    def make(pg, dbname):
        target = made(pg, dbname)
        pg.execute("CREATE EXTENSION IF NOT EXISTS vector", dbname)
        return target

    monkeypatch.setattr(zoo, "make_scalingo_db", make)


def _texts(pg, db: str, table: str, column: str, order: str) -> list:
    query = sql.SQL("SELECT {}::text FROM {} ORDER BY {}").format(
        sql.Identifier(column), sql.Identifier("public", table), sql.SQL(order)
    )
    return [r[0] for r in _fetch(pg, db, query)]


def _assert_masked_and_intact(prod_pg, prod_db, staging, db, masked_tables, unruled) -> None:
    for table, (masked, order) in masked_tables.items():
        for column in masked:
            before = _texts(prod_pg, prod_db, table, column, order)
            after = _texts(staging, db, table, column, order)
            assert len(before) == len(after), (table, column)
            survivors = {v for v in before if v not in (None, "")} & set(after)
            assert not survivors, (table, column, sorted(survivors)[:3])
        keep = [c for c in _columns(prod_pg, prod_db, "public", table) if c not in masked]
        assert _checksum(staging, db, "public", table, keep, order) == _checksum(
            prod_pg, prod_db, "public", table, keep, order
        ), table
    for table, order in unruled.items():
        every = _columns(prod_pg, prod_db, "public", table)
        assert _checksum(staging, db, "public", table, every, order) == _checksum(
            prod_pg, prod_db, "public", table, every, order
        ), table


@pytest.mark.parametrize(
    ("staging_version", "engine", "scalingo_role"),
    [(16, "stream", False), (16, "trigger", False), (18, "stream", True), (18, "trigger", True)],
    ids=[
        "pg16-stream",
        "pg16-trigger",
        "pg18-stream-in-place-scalingo-role",
        "pg18-trigger-in-place-scalingo-role",
    ],
)
def test_the_core_masks_real_world_schema_features(
    extras_dump, request, scalingo_extensions, staging_version, engine, scalingo_role
):
    prod_pg, prod_db, dump = extras_dump
    staging = request.getfixturevalue(f"staging_pg{staging_version}")
    with staging_role_styles(staging, scalingo_role):
        out = run_core(dump, staging, EXTRAS_RULES, engine, scalingo_role=scalingo_role)
    db = out["db"]
    try:
        for step in ("pre", "load", "post"):
            assert out[step]["warnings"] == [], (step, out[step]["warnings"])
        assert out["scan"].passed and out["verification"]["passed"]
        proven = {
            t["table"]: (t["keys_sampled"], t["keys_found"], t["rows_found"])
            for t in out["verification"]["tables"]
        }
        assert set(proven) == {f"public.{t}" for t in EXTRAS_MASKED}
        assert all(found >= sampled > 0 for sampled, found, _rows in proven.values()), proven
        _assert_masked_and_intact(prod_pg, prod_db, staging, db, EXTRAS_MASKED, EXTRAS_UNRULED)
        # every row of the row-level-secured tables, as superuser
        for table in ("tenant_notes", "tenant_invoices"):
            count = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
            assert _fetch(staging, db, count) == _fetch(prod_pg, prod_db, count)
            assert proven[f"public.{table}"][2] == _fetch(prod_pg, prod_db, count)[0][0]
        # triggers, rules, policies, statistics objects, collations and indexes are production's
        for query in (
            "SELECT tgrelid::regclass::text, tgname, tgenabled, pg_get_triggerdef(oid) FROM pg_trigger "
            "WHERE NOT tgisinternal ORDER BY 1, 2",
            "SELECT tablename, rulename, definition FROM pg_rules WHERE schemaname = 'public' ORDER BY 1, 2",
            "SELECT tablename, policyname, qual, with_check FROM pg_policies ORDER BY 1, 2",
            "SELECT relname, relrowsecurity, relforcerowsecurity, relpersistence FROM pg_class "
            "WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' ORDER BY 1",
            "SELECT stxname, stxkind::text FROM pg_statistic_ext ORDER BY 1",
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1",
            "SELECT attrelid::regclass::text, attname, collname FROM pg_attribute a JOIN pg_collation c "
            "ON c.oid = a.attcollation WHERE attrelid IN (SELECT oid FROM pg_class WHERE "
            "relnamespace = 'public'::regnamespace AND relkind = 'r') AND attnum > 0 ORDER BY 1, 2",
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE connamespace = 'public'::regnamespace AND contype <> 'n' ORDER BY 1, 2",
        ):
            assert _fetch(staging, db, query) == _fetch(prod_pg, prod_db, query), query
        assert _fetch(staging, db, "SELECT count(*) FROM pg_index WHERE NOT indisvalid") == [(0,)]
        # the materialized view over a forced row-level-secured table was refreshed from every row
        counts = "SELECT * FROM tenant_note_counts ORDER BY 1"
        assert _fetch(staging, db, counts) == _fetch(prod_pg, prod_db, counts)
        # the application's triggers did not fire: the masked e-mails are not upper-cased, updated_at
        # is production's (checksummed above), the audit table holds production's rows only (masked)
        emails = [r[0] for r in _fetch(staging, db, "SELECT email FROM users")]
        assert all(e.startswith("u") and e.endswith("@example.com") for e in emails), emails[:3]
        assert _fetch(staging, db, "SELECT count(*) FROM audit_log") == [(60,)]
        assert _fetch(staging, db, "SELECT count(*) FROM contacts_archive") == [
            (25,)
        ]  # the rule's, in production
        assert _fetch(staging, db, "SELECT count(search_vector) FROM users") == [(0,)]
        # the full-text index on the masked column finds masked words, not production's
        assert _fetch(
            staging,
            db,
            "SELECT count(*) FROM users WHERE to_tsvector('simple', coalesce(bio, '')) @@ 'hiking'",
        ) == [(0,)]
        # vector data and its index kept
        assert _fetch(staging, db, "SELECT count(*) FROM users WHERE embedding <-> '[1,2,3]' < 1") == [(1,)]
        # comments are not restored (pg_restore --no-comments, docs/operators.md)
        assert _fetch(staging, db, "SELECT obj_description('public.users'::regclass, 'pg_class')") == [
            (None,)
        ]
        # TOASTed multi-megabyte values masked whole; the bytea beside them byte for byte
        assert _fetch(staging, db, "SELECT min(length(body)), max(length(body)) FROM documents") == [(32, 32)]
        # extended statistics on masked columns were computed from the masked data
        stats = _fetch(
            staging, db, "SELECT count(*) FROM pg_stats_ext WHERE statistics_name = 'users_names_stats'"
        )
        assert stats == [(1,)]
        if engine == "stream":  # every table masked on load streams (users: date_shift on a timestamp)
            streamed = sorted(t for t, how in out["stream_used"].items() if how == "stream")
            on_load = {f"public.{t}" for t in EXTRAS_MASKED} - {"public.contacts"}  # contacts: a condition
            assert streamed == sorted(on_load), out["stream_used"]
    finally:
        staging.drop_database(db)


RLS_SQL = """
CREATE TABLE tenant_notes (id int PRIMARY KEY, tenant_id int NOT NULL, author_email text NOT NULL);
ALTER TABLE tenant_notes ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_notes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_notes USING (tenant_id = current_setting('app.tenant_id', true)::int);
CREATE TABLE plain_notes (id int PRIMARY KEY, body text);
ALTER TABLE plain_notes ENABLE ROW LEVEL SECURITY;  -- not forced: its owner reads every row anyway
INSERT INTO tenant_notes SELECT g, g % 3, 'note.' || g || '@prod-notes.test' FROM generate_series(1, 12) g;
INSERT INTO plain_notes SELECT g, 'body ' || g FROM generate_series(1, 5) g;
CREATE TABLE tenant_events (id int, tenant_id int NOT NULL) PARTITION BY LIST (tenant_id);
CREATE TABLE tenant_events_1 PARTITION OF tenant_events FOR VALUES IN (1);
ALTER TABLE tenant_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_events FORCE ROW LEVEL SECURITY;
ALTER TABLE tenant_events_1 ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_events_1 FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_events_isolation ON tenant_events USING (tenant_id = current_setting('app.tenant_id')::int);
INSERT INTO tenant_events SELECT g, 1 FROM generate_series(1, 4) g;
"""
CREATOR = "extras_rls_creator"


def test_force_row_level_security_is_held_back_until_promotion_only_for_a_role_subject_to_it(
    prod_pg, staging_pg16, tmp_path
):
    """Before the fix, a role restoring as the tables' owner without BYPASSRLS read the forced tables
    through their policies after post-data (the PII scan could not read a table whose policy errors on an
    unset setting and saw no row of one whose policy reads it with missing_ok; verification and the
    materialized views saw none either). Now FORCE is held back from the end of pre-data to the
    promotion (listed in the state schema) and applied again there, in place and through a scratch
    database; a superuser, exempt from row-level security, holds nothing back."""
    from scalingo_staging_sync.pgconn import PgTarget
    from scalingo_staging_sync.restore import targets
    from scalingo_staging_sync.restore.api import restore
    from tests.restore.restore_helpers import make_scalingo_db, superuser_target

    prod_db = "schema_zoo_rls_prod"
    prod_pg.create_database(prod_db)
    try:
        prod_pg.execute(RLS_SQL, prod_db)
        dump = prod_pg.pg_dump(prod_db, tmp_path / "rls.pgsql")
    finally:
        prod_pg.drop_database(prod_db)
    tools = find_pg_tools(pg_bin_dir(16))
    forced = "SELECT relname FROM pg_class WHERE relforcerowsecurity ORDER BY 1"
    held_name = f"{targets.STATE_SCHEMA}.{targets.HELD_RLS_TABLE}"
    held = f"SELECT to_regclass('{held_name}')::text"
    count = "SELECT count(*) FROM tenant_notes"
    role_db, swap_db, super_db = "extras_rls_role", "extras_rls_swap", "extras_rls_super"

    def load(target: PgTarget, mode: str) -> PgTarget:
        restore(dump, target, section="pre-data", mode=mode, tools=tools)
        into = targets.restore_database(target, mode)
        assert staging_pg16.execute(forced, into.dbname) == []  # held back
        listed = sql.SQL("SELECT * FROM {}").format(
            sql.Identifier(targets.STATE_SCHEMA, targets.HELD_RLS_TABLE)
        )
        assert _fetch(staging_pg16, into.dbname, listed) == [
            ("public", "tenant_events"),
            ("public", "tenant_events_1"),
            ("public", "tenant_notes"),
        ]
        restore(dump, target, section="data", mode=mode, tools=tools)
        restore(dump, target, section="post-data", mode=mode, tools=tools)
        with psycopg.connect(into.conninfo(), autocommit=True) as conn:  # the owner reads every row
            assert conn.execute(count).fetchone() == (12,)
            assert conn.execute("SELECT count(*) FROM tenant_events").fetchone() == (4,)
        return into

    try:
        # in place, as the Scalingo-like role
        role = make_scalingo_db(staging_pg16, role_db)
        load(role, "in_place")
        targets.promote(role, "in_place")
        assert staging_pg16.execute(forced, role_db) == [
            ("tenant_events",),
            ("tenant_events_1",),
            ("tenant_notes",),
        ]
        assert staging_pg16.execute(held, role_db) == [(None,)]
        with psycopg.connect(role.conninfo(), autocommit=True) as conn:  # production's behaviour again
            assert conn.execute(count).fetchone() == (0,)
        assert targets.promote(role, "in_place")["mode"] == "in_place"  # retried: nothing left to force

        # through a scratch database, as a role with CREATEDB that owns the live database
        with staging_pg16.connect() as conn:
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (CREATOR,)).fetchone():
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN CREATEDB NOSUPERUSER").format(sql.Identifier(CREATOR))
                )
        staging_pg16.create_database(swap_db, owner=CREATOR)
        creator = PgTarget(host=staging_pg16.host, port=staging_pg16.port, user=CREATOR, dbname=swap_db)
        load(creator, "swap")
        targets.promote(creator, "swap", keep_previous=False)
        assert staging_pg16.execute(forced, swap_db) == [
            ("tenant_events",),
            ("tenant_events_1",),
            ("tenant_notes",),
        ]
        assert staging_pg16.execute(f"SELECT to_regnamespace('{targets.STATE_SCHEMA}')::text", swap_db) == [
            (None,)
        ]
        with psycopg.connect(creator.conninfo(), autocommit=True) as conn:
            assert conn.execute(count).fetchone() == (0,)

        # a superuser is exempt from row-level security: nothing is held, no state schema in the scratch
        staging_pg16.create_database(super_db)
        target = superuser_target(staging_pg16, super_db)
        restore(dump, target, section="pre-data", mode="swap", tools=tools)
        scratch = targets.scratch_name(super_db)
        assert staging_pg16.execute(forced, scratch) == [
            ("tenant_events",),
            ("tenant_events_1",),
            ("tenant_notes",),
        ]
        assert staging_pg16.execute(held, scratch) == [(None,)]
    finally:
        for name in (role_db, swap_db, super_db, *(targets.scratch_name(d) for d in (swap_db, super_db))):
            staging_pg16.drop_database(name)


def test_a_second_in_place_run_into_the_same_staging_database(extras_dump, staging_pg16, scalingo_extensions):
    """Scalingo's staging database is the same every night: each in-place run drops what the role owns
    and restores again. Before the fixes (``restore.targets.wipe_owned_objects``), that wipe failed on an
    identity column's sequence listed before its table (``cannot drop sequence auth_group_id_seq because
    column id of table auth_group requires it``: an internal dependency, which CASCADE does not follow),
    which also broke the fail-closed wipe of a failed run; and the role's collations and text search
    configurations and dictionaries (in ``public``, which is never dropped) survived the wipe, so the
    next run's pre-data failed (``collation "app_c_utf8" for encoding "UTF8" already exists``)."""
    from scalingo_staging_sync.pgconn import PgTarget
    from scalingo_staging_sync.restore import targets
    from scalingo_staging_sync.restore.api import restore
    from tests.restore.restore_helpers import SCALINGO_ROLE

    _prod, _db, dump = extras_dump
    with staging_role_styles(staging_pg16, True):
        first = run_core(dump, staging_pg16, EXTRAS_RULES, "stream", scalingo_role=True)
    db = first["db"]
    try:
        target = PgTarget(host=staging_pg16.host, port=staging_pg16.port, user=SCALINGO_ROLE, dbname=db)
        objects = (
            "SELECT 'collation', collname FROM pg_collation WHERE collnamespace = 'public'::regnamespace "
            "UNION ALL SELECT 'ts config', cfgname FROM pg_ts_config WHERE cfgnamespace = 'public'::regnamespace "
            "UNION ALL SELECT 'ts dict', dictname FROM pg_ts_dict WHERE dictnamespace = 'public'::regnamespace "
            "ORDER BY 1, 2"
        )
        expected = [("collation", "app_c_utf8"), ("ts config", "app_search"), ("ts dict", "app_simple")]
        assert staging_pg16.execute(objects, db) == expected
        tools = find_pg_tools(pg_bin_dir(16))
        again = restore(dump, target, section="pre-data", mode="in_place", tools=tools, plan=first["plan"])
        assert again["mode"] == "in_place" and again["warnings"] == []
        assert staging_pg16.execute(objects, db) == expected
        wiped = targets.cleanup(target, "in_place", verified=False)
        assert wiped["proven"]
        assert staging_pg16.execute(objects, db) == []
        assert staging_pg16.execute("SELECT count(*) FROM pg_extension WHERE extname = 'vector'", db) == [
            (1,)
        ]
    finally:
        staging_pg16.drop_database(db)


REFUSALS = [
    # (what, column -> rule, expected fragments of the PlanError)
    (
        "a word list under a partial unique expression index",
        {"display_name": "first_name"},
        [
            "columns.display_name: transformer 'first_name' does not keep values unique",
            "index_users_on_lower_display_name",
        ],
    ),  # fmt: skip
    (
        "a short hash under a unique expression index",
        {"email": {"transformer": "hash", "length": 8}},
        ["columns.email", "index_users_on_email"],
    ),
    (
        "a string transformer on an extension's type",
        {"embedding": "hash"},
        [
            "columns.embedding: transformer 'hash' does not apply to type public.vector(3) (accepts string columns)"
        ],
    ),
    (
        "case-insensitive e-mails under a unique lower() index",
        {"email": {"transformer": "email", "case_insensitive": True}},
        ["columns.email", "index_users_on_email"],
    ),
]


@pytest.mark.parametrize(("what", "columns", "expected"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_rules_the_schema_cannot_take_are_refused_from_the_archive(extras_dump, what, columns, expected):
    from scalingo_staging_sync.anonymize.planner import PlanError

    _pg, _db, dump = extras_dump
    rules = yaml.safe_load(EXTRAS_RULES)
    rules["anonymization_tables"][0]["columns"].update(columns)
    with pytest.raises(PlanError) as err:
        plan_from_archive(
            str(dump), parse_rules_text(yaml.safe_dump(rules)), tools=find_pg_tools(pg_bin_dir(16))
        )
    for fragment in expected:
        assert fragment in str(err.value), str(err.value)


MANY = 300


def test_three_hundred_tables_with_rules_on_half(prod_pg, staging_pg16, tmp_path):
    db = "schema_zoo_many_prod"
    prod_pg.create_database(db)
    try:
        with psycopg.connect(prod_pg.conninfo(db), autocommit=True) as conn:
            for i in range(1, MANY + 1):
                table = sql.Identifier(f"t_{i:03d}")
                conn.execute(
                    sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, email text NOT NULL, note text)").format(
                        table
                    )
                )
                conn.execute(
                    sql.SQL("INSERT INTO {} SELECT g, 'person.' || g || '.' || %s || '@prod-many.test', 'note ' || g "
                            "FROM generate_series(1, 3) g").format(table),
                    (i,),
                )  # fmt: skip
                if i % 2:
                    conn.execute(
                        sql.SQL("CREATE RULE {} AS ON DELETE TO {} DO INSTEAD NOTHING").format(
                            sql.Identifier(f"keep_{i}"), table
                        )
                    )
        dump = prod_pg.pg_dump(db, tmp_path / "many.pgsql")
        masked = [f"t_{i:03d}" for i in range(1, MANY + 1, 2)]
        rules = "source_app: many\nanonymization_tables:\n" + "".join(
            f"  - table: {t}\n    columns: {{email: email}}\n" for t in masked
        )
        # (the masked half also has a CREATE RULE each) the other half holds e-mails too: allowed by name, so the scan passes
        rules += "pii_scan:\n  allow:\n" + "".join(
            f"    - public.t_{i:03d}.email\n" for i in range(2, MANY + 1, 2)
        )
        started = time.monotonic()
        plan_from_archive(str(dump), parse_rules_text(rules), tools=find_pg_tools(pg_bin_dir(16)))
        planning = time.monotonic() - started
        started = time.monotonic()
        out = run_core(dump, staging_pg16, rules, "stream")
        core = time.monotonic() - started
        try:
            print(
                f"\n{MANY} tables, a rule on {len(masked)}: planning from the archive {planning:.1f} s; "
                f"whole core {core:.1f} s (load {out['load']['duration_s']:.1f} s, pre-data "
                f"{out['pre']['duration_s']:.1f} s, post-data {out['post']['duration_s']:.1f} s, "
                f"verification {out['verification']['duration_s']:.1f} s)"
            )
            assert len(out["plan"]["items"]) == len(masked)
            assert _fetch(
                staging_pg16, out["db"], "SELECT count(*) FROM pg_rules WHERE schemaname = 'public'"
            ) == [(len(masked),)]
            assert sorted(out["load"]["masked_on_worker"]) == sorted(f"public.{t}" for t in masked)
            assert out["verification"]["passed"] and out["scan"].passed
            emails = _fetch(
                staging_pg16, out["db"], "SELECT email FROM t_001 UNION ALL SELECT email FROM t_299"
            )
            assert all(e.endswith("@example.com") for (e,) in emails)
            assert _fetch(staging_pg16, out["db"], "SELECT email FROM t_002 ORDER BY id") == _fetch(
                prod_pg, db, "SELECT email FROM t_002 ORDER BY id"
            )
        finally:
            staging_pg16.drop_database(out["db"])
    finally:
        prod_pg.drop_database(db)


def test_an_extension_the_scalingo_role_cannot_create(extras_dump, staging_pg16):
    """``vector`` is not a trusted extension: the Scalingo-like role (no superuser) cannot create it, and
    the database does not have it (on Scalingo it is enabled for the app beforehand)."""
    from scalingo_staging_sync.restore.errors import RestoreError

    _pg, _db, dump = extras_dump
    before = {r[0] for r in staging_pg16.execute("SELECT datname FROM pg_database")}
    try:
        with pytest.raises(RestoreError) as err:
            run_core(dump, staging_pg16, EXTRAS_RULES, "stream", scalingo_role=True)
        assert 'permission denied to create extension "vector"' in str(err.value)
        assert "section pre-data" in str(err.value) and "EXTENSION vector" in str(err.value)
        for name in {r[0] for r in staging_pg16.execute("SELECT datname FROM pg_database")} - before:
            assert staging_pg16.execute(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", name
            ) == [(0,)]
    finally:
        for name in {r[0] for r in staging_pg16.execute("SELECT datname FROM pg_database")} - before:
            staging_pg16.drop_database(name)


PG18_SQL = r"""
CREATE TABLE members (
    id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    first_name text NOT NULL,
    last_name text NOT NULL,
    email varchar(254) NOT NULL,
    full_name text GENERATED ALWAYS AS (first_name || ' ' || last_name) VIRTUAL,
    email_domain text GENERATED ALWAYS AS (split_part(email, '@', 2)) VIRTUAL,
    shout text GENERATED ALWAYS AS (upper(last_name)) STORED,
    joined date,
    CONSTRAINT email_has_at CHECK (email LIKE '%@%') NOT VALID,
    CONSTRAINT members_email_key UNIQUE (email)
);
ALTER TABLE members ADD CONSTRAINT joined_set NOT NULL joined;
INSERT INTO members (first_name, last_name, email, joined)
SELECT 'First' || g, 'Last' || g, 'member.' || g || '@prod-members.test', date '2020-01-01' + g FROM generate_series(1, 30) g;
ANALYZE;
"""

PG18_RULES = """
source_app: pg18
anonymization_tables:
  - table: members
    columns:
      first_name: first_name
      last_name: last_name
      email: email
pii_scan:
  on_unmasked: fail
"""


@pytest.mark.parametrize(
    ("engine", "scalingo_role"),
    [("stream", False), ("trigger", True)],
    ids=["stream", "trigger-in-place-scalingo-role"],
)
def test_postgresql_18_virtual_generated_columns(staging_pg18, tmp_path, engine, scalingo_role):
    db = "schema_zoo_pg18_prod"
    staging_pg18.create_database(db)
    try:
        staging_pg18.execute(PG18_SQL, db)
        dump = staging_pg18.pg_dump(db, tmp_path / "pg18.pgsql")
        # a named NOT NULL constraint (PostgreSQL 18 dumps it by name) refuses the null transformer
        from scalingo_staging_sync.anonymize.planner import PlanError

        with pytest.raises(PlanError) as err:
            plan_from_archive(
                str(dump),
                parse_rules_text(PG18_RULES.replace("email: email", "email: email\n      joined: null")),
                tools=find_pg_tools(pg_bin_dir(18)),
            )
        assert "joined" in str(err.value) and "NOT NULL" in str(err.value), str(err.value)
        with staging_role_styles(staging_pg18, scalingo_role):
            out = run_core(dump, staging_pg18, PG18_RULES, engine, scalingo_role=scalingo_role)
        try:
            assert out["verification"]["passed"] and out["scan"].passed
            (item,) = out["plan"]["items"]
            assert item["masked_columns"] == [
                "first_name",
                "last_name",
                "email",
                "full_name",
                "email_domain",
                "shout",
            ]
            rows = _fetch(
                staging_pg18,
                out["db"],
                "SELECT first_name, last_name, email, full_name, email_domain, shout FROM members",
            )
            assert len(rows) == 30
            assert all(
                full == f"{f} {last}" and dom == "example.com" and shout == last.upper()
                for f, last, _e, full, dom, shout in rows
            )
            prod = {r[0] for r in _fetch(staging_pg18, db, "SELECT full_name FROM members")}
            assert not prod & {r[3] for r in rows}
        finally:
            staging_pg18.drop_database(out["db"])
    finally:
        staging_pg18.drop_database(db)


TIMEOUT_SQL = r"""
CREATE TABLE attachments_text (id int PRIMARY KEY, owner_email text NOT NULL, body text NOT NULL);
INSERT INTO attachments_text
SELECT g, 'owner.' || g || '@prod-docs.test',
       (SELECT string_agg(md5(g::text || ':' || i), ' ') FROM generate_series(1, 60000) i)
FROM generate_series(1, 8) g;
-- a reporting view heavy enough to take longer than the role's statement_timeout
CREATE MATERIALIZED VIEW owner_report AS
    SELECT a.id, length(a.body) AS size FROM attachments_text a, pg_sleep(0.3);
"""


def test_the_staging_role_s_own_timeouts_do_not_cancel_the_load_or_the_refresh(
    prod_pg, staging_pg16, tmp_path
):
    """In place, the role restoring is the application's own, and its settings apply
    (``ALTER ROLE app SET statement_timeout = '30s'`` is common). pg_restore turns the timeouts off in
    its sessions; before the fix, the loader (``restore.loader``: the data section's COPY FREEZE, on its
    own connections) and the refresh of materialized views (``anonymize.postload``) did not, so a table
    whose COPY took longer than the role's timeout failed the load (``canceling statement due to
    statement timeout (COPY data line 1)``), as did a view refreshing longer."""
    from scalingo_staging_sync.anonymize.postload import analyze_masked, refresh_materialized_views
    from scalingo_staging_sync.restore.api import restore
    from tests.restore.restore_helpers import SCALINGO_ROLE, make_scalingo_db

    prod_db, db = "schema_zoo_timeouts_prod", "extras_timeouts"
    prod_pg.create_database(prod_db)
    try:
        prod_pg.execute(TIMEOUT_SQL, prod_db)
        dump = prod_pg.pg_dump(prod_db, tmp_path / "timeouts.pgsql")
    finally:
        prod_pg.drop_database(prod_db)
    tools = find_pg_tools(pg_bin_dir(16))
    role = sql.Identifier(SCALINGO_ROLE)
    try:
        target = make_scalingo_db(staging_pg16, db)
        restore(dump, target, section="pre-data", mode="in_place", tools=tools)
        with staging_pg16.connect() as conn:
            conn.execute(sql.SQL("ALTER ROLE {} SET statement_timeout = '50ms'").format(role))
            conn.execute(sql.SQL("ALTER ROLE {} SET lock_timeout = '50ms'").format(role))
        try:
            loaded = restore(dump, target, section="data", mode="in_place", tools=tools)
            assert loaded["tables"]["public.attachments_text"]["rows"] == 8
            assert refresh_materialized_views(target)["refreshed"] == ["public.owner_report"]
            assert "public.attachments_text" in analyze_masked(target)["analyzed"]
        finally:
            with staging_pg16.connect() as conn:
                conn.execute(sql.SQL("ALTER ROLE {} RESET ALL").format(role))
        assert _fetch(staging_pg16, db, "SELECT count(*) FROM owner_report") == [(8,)]
    finally:
        staging_pg16.drop_database(db)


EXTENSION_SCHEMA_SQL = """
CREATE SCHEMA extensions;
CREATE EXTENSION vector SCHEMA extensions;
CREATE TABLE events (at timestamptz NOT NULL, actor_email text, embedding extensions.vector(2));
INSERT INTO events SELECT '2025-01-01'::timestamptz + (g % 5) * interval '1 hour', 'actor.' || g || '@prod.test',
    ('[' || g || ',1]')::extensions.vector FROM generate_series(1, 20) g;
"""


@pytest.mark.parametrize("engine", ["stream", "trigger"])
def test_an_extension_in_a_schema_of_its_own_keys_a_table_without_primary_key(
    prod_pg, staging_pg16, tmp_path, engine
):
    """An extension installed in a schema of its own (``CREATE EXTENSION vector SCHEMA extensions``, as
    Supabase and many hosts do), whose type is one of the unmasked columns that key a table without a
    primary key. Before the fix, verification compared those keys with an ``=`` it looked up through a
    search path without that schema (the application's role or database sets it; the archive does not
    carry it): ``operator does not exist: extensions.vector = unknown``, and the run failed."""
    dump = production_dump(
        prod_pg, tmp_path / "ext.pgsql", "schema_zoo_ext_schema_prod", EXTENSION_SCHEMA_SQL
    )
    rules = "source_app: x\nanonymization_tables:\n  - table: events\n    columns: {actor_email: email}\n"
    out = run_core(dump, staging_pg16, rules, engine)
    try:
        assert out["plan"]["items"][0]["key_columns"] == ["at", "embedding"]
        assert out["verification"]["passed"] and out["scan"].passed
        (table,) = out["verification"]["tables"]
        assert table["keys_found"] >= table["keys_sampled"] == 20
        emails = _fetch(staging_pg16, out["db"], "SELECT actor_email FROM events")
        assert len(emails) == 20 and all(e.endswith("@example.com") for (e,) in emails)
    finally:
        staging_pg16.drop_database(out["db"])


TYPED_SQL = """
CREATE TYPE person AS (id integer, email text, display_name varchar(40), born date);
CREATE TABLE people OF person (email WITH OPTIONS NOT NULL, born WITH OPTIONS DEFAULT '2000-01-01');
ALTER TABLE people ADD PRIMARY KEY (id);
INSERT INTO people SELECT g, 'person.' || g || '@prod-people.test', 'Person ' || g, date '1990-01-01' + g
FROM generate_series(1, 15) g;
"""
TYPED_RULES = """
source_app: typed
anonymization_tables:
  - table: people
    columns: {email: email, display_name: first_name, born: date_shift}
"""


@pytest.mark.parametrize("engine", ["stream", "trigger"])
def test_a_typed_table(prod_pg, staging_pg16, tmp_path, engine):
    """A typed table (``CREATE TABLE people OF person``): pg_dump lists only its columns' options
    (``email WITH OPTIONS NOT NULL``), the columns are the composite type's. Before the fix, the archive
    inventory crashed on it (``AttributeError: 'NoneType' object has no attribute 'names'``), whatever the
    rules: no archive holding one could be planned."""
    from scalingo_staging_sync.anonymize.planner import PlanError

    dump = production_dump(prod_pg, tmp_path / "typed.pgsql", "schema_zoo_typed_prod", TYPED_SQL)
    tools = find_pg_tools(pg_bin_dir(16))
    # the type's columns with the table's options: NOT NULL refuses the null transformer
    with pytest.raises(PlanError) as err:
        plan_from_archive(
            str(dump), parse_rules_text(TYPED_RULES.replace("email: email", "email: null")), tools=tools
        )
    assert "columns.email" in str(err.value) and "NOT NULL" in str(err.value), str(err.value)
    with pytest.raises(PlanError) as err:
        plan_from_archive(
            str(dump), parse_rules_text(TYPED_RULES.replace("born: date_shift", "emial: email")), tools=tools
        )
    assert "emial" in str(err.value)
    out = run_core(dump, staging_pg16, TYPED_RULES, engine)
    try:
        (item,) = out["plan"]["items"]
        assert item["key_columns"] == ["id"] and item["masked_columns"] == ["email", "display_name", "born"]
        assert out["verification"]["passed"] and out["scan"].passed
        rows = _fetch(staging_pg16, out["db"], "SELECT email, display_name, born FROM people ORDER BY id")
        assert len(rows) == 15 and all(e.endswith("@example.com") and n != "Person 1" for e, n, _b in rows)
        assert _fetch(
            staging_pg16, out["db"], "SELECT reloftype::regtype::text FROM pg_class WHERE relname = 'people'"
        ) == [("person",)]
    finally:
        staging_pg16.drop_database(out["db"])


DOMAINS_SQL = """
CREATE DOMAIN short_text AS varchar(20);
CREATE DOMAIN code AS short_text CHECK (VALUE <> '');
CREATE DOMAIN email_addr AS text CHECK (VALUE LIKE '%@%');
CREATE DOMAIN work_email AS email_addr NOT NULL;
CREATE TABLE staff (id int PRIMARY KEY, badge code, email work_email UNIQUE, nickname short_text);
INSERT INTO staff SELECT g, 'B-' || g, 'staff.' || g || '@prod-corp.test', 'Nick' || g FROM generate_series(1, 12) g;
"""
DOMAINS_RULES = """
source_app: domains
anonymization_tables:
  - table: staff
    columns: {badge: hash, email: email, nickname: first_name}
"""


@pytest.mark.parametrize("engine", ["stream", "trigger"])
def test_domains_over_domains(prod_pg, staging_pg16, tmp_path, engine):
    """A domain over a domain (``CREATE DOMAIN code AS short_text``, ``short_text`` a ``varchar(20)``).
    Before the fix, the archive inventory took the inner domain's name for the base type and refused
    every transformer (``transformer 'hash' does not apply to type public.code``), and lost the inner
    domain's length, NOT NULL and CHECKs."""
    from scalingo_staging_sync.anonymize.planner import PlanError

    dump = production_dump(prod_pg, tmp_path / "domains.pgsql", "schema_zoo_domains_prod", DOMAINS_SQL)
    tools = find_pg_tools(pg_bin_dir(16))
    for patch, expected in [
        ("badge: email", "transformer 'email' needs at least 29 characters; column is public.code (a domain of at most 20 characters)"),
        ("email: null", "null into NOT NULL column email"),
        ("email: {transformer: fixed, value: nobody}", "email_addr"),
    ]:  # fmt: skip
        key = patch.split(":")[0]
        rules = DOMAINS_RULES.replace(f"{key}: {'hash' if key == 'badge' else 'email'}", patch)
        with pytest.raises(PlanError) as err:
            plan_from_archive(str(dump), parse_rules_text(rules), tools=tools)
        assert expected in str(err.value), str(err.value)
    out = run_core(dump, staging_pg16, DOMAINS_RULES, engine)
    try:
        (item,) = out["plan"]["items"]
        assert item["masked_columns"] == ["badge", "email", "nickname"]
        assert out["verification"]["passed"] and out["scan"].passed
        rows = _fetch(staging_pg16, out["db"], "SELECT badge, email, nickname FROM staff")
        assert all(
            len(b) == 20 and e.endswith("@example.com") and not n.startswith("Nick") for b, e, n in rows
        )
    finally:
        staging_pg16.drop_database(out["db"])


GENERATED_UNIQUE_SQL = """
-- Django 5's GeneratedField(Lower("email"), db_persist=True, unique=True), and a slug from the name
CREATE TABLE accounts (
    id int PRIMARY KEY, email text NOT NULL, display_name text NOT NULL,
    normalized_email text GENERATED ALWAYS AS (lower(email)) STORED UNIQUE,
    slug text GENERATED ALWAYS AS (lower(replace(display_name, ' ', '-'))) STORED UNIQUE
);
INSERT INTO accounts (id, email, display_name)
SELECT g, 'Account.' || g || '@prod-accounts.test', 'Display Name ' || g FROM generate_series(1, 120) g;
"""
GENERATED_UNIQUE_RULES = """
source_app: generated
anonymization_tables:
  - table: accounts
    columns: {email: email, display_name: {transformer: hash, length: 24}}
"""


def test_a_unique_generated_column_computed_from_a_masked_column(prod_pg, staging_pg16, tmp_path):
    """A STORED generated column under a unique index, computed from a masked column. Before the fix,
    planning accepted a transformer that does not keep values unique on the source column (the docs
    promise a refusal for a column in a unique key): the whole load ran, then post-data failed creating
    the unique index on the recomputed duplicates. Now the source column is checked as in the key."""
    from scalingo_staging_sync.anonymize.planner import PlanError

    dump = production_dump(
        prod_pg, tmp_path / "generated.pgsql", "schema_zoo_generated_unique_prod", GENERATED_UNIQUE_SQL
    )
    tools = find_pg_tools(pg_bin_dir(16))
    for patch, expected in [
        ("display_name: first_name", "columns.display_name: transformer 'first_name' does not keep values unique, but display_name is in unique index accounts_slug_key of public.accounts (through generated column slug)"),
        ("email: {transformer: email, case_insensitive: true}", "columns.email: transformer 'email' does not keep values unique, but email is in unique index accounts_normalized_email_key of public.accounts (through generated column normalized_email)"),
    ]:  # fmt: skip
        rules = GENERATED_UNIQUE_RULES.replace(
            "{email: email, display_name: {transformer: hash, length: 24}}", "{" + patch + "}"
        )
        with pytest.raises(PlanError) as err:
            plan_from_archive(str(dump), parse_rules_text(rules), tools=tools)
        assert expected in str(err.value), str(err.value)
    out = run_core(dump, staging_pg16, GENERATED_UNIQUE_RULES, "stream")
    try:
        assert out["verification"]["passed"] and out["scan"].passed
        rows = _fetch(
            staging_pg16, out["db"], "SELECT email, normalized_email, display_name, slug FROM accounts"
        )
        assert len(rows) == 120 and all(n == e.lower() and s == d.lower() for e, n, d, s in rows)
    finally:
        staging_pg16.drop_database(out["db"])


def test_the_same_schema_from_a_postgresql_18_production(staging_pg18, tmp_path, scalingo_extensions):
    """The extras schema loaded into PostgreSQL 18 and dumped with its pg_dump (named NOT NULL
    constraints), through the stream engine as a superuser and the trigger engine in
    place as the Scalingo-like role."""
    db = "schema_zoo_extras_prod18"
    load_extras(staging_pg18, db)
    try:
        dump = staging_pg18.pg_dump(db, tmp_path / "extras18.pgsql")
        for engine, role in (("stream", False), ("trigger", True)):
            with staging_role_styles(staging_pg18, role):
                out = run_core(dump, staging_pg18, EXTRAS_RULES, engine, scalingo_role=role)
            try:
                for step in ("pre", "load", "post"):
                    assert out[step]["warnings"] == [], (step, out[step]["warnings"])
                assert out["verification"]["passed"] and out["scan"].passed
                _assert_masked_and_intact(
                    staging_pg18, db, staging_pg18, out["db"], EXTRAS_MASKED, EXTRAS_UNRULED
                )
            finally:
                staging_pg18.drop_database(out["db"])
    finally:
        staging_pg18.drop_database(db)
