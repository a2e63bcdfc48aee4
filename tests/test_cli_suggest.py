"""`scan --suggest-rules` on a schema made to be awkward (not our fixtures' shapes): short varchar e-mails,
unique user names, NOT NULL numbers, inet and jsonb columns, generated columns, a quoted schema. Every
suggestion must be accepted by the planner as written; columns no built-in transformer fits are left
for review (and the scan keeps failing on them: fail closed)."""

from __future__ import annotations

import json

from cli_helpers import run_cli

from scalingo_staging_sync.anonymize.executor import run_table_plan
from scalingo_staging_sync.anonymize.planner import plan_anonymization
from scalingo_staging_sync.anonymize.rules import load_rules
from scalingo_staging_sync.pgconn import PgTarget
from scalingo_staging_sync.pii.scanner import (
    masked_columns_from_plan,
    partially_masked_from_plan,
    scan_target,
)

SALT = "cli-suggest-awkward-salt-0123456789abc"

SCHEMA = """
CREATE TABLE public.users (
  id bigserial PRIMARY KEY,
  username varchar(40) NOT NULL UNIQUE,
  email varchar(12),
  first_name text NOT NULL,
  surname text,
  phone_number varchar(30),
  birth_date date NOT NULL,
  latitude double precision NOT NULL,
  last_ip inet,
  country text,
  display_label text GENERATED ALWAYS AS ('user ' || username) STORED
);
CREATE TABLE public.events (id int PRIMARY KEY, payload jsonb NOT NULL, notes text);
CREATE TABLE public.accounts (
  id int PRIMARY KEY,
  contact_email varchar(14) NOT NULL UNIQUE,
  first_name text NOT NULL,
  last_name text NOT NULL,
  UNIQUE (first_name, last_name)
);
INSERT INTO public.accounts SELECT i, 'a' || i || '@ex.fr', 'Ann' || i, 'Lee' || i FROM generate_series(1, 60) i;
INSERT INTO public.users (username, email, first_name, surname, phone_number, birth_date, latitude, last_ip, country)
SELECT 'user' || i, 'u' || i || '@ex.fr', 'Jean' || i, 'Dupont', '+33 6 12 34 56 ' || lpad(i::text, 2, '0'),
       date '1980-01-01' + i, 48.85 + i / 1000.0, ('10.0.0.' || i)::inet, 'France'
FROM generate_series(1, 60) i;
INSERT INTO public.events SELECT i, jsonb_build_object(
         'contact', 'person' || i || '@mail.example.org',
         'profile', jsonb_build_object('first_name', 'Jean' || i, 'phones',
                                       jsonb_build_array('+33 6 12 34 56 ' || lpad(i::text, 2, '0'))),
         'remark', 'call person' || i || '@corp.example.com today', 'plan', 'gold', 'n', i),
       'call ' || 'someone' || i || '@corp.example.com' FROM generate_series(1, 60) i;
-- personal data under a key that holds a dot (a quoted path names it), and under a key "*" (none does)
CREATE TABLE public.settings (id int PRIMARY KEY, doc jsonb);
INSERT INTO public.settings SELECT i, jsonb_build_object('owner.email', 'owner' || i || '@mail.example.org',
                                                         'owner', jsonb_build_object('email', 'kept@owner.example'))
FROM generate_series(1, 20) i;
CREATE TABLE public.starred (id int PRIMARY KEY, doc jsonb);
INSERT INTO public.starred SELECT i, jsonb_build_object('*', 'star' || i || '@mail.example.org')
FROM generate_series(1, 20) i;
-- a login provider's profile: its "name" and "picture" are the person's; a catalog's are not
CREATE TABLE public.social_accounts (id int PRIMARY KEY, extra_data jsonb NOT NULL, catalog jsonb);
INSERT INTO public.social_accounts SELECT i, jsonb_build_object('id', (1e20 + i)::text,
         'email', 'g' || i || '@gmail.example.com', 'verified_email', true, 'name', 'Ana' || i || ' Silva',
         'given_name', 'Ana' || i, 'family_name', 'Silva', 'picture', 'https://lh3.example.com/a/' || md5(i::text),
         'locale', 'pt'),
       jsonb_build_object('plan', jsonb_build_object('name', 'Gold ' || i, 'picture', 'https://cdn.example.com/p.png'),
                          'owner', jsonb_build_object('email', 'o' || i || '@mail.example.org', 'photo', 'kept'))
FROM generate_series(1, 30) i;
-- session stores: Django's (NOT NULL) and a Rails/Laravel-like one; a MAC address is no IP address
CREATE TABLE public.django_session (session_key varchar(40) PRIMARY KEY, session_data text NOT NULL,
                                    expire_date timestamptz NOT NULL);
INSERT INTO public.django_session SELECT md5('k' || i), '.eJxVjDsOwjAQBe_iGkWO_8QlPRegi7zeNTZEjhQnouLuEIkCKhdv' || i,
       now() FROM generate_series(1, 20) i;
CREATE TABLE public.sessions (id int PRIMARY KEY, session_id varchar NOT NULL, data text, mac_address text);
INSERT INTO public.sessions SELECT i, md5('s' || i), 'BAh7CEkiD3Nlc3Npb25faWQGOgZFVEkiJT' || i,
       '00:1a:2b:3c:4d:' || lpad(to_hex(i), 2, '0') FROM generate_series(1, 20) i;
-- an admin log naming the users ("Jean3 Dupont"): no detector sees a name, their copies do
CREATE TABLE public.admin_log (id int PRIMARY KEY, object_repr varchar(200) NOT NULL, action text);
INSERT INTO public.admin_log SELECT i, 'Jean' || i || ' Dupont', 'changed' FROM generate_series(1, 20) i;
-- a cardholder's name in a table of no people (django-oscar's payment_bankcard): names, kept names
CREATE TABLE public.payment_bankcard (id int PRIMARY KEY, name varchar(255) NOT NULL, number varchar(32));
INSERT INTO public.payment_bankcard SELECT i, 'Jean' || i || ' Dupont', 'XXXX-XXXX-XXXX-' || (1000 + i)
FROM generate_series(1, 20) i;
-- a secret whose values happen to look like phone numbers twice in 400; a reference column with one
-- phone-like value in 400 (weak evidence: neither is a phone column)
CREATE TABLE public.credentials (id int PRIMARY KEY, encrypted_password text NOT NULL, ref_code text);
INSERT INTO public.credentials SELECT i,
       CASE WHEN i IN (7, 300) THEN '$2a$12$Kx 06 12 34 56 78 Qe' || i ELSE '$2a$12$' || md5(i::text) END,
       CASE WHEN i = 42 THEN 'Kx 06 12 34 56 78 Qe' ELSE md5('c' || i) END
FROM generate_series(1, 400) i;
-- e-mails whose domain's CHECK rejects every masked e-mail (and every hash)
CREATE DOMAIN corp_email AS text CHECK (VALUE LIKE '%@corp.test');
CREATE TABLE public.staff (id int PRIMARY KEY, email corp_email NOT NULL, backup_email corp_email,
  picture bytea, address2 text, remote_address varchar, user_agent text, short_ip varchar(15));
INSERT INTO public.staff SELECT i, 'staff' || i || '@corp.test', 'home' || i || '@corp.test',
  decode(md5('face' || i), 'hex'), 'Apt ' || i, '81.12.3.' || i,
  CASE WHEN i % 6 = 0 THEN 'Mozilla/5.0 (Macintosh; rv:1.9.2.' || i || ') Gecko Firefox/3.8' ELSE 'Mozilla/5.0 (X11) Firefox/' || i END,
  '81.12.4.' || i
FROM generate_series(1, 60) i;
"""


def _suggest(pg, name: str, tmp_path):
    """``scan --suggest-rules`` of database ``name``: the rules file, its text and
    ``{schema.table.column: spec}``."""
    out = tmp_path / "rules.yaml"
    proc = run_cli("scan", "--dsn", pg.conninfo(name), "--suggest-rules", str(out))
    assert proc.returncode == 0, proc.stderr
    rules = load_rules(out)
    specs = {f"{r.qualified}.{c}": s for r in rules.anonymization_tables for c, s in r.columns.items()}
    return out, out.read_text(), specs


def _suggested_and_rescanned(pg, name: str, ddl: str, column: str, tmp_path) -> dict:
    """The rule ``scan --suggest-rules`` writes for ``column`` of a new database ``name`` made by
    ``ddl``, once a scan with the whole rules file has found nothing left."""
    pg.create_database(name)
    pg.execute(ddl, name)
    out, _text, specs = _suggest(pg, name, tmp_path)
    scan = run_cli("scan", "--dsn", pg.conninfo(name), "--rules", str(out))
    assert scan.returncode == 0, scan.stdout  # the paths masked: no finding left
    return specs[column]


