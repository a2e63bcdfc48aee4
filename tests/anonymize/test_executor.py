"""Executor: on-load trigger with the real Chinook dump, in-place UPDATE with proof, retries after a
real deadlock, no retry on SQL errors, custom strategies and inline queries, COPY text parsing."""

from __future__ import annotations

import logging
import threading
import time

import psycopg
import pytest
from psycopg import sql

from scalingo_staging_sync.anonymize import executor
from scalingo_staging_sync.anonymize.executor import (
    RetryPolicy,
    build_proof,
    run_table_plan,
    sample_from_copy,
)
from scalingo_staging_sync.anonymize.planner import PlanError, plan_anonymization
from scalingo_staging_sync.anonymize.strategies import register_strategy, unregister_strategy
from scalingo_staging_sync.fingerprint import ALGORITHM, fingerprint
from scalingo_staging_sync.restore.copytext import parse_copy_header, parse_copy_row
from scalingo_staging_sync.verification import verify_table

from .conftest import SALT, anonymize, execute, rules_from

CHINOOK_RULES = """
source_app: prod
anonymization_tables:
  - table: customer
    columns:
      first_name: first_name
      last_name: last_name
      company: company
      address: address
      city: city
      postal_code: postal_code
      phone: phone
      fax: null
      email: email
  - table: employee
    strategy: user_anonymization
"""


def test_copy_text_parsing():
    assert parse_copy_header(
        'COPY public.customer (customer_id, "First Name", "a""b", email) FROM stdin;'
    ) == [
        "customer_id",
        "First Name",
        'a"b',
        "email",
    ]
    assert parse_copy_row("1\t\\N\ta\\tb\\\\c\\nd\t\\101\\x42\t") == [
        "1",
        None,
        "a\tb\\c\nd",
        "AB",
        "",
    ]


def test_proof_format_skips_nulls_and_public_constants():
    item = {
        "masked_columns": ["email", "label"],
        "columns": {"email": {"transformer": "email"}, "label": {"transformer": "fixed", "value": "ACME"}},
    }
    proof = build_proof(
        item,
        SALT,
        ["id"],
        [
            {"id": "1", "email": "a@b.c", "label": "ACME"},
            {"id": "2", "email": None, "label": "secret"},
            {"id": None, "email": "x@y.z", "label": "x"},
        ],
    )
    assert proof == {
        "algorithm": ALGORITHM,
        "key_columns": ["id"],
        "rows": [
            {"key": ["1"], "values": {"email": fingerprint(SALT, "a@b.c")}},
            {"key": ["2"], "values": {"label": fingerprint(SALT, "secret")}},
        ],
        "sampled_rows": 2,  # the row without a key cannot be found again: not sampled
    }


@pytest.fixture
def chinook_schema(db_any, chinook_dump):
    """A staging database with Chinook's pre-data restored (no data, no indexes)."""
    from scalingo_staging_sync.restore.pgtools import find_pg_tools
    from scalingo_staging_sync.restore.runner import run_pg_restore

    pg, target = db_any
    tools = find_pg_tools(pg.bin_dir)
    run_pg_restore(chinook_dump, target, section="pre-data", tools=tools)
    return pg, target, tools


def test_on_load_with_real_chinook_dump(chinook_schema, chinook_dump, chinook_prod, prod_pg):
    _pg, target, tools = chinook_schema
    items = plan_anonymization(target, rules_from(CHINOOK_RULES), dump_path=str(chinook_dump), tools=tools)
    assert [i["mode"] for i in items] == ["on_load", "on_load"]
    assert items[0]["key_columns"] == ["customer_id"]  # from the archive's post-data
    results = [run_table_plan(i, target, SALT, dump_path=str(chinook_dump), tools=tools) for i in items]
    customer, employee = results
    assert customer["rows"] == 59 and employee["rows"] == 8 and customer["mode"] == "on_load"
    assert len(customer["proof"]["rows"]) == 59 and customer["proof"]["key_columns"] == ["customer_id"]
    # no original survived: compare every row with production
    prod = {
        r[0]: r[1:]
        for r in prod_pg.execute("SELECT customer_id, email, first_name, city FROM customer", chinook_prod)
    }
    staged = {
        r[0]: r[1:] for r in execute(target, "SELECT customer_id, email, first_name, city FROM customer")
    }
    assert prod.keys() == staged.keys()
    for cid, (email, first, city) in staged.items():
        assert email != prod[cid][0] and email.endswith("@example.com")
        assert first != prod[cid][1]
        assert city is None or city != prod[cid][2]
    # the trigger and its function are gone before post-data
    assert execute(target, "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal") == [(0,)]
    assert execute(target, "SELECT count(*) FROM pg_proc WHERE proname LIKE '_sss_mask_%'") == [(0,)]
    # the residual-value verification accepts the proof
    with target.connect() as conn:
        for result in results:
            check = verify_table(conn, result, SALT)
            assert check.passed, check.problems
            assert check.keys_found == len(result["proof"]["rows"])
    # running it again (an Airflow retry) is idempotent: TRUNCATE, then masked load
    again = run_table_plan(items[0], target, SALT, dump_path=str(chinook_dump), tools=tools)
    assert again["rows"] == 59
    assert execute(target, "SELECT count(*) FROM customer") == [(59,)]


