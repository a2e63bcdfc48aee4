"""The restore lifecycle proves its result (issue 11), on real PostgreSQL 16/18:

* promote is crash-safe: a process killed between the two renames leaves staging intact, a half-done
  promote (older versions) is completed or reverted, and the last copy of staging is never dropped;
* cleanup reconnects (a role whose connection limit is 0 for a while) and proves the scratch database
  is gone / the restored tables are wiped; when it cannot, it says staging may hold unmasked data and
  what to run -- and that command works;
* leftovers of an interrupted run are found (dry run) and finished by the next run's gate.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from psycopg import sql
from restore_helpers import SCALINGO_ROLE, make_scalingo_db, unique_db

from scalingo_staging_sync.pgconn import PgTarget
from scalingo_staging_sync.restore import targets
from scalingo_staging_sync.restore.targets import ConnectRetry

PROVIDER = Path(targets.__file__).resolve().parents[2]
SWAP_ROLE = "sss_swap_owner"
FAST = ConnectRetry(attempts=6, base_delay_s=0.05, max_delay_s=0.2)


# ------------------------------------------------------------------------------------------- helpers


def swap_target(pg, dbname: str) -> PgTarget:
    """A database owned by a non-superuser role with CREATEDB (what swap mode needs)."""
    with pg.connect() as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (SWAP_ROLE,)).fetchone():
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB").format(sql.Identifier(SWAP_ROLE)))
    pg.create_database(dbname, owner=SWAP_ROLE)
    target = PgTarget(host=pg.host, port=pg.port, user=SWAP_ROLE, dbname=dbname)
    assert targets.resolve_mode(target, "auto") == "swap"
    return target


def put(target: PgTarget, label: str, db: str | None = None) -> None:
    t = target.with_dbname(db) if db else target
    with t.connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS staging_copy (label text)")
        conn.execute("TRUNCATE staging_copy")
        conn.execute("INSERT INTO staging_copy VALUES (%s)", (label,))


def label(pg, db: str) -> str | None:
    if not pg.database_exists(db):
        return None
    rows = pg.execute("SELECT label FROM staging_copy", db)
    return rows[0][0] if rows else None


def copies(pg, db: str) -> dict[str, str | None]:
    """The label held by live, scratch and previous (None when the database does not exist)."""
    return {
        "live": label(pg, db),
        "scratch": label(pg, f"{db}__incoming"),
        "previous": label(pg, f"{db}__previous"),
    }


def set_connection_limit(pg, role: str, limit: int) -> None:
    with pg.connect() as conn:
        conn.execute(sql.SQL("ALTER ROLE {} CONNECTION LIMIT {}").format(sql.Identifier(role), limit))


@contextmanager
def connections_refused(pg, role: str):
    """The server refuses ``role`` (connection limit 0) inside the block, and accepts it again after."""
    set_connection_limit(pg, role, 0)
    try:
        yield
    finally:
        set_connection_limit(pg, role, -1)


def new_scratch(target: PgTarget, text: str) -> None:
    targets.create_scratch(target)
    put(target, text, f"{target.dbname}__incoming")


def swap_with_scratch(pg, prefix: str, scratch: str) -> tuple[str, PgTarget]:
    """A fresh swap-mode database holding "old staging", and its scratch database holding ``scratch``."""
    db = unique_db(prefix)
    target = swap_target(pg, db)
    put(target, "old staging")
    new_scratch(target, scratch)
    return db, target


def run_python(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python ARGV`` with the provider on PYTHONPATH; ``env`` adds to the inherited environment."""
    full_env = {**os.environ, "PYTHONPATH": str(PROVIDER), **(env or {})}
    return subprocess.run([sys.executable, *argv], env=full_env, capture_output=True, text=True, timeout=120)


KILL_BETWEEN_RENAMES = """
import os, signal, sys
from scalingo_staging_sync.pgconn import PgTarget
from scalingo_staging_sync.restore import targets
t = PgTarget(host=sys.argv[1], port=int(sys.argv[2]), user=sys.argv[3], dbname=sys.argv[4])
def hook(step):
    print("step", step, flush=True)
    if step == "renamed_live_aside":
        os.kill(os.getpid(), signal.SIGKILL)
targets.promote(t, "swap", keep_previous=False, step_hook=hook)
print("not killed")
"""


