"""Planning against the restored catalog: errors named by entry and key, collected together;
SQL injection attempts in table, column and condition fields; strategies and derived columns."""

from __future__ import annotations

import pytest

from scalingo_staging_sync.anonymize.planner import PlanError, plan_anonymization
from scalingo_staging_sync.anonymize.rules import RulesError

from .conftest import anonymize, execute, rules_from


@pytest.fixture
def shop(db):
    _pg, target = db
    execute(
        target,
        """
        CREATE TABLE users (id int PRIMARY KEY, email varchar(10), name text NOT NULL, born date,
                            note text NOT NULL DEFAULT '', code varchar(3), created_at timestamptz DEFAULT now(),
                            search tsvector, email_md5 text, email_sha256 text);
        CREATE TABLE "users; DROP TABLE x" (id int);
        CREATE TABLE x (id int);
        CREATE TABLE accounts (id int PRIMARY KEY, login text UNIQUE, email text, first_name text,
                               last_name text, full_name text);
        """,
    )
    return target


def plan_errors(target, text):
    with pytest.raises(PlanError) as info:
        plan_anonymization(target, rules_from(text))
    return info.value.errors


def test_bad_rules_rejected_with_named_entries(shop):
    errors = plan_errors(
        shop,
        """
source_app: p
anonymization_tables:
  - table: nope
    columns: {a: email}
  - table: users
    columns:
      emial: email            # unknown column
      email: email            # email into varchar(10)
      name: null              # NOT NULL
      born: first_name        # wrong type
      note: {transformer: date_shift}
      code: {transformer: fixed, value: "ABCDE"}
      created_at: {transformer: fixed, value: "not a date"}
  - table: accounts
    columns: {login: first_name}
  - table: x
    strategy: user_anonymization
""",
    )
    joined = "\n".join(errors)
    assert "anonymization_tables[0].table: no such table public.nope" in joined
    assert "anonymization_tables[1].columns.emial: no such column in public.users" in joined
    assert (
        "anonymization_tables[1].columns.email: transformer 'email' needs at least 29 characters; column is character varying(10)"
        in joined
    )
    assert "anonymization_tables[1].columns.name: null into NOT NULL column name" in joined
    assert (
        "anonymization_tables[1].columns.born: transformer 'first_name' does not apply to type date" in joined
    )
    assert (
        "anonymization_tables[1].columns.note: transformer 'date_shift' does not apply to type text" in joined
    )
    assert (
        "anonymization_tables[1].columns.code: transformer 'fixed' needs at least 5 characters; column is character varying(3)"
        in joined
    )
    assert (
        "anonymization_tables[1].columns.created_at: fixed value does not fit timestamp with time zone"
        in joined
    )
    assert (
        "anonymization_tables[2].columns.login: transformer 'first_name' does not keep values unique, but login is in unique index accounts_login_key"
        in joined
    )
    assert "anonymization_tables[3].strategy: user_anonymization matches no column of public.x" in joined


def test_unknown_transformer_and_strategy_rejected_before_planning():
    from scalingo_staging_sync.anonymize.rules import RulesError

    with pytest.raises(RulesError) as info:
        rules_from(
            "source_app: p\nanonymization_tables: [{table: t, columns: {a: fake_name}}, {table: u, strategy: nope}]"
        )
    assert any(
        e.startswith("anonymization_tables[0].columns.a: unknown transformer 'fake_name'")
        for e in info.value.errors
    )
    assert any(
        e.startswith("anonymization_tables[1].strategy: unknown strategy 'nope'") for e in info.value.errors
    )


def test_injection_in_table_and_column_names_is_just_not_found(shop):
    errors = plan_errors(
        shop,
        """
source_app: p
anonymization_tables:
  - table: "users; DROP TABLE x"
    columns: {"id; DROP TABLE x": email}
  - table: '"x""; DROP TABLE x; --"'
    columns: {id: null}
""",
    )
    assert errors == [
        "anonymization_tables[0].columns.id; DROP TABLE x: no such column in public.users; DROP TABLE x",
        'anonymization_tables[1].table: no such table public."x""; DROP TABLE x; --"',
    ]
    assert execute(shop, "SELECT count(*) FROM x") == [(0,)]  # still there


def test_unbalanced_quote_in_table_name_refused_by_the_rules():
    with pytest.raises(RulesError, match=r"anonymization_tables\[0\]\.table: .*double quote"):
        rules_from(
            """
source_app: p
anonymization_tables:
  - table: "x\\"; DROP TABLE x; --"
    columns: {id: null}
"""
        )


