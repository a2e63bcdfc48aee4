"""Issue 10: bad rules are refused at planning, before staging is touched (in_place mode, with a role that
has Scalingo's grants: staging stays EXACTLY as it was, compared database by database, table by table,
row by row); a replica-role connection option still masks end to end; a CHECK violation during an
in-place UPDATE leaves no row value in the task log or in the Slack failure message. Real Airflow runs
on the hard dataset (tests/e2e/hard_dataset.py), real embedded PostgreSQL, the fake Scalingo API."""

from __future__ import annotations

import json

import psycopg
import pytest
import yaml
from e2e.hard_dataset import RULES_YAML, find_originals, sensitive_values
from issue10_support import hard_box, run, states, xcom
from psycopg import sql

pytestmark = pytest.mark.airflow


def rules_with(mutate) -> str:
    rules = yaml.safe_load(RULES_YAML)
    mutate(rules)
    return yaml.safe_dump(rules, allow_unicode=True)


def rule_of(rules: dict, table: str) -> dict:
    return next(r for r in rules["anonymization_tables"] if r["table"] == table)


def cluster_snapshot(pg) -> dict:
    """Every database of the cluster, every relation of it, and every row of each table and view."""
    snap: dict = {}
    for (db,) in pg.execute("SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1"):
        with psycopg.connect(pg.conninfo(db), autocommit=True) as conn:
            relations = conn.execute(
                "SELECT n.nspname, c.relname, c.relkind::text FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' "
                "AND c.relkind IN ('r', 'p', 'm', 'v', 'S', 'f') ORDER BY 1, 2"
            ).fetchall()
            tables = {}
            for schema, name, kind in relations:
                rows = None
                if kind in ("r", "m", "v"):
                    rows = sorted(
                        r[0]
                        for r in conn.execute(
                            sql.SQL("SELECT t::text FROM {} t").format(sql.Identifier(schema, name))
                        ).fetchall()
                    )
                tables[f"{schema}.{name}"] = (kind, rows)
            owners = conn.execute(
                "SELECT n.nspname, c.relname, pg_get_userbyid(c.relowner) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' ORDER BY 1, 2"
            ).fetchall()
            snap[db] = {"relations": tables, "owners": owners}
    return snap


@pytest.fixture
def scalingo_grants():
    """Give a box's staging the grants of a Scalingo addon role and connect as that role (in_place)."""

    def apply(box, monkeypatch) -> None:
        box.staging.execute("CREATE ROLE app_user LOGIN NOCREATEDB NOSUPERUSER")
        box.staging.execute(f'GRANT ALL ON DATABASE "{box.staging_db}" TO app_user')
        box.staging.execute("GRANT ALL ON SCHEMA public TO app_user", box.staging_db)
        box.staging.execute("ALTER TABLE previous_staging_marker OWNER TO app_user", box.staging_db)
        box.staging.execute(
            "CREATE TABLE app_orders (id int PRIMARY KEY, label text); "
            "INSERT INTO app_orders VALUES (1, 'kept as is'), (2, 'also kept'); "
            "ALTER TABLE app_orders OWNER TO app_user",
            box.staging_db,
        )
        monkeypatch.setenv(
            "AIRFLOW_CONN_STAGING_DB", box.staging.airflow_conn_json(box.staging_db, user="app_user")
        )

    return apply


def _typo(rules: dict) -> None:
    rule_of(rules, "people")["columns"] = {"full_name": "full_name", "emial": "email", "phone": "phone"}


def _weak_unique(rules: dict) -> None:
    rule_of(rules, "people")["columns"]["email"] = {"transformer": "hash", "length": 8}


