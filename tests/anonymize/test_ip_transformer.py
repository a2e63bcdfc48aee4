"""The ``ip`` transformer on real PostgreSQL: inet and text columns, IPv4 and IPv6, prefix lengths,
NULLs, the same address masked alike in both types, on load and in place alike, never the original,
and the columns it refuses."""

from __future__ import annotations

import ipaddress

import pytest
from psycopg import sql

from scalingo_staging_sync.anonymize import transformers as tr
from scalingo_staging_sync.anonymize.planner import PlanError
from scalingo_staging_sync.anonymize.salt import derive_key, target_with_key
from scalingo_staging_sync.pgconn import PgTarget

from .conftest import SALT, anonymize, execute

ADDRESSES = [
    "192.168.1.5",
    "10.0.0.0/8",
    "81.12.3.4/24",
    "::1",
    "2a01:e0a:1::5/64",
    "::ffff:1.2.3.4",
    "240.0.0.1",  # already in the output's IPv4 range
    "2001:db8::1",  # and in its IPv6 one
    None,
]


def test_inet_and_text_columns_get_addresses_of_the_same_family_in_reserved_ranges(db):
    _pg, target = db
    execute(
        target, "CREATE TABLE visits (id int PRIMARY KEY, ip inet NOT NULL, raw text, remote varchar(45))"
    )
    rows = [(i, a or "127.0.0.1", a.split("/")[0].upper() if a else None, f" {a.split('/')[0]} " if a else None)
            for i, a in enumerate(ADDRESSES)]  # fmt: skip
    with target.connect() as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO visits VALUES (%s, %s, %s, %s)", rows)
    anonymize(
        target,
        "source_app: p\nanonymization_tables: [{table: visits, columns: {ip: ip, raw: ip, remote: ip}}]",
    )
    out = {r[0]: r[1:] for r in execute(target, "SELECT id, ip::text, raw, remote FROM visits")}
    for i, ip, raw, remote in rows:
        new_ip, new_raw, new_remote = out[i]
        before = ipaddress.ip_interface(ip)
        after = ipaddress.ip_interface(new_ip)
        assert after.version == before.version and after.network.prefixlen == before.network.prefixlen
        assert after.ip != before.ip
        reserved = ipaddress.ip_network("240.0.0.0/4" if after.version == 4 else "2001:db8::/32")
        assert after.ip in reserved, new_ip
        if raw is None:
            assert new_raw is None and new_remote is None  # NULL stays NULL
            continue
        # text: the address alone, the same as the inet's for the same address (joins still line up)
        assert new_raw == new_remote == str(after.ip), (raw, remote, new_raw, new_remote, new_ip)


def test_a_text_value_that_is_not_an_address_becomes_an_ipv4_one(db):
    _pg, target = db
    execute(target, "CREATE TABLE t (id int, v text)")
    execute(target, "INSERT INTO t VALUES (1, 'unknown'), (2, ''), (3, 'Unknown ')")
    anonymize(target, "source_app: p\nanonymization_tables: [{table: t, columns: {v: ip}}]")
    out = dict(execute(target, "SELECT id, v FROM t"))
    assert all(ipaddress.ip_address(v) in ipaddress.ip_network("240.0.0.0/4") for v in out.values())
    assert out[1] == out[3]  # trimmed and case-folded, like an IPv6 address's hex digits


def test_on_load_and_in_place_give_the_same_addresses(db):
    from scalingo_staging_sync.anonymize.planner import read_table
    from scalingo_staging_sync.anonymize.sql import column_expressions, trigger_statements, update_statement
    from scalingo_staging_sync.anonymize.transformers import KEY_GUC

    _pg, target = db
    specs = {"ip": {"transformer": "ip"}, "raw": {"transformer": "ip"}}
    execute(target, "CREATE TABLE src (id int, ip inet, raw text)")
    values = [a for a in ADDRESSES if a] + [f"10.{i % 256}.{i // 256}.7" for i in range(500)]
    with target.connect() as conn:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO src VALUES (%s, %s, %s)", [(i, v, v.split("/")[0]) for i, v in enumerate(values)]
            )
            cur.execute("INSERT INTO src VALUES (-1, NULL, NULL)")
        execute(target, "CREATE TABLE dst (LIKE src)")
        create_fn, create_trigger, _drop = trigger_statements(
            "public", "dst", specs, read_table(conn, "public", "dst").columns, conn
        )
        conn.execute(create_fn)
        conn.execute(create_trigger)
        conn.execute("SELECT set_config(%s, %s, false)", (KEY_GUC, derive_key(SALT)))
        conn.execute("INSERT INTO dst SELECT * FROM src")
        conn.execute(
            update_statement(
                "public", "src", column_expressions(specs, read_table(conn, "public", "src").columns)
            )
        )
    updated = execute(target, "SELECT id, ip::text, raw FROM src ORDER BY id")
    loaded = execute(target, "SELECT id, ip::text, raw FROM dst ORDER BY id")
    assert updated == loaded and len(updated) == len(values) + 1
    assert updated[0] == (-1, None, None)


class _TinyRange(tr.IpTransformer):
    """The same expression over an IPv4 range of two addresses, where the hash often lands on the
    original: the guard must then take the other one."""

    V4_SIZE = 2


@pytest.mark.parametrize("salt", [f"tiny-range-salt-{i:02d}-0123456789abcdef" for i in range(6)])
def test_an_original_the_hash_lands_on_takes_the_next_address(staging_pg16, salt):
    pg = staging_pg16
    keyed = target_with_key(
        PgTarget(host=pg.host, port=pg.port, user=pg.user, dbname="postgres"), derive_key(salt)
    )
    for type_sql in ("inet", "text"):
        column = tr.ColumnInfo("v", type_sql, type_sql)
        expr = _TinyRange().expression(sql.Identifier("v"), tr.BuildContext(column, {}))
        query = sql.SQL("SELECT v::text, ({})::text FROM (VALUES ({}::{}), ({}::{})) AS t(v)").format(
            expr, sql.Literal("240.0.0.0"), sql.SQL(type_sql), sql.Literal("240.0.0.1"), sql.SQL(type_sql)
        )
        with keyed.connect() as conn:
            pairs = conn.execute(query).fetchall()
        for before, after in pairs:
            assert after.split("/")[0] != before.split("/")[0], (type_sql, pairs)
            assert after.split("/")[0] in ("240.0.0.0", "240.0.0.1")


@pytest.mark.parametrize(
    ("type_sql", "message"),
    [
        ("cidr", "does not apply to type cidr (accepts inet, string columns)"),
        ("macaddr", "does not apply to type macaddr"),
        ("varchar(15)", "needs at least 29 characters; column is character varying(15)"),
    ],
)
def test_columns_that_cannot_hold_its_output_are_refused_at_planning(db, type_sql, message):
    _pg, target = db
    execute(target, f"CREATE TABLE t (id int, v {type_sql})")
    with pytest.raises(PlanError, match=message.replace("(", r"\(").replace(")", r"\)")):
        anonymize(target, "source_app: p\nanonymization_tables: [{table: t, columns: {v: ip}}]")
