"""Where a restore goes, and how it is made live or undone.

Two modes (``auto`` picks the safer one the role allows):

* ``swap`` (the role may CREATEDB and owns the live database, or it does not exist yet): restore into
  a scratch database ``<db>__incoming``; :func:`promote` ends connections, renames the live database
  to ``<db>__previous`` (kept or dropped) and the scratch into place. Live staging is never touched
  before promotion, so a failed run leaves it as it was.
* ``in_place`` (Scalingo Shared Resources: ALL on the database, CREATE on ``public``, no CREATEDB):
  what the role owns in the target is dropped, the dump is restored into it; until
  :func:`mark_verified` (called by :func:`promote`) a failure wipes the restored objects again
  (fail closed: an empty staging beats one with production PII). A small state table
  ``_scalingo_staging_sync.restore_state`` in the target records "unmasked data present" and the
  app formation saved by maintenance mode, so a teardown (:func:`cleanup`) or the next run can
  finish the job after a crash.

Crash safety and proof (issue 11):

* :func:`promote` (swap) records its steps as a marker on the scratch database (``COMMENT ON DATABASE``,
  a shared catalog readable from any database: ``{"state": "promoting", ...}``) and renames live ->
  ``__previous`` and scratch -> live in **one transaction**, so a kill leaves either the old or the new
  state. States left by a crash of an older version (live renamed aside, scratch not yet in place) are
  completed (scratch marked verified) or reverted (``__previous`` renamed back); ``__previous`` is
  dropped only while a live database exists, so the last copy of staging is never dropped.
* :func:`cleanup` reconnects with retries and backoff (tenacity), then *proves* its result: the
  scratch database is gone (swap) or the restored tables are wiped (in_place). When it cannot, it
  raises :class:`CleanupNotProvenError`, whose message says staging may hold unmasked data and what to
  run. Reading the state table never turns a connection error into "no state".
* :func:`recover_leftovers` (called by the safety gate before anything else) finds what an earlier,
  interrupted run left (in-place state "unmasked", a scratch database, a half-done promote) and
  finishes the job; with ``dry_run=True`` it only reports what it would do.
* ``python -m scalingo_staging_sync.restore.targets recover`` does the same from a shell, with the
  libpq environment (``PGHOST``, ``PGPORT``, ``PGUSER``, ``PGPASSWORD``, ``PGDATABASE``).
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
import tenacity
from psycopg import sql

from scalingo_staging_sync.pgconn import PgTarget
from scalingo_staging_sync.restore.errors import TargetError

log = logging.getLogger(__name__)

MODES = ("auto", "swap", "in_place")
SCRATCH_SUFFIX = "__incoming"
PREVIOUS_SUFFIX = "__previous"
STATE_SCHEMA = "_scalingo_staging_sync"
STATE_TABLE = "restore_state"
_SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast", STATE_SCHEMA)
MAINTENANCE_DBS = ("postgres", "template1")

_OWNED_RELATIONS_SQL = (
    "SELECT n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.relkind IN ('r','p','v','m','f','S') AND pg_has_role(current_user, c.relowner, 'USAGE')"
    " AND n.nspname <> ALL(%s) AND n.nspname NOT LIKE 'pg\\_%%' AND NOT c.relispartition"
    " AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass"
    "                 AND d.objid = c.oid AND d.deptype = 'e')"
    # views first; sequences last: an identity column's sequence cannot be dropped before its table (an
    # internal dependency, which CASCADE does not follow), it goes with the table
    " ORDER BY c.relkind IN ('v','m') DESC, c.relkind = 'S'"
)
_OWNED_ROUTINES_SQL = (
    "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
    " WHERE pg_has_role(current_user, p.proowner, 'USAGE') AND n.nspname <> ALL(%s)"
    " AND n.nspname NOT LIKE 'pg\\_%%'"
    " AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass"
    "                 AND d.objid = p.oid AND d.deptype = 'e')"
)
_OWNED_TYPES_SQL = (
    "SELECT n.nspname, t.typname, t.typtype FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace"
    " LEFT JOIN pg_class c ON c.oid = t.typrelid"
    " WHERE t.typtype IN ('e','d','r','m','c') AND (t.typrelid = 0 OR c.relkind = 'c')"
    " AND pg_has_role(current_user, t.typowner, 'USAGE') AND n.nspname <> ALL(%s)"
    " AND n.nspname NOT LIKE 'pg\\_%%'"
    " AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass"
    "                 AND d.objid = t.oid AND d.deptype = 'e')"
)

#: schema objects the role owns that no table, routine or type drop takes with it, and that a restore
#: creates again (``already exists`` otherwise): (kind for DROP, catalog, name, namespace, owner column)
_OWNED_SCHEMA_OBJECTS = (
    ("TEXT SEARCH CONFIGURATION", "pg_ts_config", "cfgname", "cfgnamespace", "cfgowner"),
    ("TEXT SEARCH DICTIONARY", "pg_ts_dict", "dictname", "dictnamespace", "dictowner"),
    ("COLLATION", "pg_collation", "collname", "collnamespace", "collowner"),
    ("CONVERSION", "pg_conversion", "conname", "connamespace", "conowner"),
)
_OWNED_SCHEMA_OBJECT_SQL = (
    "SELECT DISTINCT n.nspname, o.{name} FROM {catalog} o JOIN pg_namespace n ON n.oid = o.{namespace}"
    " WHERE pg_has_role(current_user, o.{owner}, 'USAGE') AND n.nspname <> ALL(%s)"
    " AND n.nspname NOT LIKE 'pg\\_%%' AND n.nspname <> 'information_schema'"
    " AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = {catalog_literal}::regclass"
    "                 AND d.objid = o.oid AND d.deptype = 'e')"
)


MARKER_PREFIX = "scalingo_staging_sync:"


class StagingUnreachableError(TargetError):
    """The staging server refused or dropped the connection (limit reached, restarting, network)."""

    retryable = True


class CleanupNotProvenError(TargetError):
    """Cleanup could not prove that staging holds no unmasked data. The message says what to run.

    Retryable: the server may come back, and a new attempt (or the next run's gate) finishes the job."""

    retryable = True


@dataclass(frozen=True)
class ConnectRetry:
    """How long teardowns keep reconnecting: ``attempts`` tries, exponential backoff from
    ``base_delay_s`` up to ``max_delay_s`` between them (defaults: ~2.5 minutes in all)."""

    attempts: int = 8
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0


DEFAULT_RETRY = ConnectRetry()


def _is_connection_error(exc: BaseException) -> bool:
    return isinstance(exc, (StagingUnreachableError, psycopg.OperationalError, psycopg.InterfaceError))


def _retrying(
    retry: ConnectRetry | None, on_retry: Callable[[int, BaseException], None] | None = None
) -> tenacity.Retrying:
    policy = retry or DEFAULT_RETRY

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "staging unreachable (attempt %d/%d), retrying in %.1f s: %s",
            state.attempt_number,
            policy.attempts,
            state.next_action.sleep if state.next_action else 0.0,
            _short(exc),
        )
        if on_retry is not None and exc is not None:
            on_retry(state.attempt_number, exc)

    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(_is_connection_error),
        stop=tenacity.stop_after_attempt(max(1, int(policy.attempts))),
        wait=tenacity.wait_exponential(multiplier=policy.base_delay_s, max=policy.max_delay_s),
        before_sleep=before_sleep,
        reraise=True,
    )


