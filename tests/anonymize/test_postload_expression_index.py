"""``analyze_masked`` on a database whose tables carry expression indexes (``lower(email)``, a very
common unique index): ``pg_stats`` lists each such index under its own name, with the statistics of its
expressions. Clearing stale statistics must not treat the index as a table (it cannot be read), and an
emptied table's expression-index statistics, computed from the originals, must go with the table's."""

from __future__ import annotations

from scalingo_staging_sync.anonymize.postload import analyze_masked

from .conftest import execute


def test_expression_index_statistics_are_kept_or_cleared_with_their_table(db_any):
    _pg, target = db_any
    execute(
        target,
        """
        CREATE TABLE accounts (id int PRIMARY KEY, email text NOT NULL);
        CREATE UNIQUE INDEX accounts_email_lower ON accounts (lower(email));
        INSERT INTO accounts SELECT g, 'Person' || g || '@Corp.test' FROM generate_series(1, 50) g;
        CREATE TABLE tokens (id int PRIMARY KEY, token text NOT NULL);
        CREATE INDEX tokens_token_upper ON tokens (upper(token));
        INSERT INTO tokens SELECT g, 'tok' || (g % 4) FROM generate_series(1, 60) g;
        ANALYZE accounts, tokens;
        DELETE FROM tokens;  -- emptied after the ANALYZE: its statistics hold originals
        """,
    )
    assert execute(target, "SELECT count(*) FROM pg_stats WHERE tablename = 'tokens_token_upper'") == [(1,)]

    result = analyze_masked(target)

    assert "public.tokens" in result["cleared"]
    assert "public.accounts" not in result["cleared"]
    assert execute(target, "SELECT count(*) FROM pg_stats WHERE tablename = 'tokens_token_upper'") == [(0,)]
    assert execute(target, "SELECT count(*) FROM pg_stats WHERE tablename = 'tokens'") == [(0,)]
    # the non-empty table keeps its index's (fresh) statistics
    assert execute(target, "SELECT count(*) FROM pg_stats WHERE tablename = 'accounts_email_lower'") == [(1,)]