def test_injection_in_condition_is_wrapped_and_refused(shop):
    # a comment swallowing the closing parenthesis and a second statement: refused by the server
    # as one prepared statement (the rules loader also refuses a ';')
    from scalingo_staging_sync.anonymize.planner import _check_condition, read_table

    with shop.connect() as conn:
        cat = read_table(conn, "public", "users")
        assert _check_condition(conn, cat, "true) OR (1=1", "c") == []  # still one expression, in parentheses
        problems = _check_condition(conn, cat, "1=1) ; DROP TABLE x --", "anonymization_tables[0].condition")
        assert problems and problems[0].startswith("anonymization_tables[0].condition:")
        problems = _check_condition(conn, cat, "no_such_column > 1", "anonymization_tables[0].condition")
        assert 'column "no_such_column" does not exist' in problems[0]
    assert execute(shop, "SELECT count(*) FROM x") == [(0,)]


def test_condition_with_trailing_comment_stays_wrapped(shop):
    execute(
        shop,
        "INSERT INTO accounts VALUES (1, 'a', 'a@x.org', 'A', 'B', 'A B'), (2, 'b', 'b@x.org', 'C', 'D', 'C D')",
    )
    anonymize(
        shop,
        "source_app: p\nanonymization_tables: [{table: accounts, columns: {email: email}, condition: 'id > 1 -- only new ones'}]",
    )
    emails = dict(execute(shop, "SELECT id, email FROM accounts"))
    assert emails[1] == "a@x.org" and emails[2].endswith("@example.com")


def test_plan_items_and_derived_columns(shop):
    rules = rules_from(
        """
source_app: p
email_domain: demo.example.org
anonymization_tables:
  - table: accounts
    columns: {email: email, first_name: first_name, last_name: last_name}
  - table: public.users
    columns: {name: full_name}
    condition: "created_at < now()"
  - table: x
    query: "UPDATE x SET id = id"
"""
    )
    items = plan_anonymization(shop, rules, dump_path=None)
    accounts, users, x = items
    assert set(accounts) == {
        "table", "schema", "name", "mode", "columns", "strategy", "condition", "query", "key_columns",
        "masked_columns", "warnings",
    }  # fmt: skip
    assert accounts["table"] == "public.accounts" and accounts["mode"] == "in_place"
    assert accounts["columns"]["email"] == {"transformer": "email", "domain": "demo.example.org"}
    assert accounts["key_columns"] == ["id"]
    assert any("full_name is not masked" in w for w in accounts["warnings"])
    assert users["condition"] == "created_at < now()" and users["key_columns"] == ["id"]
    assert x["query"] and x["masked_columns"] == [] and x["key_columns"] == ["id"]
    assert any("inline query" in w for w in x["warnings"])


def test_md5_column_is_derived_and_tsvector_flagged(shop):
    items = plan_anonymization(
        shop,
        rules_from(
            "source_app: p\nanonymization_tables: [{table: users, columns: {name: full_name, email_md5: null}}]"
        ),
    )
    assert items[0]["columns"]["email_md5"] == {"transformer": "null"}
    items = plan_anonymization(
        shop,
        rules_from("source_app: p\nanonymization_tables: [{table: accounts, columns: {email: email}}]"),
    )
    execute(
        shop,
        "ALTER TABLE accounts ADD COLUMN email_md5 text, ADD COLUMN email_sha256 text, ADD COLUMN search tsvector",
    )
    items = plan_anonymization(
        shop, rules_from("source_app: p\nanonymization_tables: [{table: accounts, columns: {email: email}}]")
    )
    item = items[0]
    assert item["columns"]["email_md5"] == {"transformer": "md5_of", "column": "email"}
    assert "email_md5" in item["masked_columns"]
    text = "\n".join(item["warnings"])
    assert "email_sha256: looks like a digest" in text and "search: tsvector not masked" in text


def test_planner_refuses_a_cycle_closed_by_the_md5_column_it_adds(shop):
    """email read from email_md5: the planner's own email_md5 (md5 of the masked email) closes a cycle,
    refused by name when planning (it was "the masking expressions do not compile" with a database, and
    nothing when planning from the archive)."""
    execute(shop, "ALTER TABLE accounts ADD COLUMN email_md5 text")
    errors = plan_errors(
        shop,
        "source_app: p\nanonymization_tables: [{table: accounts, columns: {email: {transformer: md5_of, "
        "column: email_md5}}}]",
    )
    assert any(
        e.startswith(
            "anonymization_tables[0].columns.email: derived columns of public.accounts form a cycle: "
            "email -> email_md5 -> email (each reads the masked value of the next: email: md5_of column: "
            "email_md5; email_md5: md5_of column: email (added by the planner: md5 of masked column email))"
        )
        for e in errors
    ), errors


