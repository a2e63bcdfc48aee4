"""`make demo`: the main job on embedded defaults (completed by the reference DAG)."""

from __future__ import annotations

import argparse
import sys
import tempfile

from scalingo_staging_sync.testing.postgres import load_chinook, start_embedded_postgres


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--standalone", action="store_true", help="start `airflow standalone` instead")
    parser.parse_args(argv)
    base = tempfile.mkdtemp(prefix="sss-demo-")
    prod = start_embedded_postgres(16, base)
    try:
        load_chinook(prod, "chinook")
        rows = prod.execute("SELECT count(*) FROM customer", "chinook")[0][0]
        print(f"production (PostgreSQL 16, embedded) loaded with Chinook: {rows} customers")
    finally:
        prod.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