def test_every_suggestion_is_plannable_and_unfit_columns_fail_closed(staging_pg16, tmp_path):
    name = "cli_suggest_awkward"
    staging_pg16.create_database(name)
    staging_pg16.execute(SCHEMA, name)
    out = tmp_path / "rules.yaml"
    proc = run_cli("scan", "--dsn", staging_pg16.conninfo(name), "--suggest-rules", str(out))
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    rules = load_rules(out)
    specs = {
        f"{r.qualified}.{col}": spec["transformer"]
        for r in rules.anonymization_tables
        for col, spec in r.columns.items()
    }
    assert specs["public.users.email"] == "hash"  # varchar(12) cannot hold a masked e-mail
    assert specs["public.users.username"] == "hash"  # unique: a word list would collide
    assert specs["public.users.first_name"] == "first_name"
    assert specs["public.users.surname"] == "last_name"
    assert specs["public.users.phone_number"] == "phone"
    assert specs["public.users.birth_date"] == "date_shift"
    assert "public.users.display_label" not in specs  # generated: recomputed from the masked username
    assert "public.users.country" in {a["column"] if isinstance(a, dict) else a for a in rules.pii_scan.allow}
    assert specs["public.users.last_ip"] == "ip"  # an address of the same family in a reserved range
    assert specs["public.users.latitude"] == "fixed"  # NOT NULL number: 0
    assert specs["public.events.notes"] == "null"  # free text with e-mails inside: cleared
    # jsonb: a json rule on the paths that hold personal data, by the key's name, else by the value
    payload = next(r for r in rules.anonymization_tables if r.qualified == "public.events").columns["payload"]
    assert payload == {
        "transformer": "json",
        "paths": {
            "contact": "email",  # the whole value is an e-mail address
            "profile.first_name": "first_name",  # the key says it
            "profile.phones.*": "phone",
            "remark": "null",  # free text holding an e-mail: cleared
        },
    }
    assert specs["public.admin_log.object_repr"] == "fixed"  # copies of the users' names: cleared
    assert specs["public.payment_bankcard.name"] == "full_name"  # named for names, holding names
    assert "public.admin_log.action" not in specs
    assert "copies of the names or e-mail addresses of the people of public.users" in text
    assert specs["public.django_session.session_data"] == "hash"  # NOT NULL: what a session store keeps
    assert specs["public.sessions.data"] == "null"  # a sessions table's data: removed
    assert specs["public.sessions.mac_address"] == "hash"  # a MAC address: not an IP address
    social = next(r for r in rules.anonymization_tables if r.qualified == "public.social_accounts").columns
    assert social["extra_data"]["paths"] == {
        "email": "email",
        "family_name": "last_name",
        "given_name": "first_name",
        "name": "full_name",  # beside a given name and an e-mail: the person's name
        "picture": "null",  # and the person's picture
    }
    # a plan's name and picture are not a person's; an owner's photo is, beside the owner's e-mail
    assert social["catalog"]["paths"] == {"owner.email": "email", "owner.photo": "null"}
    # a key holding a dot is quoted in the path; a key "*" cannot be named: left for review
    doc = next(r for r in rules.anonymization_tables if r.qualified == "public.settings").columns["doc"]
    assert doc == {"transformer": "json", "paths": {'"owner.email"': "email", "owner.email": "email"}}
    assert "# REVIEW public.starred.doc" in text
    # in a composite unique key: a word list would collide, so a keyed hash (the planner's own check)
    assert specs["public.accounts.first_name"] == "hash"
    # unique varchar(14): 14 hex characters keep under 64 bits; 14 base64url characters keep 84
    assert specs["public.accounts.contact_email"] == "hash"
    accounts = next(r for r in rules.anonymization_tables if r.qualified == "public.accounts").columns
    assert accounts["contact_email"] == {"transformer": "hash", "encoding": "base64url", "length": 14}
    assert specs["public.credentials.encrypted_password"] == "hash"  # named a secret: not a phone
    assert "public.credentials.ref_code" not in specs and "# REVIEW public.credentials.ref_code" in text
    # the domain's CHECK refuses an email or a hash: NULL when the column takes it, else left for review
    assert specs["public.staff.backup_email"] == "null"
    assert "public.staff.email" not in specs and "# REVIEW public.staff.email" in text
    assert specs["public.staff.picture"] == "null"  # a photo of a staff member: removed
    assert specs["public.staff.address2"] == "address"  # a numbered address line
    assert specs["public.staff.remote_address"] == "ip"  # the audited gem's: an IP address, not a street
    assert specs["public.staff.user_agent"] == "hash"  # a few IP-like version numbers: not an IP column
    assert specs["public.staff.short_ip"] == "hash"  # varchar(15) cannot hold an IPv6 output

    target = PgTarget(host=staging_pg16.host, port=staging_pg16.port, user=staging_pg16.user, dbname=name)
    items = plan_anonymization(target, rules)  # every suggestion is accepted as written
    for item in items:
        run_table_plan(item, target, SALT)
    report = scan_target(
        target,
        masked_columns=masked_columns_from_plan(items),
        allow=list(rules.pii_scan.allow),
        partially_masked=partially_masked_from_plan(items),  # json: what the paths leave is scanned
    )
    unmasked = {f.qualified_name for f in report.unmasked}
    review = {line.split()[2] for line in text.splitlines() if line.startswith("# REVIEW ")}
    assert unmasked == review and review, "only the columns left for review stay unmasked"
    rows = staging_pg16.execute("SELECT count(*) FROM public.users WHERE email LIKE '%@ex.fr'", name)
    assert rows == [(0,)]
    kept = staging_pg16.execute(
        "SELECT count(*) FILTER (WHERE payload->>'contact' LIKE '%@mail.example.org' OR payload->>'remark' IS NOT NULL"
        " OR payload#>>'{profile,first_name}' LIKE 'Jean%'), count(*) FILTER (WHERE payload->>'plan' = 'gold'"
        " AND (payload->>'n')::int = id) FROM public.events",
        name,
    )
    assert kept == [(0, 60)]  # the personal values are masked, the other keys kept
    settings = staging_pg16.execute(
        "SELECT count(*) FILTER (WHERE doc->>'owner.email' LIKE 'owner%' OR doc#>>'{owner,email}' = 'kept@owner.example'), "
        "count(*) FILTER (WHERE doc->>'owner.email' LIKE 'u%@%' AND doc#>>'{owner,email}' LIKE 'u%@%') "
        "FROM public.settings",
        name,
    )
    assert settings == [(0, 20)]  # the dotted key and the nested owner.email, each masked


def test_copies_of_names_can_be_left_out_of_the_scan(staging_pg16):
    name = "cli_suggest_no_copies"
    staging_pg16.create_database(name)
    staging_pg16.execute(SCHEMA, name)
    with_copies = run_cli("scan", "--dsn", staging_pg16.conninfo(name))
    without = run_cli("scan", "--dsn", staging_pg16.conninfo(name), "--no-copies")
    assert "public.admin_log.object_repr" in with_copies.stdout
    assert "public.admin_log.object_repr" not in without.stdout and without.returncode == 1


RAILS_SCHEMA = """
-- a Rails app's shapes: friendly_id slugs made of the users' names, ahoy_email's recipients, ahoy
-- events naming people under keys named for nothing, Active Storage file names, Ruby class names in
-- STI/polymorphic type columns, ActiveJob ids
CREATE TABLE users (id bigint PRIMARY KEY, first_name varchar, last_name varchar, email varchar NOT NULL,
  slug varchar);
CREATE UNIQUE INDEX index_users_on_slug ON users (slug);
INSERT INTO users SELECT i, f, l, lower(f) || '.' || i || '@gmail.example', lower(f) || '-' || lower(l) || '-' || i
FROM (SELECT i, (ARRAY['Hélène', 'Jean', 'Amélie', 'Björn', 'Zoé'])[1 + i % 5] || i AS f,
             (ARRAY['Dupré', 'Lefèvre', 'Muller', 'Castaño', 'Nguyen'])[1 + i % 5] AS l
      FROM generate_series(1, 60) i) s;
ALTER TABLE users ADD COLUMN provider varchar, ADD COLUMN uid varchar;
UPDATE users SET provider = 'google_oauth2', uid = (104719238000000000000 + id * 7919)::text WHERE id % 2 = 0;
UPDATE users SET slug = translate(lower(first_name), 'éèöñ', 'eeon') || '-' || translate(lower(last_name), 'éèüñ', 'eeun');
CREATE TABLE friendly_id_slugs (id bigint PRIMARY KEY, slug varchar NOT NULL, sluggable_type varchar(50));
INSERT INTO friendly_id_slugs SELECT id, slug, 'User' FROM users;
CREATE TABLE ahoy_messages (id bigint PRIMARY KEY, "to" text, mailer varchar);
INSERT INTO ahoy_messages SELECT id, email, 'UserMailer#welcome' FROM users;
CREATE TABLE ahoy_events (id bigint PRIMARY KEY, name varchar, properties jsonb);
INSERT INTO ahoy_events SELECT id, 'Searched users', jsonb_build_object('query', first_name || ' ' || last_name,
  'url', 'https://shop.example/users/' || slug, 'page', 'search') FROM users;
CREATE TABLE active_storage_blobs (id bigint PRIMARY KEY, key varchar NOT NULL, filename varchar NOT NULL);
INSERT INTO active_storage_blobs SELECT id, md5(id::text), 'CV ' || first_name || ' ' || last_name || '.pdf' FROM users;
CREATE TABLE noticed_notifications (id bigint PRIMARY KEY, type varchar, recipient_type varchar NOT NULL);
INSERT INTO noticed_notifications SELECT g, 'CommentNotifier::Notification', 'Admin::User' FROM generate_series(1, 50) g;
CREATE TABLE solid_queue_jobs (id bigint PRIMARY KEY, class_name varchar NOT NULL, active_job_id varchar);
INSERT INTO solid_queue_jobs SELECT g, 'ActionMailer::MailDeliveryJob',
  '04151108-40c7-c2c9-308c-' || lpad(to_hex(g), 12, '0') FROM generate_series(1, 50) g;
"""


