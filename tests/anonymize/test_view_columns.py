"""Which materialized-view columns only carry masked data (``postload.masked_view_columns``), from the
view definitions parsed with pglast: renamed and computed columns of masked columns count, aliases are
resolved; anything unclear (a subquery, a user function that may read other tables, a whole-row value,
a WITH query, a column also reading an unmasked one) does not, and is left to the PII scan. Real
embedded PostgreSQL 16 and 18 (their ``pg_get_viewdef`` output differs)."""

from __future__ import annotations

from scalingo_staging_sync.anonymize.postload import masked_view_columns, view_column_sources
from scalingo_staging_sync.tablename import TableName

from .conftest import execute

SCHEMA = """
CREATE SCHEMA "Back Office";
CREATE TABLE accounts (id int PRIMARY KEY, email text, login_email text, note text);
CREATE TABLE other (id int PRIMARY KEY, email text);
CREATE TABLE "Back Office"."Staff" (id int PRIMARY KEY, "E-mail" text);
CREATE FUNCTION public.shout(text) RETURNS text LANGUAGE sql AS 'SELECT upper($1)';

CREATE MATERIALIZED VIEW m_basic AS
    SELECT id, email, lower(login_email) AS login, email || '/' || login_email AS both_masked,
           upper(note) AS note_upper, count(*) OVER () AS n, 'constant' AS k
    FROM accounts;
CREATE MATERIALIZED VIEW m_join AS
    SELECT a.email AS a_email, o.email AS o_email, a.email || o.email AS mixed, a.id
    FROM accounts a JOIN other o USING (id);
CREATE MATERIALIZED VIEW m_agg AS SELECT string_agg(login_email, ',') AS logins FROM accounts;
CREATE MATERIALIZED VIEW m_unclear AS
    SELECT shout(email) AS shouted,
           (SELECT max(o.email) FROM other o) AS sub,
           row_to_json(a) AS whole,
           query_to_xml('SELECT email FROM other', true, true, '') AS xml,
           lower(a.email) AS clear
    FROM accounts a;
CREATE MATERIALIZED VIEW m_union_masked AS SELECT email FROM accounts UNION SELECT login_email FROM accounts;
CREATE MATERIALIZED VIEW m_union_mixed AS SELECT email FROM accounts UNION ALL SELECT email FROM other;
CREATE MATERIALIZED VIEW m_cte AS WITH c AS (SELECT email FROM accounts) SELECT lower(email) AS e FROM c;
CREATE MATERIALIZED VIEW m_subquery AS SELECT x.email FROM (SELECT email FROM accounts) x;
CREATE VIEW v_plain AS SELECT id, lower(email) AS lower_email, note FROM accounts;
CREATE MATERIALIZED VIEW m_over_views AS
    SELECT b.login AS login_again, p.lower_email, p.note FROM m_basic b JOIN v_plain p USING (id);
CREATE MATERIALIZED VIEW "Back Office"."Staff Mails" AS SELECT lower("E-mail") AS "Mail Lower" FROM "Back Office"."Staff";
"""


def test_computed_and_renamed_matview_columns_of_masked_columns_count_as_masked(db_any):
    _pg, target = db_any
    execute(target, SCHEMA)
    staff = TableName("Back Office", "Staff")
    masked = ["public.accounts.email", "public.accounts.login_email", f"{staff}.E-mail"]
    found = masked_view_columns(target, masked)
    assert found == sorted(
        [
            f"{TableName('Back Office', 'Staff Mails')}.Mail Lower",
            "public.m_agg.logins",
            "public.m_basic.both_masked",
            "public.m_basic.email",
            "public.m_basic.login",
            "public.m_join.a_email",
            "public.m_over_views.login_again",
            "public.m_over_views.lower_email",  # through the plain view
            "public.m_unclear.clear",
            "public.m_union_masked.email",
        ]
    )
    # nothing masked: nothing counts
    assert masked_view_columns(target, []) == []
    # only login_email masked: the columns that also read email do not count
    assert masked_view_columns(target, ["public.accounts.login_email"]) == [
        "public.m_agg.logins",
        "public.m_basic.login",
        "public.m_over_views.login_again",
    ]


def test_view_column_sources_resolves_aliases_and_stays_safe():
    columns = {
        TableName("public", "accounts"): ["id", "email", "note"],
        TableName("public", "other"): ["id", "email"],
    }

    def sources(text):
        return view_column_sources(text, columns.get)

    assert sources("SELECT a.email AS e, lower(o.email) FROM public.accounts a, public.other o") == [
        frozenset({"public.accounts.email"}),
        frozenset({"public.other.email"}),
    ]
    # an unqualified column in two sources (JOIN USING): both are its sources
    assert sources("SELECT id FROM public.accounts JOIN public.other USING (id)") == [
        frozenset({"public.accounts.id", "public.other.id"})
    ]
    assert sources("SELECT public.accounts.note FROM public.accounts") == [
        frozenset({"public.accounts.note"})
    ]
    # unclear: unknown relation, renamed alias columns, join alias, unknown column, user operator/type
    assert sources("SELECT email FROM public.missing") == [None]
    assert sources("SELECT x.a FROM public.accounts x(a, b, c)") == [None]
    assert sources("SELECT j.email FROM (public.accounts a JOIN public.other o USING (id)) j") == [None]
    assert sources("SELECT nope FROM public.accounts") == [None]
    assert sources("SELECT email OPERATOR(public.+) note FROM public.accounts") == [None]
    assert sources("SELECT email::public.secret_type FROM public.accounts") == [None]
    assert sources("SELECT email, (SELECT 1) FROM public.accounts, LATERAL public.f() g") == [None, None]
    # the output cannot be lined up with the view's columns: nothing
    assert sources("SELECT * FROM public.accounts") is None
    assert sources("SELECT 1; SELECT 2") is None
    assert sources("VALUES (1)") is None


def test_columns_of_a_conditional_rule_do_not_make_a_view_column_masked(db_any):
    """A conditional rule leaves the rows outside its condition as they are: a materialized view over
    its column may hold originals, so finalize does not count that view column as masked (the PII scan
    samples it), while an unconditional rule's view column still counts."""
    from scalingo_staging_sync.anonymize.postload import finalize_masked_data, unconditionally_masked

    _pg, target = db_any
    execute(
        target,
        'CREATE SCHEMA "Back Office";'
        "CREATE TABLE members (id int PRIMARY KEY, kind text, email text);"
        'CREATE TABLE "Back Office"."Staff" (id int PRIMARY KEY, mail text);'
        "CREATE MATERIALIZED VIEW m_members AS SELECT lower(email) AS e FROM members;"
        'CREATE MATERIALIZED VIEW m_staff AS SELECT lower(mail) AS m FROM "Back Office"."Staff";',
    )
    masked = ["public.members.email", "Back Office.Staff.mail"]
    everything = finalize_masked_data(target, masked)["masked_view_columns"]
    assert everything == ["public.m_members.e", "public.m_staff.m"]

    conditional = {"public.members": "kind <> 'staff'"}
    out = finalize_masked_data(target, masked, list(conditional))["masked_view_columns"]
    assert out == ["public.m_staff.m"]
    assert unconditionally_masked(masked, ['"Back Office"."Staff"']) == ["public.members.email"]
    assert unconditionally_masked(masked, ["members"]) == ["Back Office.Staff.mail"]
