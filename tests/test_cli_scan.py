"""`scalingo-staging-sync scan` on a real Chinook database: the report, the exit codes, and the starter
rules of `--suggest-rules`: valid, loadable, and when the anonymization core runs them on a restored
Chinook, every flagged column is masked (no original value left) and a second scan has no unmasked
finding."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from cli_helpers import run_cli

from scalingo_staging_sync.anonymize.executor import run_table_plan
from scalingo_staging_sync.anonymize.planner import plan_anonymization
from scalingo_staging_sync.anonymize.rules import load_rules
from scalingo_staging_sync.pgconn import PgTarget
from scalingo_staging_sync.pii.scanner import masked_columns_from_plan, scan_target

REPO = Path(__file__).resolve().parents[1]
SALT = "cli-suggest-test-salt-0123456789"


@pytest.fixture(scope="module")
def chinook_copy(staging_pg16, chinook_dump):
    """Chinook restored from its pg_dump archive into a fresh database of the staging server."""
    name = "cli_scan_chinook"
    staging_pg16.create_database(name)
    proc = subprocess.run(
        [
            str(Path(staging_pg16.bin_dir) / "pg_restore"),
            "--no-owner",
            "--no-privileges",
            "-d",
            staging_pg16.conninfo(name),
            str(chinook_dump),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return staging_pg16, name


def test_scan_reports_findings_and_fails_on_unmasked(chinook_copy):
    pg, name = chinook_copy
    proc = run_cli("scan", "--dsn", pg.conninfo(name))
    assert proc.returncode == 1
    assert "unmasked high   public.customer.email  name:contact.email, content:email" in proc.stdout
    assert "unmasked" in proc.stderr and "finding(s)" in proc.stderr
    # the repository's reviewed rules allow-list makes those statuses "allowed"
    proc = run_cli("scan", "--dsn", pg.conninfo(name), "--rules", str(REPO / "config" / "anonymization.yaml"))
    assert "allowed  low    public.customer.country" in proc.stdout


def test_suggested_rules_are_valid_and_mask_every_flagged_column(chinook_copy, tmp_path):
    pg, name = chinook_copy
    out = tmp_path / "suggested.yaml"
    proc = run_cli(
        "scan", "--dsn", pg.conninfo(name), "--suggest-rules", str(out), "--source-app", "chinook-prod"
    )
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}:" in proc.stdout
    text = out.read_text()
    assert "# name:contact.email, content:email" in text  # each rule says why
    assert "reason:" in text  # judged-clean columns are allowed with a reason

    assert run_cli("validate", str(out)).returncode == 0
    rules = load_rules(out)
    assert rules.source_app == "chinook-prod"
    no_force = run_cli("scan", "--dsn", pg.conninfo(name), "--suggest-rules", str(out))
    assert no_force.returncode == 2

    target = PgTarget(host=pg.host, port=pg.port, user=pg.user, dbname=name)
    first = scan_target(target)
    flagged = {f.qualified_name for f in first.findings}
    allowed = {a["column"] if isinstance(a, dict) else a for a in rules.pii_scan.allow}
    items = plan_anonymization(target, rules)
    masked = set(masked_columns_from_plan(items))
    assert flagged == masked | allowed, "every flagged column is either masked or allowed"
    assert not masked & allowed

    # originals of every masked column, by primary key, before masking
    before: dict[str, dict] = {}
    with target.connect() as conn:
        for item in items:
            key = item["key_columns"]
            assert key, item["table"]
            for col in item["masked_columns"]:
                rows = conn.execute(
                    f'SELECT {", ".join(key)}, "{col}"::text FROM {item["schema"]}."{item["name"]}"'  # noqa: S608 - Chinook names
                ).fetchall()
                before[f"{item['table']}.{col}"] = {r[:-1]: r[-1] for r in rows}

    for item in items:
        run_table_plan(item, target, SALT)

    with target.connect() as conn:
        for item in items:
            key = item["key_columns"]
            for col in item["masked_columns"]:
                rows = conn.execute(
                    f'SELECT {", ".join(key)}, "{col}"::text FROM {item["schema"]}."{item["name"]}"'  # noqa: S608
                ).fetchall()
                originals = before[f"{item['table']}.{col}"]
                survivors = [r for r in rows if r[-1] is not None and originals.get(r[:-1]) == r[-1]]
                assert not survivors, f"{item['table']}.{col} kept {len(survivors)} original value(s)"

    second = scan_target(target, masked_columns=sorted(masked), allow=list(rules.pii_scan.allow))
    assert second.passed, [f.qualified_name for f in second.unmasked]
    assert {f.qualified_name for f in second.findings} == flagged


RULES_WITH_EXCLUSION = """\
source_app: my-app
exclude_tables:
  - archive_logs
