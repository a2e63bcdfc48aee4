"""Schema zoo, without Airflow: a production database with the awkward schema features real applications
have, dumped with the embedded server's ``pg_dump -Fc`` (PostgreSQL 16 and 18, also with
``--load-via-partition-root``) and driven through the core the reference DAG runs:

archive inventory and plan -> pre-data -> masking triggers -> one masked data load (``stream`` and
``trigger`` engines) -> finish (in-place UPDATE of a conditional rule) -> post-data -> materialized
views and ANALYZE -> PII scan -> residual-value verification -> promotion; through a scratch database as
a superuser, or in place as a role with Scalingo's grants whose TimeZone and DateStyle differ from
production's.

The zoo: names with spaces, dots, quotes, ``%``, ``{}``, semicolons and comments (tables, columns,
schemas, indexes, a materialized view's columns), reserved words, one table name in three schemas and a
case twin, enums, domains, arrays, json and jsonb, STORED generated and identity columns, dropped and
late-added columns, tables without a primary key (duplicate rows, a json column, an all-NULL column), a
masked column under a unique index, an exclusion constraint and (NOT VALID) foreign keys,
``varchar(n)`` shorter than the masked output, NULL / empty / tab / newline / backslash / non-ASCII
values, multi-level partitioning with partitions in another schema and in another column order,
inheritance children, materialized views, sequences, large objects, multi-megabyte rows of 150 columns.

Then every masked column holds no original, every unmasked column is byte for byte production's
(checksums), row counts, constraints, indexes, sequences and large objects match, and every masked
table was proven by verification. Rules the product declares unsupported (docs/rules.md "Planning")
are refused from the archive with a message naming the column and the fix; a CHECK the masked value
breaks fails the load closed.
"""

from __future__ import annotations

import itertools
import json
import random
from contextlib import contextmanager

import psycopg
import pytest
from psycopg import sql

from scalingo_staging_sync.anonymize.executor import finish_on_load, prepare_on_load, run_table_plan
from scalingo_staging_sync.anonymize.postload import finalize_masked_data
from scalingo_staging_sync.anonymize.rules import parse_rules_text
from scalingo_staging_sync.anonymize.salt import derive_key, target_with_key
from scalingo_staging_sync.anonymize.stream import StreamMasking
from scalingo_staging_sync.inventory import plan_from_archive
from scalingo_staging_sync.pgconn import PgTarget
from scalingo_staging_sync.pii.scanner import enforce, partially_masked_from_plan, scan_target
from scalingo_staging_sync.restore import targets
from scalingo_staging_sync.restore.api import restore
from scalingo_staging_sync.restore.pgtools import find_pg_tools
from scalingo_staging_sync.tablename import TableName
from scalingo_staging_sync.testing.postgres import pg_bin_dir
from scalingo_staging_sync.verification import verify_residuals
from tests.restore.restore_helpers import SCALINGO_ROLE, make_scalingo_db

pytest.importorskip("duckdb")

SALT = "schema-zoo-salt-Zq8!vR2#mK7@pL4$wN9^xT1&"
_counter = itertools.count()
_SHIFTED: dict[str, list] = {}  # the date_shift outputs of the first run, for the others

WEIRD = 'Weird "Name".x'  # a table name with a space, a quote and a dot
SALES = "Sales.EU"  # a schema name with a dot
WEIRD_RULE = '"Weird ""Name"".x"'  # how a rule names it
OBRIEN, BOBBY = 'O\'Brien "Ltd" co', "Robert'); DROP TABLE students;--"

