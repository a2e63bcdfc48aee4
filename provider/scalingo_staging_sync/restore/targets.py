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
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import psycopg
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
    " ORDER BY c.relkind IN ('v','m') DESC"
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
    raise TargetError(f"cannot connect to any maintenance database on {target.host}: {'; '.join(errors)}")


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


def create_scratch(target: PgTarget) -> PgTarget:
    """(Re)create ``<db>__incoming``, dropping a stale one left by a killed run."""
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


def swap_databases(
    target: PgTarget, *, keep_previous: bool = True, terminate: bool = True, attempts: int = 10
) -> dict:
    """Promote ``<db>__incoming``: end connections, rename live -> ``<db>__previous``, scratch -> live."""
    live, scratch, previous = target.dbname, scratch_name(target.dbname), previous_name(target.dbname)
    ident = sql.Identifier
    with admin_connection(target, avoid=(live, scratch, previous)) as conn:
        if not database_exists(conn, scratch):
            raise TargetError(
                f"nothing to promote: scratch database {scratch} does not exist (restore first)"
            )
        if database_exists(conn, previous):
            _drop_database(conn, previous)
        live_existed = database_exists(conn, live)
        if live_existed:
            last_error: Exception | None = None
            for _ in range(attempts):
                if terminate:
                    ended = _terminate(conn, live)
                    if ended:
                        log.info("ended %d session(s) on %s before the swap", ended, live)
                elif _sessions(conn, live):
                    raise TargetError(
                        f"database {live} is in use by {_sessions(conn, live)} session(s) and "
                        "terminate_sessions is off: cannot swap"
                    )
                try:
                    conn.execute(
                        sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident(live), ident(previous))
                    )
                    last_error = None
                    break
                except psycopg.errors.ObjectInUse as exc:
                    last_error = exc
                    time.sleep(0.3)
                except psycopg.Error as exc:
                    raise TargetError(f"cannot rename {live} aside: {exc}") from exc
            if last_error is not None:
                raise TargetError(f"{live} stayed in use, could not rename it aside: {last_error}")
        try:
            _terminate(conn, scratch)
            conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident(scratch), ident(live)))
        except psycopg.Error as exc:
            if live_existed:
                conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident(previous), ident(live)))
            raise TargetError(f"cannot rename {scratch} to {live} (live database restored): {exc}") from exc
        dropped_previous = False
        if live_existed and not keep_previous:
            _drop_database(conn, previous)
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
            " app text, formation jsonb, updated_at timestamptz NOT NULL DEFAULT now())"
        ).format(sql.Identifier(STATE_SCHEMA), sql.Identifier(STATE_TABLE))
    )


def read_state(target: PgTarget) -> dict | None:
    """The in_place state row of ``target`` (None when absent or unreadable)."""
    try:
        with target.connect(autocommit=True) as conn:
            exists = conn.execute("SELECT to_regclass(%s)", (f"{STATE_SCHEMA}.{STATE_TABLE}",)).fetchone()
            if not exists or exists[0] is None:
                return None
            row = conn.execute(
                sql.SQL("SELECT status, app, formation FROM {}.{} WHERE id = 1").format(
                    sql.Identifier(STATE_SCHEMA), sql.Identifier(STATE_TABLE)
                )
            ).fetchone()
    except psycopg.OperationalError:
        return None
    if not row:
        return None
    return {"status": row[0], "app": row[1], "formation": row[2]}


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
    types, large objects), never extension members nor the state schema. Returns what was dropped."""
    dropped: list[str] = []
    with target.connect(autocommit=True) as conn:
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
        los = conn.execute(
            "SELECT count(lo_unlink(oid)) FROM pg_largeobject_metadata WHERE pg_has_role(current_user, lomowner, 'USAGE')"
        ).fetchone()
        if los and los[0]:
            dropped.append(f"{los[0]} large objects")
    log.info("wiped %d object(s) owned by %s in %s", len(dropped), target.user or "the role", target.dbname)
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


def prepare_in_place(target: PgTarget, *, scaler: Scaler | None = None, app: str | None = None) -> PgTarget:
    """Mark "unmasked data present", optionally scale the app down, then clear the role's objects."""
    if scaler is not None and app:
        state = read_state(target)
        if state and state.get("formation"):
            log.info(
                "maintenance: %s already scaled down by an earlier run; keeping its saved formation", app
            )
            write_state(target, "unmasked")
        else:
            scale_down(target, scaler, app)
    else:
        write_state(target, "unmasked")
    wipe_owned_objects(target)
    return target