large_objects: {large_objects}
pii_scan:
  allow: {allow}
"""


def test_scan_honours_exclude_tables_and_large_objects_of_the_rules_file(staging_pg16, tmp_path):
    """`scan --rules` applies the rules file as the PII scan task of a sync does: an excluded table must be
    empty and is not flagged by name; with `large_objects: keep` the large objects' content is scanned,
    without it any large object fails the scan."""
    pg, name = staging_pg16, "cli_scan_rules_scope"
    pg.create_database(name)
    pg.execute("CREATE TABLE archive_logs (id int, email text); CREATE TABLE counters (id int, n int)", name)
    with pg.connect(name) as conn:
        conn.execute("SELECT lo_from_bytea(0, %s)", (b"scanned contract of jane.roe@corp.test",))

    def rules(large_objects: str, allow: str = "[]") -> str:
        path = tmp_path / f"rules-{large_objects}-{len(allow)}.yaml"
        path.write_text(RULES_WITH_EXCLUSION.format(large_objects=large_objects, allow=allow))
        assert run_cli("validate", str(path)).returncode == 0
        return str(path)

    dsn = pg.conninfo(name)
    kept = run_cli("scan", "--dsn", dsn, "--rules", rules("keep"))
    assert kept.returncode == 1, kept.stderr
    assert "unmasked high" in kept.stdout and "pg_catalog.pg_largeobject.data  content:email" in kept.stdout
    assert "archive_logs.email" not in kept.stdout  # excluded: not flagged by name
    assert "excluded public.archive_logs: empty" in kept.stdout
    assert "large objects: 1 (rules large_objects: keep), 1 content-scanned" in kept.stdout
    assert "jane.roe" not in kept.stdout + kept.stderr

    allow_lo = '[{column: pg_catalog.pg_largeobject.data, reason: "reviewed: contract scans"}]'
    reviewed = run_cli("scan", "--dsn", dsn, "--rules", rules("keep", allow_lo), "--json")
    assert reviewed.returncode == 0, reviewed.stdout + reviewed.stderr
    report = json.loads(reviewed.stdout)
    assert report["excluded"] == {"public.archive_logs": "empty"} and report["passed"] is True
    assert report["large_objects"]["kept"] is True and report["large_objects"]["count"] == 1

    dropped = run_cli("scan", "--dsn", dsn, "--rules", rules("drop", allow_lo))
    assert dropped.returncode == 1
    assert "1 large object(s) not kept by the rules" in dropped.stderr
    assert "set large_objects: keep in the --rules file" in dropped.stdout

    pg.execute("INSERT INTO archive_logs VALUES (1, 'someone@corp.test')", name)
    leaked = run_cli("scan", "--dsn", dsn, "--rules", rules("keep", allow_lo))
    assert leaked.returncode == 1
    assert "excluded table(s) holding rows: public.archive_logs" in leaked.stderr
    assert "excluded public.archive_logs: holds rows (excluded by the rules file" in leaked.stdout
    assert "someone" not in leaked.stdout + leaked.stderr


RULES_MASKING = """\
source_app: my-app
anonymization_tables:
  - table: members
    columns:
      email: email
    condition: "kind <> 'staff'"
  - table: ghosts
    columns:
      email: email
pii_scan:
  enabled: false