def test_in_place_proof_matches_verification(db):
    _pg, target = db
    execute(target, "CREATE TABLE users (id int PRIMARY KEY, email text, created date)")
    execute(
        target,
        "INSERT INTO users SELECT g, 'p' || g || '@corp.com', date '2020-01-01' + g FROM generate_series(1, 500) g",
    )
    results = anonymize(
        target,
        "source_app: p\nanonymization_tables: [{table: users, columns: {email: email}, condition: \"created > '2020-06-01'\"}]",
        statement_timeout_s=30,
    )
    result = results[0]
    assert result["rows"] == execute(target, "SELECT count(*) FROM users WHERE created > '2020-06-01'")[0][0]
    assert len(result["proof"]["rows"]) == 200
    untouched = execute(target, "SELECT count(*) FROM users WHERE email LIKE '%@corp.com'")[0][0]
    assert untouched == 500 - result["rows"]
    with target.connect() as conn:
        check = verify_table(conn, result, SALT)
    assert check.passed, check.problems
    # a proof recorded on rows that were NOT masked is caught by the verifier (the proof is real)
    fake = dict(
        result,
        proof=build_proof({"masked_columns": ["email"]}, SALT, ["id"], [{"id": "1", "email": "p1@corp.com"}]),
    )
    with target.connect() as conn:
        assert not verify_table(conn, fake, SALT).passed


def test_a_masked_column_null_in_every_row_is_verified_not_refused(db):
    """Pay's ``pay_customers.stripe_account`` is NULL unless the app uses Stripe Connect: the proof has
    no fingerprint to record, and verification failed the run ("no residual-value proof although the
    table has rows...") on a table with a primary key. The proof now says how many rows it sampled."""
    _pg, target = db
    execute(target, "CREATE TABLE pay_customers (id bigint PRIMARY KEY, processor text, stripe_account text)")
    execute(target, "INSERT INTO pay_customers SELECT g, 'stripe', NULL FROM generate_series(1, 300) g")
    (result,) = anonymize(
        target,
        "source_app: p\nanonymization_tables: [{table: pay_customers, columns: {stripe_account: hash}}]",
    )
    assert result["proof"]["rows"] == [] and result["proof"]["sampled_rows"] == 200
    with target.connect() as conn:
        check = verify_table(conn, result, SALT)
    assert check.passed, check.problems
    assert check.sampled_without_values == 200
    # a proof that sampled nothing (no key to find rows again by) still fails
    keyless = dict(result, proof=build_proof({"masked_columns": ["stripe_account"]}, SALT, [], []))
    with target.connect() as conn:
        problems = verify_table(conn, keyless, SALT).problems
    assert problems and "no residual-value proof" in problems[0]