def test_a_rails_apps_columns_get_what_they_hold(staging_pg16, tmp_path):
    """Found on a Rails 7 app (devise, friendly_id, ahoy, Active Storage, noticed, solid_queue): slugs
    and file names made of the users' names were not flagged, a column of recipients' e-mail addresses
    was cleared instead of masked as e-mail addresses, a JSON key naming a person under a neutral name
    was kept, and the Ruby class names of type columns were taken for IPv6 addresses and cleared."""
    name = "cli_suggest_rails"
    staging_pg16.create_database(name)
    staging_pg16.execute(RAILS_SCHEMA, name)
    out, text, specs = _suggest(staging_pg16, name, tmp_path)
    rules = load_rules(out)
    # friendly_id's slugs (accents dropped, as parameterize does): hashed alike in both tables
    assert specs["public.users.slug"]["transformer"] == "hash"
    assert specs["public.friendly_id_slugs.slug"]["transformer"] == "hash"
    assert specs["public.active_storage_blobs.filename"]["transformer"] == "hash"  # "CV Hélène1 Dupré.pdf"
    assert specs["public.ahoy_messages.to"] == {"transformer": "email"}  # every value an address
    assert specs["public.users.uid"]["transformer"] == "hash"  # OmniAuth's id of the person at Google
    assert "public.users.provider" not in text
    assert specs["public.ahoy_events.properties"] == {
        "transformer": "json",
        "paths": {"query": "full_name", "url": "null"},  # the name alone, a URL holding the slug
    }
    for clean in ("noticed_notifications", "solid_queue_jobs"):
        assert f"public.{clean}." not in text, clean  # not suggested, not left for review
    assert "REVIEW" not in text

    target = PgTarget(host=staging_pg16.host, port=staging_pg16.port, user=staging_pg16.user, dbname=name)
    items = plan_anonymization(target, rules)
    for item in items:
        run_table_plan(item, target, SALT)
    same = staging_pg16.execute(
        "SELECT count(*) FROM users u JOIN friendly_id_slugs f USING (id) WHERE u.slug = f.slug"
        " AND u.slug !~ '-'",
        name,
    )
    assert same == [(60,)]  # the same keyed hash in both tables: friendly_id's history still resolves
    joined = staging_pg16.execute(
        'SELECT count(*) FROM users u JOIN ahoy_messages m ON m."to" = u.email', name
    )
    assert joined == [(60,)]
    report = scan_target(
        target,
        masked_columns=masked_columns_from_plan(items),
        allow=list(rules.pii_scan.allow),
        partially_masked=partially_masked_from_plan(items),
    )
    assert [f.qualified_name for f in report.unmasked] == []


FRENCH_SCHEMA = """
CREATE TABLE adherents (id int PRIMARY KEY, nom varchar(80) NOT NULL, prenom varchar(80) NOT NULL,
  courriel varchar(255), telephone_portable varchar(20), adresse text, code_postal varchar(5), ville varchar(80),
  date_naissance date, civilite varchar(4));
INSERT INTO adherents SELECT i, 'Lefèvre' || i, 'Hélène' || i, 'helene' || i || '@orange.example',
  '06 12 34 ' || lpad((i % 100)::text, 2, '0') || ' 00', i || ' rue des Lilas', '75011', 'Paris',
  date '1980-01-01' + i, 'Mme' FROM generate_series(1, 40) i;
CREATE TABLE produits (id int PRIMARY KEY, nom varchar(80) NOT NULL, prix numeric);
INSERT INTO produits SELECT i, 'Produit ' || i, i FROM generate_series(1, 40) i;
"""


def test_a_french_schema_is_read_in_french(staging_pg16, tmp_path):
    """Scalingo's customers are mostly French: their columns are `nom`, `prenom`, `courriel`,
    `adresse`, `ville`, `date_naissance`, which the English-only name detectors did not see."""
    name = "cli_suggest_french"
    staging_pg16.create_database(name)
    staging_pg16.execute(FRENCH_SCHEMA, name)
    out = tmp_path / "rules.yaml"
    proc = run_cli("scan", "--dsn", staging_pg16.conninfo(name), "--suggest-rules", str(out))
    assert proc.returncode == 0, proc.stderr
    rules = load_rules(out)
    specs = {
        f"{r.qualified}.{c}": s["transformer"]
        for r in rules.anonymization_tables
        for c, s in r.columns.items()
    }
    assert {k: v for k, v in specs.items() if k.startswith("public.adherents.")} == {
        "public.adherents.nom": "last_name",  # beside `prenom`: the family name
        "public.adherents.prenom": "first_name",
        "public.adherents.courriel": "email",
        "public.adherents.telephone_portable": "phone",
        "public.adherents.adresse": "address",
        "public.adherents.code_postal": "postal_code",
        "public.adherents.ville": "city",
        "public.adherents.date_naissance": "date_shift",
        "public.adherents.civilite": "null",
    }
    assert not any(k.startswith("public.produits.") for k in specs)  # a product's `nom` is not a person's


JHIPSTER_SCHEMA = """
CREATE TABLE jhi_user (id bigint PRIMARY KEY, login varchar(50) NOT NULL UNIQUE, email varchar(191) UNIQUE,
  created_by varchar(50) NOT NULL, last_modified_by varchar(50));
INSERT INTO jhi_user SELECT i, 'jdupont' || i, 'jdupont' || i || '@free.example', 'system', 'jdupont' || (i % 7 + 1)
FROM generate_series(1, 40) i;
CREATE TABLE jhi_persistent_audit_event (event_id bigint PRIMARY KEY, principal varchar(50) NOT NULL,
  event_type varchar(255));
INSERT INTO jhi_persistent_audit_event SELECT g, 'jdupont' || (g % 40 + 1), 'AUTHENTICATION_SUCCESS'
FROM generate_series(1, 200) g;
"""


def test_who_did_it_is_hashed_as_the_login_is(staging_pg16, tmp_path):
    """JHipster's jhi_user.login is a person's handle; created_by, last_modified_by and the audit
    events' principal copy it: hashed alike, an audit event still names the same (masked) user."""
    name = "cli_suggest_jhipster"
    staging_pg16.create_database(name)
    staging_pg16.execute(JHIPSTER_SCHEMA, name)
    out, text, specs = _suggest(staging_pg16, name, tmp_path)
    rules = load_rules(out)
    for column in ("jhi_user.login", "jhi_user.created_by", "jhi_user.last_modified_by",
                   "jhi_persistent_audit_event.principal"):  # fmt: skip
        assert specs[f"public.{column}"] == {"transformer": "hash", "length": 16}, column
    target = PgTarget(host=staging_pg16.host, port=staging_pg16.port, user=staging_pg16.user, dbname=name)
    for item in plan_anonymization(target, rules):
        run_table_plan(item, target, SALT)
    joined = staging_pg16.execute(
        "SELECT count(*) FROM jhi_persistent_audit_event e JOIN jhi_user u ON u.login = e.principal"
        " WHERE u.login NOT LIKE 'jdupont%'",
        name,
    )
    assert joined == [(200,)]


def test_not_null_json_and_uuid_columns_get_a_constant_not_a_review(staging_pg16, tmp_path):
    """pretix's checkoutsession.session_data (jsonb NOT NULL) and eventlock.token (uuid NOT NULL) were
    left for review: no transformer fitted, and the first run's gate failed on them."""
    name = "cli_suggest_not_null"
    staging_pg16.create_database(name)
    staging_pg16.execute(
        "CREATE TABLE checkoutsession (id int PRIMARY KEY, session_data jsonb NOT NULL);"
        "INSERT INTO checkoutsession SELECT g, jsonb_build_object('step', g) FROM generate_series(1, 20) g;"
        "CREATE TABLE eventlock (id int PRIMARY KEY, token uuid NOT NULL);"
        "INSERT INTO eventlock SELECT g, gen_random_uuid() FROM generate_series(1, 20) g;"
        "CREATE TABLE device (id int PRIMARY KEY, api_token uuid NOT NULL UNIQUE);"
        "INSERT INTO device SELECT g, gen_random_uuid() FROM generate_series(1, 20) g;",
        name,
    )
    out, text, specs = _suggest(staging_pg16, name, tmp_path)
    assert specs["public.checkoutsession.session_data"] == {"transformer": "fixed", "value": "{}"}
    assert specs["public.eventlock.token"] == {
        "transformer": "fixed",
        "value": "00000000-0000-0000-0000-000000000000",
    }
    assert "# REVIEW public.device.api_token" in text  # unique: one constant cannot fill it
    target = PgTarget(host=staging_pg16.host, port=staging_pg16.port, user=staging_pg16.user, dbname=name)
    for item in plan_anonymization(target, load_rules(out)):
        run_table_plan(item, target, SALT)
    assert staging_pg16.execute("SELECT count(*) FROM checkoutsession WHERE session_data = '{}'", name) == [
        (20,)
    ]