# ---------------------------------------------------------------------------------- crash-safe promote


def test_promote_killed_between_the_renames_leaves_staging_intact(staging_pg):
    pg = staging_pg
    db, target = swap_with_scratch(pg, "swapkill", "new masked copy")

    proc = run_python("-c", KILL_BETWEEN_RENAMES, target.host, str(target.port), target.user, db)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    assert "step renamed_live_aside" in proc.stdout and "not killed" not in proc.stdout
    # the two renames were one transaction: the kill rolled the first back
    assert copies(pg, db) == {"live": "old staging", "scratch": "new masked copy", "previous": None}
    assert targets.find_leftovers(target) == [f"drop scratch database {db}__incoming (never promoted)"]

    out = targets.cleanup(target, "swap", retry=FAST)
    assert out["proven"] and out["dropped_scratch"] and out["scratch_exists"] is False
    json.dumps(out)  # the audit records it
    assert copies(pg, db) == {"live": "old staging", "scratch": None, "previous": None}

    # a new run promotes normally, and keeps the replaced copy
    new_scratch(target, "next run")
    targets.promote(target, "swap", keep_previous=True)
    assert copies(pg, db) == {"live": "next run", "scratch": None, "previous": "old staging"}


def _first_rename_only(pg, target: PgTarget, *, marked: bool) -> None:
    """The state a kill after promote's first rename left in older versions (renames not atomic):
    live renamed aside, scratch (marked verified by promote, or not) not yet in place."""
    db = target.dbname
    with target.with_dbname("postgres").connect() as conn:
        if marked:
            targets._set_marker(conn, f"{db}__incoming", {"state": "promoting", "live": db})
        targets._rename(conn, db, f"{db}__previous")
    assert copies(pg, db)["live"] is None


def test_half_done_promote_is_completed_by_cleanup_then_a_new_promote_loses_nothing(staging_pg16):
    pg = staging_pg16
    db, target = swap_with_scratch(pg, "swaphalf", "verified copy")
    _first_rename_only(pg, target, marked=True)
    assert copies(pg, db) == {"live": None, "scratch": "verified copy", "previous": "old staging"}

    out = targets.cleanup(target, "auto", retry=FAST)
    assert out["proven"] and out["swap_recovery"] == [
        f"complete the interrupted promote: rename {db}__incoming (verified) to {db}"
    ]
    assert copies(pg, db) == {"live": "verified copy", "scratch": None, "previous": "old staging"}

    new_scratch(target, "next run")
    targets.promote(target, "swap", keep_previous=False)
    assert copies(pg, db) == {"live": "next run", "scratch": None, "previous": None}


def test_promote_never_drops_the_last_copy(staging_pg18):
    """Without any cleanup in between: the next promote finds live missing and __previous present,
    puts __previous back first, and only then swaps."""
    pg = staging_pg18
    db, target = swap_with_scratch(pg, "swaplast", "verified copy")
    _first_rename_only(pg, target, marked=True)
    out = targets.promote(target, "swap", keep_previous=True)
    assert out["replaced_existing"] is True
    assert copies(pg, db) == {"live": "verified copy", "scratch": None, "previous": "old staging"}


def test_unverified_half_done_swap_is_reverted_and_dry_run_changes_nothing(staging_pg16):
    pg = staging_pg16
    db, target = swap_with_scratch(pg, "swaprevert", "UNMASKED rows")
    _first_rename_only(pg, target, marked=False)  # an older version's scratch carries no marker
    before = copies(pg, db)

    report = targets.recover_leftovers(target, dry_run=True)
    assert report["dry_run"] and report["proven"] is None
    assert report["actions"] == [
        f"would rename {db}__previous back to {db} (live database missing)",
        f"would drop unverified scratch database {db}__incoming",
    ]
    assert copies(pg, db) == before  # a dry run changes nothing

    done = targets.recover_leftovers(target)
    assert done["proven"] is True and len(done["actions"]) == 2
    assert copies(pg, db) == {"live": "old staging", "scratch": None, "previous": None}
    assert targets.find_leftovers(target) == []


