"""``restore()`` / ``PgRestoreOperator`` without an archive plan are safe by default, as the plan is: large
objects (and the comments on them) and materialized view data are not restored unless the caller asks,
on real ``pg_dump`` archives (PostgreSQL 16: one ``BLOB`` entry per object; 18: grouped ``BLOB
METADATA``) restored into a database with Scalingo's grants."""

from __future__ import annotations

import json

import pytest
from restore_helpers import SCALINGO_ROLE, make_scalingo_db, unique_db

from scalingo_staging_sync.inventory.plan import ArchivePlan
from scalingo_staging_sync.restore.api import restore
from scalingo_staging_sync.restore.errors import RestoreError
from scalingo_staging_sync.restore.pgtools import PG_BIN_ENV, find_pg_tools
from scalingo_staging_sync.restore.toc import read_toc
from scalingo_staging_sync.testing.postgres import pg_bin_dir

SECRET = b"passport scan of jane.doe@corp.test"

SOURCE_SQL = """
CREATE TABLE person (id int PRIMARY KEY, email text NOT NULL, photo oid);
INSERT INTO person SELECT g, 'user' || g || '@corp.test', NULL FROM generate_series(1, 30) g;
CREATE MATERIALIZED VIEW person_emails AS SELECT id, email FROM person;
CREATE INDEX person_emails_id ON person_emails (id);
"""


@pytest.fixture(params=[16, 18], ids=["pg_dump-16", "pg_dump-18"])
def source(request, tmp_path_factory):
    """(server the archive is restored into, archive path) for a database holding rows, one large object
    with a comment, and a populated materialized view over the rows."""
    pg = request.getfixturevalue(f"staging_pg{request.param}")
    name = unique_db("lo_source")
    pg.create_database(name)
    pg.execute(SOURCE_SQL, name)
    with pg.connect(name) as conn:
        oid = conn.execute("SELECT lo_from_bytea(0, %s)", (SECRET,)).fetchone()[0]
        conn.execute("UPDATE person SET photo = %s WHERE id = 1", (oid,))
        conn.execute(f"COMMENT ON LARGE OBJECT {int(oid)} IS 'photo of person 1'")
    dump = pg.pg_dump(name, tmp_path_factory.mktemp("lo_dumps") / f"{name}.pgsql")
    descs = {e.desc for e in read_toc(dump, find_pg_tools(pg_bin_dir(pg.version)))}
    assert "MATERIALIZED VIEW DATA" in descs and descs & {"BLOB", "BLOB METADATA"} and "BLOBS" in descs
    return pg, dump


def _state(pg, db) -> dict:
    return {
        "rows": pg.execute("SELECT count(*) FROM person", db)[0][0],
        "large_objects": pg.execute("SELECT count(*) FROM pg_largeobject_metadata", db)[0][0],
        "view_populated": pg.execute(
            "SELECT relispopulated FROM pg_class WHERE relname = 'person_emails'", db
        )[0][0],
    }


def test_without_a_plan_large_objects_and_view_data_are_left_out(source):
    pg, dump = source
    db = unique_db("scalingo")
    target = make_scalingo_db(pg, db)
    out = restore(dump, target, mode="in_place", tools=find_pg_tools(pg_bin_dir(pg.version)))
    assert _state(pg, db) == {"rows": 30, "large_objects": 0, "view_populated": False}
    assert any("large objects are not restored" in s and "large_objects='keep'" in s for s in out["skipped"])
    assert any("materialized view data is not restored" in s for s in out["skipped"])
    assert any("COMMENT" in s and "LARGE OBJECT" in s for s in out["skipped"]), out["skipped"]
    [warning] = [w for w in out["warnings"] if w.startswith("no archive plan")]
    assert "large_objects='keep'" in warning and "materialized_view_data=True" in warning


def test_sections_without_a_plan_leave_them_out_too(source):
    pg, dump = source
    db = unique_db("scalingo")
    target = make_scalingo_db(pg, db)
    tools = find_pg_tools(pg_bin_dir(pg.version))
    for section in ("pre-data", "data", "post-data"):
        restore(dump, target, section=section, mode="in_place", tools=tools)
    assert _state(pg, db) == {"rows": 30, "large_objects": 0, "view_populated": False}