def _short(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    text = str(exc).strip()
    last = text.splitlines()[-1] if text else ""
    return f"{type(exc).__name__}: {last}" if last else type(exc).__name__


class Scaler(Protocol):
    """What maintenance mode needs from ScalingoHook (duck-typed: the core never imports airflow)."""

    def get_formation(self, app: str) -> list[dict]: ...

    def scale(self, app: str, containers: list[dict], wait: bool = True) -> Any: ...


def _check_name(name: str) -> str:
    if len(name.encode("utf-8")) > 63:
        raise TargetError(
            f"database name {name!r} is longer than PostgreSQL's 63-byte limit; "
            "use a shorter staging database name (the scratch copy adds '__incoming')"
        )
    return name


def scratch_name(dbname: str) -> str:
    return _check_name(dbname + SCRATCH_SUFFIX)


def previous_name(dbname: str) -> str:
    return _check_name(dbname + PREVIOUS_SUFFIX)


# --------------------------------------------------------------------------------------------
# connections and privileges
# --------------------------------------------------------------------------------------------


@contextmanager
def admin_connection(target: PgTarget, avoid: tuple[str, ...] = ()) -> Iterator[psycopg.Connection]:
    """A connection to a database other than ``avoid`` (CREATE/DROP/ALTER DATABASE need one)."""
    errors = []
    candidates = [db for db in (*MAINTENANCE_DBS, target.dbname) if db not in avoid]
    for db in candidates:
        try:
            conn = target.with_dbname(db).connect(autocommit=True)
        except psycopg.OperationalError as exc:
            errors.append(f"{db}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else exc}")
            continue
        try:
            yield conn
        finally:
            conn.close()
        return
    raise StagingUnreachableError(
        f"cannot connect to any maintenance database on {target.host}:{target.port}: {'; '.join(errors)}"
    )


def database_exists(conn: psycopg.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def role_privileges(target: PgTarget) -> dict:
    """{"createdb", "superuser", "owns_target", "target_exists"} for the connection's role."""
    with admin_connection(target) as conn:
        row = conn.execute(
            "SELECT rolcreatedb, rolsuper FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        owner = conn.execute(
            "SELECT pg_has_role(current_user, datdba, 'USAGE') FROM pg_database WHERE datname = %s",
            (target.dbname,),
        ).fetchone()
    return {
        "createdb": bool(row and row[0]),
        "superuser": bool(row and row[1]),
        "target_exists": owner is not None,
        "owns_target": bool(owner and owner[0]),
    }


def resolve_mode(target: PgTarget, mode: str = "auto") -> str:
    """``swap`` or ``in_place``; ``auto`` picks swap only when the role can create and rename databases."""
    if mode not in MODES:
        raise ValueError(f"unknown restore mode {mode!r}: use one of {', '.join(MODES)}")
    if mode != "auto":
        return mode
    try:
        priv = role_privileges(target)
    except TargetError:
        return "in_place"
    swap_ok = priv["superuser"] or (priv["createdb"] and (priv["owns_target"] or not priv["target_exists"]))
    chosen = "swap" if swap_ok else "in_place"
    log.info("restore mode auto -> %s (role privileges: %s)", chosen, priv)
    return chosen


def restore_database(target: PgTarget, mode: str) -> PgTarget:
    """The database a restore of ``target`` writes into: the scratch copy (swap) or the target itself."""
    return target.with_dbname(scratch_name(target.dbname)) if mode == "swap" else target


def _terminate(conn: psycopg.Connection, dbname: str) -> int:
    rows = conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (dbname,),
    ).fetchall()
    return len(rows)


def _sessions(conn: psycopg.Connection, dbname: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (dbname,)
    ).fetchone()
    return int(row[0]) if row else 0


def _drop_database(conn: psycopg.Connection, name: str) -> None:
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# --------------------------------------------------------------------------------------------
# swap mode
# --------------------------------------------------------------------------------------------


def create_scratch(target: PgTarget, owner: str | None = None) -> PgTarget:
    """(Re)create ``<db>__incoming``, dropping a stale one left by a killed run. ``owner``: the run that
    creates it (``<dag id>/<run id>``), kept in its marker: :func:`promote` given another owner refuses it."""
    scratch = scratch_name(target.dbname)
    previous_name(target.dbname)  # fail early on over-long names
    with admin_connection(target, avoid=(scratch,)) as conn:
        if database_exists(conn, scratch):
            log.warning("dropping stale scratch database %s (left by an earlier, interrupted run)", scratch)
            _drop_database(conn, scratch)
        settings = conn.execute(
            "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database WHERE datname = %s",
            (target.dbname,),
        ).fetchone()
        create = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(scratch))
        if settings:
            enc, collate, ctype = settings
            try:
                conn.execute(
                    create
                    + sql.SQL(" ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
                        sql.Literal(enc), sql.Literal(collate), sql.Literal(ctype)
                    )
                )
            except psycopg.Error as exc:
                log.info(
                    "creating %s with the live database's locale failed (%s); using defaults", scratch, exc
                )
                conn.execute(create)
        else:
            conn.execute(create)
        marker = {"state": "unverified", "live": target.dbname, "at": time.time()}
        if owner:
            marker["owner"] = owner
        _set_marker(conn, scratch, marker)
    log.info("created scratch database %s", scratch)
    return target.with_dbname(scratch)


def drop_scratch(target: PgTarget) -> bool:
    scratch = scratch_name(target.dbname)
    with admin_connection(target, avoid=(scratch,)) as conn:
        if not database_exists(conn, scratch):
            return False
        _drop_database(conn, scratch)
    log.info("dropped scratch database %s", scratch)
    return True


