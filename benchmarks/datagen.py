"""Synthetic "production" database for benchmarks, built with set-based SQL (generate_series).

Scale 1: ~1 M users (email, first/last name, phone, address, birth date; 4 indexes including a
unique email), 3 M orders with a shipping address, 3 M events without personal data.

    python benchmarks/datagen.py --scale 0.3 --conninfo "host=... dbname=prod"
"""

from __future__ import annotations

import argparse
import time

import psycopg

SCHEMA_SQL = """
DROP TABLE IF EXISTS events, orders, users CASCADE;
CREATE TABLE users (
    id bigint PRIMARY KEY,
    email text NOT NULL,
    first_name text NOT NULL,
    last_name text NOT NULL,
    phone text,
    address text,
    birth_date date,
    created_at timestamptz NOT NULL
);
CREATE TABLE orders (
    id bigint PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id),
    amount_cents integer NOT NULL,
    shipping_address text,
    created_at timestamptz NOT NULL
);
CREATE TABLE events (
    id bigint PRIMARY KEY,
    kind text NOT NULL,
    payload jsonb,
    created_at timestamptz NOT NULL
);
"""

USERS_SQL = """
INSERT INTO users
SELECT g,
       'user' || g || '@mail' || (g % 97) || '.example.org',
       (ARRAY['Alice','Bruno','Chloé','David','Emma','Farid','Gaëlle','Hugo','Inès','Jules'])[1 + g % 10],
       (ARRAY['Martin','Bernard','Dubois','Thomas','Robert','Richard','Petit','Durand','Leroy','Moreau'])[1 + (g / 10) % 10],
       '+33 6 ' || lpad((g % 100000000)::text, 8, '0'),
       (g % 200) || ' rue de la République, ' || lpad((g % 95 + 1)::text, 2, '0') || '000 Ville',
       date '1950-01-01' + (g % 20000)::int,
       timestamptz '2020-01-01' + g * interval '1 minute'
FROM generate_series(1::bigint, %(n)s) g
"""

ORDERS_SQL = """
INSERT INTO orders
SELECT g, 1 + (g * 7919) %% %(users)s, (g * 31) %% 100000,
       (g %% 300) || ' avenue des Champs, ' || lpad((g %% 95 + 1)::text, 2, '0') || '100 Ville',
       timestamptz '2021-01-01' + g * interval '10 seconds'
FROM generate_series(1::bigint, %(n)s) g
"""

EVENTS_SQL = """
INSERT INTO events
SELECT g, (ARRAY['view','click','purchase','login'])[1 + g %% 4],
       jsonb_build_object('page', g %% 1000, 'ms', g %% 5000),
       timestamptz '2022-01-01' + g * interval '1 second'
FROM generate_series(1::bigint, %(n)s) g
"""

INDEX_SQL = """
CREATE UNIQUE INDEX users_email_key ON users (email);
CREATE INDEX users_last_name_idx ON users (last_name, first_name);
CREATE INDEX users_created_at_idx ON users (created_at);
CREATE INDEX orders_user_id_idx ON orders (user_id);
CREATE INDEX events_created_at_idx ON events (created_at);
"""


def generate(conninfo: str, scale: float = 1.0) -> dict:
    """Create users/orders/events in the database of ``conninfo``; returns row counts and seconds."""
    n_users = max(10, int(1_000_000 * scale))
    n_orders = max(10, int(3_000_000 * scale))
    n_events = max(10, int(3_000_000 * scale))
    started = time.monotonic()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(SCHEMA_SQL)
        conn.execute(USERS_SQL.replace("%(n)s", str(n_users)))
        conn.execute(ORDERS_SQL, {"n": n_orders, "users": n_users})
        conn.execute(EVENTS_SQL, {"n": n_events})
        conn.execute(INDEX_SQL)
        conn.execute("VACUUM ANALYZE users, orders, events")
    return {
        "users": n_users,
        "orders": n_orders,
        "events": n_events,
        "seconds": round(time.monotonic() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--conninfo", required=True, help="libpq conninfo of the (empty) target database")
    args = parser.parse_args()
    print(generate(args.conninfo, args.scale))


if __name__ == "__main__":
    main()