def test_text_json_documents_are_masked_at_their_paths_or_emptied(staging_pg16, tmp_path):
    """Laravel keeps a notification's data as JSON in a text NOT NULL column: it was cleared to '', which
    the app's json_decode cannot read back. A text column holding JSON documents is masked at the paths
    that hold personal data, as a jsonb column is; one whose length is limited (the masked document may
    be longer) gets an empty document the app can still parse. A NOT NULL text column of free text
    holding e-mails still gets ''. A scan with the suggested rules finds nothing left."""
    name = "cli_suggest_text_json"
    staging_pg16.create_database(name)
    staging_pg16.execute(
        "CREATE TABLE notifications (id uuid PRIMARY KEY, type varchar(255) NOT NULL, data text NOT NULL);"
        "INSERT INTO notifications SELECT gen_random_uuid(), 'App\\Notifications\\Invoice',"
        " json_build_object('message', 'Invoice sent to client' || g || '@example.org', 'amount', g)::text"
        " FROM generate_series(1, 30) g;"
        "CREATE TABLE jobs_batch (id int PRIMARY KEY, recipients varchar(255) NOT NULL);"
        "INSERT INTO jobs_batch SELECT g, json_build_array('u' || g || '@example.org')::text"
        " FROM generate_series(1, 30) g;"
        "CREATE TABLE people (id int PRIMARY KEY, first_name text, last_name text);"
        "INSERT INTO people SELECT g, 'Gwendoline' || g, 'Kermarrec' || g FROM generate_series(1, 30) g;"
        "CREATE TABLE activity (id int PRIMARY KEY, properties text NOT NULL);"
        "INSERT INTO activity SELECT g, json_build_object('by', 'Gwendoline' || g || ' Kermarrec' || g)::text"
        " FROM generate_series(1, 30) g;"
        "CREATE TABLE remarks (id int PRIMARY KEY, body text NOT NULL);"
        "INSERT INTO remarks SELECT g, '{draft} write to person' || g || '@example.org'"
        " FROM generate_series(1, 30) g;"
        # nullable, found by an address in free text alone (no whole-value detector): read as documents too
        "CREATE TABLE event_reports (id int PRIMARY KEY, content text);"
        "INSERT INTO event_reports SELECT g, json_build_object('reason', 'publie mon adresse (' || g"
        " || ', boulevard Laporte, 2034' || (g % 10) || ' Robertdan) sans mon accord', 'score', -100)::text"
        " FROM generate_series(1, 30) g;",
        name,
    )
    out, text, specs = _suggest(staging_pg16, name, tmp_path)
    assert specs["public.notifications.data"] == {"transformer": "json", "paths": {"message": "null"}}
    assert specs["public.jobs_batch.recipients"] == {"transformer": "fixed", "value": "[]"}
    assert specs["public.activity.properties"] == {"transformer": "json", "paths": {"by": "full_name"}}
    assert specs["public.remarks.body"] == {"transformer": "fixed", "value": ""}
    assert specs["public.event_reports.content"] == {"transformer": "json", "paths": {"reason": "null"}}
    assert "JSON documents in text: the values at message" in text
    scan = run_cli("scan", "--dsn", staging_pg16.conninfo(name), "--rules", str(out))
    assert scan.returncode == 0, scan.stdout


def test_the_scan_finds_copies_of_names_kept_only_in_json_documents(staging_pg16):
    """pretix keeps an invoice address's name only in ``name_parts`` (jsonb) and copies it into the
    invoice's ``invoice_to`` text block; Supabase keeps a user's full name in ``raw_user_meta_data``.
    The scan's copy index read text columns only, so these copies were not flagged on production."""
    name = "cli_scan_json_names"
    staging_pg16.create_database(name)
    staging_pg16.execute(
        "CREATE TABLE invoiceaddress (id int PRIMARY KEY, name_parts jsonb NOT NULL, city text);"
        "INSERT INTO invoiceaddress SELECT g, jsonb_build_object('_scheme', 'given_family',"
        " 'given_name', 'Gwendoline' || g, 'family_name', 'Kermarrec' || g), 'Brest' FROM generate_series(1, 30) g;"
        "CREATE TABLE invoice (id int PRIMARY KEY, invoice_to text, internal_reference text);"
        "INSERT INTO invoice SELECT g, 'Gwendoline' || g || ' Kermarrec' || g || E'\\n12 rue de Siam\\nBrest',"
        " 'R' || g FROM generate_series(1, 30) g;"
        "CREATE TABLE auth_users (id int PRIMARY KEY, raw_user_meta_data jsonb);"
        "INSERT INTO auth_users SELECT g, jsonb_build_object('full_name', 'Anselme' || g || ' Quintard' || g,"
        " 'email_verified', true) FROM generate_series(1, 30) g;"
        "CREATE TABLE remarks (id int PRIMARY KEY, body text);"
        "INSERT INTO remarks SELECT g, 'Called back Anselme' || g || ' Quintard' || g || ' about it'"
        " FROM generate_series(1, 30) g;",
        name,
    )
    with_copies = run_cli("scan", "--dsn", staging_pg16.conninfo(name), "--json")
    findings = {f["column_id"]: f for f in json.loads(with_copies.stdout)["findings"]}
    for column, source in (("public.invoice.invoice_to", "public.invoiceaddress"),
                           ("public.remarks.body", "public.auth_users")):  # fmt: skip
        copy = [r for r in findings[column]["reasons"] if r["kind"] == "copy"]
        assert copy and source in copy[0]["tables"], (column, findings.get(column))
    assert "public.invoice.internal_reference" not in findings


def test_a_supabase_auth_schema_gets_rules_its_app_still_runs_on(staging_pg16, tmp_path):
    """GoTrue (Supabase auth): ``identities.email`` is generated from ``identity_data`` (masked: it is
    recomputed, no review); ``provider_id`` holds an address in a few rows only and a provider's user
    id in the others (a keyed hash, not an address for all); likewise the documents' ``sub``; a token
    URL, an endpoint's auth method and a refresh counter are settings, not secrets."""
    name = "cli_suggest_gotrue"
    staging_pg16.create_database(name)
    staging_pg16.execute(
        "CREATE SCHEMA auth;"
        "CREATE TABLE auth.identities (id uuid PRIMARY KEY, provider_id text NOT NULL, provider text NOT NULL,"
        " identity_data jsonb NOT NULL, email text GENERATED ALWAYS AS (lower(identity_data->>'email')) STORED,"
        " UNIQUE (provider_id, provider));"
        "INSERT INTO auth.identities (id, provider_id, provider, identity_data)"
        " SELECT gen_random_uuid(), CASE WHEN g % 10 = 0 THEN 'user' || g || '@example.org'"
        "  ELSE (10293847560000 + g)::text END, 'google',"
        " jsonb_build_object('sub', CASE WHEN g % 10 = 0 THEN 'user' || g || '@example.org'"
        "  ELSE (10293847560000 + g)::text END, 'email', 'user' || g || '@example.org',"
        "  'email_verified', true) FROM generate_series(1, 200) g;"
        "CREATE TABLE auth.custom_oauth_providers (id int PRIMARY KEY, token_url text, client_secret text,"
        " token_endpoint_auth_method text);"
        "INSERT INTO auth.custom_oauth_providers VALUES (1, 'https://idp.example.org/token',"
        " 'c1f0a9b8e7d6c5b4a3928170f6e5d4c3', 'client_secret_basic');"
        "CREATE TABLE auth.sessions (id uuid PRIMARY KEY, refresh_token_counter bigint,"
        " refresh_token_hmac_key text);",
        name,
    )
    out, text, specs = _suggest(staging_pg16, name, tmp_path)
    assert "REVIEW" not in text, text
    assert "# auth.identities.email (" in text and "generated from identity_data, masked above" in text
    assert specs["auth.identities.provider_id"]["transformer"] == "hash"
    assert specs["auth.identities.identity_data"]["paths"] == {"email": "email", "sub": "hash"}
    assert specs["auth.custom_oauth_providers.client_secret"]["transformer"] == "hash"
    for column in ("auth.custom_oauth_providers.token_url", "auth.custom_oauth_providers.token_endpoint_auth_method",
                   "auth.sessions.refresh_token_counter"):  # fmt: skip
        assert column not in specs, column
    scan = run_cli("scan", "--dsn", staging_pg16.conninfo(name), "--rules", str(out))
    assert scan.returncode == 0, scan.stdout  # the generated column counts as masked