SCHEMA_SQL = r"""
CREATE SCHEMA crm;
CREATE SCHEMA "Sales.EU";

CREATE TYPE tier AS ENUM ('free', 'pro', 'Enterprise Plus');
CREATE DOMAIN contact_email AS varchar(80) CHECK (VALUE LIKE '%@%');
CREATE DOMAIN short_code AS varchar(12);

CREATE TABLE public."Weird ""Name"".x" (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    "E-mail Address" contact_email NOT NULL UNIQUE,
    "user" text,
    "order" varchar(6),
    "First Name" text NOT NULL,
    "Last Name" text NOT NULL,
    "Full Name" text GENERATED ALWAYS AS ("First Name" || ' ' || "Last Name") STORED,
    city varchar(5),
    bio text,
    nicknames text[],
    plan tier NOT NULL DEFAULT 'free',
    code short_code,
    note text,
    "Select" int,
    legacy_dropped text,
    "tok%s {en}" text,
    "new" text
);
ALTER TABLE public."Weird ""Name"".x" DROP COLUMN legacy_dropped;
CREATE INDEX "weird.idx ""x"" i" ON public."Weird ""Name"".x" (city, "order");

-- one table name in three schemas: public's is masked, crm's is excluded, "Sales.EU"'s masked otherwise
CREATE TABLE public.customers (id serial PRIMARY KEY, email text NOT NULL UNIQUE, since date NOT NULL);
CREATE TABLE crm.customers (id serial PRIMARY KEY, email text NOT NULL, score int);
-- and a twin differing only in case, masked by a rule of its own (names are taken as written)
CREATE TABLE public."Customers" (id serial PRIMARY KEY, contact text, segment tier NOT NULL);
-- excluded by a quoted name, with a foreign key to a restored table
CREATE TABLE "Sales.EU"."Audit ""Log"" 1" (id int PRIMARY KEY, customer int REFERENCES public."Customers" (id),
                                           who text);
CREATE TABLE "Sales.EU".customers (
    id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, phone varchar(20), "VAT no." text, region char(2),
    CONSTRAINT "vat once" EXCLUDE USING btree ("VAT no." WITH =)
);

-- a reserved word as a table name, its masked column a foreign key to a masked unique column
CREATE TABLE public."order" (
    id bigserial PRIMARY KEY,
    "user" text NOT NULL REFERENCES public.customers (email) ON UPDATE CASCADE,
    total numeric(12, 2) NOT NULL,
    tags text[] NOT NULL DEFAULT '{}'
);

-- no primary key (rows are then keyed by their unmasked columns): duplicate rows, a json column (no "="
-- operator), a column NULL in every row, a NOT VALID foreign key to a masked column that legacy rows break
CREATE TABLE public.audit_trail (at timestamptz NOT NULL, actor_email text, detail text, context json,
                                 reviewed_by text);

-- multi-level partitioning, a partition in another schema, the masked parent
CREATE TABLE public.events (id bigint NOT NULL, at date NOT NULL, kind text NOT NULL, email text,
                            payload jsonb) PARTITION BY RANGE (at);
CREATE TABLE crm.events_2025 PARTITION OF public.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE public.events_2026 PARTITION OF public.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')
    PARTITION BY LIST (kind);
CREATE TABLE public."events_2026 Login" PARTITION OF public.events_2026 FOR VALUES IN ('login');
CREATE TABLE public.events_2026_other PARTITION OF public.events_2026 DEFAULT;
CREATE TABLE crm.events_2024 (payload jsonb, gone int, email text, kind text NOT NULL, at date NOT NULL,
                              id bigint NOT NULL);
ALTER TABLE crm.events_2024 DROP COLUMN gone;
ALTER TABLE public.events ATTACH PARTITION crm.events_2024 FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE UNIQUE INDEX events_id_at_kind ON public.events (id, at, kind);

-- inheritance: the masked parent and a child with its own column
CREATE TABLE public.people (id int PRIMARY KEY, full_name text NOT NULL, email text);
CREATE TABLE public.staff (badge text NOT NULL) INHERITS (public.people);
ALTER TABLE public.staff ADD PRIMARY KEY (id);
CREATE TABLE public.contractors (agency text, email text, id int PRIMARY KEY, full_name text NOT NULL);
ALTER TABLE public.contractors INHERIT public.people;

-- names that would break SQL built from strings: quotes, a semicolon, a comment
CREATE SCHEMA "O'Brien ""Ltd"" co";
CREATE TABLE "O'Brien ""Ltd"" co"."Robert'); DROP TABLE students;--" (
    id int PRIMARY KEY, "name'--" text NOT NULL, "x""y" text, "$1" int
);

-- jsonb masked by paths (the stream engine leaves such a table to the trigger)
CREATE TABLE public.profiles (id int PRIMARY KEY, prefs jsonb NOT NULL, last_seen timestamptz, born date);

-- large objects referenced from a table
CREATE TABLE public.attachments (id int PRIMARY KEY, label text, content oid);

-- very wide rows: 150 columns, and multi-megabyte values
CREATE TABLE public.wide (id int PRIMARY KEY, secret text, public_blob text, raw bytea);

-- sequences: a standalone one with a quoted name, and serials advanced past their rows
CREATE SEQUENCE public."Invoice No.Seq" START 5000 INCREMENT 7;

CREATE MATERIALIZED VIEW public.customer_domains AS
    SELECT id, email, split_part(email, '@', 2) AS domain FROM public.customers;
CREATE UNIQUE INDEX customer_domains_id ON public.customer_domains (id);
CREATE MATERIALIZED VIEW crm."Weird view" AS
    SELECT id, lower("E-mail Address") AS "mail.lower", "First Name" || '!' AS "hello ""x"" !"
    FROM public."Weird ""Name"".x";

-- masked in place (a condition), with "%" in names and in the condition, a char(n) column
CREATE TABLE public."promo.50%" (id serial PRIMARY KEY, "e-mail %" text, segment text NOT NULL,
                                 postal char(5), born date);
"""

# values a masked text column must survive as something else: tab, newline, CR, backslash, COPY's \N
# and \. as text, quotes, non-ASCII, emoji, empty and blank
ODD = [
    "tab\there", "new\nline", "cr\r\nlf", "back\\slash", "\\N", "\\.", "'single' \"double\"",
    "Zoë Łukasiewicz-Ørsted", "日本語テキスト", "🙂 emoji", "", " ",
]  # fmt: skip
FIRST = ["Philomena", "Aurelio", "Zénobie", "Thaddeus", "Gwendolyn", "Bartholomew", "Ottoline", "Leopold"]
LAST = ["Wrightsonbury", "Castellamonte", "Ørsted", "Blackwood", "Archambault", "Quincy", "Vanderbilt"]
CITIES = ["Quimperlé", "Saint-Jean-de-Luz", "Ploumanac'h", "Bézu", "Yy"]