def test_the_proof_samples_rows_with_originals_first(db):
    """A column added late is NULL in a table's first rows and filled in its recent ones: the proof
    sampled the first 200 rows, all NULL there, and verification checked nothing of the rows that had
    values. Rows with a value come first now, in place and on load."""
    _pg, target = db
    execute(target, "CREATE TABLE subscribers (id bigint PRIMARY KEY, plan text, phone text)")
    execute(
        target,
        "INSERT INTO subscribers SELECT g, 'free', CASE WHEN g > 900 THEN '+3361234' || lpad(g::text, 4, '0') END"
        " FROM generate_series(1, 1000) g",
    )
    (result,) = anonymize(
        target, "source_app: p\nanonymization_tables: [{table: subscribers, columns: {phone: phone}}]"
    )
    assert result["proof"]["sampled_rows"] == 200
    assert len(result["proof"]["rows"]) == 100  # the 100 rows with a phone, all of them
    with target.connect() as conn:
        check = verify_table(conn, result, SALT)
    assert check.passed and check.keys_found == 100, check.problems
    header = "COPY public.subscribers (id, plan, phone) FROM stdin;"
    lines = [header] + [f"{g}\tfree\t{'+33612340001' if g > 1500 else chr(92) + 'N'}" for g in range(1, 2001)]
    sample = sample_from_copy(iter(lines), 200, ["phone"])
    assert len(sample) == 200 and all(r["phone"] is not None for r in sample)
    assert sample_from_copy(iter(lines[:1501]), 200, ["phone"]) == sample_from_copy(iter(lines[:201]), 200)


def test_retry_after_a_real_deadlock(db):
    _pg, target = db
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # Airflow may reconfigure logging mid-test: listen on the logger itself
    logging.getLogger("scalingo_staging_sync.anonymize.executor").addHandler(handler)
    execute(target, "CREATE TABLE acc (id int, email text)")
    execute(target, "INSERT INTO acc VALUES (1, 'a@x.org'), (2, 'b@x.org')")
    items = plan_anonymization(
        target, rules_from("source_app: p\nanonymization_tables: [{table: acc, columns: {email: email}}]")
    )
    other = psycopg.connect(target.conninfo(), autocommit=False)
    other.execute("SET deadlock_timeout = '20s'")  # the anonymizer's side detects it and is the victim
    other.execute("UPDATE acc SET email = email WHERE id = 2")  # holds row 2
    attempts = []
    real_attempt = executor.with_retries

    def counting(policy, func, *, what):
        def wrapped():
            if what.startswith("anonymize"):  # not the rewrite that follows
                attempts.append(time.monotonic())
            return func()

        return real_attempt(policy, wrapped, what=what)

    out = {}

    def run():
        try:
            out["result"] = run_table_plan(
                items[0], target, SALT, retry=RetryPolicy(attempts=3, base_delay_s=0.2)
            )
        except Exception as exc:  # pragma: no cover - reported below
            out["error"] = exc

    executor_with_retries = executor.with_retries
    executor.with_retries = counting
    try:
        thread = threading.Thread(target=run)
        thread.start()
        waiting = 0
        for _ in range(100):  # wait until the anonymizer's UPDATE (row 1 locked) waits for row 2
            waiting = execute(
                target,
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE%%acc%%'",
            )[0][0]
            if waiting:
                break
            time.sleep(0.05)
        assert waiting == 1
        other.execute("UPDATE acc SET email = email WHERE id = 1")  # opposite order: deadlock
        other.commit()
        thread.join(30)
    finally:
        executor.with_retries = executor_with_retries
        other.close()
        logging.getLogger("scalingo_staging_sync.anonymize.executor").removeHandler(handler)
    assert "error" not in out, out.get("error")
    assert len(attempts) == 2  # failed once with a deadlock, succeeded on retry
    assert any("DeadlockDetected" in r.getMessage() for r in records)
    assert out["result"]["rows"] == 2
    assert all(e.endswith("@example.com") for (e,) in execute(target, "SELECT email FROM acc"))


def test_sql_errors_are_not_retried(db):
    _pg, target = db
    execute(target, "CREATE TABLE slow (id int)")
    item = plan_anonymization(
        target,
        rules_from("source_app: p\nanonymization_tables: [{table: slow, query: 'SELECT pg_sleep(3)'}]"),
    )[0]
    attempts: list[int] = []
    real_attempt = executor.with_retries

    def counting(policy, func, *, what):
        def wrapped():
            attempts.append(1)
            return func()

        return real_attempt(policy, wrapped, what=what)

    executor.with_retries = counting
    try:
        with pytest.raises(executor.AnonymizationError) as info:
            run_table_plan(
                item, target, SALT, retry=RetryPolicy(attempts=3, base_delay_s=0.01), statement_timeout_s=0.2
            )
    finally:
        executor.with_retries = real_attempt
    assert info.value.sqlstate == "57014" and info.value.condition == "QueryCanceled"
    assert "statement timeout" in str(info.value) and not info.value.retryable
    assert len(attempts) == 1  # a statement timeout is an SQL error: never retried
    assert not executor.is_transient(psycopg.errors.UndefinedColumn())
    assert executor.is_transient(psycopg.errors.SerializationFailure())
    assert executor.is_transient(psycopg.OperationalError("connection lost"))