def test_scratch_of_a_failed_run_is_a_leftover_and_promoted_scratch_is_not(staging_pg18):
    pg = staging_pg18
    db, target = swap_with_scratch(pg, "swapleft", "UNMASKED rows")
    assert targets.find_leftovers(target) == [f"drop scratch database {db}__incoming (never promoted)"]
    assert targets.recover_leftovers(target)["actions"] == [
        f"drop scratch database {db}__incoming (never promoted)"
    ]
    assert copies(pg, db) == {"live": "old staging", "scratch": None, "previous": None}
    new_scratch(target, "good")
    targets.promote(target, "swap")
    assert targets.find_leftovers(target) == []  # __previous is not a leftover


# ---------------------------------------------------------------------------- cleanup proves its result


def _unmasked_in_place(pg) -> tuple[str, PgTarget]:
    """A fresh in-place database (Scalingo's grants) holding restored, unmasked rows."""
    db = unique_db("scalingo")
    target = make_scalingo_db(pg, db)
    targets.write_state(target, "unmasked")
    with target.connect() as conn:
        conn.execute("CREATE TABLE customer (email text); INSERT INTO customer VALUES ('real@person.fr')")
        conn.execute("CREATE SCHEMA app_data; CREATE TABLE app_data.phones (phone text)")
    return db, target


def test_cleanup_reconnects_while_the_role_is_refused_then_proves_the_wipe(staging_pg):
    pg = staging_pg
    db, target = _unmasked_in_place(pg)
    errors: list[str] = []

    def on_retry(attempt: int, exc: BaseException) -> None:
        errors.append(str(exc))
        if attempt == 2:  # the server accepts the role again after two refusals
            set_connection_limit(pg, SCALINGO_ROLE, -1)

    with connections_refused(pg, SCALINGO_ROLE):
        with pytest.raises(targets.StagingUnreachableError):
            targets.read_state(target)  # "cannot read" is never "no state"
        out = targets.cleanup(target, "in_place", retry=FAST, on_retry=on_retry)
    assert len(errors) == 2 and all("too many connections" in e for e in errors)
    assert out["proven"] and out["attempts"] == 3 and out["wiped"]
    assert out["state"] == "wiped" and out["remaining"] == {"relations": 0, "large_objects": 0}
    assert pg.execute(
        "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog','information_schema',"
        " '_scalingo_staging_sync')",
        db,
    ) == [(0,)]
    json.dumps(out)


def test_swap_cleanup_reconnects_too(staging_pg16):
    pg = staging_pg16
    db, target = swap_with_scratch(pg, "swapretry", "UNMASKED rows")
    with connections_refused(pg, SWAP_ROLE):
        out = targets.cleanup(
            target,
            "swap",
            retry=FAST,
            on_retry=lambda n, e: n == 1 and set_connection_limit(pg, SWAP_ROLE, -1),
        )
    assert out["proven"] and out["attempts"] == 2 and out["dropped_scratch"]
    assert copies(pg, db) == {"live": "old staging", "scratch": None, "previous": None}


