"""A masked column whose domain has a CHECK the masked value fails (``CREATE DOMAIN corp_email AS text
CHECK (VALUE LIKE '%@corp.test')`` masked with ``email``) is refused at planning, before anything is
touched, naming the domain, the column and the fix, from the archive (pg_dump 16 and 18) and from the
catalog alike; a CHECK that cannot be evaluated without a server is flagged in the warnings. The offline
evaluation is compared with what PostgreSQL itself decides."""

from __future__ import annotations

import psycopg
import pytest

from scalingo_staging_sync.anonymize.planner import (
    PlanError,
    evaluate_domain_check,
    plan_anonymization,
)
from scalingo_staging_sync.inventory import plan_from_archive

from .conftest import query, rules_from

DOMAIN_DB = """
CREATE DOMAIN corp_email AS text CHECK (VALUE LIKE '%@corp.test');
CREATE DOMAIN shaped_email AS varchar(80) CHECK (VALUE ~ '^[^@]+@[^@]+$');
CREATE DOMAIN positive AS int CHECK (VALUE > 0);
CREATE TABLE staff (id int PRIMARY KEY, email corp_email NOT NULL, backup shaped_email, score positive);
INSERT INTO staff VALUES (1, 'ann@corp.test', 'ann@home.test', 3);
"""


def _rules(columns: str):
    return rules_from(f"source_app: p\nanonymization_tables:\n  - {{table: staff, columns: {columns}}}\n")


REFUSED = (
    "anonymization_tables[0].columns.email: public.staff.email has domain public.corp_email, whose CHECK "
    "constraint corp_email_check ("
)


@pytest.mark.parametrize("version", [16, 18], ids=["pg_dump16", "pg_dump18"])
def test_a_domain_check_the_masked_value_fails_is_refused_from_the_archive(archives, version):
    dump, tools = archives.make(DOMAIN_DB, version)
    with pytest.raises(PlanError) as err:
        plan_from_archive(dump, _rules("{email: email}"), tools=tools)
    text = str(err.value)
    assert REFUSED in text, text
    assert (
        "rejects the masked value 'u0123456789abcdef0123456789abcdef@example.com' of transformer 'email'"
        in text
    )
    assert "(email: {transformer: email, domain: <domain>}) or use a fixed value it accepts" in text
    with pytest.raises(PlanError, match=r"transformer: fixed, value: <value>"):
        plan_from_archive(dump, _rules("{email: {transformer: fixed, value: nobody}}"), tools=tools)
    with pytest.raises(PlanError, match=r"domain public\.positive, whose CHECK constraint positive_check"):
        plan_from_archive(dump, _rules("{score: {transformer: fixed, value: 0}}"), tools=tools)

    # values the CHECK accepts are planned; NULL passes a CHECK
    plan = plan_from_archive(
        dump,
        _rules("{email: {transformer: email, domain: corp.test}, score: {transformer: fixed, value: 7}}"),
        tools=tools,
    )
    assert plan.items[0]["masked_columns"] == ["email", "score"]
    assert not [w for w in plan.items[0]["warnings"] if "domain" in w]
    plan = plan_from_archive(dump, _rules("{score: null}"), tools=tools)
    assert plan.items[0]["masked_columns"] == ["score"]
    # a regular expression is not evaluated without a server: flagged
    plan = plan_from_archive(dump, _rules("{backup: email}"), tools=tools)
    assert any(
        w.startswith("backup: CHECK constraint shaped_email_check of domain public.shaped_email")
        for w in plan.items[0]["warnings"]
    ), plan.items[0]["warnings"]


def test_the_catalog_path_refuses_the_same_domain_check(fresh_db):
    target = fresh_db(16)
    with target.connect(autocommit=True) as conn:
        conn.execute(DOMAIN_DB)
    with pytest.raises(PlanError) as err:
        plan_anonymization(target, _rules("{email: email}"))
    assert REFUSED in str(err.value)
    items = plan_anonymization(
        target, _rules("{email: {transformer: email, domain: corp.test}, backup: email}")
    )
    assert any("shaped_email_check of domain public.shaped_email" in w for w in items[0]["warnings"])
    # PostgreSQL agrees: the refused sample fails the domain, the accepted one passes
    with pytest.raises(psycopg.errors.CheckViolation):
        query(target, "SELECT 'u0123456789abcdef0123456789abcdef@example.com'::corp_email")
    assert query(target, "SELECT 'u0123@corp.test'::corp_email") == [("u0123@corp.test",)]