def _rows(seed: int = 7):
    rnd = random.Random(seed)
    weird = []
    for i in range(60):
        first, last = FIRST[i % len(FIRST)], LAST[i % len(LAST)]
        weird.append(
            {
                "E-mail Address": f"{first.lower()}.{last.lower()}.{i}@zoo-mail.test".replace("ø", "o"),
                "user": None if i % 9 == 0 else (ODD[i % len(ODD)] if i % 3 == 0 else f"login-{first}-{i}"),
                "order": None if i % 7 == 0 else last[:6],
                "First Name": first if i % 5 else ODD[i % len(ODD)] or "X",
                "Last Name": last,
                "city": None if i % 4 == 0 else CITIES[i % len(CITIES)][:5],
                "bio": None if i % 6 == 0 else f"bio {i} of {first} {last}: {ODD[i % len(ODD)]}",
                "nicknames": None if i % 8 == 0 else [f"nick-{first}-{i}", "a,b", 'q"uote', "NULL"],
                "plan": ("free", "pro", "Enterprise Plus")[i % 3],
                "code": f"C-{i:04d}",
                "note": ODD[(i + 5) % len(ODD)] + f" #{i}",
                "Select": i * 3,
                "tok%s {en}": None if i % 10 == 0 else f"token-{i}-{{secret}}-%s",
                "new": f"new value {i}",
            }
        )  # fmt: skip
    customers = [
        (f"customer.{i}.{rnd.randrange(10**6)}@shop.test", f"2024-0{1 + i % 9}-1{i % 10}") for i in range(40)
    ]
    return weird, customers


def load_zoo(pg, dbname: str) -> None:
    weird, customers = _rows()
    pg.create_database(dbname)
    with psycopg.connect(pg.conninfo(dbname), autocommit=True) as conn:
        conn.execute(SCHEMA_SQL)
        cols = list(weird[0])
        copy = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier("public", WEIRD), sql.SQL(", ").join(map(sql.Identifier, cols))
        )  # COPY: no client-side placeholders (a column name holds "%s")
        with conn.cursor() as cur:
            with cur.copy(copy) as cp:
                for r in weird:
                    cp.write_row([r[c] for c in cols])
            cur.executemany("INSERT INTO customers (email, since) VALUES (%s, %s)", customers)
            cur.executemany(
                "INSERT INTO crm.customers (email, score) VALUES (%s, %s)",
                [(f"crm.contact.{i}@crm-only.test", i) for i in range(10)],
            )
            cur.executemany(
                sql.SQL("INSERT INTO {} VALUES (%s, %s, %s, %s)").format(sql.Identifier(OBRIEN, BOBBY)),
                [(i, f"Bobby Tables {i}", f"little {i}\\';--", i) for i in range(7)],
            )
            cur.executemany(
                'INSERT INTO "Customers" (contact, segment) VALUES (%s, %s)',
                [(f"twin.{i}@twin.test", ("free", "pro")[i % 2]) for i in range(8)],
            )
            cur.executemany(
                'INSERT INTO "Sales.EU"."Audit ""Log"" 1" VALUES (%s, %s, %s)',
                [(i, 1 + i % 8, f"auditor.{i}@excluded.test") for i in range(6)],
            )
            cur.executemany(
                'INSERT INTO "Sales.EU".customers (phone, "VAT no.", region) VALUES (%s, %s, %s)',
                [(None if i % 5 == 0 else f"+33 7 98 76 54 {i:02d}", f"FR{i:011d}", "FR") for i in range(15)],
            )
            cur.executemany(
                'INSERT INTO "order" ("user", total, tags) VALUES (%s, %s, %s)',
                [(customers[i % 7][0], 10 * i + 0.25, ["gift", f"tab\t{i}"]) for i in range(30)],
            )
            # duplicate rows on purpose (no key to tell them apart)
            cur.executemany(
                "INSERT INTO audit_trail VALUES (%s, %s, %s, %s)",
                [("2026-01-02 03:04:05+00", None if i % 4 == 0 else f"auditor.{i % 3}@corp-audit.test",
                  f"changed {i % 2}\\path\n", '{"ip": "10.0.0.1",  "n": 1}') for i in range(20)],
            )  # fmt: skip
            cur.executemany(
                "INSERT INTO events VALUES (%s, %s, %s, %s, %s)",
                [(i, ("2025-06-01", "2026-02-01", "2026-03-01", "2024-05-05")[i % 4], ("login", "purchase")[i % 2],
                  f"event.actor.{i}@zoo-events.test", json.dumps({"i": i})) for i in range(45)],
            )  # fmt: skip
            cur.executemany(
                "INSERT INTO people VALUES (%s, %s, %s)",
                [(i, f"{FIRST[i % 8]} {LAST[i % 7]}-{i}", f"person.{i}@people.test") for i in range(12)],
            )
            cur.executemany(
                "INSERT INTO staff VALUES (%s, %s, %s, %s)",
                [
                    (100 + i, f"Staff {FIRST[i]} {LAST[i]}", f"staff.{i}@people.test", f"B-{i}")
                    for i in range(5)
                ],
            )
            cur.executemany(
                "INSERT INTO profiles VALUES (%s, %s, %s, %s)",
                [(i, json.dumps({"theme": "dark", "email": f"recovery.{i}@zoo-recovery.test", "n": i,
                                 "phones": [f"+33 6 12 34 {i:02d} 1{j}" for j in range(2)]}),
                  f"2026-0{1 + i % 9}-1{i % 10} 1{i % 10}:2{i % 10}:00+00", f"19{50 + i}-1{i % 3}-0{1 + i % 9}")
                 for i in range(25)],
            )  # fmt: skip
            cur.executemany(
                'INSERT INTO "promo.50%%" ("e-mail %%", segment, postal, born) VALUES (%s, %s, %s, %s)',
                [(None if i % 6 == 0 else f"promo.{i}@promo.test", ("retail", "vip%", "internal test")[i % 3],
                  None if i % 5 == 0 else f"{29000 + i}", f"19{60 + i}-0{1 + i % 9}-1{i % 10}") for i in range(18)],
            )  # fmt: skip
            cur.executemany(
                "INSERT INTO contractors VALUES (%s, %s, %s, %s)",
                [
                    (f"Agency {i}", f"contractor.{i}@agency.test", 200 + i, f"Contractor {LAST[i]}")
                    for i in range(4)
                ],
            )
            for i in range(3):
                conn.execute(
                    "INSERT INTO attachments VALUES (%s, %s, lo_from_bytea(0, %s))",
                    (i, f"doc {i}", f"attachment {i}: public brochure text\x00\xff".encode("latin-1")),
                )
            conn.execute(
                "ALTER TABLE wide "
                + ", ".join(f"ADD COLUMN c{n:03d} {('int', 'text', 'numeric')[n % 3]}" for n in range(146))
            )
            fill = ", ".join(f"c{n:03d}" for n in range(146))  # every third column text, the others numbers
            values = ", ".join((f"g * {n}", f"'v{n}-' || g", f"g + 0.{n}")[n % 3] for n in range(146))
            conn.execute(
                f"INSERT INTO wide (id, secret, public_blob, raw, {fill}) SELECT g, "  # noqa: S608 - constants
                "'top-secret-' || g || '-' || repeat(md5(g::text), 70000), "
                "repeat(E'public\\tblob\\\\' || g, 60000), decode(repeat(md5(g::text), 30000), 'hex'), "
                f"{values} FROM generate_series(1, 3) g"
            )
        # a column added after the rows, with a default (stored as the rows' "missing" value)
        conn.execute(
            'ALTER TABLE public."Weird ""Name"".x" ADD COLUMN added_late text DEFAULT \'late default\''
        )
        conn.execute(
            "ALTER TABLE audit_trail ADD CONSTRAINT audit_actor FOREIGN KEY (actor_email) "
            "REFERENCES customers (email) NOT VALID"
        )
        conn.execute("SELECT setval('customers_id_seq', 900)")
        conn.execute("""SELECT nextval('"Invoice No.Seq"'), nextval('"Invoice No.Seq"')""")
        conn.execute("REFRESH MATERIALIZED VIEW customer_domains")
        conn.execute('REFRESH MATERIALIZED VIEW crm."Weird view"')
        conn.execute("ANALYZE")