def test_a_key_in_a_few_documents_only_is_found_and_masked(staging_pg16, tmp_path):
    """GoTrue writes ``traits.user_phone`` into the audit payload of a user's deletion only: 45 of
    20,000 entries. The scan and suggest read a sample of documents, so the phone numbers (digits
    without '+', no content detector sees them) stayed in staging after a successful run. The keys of
    10,000 documents are listed, and documents holding a flagged key are read too."""
    spec = _suggested_and_rescanned(
        staging_pg16,
        "cli_suggest_rare_key",
        "CREATE SCHEMA auth; CREATE TABLE auth.audit_log_entries (id int PRIMARY KEY, payload json);"
        "INSERT INTO auth.audit_log_entries SELECT g, json_build_object('action', 'login', 'actor_id', g,"
        " 'log_type', 'account') FROM generate_series(1, 9998) g;"
        "INSERT INTO auth.audit_log_entries VALUES (9999, json_build_object('action', 'user_deleted',"
        " 'traits', json_build_object('user_phone', '12061122671', 'user_id', 'x'))),"
        " (10000, json_build_object('action', 'user_deleted', 'traits', json_build_object('user_phone',"
        " '33612345678')));",
        "auth.audit_log_entries.payload",
        tmp_path,
    )
    assert spec == {"transformer": "json", "paths": {"traits.user_phone": "phone"}}


def test_a_key_in_a_few_documents_kept_in_text_only_is_found_and_masked(staging_pg16, tmp_path):
    """The same audit log kept as text (JSON documents in a text column, '' in some rows): the keys of
    its documents are listed too, and the rule masks the path in the text."""
    spec = _suggested_and_rescanned(
        staging_pg16,
        "cli_suggest_rare_key_text",
        "CREATE TABLE audit_log_entries (id int PRIMARY KEY, payload text);"
        "INSERT INTO audit_log_entries SELECT g, CASE WHEN g % 100 = 0 THEN '' ELSE json_build_object("
        "'action', 'login', 'actor_id', g, 'log_type', 'account')::text END FROM generate_series(1, 9998) g;"
        "INSERT INTO audit_log_entries VALUES (9999, json_build_object('action', 'user_deleted',"
        " 'traits', json_build_object('user_phone', '12061122671', 'user_id', 'x'))::text),"
        " (10000, json_build_object('action', 'user_deleted', 'traits', json_build_object('user_phone',"
        " '33612345678'))::text);",
        "public.audit_log_entries.payload",
        tmp_path,
    )
    assert spec == {"transformer": "json", "paths": {"traits.user_phone": "phone"}}


def test_a_note_quoting_a_few_of_thousands_of_people_is_found(staging_pg16):
    """Mastodon's account_warnings.text quotes 3 of 2,300 accounts' names ("Please stop harassing Mia
    Johns."): the copy index read 200 people per table, so the names were rarely among them and the
    column was not flagged on production. It reads 2,000."""
    name = "cli_scan_few_quoted"
    staging_pg16.create_database(name)
    staging_pg16.execute(
        "CREATE TABLE accounts (id int PRIMARY KEY, display_name text);"
        "INSERT INTO accounts SELECT g, 'Gwenaelle' || g || ' Kerbrat' || g FROM generate_series(1, 2000) g;"
        "CREATE TABLE account_warnings (id int PRIMARY KEY, text text);"
        "INSERT INTO account_warnings VALUES (1, 'Please stop harassing Gwenaelle17 Kerbrat17.'),"
        " (2, 'Reported by Gwenaelle1203 Kerbrat1203 twice'), (3, 'Spam, see Gwenaelle1777 Kerbrat1777'),"
        " (4, 'Impersonating Gwenaelle640 Kerbrat640'), (5, 'ok');",
        name,
    )
    proc = run_cli("scan", "--dsn", staging_pg16.conninfo(name), "--json")
    findings = {f["column_id"]: f for f in json.loads(proc.stdout)["findings"]}
    copy = [r for r in findings["public.account_warnings.text"]["reasons"] if r["kind"] == "copy"]
    assert copy and copy[0]["names"] == 4 and copy[0]["tables"] == ["public.accounts"], copy


def test_an_inet_column_under_a_unique_index_gets_the_unique_ip(staging_pg16, tmp_path):
    """Mastodon's ``ip_blocks.ip inet NOT NULL`` under a unique index was left for review (the default
    ``ip`` does not keep addresses distinct); a plain inet column keeps the default."""
    name = "cli_suggest_ip_blocks"
    staging_pg16.create_database(name)
    staging_pg16.execute(
        "CREATE TABLE ip_blocks (id bigint PRIMARY KEY, ip inet NOT NULL, severity int);"
        "CREATE UNIQUE INDEX index_ip_blocks_on_ip ON ip_blocks (ip);"
        "CREATE TABLE sessions (id bigint PRIMARY KEY, ip inet);"
        "INSERT INTO ip_blocks SELECT g, '81.0.0.0'::inet + g * 251, 1 FROM generate_series(1, 50) g;"
        "INSERT INTO sessions SELECT g, '81.0.0.0'::inet + g * 7 FROM generate_series(1, 50) g;",
        name,
    )
    try:
        _out, text, specs = _suggest(staging_pg16, name, tmp_path)
    finally:
        staging_pg16.drop_database(name)
    assert specs["public.ip_blocks.ip"] == {"transformer": "ip", "unique": True}, text
    assert specs["public.sessions.ip"] == {"transformer": "ip"}


def test_a_not_null_column_under_a_check_gets_a_value_the_check_accepts(staging_pg16, tmp_path):
    """AdventureWorks' ``employee``: ``fixed ''`` was proposed for ``gender char(1) NOT NULL`` under
    ``CHECK (upper(gender) = ANY (ARRAY['M', 'F']))`` and the run failed to load the table. A value of
    the CHECK's own is proposed; a keyed hash the CHECK cannot be judged on is not; a shifted birth date
    under a range CHECK keeps date_shift, and its comment names the CHECK."""
    name = "cli_suggest_checks"
    staging_pg16.create_database(name)
    staging_pg16.execute(
        "CREATE TABLE employee (id int PRIMARY KEY, first_name text, gender char(1) NOT NULL,"
        " maritalstatus char(1) NOT NULL, sex varchar(12) NOT NULL, birthdate date NOT NULL,"
        " CONSTRAINT ck_gender CHECK (upper(gender::text) = ANY (ARRAY['M'::text, 'F'::text])),"
        " CONSTRAINT ck_marital CHECK (upper(maritalstatus::text) = ANY (ARRAY['M'::text, 'S'::text])),"
        " CONSTRAINT ck_sex CHECK (sex IN ('female', 'male', 'other')),"
        " CONSTRAINT ck_birth CHECK (birthdate >= '1930-01-01' AND birthdate <= now() - interval '18 years'));"
        "INSERT INTO employee SELECT g, 'Ann' || g, 'F', 'S', 'female', date '1980-01-01' + g"
        " FROM generate_series(1, 40) g;",
        name,
    )
    try:
        _out, text, specs = _suggest(staging_pg16, name, tmp_path)
    finally:
        staging_pg16.drop_database(name)
    assert specs["public.employee.gender"] == {"transformer": "fixed", "value": "M"}, text
    assert specs["public.employee.maritalstatus"] == {"transformer": "fixed", "value": "M"}
    assert specs.get("public.employee.sex") == {"transformer": "fixed", "value": "female"}, text  # not a hash
    assert specs["public.employee.birthdate"] == {"transformer": "date_shift"}
    assert "CHECK ck_birth bounds it" in text


def test_an_array_of_addresses_in_a_few_documents_only_is_found_and_masked(staging_pg16, tmp_path):
    """Chatwoot keeps an e-mail message's recipients in ``messages.content_attributes`` as arrays
    (``cc_emails: ["a@b.c"]``) in 1 % of the messages: the key listing read only keys holding a string,
    and a string in an array was not named by its key, so the addresses stayed in staging."""
    name = "cli_suggest_rare_array"
    staging_pg16.create_database(name)
    staging_pg16.execute(
        "CREATE TABLE messages (id int PRIMARY KEY, content_attributes json);"
        "INSERT INTO messages SELECT g, json_build_object('in_reply_to', g, 'cc_emails', '[]'::json)"
        " FROM generate_series(1, 5000) g;"
        "INSERT INTO messages SELECT g, json_build_object('cc_emails', json_build_array('cc' || g || '@mail.test'),"
        " 'bcc_emails', '[]'::json) FROM generate_series(5001, 5003) g;",
        name,
    )
    out, text, specs = _suggest(staging_pg16, name, tmp_path)
    assert specs["public.messages.content_attributes"] == {
        "transformer": "json",
        "paths": {"cc_emails.*": "email"},
    }, text
    scan = run_cli("scan", "--dsn", staging_pg16.conninfo(name), "--rules", str(out))
    assert scan.returncode == 0, scan.stdout


