"""What each post-data item of a ``benchmarks/datagen.py`` archive costs after the product's masked load
and after a bare load, and why the unique index on ``users.email`` differs.

``items`` (the default): in each round, the archive's pre-data and data are restored twice into one
embedded PostgreSQL 16 server, once through the product's loader with the stream masking engine
(``load_profile.load_once``) and once by a bare ``pg_restore -j N``; then every post-data item (index,
primary key, foreign key) is restored alone (``pg_restore -L`` with that one line), one after the other,
and timed. Post-data restores its items ``-j N`` at a time; alone, each is easier to compare.

``order``: the same kind of index built on 3 M values in four physical orders, to separate what the
values cost from what their order costs: datagen's emails as generated (``user1@mail1.example.org``,
``user2@...``: the table's insertion order), the same values shuffled, masked emails
(``'u' || md5 || '@example.com'``) in the table's order, and masked emails sorted.

    PYTHONPATH=provider:benchmarks .venv/bin/python benchmarks/post_data_items.py --dump /path/to/dump.pgc
    PYTHONPATH=provider:benchmarks .venv/bin/python benchmarks/post_data_items.py --mode order --rows 3000000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scalingo_staging_sync.testing.postgres import pg_bin_dir, start_embedded_postgres  # noqa: E402

ORDER_SQL = """
CREATE TABLE generated AS SELECT 'user' || i || '@mail' || (i % 97) || '.example.org' AS email
  FROM generate_series(1, {rows}) i;
CREATE TABLE shuffled AS SELECT email FROM generated ORDER BY md5(email);
CREATE TABLE masked AS SELECT 'u' || md5(email) || '@example.com' AS email FROM generated;
CREATE TABLE masked_sorted AS SELECT email FROM masked ORDER BY email;
"""


def _env(pg) -> dict[str, str]:
    return dict(os.environ, PGHOST=pg.host, PGPORT=str(pg.port), PGUSER=pg.user)


def _psql(pg, bin_dir: Path, sql: str, db: str = "postgres") -> float:
    started = time.monotonic()
    subprocess.run(
        [str(bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", sql],
        env=_env(pg),
        check=True,
    )
    return round(time.monotonic() - started, 2)


def _items_alone(pg, bin_dir: Path, dump: Path, db: str, lines: list[str], work: Path) -> dict[str, float]:
    out = {}
    for line in lines:
        listing = work / "one.list"
        listing.write_text(line + "\n")
        started = time.monotonic()
        subprocess.run(
            [str(bin_dir / "pg_restore"), "-d", db, "-L", str(listing), str(dump)], env=_env(pg), check=True
        )
        # "2412; 2606 16410 CONSTRAINT public events events_pkey postgres": the object's name
        out[line.split()[-2]] = round(time.monotonic() - started, 2)
    return out


def items(dump: Path, repeat: int, jobs: int) -> dict:
    import load_profile as lp
    from freeze_bench import _drop_masking_triggers

    from scalingo_staging_sync.pgconn import PgTarget

    work = Path(tempfile.mkdtemp(prefix="post-data-items-"))
    pg = start_embedded_postgres(16, work)
    bin_dir = pg_bin_dir(16)
    toc = subprocess.run(
        [str(bin_dir / "pg_restore"), "-l", "--section=post-data", str(dump)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    lines = [line for line in toc if line and not line.startswith(";")]
    rounds = []
    for _ in range(repeat):
        masked = lp.load_once(pg, dump, "stream", jobs)  # database load_profile, masking triggers on
        _drop_masking_triggers(PgTarget(host=pg.host, port=pg.port, user=pg.user, dbname="load_profile"))
        _psql(pg, bin_dir, "CHECKPOINT")
        masked_items = _items_alone(pg, bin_dir, dump, "load_profile", lines, work)
        pg.create_database("bare")
        subprocess.run(
            [str(bin_dir / "pg_restore"), "-d", "bare", "--section=pre-data", str(dump)],
            env=_env(pg),
            check=True,
        )
        started = time.monotonic()
        subprocess.run(
            [str(bin_dir / "pg_restore"), "-d", "bare", f"-j{jobs}", "--section=data", str(dump)],
            env=_env(pg),
            check=True,
        )
        bare_load = round(time.monotonic() - started, 2)
        _psql(pg, bin_dir, "CHECKPOINT")
        bare_items = _items_alone(pg, bin_dir, dump, "bare", lines, work)
        rounds.append(
            {
                "masked_load_s": masked.get("data_s"),
                "masked_items_s": masked_items,
                "bare_load_s": bare_load,
                "bare_items_s": bare_items,
            }
        )
        print(json.dumps(rounds[-1]), flush=True)
    pg.stop()
    return {"mode": "items", "dump": str(dump), "jobs": jobs, "rounds": rounds}


def order(rows: int, repeat: int) -> dict:
    work = Path(tempfile.mkdtemp(prefix="post-data-order-"))
    pg = start_embedded_postgres(16, work)
    bin_dir = pg_bin_dir(16)
    _psql(pg, bin_dir, ORDER_SQL.format(rows=int(rows)))
    _psql(pg, bin_dir, "VACUUM (ANALYZE) generated, shuffled, masked, masked_sorted")
    _psql(pg, bin_dir, "CHECKPOINT")
    rounds = []
    for _ in range(repeat):
        result = {}
        for table in ("generated", "shuffled", "masked", "masked_sorted"):
            result[table] = _psql(pg, bin_dir, f"CREATE UNIQUE INDEX probe ON {table} (email)")
            _psql(pg, bin_dir, "DROP INDEX probe")
        rounds.append(result)
        print(json.dumps(result), flush=True)
    collation = subprocess.run(
        [
            str(bin_dir / "psql"),
            "-X",
            "-At",
            "-c",
            "SELECT datcollate FROM pg_database WHERE datname = 'postgres'",
        ],
        env=_env(pg),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    pg.stop()
    return {"mode": "order", "rows": rows, "collation": collation, "rounds": rounds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=("items", "order"), default="items")
    parser.add_argument(
        "--dump", type=Path, help="a custom-format dump of benchmarks/datagen.py data (items)"
    )
    parser.add_argument("--rows", type=int, default=3_000_000, help="values per table (order)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args(argv)
    if args.mode == "items":
        if args.dump is None:
            parser.error("--mode items needs --dump")
        result = items(args.dump, args.repeat, args.jobs)
    else:
        result = order(args.rows, args.repeat)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