def test_inline_query_runs_as_given(db):
    _pg, target = db
    execute(target, "CREATE TABLE api_keys (id int PRIMARY KEY, key text)")
    execute(target, "INSERT INTO api_keys VALUES (1, 'secret-1'), (2, 'secret-2')")
    results = anonymize(
        target,
        "source_app: p\nanonymization_tables: [{table: api_keys, query: 'UPDATE api_keys SET key = md5(random()::text)'}]",
    )
    assert results[0]["rows"] == 2 and results[0]["proof"]["rows"] == []
    assert execute(target, "SELECT count(*) FROM api_keys WHERE key LIKE 'secret%'") == [(0,)]


def test_custom_strategies(db):
    _pg, target = db
    execute(target, "CREATE TABLE tokens (id int PRIMARY KEY, token text, owner text, active boolean)")
    execute(target, "INSERT INTO tokens VALUES (1, 't1', 'o1', true), (2, 't2', 'o2', false)")

    @register_strategy("test_tokens_map")
    def tokens_map(ctx):
        return {"token": ctx.mask("token", "hash", length=40), "owner": sql.SQL("'nobody'")}

    @register_strategy("test_tokens_stmt", columns=["token"])
    def tokens_stmt(ctx):
        return sql.SQL("UPDATE {} SET token = 'revoked' {}").format(ctx.table, ctx.where)

    @register_strategy("test_tokens_bad")
    def tokens_bad(ctx):
        return sql.SQL("UPDATE {} SET token = 'x'").format(ctx.table)

    try:
        results = anonymize(
            target,
            "source_app: p\nanonymization_tables: [{table: tokens, strategy: test_tokens_map, condition: active}]",
        )
        assert results[0]["rows"] == 1 and results[0]["mode"] == "in_place"
        assert results[0]["masked_columns"] == ["token", "owner"]
        rows = dict((r[0], r[1:]) for r in execute(target, "SELECT id, token, owner FROM tokens"))
        assert len(rows[1][0]) == 40 and rows[1][1] == "nobody" and rows[2] == ("t2", "o2")
        results = anonymize(
            target,
            "source_app: p\nanonymization_tables: [{table: tokens, strategy: test_tokens_stmt, condition: 'NOT active'}]",
        )
        assert results[0]["rows"] == 1 and execute(target, "SELECT token FROM tokens WHERE id = 2") == [
            ("revoked",)
        ]
        with pytest.raises(PlanError, match="ignores the condition"):
            plan_anonymization(
                target,
                rules_from(
                    "source_app: p\nanonymization_tables: [{table: tokens, strategy: test_tokens_bad, condition: active}]"
                ),
            )
    finally:
        for name in ("test_tokens_map", "test_tokens_stmt", "test_tokens_bad"):
            unregister_strategy(name)


def test_strategy_entry_points(monkeypatch):
    import importlib.metadata

    from scalingo_staging_sync.anonymize import strategies

    class FakeEP:
        name = "plugin_strategy"
        value = "pkg:func"

        def load(self):
            return lambda ctx: {"x": sql.SQL("NULL")}

    monkeypatch.setattr(
        importlib.metadata,
        "entry_points",
        lambda group: [FakeEP()] if group == strategies.ENTRY_POINT_GROUP else [],
    )
    monkeypatch.setattr(strategies, "_entry_points_loaded", False)
    try:
        assert strategies.strategy_exists("plugin_strategy")
        assert "plugin_strategy" in strategies.strategy_names()
    finally:
        unregister_strategy("plugin_strategy")


