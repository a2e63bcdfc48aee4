"""`make demo`: the reference DAG, end to end, on embedded defaults.

Starts an embedded PostgreSQL 16 "production" holding Chinook (customers and employees with names,
emails, phones, addresses), serves its ``pg_dump -Fc`` as a Scalingo backup through the fake Scalingo
API, starts an embedded staging PostgreSQL, runs ``airflow dags test scalingo_staging_sync``, prints a
short report, and stops everything it started. ``--standalone`` (``make airflow``) starts
``airflow standalone`` on the same set-up instead, to try the trigger form in a browser.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scalingo_staging_sync.testing.sandbox import (
    STAGING_DB,
    airflow_env,
    find_dags_folder,
    merged_environ,
    start_sandbox,
)

DAG_ID = "scalingo_staging_sync"
SAMPLE_SQL = (
    "SELECT customer_id, first_name, last_name, email, phone FROM customer ORDER BY customer_id LIMIT 3"
)


def _airflow(args: list[str], env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    exe = shutil.which("airflow", path=env.get("PATH")) or str(Path(sys.executable).parent / "airflow")
    return subprocess.run([exe, *args], env=env, **kwargs)


def _print_rows(title: str, rows: list[tuple]) -> None:
    print(f"  {title}")
    for row in rows:
        print("    " + " | ".join("NULL" if v is None else str(v) for v in row))


def _restored_tables(box) -> list[tuple[str, int]]:
    from psycopg import sql

    out = []
    with box.staging.connect(STAGING_DB) as conn:
        names = conn.execute("SELECT schemaname, relname FROM pg_stat_user_tables ORDER BY 1, 2").fetchall()
        for schema, name in names:
            count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, name)))
            out.append((f"{schema}.{name}", count.fetchone()[0]))
    return out


def _report(box, audit_dir: Path, before: list[tuple], started: float, airflow_log: Path) -> int:
    reports = sorted(audit_dir.glob("*.json"), key=lambda p: p.stat().st_mtime)
    if not reports:
        print(f"no audit report was written: see {airflow_log}")
        return 1
    report = json.loads(reports[-1].read_text())
    ok = report.get("result") == "success"
    print()
    print("=" * 78)
    print(
        f"scalingo-staging-sync demo: {report.get('result')}"
        + ("" if ok else f", stopped at {report.get('stopped_at')}")
    )
    print("=" * 78)
    if ok:
        restored = _restored_tables(box)
        print(f"tables restored: {len(restored)}, rows: {sum(n for _, n in restored)}")
    tables = report.get("tables") or []
    print(
        f"tables anonymized: {len(tables)}, rows anonymized: {sum(int(t.get('rows') or 0) for t in tables)}"
    )
    for t in tables:
        verification = t.get("verification") or {}
        proof = "verified" if verification.get("passed") else "NOT verified"
        print(
            f"  {t.get('table'):<20} {t.get('rows') or 0:>6} rows  {t.get('mode') or '':<8} {proof}, columns: {', '.join(t.get('masked_columns') or [])}"
        )
    pii = report.get("pii_scan") or {}
    if pii:
        counts = pii.get("counts") or {}
        verdict = "passed" if pii.get("passed") else "FAILED"
        print(
            f"PII scan: {verdict} ({pii.get('tables_scanned')} tables, {pii.get('columns_scanned')} columns): "
            f"{counts.get('masked', 0)} masked, {counts.get('allowed', 0)} allowed, {counts.get('unmasked', 0)} unmasked"
        )
    print("time per phase:")
    for phase in report.get("phases") or []:
        if phase.get("duration_s") is not None:
            print(f"  {phase['task_id']:<22} {phase['duration_s']:6.2f} s  {phase.get('state')}")
    print(f"audit report: {reports[-1]} (and .txt)")
    print(f"Airflow log: {airflow_log}")
    if ok:
        after = box.staging.execute(SAMPLE_SQL, STAGING_DB)
        print("three customers, before (production) and after (staging):")
        _print_rows("before:", before)
        _print_rows("after: ", after)
    print(f"total wall time: {time.monotonic() - started:.1f} s")
    return 0 if ok else 1


def run_demo(keep: bool = False) -> int:
    started = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="sss-demo-"))
    print(f"starting embedded PostgreSQL 16 (production, Chinook) and staging, fake Scalingo API in {base}")
    box = start_sandbox(base / "sandbox")
    airflow_log = Path(tempfile.gettempdir()) / f"scalingo-staging-sync-demo-{os.getpid()}.log"
    try:
        env = merged_environ(airflow_env(base / "airflow", find_dags_folder()), box.env)
        before = box.prod.execute(SAMPLE_SQL, box.source_db)
        print("initialising the Airflow metadata database (SQLite)...")
        _airflow(["db", "migrate"], env, check=True, capture_output=True)
        conf = json.dumps({"confirm_target": box.target_app, "target_app": box.target_app})
        print(f"airflow dags test {DAG_ID} -c '{conf}'  (output in {airflow_log})")
        with open(airflow_log, "w") as log_file:
            proc = _airflow(
                ["dags", "test", DAG_ID, "-c", conf], env, stdout=log_file, stderr=subprocess.STDOUT
            )
        code = _report(box, Path(box.env["SCALINGO_STAGING_SYNC_AUDIT_DIR"]), before, started, airflow_log)
        if code or proc.returncode:
            print("the run failed; last lines of the Airflow output:")
            print("".join(airflow_log.read_text(errors="replace").splitlines(keepends=True)[-30:]))
        return code or proc.returncode
    finally:
        if keep:
            print(f"kept {base}")
        else:
            box.stop()
            shutil.rmtree(base, ignore_errors=True)


def run_standalone() -> int:
    base = Path(tempfile.mkdtemp(prefix="sss-airflow-"))
    box = start_sandbox(base / "sandbox")
    env = merged_environ(airflow_env(base / "airflow", find_dags_folder()), box.env)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    exe = shutil.which("airflow", path=env["PATH"])
    proc = subprocess.Popen([exe, "standalone"], env=env, start_new_session=True)

    def _stop(signum, frame):  # SIGTERM (e.g. `timeout`, `kill`): stop Airflow and the servers too
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    print(f"airflow standalone starting on http://localhost:8080 (AIRFLOW_HOME={base / 'airflow'})")
    print(f"  trigger {DAG_ID} with target_app={box.target_app!r} and confirm_target={box.target_app!r}")
    print(f"  user admin, password in {base / 'airflow' / 'simple_auth_manager_passwords.json.generated'}")
    print("  Ctrl-C stops Airflow, the embedded databases and the fake Scalingo API")
    try:
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except Exception:
            pass
        box.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--standalone", action="store_true", help="start `airflow standalone` instead")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories for inspection")
    args = parser.parse_args(argv)
    return run_standalone() if args.standalone else run_demo(keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
