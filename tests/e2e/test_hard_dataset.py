"""The issue-10 dataset itself: it loads on PostgreSQL 16, dumps with PG 16 and PG 18 --statistics, its
rules file is valid, and ``find_originals`` finds every sensitive value in production (so an empty
result on staging means something)."""

from __future__ import annotations

from scalingo_staging_sync.anonymize.rules import parse_rules_text
from scalingo_staging_sync.restore.pgtools import find_pg_tools
from scalingo_staging_sync.restore.toc import read_toc
from scalingo_staging_sync.testing.postgres import pg_bin_dir

from .hard_dataset import RULES_YAML, find_originals, load_hard_dataset, sensitive_values


def test_dataset_loads_and_the_finder_sees_every_original(prod_pg, tmp_path):
    db = load_hard_dataset(prod_pg, "hard_selftest")
    rules = parse_rules_text(RULES_YAML)
    assert len(rules.anonymization_tables) == 6
    hits = find_originals(prod_pg, sensitive_values())
    found = {h.rsplit(": ", 1)[1] for h in hits}
    assert found == set(sensitive_values())
    assert any("pg_stats" in h for h in hits)  # ANALYZE put originals in the statistics
    assert any("large object" in h for h in hits)

    dump16 = prod_pg.pg_dump(db, tmp_path / "hard16.pgsql")
    descs16 = {e.desc for e in read_toc(dump16, find_pg_tools(str(prod_pg.bin_dir)))}
    assert {"TABLE DATA", "SEQUENCE SET", "MATERIALIZED VIEW DATA"} <= descs16
    assert descs16 & {"BLOB", "BLOBS", "LARGE OBJECTS", "BLOB METADATA"}

    pg18 = pg_bin_dir(18)
    dump18 = tmp_path / "hard18.pgsql"
    import subprocess

    subprocess.run(
        [str(pg18 / "pg_dump"), "-Fc", "--statistics", "-f", str(dump18), "-d", prod_pg.conninfo(db)],
        check=True,
        capture_output=True,
    )
    descs18 = {e.desc for e in read_toc(dump18, find_pg_tools(str(pg18)))}
    assert "STATISTICS DATA" in descs18
    prod_pg.drop_database(db)
