"""Uniqueness flags of the transformer registry: which transformers may mask a column under a unique
constraint, with how many bits (``keeps_unique`` / ``unique_bits``, called by the planner)."""

from __future__ import annotations

import pytest

from scalingo_staging_sync.anonymize.transformers import (
    MIN_UNIQUE_BITS,
    ColumnInfo,
    all_transformers,
    keeps_unique,
    unique_bits,
)

from .conftest import anonymize, execute

VARCHAR_40 = ColumnInfo("email", "character varying(40)", "varchar", max_length=40)


def test_hash_length_decides():
    assert unique_bits("hash", {}) == 128
    assert keeps_unique("hash", {"length": 16})  # 64 bits
    assert not keeps_unique("hash", {"length": 8})  # 32 bits: birthday collisions from ~65k rows
    assert unique_bits("hash", {"length": 8}) == 32
    assert not keeps_unique("hash", {}, ColumnInfo("h", "character varying(12)", "varchar", max_length=12))
    assert keeps_unique("hash", {"transformer": "hash", "length": 20})  # a rule's spec as given


def test_email_is_unique_unless_case_insensitive():
    assert unique_bits("email", {}) == 128
    assert keeps_unique("email", {"domain": "example.com"})
    assert unique_bits("email", {}, VARCHAR_40) == 4 * (40 - 2 - len("example.com"))
    assert not keeps_unique("email", {"case_insensitive": True})
    assert unique_bits("email", {"case_insensitive": True}) is None


@pytest.mark.parametrize(
    "name", ["first_name", "last_name", "full_name", "city", "address", "company", "phone", "postal_code",
             "null", "fixed", "date_shift", "md5_of"]
)  # fmt: skip
def test_the_others_are_not_unique(name):
    assert not keeps_unique(name, {})
    assert all_transformers()[name].describe()["unique_bits"] is None


def test_min_bits_is_adjustable():
    assert MIN_UNIQUE_BITS == 64
    assert keeps_unique("hash", {"length": 8}, min_bits=32)


def test_email_case_variants_survive_a_unique_index(db):
    _pg, target = db
    execute(target, "CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL UNIQUE)")
    execute(
        target, "INSERT INTO users VALUES (1, 'Bob@Corp.test'), (2, 'bob@corp.test'), (3, 'BOB@CORP.TEST')"
    )
    anonymize(target, "source_app: p\nanonymization_tables: [{table: users, columns: {email: email}}]")
    emails = [r[0] for r in execute(target, "SELECT email FROM users")]
    assert len(set(emails)) == 3 and all(e.endswith("@example.com") for e in emails)


def test_case_insensitive_email_merges_case_variants(db):
    _pg, target = db
    execute(target, "CREATE TABLE a (id int PRIMARY KEY, email text)")
    execute(target, "INSERT INTO a VALUES (1, 'Bob@Corp.test'), (2, 'bob@corp.test')")
    anonymize(
        target,
        "source_app: p\nanonymization_tables:\n"
        "  - {table: a, columns: {email: {transformer: email, case_insensitive: true}}}",
    )
    assert len({r[0] for r in execute(target, "SELECT email FROM a")}) == 1


def test_a_unique_expression_index_holds_its_columns_unique_on_an_existing_database(db):
    """Mastodon's tags: a unique index on lower(name), no plain one. The catalog path read only an
    index's plain key columns, so `name: full_name` was planned and its load would fail on the index;
    the archive path refused it already."""
    from scalingo_staging_sync.anonymize.planner import PlanError

    _pg, target = db
    execute(target, "CREATE TABLE tags (id int PRIMARY KEY, name text NOT NULL, display_name text)")
    execute(
        target, "CREATE UNIQUE INDEX index_tags_on_name_lower_btree ON tags (lower(name) text_pattern_ops)"
    )
    execute(target, "INSERT INTO tags SELECT g, 'tag' || g, NULL FROM generate_series(1, 50) g")
    with pytest.raises(
        PlanError, match="name is in unique index index_tags_on_name_lower_btree of public.tags"
    ):
        anonymize(target, "source_app: p\nanonymization_tables: [{table: tags, columns: {name: full_name}}]")
    anonymize(target, "source_app: p\nanonymization_tables: [{table: tags, columns: {name: hash}}]")
    assert execute(target, "SELECT count(DISTINCT name) FROM tags") == [(50,)]