CASES = [
    ("VALUE LIKE '%@corp.test'", ["a@corp.test", "a@corp_test", "A@CORP.TEST", None]),
    ("VALUE ILIKE '%@corp.test'", ["A@CORP.TEST", "a@corp.test.x"]),
    ("VALUE NOT LIKE 'u\\_%'", ["u_1", "ux1", "v_1"]),
    ("length(VALUE) BETWEEN 3 AND 5", None),  # not evaluated
    ("char_length(VALUE) > 3 AND VALUE <> 'abcd'", ["abcd", "abcde", "ab"]),
    ("VALUE IN ('a', 'b') OR VALUE IS NULL", ["a", "c", None]),
    ("NOT (VALUE = 'x') AND VALUE IS NOT NULL", ["x", "y", None]),
    # AdventureWorks: CHECK (upper(gender) = ANY (ARRAY['M', 'F'])), on ASCII text only (locale-free)
    ("upper(VALUE::text) = ANY (ARRAY['M'::text, 'F'::text])", ["m", "F", "", "x", None]),
    ("lower(VALUE) <> ALL (ARRAY['none', 'n/a']) AND btrim(VALUE) <> ''", ["NONE", "ok", "  ", " a "]),
    ("VALUE = ANY (ARRAY['a', NULL])", ["a", "b"]),
    # IN on a varchar column, as pg_get_constraintdef prints it
    (
        "(VALUE)::text = ANY ((ARRAY['female'::character varying, 'male'::character varying])::text[])",
        ["male", "x"],
    ),  # fmt: skip
    ("upper(VALUE) = 'É'", None),  # not ASCII: not evaluated
]


@pytest.mark.parametrize(("expression", "values"), CASES)
def test_offline_evaluation_matches_postgresql(fresh_db, expression, values):
    from scalingo_staging_sync.anonymize.planner import _CannotEvaluate

    if values is None:
        with pytest.raises(_CannotEvaluate):
            evaluate_domain_check(expression, "abc" if "É" not in expression else "é")
        return
    target = fresh_db(16)
    with target.connect(autocommit=True) as conn:
        conn.execute(f"CREATE DOMAIN d AS text CHECK ({expression})")
        for value in values:
            try:
                conn.execute("SELECT %s::text::d", (value,))
                accepted = True
            except psycopg.errors.CheckViolation:
                accepted = False
            assert evaluate_domain_check(expression, value) is accepted, (expression, value)


TABLE_CHECK_DB = """
CREATE TABLE saml_providers (id int PRIMARY KEY, metadata_xml text NOT NULL,
  CONSTRAINT "metadata_xml not empty" CHECK (char_length(metadata_xml) > 0),
  name text, CONSTRAINT pair CHECK (name IS NULL OR metadata_xml IS NOT NULL));
INSERT INTO saml_providers VALUES (1, '<EntityDescriptor>jane@corp.test</EntityDescriptor>', 'corp');
"""


@pytest.mark.parametrize("version", [16, 18], ids=["pg_dump16", "pg_dump18"])
def test_a_table_check_on_the_masked_column_alone_is_evaluated_too(archives, fresh_db, version):
    """GoTrue's auth.saml_providers has CHECK (char_length(metadata_xml) > 0): `fixed: ""` (what
    --suggest-rules proposed) passed the plan with a warning and failed the load. A CHECK on the masked
    column alone is evaluated as a domain's is; one over several columns stays a warning."""
    rules = rules_from(
        "source_app: p\nanonymization_tables:\n"
        "  - {table: saml_providers, columns: {metadata_xml: {transformer: fixed, value: ''}}}\n"
    )
    dump, tools = archives.make(TABLE_CHECK_DB, version)
    with pytest.raises(PlanError) as err:
        plan_from_archive(dump, rules, tools=tools)
    text = str(err.value)
    assert (
        "anonymization_tables[0].columns.metadata_xml: public.saml_providers has CHECK constraint metadata_xml "
        "not empty (" in text
    ), text
    assert "char_length(metadata_xml) > 0)" in text
    assert "which rejects the masked value '' of transformer 'fixed'" in text
    target = fresh_db(version)
    with target.connect(autocommit=True) as conn:
        conn.execute(TABLE_CHECK_DB)
    with pytest.raises(PlanError, match="which rejects the masked value '' of transformer 'fixed'"):
        plan_anonymization(target, rules)
    fine = rules_from(
        "source_app: p\nanonymization_tables:\n"
        "  - {table: saml_providers, columns: {metadata_xml: {transformer: fixed, value: '<x/>'}}}\n"
    )
    (item,) = plan_from_archive(dump, fine, tools=tools).items
    assert item["masked_columns"] == ["metadata_xml"]
    assert "CHECK constraint pair involves masked column(s) metadata_xml" in item["warnings"]