RULES_YAML = r"""
source_app: zoo-production
large_objects: keep
exclude_tables: ['crm.customers', '"Sales.EU"."Audit ""Log"" 1"']
anonymization_tables:
  - table: '"Weird ""Name"".x"'
    columns:
      E-mail Address: email
      user: first_name
      order: last_name
      First Name: first_name
      Last Name: last_name
      city: city
      bio: hash
      nicknames: null
      tok%s {en}: hash
      new: hash
      added_late: {transformer: hash, length: 20}
  - table: '"promo.50%"'
    condition: "segment NOT LIKE '%test%' AND \"e-mail %\" IS DISTINCT FROM '%'"
    columns:
      e-mail %: email
      postal: postal_code
      born: date_shift
  - table: profiles
    columns:
      last_seen: date_shift
      born: {transformer: date_shift, max_days: 30}
      prefs:
        transformer: json
        paths: {email: email, phones.*: phone}
  - table: customers
    columns:
      email: email
  - table: '"O''Brien ""Ltd"" co"."Robert''); DROP TABLE students;--"'
    columns:
      name'--: full_name
      x"y: hash
  - table: Customers
    columns:
      contact: email
      segment: {transformer: fixed, value: Enterprise Plus}
  - table: '"Sales.EU".customers'
    columns:
      phone: phone
      VAT no.: {transformer: hash, length: 16}
  - table: '"order"'
    columns:
      user: email
  - table: audit_trail
    columns:
      actor_email: email
  - table: events
    columns:
      email: email
  - table: people
    columns:
      full_name: full_name
      email: email
  - table: wide
    columns:
      secret: hash
pii_scan:
  on_unmasked: fail
  allow:
    - column: 'public."Weird ""Name"".x".note'
      reason: "free text, reviewed"
    - column: public.audit_trail.context
      reason: "internal network addresses of the back office"
    - column: public.audit_trail.detail
      reason: "change log text"
    - column: public.attachments.label
      reason: "document labels"
    - column: public.staff.badge
      reason: "badge codes"
    - column: public.contractors.agency
      reason: "agency names"
    - column: 'public."promo.50%".e-mail %'
      reason: "the internal test rows outside the condition are kept on purpose"
    - column: 'public."promo.50%".postal'
      reason: "the internal test rows outside the condition are kept on purpose"
    - column: 'public."promo.50%".born'
      reason: "the internal test rows outside the condition are kept on purpose"
verification:
  enabled: true
"""