def _marker(conn: psycopg.Connection, name: str) -> dict | None:
    """The step marker this module left on database ``name`` (its comment), or None."""
    row = conn.execute(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (name,)
    ).fetchone()
    text = row[0] if row else None
    if not text or not text.startswith(MARKER_PREFIX):
        return None
    try:
        data = json.loads(text[len(MARKER_PREFIX) :])
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _set_marker(conn: psycopg.Connection, name: str, data: dict | None) -> None:
    comment = sql.Literal(MARKER_PREFIX + json.dumps(data, sort_keys=True)) if data else sql.SQL("NULL")
    conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), comment))


def _rename(conn: psycopg.Connection, old: str, new: str) -> None:
    conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new)))


def swap_state(conn: psycopg.Connection, live: str) -> dict:
    """What exists of a swap of ``live``: ``{"live", "scratch", "previous"}`` (bools) and the scratch's
    ``marker`` (``{"state": "unverified"|"promoting", ...}`` or None)."""
    scratch, previous = scratch_name(live), previous_name(live)
    return {
        "live": database_exists(conn, live),
        "scratch": database_exists(conn, scratch),
        "previous": database_exists(conn, previous),
        "marker": _marker(conn, scratch) if database_exists(conn, scratch) else None,
    }


def plan_swap_recovery(live: str, state: dict) -> list[tuple[str, str]]:
    """The steps that finish an interrupted swap, as ``(action, description)``; empty when consistent.

    * scratch present, live present: the promotion did not happen -> drop the scratch (unverified, or
      verified but never made live: the run failed, staging keeps its data);
    * scratch marked ``promoting``, live missing: the swap was half done -> complete it (the scratch is
      verified); ``__previous`` is kept;
    * scratch unmarked, live missing: unverified data -> put ``__previous`` back (if any), drop the scratch;
    * no scratch, live missing, ``__previous`` present: put ``__previous`` back as live.
    ``__previous`` is never dropped here."""
    scratch, previous = scratch_name(live), previous_name(live)
    marker = state.get("marker") or {}
    steps: list[tuple[str, str]] = []
    if state["scratch"]:
        if state["live"]:
            steps.append(("drop_scratch", f"drop scratch database {scratch} (never promoted)"))
        elif marker.get("state") == "promoting":
            steps.append(
                ("complete_swap", f"complete the interrupted promote: rename {scratch} (verified) to {live}")
            )
        else:
            if state["previous"]:
                steps.append(("revert_swap", f"rename {previous} back to {live} (live database missing)"))
            steps.append(("drop_scratch", f"drop unverified scratch database {scratch}"))
    elif not state["live"] and state["previous"]:
        steps.append(("revert_swap", f"rename {previous} back to {live} (live database missing)"))
    return steps


def _apply_swap_step(conn: psycopg.Connection, live: str, action: str) -> None:
    scratch, previous = scratch_name(live), previous_name(live)
    if action == "drop_scratch":
        _drop_database(conn, scratch)
    elif action == "complete_swap":
        _terminate(conn, scratch)
        with conn.transaction():
            _rename(conn, scratch, live)
            _set_marker(conn, live, None)
    elif action == "revert_swap":
        _terminate(conn, previous)
        _rename(conn, previous, live)
    else:  # pragma: no cover - plan_swap_recovery only returns the three above
        raise ValueError(action)
    log.warning("swap recovery on %s: %s done", live, action)


def swap_databases(
    target: PgTarget,
    *,
    keep_previous: bool = True,
    terminate: bool = True,
    attempts: int = 10,
    step_hook: Callable[[str], None] | None = None,
    owner: str | None = None,
) -> dict:
    """Promote ``<db>__incoming``: end connections, rename live -> ``<db>__previous`` and scratch -> live
    in one transaction (a crash leaves the old or the new state, never half of it).

    Steps, recorded on the scratch database (:func:`swap_state`): a live database missing next to a
    ``__previous`` (a half-done promote of an older version) is put back first; ``__previous`` is
    dropped only while live exists; the scratch is marked ``promoting`` (verified); the renames commit
    together; ``__previous`` is dropped after when ``keep_previous`` is off. ``step_hook(step)`` is called
    after each step (``"marked"``, ``"renamed_live_aside"`` (inside the transaction), ``"swapped"``):
    tests kill the process there."""
    live, scratch, previous = target.dbname, scratch_name(target.dbname), previous_name(target.dbname)
    hook = step_hook or (lambda step: None)
    with admin_connection(target, avoid=(live, scratch, previous)) as conn:
        if not database_exists(conn, scratch):
            raise TargetError(
                f"nothing to promote: scratch database {scratch} does not exist (restore first)"
            )
        if not database_exists(conn, live) and database_exists(conn, previous):
            log.warning("live database %s missing next to %s: renaming it back first", live, previous)
            _apply_swap_step(conn, live, "revert_swap")
        live_existed = database_exists(conn, live)
        if live_existed and database_exists(conn, previous):
            _drop_database(conn, previous)  # live exists: __previous is not the last copy
        marker = {"state": "promoting", "live": live, "keep_previous": keep_previous, "at": time.time()}
        _set_marker(conn, scratch, marker)
        hook("marked")
        last_error: Exception | None = None
        for _ in range(max(1, attempts)):
            if live_existed:
                if terminate:
                    ended = _terminate(conn, live)
                    if ended:
                        log.info("ended %d session(s) on %s before the swap", ended, live)
                elif _sessions(conn, live):
                    raise TargetError(
                        f"database {live} is in use by {_sessions(conn, live)} session(s) and "
                        "terminate_sessions is off: cannot swap"
                    )
            _terminate(conn, scratch)
            try:
                with conn.transaction():
                    if live_existed:
                        _rename(conn, live, previous)
                        hook("renamed_live_aside")
                    _rename(conn, scratch, live)
                    # the run that promoted it: a retry of its promote finds the swap done (promote)
                    _set_marker(
                        conn,
                        live,
                        {"state": "promoted", "owner": owner, "at": time.time()} if owner else None,
                    )
                last_error = None
                break
            except psycopg.errors.ObjectInUse as exc:
                last_error = exc
                time.sleep(0.3)
            except psycopg.Error as exc:
                raise TargetError(
                    f"cannot swap {scratch} into {live} (nothing changed, {live} is as it was): {exc}"
                ) from exc
        if last_error is not None:
            raise TargetError(f"{live} stayed in use, could not swap it (nothing changed): {last_error}")
        hook("swapped")
        dropped_previous = False
        if live_existed and not keep_previous:
            _drop_database(conn, previous)  # the new live exists
            dropped_previous = True
    log.info(
        "promoted %s to %s%s", scratch, live, f" (previous copy kept as {previous})" if keep_previous else ""
    )
    return {
        "database": live,
        "previous": previous if live_existed and not dropped_previous else None,
        "replaced_existing": live_existed,
    }


# --------------------------------------------------------------------------------------------
# in_place mode: state, wipe
# --------------------------------------------------------------------------------------------


