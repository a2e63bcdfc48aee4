"""The *deterministic* and *keeps length* columns of the transformer reference (docs/rules.md and
``scalingo-staging-sync transformers``) are true: every built-in transformer's SQL expression runs on the
embedded PostgreSQL over a set of inputs, twice, in two sessions keyed by the same salt.

* deterministic: yes -> both sessions give the same outputs (and a repeated input its output); no -> some
  output differs.
* keeps length: yes -> every output has its input's length (as text); no -> some input changes length.
"""

from __future__ import annotations

import pytest
from psycopg import sql

from scalingo_staging_sync.anonymize import transformers as tr
from scalingo_staging_sync.anonymize.salt import derive_key, target_with_key
from scalingo_staging_sync.pgconn import PgTarget
from scalingo_staging_sync.reference import transformers_info

SALT = "guarantees-test-salt-0123456789abcdef"

TEXT_INPUTS = [
    "Bob",
    "alice.martin@example.org",
    "Alice.Martin@Example.org",
    "+33 6 12 34 56 78",
    "+999123456789012",
    "75002",
    "12 rue de la Paix",
    "Société Générale",
    "Jean-Pierre Dupont",
    "x",
    "",
    "y" * 120,
]
#: dates at the ends of the calendar too, where a shift can change the text's length (BC, 5-digit years)
DATE_INPUTS = [
    "2024-01-05",
    "1999-12-31",
    *(f"0001-01-{d:02d}" for d in range(1, 11)),
    *(f"9999-12-{d:02d}" for d in range(22, 32)),
]
#: addresses for ``ip`` on an inet column (on text it takes TEXT_INPUTS, addresses or not)
INET_INPUTS = ["192.168.1.5", "10.0.0.0/8", "::1", "2a01:e0a:1::5/64", "240.0.0.1", "2001:db8::1"]
#: documents for ``json`` (its paths: a key and every element of an array)
JSON_INPUTS = [
    '{"email": "alice.martin@example.org", "phones": ["+33 6 12 34 56 78", "0612345678"]}',
    '{"email": "Bob@x.test", "name": "Bob"}',
    '{"phones": []}',
    "{}",
    '{"email": null}',
    "[1, 2]",
]
#: the value of the column ``other`` (what ``full_name``'s ``from`` and ``md5_of``'s ``column`` read)
OTHER = "Ann Lee"

#: options that change the SQL (besides the required ones), each run as its own case
VARIANTS = {
    "email": [{}, {"case_insensitive": True}, {"domain": "staging.test"}],
    "hash": [{}, {"algorithm": "md5"}, {"length": 8}, {"encoding": "base64url", "length": 11}],
    "phone": [{}, {"prefix": "+1", "digits": 10}],
    "postal_code": [{}, {"digits": 3}],
    "fixed": [{"value": "ACME"}],
    "md5_of": [{"column": "other"}],
    "full_name": [{}, {"from": ["other"]}],
    "date_shift": [{}, {"max_days": 40}],
    "json": [{"paths": {"email": "email", "phones.*": "phone"}}],
    "ip": [{}, {"unique": True}],
}


def _builtins() -> dict[str, tr.Transformer]:
    return {n: t for n, t in tr.all_transformers().items() if type(t).__module__ == tr.__name__}


def _cases():
    for name, t in sorted(_builtins().items()):
        for options in VARIANTS.get(name, [{}]):
            if name == "json":
                yield pytest.param(name, options, "jsonb", id=f"{name}-jsonb-{options}")
            elif name == "ip":
                for type_sql in ("text", "inet"):
                    yield pytest.param(name, options, type_sql, id=f"{name}-{type_sql}-{options}")
            elif t.categories == frozenset({"date"}):
                for type_sql in ("date", "timestamptz"):
                    yield pytest.param(name, options, type_sql, id=f"{name}-{type_sql}-{options}")
            else:
                yield pytest.param(name, options, "text", id=f"{name}-{options}")


def _outputs(target: PgTarget, name: str, options: dict, type_sql: str) -> list[tuple]:
    """(input text, output text) of every input, and of the first input again, in one session."""
    column = tr.ColumnInfo("v", type_sql, type_sql)
    transformer = tr.get_transformer(name)
    src = sql.Identifier("v")  # wrapped as every engine wraps it (keeps_empty)
    expr = tr.keep_empty_sql(
        transformer, column, src, transformer.expression(src, tr.BuildContext(column, options))
    )
    inputs = DATE_INPUTS if column.category == "date" else TEXT_INPUTS
    if type_sql == "jsonb":
        inputs = JSON_INPUTS
    if type_sql == "inet":
        inputs = INET_INPUTS
    inputs = [*inputs, inputs[0]]
    rows = sql.SQL(", ").join(
        sql.SQL("({}, {}::{}, {})").format(
            sql.Literal(i), sql.Literal(v), sql.SQL(type_sql), sql.Literal(OTHER)
        )
        for i, v in enumerate(inputs)
    )
    query = sql.SQL("SELECT v::text, ({})::text FROM (VALUES {}) AS t(i, v, other) ORDER BY i").format(
        expr, rows
    )
    with target.connect() as conn:
        conn.execute("SET TimeZone = 'UTC'")
        return [tuple(r) for r in conn.execute(query).fetchall()]


@pytest.fixture(scope="module")
def keyed(staging_pg16) -> PgTarget:
    pg = staging_pg16
    return target_with_key(
        PgTarget(host=pg.host, port=pg.port, user=pg.user, dbname="postgres"), derive_key(SALT)
    )


def test_every_builtin_transformer_is_checked():
    checked = {name for name, _options, _type in (c.values for c in _cases())}
    assert checked == set(_builtins()) and len(checked) >= 14


@pytest.mark.parametrize(("name", "options", "type_sql"), list(_cases()))
def test_declared_guarantees_hold_on_postgresql(keyed, name, options, type_sql):
    guarantees = {i["name"]: i["guarantees"] for i in transformers_info()}[name]
    first = _outputs(keyed, name, options, type_sql)
    second = _outputs(keyed, name, options, type_sql)  # another session, same salt

    same = first == second and first[-1][1] == first[0][1]
    assert same is guarantees["deterministic"], (name, options, first, second)

    lengths_kept = all(out is not None and len(out) == len(value) for value, out in first)
    assert lengths_kept is guarantees["keeps_length"], (name, options, first)

    if type_sql == "text":  # an empty string kept empty, as declared
        empty_kept = dict(first)[""] == ""
        assert empty_kept is guarantees["keeps_empty"], (name, options, dict(first)[""])