def mark_verified(target: PgTarget) -> None:
    """In place: the data is masked and verified; cleanup will no longer wipe it."""
    write_state(target, "verified")


# --------------------------------------------------------------------------------------------
# phases: prepare, promote, cleanup
# --------------------------------------------------------------------------------------------


def prepare(target: PgTarget, mode: str, *, scaler: Scaler | None = None, app: str | None = None) -> PgTarget:
    """Get the database a fresh restore goes into; returns it (scratch for swap, target for in_place)."""
    if mode == "swap":
        return create_scratch(target)
    if mode == "in_place":
        return prepare_in_place(target, scaler=scaler, app=app)
    raise ValueError(f"prepare needs a resolved mode (swap or in_place), not {mode!r}")


def promote(
    target: PgTarget,
    mode: str = "auto",
    *,
    keep_previous: bool = True,
    terminate: bool = True,
    scaler: Scaler | None = None,
) -> dict:
    """Make a verified restore live. swap: rename scratch into place. in_place: mark verified and
    scale the app back up (maintenance)."""
    if mode == "auto":
        with admin_connection(target) as conn:
            mode = "swap" if database_exists(conn, scratch_name(target.dbname)) else "in_place"
    if mode == "swap":
        out = swap_databases(target, keep_previous=keep_previous, terminate=terminate)
        return {"mode": "swap", **out}
    state = read_state(target)
    mark_verified(target)
    scaled = scale_back(target, scaler, {**(state or {}), "status": "verified"}) if state else []
    return {"mode": "in_place", "database": target.dbname, "previous": None, "scaled_back": scaled}


def cleanup(
    target: PgTarget,
    mode: str = "auto",
    *,
    verified: bool | None = None,
    scaler: Scaler | None = None,
) -> dict:
    """Teardown: leave no scratch database and no unmasked data behind, whatever happened.

    swap (or auto): drop ``<db>__incoming`` if it still exists (a promoted run has none).
    in_place (or auto): when the state table says unmasked data is present and ``verified`` is not
    True, wipe the role's objects; then scale the app back if maintenance scaled it down.
    """
    out: dict[str, Any] = {"dropped_scratch": False, "wiped": False, "scaled_back": []}
    errors: list[str] = []
    if mode in ("swap", "auto"):
        try:
            out["dropped_scratch"] = drop_scratch(target)
        except (TargetError, psycopg.Error) as exc:
            (errors if mode == "swap" else []).append(f"dropping the scratch database: {exc}")
            log.warning("cleanup: could not check/drop the scratch database: %s", exc)
    if mode in ("in_place", "auto"):
        state = read_state(target)
        if state is not None:
            if verified:
                if state["status"] != "verified":
                    mark_verified(target)
                state["status"] = "verified"
            elif state["status"] == "unmasked":
                log.warning("cleanup: %s still holds unverified (unmasked) data: wiping it", target.dbname)
                out["dropped"] = wipe_owned_objects(target)
                write_state(target, "wiped")
                state["status"] = "wiped"
                out["wiped"] = True
            try:
                out["scaled_back"] = scale_back(target, scaler, state)
            except Exception as exc:  # noqa: BLE001 - reported below, after the wipe happened
                errors.append(f"scaling the app back: {exc}")
    if errors:
        raise TargetError("cleanup incomplete: " + "; ".join(errors))
    return out