def test_a_short_unique_identifier_gets_a_base64url_hash(staging_pg16, tmp_path):
    """AdventureWorks' ``nationalidnumber varchar(15) NOT NULL`` under a unique index was left for review:
    15 hex characters are 60 bits, under the 64 a unique index needs. base64url gives 90."""
    name = "cli_suggest_short_unique"
    staging_pg16.create_database(name)
    staging_pg16.execute(
        "CREATE TABLE employee (id int PRIMARY KEY, nationalidnumber varchar(15) NOT NULL UNIQUE,"
        " tax_id varchar(9));"
        "INSERT INTO employee SELECT g, (100000000 + g * 7919)::text, (100000000 + g)::text"
        " FROM generate_series(1, 50) g;",
        name,
    )
    try:
        out, text, specs = _suggest(staging_pg16, name, tmp_path)
        assert specs["public.employee.nationalidnumber"] == {
            "transformer": "hash",
            "encoding": "base64url",
            "length": 15,
        }, text
        assert specs["public.employee.tax_id"] == {"transformer": "hash", "length": 9}  # not unique: hex
        scan = run_cli("scan", "--dsn", staging_pg16.conninfo(name), "--rules", str(out))  # planned on it
        assert scan.returncode == 0, scan.stdout + scan.stderr
    finally:
        staging_pg16.drop_database(name)


def test_a_search_index_of_people_is_scanned_and_emptied(staging_pg16, tmp_path):
    """Discourse keeps its users' names and e-mail addresses as the lexemes of tsvector columns
    (``user_search_data.search_data``, ``post_search_data.search_data``), which the scan did not read:
    they stayed in staging. A tsvector is read as its lexemes in position order, so its e-mail
    addresses and copies of names are found, and it is emptied."""
    name = "cli_suggest_tsvector"
    staging_pg16.create_database(name)
    staging_pg16.execute(
        "CREATE TABLE users (id int PRIMARY KEY, username text, name text, email text);"
        "INSERT INTO users SELECT g, 'gwen' || g, 'Gwenaelle' || g || ' Kerbrat' || g, 'gk' || g || '@mail.test'"
        " FROM generate_series(1, 300) g;"
        "CREATE TABLE user_search_data (user_id int PRIMARY KEY, search_data tsvector NOT NULL);"
        "INSERT INTO user_search_data SELECT id, to_tsvector('simple', username || ' ' || name) FROM users;"
        "CREATE TABLE post_search_data (post_id int PRIMARY KEY, search_data tsvector);"
        "INSERT INTO post_search_data SELECT g, to_tsvector('simple', 'write to gk' || g || '@mail.test please')"
        " FROM generate_series(1, 300) g;",
        name,
    )
    try:
        out, text, specs = _suggest(staging_pg16, name, tmp_path)
    finally:
        staging_pg16.drop_database(name)
    assert specs["public.user_search_data.search_data"] == {"transformer": "fixed", "value": ""}, text
    assert specs["public.post_search_data.search_data"] == {"transformer": "null"}, text


def test_a_generated_column_of_clean_sources_is_allowed(staging_pg16, tmp_path):
    """AdventureWorks' ``customer.accountnumber`` (``'AW' || lpad(customerid)``, named like a bank
    account) was left for review; its source holds nothing the scan found, so neither does it. A
    generated e-mail built from a name stays for the user to judge."""
    name = "cli_suggest_generated_clean"
    staging_pg16.create_database(name)
    staging_pg16.execute(
        "CREATE TABLE customer (customerid int PRIMARY KEY, territoryid int,"
        " accountnumber varchar(10) GENERATED ALWAYS AS ('AW' || lpad(customerid::text, 8, '0')) STORED);"
        "INSERT INTO customer (customerid, territoryid) SELECT g, g % 10 FROM generate_series(1, 50) g;",
        name,
    )
    try:
        out, text, specs = _suggest(staging_pg16, name, tmp_path)
        assert (
            "public.customer.accountnumber" not in specs
            and "# REVIEW public.customer.accountnumber" not in text
        )
        assert "generated from customerid, in which the scan found no personal data" in text, text
        scan = run_cli("scan", "--dsn", staging_pg16.conninfo(name), "--rules", str(out))
        assert scan.returncode == 0, scan.stdout
    finally:
        staging_pg16.drop_database(name)


def test_keycloak_like_settings_bookkeeping_and_session_json(staging_pg16, tmp_path):
    """From a Keycloak database: its realm's token and OTP settings were hashed or NULLed (named like
    secrets), its Liquibase ``databasechangelog`` masked (Liquibase would run every changeset again),
    and its sessions' JSON ``data`` replaced by an e-mail address (80 % of the documents hold one). The
    settings are not flagged, the bookkeeping is allowed with its reason, the session data is masked
    at the path of its login (text holding JSON) and a column of e-mail addresses still gets ``email``."""
    name = "cli_suggest_keycloak_like"
    staging_pg16.create_database(name)
    staging_pg16.execute(
        "CREATE TABLE realm (id varchar(36) PRIMARY KEY, name varchar(255) UNIQUE,"
        " access_token_lifespan int, otp_policy_digits int, password_policy varchar(2550),"
        " reset_credentials_flow varchar(36), email_theme varchar(255));"
        "INSERT INTO realm SELECT 'r' || g, 'realm-' || g, 300, 6, 'length(8) and digits(1)',"
        " md5(g::text)::uuid::text, 'keycloak' FROM generate_series(1, 5) g;"
        "CREATE TABLE databasechangelog (id varchar(255) NOT NULL, author varchar(255) NOT NULL,"
        " filename varchar(255) NOT NULL, dateexecuted timestamp NOT NULL, orderexecuted int NOT NULL,"
        " exectype varchar(10) NOT NULL, md5sum varchar(35), description varchar(255));"
        "INSERT INTO databasechangelog SELECT 'cs-' || g, 'dev' || (g % 4) || '@redhat.test',"
        " 'META-INF/jpa-changelog-' || g || '.xml', now(), g, 'EXECUTED' FROM generate_series(1, 30) g;"
        "CREATE TABLE offline_user_session (user_session_id varchar(36) PRIMARY KEY, user_id varchar(255),"
        " data text NOT NULL);"
        "INSERT INTO offline_user_session SELECT 's' || g, 'u' || g,"
        " json_build_object('brokerUserId', null, 'notes', json_build_object("
        "'loginUsername', 'person' || g || '@mail.test', 'AUTH_TIME', '1700000000'))::text"
        " FROM generate_series(1, 60) g;"
        "CREATE TABLE federated_identity (user_id varchar(36), federated_username varchar(255));"
        "INSERT INTO federated_identity SELECT 'u' || g, 'person' || g || '@mail.test'"
        " FROM generate_series(1, 60) g;",
        name,
    )
    try:
        out, text, specs = _suggest(staging_pg16, name, tmp_path)
        assert not [c for c in specs if c.startswith("public.realm.")], specs
        assert "public.databasechangelog.author" not in specs
        assert "Liquibase's migration bookkeeping" in text
        # JSON in text: masked at its path, as the login is (a keyed hash)
        assert specs["public.offline_user_session.data"] == {
            "transformer": "json",
            "paths": {"notes.loginUsername": "hash"},
        }, specs
        assert specs["public.federated_identity.federated_username"] == {"transformer": "email"}, specs
        scan = run_cli("scan", "--dsn", staging_pg16.conninfo(name), "--rules", str(out))
        assert scan.returncode == 0, scan.stdout
    finally:
        staging_pg16.drop_database(name)


def test_a_translations_map_is_masked_in_every_language(staging_pg16, tmp_path):
    """Decidim's translated free text (``{"ca": ..., "es": ..., "machine_translations": {"ca": ...}}``):
    the first 200 documents quoted e-mail addresses under ``ca`` only, so the rule masked ``ca`` and the
    run's gate failed on the addresses under ``es`` further on. A path through one language stands
    for every language seen there, in a nested map of languages too. A flag's literal under a key named for an e-mail
    (``notification_settings.email_on_assigned_proposals: "1"``) is no personal data."""
    name = "cli_suggest_translations"
    staging_pg16.create_database(name)
    staging_pg16.execute(
        "CREATE TABLE decidim_comments_comments (id int PRIMARY KEY, body jsonb NOT NULL);"
        "INSERT INTO decidim_comments_comments SELECT g, CASE WHEN g <= 200 THEN jsonb_build_object("
        "'ca', 'Escriviu-me a persona' || g || '@correu.test si us plau', 'es', 'Estoy de acuerdo', 'en', 'Agreed',"
        " 'machine_translations', jsonb_build_object('es', 'Escribidme'))"
        " ELSE jsonb_build_object('ca', 'Molt bé', 'es', 'Escribidme a gente' || g || '@correo.test ya',"
        " 'machine_translations', jsonb_build_object('ca', 'Escriviu-me a gente' || g || '@correo.test'))"
        " END FROM generate_series(1, 400) g;"
        "CREATE TABLE decidim_users (id int PRIMARY KEY, email varchar(255) NOT NULL, notification_settings jsonb);"
        "INSERT INTO decidim_users SELECT g, 'user' || g || '@mail.test',"
        " jsonb_build_object('email_on_assigned_proposals', '1', 'email_on_moderations', '0')"
        " FROM generate_series(1, 50) g;",
        name,
    )
    try:
        out, text, specs = _suggest(staging_pg16, name, tmp_path)
        paths = specs["public.decidim_comments_comments.body"]["paths"]
        assert {"ca", "es", "en", "machine_translations.ca"} <= set(paths), paths
        assert "public.decidim_users.notification_settings" not in specs, specs
        scan = run_cli("scan", "--dsn", staging_pg16.conninfo(name), "--rules", str(out))
        assert scan.returncode == 0, scan.stdout
    finally:
        staging_pg16.drop_database(name)