def test_the_databases_own_statement_timeout_does_not_cancel_an_in_place_masking(db):
    """The staging role or database may set a statement_timeout for its application (``ALTER ROLE app
    SET statement_timeout = '30s'``); in place, that role masks. As pg_restore does in its sessions, the
    masking session turns it off: only the operator's own ``statement_timeout_s`` bounds the UPDATE."""
    _pg, target = db
    execute(
        target,
        "CREATE TABLE big (id int PRIMARY KEY, email text NOT NULL);"
        "INSERT INTO big SELECT g, 'person' || g || '@corp.test' FROM generate_series(1, 200000) g",
    )
    execute(
        target,
        sql.SQL("ALTER DATABASE {} SET statement_timeout = '20ms'").format(sql.Identifier(target.dbname)),
    )
    with target.connect() as conn, pytest.raises(psycopg.errors.QueryCanceled):  # the premise
        conn.execute("UPDATE big SET email = upper(email)")
    (result,) = anonymize(
        target, "source_app: p\nanonymization_tables: [{table: big, columns: {email: email}}]"
    )
    assert result["rows"] == 200000
    with target.connect() as conn:
        conn.execute("SET statement_timeout = 0")  # this check's own session
        assert conn.execute("SELECT count(*) FROM big WHERE email LIKE 'person%'").fetchall() == [(0,)]
    with pytest.raises(executor.AnonymizationError, match="statement timeout"):  # the operator's own applies
        anonymize(
            target,
            "source_app: p\nanonymization_tables: [{table: big, columns: {email: email}}]",
            statement_timeout_s=0.001,
        )


@pytest.mark.parametrize("tree", ["plain", "partitioned", "inherited"])
def test_a_table_masked_in_place_keeps_no_unmasked_row_version_in_its_files(db, tree):
    """An UPDATE leaves each row's unmasked version in the table's pages until vacuum reuses them: a copy
    of the staging files (a physical backup of the addon, a disk snapshot) carried production values
    after a successful run. The masked tables of the tree are rewritten (VACUUM FULL) once masked."""
    pg, target = db
    if tree == "plain":
        ddl, leaves = "CREATE TABLE contacts (id int PRIMARY KEY, email text)", ["contacts"]
    elif tree == "partitioned":
        ddl = (
            "CREATE TABLE contacts (id int, email text) PARTITION BY RANGE (id);"
            "CREATE TABLE contacts_a PARTITION OF contacts FOR VALUES FROM (0) TO (1000);"
            "CREATE TABLE contacts_b PARTITION OF contacts FOR VALUES FROM (1000) TO (5000)"
        )
        leaves = ["contacts_a", "contacts_b"]
    else:
        ddl = "CREATE TABLE contacts (id int, email text); CREATE TABLE vip_contacts () INHERITS (contacts)"
        leaves = ["contacts", "vip_contacts"]
    execute(target, ddl)
    execute(
        target,
        "INSERT INTO contacts SELECT g, 'origin.' || g || '@leak.example' FROM generate_series(1, 1500) g",
    )
    if tree == "inherited":
        execute(
            target,
            "INSERT INTO vip_contacts SELECT g, 'vip.' || g || '@leak.example' FROM generate_series(1, 200) g",
        )
    results = anonymize(
        target,
        """
        source_app: prod
        anonymization_tables:
          - table: contacts
            condition: "id > 0"
            columns: {email: email}
        """,
    )
    assert [r["mode"] for r in results] == ["in_place"]
    assert execute(target, "SELECT count(*) FROM contacts WHERE email LIKE '%@leak.example'") == [(0,)]
    execute(target, "CHECKPOINT")
    datadir = execute(target, "SELECT current_setting('data_directory')")[0][0]
    from pathlib import Path

    for leaf in leaves:
        path = Path(datadir) / execute(target, f"SELECT pg_relation_filepath('{leaf}')")[0][0]
        assert path.read_bytes().count(b"@leak.example") == 0, leaf


def test_a_fixed_value_that_does_not_fit_its_column_is_refused_before_any_row_is_masked(
    prod_pg, staging_pg16, tmp_path
):
    """Planning from the archive alone cannot judge every type (a date, an inet): the value was refused
    only by the data load, whose message named neither the rule nor the column ("invalid input syntax
    for type date: <value withheld>"). The prepare step casts it first and names both."""
    from scalingo_staging_sync.anonymize.executor import AnonymizationError
    from scalingo_staging_sync.inventory.plan import plan_from_archive
    from scalingo_staging_sync.restore.pgtools import find_pg_tools
    from scalingo_staging_sync.restore.runner import run_pg_restore

    from .conftest import target_of

    prod_pg.create_database("fixed_cast_prod")
    prod_pg.execute(
        "CREATE TABLE people (id int PRIMARY KEY, born date, last_ip inet);"
        "INSERT INTO people SELECT g, date '1980-01-01' + g, '10.0.0.1' FROM generate_series(1, 20) g",
        "fixed_cast_prod",
    )
    dump = prod_pg.pg_dump("fixed_cast_prod", tmp_path / "fixed.pgsql")
    prod_pg.drop_database("fixed_cast_prod")
    staging_pg16.create_database("fixed_cast")
    try:
        target = target_of(staging_pg16, "fixed_cast")
        tools = find_pg_tools(staging_pg16.bin_dir)
        run_pg_restore(dump, target, section="pre-data", tools=tools)
        for column, value in (("born", "unknown"), ("last_ip", "not-an-ip")):
            rules = rules_from(
                f"""
                source_app: prod
                anonymization_tables:
                  - table: people
                    columns: {{{column}: {{transformer: fixed, value: {value}}}}}
                """
            )
            (item,) = plan_from_archive(dump, rules, tools=tools).items  # as the DAG plans: archive only
            with pytest.raises(
                AnonymizationError, match=rf"public\.people\.{column}: the rule's fixed value '{value}'"
            ):
                run_table_plan(item, target, SALT, dump_path=str(dump), tools=tools)
        assert staging_pg16.execute("SELECT count(*) FROM people", "fixed_cast") == [(0,)]
    finally:
        staging_pg16.drop_database("fixed_cast")