@pytest.mark.parametrize("mode", ["in_place", "swap"])
@pytest.mark.parametrize(
    ("mutate", "expected"),
    [(_typo, "emial"), (_weak_unique, "email")],
    ids=["column-typo", "unique-column-under-hash-length-8"],
)
def test_bad_rules_are_refused_at_planning_and_staging_stays_exactly_as_it_was(
    dag, tmp_path_factory, monkeypatch, scalingo_grants, capfd, mutate, expected, mode
):
    box = hard_box(tmp_path_factory, monkeypatch, rules_text=rules_with(mutate))
    try:
        if mode == "in_place":
            scalingo_grants(box, monkeypatch)  # no CREATEDB: auto resolves to in_place
        from scalingo_staging_sync.hooks.postgres import pg_target_from_connection
        from scalingo_staging_sync.restore.targets import resolve_mode

        assert resolve_mode(pg_target_from_connection("staging_db"), "auto") == mode
        before = cluster_snapshot(box.staging)
        dag_run = run(dag, box)
        st = states(dag_run)
        assert str(dag_run.state) == "failed", st
        assert st["plan_anonymization"] == "failed", st
        for task in ("dry_run_stop", "restore_schema", "load_data", "promote"):
            assert st[task] == "upstream_failed", (task, st)
        assert st["cleanup"] == "success", st
        assert cluster_snapshot(box.staging) == before
        log = capfd.readouterr()
        text = log.out + log.err
        assert "PlanError" in text and expected in text and "anonymization_tables[0]" in text
    finally:
        box.stop()


def test_replica_role_connection_option_still_masks(dag, tmp_path_factory, monkeypatch):
    box = hard_box(tmp_path_factory, monkeypatch)
    try:
        conn = json.loads(box.staging.airflow_conn_json(box.staging_db))
        conn["extra"] = json.dumps({"options": "-c session_replication_role=replica"})
        monkeypatch.setenv("AIRFLOW_CONN_STAGING_DB", json.dumps(conn))
        from scalingo_staging_sync.hooks.postgres import pg_target_from_connection

        target = pg_target_from_connection("staging_db")
        with target.connect(autocommit=True) as c:  # the option reaches the sessions of the run
            assert c.execute("SHOW session_replication_role").fetchone()[0] == "replica"
        assert "replica" in target.libpq_env().get("PGOPTIONS", "")  # and pg_restore's
        dag_run = run(dag, box)
        st = states(dag_run)
        assert str(dag_run.state) == "success", st
        assert find_originals(box.staging, sensitive_values()) == []
        emails = box.staging.execute("SELECT email FROM people", box.staging_db)
        assert len(emails) == 4
    finally:
        box.stop()


def _check_violating_rule(rules: dict) -> None:
    # a conditional rule (masked in place by one UPDATE) whose hash removes the '@' that
    # people_email_has_at requires: the UPDATE fails with a CHECK violation on a production row
    rule = rule_of(rules, "people")
    rule["condition"] = "id > 0"
    rule["columns"]["email"] = {"transformer": "hash"}
    rules["slack_conn_id"] = "slack_test"


def test_check_violation_during_in_place_update_leaks_no_row(dag, tmp_path_factory, monkeypatch, capfd):
    from scalingo_staging_sync.testing.slack_receiver import SlackReceiver

    box = hard_box(tmp_path_factory, monkeypatch, rules_text=rules_with(_check_violating_rule))
    try:
        with SlackReceiver() as slack:
            monkeypatch.setenv("AIRFLOW_CONN_SLACK_TEST", slack.airflow_conn_json())
            dag_run = run(dag, box)
            texts = slack.texts()
        st = states(dag_run)
        assert str(dag_run.state) == "failed", st
        assert st["anonymize_table"] == "failed", st
        log = capfd.readouterr()
        text = log.out + log.err
        assert "23514" in text and "people_email_has_at" in text  # SQLSTATE and constraint name
        assert "Failing row" not in text
        leaked = [v for v in sensitive_values() if v in text]
        assert leaked == [], leaked
        failure = [t for t in texts if "anonymize_table" in t]
        assert failure, texts
        joined = "\n".join(texts)
        assert "Failing row" not in joined
        assert [v for v in sensitive_values() if v in joined] == []
        # the failed run left no unmasked data behind
        assert find_originals(box.staging, sensitive_values()) == []
    finally:
        box.stop()


def test_in_place_with_scalingo_grants_masks_the_hard_dataset(
    dag, tmp_path_factory, monkeypatch, scalingo_grants
):
    """The same Done-when run in in_place mode (a role with Scalingo's grants: no CREATEDB)."""
    box = hard_box(tmp_path_factory, monkeypatch)
    try:
        scalingo_grants(box, monkeypatch)
        dag_run = run(dag, box)
        st = states(dag_run)
        assert str(dag_run.state) == "success", st
        assert xcom(dag_run, "restore_schema")["mode"] == "in_place"
        assert find_originals(box.staging, sensitive_values()) == []
        assert box.staging.execute("SELECT count(*) FROM people", box.staging_db) == [(4,)]
    finally:
        box.stop()