def _ensure_state_table(conn: psycopg.Connection) -> None:
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(STATE_SCHEMA)))
    conn.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {}.{} (id int PRIMARY KEY DEFAULT 1 CHECK (id = 1), status text NOT NULL,"
            " app text, formation jsonb, owner text, updated_at timestamptz NOT NULL DEFAULT now())"
        ).format(sql.Identifier(STATE_SCHEMA), sql.Identifier(STATE_TABLE))
    )
    # a state table of an earlier version has no owner column
    conn.execute(
        sql.SQL("ALTER TABLE {}.{} ADD COLUMN IF NOT EXISTS owner text").format(
            sql.Identifier(STATE_SCHEMA), sql.Identifier(STATE_TABLE)
        )
    )


def read_state(target: PgTarget) -> dict | None:
    """The in_place state row of ``target``: None only when the state table or its row is absent.

    A connection failure raises :class:`StagingUnreachableError`: "cannot read" is never "no state"."""
    try:
        with target.connect(autocommit=True) as conn:
            return _read_state(conn)
    except psycopg.OperationalError as exc:
        raise StagingUnreachableError(
            f"cannot read the restore state of {target.describe()}: {_short(exc)}"
        ) from exc


def _read_state(conn: psycopg.Connection) -> dict | None:
    exists = conn.execute("SELECT to_regclass(%s)", (f"{STATE_SCHEMA}.{STATE_TABLE}",)).fetchone()
    if not exists or exists[0] is None:
        return None
    row = conn.execute(  # to_jsonb(s): an earlier version's table has no owner column
        sql.SQL("SELECT status, app, formation, to_jsonb(s)->>'owner' FROM {}.{} AS s WHERE id = 1").format(
            sql.Identifier(STATE_SCHEMA), sql.Identifier(STATE_TABLE)
        )
    ).fetchone()
    if not row:
        return None
    return {"status": row[0], "app": row[1], "formation": row[2], "owner": row[3]}


def write_state(target: PgTarget, status: str, **fields: Any) -> None:
    with target.connect(autocommit=True) as conn:
        _ensure_state_table(conn)
        cols = ["status", *fields]
        values = [
            status,
            *(json.dumps(v) if k == "formation" and v is not None else v for k, v in fields.items()),
        ]
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.{} (id, {}) VALUES (1, {}) ON CONFLICT (id) DO UPDATE SET {}, updated_at = now()"
            ).format(
                sql.Identifier(STATE_SCHEMA),
                sql.Identifier(STATE_TABLE),
                sql.SQL(", ").join(map(sql.Identifier, cols)),
                sql.SQL(", ").join(sql.Placeholder() * len(cols)),
                sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in cols),
            ),
            values,
        )


def wipe_owned_objects(target: PgTarget) -> list[str]:
    """Drop what the connection's role owns in ``target`` (schemas, tables, views, sequences, routines,
    types, collations, text search configurations and dictionaries, conversions, large objects), never
    extension members nor the state schema. Returns what was dropped."""
    with target.connect(autocommit=True) as conn:
        dropped = wipe_owned_objects_on(conn)
    log.info("wiped %d object(s) owned by %s in %s", len(dropped), target.user or "the role", target.dbname)
    return dropped


def wipe_owned_objects_on(conn: psycopg.Connection) -> list[str]:
    """:func:`wipe_owned_objects` on an open connection (in autocommit, each drop commits; in a
    transaction, they all roll back with it: :mod:`scalingo_staging_sync.anonymize.rehearsal`)."""
    dropped: list[str] = []
    schemas = conn.execute(
        "SELECT nspname FROM pg_namespace n WHERE pg_has_role(current_user, nspowner, 'USAGE')"
        " AND nspname <> ALL(%s) AND nspname <> 'public' AND nspname NOT LIKE 'pg\\_%%'"
        " AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass"
        "                 AND d.objid = n.oid AND d.deptype = 'e')",
        (list(_SYSTEM_SCHEMAS),),
    ).fetchall()
    for (schema,) in schemas:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        dropped.append(f"schema {schema}")
    rels = conn.execute(_OWNED_RELATIONS_SQL, (list(_SYSTEM_SCHEMAS),)).fetchall()
    kinds = {
        "r": "TABLE",
        "p": "TABLE",
        "f": "FOREIGN TABLE",
        "v": "VIEW",
        "m": "MATERIALIZED VIEW",
        "S": "SEQUENCE",
    }
    for schema, name, kind in rels:
        conn.execute(
            sql.SQL("DROP {} IF EXISTS {}.{} CASCADE").format(
                sql.SQL(kinds[kind]), sql.Identifier(schema), sql.Identifier(name)
            )
        )
        dropped.append(f"{kinds[kind].lower()} {schema}.{name}")
    routines = conn.execute(_OWNED_ROUTINES_SQL, (list(_SYSTEM_SCHEMAS),)).fetchall()
    for (signature,) in routines:
        # regprocedure text is generated and quoted by the server itself.
        conn.execute(sql.SQL("DROP ROUTINE IF EXISTS {} CASCADE").format(sql.SQL(signature)))
        dropped.append(f"routine {signature}")
    types = conn.execute(_OWNED_TYPES_SQL, (list(_SYSTEM_SCHEMAS),)).fetchall()
    for schema, name, typtype in types:
        kind = "DOMAIN" if typtype == "d" else "TYPE"
        conn.execute(
            sql.SQL("DROP {} IF EXISTS {}.{} CASCADE").format(
                sql.SQL(kind), sql.Identifier(schema), sql.Identifier(name)
            )
        )
        dropped.append(f"{kind.lower()} {schema}.{name}")
    for kind, catalog, name, namespace, owner in _OWNED_SCHEMA_OBJECTS:
        query = sql.SQL(_OWNED_SCHEMA_OBJECT_SQL).format(
            name=sql.Identifier(name),
            catalog=sql.Identifier("pg_catalog", catalog),
            namespace=sql.Identifier(namespace),
            owner=sql.Identifier(owner),
            catalog_literal=sql.Literal(f"pg_catalog.{catalog}"),
        )
        for schema, obj in conn.execute(query, (list(_SYSTEM_SCHEMAS),)).fetchall():
            conn.execute(
                sql.SQL("DROP {} IF EXISTS {}.{} CASCADE").format(
                    sql.SQL(kind), sql.Identifier(schema), sql.Identifier(obj)
                )
            )
            dropped.append(f"{kind.lower()} {schema}.{obj}")
    los = conn.execute(
        "SELECT count(lo_unlink(oid)) FROM pg_largeobject_metadata WHERE pg_has_role(current_user, lomowner, 'USAGE')"
    ).fetchone()
    if los and los[0]:
        dropped.append(f"{los[0]} large objects")
    return dropped