def test_an_in_place_masking_retried_after_its_commit_does_not_mask_twice(db):
    """The UPDATE committed but its answer was lost (or the rewrite after it failed and the task was
    retried): the retry must not mask the masked rows again (the values would no longer be the keyed
    ones, and tables masked elsewhere from the same originals would not match). A fresh restore keeps a
    list of the tables masked in place, written in the masking's own transaction; a retry finds its
    table there and returns the first attempt's rows and proof."""
    from scalingo_staging_sync.restore import targets

    _pg, target = db
    execute(target, "CREATE TABLE contacts (id int PRIMARY KEY, email text)")
    execute(
        target,
        "INSERT INTO contacts SELECT g, 'origin.' || g || '@leak.example' FROM generate_series(1, 50) g",
    )
    targets.reset_masked_marks(target)  # what every fresh restore does after pre-data
    rules = "source_app: p\nanonymization_tables: [{table: contacts, condition: 'id > 10', columns: {email: email}}]"
    (item,) = plan_anonymization(target, rules_from(rules))
    first = run_table_plan(item, target, SALT)
    masked = execute(target, "SELECT id, email FROM contacts ORDER BY id")
    again = run_table_plan(item, target, SALT)
    assert execute(target, "SELECT id, email FROM contacts ORDER BY id") == masked
    assert (again["rows"], again["proof"]) == (first["rows"], first["proof"]) and first["rows"] == 40
    # the next fresh restore starts a new list: its tables are masked again
    targets.reset_masked_marks(target)
    execute(target, "UPDATE contacts SET email = 'origin.' || id || '@leak.example'")
    run_table_plan(item, target, SALT)
    assert execute(target, "SELECT id, email FROM contacts ORDER BY id") == masked


def test_a_fixed_value_equal_to_an_original_as_the_server_prints_it_is_no_residue(db):
    """``fixed: 0`` on a ``numeric(10,2)`` column is stored and read back as ``0.00``, ``fixed: true`` on
    a boolean as ``t``: an original already equal to it is no surviving original (every masked row
    holds that value). The proof must skip it as the server prints it, or verification reports "1 of n
    sampled original values" survived and no rule can clear it."""
    _pg, target = db
    execute(
        target, "CREATE TABLE accounts (id int PRIMARY KEY, balance numeric(10,2), vip boolean, note text)"
    )
    execute(
        target,
        "INSERT INTO accounts SELECT g, CASE WHEN g % 3 = 0 THEN 0 ELSE g * 1.5 END, g % 2 = 0, 'n' || g"
        " FROM generate_series(1, 30) g",
    )
    (result,) = anonymize(
        target,
        """
        source_app: prod
        anonymization_tables:
          - table: accounts
            condition: "id > 0"
            columns: {balance: {transformer: fixed, value: 0}, vip: {transformer: fixed, value: true}}
        """,
    )
    assert execute(target, "SELECT DISTINCT balance::text, vip::text FROM accounts") == [("0.00", "true")]
    values = [v for row in result["proof"]["rows"] for v in row["values"]]
    assert values.count("balance") == 20 and values.count("vip") == 15  # 0.00 and t originals skipped
    with target.connect() as conn:
        check = verify_table(conn, result, SALT)
    assert check.passed, check