def test_cleanup_that_cannot_recover_says_staging_may_hold_unmasked_data_and_what_to_run(staging_pg18):
    pg = staging_pg18
    db, target = _unmasked_in_place(pg)
    with connections_refused(pg, SCALINGO_ROLE), pytest.raises(targets.CleanupNotProvenError) as err:
        targets.cleanup(target, "in_place", retry=ConnectRetry(attempts=2, base_delay_s=0.05))
    message = str(err.value)
    assert "staging may hold unmasked production data" in message
    assert f"database '{db}'" in message and "restored tables are wiped" in message
    assert "too many connections" in message
    assert err.value.retryable
    # the data is still there: nothing pretended
    assert pg.execute("SELECT count(*) FROM customer", db) == [(1,)]

    # ... and the command the message names does the job once the server accepts the role again
    command = message.split("Run `", 1)[1].split("`", 1)[0]
    words = shlex.split(command)
    env = dict(w.split("=", 1) for w in words if "=" in w and w.split("=", 1)[0].startswith("PG"))
    env.pop("PGPASSWORD")  # the embedded server trusts local connections
    argv = [w for w in words if not ("=" in w and w.split("=", 1)[0].startswith("PG"))]
    assert argv[:3] == ["python", "-m", "scalingo_staging_sync.restore.targets"]
    proc = run_python(*argv[1:], env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["proven"] and result["wiped"]
    assert targets.read_state(target)["status"] == "wiped"
    assert targets.remaining_data(target) == {"relations": 0, "large_objects": 0}


def test_verified_in_place_data_survives_cleanup_and_is_no_leftover(staging_pg16):
    pg = staging_pg16
    db, target = _unmasked_in_place(pg)
    targets.promote(target, "in_place")
    assert targets.find_leftovers(target) == []
    out = targets.cleanup(target, "auto", retry=FAST)
    assert out["proven"] and not out["wiped"] and out["state"] == "verified"
    assert pg.execute("SELECT count(*) FROM customer", db) == [(1,)]


def test_in_place_leftovers_are_reported_by_a_dry_run_and_wiped_by_the_gate(staging_pg):
    pg = staging_pg
    db, target = _unmasked_in_place(pg)

    report = targets.recover_leftovers(target, dry_run=True)
    assert report["found"] == [f"in-place state 'unmasked' in {db}"]
    assert report["actions"][0].startswith("would wipe the restored, unverified (unmasked) data")
    assert pg.execute("SELECT count(*) FROM customer", db) == [(1,)]
    assert targets.read_state(target)["status"] == "unmasked"

    done = targets.recover_leftovers(target)
    assert done["proven"] is True and done["wiped"] is True
    assert targets.read_state(target)["status"] == "wiped"
    assert targets.remaining_data(target) == {"relations": 0, "large_objects": 0}
    assert targets.find_leftovers(target) == []


class RecordingScaler:
    def __init__(self, formation):
        self.formation = formation
        self.calls: list[tuple[str, list]] = []

    def get_formation(self, app):
        return self.formation

    def scale(self, app, containers, wait=True):
        self.calls.append((app, containers))


def test_leftover_maintenance_is_scaled_back_after_the_wipe(staging_pg16):
    pg = staging_pg16
    db = unique_db("scalingo")
    target = make_scalingo_db(pg, db)
    scaler = RecordingScaler([{"name": "web", "amount": 2}, {"name": "worker", "amount": 0}])
    targets.prepare_in_place(target, scaler=scaler, app="shop-staging")
    with target.connect() as conn:
        conn.execute("CREATE TABLE customer (email text); INSERT INTO customer VALUES ('x@y.fr')")
    assert scaler.calls == [("shop-staging", [{"name": "web", "amount": 0}])]
    report = targets.recover_leftovers(target, dry_run=True)
    assert "app shop-staging scaled down for maintenance" in report["found"]
    assert any(a.startswith("would scale shop-staging back") for a in report["actions"])
    with pytest.raises(targets.TargetError, match="no Scalingo connection"):
        targets.recover_leftovers(target)  # wiped first, then refuses to forget the formation
    assert targets.remaining_data(target)["relations"] == 0
    done = targets.recover_leftovers(target, scaler)
    assert done["scaled_back"] == [{"name": "web", "amount": 2}]
    assert scaler.calls[-1] == ("shop-staging", [{"name": "web", "amount": 2}])
    assert targets.find_leftovers(target) == []


def test_tables_the_app_creates_after_a_wipe_are_not_a_false_alarm(staging_pg18):
    """On Scalingo the staging app shares the role: after a wipe it may recreate its own tables. Only a
    wipe made by this cleanup is proven against the catalog; later runs are not refused for them."""
    pg = staging_pg18
    db, target = _unmasked_in_place(pg)
    assert targets.cleanup(target, "in_place", retry=FAST)["wiped"]
    with target.connect() as conn:  # the app's migrations run again on the empty database
        conn.execute("CREATE TABLE schema_migrations (version text)")
    again = targets.cleanup(target, "auto", retry=FAST)
    assert again["proven"] and not again["wiped"] and again["state"] == "wiped"
    assert targets.find_leftovers(target) == []
    assert targets.recover_leftovers(target)["proven"] is True
    assert pg.execute("SELECT count(*) FROM schema_migrations", db) == [(0,)]


def test_recover_command_dry_run_reports_and_changes_nothing(staging_pg16):
    pg = staging_pg16
    db, target = swap_with_scratch(pg, "swapcli", "UNMASKED rows")
    env = {"PGHOST": target.host, "PGPORT": str(target.port), "PGUSER": target.user, "PGDATABASE": db}
    proc = run_python("-m", "scalingo_staging_sync.restore.targets", "recover", "--dry-run", env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["dry_run"] and report["actions"] == [
        f"would drop scratch database {db}__incoming (never promoted)"
    ]
    assert copies(pg, db)["scratch"] == "UNMASKED rows"
