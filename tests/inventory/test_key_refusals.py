"""Masking that would break a key the archive restores is refused at planning, from the archive alone,
before anything is touched, naming both sides and the fix:

* a foreign key whose two sides are not masked alike (only the referenced unique column, only the
  referencing column, a composite key with one masked part, different transformer options): the
  masked values would no longer match and post-data would fail after the data is loaded;
* a masked column in a partition key (list or hash, of the table or of a partitioned ancestor): the
  masked row belongs to another partition and its load would fail.

Both sides masked with the same deterministic transformer stay consistent and are planned; an FK
whose referencing table is excluded is not a problem (no rows)."""

from __future__ import annotations

import pytest

from scalingo_staging_sync.anonymize.planner import PlanError
from scalingo_staging_sync.inventory import plan_from_archive

from .conftest import rules_from

FK_DB = """
CREATE TABLE accounts (id int PRIMARY KEY, org int NOT NULL, email text NOT NULL UNIQUE,
                       UNIQUE (org, email));
CREATE TABLE subscriptions (id int PRIMARY KEY, email text REFERENCES accounts (email));
CREATE TABLE invites (id int PRIMARY KEY, org int, email text,
                      FOREIGN KEY (org, email) REFERENCES accounts (org, email) DEFERRABLE);
"""


def _plan(dump, tools, rules: str, exclude: str = "[]"):
    return plan_from_archive(
        dump,
        rules_from(f"source_app: p\nexclude_tables: {exclude}\nanonymization_tables:\n{rules}"),
        tools=tools,
    )


def test_foreign_key_sides_masked_differently_are_refused(archives):
    dump, tools = archives.make(FK_DB)
    with pytest.raises(PlanError) as err:
        _plan(dump, tools, "  - {table: accounts, columns: {email: email}}\n")
    text = str(err.value)
    assert (
        "anonymization_tables[0].columns.email: foreign key subscriptions_email_fkey of public.subscriptions "
        "(email) references public.accounts (email); public.subscriptions.email is not masked but "
        "public.accounts.email is masked with" in text
    )
    assert "foreign key invites_org_email_fkey of public.invites (email)" in text  # composite key
    assert "Mask both columns with the same transformer and options, or exclude public.subscriptions" in text

    with pytest.raises(
        PlanError,
        match=r"public\.subscriptions\.email is masked with .* but public\.accounts\.email is not masked",
    ):
        _plan(dump, tools, "  - {table: subscriptions, columns: {email: email}}\n")

    with pytest.raises(PlanError, match=r"case_insensitive"):  # same transformer, other options
        _plan(
            dump,
            tools,
            "  - {table: accounts, columns: {email: email}}\n"
            "  - {table: subscriptions, columns: {email: {transformer: email, case_insensitive: true}}}\n"
            "  - {table: invites, columns: {email: email}}\n",
        )


def test_foreign_key_sides_masked_alike_are_planned(archives):
    dump, tools = archives.make(FK_DB)
    plan = _plan(
        dump,
        tools,
        "  - {table: accounts, columns: {email: email}}\n"
        "  - {table: subscriptions, columns: {email: email}}\n"
        "  - {table: invites, columns: {email: email}}\n",
    )
    assert [i["table"] for i in plan.items] == ["public.accounts", "public.subscriptions", "public.invites"]
    # the referencing tables excluded: their (absent) rows reference nothing
    plan = _plan(dump, tools, "  - {table: accounts, columns: {email: email}}\n", "[subscriptions, invites]")
    assert [i["table"] for i in plan.items] == ["public.accounts"]


PARTITIONED = """
CREATE TABLE events (id int, region text NOT NULL, email text, phone text) PARTITION BY LIST (region);
CREATE TABLE events_eu PARTITION OF events FOR VALUES IN ('eu') PARTITION BY HASH (email);
CREATE TABLE events_eu_0 PARTITION OF events_eu FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE events_eu_1 PARTITION OF events_eu FOR VALUES WITH (MODULUS 2, REMAINDER 1);
CREATE TABLE events_us PARTITION OF events FOR VALUES IN ('us');
"""