def scale_down(target: PgTarget, scaler: Scaler, app: str) -> list[dict]:
    """Maintenance: remember the app's formation (in the state table) and scale every container to 0."""
    formation = [{"name": c["name"], "amount": int(c.get("amount") or 0)} for c in scaler.get_formation(app)]
    write_state(target, "unmasked", app=app, formation=formation)
    to_zero = [{"name": c["name"], "amount": 0} for c in formation if c["amount"] > 0]
    if to_zero:
        log.info("maintenance: scaling %s to 0 (%s) while unmasked data is in the database", app, formation)
        scaler.scale(app, to_zero, wait=True)
    return formation


def scale_back(target: PgTarget, scaler: Scaler | None, state: dict | None = None) -> list[dict]:
    """Maintenance: scale the app back to the formation saved by :func:`scale_down` (once)."""
    state = state if state is not None else read_state(target)
    if not state or not state.get("formation") or not state.get("app"):
        return []
    formation = state["formation"]
    if isinstance(formation, str):
        formation = json.loads(formation)
    if scaler is None:
        raise TargetError(
            f"the app {state['app']} was scaled down for maintenance and needs scaling back to {formation}, "
            "but no Scalingo connection was given"
        )
    back = [c for c in formation if c.get("amount", 0) > 0]
    if back:
        log.info("maintenance: scaling %s back to %s", state["app"], back)
        scaler.scale(state["app"], back, wait=True)
    write_state(target, state["status"], app=None, formation=None)
    return back


def prepare_in_place(
    target: PgTarget, *, scaler: Scaler | None = None, app: str | None = None, owner: str | None = None
) -> PgTarget:
    """Mark "unmasked data present" by ``owner`` (the run restoring, ``<dag id>/<run id>``; see
    :func:`other_runs_state`), optionally scale the app down, then clear the role's objects."""
    write_state(target, "unmasked", owner=owner)
    if scaler is not None and app:
        state = read_state(target)
        if state and state.get("formation"):
            log.info(
                "maintenance: %s already scaled down by an earlier run; keeping its saved formation", app
            )
        else:
            scale_down(target, scaler, app)
    wipe_owned_objects(target)
    return target


def other_runs_state(state: dict | None, owner: str | None) -> str | None:
    """The run that restored the in-place data of ``state`` when it is not ``owner``: a second run on the
    same staging database restored it again after ``owner`` did. None when either is unknown (a state
    of an earlier version, an operator used without a run) or they are the same run."""
    made_by = (state or {}).get("owner")
    return made_by if owner and made_by and made_by != owner else None


def mark_verified(target: PgTarget, owner: str | None = None) -> None:
    """In place: the data is masked and verified; cleanup will no longer wipe it. Refused when another
    run restored the data after ``owner`` (this run's verification does not cover that data)."""
    other = other_runs_state(read_state(target), owner)
    if other:
        raise TargetError(
            f"the in-place data of {target.dbname} was restored by run {other}, not by this run ({owner}): "
            "another run restored staging after this one, so this run's verification does not cover it. "
            "Nothing was marked verified; runs on one staging database go one at a time."
        )
    force_row_security_again(target)
    write_state(target, "verified")


# --------------------------------------------------------------------------------------------
# FORCE ROW LEVEL SECURITY, held back until promotion
# --------------------------------------------------------------------------------------------

HELD_RLS_TABLE = "held_force_row_security"
#: the tables masked in place by this restore, each marked in the transaction that masks it
#: (:func:`scalingo_staging_sync.anonymize.executor.run_in_place`): a retry never masks one twice
MASKED_TABLE = "masked_in_place"


def reset_masked_marks(target: PgTarget) -> None:
    """A fresh restore: an empty list of the tables masked in place (created in the state schema when
    missing; one step at a time, before any masking runs, so that parallel maskings never race to create
    it)."""
    ident = sql.Identifier(STATE_SCHEMA, MASKED_TABLE)
    with target.connect(autocommit=True) as conn, conn.transaction():
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(STATE_SCHEMA)))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (table_oid oid PRIMARY KEY, table_name text NOT NULL,"
                " rows bigint NOT NULL, proof bytea NOT NULL, masked_at timestamptz NOT NULL DEFAULT now())"
            ).format(ident)
        )
        conn.execute(sql.SQL("DELETE FROM {}").format(ident))


_FORCED_RLS_SQL = (
    "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.relkind IN ('r', 'p') AND c.relforcerowsecurity"
    " AND pg_has_role(current_user, c.relowner, 'USAGE') AND n.nspname <> ALL(%s) ORDER BY 1, 2"
)


def _held_rls_exists(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT to_regclass(%s)", (f"{STATE_SCHEMA}.{HELD_RLS_TABLE}",)).fetchone()
    return bool(row and row[0] is not None)


def hold_forced_row_security(target: PgTarget) -> list[str]:
    """``FORCE ROW LEVEL SECURITY`` subjects a table's owner to its policies. A role that is neither
    superuser nor BYPASSRLS restores as the owner of every table, so once post-data enables row-level
    security, the masking that runs after it, the PII scan, verification and the refresh of materialized
    views would read only the rows the policies show that session: none, or an error, when a policy
    reads an application setting (``current_setting('app.tenant_id')``). Called after pre-data: such
    tables are set ``NO FORCE`` (their owner reads every row) and listed in the state schema;
    :func:`force_row_security_again` (at promotion) forces them again. Returns the tables held."""
    held: list[str] = []
    with target.connect(autocommit=True) as conn:
        exempt = conn.execute(
            "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        if exempt and exempt[0]:
            return held
        rows = conn.execute(_FORCED_RLS_SQL, (list(_SYSTEM_SCHEMAS),)).fetchall()
        if not rows and not _held_rls_exists(conn):
            return held
        ident = sql.Identifier(STATE_SCHEMA, HELD_RLS_TABLE)
        with conn.transaction():
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(STATE_SCHEMA)))
            conn.execute(
                sql.SQL("CREATE TABLE IF NOT EXISTS {} (schema_name text NOT NULL, table_name text NOT NULL,"
                        " PRIMARY KEY (schema_name, table_name))").format(ident)
            )  # fmt: skip
            conn.execute(sql.SQL("DELETE FROM {}").format(ident))  # a fresh restore: its own list
            for schema, name in rows:
                conn.execute(
                    sql.SQL("ALTER TABLE {} NO FORCE ROW LEVEL SECURITY").format(sql.Identifier(schema, name))
                )
                conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(ident), (schema, name))
                held.append(f"{schema}.{name}")
    if held:
        log.info(
            "FORCE ROW LEVEL SECURITY held back until promotion on %d table(s), so that masking, the PII "
            "scan and verification read every row as their owner: %s", len(held), ", ".join(held),
        )  # fmt: skip
    return held