#: table -> (masked columns, columns derived from them, ORDER BY for checksums)
MASKED = {
    ("public", WEIRD): (
        [
            "E-mail Address",
            "user",
            "order",
            "First Name",
            "Last Name",
            "city",
            "bio",
            "nicknames",
            "tok%s {en}",
            "new",
            "added_late",
        ],
        ["Full Name"],
        "id",
    ),
    ("public", "customers"): (["email"], [], "id"),
    ("public", "Customers"): (["contact", "segment"], [], "id"),
    (OBRIEN, BOBBY): (["name'--", 'x"y'], [], "id"),
    ("public", "profiles"): (["prefs", "last_seen", "born"], [], "id"),
    ("public", "promo.50%"): (["e-mail %", "postal", "born"], [], "id"),
    ("crm", "Weird view"): (["mail.lower", 'hello "x" !'], [], "id"),
    (SALES, "customers"): (["phone", "VAT no."], [], "id"),
    ("public", "order"): (["user"], [], "id"),
    ("public", "audit_trail"): (["actor_email"], [], "at, detail, context::text"),
    ("public", "events"): (["email"], [], "id"),
    ("public", "people"): (["full_name", "email"], [], "id"),
    ("public", "staff"): (["full_name", "email"], [], "id"),  # an inheritance child: the parent's rule
    ("public", "contractors"): (["full_name", "email"], [], "id"),  # another column order
    ("public", "wide"): (["secret"], [], "id"),
}
UNRULED = {("public", "attachments"): "id"}
EXCLUDED = [("crm", "customers"), (SALES, 'Audit "Log" 1')]


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def zoo_dumps(request, tmp_path_factory):
    """``dumps(version, *options)`` -> (production server, database, archive): the zoo loaded into a
    PostgreSQL ``version`` server playing production (16: ``prod_pg``; 18: the PG 18 server, in a
    database of its own) and dumped with that server's ``pg_dump -Fc`` (and ``options``); each loaded
    and dumped once."""
    loaded: dict[int, tuple] = {}
    made: dict[tuple, tuple] = {}

    def dumps(version: int, *options: str):
        if version not in loaded:
            pg = request.getfixturevalue("prod_pg" if version == 16 else f"staging_pg{version}")
            db = f"schema_zoo_prod{version}"
            load_zoo(pg, db)
            loaded[version] = (pg, db)
        if (version, *options) not in made:
            pg, db = loaded[version]
            out = tmp_path_factory.mktemp("zoo") / f"zoo{version}.pgsql"
            made[(version, *options)] = (pg, db, pg.pg_dump(db, out, extra=list(options)))
        return made[(version, *options)]

    yield dumps
    for pg, db in loaded.values():
        pg.drop_database(db)


@pytest.fixture
def zoo_dump(zoo_dumps):
    _pg, db, dump = zoo_dumps(16)
    return db, dump


def _fetch(pg, dbname: str, query, params=None):
    with psycopg.connect(pg.conninfo(dbname), autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


def _columns(pg, dbname: str, schema: str, table: str) -> list[str]:
    return [
        r[0]
        for r in _fetch(
            pg,
            dbname,
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
            "AND NOT attisdropped ORDER BY attnum",
            (sql.Identifier(schema, table).as_string(None),),
        )
    ]


def _checksum(pg, dbname: str, schema: str, table: str, columns: list[str], order: str):
    """md5 of the COPY-like text of ``columns``, in ``order`` (row count alongside)."""
    row = sql.SQL("ROW({})").format(sql.SQL(", ").join(map(sql.Identifier, columns)))
    query = sql.SQL(
        "SELECT count(*), md5(string_agg({}::text, E'\\n' ORDER BY {}, {}::text)) FROM {}"
    ).format(row, sql.SQL(order), row, sql.Identifier(schema, table))
    return _fetch(pg, dbname, query)[0]


#: rows a conditional rule leaves as they are (not checked for masking; checksummed with the rest)
KEPT = {("public", "promo.50%"): "segment LIKE '%test%'"}


def _values(pg, dbname: str, schema: str, table: str, column: str) -> list:
    """The column's values as text, without the rows a condition keeps (:data:`KEPT`)."""
    where = (
        sql.SQL(" WHERE ({}) IS NOT TRUE").format(sql.SQL(KEPT[(schema, table)]))
        if (schema, table) in KEPT
        else sql.SQL("")
    )
    query = sql.SQL("SELECT {}::text FROM {}{}").format(
        sql.Identifier(column), sql.Identifier(schema, table), where
    )
    return [r[0] for r in _fetch(pg, dbname, query)]


# ------------------------------------------------------------------------------------- the pipeline


@contextmanager
def staging_role_styles(pg, enabled: bool):
    """The Scalingo-like staging role with another TimeZone and DateStyle than production's (UTC, ISO):
    its sessions print dates and timestamps otherwise than the archive holds them (the keys of
    ``events`` and ``audit_trail`` hold a date and a timestamptz). Reset afterwards."""
    if not enabled:
        yield
        return
    role = sql.Identifier(SCALINGO_ROLE)
    with pg.connect() as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (SCALINGO_ROLE,)).fetchone():
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE").format(role))
        conn.execute(sql.SQL("ALTER ROLE {} SET timezone TO 'Pacific/Chatham'").format(role))
        conn.execute(sql.SQL("ALTER ROLE {} SET datestyle TO 'SQL, DMY'").format(role))
    try:
        yield
    finally:
        with pg.connect() as conn:
            conn.execute(sql.SQL("ALTER ROLE {} RESET ALL").format(role))