@pytest.mark.parametrize("version", [16, 18], ids=["pg_dump16", "pg_dump18"])
def test_masked_partition_key_is_refused(archives, version):
    dump, tools = archives.make(PARTITIONED, version)
    with pytest.raises(PlanError) as err:
        _plan(dump, tools, "  - {table: events, columns: {region: city, phone: phone}}\n")
    assert (
        "anonymization_tables[0].columns.region: public.events.region is in the partition key of public.events"
        in str(err.value)
    )
    # a sub-partition's key (hash of email under events_eu)
    with pytest.raises(
        PlanError, match=r"public\.events_eu\.email is in the partition key of public\.events_eu"
    ):
        _plan(dump, tools, "  - {table: events, columns: {email: email}}\n")
    plan = _plan(dump, tools, "  - {table: events, columns: {phone: phone}}\n")
    assert sorted(i["table"] for i in plan.items) == [
        "public.events_eu_0",
        "public.events_eu_1",
        "public.events_us",
    ]


KEY_CASES = [
    (FK_DB, "  - {table: accounts, columns: {email: email}}\n"),
    (FK_DB, "  - {table: subscriptions, columns: {email: email}}\n"),
    (
        FK_DB,
        "  - {table: accounts, columns: {email: email}}\n"
        "  - {table: subscriptions, columns: {email: {transformer: email, case_insensitive: true}}}\n"
        "  - {table: invites, columns: {email: email}}\n",
    ),
    (PARTITIONED, "  - {table: events, columns: {region: city, phone: phone}}\n"),
    (PARTITIONED, "  - {table: events, columns: {email: email}}\n"),
    (PARTITIONED, "  - {table: events_eu, columns: {email: email}}\n"),
]


@pytest.mark.parametrize(("schema", "rules"), KEY_CASES, ids=[f"case{i}" for i in range(len(KEY_CASES))])
def test_the_catalog_planner_refuses_the_same_keys_with_the_same_messages(archives, fresh_db, schema, rules):
    """plan_anonymization without an archive (in-place runs on an existing database, tools) refuses what
    the archive planner refuses, with the same messages: the checks are shared."""
    from scalingo_staging_sync.anonymize.planner import plan_anonymization

    dump, tools = archives.make(schema)
    with pytest.raises(PlanError) as from_archive:
        _plan(dump, tools, rules)
    target = fresh_db(16)
    with target.connect(autocommit=True) as conn:
        conn.execute(schema)
    with pytest.raises(PlanError) as from_catalog:
        plan_anonymization(target, rules_from(f"source_app: p\nanonymization_tables:\n{rules}"))
    assert sorted(from_catalog.value.errors) == sorted(from_archive.value.errors)


def test_the_catalog_planner_plans_keys_masked_alike_and_excluded_referencing_tables(fresh_db):
    from scalingo_staging_sync.anonymize.planner import plan_anonymization

    target = fresh_db(16)
    with target.connect(autocommit=True) as conn:
        conn.execute(FK_DB + PARTITIONED)
    both = (
        "  - {table: accounts, columns: {email: email}}\n"
        "  - {table: subscriptions, columns: {email: email}}\n"
        "  - {table: invites, columns: {email: email}}\n"
        "  - {table: events, columns: {phone: phone}}\n"
    )
    items = plan_anonymization(target, rules_from(f"source_app: p\nanonymization_tables:\n{both}"))
    assert [i["table"] for i in items] == [
        "public.accounts",
        "public.subscriptions",
        "public.invites",
        "public.events",
    ]
    rules = rules_from(
        "source_app: p\nexclude_tables: [subscriptions, invites]\nanonymization_tables:\n"
        "  - {table: accounts, columns: {email: email}}\n"
    )
    assert [i["table"] for i in plan_anonymization(target, rules)] == ["public.accounts"]


@pytest.mark.parametrize("planner", ["archive", "catalog"])
def test_a_refused_rule_adds_no_false_key_error(archives, fresh_db, planner):
    """One mistake in the accounts rule (a misspelt column) dropped the whole rule from the key checks, so
    every foreign key through accounts.email, masked alike on both sides, was also reported as masked
    on one side only: a second, false error. Only the mistake is reported now."""
    from scalingo_staging_sync.anonymize.planner import plan_anonymization

    rules = (
        "  - {table: accounts, columns: {email: email, emial: email}}\n"
        "  - {table: subscriptions, columns: {email: email}}\n"
        "  - {table: invites, columns: {email: email}}\n"
    )
    with pytest.raises(PlanError) as err:
        if planner == "archive":
            dump, tools = archives.make(FK_DB)
            _plan(dump, tools, rules)
        else:
            target = fresh_db(16)
            with target.connect(autocommit=True) as conn:
                conn.execute(FK_DB)
            plan_anonymization(target, rules_from(f"source_app: p\nanonymization_tables:\n{rules}"))
    assert "emial" in str(err.value)
    assert not [e for e in err.value.errors if "foreign key" in e], err.value.errors