"""


def test_scan_counts_the_rules_masked_columns_and_samples_rows_outside_a_condition(staging_pg16, tmp_path):
    """`scan --rules` reads anonymization_tables as the DAG's PII scan does: a column the rules mask is
    `masked`, but the rows a conditional rule leaves as they are are sampled and fail the scan; a rule
    whose table is not in the scanned database is named on stderr, and pii_scan.enabled: false is noted,
    not silently ignored."""
    pg, name = staging_pg16, "cli_scan_rules_masking"
    pg.create_database(name)
    pg.execute(
        "CREATE TABLE members (id int PRIMARY KEY, kind text, email text);"
        "INSERT INTO members SELECT g, 'customer', 'u' || md5(g::text) || '@example.com'"
        " FROM generate_series(1, 50) g",
        name,
    )
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES_MASKING)
    assert run_cli("validate", str(rules)).returncode == 0
    dsn = pg.conninfo(name)

    bare = run_cli("scan", "--dsn", dsn)
    assert bare.returncode == 1 and "unmasked high   public.members.email" in bare.stdout

    masked = run_cli("scan", "--dsn", dsn, "--rules", str(rules))
    assert masked.returncode == 0, masked.stdout + masked.stderr
    assert "masked   high   public.members.email" in masked.stdout
    assert (
        "no such table public.ghosts in this database: its columns are not counted as masked" in masked.stderr
    )
    assert "pii_scan.enabled: false" in masked.stderr

    pg.execute("INSERT INTO members VALUES (100, 'staff', 'jane.roe@corp.test')", name)
    outside = run_cli("scan", "--dsn", dsn, "--rules", str(rules), "--json")
    assert outside.returncode == 1, outside.stdout
    report = json.loads(outside.stdout)
    assert report["outside_condition"] == {"public.members.email": 1}
    assert "public.members.email" in report["unmasked"]
    assert "jane.roe" not in outside.stdout + outside.stderr


def test_scan_counts_materialized_view_columns_computed_from_masked_ones_as_the_dag_does(
    staging_pg16, tmp_path
):
    """A materialized view over masked columns: the DAG's scan counts its columns as masked (refreshed from
    the masked tables); `scan --rules` reported them unmasked and failed, and no rule could clear them."""
    pg, name = staging_pg16, "cli_scan_rules_matview"
    pg.create_database(name)
    pg.execute(
        "CREATE TABLE people (id int PRIMARY KEY, email text, note text);"
        "INSERT INTO people SELECT g, 'u' || md5(g::text) || '@example.com', 'n' FROM generate_series(1, 50) g;"
        "CREATE MATERIALIZED VIEW contact_book AS SELECT id, lower(email) AS login FROM people",
        name,
    )
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "source_app: prod\nanonymization_tables:\n  - table: people\n    columns: {email: email}\n"
    )
    out = run_cli("scan", "--dsn", pg.conninfo(name), "--rules", str(rules), "--json")
    pg.drop_database(name)
    assert out.returncode == 0, out.stdout + out.stderr
    statuses = {f["column_id"]: f["status"] for f in json.loads(out.stdout)["findings"]}
    assert statuses["public.contact_book.login"] == "masked" and statuses["public.people.email"] == "masked"


def test_a_people_table_the_role_cannot_read_is_reported_not_a_crash(staging_pg16):
    """The copies' reading of names and e-mail addresses meets the table first: a permission error
    there must leave the scan to report the table as not sampled (exit 1), as before."""
    name = "cli_scan_unreadable"
    staging_pg16.create_database(name)
    staging_pg16.execute(
        "CREATE ROLE scan_reader LOGIN; "
        "CREATE TABLE people (id int PRIMARY KEY, first_name text, last_name text, email text); "
        "INSERT INTO people VALUES (1, 'Ann', 'Lee', 'ann@example.org'); "
        "CREATE TABLE notes (id int PRIMARY KEY, body text); INSERT INTO notes VALUES (1, 'hello'); "
        "GRANT SELECT ON notes TO scan_reader",
        name,
    )
    try:
        proc = run_cli("scan", "--dsn", staging_pg16.conninfo(name, user="scan_reader"))
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "error    public.people: could not be sampled" in proc.stdout, proc.stdout
        assert "Traceback" not in proc.stderr
    finally:
        staging_pg16.drop_database(name)
        staging_pg16.execute("DROP ROLE scan_reader")