def force_row_security_again(target: PgTarget) -> list[str]:
    """``FORCE ROW LEVEL SECURITY`` again on the tables :func:`hold_forced_row_security` listed in
    ``target``, in one transaction that also drops the list and the list of tables masked in place (no
    masking runs after promotion); the state schema goes too when nothing else is in it (a scratch
    database). Returns the tables forced again."""
    forced: list[str] = []
    with target.connect(autocommit=True) as conn:
        schema = conn.execute("SELECT to_regnamespace(%s)", (STATE_SCHEMA,)).fetchone()
        if not schema or schema[0] is None:
            return forced
        with conn.transaction():
            conn.execute(
                sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(STATE_SCHEMA, MASKED_TABLE))
            )
            if _held_rls_exists(conn):
                ident = sql.Identifier(STATE_SCHEMA, HELD_RLS_TABLE)
                rows = conn.execute(
                    sql.SQL("SELECT schema_name, table_name FROM {} ORDER BY 1, 2").format(ident)
                )
                for schema_name, name in rows.fetchall():
                    table = sql.Identifier(schema_name, name)
                    if conn.execute("SELECT to_regclass(%s)", (table.as_string(conn),)).fetchone()[0] is None:
                        continue
                    conn.execute(sql.SQL("ALTER TABLE {} FORCE ROW LEVEL SECURITY").format(table))
                    forced.append(f"{schema_name}.{name}")
                conn.execute(sql.SQL("DROP TABLE {}").format(ident))
            left = conn.execute(
                "SELECT count(*) FROM pg_class WHERE relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = %s)",
                (STATE_SCHEMA,),
            ).fetchone()
            if not left[0]:
                conn.execute(sql.SQL("DROP SCHEMA {}").format(sql.Identifier(STATE_SCHEMA)))
    if forced:
        log.info("FORCE ROW LEVEL SECURITY applied again on %d table(s)", len(forced))
    return forced


# --------------------------------------------------------------------------------------------
# phases: prepare, promote, cleanup
# --------------------------------------------------------------------------------------------


def prepare(
    target: PgTarget,
    mode: str,
    *,
    scaler: Scaler | None = None,
    app: str | None = None,
    owner: str | None = None,
) -> PgTarget:
    """Get the database a fresh restore goes into; returns it (scratch for swap, target for in_place).
    ``owner``: the run restoring (see :func:`create_scratch`)."""
    if mode == "swap":
        return create_scratch(target, owner=owner)
    if mode == "in_place":
        return prepare_in_place(target, scaler=scaler, app=app, owner=owner)
    raise ValueError(f"prepare needs a resolved mode (swap or in_place), not {mode!r}")


def promote(
    target: PgTarget,
    mode: str = "auto",
    *,
    keep_previous: bool = True,
    terminate: bool = True,
    scaler: Scaler | None = None,
    step_hook: Callable[[str], None] | None = None,
    owner: str | None = None,
) -> dict:
    """Make a verified restore live. swap: rename scratch into place (crash-safe, see
    :func:`swap_databases`). in_place: mark verified and scale the app back up (maintenance).
    ``owner``: the run promoting; a scratch database another run created (its marker names another
    owner) is refused: that run replaced this one's verified copy."""
    if mode == "auto":
        with admin_connection(target) as conn:
            mode = "swap" if database_exists(conn, scratch_name(target.dbname)) else "in_place"
    if mode == "swap":
        with admin_connection(target, avoid=(scratch_name(target.dbname),)) as conn:
            scratch = database_exists(conn, scratch_name(target.dbname))
            made_by = (_marker(conn, scratch_name(target.dbname)) or {}).get("owner") if scratch else None
        if owner and made_by and made_by != owner:
            raise TargetError(
                f"the scratch database {scratch_name(target.dbname)} was created by run {made_by}, not by this "
                f"run ({owner}): another run replaced the copy this run verified. Nothing was promoted; runs "
                "on one staging database go one at a time."
            )
        if not scratch and owner:
            done = _swap_done_by(target, owner, keep_previous)
            if done is not None:  # this run's promote, retried after its swap committed
                return {"mode": "swap", **done}
        if scratch:  # a promotion retried after its swap finds none
            force_row_security_again(restore_database(target, "swap"))
        out = swap_databases(
            target, keep_previous=keep_previous, terminate=terminate, step_hook=step_hook, owner=owner
        )
        return {"mode": "swap", **out}
    state = read_state(target)
    mark_verified(target, owner)
    scaled = scale_back(target, scaler, {**(state or {}), "status": "verified"}) if state else []
    return {"mode": "in_place", "database": target.dbname, "previous": None, "scaled_back": scaled}


def _swap_done_by(target: PgTarget, owner: str, keep_previous: bool) -> dict | None:
    """When the live database is the one ``owner``'s promote swapped in (its marker says so), finish
    that promote (drop ``__previous`` unless kept) and return its result; None otherwise."""
    live, previous = target.dbname, previous_name(target.dbname)
    with admin_connection(target, avoid=(live, previous)) as conn:
        marker = _marker(conn, live) if database_exists(conn, live) else None
        if not marker or marker.get("state") != "promoted" or marker.get("owner") != owner:
            return None
        kept = database_exists(conn, previous)
        if kept and not keep_previous:
            _drop_database(conn, previous)
            kept = False
    log.info("%s: already promoted by this run (%s), a retry; finished", live, owner)
    return {
        "database": live,
        "previous": previous if kept else None,
        "replaced_existing": True,
        "retried": True,
    }


# --------------------------------------------------------------------------------------------
# finishing the job: cleanup (teardown) and leftovers (next run's gate), both proven
# --------------------------------------------------------------------------------------------

_DATA_LEFT_SQL = (
    "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    "        WHERE c.relkind IN ('r','p','m','S','f') AND pg_has_role(current_user, c.relowner, 'USAGE')"
    "        AND n.nspname <> ALL(%s) AND n.nspname NOT LIKE 'pg\\_%%'"
    "        AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass"
    "                        AND d.objid = c.oid AND d.deptype = 'e')),"
    " (SELECT count(*) FROM pg_largeobject_metadata WHERE pg_has_role(current_user, lomowner, 'USAGE'))"
)


def remaining_data(target: PgTarget) -> dict:
    """What the role still owns that can hold rows in ``target``: ``{"relations": n, "large_objects": n}``
    (tables, materialized views, sequences, foreign tables; extension members and the state schema
    excluded). Zero after a wipe."""
    with target.connect(autocommit=True) as conn:
        row = conn.execute(_DATA_LEFT_SQL, (list(_SYSTEM_SCHEMAS),)).fetchone()
    return {"relations": int(row[0]), "large_objects": int(row[1])}