def test_a_condition_the_server_cannot_compile_is_named_with_the_servers_message(db):
    """``support_rep_id > 'abc'`` parses, and plans from the archive, but the server refuses it: the
    error names the table, the condition and the server's reason (EXPLAIN reads no row, so its message
    holds no data), not a bare SQLSTATE; nothing is masked."""
    _pg, target = db
    execute(target, "CREATE TABLE people (id int PRIMARY KEY, rep int, email text)")
    execute(target, "INSERT INTO people VALUES (1, 2, 'a.person@leak.example')")
    rules = "source_app: p\nanonymization_tables: [{table: people, condition: \"rep > 'abc'\", columns: {email: email}}]"
    items = plan_anonymization(target, rules_from(rules.replace("'abc'", "0")))
    item = dict(items[0], condition="rep > 'abc'")  # as planned from an archive: no server to judge it
    with pytest.raises(executor.AnonymizationError) as err:
        run_table_plan(item, target, SALT)
    message = str(err.value)
    assert (
        "public.people: condition \"rep > 'abc'\"" in message
        and "invalid input syntax for type integer" in message
    )
    assert not err.value.retryable
    assert execute(target, "SELECT email FROM people") == [("a.person@leak.example",)]


def test_a_fixed_timestamptz_without_offset_is_utc_whatever_the_databases_time_zone(db):
    """Every masking session sets TimeZone to UTC (``salt.MASKING_STYLES``, as verification reads), so
    ``fixed: "2024-03-01 10:00"`` on a ``timestamptz`` column is 10:00 UTC even in a database whose
    TimeZone is Asia/Kolkata, and the proof skips the originals equal to that instant: verification
    passes. (A second cast in the database's own zone would record another instant.)"""
    _pg, target = db
    with target.connect(autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET timezone TO 'Asia/Kolkata'").format(sql.Identifier(target.dbname))
        )
    execute(target, "CREATE TABLE visits (id int PRIMARY KEY, seen_at timestamptz)")
    execute(
        target,
        "INSERT INTO visits SELECT g, CASE WHEN g % 3 = 0 THEN timestamptz '2024-03-01 10:00+00'"
        " ELSE timestamptz '2023-01-01 00:00+00' + g * interval '1 day' END FROM generate_series(1, 30) g",
    )
    (result,) = anonymize(
        target,
        """
        source_app: prod
        anonymization_tables:
          - table: visits
            condition: "id > 0"
            columns: {seen_at: {transformer: fixed, value: "2024-03-01 10:00"}}
        """,
    )
    stored = execute(target, "SELECT DISTINCT extract(epoch FROM seen_at)::bigint FROM visits")
    assert stored == [(1709287200,)]  # 2024-03-01 10:00 UTC
    values = [v for row in result["proof"]["rows"] for v in row["values"]]
    assert values.count("seen_at") == 20  # the 10 originals equal to the masked instant are skipped
    with target.connect() as conn:
        check = verify_table(conn, result, SALT)
    assert check.passed, check


def test_every_fixed_value_a_column_refuses_is_named_at_once(db):
    """Planning from the archive cannot cast a date or an inet: the masking step does, before any row
    is masked, and names every refused value of the table in one error (not only the first, which
    would cost one run per mistake)."""
    _pg, target = db
    execute(target, "CREATE TABLE staff (id int PRIMARY KEY, born date, ip inet, note text)")
    item = {
        "schema": "public",
        "name": "staff",
        "columns": {
            "born": {"transformer": "fixed", "value": "not a date"},
            "ip": {"transformer": "fixed", "value": "nope"},
            "note": {"transformer": "fixed", "value": "fine"},
        },
    }
    with target.connect(autocommit=True) as conn:
        cat = executor._table_catalog(conn, item)
        with pytest.raises(executor.AnonymizationError) as info:
            executor.check_fixed_values(conn, item, cat)
    message = str(info.value)
    assert (
        "public.staff.born: the rule's fixed value 'not a date' does not fit the column's type date"
        in message
    )
    assert "public.staff.ip: the rule's fixed value 'nope' does not fit the column's type inet" in message
    assert "note" not in message and message.endswith("give a value of that type in the rules file")
    assert info.value.retryable is False