def test_generated_column_cannot_be_masked_but_is_recomputed(db):
    _pg, target = db
    execute(
        target,
        "CREATE TABLE p (id int, first text, last text, display text GENERATED ALWAYS AS (first || ' ' || last) STORED)",
    )
    execute(target, "INSERT INTO p (id, first, last) VALUES (1, 'Alice', 'Martin')")
    rules = rules_from("source_app: p\nanonymization_tables: [{table: p, columns: {display: full_name}}]")
    with pytest.raises(PlanError, match=r"anonymization_tables\[0\]\.columns\.display: generated column"):
        plan_anonymization(target, rules)
    results = anonymize(
        target,
        "source_app: p\nanonymization_tables: [{table: p, columns: {first: first_name, last: last_name}}]",
    )
    first, last, display = execute(target, "SELECT first, last, display FROM p")[0]
    assert display == f"{first} {last}" and "Alice" not in display
    # computed only from masked columns: listed with them (the PII scan counts it as masked)
    assert results[0]["masked_columns"] == ["first", "last", "display"]


def test_strategy_lists_the_columns_it_applies_to(shop):
    items = plan_anonymization(
        shop,
        rules_from("source_app: p\nanonymization_tables: [{table: accounts, strategy: user_anonymization}]"),
    )
    item = items[0]
    assert item["strategy"] == "user_anonymization"
    assert set(item["masked_columns"]) == {"email", "first_name", "last_name", "full_name"}
    assert item["columns"]["full_name"] == {"transformer": "full_name", "from": ["first_name", "last_name"]}


# ------------------------------------------------------------------ the same checks on the archive alone

SHOP_SQL = """
CREATE TABLE users (id int PRIMARY KEY, email varchar(10), name text NOT NULL, born date,
                    note text NOT NULL DEFAULT '', code varchar(3), created_at timestamptz DEFAULT now(),
                    search tsvector, email_md5 text, email_sha256 text);
CREATE TABLE x (id int);
CREATE TABLE accounts (id int PRIMARY KEY, login text UNIQUE, email text, first_name text,
                       last_name text, full_name text);
"""


@pytest.fixture
def shop_archive(prod_pg, tmp_path):
    """The ``shop`` tables in the production server, dumped by pg_dump 16 (no database at planning)."""
    from scalingo_staging_sync.restore.pgtools import find_pg_tools

    prod_pg.create_database("planner_shop")
    try:
        prod_pg.execute(SHOP_SQL, dbname="planner_shop")
        dump = prod_pg.pg_dump("planner_shop", tmp_path / "shop.pgsql")
    finally:
        prod_pg.drop_database("planner_shop")
    return dump, find_pg_tools(prod_pg.bin_dir)


def test_archive_planning_refuses_bad_rules_without_a_database(shop_archive):
    from scalingo_staging_sync.inventory import plan_from_archive

    dump, tools = shop_archive
    rules = rules_from(
        """
source_app: p
anonymization_tables:
  - table: nope
    columns: {a: email}
  - table: users
    columns:
      emial: email
      email: email
      name: null
      born: first_name
      note: {transformer: date_shift}
      code: {transformer: fixed, value: "ABCDE"}
      created_at: {transformer: date_shift}
    condition: "born < now() AND nme IS NOT NULL"
  - table: accounts
    columns: {login: first_name}
  - table: x
    strategy: user_anonymization
"""
    )
    with pytest.raises(PlanError) as info:
        plan_from_archive(dump, rules, tools=tools)
    errors = info.value.errors
    assert errors[0].startswith("anonymization_tables[0].table: public.nope is not a table of this archive")
    joined = "\n".join(errors)
    for expected in (
        "anonymization_tables[1].columns.emial: no such column in public.users",
        "anonymization_tables[1].columns.email: transformer 'email' needs at least 29 characters",
        "anonymization_tables[1].columns.name: null into NOT NULL column name",
        "anonymization_tables[1].columns.born: transformer 'first_name' does not apply to type date",
        "anonymization_tables[1].columns.note: transformer 'date_shift' does not apply to type text",
        "anonymization_tables[1].columns.code: transformer 'fixed' needs at least 5 characters",
        "anonymization_tables[1].condition: column nme does not exist in public.users",
        "anonymization_tables[2].columns.login: transformer 'first_name' does not keep values unique, but "
        "login is in unique index accounts_login_key of public.accounts",
        "anonymization_tables[3].strategy: user_anonymization matches no column of public.x",
    ):
        assert expected in joined
    assert "created_at" not in joined  # date_shift fits a timestamptz


def test_archive_plan_items_match_the_catalog_plan(shop_archive, shop):
    """On the same tables, the archive plan and the catalog plan give the same items (on_load where the
    catalog path is told it restores from a dump)."""
    from scalingo_staging_sync.inventory import plan_from_archive

    dump, tools = shop_archive
    text = """
source_app: p
anonymization_tables:
  - table: accounts
    columns: {email: email, first_name: first_name, last_name: last_name}
  - table: public.users
    columns: {name: full_name}
    condition: "created_at < now()"
"""
    from_archive = plan_from_archive(dump, rules_from(text), tools=tools).items
    from_catalog = plan_anonymization(shop, rules_from(text), dump_path=str(dump), tools=tools)
    assert from_archive == from_catalog
