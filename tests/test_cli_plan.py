"""`scalingo-staging-sync plan RULES --archive FILE` on Chinook: the archive's inventory, classification
and plan, read from the archive alone (no database, no Airflow), both from the pg_dump file and from the
Scalingo backup (.tar.gz) downloaded through the fake Scalingo API."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from cli_helpers import run_cli

from scalingo_staging_sync.scalingo.client import ScalingoClient
from scalingo_staging_sync.testing.fake_scalingo import FakeScalingoAPI
from scalingo_staging_sync.testing.postgres import pg_bin_dir

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "config" / "anonymization.yaml"


def run(*args: str) -> subprocess.CompletedProcess:
    """The CLI in a subprocess, with PostgreSQL 18 client tools (they read any archive up to 18)."""
    return run_cli(*args, env={"SCALINGO_STAGING_SYNC_PG_BIN": str(pg_bin_dir(18))})


def _check_plan(data: dict) -> None:
    assert {"items", "classification", "masked_columns", "excluded_tables", "summary"} <= set(data)
    tables = {item["table"] for item in data["items"]}
    assert {"public.customer", "public.employee", "public.invoice"} <= tables
    assert "public.customer.email" in data["masked_columns"]
    classified = {entry["table"] for entry in data["classification"] if entry.get("table")}
    assert "public.track" in classified  # every table of the archive is classified, masked or not
    assert "public.invoice_line" in data["excluded_tables"]


def test_plan_of_a_chinook_dump(chinook_dump):
    proc = run(
        "plan", str(RULES), "--archive", str(chinook_dump), "--exclude-table", "invoice_line", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    _check_plan(json.loads(proc.stdout))

    text = run(
        "plan",
        str(RULES),
        "--archive",
        str(chinook_dump),
        "--exclude-table",
        "invoice_line",
        "--pg-bin",
        str(pg_bin_dir(16)),
    )
    assert text.returncode == 0, text.stderr
    assert "Plan (" in text.stdout and "public.customer:" in text.stdout
    assert "Archive inventory and classification" in text.stdout

    typo = run(
        "plan",
        str(RULES),
        "--archive",
        str(chinook_dump),
        "--exclude-table",
        "invoice_lines",  # a typo would restore the data it meant to leave out: refused
        "--pg-bin",
        str(pg_bin_dir(16)),
    )
    assert typo.returncode != 0
    out = typo.stdout + typo.stderr
    assert "public.invoice_lines is not a table of this archive" in out and "or remove the exclusion" in out


def test_plan_of_a_backup_downloaded_from_the_fake_api(chinook_dump, tmp_path):
    with FakeScalingoAPI() as fake:
        fake.add_addon("chinook-production", dump_path=str(chinook_dump))
        fake.add_backup("chinook-production", str(chinook_dump))
        with ScalingoClient(
            fake.api_token, auth_url=fake.url, api_url=fake.url, db_api_url=fake.url
        ) as client:
            addon = client.get_postgresql_addon("chinook-production")
            backup = client.latest_done_backup("chinook-production", addon["id"])
            archive = tmp_path / "backup.tar.gz"
            client.download_backup("chinook-production", addon["id"], backup, archive)
    proc = run("plan", str(RULES), "--archive", str(archive), "--exclude-table", "invoice_line", "--json")
    assert proc.returncode == 0, proc.stderr
    _check_plan(json.loads(proc.stdout))


def test_plan_refuses_invalid_rules_and_missing_archives(tmp_path, chinook_dump):
    bad = tmp_path / "bad.yaml"
    bad.write_text("source_app: a\nanonymization_tables:\n  - table: t\n    strategy: nope\n")
    proc = run("plan", str(bad), "--archive", str(chinook_dump))
    assert proc.returncode == 1
    assert f"{bad}:4: anonymization_tables[0].strategy: unknown strategy 'nope'" in proc.stderr
    assert run("plan", str(RULES), "--archive", str(tmp_path / "missing.pgsql")).returncode == 2
    assert run("plan", str(RULES)).returncode == 2