def test_a_table_of_settings_is_masked_in_its_secret_rows_only(staging_pg16, tmp_path):
    """Keycloak's ``component_config``: the LDAP bind password and the realm's private key are rows
    among settings the staging Keycloak needs (the LDAP URL, the key size). The suggested rule hashes
    the value in the rows of those keys only (its condition) and allows the other rows with the
    reason; a table of settings holding an e-mail address too is masked in the whole column."""
    name = "cli_suggest_key_value"
    staging_pg16.create_database(name)
    staging_pg16.execute(
        "CREATE TABLE component_config (id varchar(36) PRIMARY KEY, component_id varchar(36) NOT NULL,"
        " name varchar(255) NOT NULL, value varchar(4000));"
        "INSERT INTO component_config SELECT 'c' || g || k, 'comp' || g, k,"
        " CASE k WHEN 'bindCredential' THEN 'pw-' || md5(g::text) WHEN 'privateKey' THEN 'MIIEogIBAAKCAQEA' || md5(g::text)"
        " WHEN 'connectionUrl' THEN 'ldaps://ldap' || g || '.corp.test' ELSE '2048' END"
        " FROM generate_series(1, 10) g, unnest(ARRAY['bindCredential', 'privateKey', 'connectionUrl', 'keySize']) k;"
        "CREATE TABLE realm_smtp_config (realm_id varchar(36), name varchar(255), value varchar(255));"
        "INSERT INTO realm_smtp_config SELECT 'r' || g, k, CASE k WHEN 'password' THEN 'smtp-' || g"
        " WHEN 'from' THEN 'noreply' || g || '@corp.test' ELSE 'smtp.corp.test' END"
        " FROM generate_series(1, 5) g, unnest(ARRAY['password', 'from', 'host']) k;",
        name,
    )
    try:
        out, text, specs = _suggest(staging_pg16, name, tmp_path)
        assert specs["public.component_config.value"]["transformer"] == "hash", specs
        assert "condition: \"\\\"name\\\" IN ('bindCredential', 'privateKey')\"" in text, text
        assert "the rows outside the rule's condition" in text
        rules = load_rules(out)
        [rule] = [r for r in rules.anonymization_tables if r.qualified == "public.component_config"]
        assert rule.condition == "\"name\" IN ('bindCredential', 'privateKey')"
        # the e-mail address beside the password: the whole column
        [smtp] = [r for r in rules.anonymization_tables if r.qualified == "public.realm_smtp_config"]
        assert not smtp.condition
        scan = run_cli("scan", "--dsn", staging_pg16.conninfo(name), "--rules", str(out))
        assert scan.returncode == 0, scan.stdout
    finally:
        staging_pg16.drop_database(name)


def test_only_language_codes_make_a_translations_map():
    """A user's version (``{"current_sign_in_ip": ..., "current_sign_in_at": ...}``) is no translations
    map: ``ip`` and ``at`` are no languages, so the time gets no path of the IP's; ``body_ca`` stands
    for ``body_es``, and ``{"it", "pt_BR"}`` are languages."""
    from scalingo_staging_sync.suggest import json_path_specs

    docs = [
        {"current_sign_in_ip": f"88.30.41.{i}", "current_sign_in_at": "2022-11-04T20:05:50.109"}
        for i in range(20)
    ]
    paths, problem = json_path_specs(docs)
    assert problem is None and paths == {"current_sign_in_ip": "ip"}, paths
    docs = [{"body_ca": f"Escriviu a persona{i}@correu.test", "body_es": "Hola"} for i in range(5)]
    docs += [{"it": "Ciao", "pt_BR": f"Escreva para pessoa{i}@correio.test"} for i in range(5)]
    paths, _ = json_path_specs(docs)
    assert set(paths) == {"body_ca", "body_es", "it", "pt_BR"}, paths


def test_paths_are_read_from_documents_of_the_whole_table_not_its_first_rows(staging_pg16, tmp_path):
    """Mattermost's posts: only the newest rows' props hold webhook attachments, whose fields carry a
    customer's e-mail address. Suggest read the column's first 200 documents, all older posts, and
    wrote no path for them: the run's PII scan then failed on the suggested rules. Its documents are
    drawn from the whole table, as the scan's sample is."""
    spec = _suggested_and_rescanned(
        staging_pg16,
        "cli_suggest_newest_rows",
        "CREATE TABLE public.posts (id int PRIMARY KEY, props jsonb NOT NULL);"
        "INSERT INTO public.posts SELECT g, jsonb_build_object('from_bot', 'false', 'channel_mentions', '')"
        " FROM generate_series(1, 2400) g;"
        "INSERT INTO public.posts SELECT g, jsonb_build_object('from_bot', 'true', 'attachments',"
        " jsonb_build_array(jsonb_build_object('title', 'Reporter', 'fields', jsonb_build_array("
        " jsonb_build_object('short', true, 'value', 'customer' || g || '@gmail.com')))))"
        " FROM generate_series(2401, 3000) g;",
        "public.posts.props",
        tmp_path,
    )
    assert spec == {"transformer": "json", "paths": {"attachments.*.fields.*.value": "email"}}


def test_a_value_quoting_a_flagged_value_of_its_document_gets_a_path():
    """A Mattermost webhook attachment names the customer under ``author_name`` and again in its
    ``fallback`` text ("Nouveau ticket de Alain Gimenez"): no detector sees a name in free text, and
    the customer is no user the copy index knows. The author name was masked, the fallback kept it.
    A value quoting a flagged value of the same document is cleared; other keys keep theirs."""
    from scalingo_staging_sync.suggest import json_path_specs

    docs = [
        {
            "from_webhook": "true",
            "attachments": [
                {
                    "author_name": name,
                    "fallback": f"Nouveau ticket de {name}",
                    "title": f"Ticket #{i} – Poussière magnifique",
                    "color": "#ff8000",
                    "footer": "Zendesk",
                }
            ],
        }
        for i, name in enumerate(["Alain Gimenez", "Wenke Dubois", "Marta Nowak", "Ömer Yılmaz"])
    ]
    paths, problem = json_path_specs(docs)
    assert problem is None
    assert paths == {"attachments.*.author_name": "full_name", "attachments.*.fallback": "null"}, paths


SYNAPSE_LIKE = """
CREATE TABLE public.users (name text NOT NULL, password_hash text, CONSTRAINT users_name_key UNIQUE (name));
CREATE TABLE public.profiles (
  user_id text NOT NULL UNIQUE, displayname text, full_user_id text UNIQUE,
  CONSTRAINT full_user_id_not_null CHECK (full_user_id IS NOT NULL)
);
CREATE TABLE public.events (event_id text PRIMARY KEY, sender text NOT NULL, state_key text, kind text);
CREATE TABLE public.thread_subscriptions (id int PRIMARY KEY, user_id text NOT NULL REFERENCES public.users (name));
WITH people(i, first, last) AS (
  SELECT i, (ARRAY['Julie','Karim','Wenke','Marta','Ömer','Claire','Jonas','Léa','Pierre','Anke'])[1 + i % 10],
            (ARRAY['Martin','Benali','Dubois','Nowak','Yilmaz','Girard','Krüger','Moreau','Lefèvre','Schulz'])[1 + (i / 10) % 10]
  FROM generate_series(0, 59) i
)
INSERT INTO public.profiles
SELECT lower(first || '.' || last), first || ' ' || last, '@' || lower(first || '.' || last) || ':chat.example.org'
FROM people;
INSERT INTO public.users SELECT full_user_id, '$2b$12$' || md5(user_id) FROM public.profiles;
INSERT INTO public.events
SELECT 'ev' || g, p.full_user_id, CASE WHEN g % 3 = 0 THEN p.full_user_id ELSE '' END, 'm.room.message'
FROM generate_series(1, 600) g JOIN public.profiles p ON p.full_user_id = (SELECT name FROM public.users ORDER BY name OFFSET g % 60 LIMIT 1);
"""


