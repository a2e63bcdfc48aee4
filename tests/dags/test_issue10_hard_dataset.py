"""Issue 10, done when: the reference DAG, run on a production database it has never seen that holds every
class of data-carrying entry (tests/e2e/hard_dataset.py), succeeds, and no original value is found
anywhere in the staging cluster (every database: tables, pg_stats, large objects). Real Airflow runs
(dag.test), real embedded PostgreSQL (production 16 or 18, staging 16 or 18), the fake Scalingo API over
HTTP; the PG 18 archive is made by ``pg_dump --statistics``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from airflow_helpers import every_step_ran
from e2e.hard_dataset import RULES_YAML, find_originals, sensitive_values
from issue10_support import hard_box, run, states, xcom
from reference_helpers import audit_report

pytestmark = pytest.mark.airflow


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
        assert every_step_ran(st), st

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

        report = audit_report(box)
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


def test_kept_large_objects_are_restored_and_their_content_scanned(dag, tmp_path_factory, monkeypatch):
    """``large_objects: keep``: the large objects are restored, classified scanned, and their content goes
    through the content detector: a scanned passport fails the PII gate, and the failed run leaves nothing
    (the scratch copy is dropped, the previous staging copy stays)."""
    import yaml

    rules = yaml.safe_load(RULES_YAML)
    rules["large_objects"] = "keep"
    rules["pii_scan"]["patterns"] = {
        "content": [{"name": "passport_scan", "regex": "PASSPORT scan", "severity": "high"}]
    }
    box = hard_box(tmp_path_factory, monkeypatch, rules_text=yaml.safe_dump(rules, allow_unicode=True))
    try:
        dag_run = run(dag, box)
        st = states(dag_run)
        assert str(dag_run.state) == "failed", st
        assert st["pii_scan"] == "failed" and st["promote"] == "upstream_failed", st
        plan = xcom(dag_run, "plan_anonymization", "archive_plan")
        assert plan["large_objects"] == {"policy": "keep", "count": 1}
        lo_classes = {c["class"] for c in plan["classification"] if c["desc"] in ("BLOB", "BLOBS")}
        assert lo_classes == {"scanned"}
        scan = xcom(dag_run, "pii_scan", "pii_scan")
        assert scan["large_objects"]["kept"] is True
        assert scan["large_objects"]["matches"] == {"passport_scan": 1}
        assert scan["unmasked"] == ["pg_catalog.pg_largeobject.data"]
        assert find_originals(box.staging, sensitive_values()) == []
        assert box.staging.execute("SELECT count(*) FROM previous_staging_marker", box.staging_db) == [(1,)]
        report = audit_report(box)
        assert report["classification"]["large_objects"] == {"policy": "keep", "count": 1}
    finally:
        box.stop()
