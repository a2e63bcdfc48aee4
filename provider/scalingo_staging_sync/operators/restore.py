"""PgRestoreOperator: thin adapter over :mod:`scalingo_staging_sync.restore`.

One operator for every restore phase (``section``):

* ``pre-data`` / ``data`` / ``post-data`` / ``pre-data+data`` / ``all``: restore that part of the
  dump. A section that includes pre-data prepares the target (fresh scratch ``<db>__incoming`` in
  swap mode, wipe of the role's objects in place); later sections go into the same database.
* ``promote``: make the verified copy live (swap: rename scratch into place, keep/drop
  ``<db>__previous``; in_place: mark verified, scale the app back up).
* ``cleanup``: teardown; drops a leftover scratch database and wipes unverified in-place data, and
  scales the app back after maintenance. Use it with ``.as_teardown()``.

XCom: ``{"database", "mode", "section", "tables": {"schema.table": {"rows", "bytes"}}, "excluded",
"warnings", "duration_s", ...}``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from scalingo_staging_sync.hooks.postgres import DEFAULT_STAGING_CONN_ID, pg_target_from_connection

RESTORE_SECTIONS = ("pre-data", "data", "post-data", "pre-data+data", "all")
SECTIONS = (*RESTORE_SECTIONS, "promote", "cleanup")


def _scaler(scalingo_conn_id: str):
    from scalingo_staging_sync.hooks.scalingo import ScalingoHook  # lazy: written alongside

    return ScalingoHook(scalingo_conn_id=scalingo_conn_id)


def promote_staging(
    postgres_conn_id: str = DEFAULT_STAGING_CONN_ID,
    *,
    database: str | None = None,
    mode: str = "auto",
    keep_previous: bool = True,
    terminate_sessions: bool = True,
    scalingo_conn_id: str | None = None,
) -> dict:
    """Task callable: promote the verified restore (see :func:`scalingo_staging_sync.restore.targets.promote`)."""
    from scalingo_staging_sync.restore import targets

    target = pg_target_from_connection(postgres_conn_id, database=database)
    resolved = targets.resolve_mode(target, mode)
    scaler = _scaler(scalingo_conn_id) if scalingo_conn_id else None
    started = time.monotonic()
    out = targets.promote(
        target, resolved, keep_previous=keep_previous, terminate=terminate_sessions, scaler=scaler
    )
    return {"section": "promote", **out, "duration_s": round(time.monotonic() - started, 3)}


def cleanup_staging(
    postgres_conn_id: str = DEFAULT_STAGING_CONN_ID,
    *,
    database: str | None = None,
    mode: str = "auto",
    verified: bool | None = None,
    scalingo_conn_id: str | None = None,
) -> dict:
    """Teardown callable: no scratch database, no unverified in-place data, app scaled back."""
    from scalingo_staging_sync.restore import targets

    target = pg_target_from_connection(postgres_conn_id, database=database)
    scaler = _scaler(scalingo_conn_id) if scalingo_conn_id else None
    started = time.monotonic()
    out = targets.cleanup(target, mode, verified=verified, scaler=scaler)
    return {
        "section": "cleanup",
        "database": target.dbname,
        "mode": mode,
        **out,
        "duration_s": round(time.monotonic() - started, 3),
    }


def _names(value: Any, field: str) -> list[str]:
    """A rendered table-name list; a bare string (one name, or an unrendered template) is an error."""
    if value is None:
        return []
    if isinstance(value, str):
        raise ValueError(
            f"PgRestoreOperator.{field} must be a list of table names, got the string {value!r} "
            "(with a Jinja template, set render_template_as_native_obj=True on the DAG)"
        )
    return [str(v) for v in value]


class PgRestoreOperator(BaseOperator):
    """Restore a PostgreSQL dump into the staging database, by phase, failing closed.

    :param dump_path: the dump (custom ``.pgsql``, tar, directory, or plain SQL) (templated).
    :param section: ``pre-data``, ``data``, ``post-data``, ``pre-data+data``, ``all`` (default),
        ``promote`` or ``cleanup``.
    :param postgres_conn_id: postgres connection of the staging database (default ``staging_db``;
        its ``schema`` field is the database).
    :param database: overrides the connection's database (templated).
    :param mode: ``auto`` (default: ``swap`` when the role may CREATEDB and owns the database, else
        ``in_place``), ``swap`` or ``in_place``.
    :param jobs: pg_restore ``--jobs`` (default: CPU count).
    :param exclude_tables: tables whose data is not restored (schema kept); exact names,
        ``schema.table`` or ``table`` (= ``public``); FK constraints pointing at them are skipped and logged.
    :param exclude_data: tables whose data this section skips (e.g. loaded masked by the anonymizer).
    :param only_data: restore only these tables' data.
    :param pg_bin_dir: PostgreSQL client bin directory (else ``$SCALINGO_STAGING_SYNC_PG_BIN``, else PATH).
    :param keep_previous: swap: keep the replaced database as ``<db>__previous`` (promote).
    :param terminate_sessions: promote: end sessions on the live database before renaming it.
    :param maintenance: in_place: scale ``target_app`` to 0 while unmasked data is present.
    :param target_app: Scalingo app of the staging database (maintenance).
    :param scalingo_conn_id: Scalingo connection for maintenance (default ``scalingo_default``).
    :param verify: archive check before touching the target: ``quick`` (default), ``full``, ``none``.
    :param mask_on_load: data section only: run the load with the masking key, for tables whose
        masking triggers ``AnonymizeTableOperator(step="prepare")`` installed (shared data load).
    :param verified: cleanup: True keeps in-place data, False wipes it, None reads the state table.
    """

    template_fields: Sequence[str] = (
        "dump_path",
        "database",
        "exclude_tables",
        "exclude_data",
        "only_data",
        "target_app",
        "mode",
        "maintenance",
        "keep_previous",
        "jobs",
    )
    ui_color = "#d6eaf8"

    def __init__(
        self,
        *,
        dump_path: str | None = None,
        section: str = "all",
        postgres_conn_id: str = DEFAULT_STAGING_CONN_ID,
        database: str | None = None,
        mode: str = "auto",
        jobs: int | None = None,
        exclude_tables: Sequence[str] | None = None,
        exclude_data: Sequence[str] | None = None,
        only_data: Sequence[str] | None = None,
        pg_bin_dir: str | None = None,
        keep_previous: bool = True,
        terminate_sessions: bool = True,
        maintenance: bool = False,
        target_app: str | None = None,
        scalingo_conn_id: str = "scalingo_default",
        verify: str = "quick",
        verified: bool | None = None,
        count_rows: bool = True,
        mask_on_load: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.mask_on_load = mask_on_load
        if section not in SECTIONS:
            raise ValueError(
                f"PgRestoreOperator: unknown section {section!r}; use one of {', '.join(SECTIONS)}"
            )
        if section in RESTORE_SECTIONS and not dump_path:
            raise ValueError(f"PgRestoreOperator(section={section!r}) needs dump_path")
        if maintenance and not target_app:
            raise ValueError(
                "PgRestoreOperator(maintenance=True) needs target_app (the staging Scalingo app)"
            )
        self.dump_path = dump_path
        self.section = section
        self.postgres_conn_id = postgres_conn_id
        self.database = database
        self.mode = mode
        self.jobs = jobs
        # kept as given: they may be Jinja templates, rendered (natively) before execute()
        self.exclude_tables = exclude_tables
        self.exclude_data = exclude_data
        self.only_data = only_data
        self.pg_bin_dir = pg_bin_dir
        self.keep_previous = keep_previous
        self.terminate_sessions = terminate_sessions
        self.maintenance = maintenance
        self.target_app = target_app
        self.scalingo_conn_id = scalingo_conn_id
        self.verify = verify
        self.verified = verified
        self.count_rows = count_rows

    def _with_masking_key(self, target):
        """Sessions of this data load carry the masking key (through PGOPTIONS, never a command line):
        the masking triggers installed by ``AnonymizeTableOperator(step="prepare")`` read it. The load
        replaces the data of the tables it loads (TRUNCATE first), so a retry never duplicates rows."""
        from psycopg import sql

        from scalingo_staging_sync.anonymize.salt import derive_key, get_salt, target_with_key
        from scalingo_staging_sync.restore import targets
        from scalingo_staging_sync.restore.pgtools import find_pg_tools
        from scalingo_staging_sync.restore.toc import read_toc

        into = targets.restore_database(target, targets.resolve_mode(target, self.mode))
        names = {
            (e.schema, e.tag)
            for e in read_toc(self.dump_path, find_pg_tools(self.pg_bin_dir))
            if e.desc == "TABLE DATA" and e.schema
        }
        with into.connect(autocommit=True) as conn:
            existing = [
                (schema, name)
                for schema, name in conn.execute(
                    "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE c.relkind IN ('r', 'p')"
                ).fetchall()
                if (schema, name) in names
            ]
            if existing:
                conn.execute(
                    sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(sql.Identifier(*t) for t in existing))
                )
        return target_with_key(target, derive_key(get_salt()))

    def execute(self, context: Any) -> dict:
        maintenance_conn = self.scalingo_conn_id if self.maintenance else None
        if self.section == "promote":
            result = promote_staging(
                self.postgres_conn_id,
                database=self.database,
                mode=self.mode,
                keep_previous=self.keep_previous,
                terminate_sessions=self.terminate_sessions,
                scalingo_conn_id=maintenance_conn,
            )
            self.log.info("promoted: %s", result)
            return result
        if self.section == "cleanup":
            result = cleanup_staging(
                self.postgres_conn_id,
                database=self.database,
                mode=self.mode,
                verified=self.verified,
                scalingo_conn_id=maintenance_conn,
            )
            self.log.info("cleanup: %s", result)
            return result
        from scalingo_staging_sync.restore.api import restore

        target = pg_target_from_connection(self.postgres_conn_id, database=self.database)
        if self.mask_on_load:
            if self.section != "data":
                raise ValueError("PgRestoreOperator(mask_on_load=True) only applies to section='data'")
            target = self._with_masking_key(target)
        scaler = _scaler(self.scalingo_conn_id) if self.maintenance else None
        result = restore(
            self.dump_path,
            target,
            section=self.section,
            mode=self.mode,
            jobs=self.jobs,
            exclude_tables=_names(self.exclude_tables, "exclude_tables"),
            exclude_data=_names(self.exclude_data, "exclude_data"),
            only_data=_names(self.only_data, "only_data") if self.only_data is not None else None,
            pg_bin_dir=self.pg_bin_dir,
            verify=self.verify,
            scaler=scaler,
            app=self.target_app if self.maintenance else None,
            count_rows=self.count_rows,
        )
        self.log.info(
            "restored section %s into %s (%s mode) in %.1f s: %d tables, %d warnings, excluded %s",
            self.section,
            result["database"],
            result["mode"],
            result["duration_s"],
            len(result["tables"]),
            len(result["warnings"]),
            result["excluded"] or "none",
        )
        return result