def _finish(
    target: PgTarget,
    mode: str,
    *,
    verified: bool | None,
    dry_run: bool,
    memo: dict | None = None,
    owner: str | None = None,
) -> dict:
    """One attempt at leaving no unverified data behind, then the proof. Connection errors propagate
    (the caller retries, handing the same ``memo``); a result that cannot be proven raises
    :class:`CleanupNotProvenError`.

    The catalog proof (nothing owned by the role left) applies to a wipe made by this call (``memo``
    remembers one started by an earlier attempt): after an older wipe, the staging app, which shares
    the role on Scalingo, may rightly have created its own tables again.

    ``owner`` (the run cleaning up, ``<dag id>/<run id>``): a scratch database or in-place data that
    another run restored after it is that run's work in progress, left to its own cleanup (or, when
    that run died, to the next run's gate): dropping, wiping or marking it verified here would break
    that run, or let its unmasked data pass for verified."""
    memo = {} if memo is None else memo
    if mode not in MODES:
        raise ValueError(f"unknown restore mode {mode!r}: use one of {', '.join(MODES)}")
    live = target.dbname
    out: dict[str, Any] = {
        "mode": mode,
        "database": live,
        "dry_run": dry_run,
        "found": [],
        "actions": [],
        "dropped_scratch": False,
        "swap_recovery": [],
        "wiped": False,
        "state": None,
        "state_before": None,
        "formation_saved": None,
    }
    live_exists = True
    if mode in ("swap", "auto"):
        with admin_connection(target, avoid=(scratch_name(live), previous_name(live))) as conn:
            state = swap_state(conn, live)
            other = (state["marker"] or {}).get("owner")
            if owner and other and other != owner:
                out["found"].append(f"scratch database {scratch_name(live)} of run {other}: left to that run")
                steps = []
            else:
                steps = plan_swap_recovery(live, state)
            out["found"] += [text for _, text in steps]
            if not dry_run:
                for action, text in steps:
                    _apply_swap_step(conn, live, action)
                    out["swap_recovery"].append(text)
                    out["actions"].append(text)
                out["dropped_scratch"] = any(action == "drop_scratch" for action, _ in steps)
                after = swap_state(conn, live)
                if after["scratch"] and steps:
                    raise CleanupNotProvenError(f"{scratch_name(live)} still exists after dropping it")
                out["scratch_exists"] = after["scratch"]
                live_exists = after["live"]
            else:
                out["actions"] += ["would " + text for _, text in steps]
                live_exists = database_exists(conn, live)
    if mode == "in_place" or (mode == "auto" and live_exists):
        state = read_state(target)
        other = other_runs_state(state, owner)
        if other:
            out["found"].append(f"in-place data of {live} restored by run {other}: left to that run")
            state = None  # neither wiped, nor marked verified, nor scaled back here
        out["state_before"] = state["status"] if state else None
        if state and state.get("formation") and state.get("app"):
            out["formation_saved"] = {"app": state["app"], "formation": state["formation"]}
        if state is not None:
            if verified and state["status"] != "verified":
                if not dry_run:
                    mark_verified(target, owner)
                out["actions"].append(("would mark " if dry_run else "marked ") + f"{live} verified")
            elif not verified and state["status"] == "unmasked":
                what = f"wipe the restored, unverified (unmasked) data of {live} (in-place state 'unmasked')"
                out["found"].append(f"in-place state 'unmasked' in {live}")
                if dry_run:
                    out["actions"].append("would " + what)
                else:
                    log.warning("%s: wiping it", what)
                    memo["wipe_started"] = True
                    out["dropped"] = wipe_owned_objects(target)
                    write_state(target, "wiped")
                    out["wiped"] = True
                    out["actions"].append(what)
            if out["formation_saved"]:
                out["found"].append(f"app {state['app']} scaled down for maintenance")
        if not dry_run:
            after_state = read_state(target)
            out["state"] = after_state["status"] if after_state else None
            if after_state and after_state["status"] == "unmasked" and not other:
                raise CleanupNotProvenError(f"the state of {live} still says 'unmasked' after the wipe")
            if after_state and after_state["status"] == "wiped" and memo.get("wipe_started"):
                out["wiped"] = True
                left = remaining_data(target)
                out["remaining"] = left
                if left["relations"] or left["large_objects"]:
                    raise CleanupNotProvenError(
                        f"{live} still holds {left['relations']} relation(s) and {left['large_objects']} "
                        "large object(s) owned by the role after the wipe"
                    )
    if not dry_run:
        out["proven"] = True
    return out


def recovery_command(target: PgTarget, mode: str = "auto") -> str:
    """The shell command that finishes a cleanup by hand (the password is never written here)."""
    env = [f"PGHOST={shlex.quote(target.host)}", f"PGPORT={int(target.port)}"]
    if target.user:
        env.append(f"PGUSER={shlex.quote(target.user)}")
    env += [f"PGDATABASE={shlex.quote(target.dbname)}", "PGPASSWORD='<password of the staging connection>'"]
    return " ".join(env) + f" python -m scalingo_staging_sync.restore.targets recover --mode {mode}"


def _not_proven(target: PgTarget, mode: str, exc: BaseException) -> CleanupNotProvenError:
    what = {
        "swap": f"the scratch database {target.dbname}{SCRATCH_SUFFIX} is gone",
        "in_place": "the restored tables are wiped",
        "auto": f"the scratch database {target.dbname}{SCRATCH_SUFFIX} is gone and the restored tables are wiped",
    }[mode]
    return CleanupNotProvenError(
        f"staging may hold unmasked production data: cleanup of database {target.dbname!r} on "
        f"{target.host}:{target.port} ({mode} mode) could not prove that {what} ({_short(exc)}). "
        f"Run `{recovery_command(target, mode)}` once the server accepts connections, or trigger the DAG "
        "again: its safety gate finishes this cleanup before anything else."
    )