def run_core(dump, staging_pg, rules_text: str, engine: str, *, scalingo_role: bool = False) -> dict:
    """What the reference DAG does between its gate and its promotion, as plain function calls.
    ``scalingo_role``: restore in place as a role with exactly Scalingo's grants (no superuser, no
    CREATEDB, not the database owner) instead of through a scratch database as a superuser."""
    tools = find_pg_tools(pg_bin_dir(staging_pg.version))
    rules = parse_rules_text(rules_text)
    archive_plan = plan_from_archive(str(dump), rules, tools=tools).to_json()
    items = archive_plan["items"]
    live = f"zoo_staging_{next(_counter)}"
    if scalingo_role:
        target = make_scalingo_db(staging_pg, live)
    else:
        staging_pg.create_database(live)
        target = PgTarget(host=staging_pg.host, port=staging_pg.port, user=staging_pg.user, dbname=live)

    mode = "auto" if scalingo_role else "swap"
    exclude = list(rules.exclude_tables)  # the DAG passes the run's exclusions to every section too
    pre = restore(
        dump, target, section="pre-data", mode=mode, tools=tools, plan=archive_plan, exclude_tables=exclude
    )
    mode = pre["mode"]
    into = targets.restore_database(target, mode)
    prepared = [
        prepare_on_load(item, into, SALT, str(dump), tools=tools) if item["mode"] == "on_load" else None
        for item in items
    ]
    masking = StreamMasking(engine)
    load = restore(
        dump,
        target_with_key(target, derive_key(SALT)),
        section="data",
        mode=mode,
        tools=tools,
        plan=archive_plan,
        copy_filter=masking,
        exclude_tables=exclude,
    )
    results = [
        finish_on_load(item, into, prep)
        if prep is not None
        else run_table_plan(item, into, SALT, email_domain=rules.email_domain)
        for item, prep in zip(items, prepared, strict=True)
    ]
    post = restore(
        dump, target, section="post-data", mode=mode, tools=tools, plan=archive_plan, exclude_tables=exclude
    )
    masked = [f"{i['table']}.{c}" for i in items for c in i.get("masked_columns", [])]
    partial = partially_masked_from_plan(items)
    conditional = {i["table"]: i["condition"] for i in items if i.get("condition")}
    final = finalize_masked_data(into, [c for c in masked if c not in partial], list(conditional))
    scan = scan_target(
        into,
        masked_columns=masked + final.get("masked_view_columns", []),
        allow=list(rules.pii_scan.allow),
        extra_patterns=dict(rules.pii_scan.patterns) or None,
        sample_rows=rules.pii_scan.sample_rows,
        excluded_tables=archive_plan.get("excluded_tables") or [],
        conditional=conditional,
        large_objects=rules.large_objects == "keep",
        partially_masked=partial,
    )
    enforce(scan, rules.pii_scan.on_unmasked)
    verification = verify_residuals(into, results, SALT, check_stats=True)
    promoted = targets.promote(target, mode, keep_previous=False)
    return {
        "db": live,
        "plan": archive_plan,
        "pre": pre,
        "load": load,
        "post": post,
        "results": results,
        "final": final,
        "scan": scan,
        "verification": verification,
        "promoted": promoted,
        "stream_used": dict(masking.used),
    }