def test_empty_strings_stay_empty_and_a_partial_unique_index_holds(db):
    """GoTrue keeps '' in its unused token columns, under a unique index WHERE the token is not
    blank: the keyed hash of '' was the same for every such row, and restoring the index failed the
    run. An empty string holds nothing to mask: the transformers that derive a value from the input
    keep it empty (an app reads '' as "none": a pending e-mail change), and the proof skips it."""
    _pg, target = db
    execute(
        target,
        "CREATE TABLE users (id int PRIMARY KEY, confirmation_token varchar(255), email_change varchar(255),"
        " phone_change text, first_name text)",
    )
    execute(
        target,
        "CREATE UNIQUE INDEX confirmation_token_idx ON users (confirmation_token)"
        " WHERE confirmation_token::text !~ '^[0-9 ]*$'",
    )
    execute(
        target,
        "INSERT INTO users SELECT g, CASE WHEN g % 3 = 0 THEN 'tok' || g ELSE '' END,"
        " CASE WHEN g % 5 = 0 THEN 'new' || g || '@corp.test' ELSE '' END, '', 'Ann' || g"
        " FROM generate_series(1, 300) g",
    )
    (result,) = anonymize(
        target,
        "source_app: p\nanonymization_tables: [{table: users, columns: {confirmation_token: hash,"
        " email_change: email, phone_change: phone, first_name: first_name}}]",
    )
    counts = execute(
        target,
        "SELECT count(*) FILTER (WHERE confirmation_token = ''), count(DISTINCT confirmation_token),"
        " count(*) FILTER (WHERE email_change = ''), count(*) FILTER (WHERE email_change LIKE '%@example.com'),"
        " count(*) FILTER (WHERE phone_change = ''), count(*) FILTER (WHERE first_name LIKE 'Ann%')"
        " FROM users",
    )
    assert counts == [(200, 101, 240, 60, 300, 0)]
    with target.connect() as conn:
        check = verify_table(conn, result, SALT)
    assert check.passed, check.problems


def test_a_table_keyed_by_a_unique_index_only_is_proven_by_it(db, prod_pg, tmp_path):
    """Synapse has no primary key on ``erased_users``, ``user_directory`` or ``profiles``: a unique index
    on a NOT NULL column keys them. Every column masked, the plan had no key, the residual proof none,
    and verification failed every run. The archive's unique key on NOT NULL columns stands in for the
    primary key (a nullable or partial one does not); the proof finds each sampled row by its masked
    key, and the verification passes."""
    from scalingo_staging_sync.anonymize.planner import archive_row_keys
    from scalingo_staging_sync.restore.pgtools import find_pg_tools
    from scalingo_staging_sync.restore.runner import run_pg_restore

    pg, target = db
    src = "rowkey_src"
    prod_pg.create_database(src)
    prod_pg.execute(
        "CREATE TABLE public.erased_users (user_id text NOT NULL);"
        "CREATE UNIQUE INDEX erased_users_user ON public.erased_users (user_id);"
        "CREATE TABLE public.notes (user_id text, body text);"  # a nullable unique column: no key
        "CREATE UNIQUE INDEX notes_user ON public.notes (user_id);"
        "CREATE TABLE public.partial (user_id text NOT NULL, body text);"  # a partial one: no key
        "CREATE UNIQUE INDEX partial_user ON public.partial (user_id) WHERE body IS NOT NULL;"
        "INSERT INTO public.erased_users SELECT '@person' || g || ':chat.example.org' FROM generate_series(1, 40) g;",
        src,
    )
    dump = prod_pg.pg_dump(src, tmp_path / "rowkey.dump")
    tools = find_pg_tools(pg.bin_dir)
    assert archive_row_keys(str(dump), tools) == {"public.erased_users": ["user_id"]}
    run_pg_restore(str(dump), target, section="pre-data", tools=tools)
    rules = rules_from(
        """
        source_app: prod
        anonymization_tables:
          - table: erased_users
            columns:
              user_id: {transformer: hash, length: 32}
        """
    )
    [item] = plan_anonymization(target, rules, dump_path=str(dump), tools=tools)
    assert item["key_columns"] == ["user_id"] and item["mode"] == "on_load"
    result = run_table_plan(item, target, SALT, dump_path=str(dump), tools=tools)
    assert result["rows"] == 40 and len(result["proof"]["rows"]) == 40
    run_pg_restore(str(dump), target, section="post-data", tools=tools)
    assert execute(target, "SELECT count(*) FROM erased_users WHERE user_id LIKE '@person%'") == [(0,)]
    with target.connect() as conn:
        check = verify_table(conn, result, SALT)
    assert check.passed, check.problems
    assert check.keys_found == 40