def test_the_caller_can_ask_for_them_explicitly(source):
    pg, dump = source
    db = unique_db("scalingo")
    target = make_scalingo_db(pg, db)
    out = restore(
        dump,
        target,
        mode="in_place",
        tools=find_pg_tools(pg_bin_dir(pg.version)),
        large_objects="keep",
        materialized_view_data=True,
    )
    assert _state(pg, db) == {"rows": 30, "large_objects": 1, "view_populated": True}
    assert pg.execute("SELECT lo_get(photo) FROM person WHERE id = 1", db)[0][0] == SECRET
    assert not any(w.startswith("no archive plan") for w in out["warnings"])


def test_explicit_values_that_contradict_the_plan_are_refused_before_anything_is_touched(source):
    pg, dump = source
    db = unique_db("untouched")
    pg.create_database(db)
    pg.execute("CREATE TABLE marker (x int)", db)
    target = make_scalingo_db(pg, unique_db("scalingo"))
    plan = ArchivePlan().to_json()  # large_objects policy "drop"
    with pytest.raises(
        ValueError, match=r"large_objects='keep' contradicts the archive plan \(large_objects 'drop'"
    ):
        restore(dump, target, mode="in_place", plan=plan, large_objects="keep")
    with pytest.raises(ValueError, match="materialized_view_data=True does not apply with an archive plan"):
        restore(dump, target, mode="in_place", plan=plan, materialized_view_data=True)
    with pytest.raises(ValueError, match="large_objects='yes': use 'drop'"):
        restore(dump, target, mode="in_place", large_objects="yes")
    assert pg.execute("SELECT count(*) FROM pg_class WHERE relname = 'person'", target.dbname)[0][0] == 0


def test_a_plain_dump_holding_them_is_refused_unless_asked(source, tmp_path):
    pg, dump = source
    tools = find_pg_tools(pg_bin_dir(pg.version))
    source_db = dump.stem
    plain = pg.pg_dump(source_db, tmp_path / "plain.sql", fmt="p", extra=["--no-owner", "--no-privileges"])
    target = make_scalingo_db(pg, unique_db("scalingo"))
    with pytest.raises(RestoreError, match=r"plain\.sql holds large objects .*and materialized view data"):
        restore(plain, target, mode="in_place", tools=tools)
    assert pg.execute("SELECT count(*) FROM pg_class WHERE relname = 'person'", target.dbname)[0][0] == 0
    restore(plain, target, mode="in_place", tools=tools, large_objects="keep", materialized_view_data=True)
    assert _state(pg, target.dbname) == {"rows": 30, "large_objects": 1, "view_populated": True}


def test_pg_restore_operator_alone_is_safe_by_default(source, monkeypatch):
    from scalingo_staging_sync.operators import PgRestoreOperator

    pg, dump = source
    monkeypatch.setenv(PG_BIN_ENV, str(pg_bin_dir(pg.version)))
    db = unique_db("scalingo")
    make_scalingo_db(pg, db)
    monkeypatch.setenv("AIRFLOW_CONN_STAGING_DB", pg.airflow_conn_json(db, user=SCALINGO_ROLE))
    out = PgRestoreOperator(task_id="restore", dump_path=str(dump), mode="in_place").execute({})
    assert _state(pg, db) == {"rows": 30, "large_objects": 0, "view_populated": False}
    assert any(w.startswith("no archive plan") for w in json.loads(json.dumps(out))["warnings"])

    db2 = unique_db("scalingo")
    make_scalingo_db(pg, db2)
    monkeypatch.setenv("AIRFLOW_CONN_STAGING_DB", pg.airflow_conn_json(db2, user=SCALINGO_ROLE))
    PgRestoreOperator(
        task_id="restore_all",
        dump_path=str(dump),
        mode="in_place",
        large_objects="keep",
        materialized_view_data="true",  # as a rendered template gives it
    ).execute({})
    assert _state(pg, db2) == {"rows": 30, "large_objects": 1, "view_populated": True}