# ------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize(
    ("prod_version", "staging_version", "engine", "scalingo_role", "dump_options"),
    [
        (16, 16, "stream", False, ()),
        (16, 16, "trigger", False, ()),
        (16, 16, "stream", False, ("--load-via-partition-root",)),
        (16, 18, "stream", False, ()),
        (16, 18, "trigger", True, ()),
        (18, 18, "stream", False, ()),
        (18, 18, "trigger", False, ()),
    ],
    ids=[
        "pg16-pg16-stream",
        "pg16-pg16-trigger",
        "pg16-pg16-stream-load-via-partition-root",
        "pg16-pg18-stream",
        "pg16-pg18-trigger-in-place-scalingo-role",
        "pg18-pg18-stream",
        "pg18-pg18-trigger",
    ],
)
def test_the_core_masks_the_schema_zoo(
    zoo_dumps, request, prod_version, staging_version, engine, scalingo_role, dump_options
):
    prod_pg, prod_db, dump = zoo_dumps(prod_version, *dump_options)
    staging = request.getfixturevalue(f"staging_pg{staging_version}")
    with staging_role_styles(staging, scalingo_role):
        out = run_core(dump, staging, RULES_YAML, engine, scalingo_role=scalingo_role)
    db = out["db"]
    assert out["pre"]["mode"] == ("in_place" if scalingo_role else "swap")
    try:
        # nothing failed or was left out silently
        for step in ("pre", "load", "post"):
            assert out[step]["warnings"] == [], (step, out[step]["warnings"])
        assert out["scan"].passed and out["verification"]["passed"]
        # every masked table was proven: sampled rows found again by their key, also without a primary
        # key (keyed by the unmasked columns that "=" can compare: not json; NULL parts looked up with
        # IS NULL) and with keys the staging role prints otherwise (TimeZone, DateStyle)
        items = {i["table"]: i for i in out["plan"]["items"]}
        assert items["public.audit_trail"]["key_columns"] == ["at", "detail", "reviewed_by"]
        proven = {t["table"]: (t["keys_sampled"], t["keys_found"]) for t in out["verification"]["tables"]}
        assert set(proven) == set(items)
        assert all(found >= sampled > 0 for sampled, found in proven.values()), proven
        # date_shift is deterministic whatever the session's DateStyle and TimeZone (it hashes the
        # value's text): every variant (the Scalingo role prints dates as DMY in Pacific/Chatham) gives
        # the same shifts, on load and in place
        shifted = _fetch(
            staging,
            db,
            "SELECT (last_seen AT TIME ZONE 'UTC')::text, born::text FROM profiles ORDER BY id",
        ) + _fetch(staging, db, 'SELECT NULL, born::text FROM "promo.50%" ORDER BY id')
        assert _SHIFTED.setdefault("zoo", shifted) == shifted
        # the rows the condition keeps are sampled and judged: their originals are allowed by name
        promo = {f.column: f.status for f in out["scan"].findings if "promo" in f.qualified_name}
        assert promo == {"e-mail %": "allowed", "postal": "allowed", "born": "allowed"}, promo
        # materialized-view columns computed from masked columns count as masked (quoted names, a dot)
        assert {'crm.Weird view.hello "x" !', "crm.Weird view.mail.lower"} <= set(
            out["final"]["masked_view_columns"]
        )
        planned = sorted(i["table"] for i in out["plan"]["items"])
        assert planned == sorted(
            str(TableName.parse(t))
            for t in [
                WEIRD_RULE, "customers", "Customers", str(TableName(OBRIEN, BOBBY)), '"Sales.EU".customers', '"order"', "audit_trail",
                "crm.events_2024", "crm.events_2025", "events_2026 Login", "contractors", "profiles", '"promo.50%"', "events_2026_other", "people", "staff", "wide",
            ]
        )  # fmt: skip
        if engine == "stream":
            # every table masked on load streams (a fixed enum label too: COPY reads the label as the
            # trigger's CAST does) but those only the trigger masks (jsonb paths; leaf partitions
            # whose rows the archive loads through their root); the conditional rule masks in place
            by_trigger = {"public.profiles", 'public."promo.50%"'}
            if "--load-via-partition-root" in dump_options:
                by_trigger |= {t for t in planned if "events_20" in t}
            assert sorted(out["load"]["masked_on_worker"]) == sorted(set(planned) - by_trigger), out[
                "stream_used"
            ]

        # masked columns: no original value survives; NULL stays NULL
        for (schema, table), (masked, derived, _order) in MASKED.items():
            for column in masked + derived:
                before = _values(prod_pg, prod_db, schema, table, column)
                after = _values(staging, db, schema, table, column)
                assert len(before) == len(after), (table, column)
                if column == "prefs":
                    docs = [json.loads(v) for v in after]
                    assert all(d["email"].endswith("@example.com") for d in docs)
                    originals = {json.loads(v)["email"] for v in before} | {
                        p for v in before for p in json.loads(v)["phones"]
                    }
                    assert not originals & (
                        {d["email"] for d in docs} | {p for d in docs for p in d["phones"]}
                    )
                    assert [(d["theme"], d["n"]) for d in docs] == [
                        (json.loads(v)["theme"], json.loads(v)["n"]) for v in before
                    ]
                    continue
                if column == "nicknames":
                    assert set(after) == {None}, column
                    continue
                survivors = {v for v in before if v not in (None, "")} & set(after)
                assert not survivors, (table, column, sorted(survivors)[:3])
                assert [v is None for v in before].count(True) == [v is None for v in after].count(True), (
                    table,
                    column,
                )

        # unmasked data intact: row counts and checksums of every other column
        for (schema, table), (masked, derived, order) in MASKED.items():
            keep = [c for c in _columns(prod_pg, prod_db, schema, table) if c not in masked + derived]
            assert _checksum(staging, db, schema, table, keep, order) == _checksum(
                prod_pg, prod_db, schema, table, keep, order
            ), table
        for (schema, table), order in UNRULED.items():
            every = _columns(prod_pg, prod_db, schema, table)
            assert _checksum(staging, db, schema, table, every, order) == _checksum(
                prod_pg, prod_db, schema, table, every, order
            ), table
        for schema, table in EXCLUDED:
            assert _fetch(
                staging, db, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
            ) == [(0,)]
        # generated column recomputed from the masked names; varchar(n) outputs cut to n
        rows = _fetch(
            staging,
            db,
            'SELECT "First Name", "Last Name", "Full Name", "order", city FROM public."Weird ""Name"".x"',
        )
        assert all(full == f"{f} {last}" for f, last, full, _o, _c in rows)
        assert all((o is None or len(o) <= 6) and (c is None or len(c) <= 5) for *_x, o, c in rows)
        # the foreign key to the masked unique column still joins, the materialized view shows masked data
        assert _fetch(
            staging, db, 'SELECT count(*) FROM "order" o JOIN customers c ON c.email = o."user"'
        ) == [(30,)]
        assert _fetch(
            staging,
            db,
            "SELECT count(*), count(*) FILTER (WHERE domain = 'example.com') FROM customer_domains",
        ) == [(40, 40)]

        # constraints and indexes: every one of production's, valid
        catalog = (
            "SELECT n.nspname, conrelid::regclass::text, conname, contype, convalidated FROM pg_constraint c "
            "JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname IN ('public', 'crm', 'Sales.EU', 'O''Brien \"Ltd\" co') "
            "AND contype <> 'n' ORDER BY 1, 2, 3"
        )
        assert _fetch(staging, db, catalog) == _fetch(prod_pg, prod_db, catalog)
        indexes = (
            "SELECT schemaname, tablename, indexname, indexdef FROM pg_indexes "
            "WHERE schemaname IN ('public', 'crm', 'Sales.EU', 'O''Brien \"Ltd\" co') ORDER BY 1, 2, 3"
        )
        assert _fetch(staging, db, indexes) == _fetch(prod_pg, prod_db, indexes)
        assert _fetch(staging, db, "SELECT count(*) FROM pg_index WHERE NOT indisvalid") == [(0,)]

        # sequences and identities continue after production's values
        seqs = (
            "SELECT schemaname, sequencename, last_value FROM pg_sequences "
            "WHERE schemaname IN ('public', 'crm', 'Sales.EU', 'O''Brien \"Ltd\" co') ORDER BY 1, 2"
        )
        assert _fetch(staging, db, seqs) == _fetch(prod_pg, prod_db, seqs)
        assert _fetch(staging, db, """SELECT nextval('"Invoice No.Seq"')""") == [(5014,)]

        # large objects kept, byte for byte
        lo = "SELECT a.id, md5(lo_get(a.content)) FROM attachments a ORDER BY 1"
        assert _fetch(staging, db, lo) == _fetch(prod_pg, prod_db, lo)
        # no masking trigger or function left behind
        assert _fetch(staging, db, "SELECT count(*) FROM pg_trigger WHERE tgname LIKE '\\_sss%'") == [(0,)]
        assert _fetch(staging, db, "SELECT count(*) FROM pg_proc WHERE proname LIKE '\\_sss%'") == [(0,)]
    finally:
        staging.drop_database(db)


