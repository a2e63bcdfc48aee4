"""Issue 10, done when: the reference DAG, run on a production database it has never seen that holds every
class of data-carrying entry (tests/e2e/hard_dataset.py), succeeds, and no original value is found
anywhere in the staging cluster (every database: tables, pg_stats, large objects). Real Airflow runs
(dag.test), real embedded PostgreSQL (production 16 or 18, staging 16 or 18), the fake Scalingo API over
HTTP; the PG 18 archive is made by ``pg_dump --statistics``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from scalingo_staging_sync.testing.sandbox import start_sandbox

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the e2e dataset package
from e2e.hard_dataset import RULES_YAML, find_originals, load_hard_dataset, sensitive_values  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"

pytestmark = pytest.mark.airflow


@pytest.fixture(scope="module")
def dag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag("scalingo_staging_sync")


def hard_box(tmp_path_factory, monkeypatch, *, rules_text: str = RULES_YAML, **sandbox_kwargs):
    rules = tmp_path_factory.mktemp("rules") / "hard.yaml"
    rules.write_text(rules_text)
    box = start_sandbox(
        tmp_path_factory.mktemp("sandbox"),
        load_dataset=load_hard_dataset,
        source_db="hard",
        rules_file=rules,
        **sandbox_kwargs,
    )
    for key, value in box.env.items():
        monkeypatch.setenv(key, value)
    return box


def run(dag, box, **conf):
    defaults = {
        "source_app": box.source_app,
        "target_app": box.target_app,
        "confirm_target": box.target_app,
        "dry_run": False,
        "backup": "latest",
        "exclude_tables": [],
        "rules_file": None,
    }
    return dag.test(run_conf={**defaults, **conf})


def states(dag_run) -> dict[str, str]:
    out: dict[str, str] = {}
    for ti in dag_run.get_task_instances():
        state = str(ti.state.value if hasattr(ti.state, "value") else ti.state)
        if out.get(ti.task_id) in (None, "success"):
            out[ti.task_id] = state
    return out


def audit(box) -> dict:
    files = sorted(Path(box.env["SCALINGO_STAGING_SYNC_AUDIT_DIR"]).glob("*.json"))
    assert files, "no audit report written"
    return json.loads(files[-1].read_text())


def xcom(dag_run, task_id: str, key: str = "return_value"):
    for ti in dag_run.get_task_instances():
        if ti.task_id == task_id:
            return ti.xcom_pull(task_ids=task_id, key=key)
    return None


CASES = {
    "prod16-staging16": {"staging_version": 16},
    "prod16-staging18": {"staging_version": 18},
    "prod18-statistics-staging18": {"staging_version": 18, "prod_version": 18, "dump_args": ["--statistics"]},
}


@pytest.mark.parametrize("case", list(CASES))
def test_reference_dag_on_the_hard_dataset_leaves_no_original(dag, tmp_path_factory, monkeypatch, case):
    box = hard_box(tmp_path_factory, monkeypatch, **CASES[case])
    try:
        assert find_originals(box.prod, sensitive_values()), "the finder must see production's originals"
        dag_run = run(dag, box)
        st = states(dag_run)
        assert str(dag_run.state) == "success", st
        assert all(s == "success" for s in st.values()), st

        hits = find_originals(box.staging, sensitive_values())
        assert hits == [], hits

        db = box.staging_db
        q = box.staging.execute
        # masked tables hold their rows (masked), excluded ones are empty, the matview is refreshed
        assert q("SELECT count(*) FROM ONLY people", db) == [(3,)]
        assert q("SELECT count(*) FROM vip_people", db) == [(1,)]
        assert q("SELECT count(*) FROM orders", db) == [(2,)]
        assert q("SELECT count(*) FROM crm.sessions", db) == [(2,)]
        assert q("SELECT count(*) FROM public.sessions", db) == [(0,)]
        assert q("SELECT count(*) FROM audit_log", db) == [(0,)]
        assert q("SELECT count(*) FROM pg_largeobject_metadata", db) == [(0,)]
        assert q("SELECT count(*) FROM people_directory", db) == [(4,)]
        assert q("SELECT count(*) FROM people_directory d JOIN people p USING (id, email)", db) == [(4,)]
        # masked once: the inheritance child's row went through its own trigger only
        assert all("@" in r[0] for r in q("SELECT email FROM people", db))
        # statistics describe masked data (ANALYZE after masking, the archive's never restored)
        assert q("SELECT count(*) FROM pg_stats WHERE tablename = 'people'", db)[0][0] > 0
        # the trigger functions are gone
        assert q("SELECT count(*) FROM pg_proc WHERE proname LIKE '\\_sss\\_mask\\_%'", db) == [(0,)]

        plan = xcom(dag_run, "plan_anonymization", "archive_plan")
        summary = plan["summary"]
        print(f"\n{case}: archive classification {summary}")
        by_table = {(c["desc"], c["table"]): c for c in plan["classification"]}
        assert by_table[("TABLE DATA", "public.vip_people")]["class"] == "masked"
        assert by_table[("TABLE DATA", "public.orders_eu")]["class"] == "masked"
        assert by_table[("TABLE DATA", "crm.sessions")]["class"] == "masked"
        assert by_table[("TABLE DATA", "public.sessions")]["class"] == "excluded"
        assert by_table[("TABLE DATA", "public.audit_log_2025")]["class"] == "excluded"
        assert by_table[("MATERIALIZED VIEW DATA", "public.people_directory")]["class"] == "dropped"
        descs = {c["desc"] for c in plan["classification"] if c["class"] == "dropped"}
        assert descs & {"BLOB", "BLOBS", "BLOB METADATA"}
        if "--statistics" in (CASES[case].get("dump_args") or []):
            assert "STATISTICS DATA" in descs

        report = audit(box)
        assert report["result"] == "success"
        classification = report["classification"]
        assert classification["summary"] == summary
        assert {d["desc"] for d in classification["dropped"]} == descs
        assert all(d["reason"] for d in classification["dropped"])
        assert "public.audit_log_2026" in classification["excluded_tables"]
        text = json.dumps(report) + Path(report["files"]["text"]).read_text() if report.get("files") else ""
        assert not [v for v in sensitive_values() if v in json.dumps(report)]
        del text
    finally:
        box.stop()
