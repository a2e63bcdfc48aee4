"""``ip`` with ``unique: true``: distinct addresses stay distinct, so an inet column under a unique
index (Mastodon's ``ip_blocks.ip``, a block list) can be masked. The default ``ip`` takes 28 bits of
keyed hash for IPv4 (a reserved range): 200,000 addresses collide, and the planner refuses it there."""

from __future__ import annotations

import pytest
from pg_helpers import new_database
from psycopg import sql

from scalingo_staging_sync.anonymize import transformers as tr
from scalingo_staging_sync.anonymize.executor import run_table_plan
from scalingo_staging_sync.anonymize.planner import PlanError, plan_anonymization
from scalingo_staging_sync.restore.pgtools import find_pg_tools
from scalingo_staging_sync.restore.runner import run_pg_restore
from scalingo_staging_sync.verification import verify_table

from .conftest import SALT, anonymize, execute, rules_from, target_of

INET = tr.ColumnInfo("ip", "inet", "inet", not_null=True)


def _masked_counts(target, options):
    """(distinct addresses, distinct outputs, outputs equal to their input, prefix lengths changed) over 200,000
    IPv4 addresses spread over the whole space, 30,000 IPv6 ones and a few networks."""
    expr = tr.get_transformer("ip").expression(sql.Identifier("v"), tr.BuildContext(INET, options))
    query = sql.SQL(
        "SELECT count(DISTINCT v), count(DISTINCT o), count(*) FILTER (WHERE o = v), "
        "count(*) FILTER (WHERE masklen(o) <> masklen(v)) FROM (SELECT v, {} AS o FROM ("
        "SELECT '0.0.0.0'::inet + g::bigint * 21473 AS v FROM generate_series(0, 199999) g "
        "UNION ALL SELECT ('2001:db8::' || to_hex(g))::inet FROM generate_series(1, 20000) g "
        "UNION ALL SELECT ('2a01:e0a:' || to_hex(g) || '::5/64')::inet FROM generate_series(1, 10000) g "
        "UNION ALL SELECT v::inet FROM unnest(ARRAY['10.0.0.0/8', '10.0.0.0/16', '255.255.255.255', "
        "'0.0.0.1', '::', '::ffff:1.2.3.4']) AS a(v)) s) x"
    ).format(expr)
    with target.connect() as conn:
        conn.execute("SELECT set_config('scalingo_staging_sync.key', 'k-ip-unique', false)")
        return conn.execute(query).fetchone()


def test_unique_keeps_every_address_distinct_and_none_is_its_original(db):
    _pg, target = db
    total, distinct, same, masklen_changed = _masked_counts(target, {"unique": True})
    assert total == 230006
    assert (distinct, same, masklen_changed) == (total, 0, 0)
    # the default: 28 bits for IPv4, collisions among 200,000 addresses (why the planner refuses it)
    total, distinct, same, _ = _masked_counts(target, {})
    assert distinct < total and same == 0


SCHEMA = """
CREATE TABLE ip_blocks (id bigint PRIMARY KEY, ip inet NOT NULL, severity int);
CREATE UNIQUE INDEX index_ip_blocks_on_ip ON ip_blocks (ip);
INSERT INTO ip_blocks SELECT g, CASE WHEN g % 10 = 0 THEN ('2a01:cb00:' || to_hex(g) || '::/48')::inet
  ELSE '81.0.0.0'::inet + g::bigint * 251 END, g % 3 FROM generate_series(1, 3000) g;
INSERT INTO ip_blocks VALUES (3001, '10.0.0.0/8', 1), (3002, '10.0.0.0/16', 1);
"""
RULES = """
source_app: p
anonymization_tables:
  - table: ip_blocks
    columns:
      ip: {transformer: ip%s}
"""


def test_the_planner_refuses_plain_ip_under_a_unique_index_and_names_the_option(db):
    _pg, target = db
    execute(target, SCHEMA)
    with pytest.raises(PlanError) as err:
        anonymize(target, RULES % "")
    assert "unique index index_ip_blocks_on_ip" in str(err.value)
    assert "ip with unique: true" in str(err.value)


def test_unique_on_a_text_column_is_refused_with_the_fix(db):
    _pg, target = db
    execute(target, "CREATE TABLE visits (id int PRIMARY KEY, ip text)")
    with pytest.raises(PlanError, match="option unique: true applies to inet columns.*use hash"):
        anonymize(target, RULES.replace("ip_blocks", "visits") % ", unique: true")


def test_masked_on_load_and_in_place_identically_under_the_unique_index(db, prod_pg, staging_pg16, tmp_path):
    _pg, target = db
    tools = find_pg_tools(_pg.bin_dir)
    with new_database(prod_pg, "ipsrc") as source:
        prod_pg.execute(SCHEMA, source)
        originals = {r[0] for r in prod_pg.execute("SELECT host(ip) FROM ip_blocks", source)}
        dump = prod_pg.pg_dump(source, tmp_path / "ip_blocks.pgsql")
    run_pg_restore(dump, target, section="pre-data", tools=tools)
    rules = rules_from(RULES % ", unique: true")
    (item,) = plan_anonymization(target, rules, dump_path=str(dump), tools=tools)
    assert item["mode"] == "on_load"
    result = run_table_plan(item, target, SALT, dump_path=str(dump), tools=tools)
    run_pg_restore(dump, target, section="post-data", tools=tools)  # the unique index builds
    loaded = execute(target, "SELECT id, ip::text FROM ip_blocks ORDER BY id")
    assert len(loaded) == 3002 and not originals & {
        r[0] for r in execute(target, "SELECT host(ip) FROM ip_blocks")
    }
    with target.connect(autocommit=True) as conn:
        assert verify_table(conn, result, SALT).passed

    with new_database(staging_pg16, "ipinplace") as name:
        other = target_of(staging_pg16, name)
        execute(other, SCHEMA)
        (in_place,) = anonymize(other, RULES % ", unique: true")
        assert in_place["mode"] == "in_place"
        assert execute(other, "SELECT id, ip::text FROM ip_blocks ORDER BY id") == loaded  # byte-identical
        with other.connect(autocommit=True) as conn:
            assert verify_table(conn, in_place, SALT).passed