def test_user_ids_made_of_names_get_one_keyed_hash_in_every_table(staging_pg16, tmp_path):
    """Synapse keys its people by Matrix ids made of their names (``@julie.martin:server``) in a hundred
    tables, with few foreign keys. Columns holding them were found by copies of names alone and got
    NULL or '' (the events' sender, every membership's user id) where one keyed hash in every table
    keeps them joining; a table referencing ``users.name`` too empty to be scanned kept the ids and
    failed the planner's foreign-key check; ``profiles.full_user_id``, under ``CHECK (full_user_id IS
    NOT NULL)``, was left for review since a hash's output could not be judged against the CHECK."""
    name = "cli_suggest_synapse_ids"
    staging_pg16.create_database(name)
    staging_pg16.execute(SYNAPSE_LIKE, name)
    out, text, specs = _suggest(staging_pg16, name, tmp_path)
    user_id = specs["public.users.name"]
    assert user_id["transformer"] == "hash", user_id
    for column in (
        "events.sender",
        "events.state_key",
        "profiles.full_user_id",
        "thread_subscriptions.user_id",
    ):
        assert specs[f"public.{column}"] == user_id, (column, specs.get(f"public.{column}"))
    assert "# REVIEW" not in text
    assert "foreign key thread_subscriptions_user_id_fkey to public.users.name" in text
    rules = load_rules(out)
    target = PgTarget(host=staging_pg16.host, port=staging_pg16.port, user=staging_pg16.user, dbname=name)
    items = plan_anonymization(target, rules)  # the foreign key's two sides masked alike: accepted
    assert {i["table"] for i in items} >= {"public.users", "public.events", "public.thread_subscriptions"}


def test_ids_in_text_json_documents_get_the_hash_of_the_columns_holding_them(staging_pg16, tmp_path):
    """Synapse keeps each event whole as JSON in a text column (``event_json.json``): it was emptied to
    '{}' (Synapse cannot read its events back). It is masked at its paths now, and the ids made of names
    in it (``sender``, ``state_key``, the ``user_ids`` of a mention) get the keyed hash of the columns
    holding them, so that an event's document and its row still name the same (masked) person. A key
    holding a random token (a device key's id, ``ed25519:tTu6otp1MZ3MRx...``) is no name: its letters
    made ``ip`` by chance and gave a path no other document has. Ids as keys (a map of direct chats)
    cannot be masked by paths: their rules failed the run's gate."""
    name = "cli_suggest_synapse_event_json"
    staging_pg16.create_database(name)
    staging_pg16.execute(
        SYNAPSE_LIKE
        + """
CREATE TABLE public.event_json (event_id text PRIMARY KEY, json text NOT NULL);
INSERT INTO public.event_json
SELECT e.event_id, json_build_object(
  'type', 'm.room.message', 'sender', e.sender, 'origin_server_ts', 1700000000000,
  'content', json_build_object('msgtype', 'm.text', 'body', 'Bonjour ' || p.displayname || ', à demain',
                               'm.mentions', json_build_object('user_ids', json_build_array(e.sender))),
  'keys', json_build_object('ed25519:tTu6otp1MZ3MRxSz0YZQyJDIrzW4bIpSx' || substr(e.event_id, 3), 'x'))::text
FROM public.events e JOIN public.profiles p ON p.full_user_id = e.sender;
CREATE TABLE public.account_data (id int PRIMARY KEY, user_id text NOT NULL, content text NOT NULL,
                                  content_b jsonb);
INSERT INTO public.account_data
SELECT row_number() OVER (), a.full_user_id, json_build_object(b.full_user_id, json_build_array('!r:chat.example.org'))::text,
       jsonb_build_object('direct', jsonb_build_object(b.full_user_id, 'x'))
FROM public.profiles a JOIN public.profiles b ON a.full_user_id < b.full_user_id AND length(a.user_id) = length(b.user_id);
""",
        name,
    )
    out, text, specs = _suggest(staging_pg16, name, tmp_path)
    user_id = specs["public.users.name"]
    assert user_id == specs["public.events.sender"] and user_id["transformer"] == "hash"
    event = specs["public.event_json.json"]
    assert event["transformer"] == "json", event
    paths = event["paths"]
    assert paths["sender"] == paths['content."m.mentions".user_ids.*'] == "hash", paths
    assert paths["content.body"] in ("null", "full_name"), paths
    assert not [p for p in paths if p.startswith("keys.")], paths
    # ids as keys (Matrix's m.direct): a path masks values, never keys; text gets an empty document,
    # a json column is left for review
    assert specs["public.account_data.content"] == {"transformer": "fixed", "value": "{}"}
    assert "public.account_data.content_b" not in specs
    assert "a key of the documents under 'direct' holds personal data" in text
    scan = run_cli("scan", "--dsn", staging_pg16.conninfo(name), "--rules", str(out))
    unmasked = [line.split()[2] for line in scan.stdout.splitlines() if line.split()[:1] == ["unmasked"]]
    assert unmasked == ["public.account_data.content_b"], scan.stdout  # the review item, nothing else

    target = PgTarget(host=staging_pg16.host, port=staging_pg16.port, user=staging_pg16.user, dbname=name)
    for item in plan_anonymization(target, load_rules(out)):
        run_table_plan(item, target, SALT)
    rows = staging_pg16.execute(
        "SELECT e.sender, j.json FROM events e JOIN event_json j USING (event_id) ORDER BY event_id", name
    )
    assert len(rows) == 600
    for sender, document in rows:
        doc = json.loads(document)
        assert doc["sender"] == sender and doc["content"]["m.mentions"]["user_ids"] == [sender]
        assert "@" not in document and "Bonjour" not in document


def test_an_ip_address_under_a_json_key_is_an_ip_not_a_street():
    """Keycloak's session data keeps ``{"ipAddress": "10.1.2.3"}``: the key says "address" and "ip";
    it got ``address`` (a street line) as a column would not. A MAC address gets a hash, a home
    address stays a street line."""
    from scalingo_staging_sync.suggest import json_path_specs

    paths, problem = json_path_specs(
        [{"ipAddress": "10.1.2.3", "mac_address": "aa:bb:cc:dd:ee:ff", "home_address": "12 rue Vieille"}]
    )
    assert problem is None
    assert paths == {"home_address": "address", "ipAddress": "ip", "mac_address": "hash"}


def test_a_column_holding_a_masked_keys_values_without_a_foreign_key_is_masked_alike(staging_pg16, tmp_path):
    """Synapse's ``user_reports.user_id`` (5 rows) names reported people by their ids with no foreign
    key, too few rows for the scan to see copies of names in them: it kept the ids. A column with no
    finding whose sampled values are all a masked key's (a unique column masked with a keyed hash)
    gets the key's rule, so the masked values still match. A column where some values are not the
    key's, or values of under 6 characters (a role "admin" that is also a user's name), is left."""
    name = "cli_suggest_implied_reference"
    staging_pg16.create_database(name)
    staging_pg16.execute(SYNAPSE_LIKE, name)
    staging_pg16.execute(
        """
INSERT INTO public.users SELECT '@jerome' || g || ':chat.example.org', NULL FROM generate_series(1, 3) g;
CREATE TABLE public.user_reports (id int PRIMARY KEY, user_id text NOT NULL, reason text);
INSERT INTO public.user_reports SELECT g, '@jerome' || g || ':chat.example.org', 'spam' FROM generate_series(1, 3) g;
CREATE TABLE public.audit (id int PRIMARY KEY, actor text);
INSERT INTO public.audit SELECT g, CASE WHEN g = 1 THEN 'system-cron-job' ELSE (SELECT name FROM public.users LIMIT 1) END
FROM generate_series(1, 4) g;
INSERT INTO public.users VALUES ('admin', NULL);
CREATE TABLE public.roles (id int PRIMARY KEY, role text);
INSERT INTO public.roles VALUES (1, 'admin');
""",
        name,
    )
    out, text, specs = _suggest(staging_pg16, name, tmp_path)
    user_id = specs["public.users.name"]
    assert specs["public.user_reports.user_id"] == user_id, specs.get("public.user_reports.user_id")
    assert "its values are public." in text and "no foreign key says so" in text
    assert "public.audit.actor" not in specs and "public.roles.role" not in specs
    # only among the tables the scan reads: with --schema public, another schema's column is left
    staging_pg16.execute(
        "CREATE SCHEMA other; CREATE TABLE other.user_reports AS SELECT * FROM public.user_reports;", name
    )
    scoped = tmp_path / "scoped.yaml"
    proc = run_cli(
        "scan", "--dsn", staging_pg16.conninfo(name), "--schema", "public", "--suggest-rules", str(scoped)
    )
    assert proc.returncode in (0, 1), proc.stderr
    scoped_specs = {f"{r.qualified}.{c}" for r in load_rules(scoped).anonymization_tables for c in r.columns}
    assert "public.user_reports.user_id" in scoped_specs and "other.user_reports.user_id" not in scoped_specs
    _out, _text, all_specs = _suggest(staging_pg16, name, tmp_path / "all")
    assert all_specs["other.user_reports.user_id"] == user_id  # the whole database: both
    target = PgTarget(host=staging_pg16.host, port=staging_pg16.port, user=staging_pg16.user, dbname=name)
    for item in plan_anonymization(target, load_rules(out)):
        run_table_plan(item, target, SALT)
    joined = staging_pg16.execute(
        "SELECT count(*) FROM public.user_reports r JOIN public.users u ON u.name = r.user_id"
        " WHERE r.user_id NOT LIKE '@%'",
        name,
    )
    assert joined == [(3,)]  # masked, and still the same people
