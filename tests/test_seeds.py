from __future__ import annotations

import pytest

from scalingo_staging_sync.pgconn import PgTarget
from scalingo_staging_sync.seeds import SeedError, resolve_seed_paths, run_seeds


@pytest.fixture
def seed_db(staging_pg16):
    staging_pg16.create_database("seeds_test")
    staging_pg16.execute("CREATE TABLE flags (name text PRIMARY KEY, enabled boolean)", "seeds_test")
    return PgTarget(host=staging_pg16.host, port=staging_pg16.port, user="postgres", dbname="seeds_test")


def test_seeds_run_in_order_relative_to_the_rules_file(tmp_path, seed_db, staging_pg16):
    (tmp_path / "seeds").mkdir()
    (tmp_path / "seeds" / "01.sql").write_text("INSERT INTO flags VALUES ('demo', true);")
    (tmp_path / "seeds" / "02.sql").write_text("UPDATE flags SET enabled = false WHERE name = 'demo';")
    rules = tmp_path / "rules.yaml"
    paths = resolve_seed_paths(["seeds/01.sql", "seeds/02.sql"], rules)
    results = run_seeds(seed_db, paths)
    assert [r["file"] for r in results] == ["01.sql", "02.sql"]
    assert staging_pg16.execute("SELECT enabled FROM flags", "seeds_test") == [(False,)]


def test_missing_seed_is_named_before_anything_runs(tmp_path):
    (tmp_path / "x.sql").write_text("SELECT 1;")
    with pytest.raises(SeedError, match=r"seeds\[1\]: 'nope.sql' not found"):
        resolve_seed_paths(["x.sql", "nope.sql"], tmp_path / "r.yaml")


def test_failing_seed_rolls_back_and_names_the_file(tmp_path, seed_db, staging_pg16):
    bad = tmp_path / "bad.sql"
    bad.write_text("INSERT INTO flags VALUES ('half', true); SELECT no_such_function();")
    with pytest.raises(SeedError, match=r"seeds\[0\] \(bad.sql\) failed"):
        run_seeds(seed_db, [bad])
    assert staging_pg16.execute("SELECT count(*) FROM flags WHERE name = 'half'", "seeds_test") == [(0,)]