REFUSALS = [
    # (rule patch: table -> columns, expected fragments of the PlanError)
    ("a generated column", '"Weird ""Name"".x"', {"Full Name": "full_name"}, ["Full Name", "generated"]),
    (
        "e-mail into varchar(12)",
        '"Weird ""Name"".x"',
        {"code": "email"},
        [
            "columns.code: transformer 'email' needs at least 29 characters; column is public.short_code (a domain of at most 12 characters)"
        ],
    ),
    (
        "a non-unique transformer on a unique column",
        "customers",
        {"email": "first_name"},
        ["email", "unique"],
    ),
    (
        "a partition key",
        "events",
        {"kind": "hash"},
        ["events_2026.kind is in the partition key of public.events_2026"],
    ),
    (
        "a non-unique transformer under an exclusion constraint",
        '"Sales.EU".customers',
        {"VAT no.": "phone"},
        [
            "columns.VAT no.: transformer 'phone' does not keep values unique, but VAT no. is in unique index vat once"
        ],
    ),
    ("one side of a foreign key", "customers", {"email": "email", "since": None}, []),
]


@pytest.mark.parametrize(("what", "table", "columns", "expected"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_declared_limits_are_refused_from_the_archive(zoo_dump, what, table, columns, expected):
    import yaml

    from scalingo_staging_sync.anonymize.planner import PlanError

    _db, dump = zoo_dump
    rules = yaml.safe_load(RULES_YAML)
    if what == "one side of a foreign key":
        rules["anonymization_tables"] = [r for r in rules["anonymization_tables"] if r["table"] != '"order"']
        expected = [
            "public.order.user is not masked but public.customers.email is masked",
            "exclude public.order",
        ]
    else:
        for rule in rules["anonymization_tables"]:
            if rule["table"] == table:
                rule["columns"] = {**rule["columns"], **columns}
    with pytest.raises(PlanError) as err:
        plan_from_archive(str(dump), parse_rules_text(yaml.safe_dump(rules, allow_unicode=True)),
                          tools=find_pg_tools(pg_bin_dir(16)))  # fmt: skip
    message = str(err.value)
    for fragment in expected:
        assert fragment in message, message


def test_a_check_constraint_the_masked_value_breaks_fails_the_load_closed(prod_pg, staging_pg16, tmp_path):
    """Declared (docs/rules.md "Planning"): a table CHECK on a masked column is flagged in the plan item's
    warnings; if it rejects the masked value, the load fails, naming the table and the constraint, and
    the scratch database is dropped (nothing unmasked is left)."""
    from scalingo_staging_sync.restore.errors import RestoreError

    db = "schema_zoo_check"
    prod_pg.create_database(db)
    try:
        prod_pg.execute(
            'CREATE TABLE "Contacts" (id int PRIMARY KEY, phone text CONSTRAINT "phone is French" '
            "CHECK (phone LIKE '+33%'));"
            "INSERT INTO \"Contacts\" SELECT g, '+33 6 00 00 00 ' || g FROM generate_series(1, 5) g",
            db,
        )
        dump = prod_pg.pg_dump(db, tmp_path / "check.pgsql")
    finally:
        prod_pg.drop_database(db)
    rules = "source_app: p\nanonymization_tables:\n  - table: Contacts\n    columns: {phone: phone}\n"
    plan = plan_from_archive(str(dump), parse_rules_text(rules), tools=find_pg_tools(pg_bin_dir(16)))
    assert plan.items[0]["warnings"] == ["CHECK constraint phone is French involves masked column(s) phone"]
    before = staging_pg16.execute("SELECT datname FROM pg_database ORDER BY 1")
    with pytest.raises(RestoreError) as err:
        run_core(dump, staging_pg16, rules, "stream")
    assert "public.Contacts" in str(err.value) and "constraint phone is French" in str(err.value)
    assert "CheckViolation" in str(err.value)
    assert "a masked value likely breaks it: give the masked column a transformer" in str(err.value)
    live = sorted(
        {*(r[0] for r in staging_pg16.execute("SELECT datname FROM pg_database"))} - {r[0] for r in before}
    )
    assert all(not name.endswith("__incoming") for name in live), live  # the scratch database is dropped
    for name in live:
        assert staging_pg16.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", name) == [
            (0,)
        ]
        staging_pg16.drop_database(name)