def cleanup(
    target: PgTarget,
    mode: str = "auto",
    *,
    verified: bool | None = None,
    scaler: Scaler | None = None,
    retry: ConnectRetry | None = None,
    on_retry: Callable[[int, BaseException], None] | None = None,
    owner: str | None = None,
) -> dict:
    """Teardown: leave no scratch database and no unmasked data behind, whatever happened, and prove it.
    ``owner``: the run cleaning up; what another run restored after it is left to that run (:func:`_finish`).

    Reconnects with retries and backoff (``retry``; ``on_retry(attempt, error)`` is called before each
    wait). swap (or auto): a scratch database is dropped, a half-done promote completed or reverted
    (:func:`plan_swap_recovery`), then the scratch is proven gone. in_place (or auto): when the state
    says unmasked data is present and ``verified`` is not True, the role's objects are wiped, then the
    state and the catalog are re-read to prove it. Then the app is scaled back (maintenance).

    Returns a JSON-able outcome for the audit: ``{"mode", "database", "proven": True, "attempts",
    "dropped_scratch", "swap_recovery", "wiped", "state", "remaining", "scaled_back", "actions",
    "duration_s"}``. Raises :class:`CleanupNotProvenError` (the message says staging may hold unmasked
    data, and what to run) when it cannot prove the result."""
    if mode not in MODES:  # before anything: an unknown mode is an argument to fix, not an unproven cleanup
        raise ValueError(f"unknown restore mode {mode!r}: use one of {', '.join(MODES)}")
    started = time.monotonic()
    attempts = 0
    memo: dict = {}
    try:
        for attempt in _retrying(retry, on_retry):
            with attempt:
                attempts += 1
                out = _finish(target, mode, verified=verified, dry_run=False, memo=memo, owner=owner)
    except Exception as exc:  # noqa: BLE001 - whatever it was, the result is not proven
        log.error("cleanup of %s NOT PROVEN after %d attempt(s): %s", target.describe(), attempts, exc)
        raise _not_proven(target, mode, exc) from exc
    out["attempts"] = attempts
    out["scaled_back"] = []
    if out["formation_saved"]:
        saved = {"status": out["state"] or "wiped", **out["formation_saved"]}
        try:
            out["scaled_back"] = scale_back(target, scaler, saved)
        except Exception as exc:  # the data part is proven; the app stays down: say so
            raise TargetError(
                f"cleanup proved {target.dbname} holds no unverified data, but scaling the app "
                f"{saved['app']} back to {saved['formation']} failed: {exc}; scale it back by hand "
                f"(scalingo --app {saved['app']} scale ...)",
                retryable=True,
            ) from exc
    out["duration_s"] = round(time.monotonic() - started, 3)
    log.info("cleanup of %s proven: %s", target.dbname, {k: out[k] for k in ("wiped", "dropped_scratch")})
    return out


def recover_leftovers(
    target: PgTarget,
    scaler: Scaler | None = None,
    *,
    mode: str = "auto",
    dry_run: bool = False,
    retry: ConnectRetry | None = ConnectRetry(attempts=3, base_delay_s=1.0, max_delay_s=5.0),
) -> dict:
    """Find what an earlier, interrupted run left and finish the job; called by the safety gate before
    anything else. A scratch database is dropped, a half-done promote completed or reverted, unverified
    in-place data wiped, an app scaled down for maintenance scaled back.

    ``dry_run``: only report (``found`` and ``actions`` say what a real run would do). Returns
    ``{"database", "dry_run", "found": [...], "actions": [...], "proven": bool|None, "scaled_back"}``;
    a connection failure (after ``retry``) raises :class:`StagingUnreachableError`, a result that cannot
    be proven :class:`CleanupNotProvenError`: never "nothing found"."""
    out: dict[str, Any] = {}
    memo: dict = {}
    if not dry_run:
        _refuse_a_scratch_in_use(target, retry)
    for attempt in _retrying(retry):
        with attempt:
            out = _finish(target, mode, verified=None, dry_run=dry_run, memo=memo)
    out["proven"] = None if dry_run else True
    out["scaled_back"] = []
    saved = out.get("formation_saved")
    if saved:
        if dry_run:
            out["actions"].append(f"would scale {saved['app']} back to {saved['formation']}")
        else:
            out["scaled_back"] = scale_back(target, scaler, {"status": out["state"] or "wiped", **saved})
            out["actions"].append(f"scaled {saved['app']} back to {out['scaled_back']}")
    if out["found"]:
        log.warning(
            "leftovers of an earlier run in %s: %s; %s",
            target.dbname,
            "; ".join(out["found"]),
            "; ".join(out["actions"]) or "nothing to do",
        )
    return {k: out[k] for k in ("database", "dry_run", "found", "actions", "proven", "scaled_back", "wiped")}


def _refuse_a_scratch_in_use(target: PgTarget, retry: ConnectRetry | None) -> None:
    """A scratch database with sessions open on it is another run's work in progress, not a leftover:
    dropping it would let that run load its tables into this run's database, without their masking
    triggers. Refused, naming it (one run at a time per staging database)."""
    scratch = scratch_name(target.dbname)
    for attempt in _retrying(retry):
        with attempt, admin_connection(target, avoid=(scratch,)) as conn:
            busy = _sessions(conn, scratch) if database_exists(conn, scratch) else 0
    if busy:
        raise TargetError(
            f"the scratch database {scratch} has {busy} open session(s): another run is restoring into "
            f"{target.dbname}. Runs on one staging database go one at a time: wait for that run to end "
            "(or stop it; its cleanup drops the scratch database), then start this one again."
        )


def find_leftovers(target: PgTarget) -> list[str]:
    """Read-only: what :func:`recover_leftovers` would finish (empty when there is nothing)."""
    return recover_leftovers(target, dry_run=True, retry=None)["found"]


# --------------------------------------------------------------------------------------------
# python -m scalingo_staging_sync.restore.targets recover
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Finish a cleanup by hand with the libpq environment (PGHOST, PGPORT, PGUSER, PGPASSWORD,
    PGDATABASE): what a :class:`CleanupNotProvenError` message tells you to run."""
    import argparse
    import os
    import sys

    parser = argparse.ArgumentParser(prog="python -m scalingo_staging_sync.restore.targets")
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser(
        "recover", help="drop a scratch database, wipe unverified in-place data, and prove it"
    )
    rec.add_argument("--mode", choices=MODES, default="auto")
    rec.add_argument("--dry-run", action="store_true", help="only say what would be done")
    args = parser.parse_args(argv)
    missing = [v for v in ("PGHOST", "PGDATABASE") if not os.environ.get(v)]
    if missing:
        parser.error(f"set {', '.join(missing)} (and PGPORT, PGUSER, PGPASSWORD) to the staging database")
    target = PgTarget(
        host=os.environ["PGHOST"],
        port=int(os.environ.get("PGPORT") or 5432),
        user=os.environ.get("PGUSER") or None,
        password=os.environ.get("PGPASSWORD") or None,
        dbname=os.environ["PGDATABASE"],
    )
    if args.dry_run:
        out = recover_leftovers(target, mode=args.mode, dry_run=True)
    else:
        out = cleanup(target, args.mode)
    json.dump(out, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through a subprocess in the tests
    raise SystemExit(main())
