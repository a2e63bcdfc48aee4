"""PgRestoreOperator: restore sections of a dump into the staging database (nothing else).

Promotion and cleanup are :class:`~scalingo_staging_sync.operators.promote.PromoteStagingOperator` and
:class:`~scalingo_staging_sync.operators.promote.StagingCleanupOperator`; the masked data load is
:class:`~scalingo_staging_sync.operators.masking.MaskedDataLoadOperator`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from scalingo_staging_sync.hooks.postgres import DEFAULT_STAGING_CONN_ID, pg_target_from_connection
from scalingo_staging_sync.operators._base import (
    as_bool,
    as_int,
    as_list,
    as_mapping,
    as_str,
    maps_sync_errors,
    run_owner,
)

RESTORE_SECTIONS = ("pre-data", "data", "post-data", "pre-data+data", "all")


def _scaler(scalingo_conn_id: str):
    from scalingo_staging_sync.hooks.scalingo import ScalingoHook

    return ScalingoHook(scalingo_conn_id=scalingo_conn_id)


class PgRestoreOperator(BaseOperator):
    """Restore a section of a PostgreSQL dump into the staging database, failing closed.

    :param dump_path: the dump, or the backup task's result (templated).
    :param section: ``pre-data``, ``data``, ``post-data``, ``pre-data+data`` or ``all`` (default). A
        section that includes pre-data prepares the target (fresh scratch ``<db>__incoming`` in swap
        mode, wipe of the role's objects in place); later sections go into the same database.
    :param postgres_conn_id: postgres connection of the staging database (its ``schema`` is the database).
    :param database: overrides the connection's database (templated).
    :param mode: ``auto`` (default), ``swap`` or ``in_place`` (templated).
    :param jobs: pg_restore ``--jobs`` (templated; default: CPU count).
    :param exclude_tables: tables whose data is not restored, schema kept (templated).
    :param exclude_data: tables whose data this section skips (templated).
    :param only_data: restore only these tables' data (templated).
    :param pg_bin_dir: PostgreSQL client bin directory (templated).
    :param maintenance: in_place: scale ``target_app`` to 0 while unmasked data is present (templated).
    :param target_app: Scalingo app of the staging database (maintenance; templated).
    :param scalingo_conn_id: Scalingo connection for maintenance.
    :param verify: archive check before touching the target: ``quick`` (default), ``full``, ``none``.
    :param plan: the archive plan (the plan task's ``archive_plan``; templated): its ``skip_dump_ids``
        (statistics, large objects unless kept, materialized view data, excluded tables with their
        partitions and children, FKs to them) are never restored, in any section.
    :param large_objects: without a plan: ``drop`` (default: large objects are not restored) or ``keep``
        (templated). With a plan the rules file decides; a different value here is refused.
    :param materialized_view_data: without a plan: True runs the archive's materialized view refresh
        (computed from the tables as restored, before any masking); default False leaves the views
        unpopulated (templated). Refused with a plan (it refreshes them after masking).

    XCom ``return_value``: ``{"database", "mode", "section", "tables": {"schema.table": {"rows",
    "bytes"}}, "excluded", "warnings", "duration_s", ...}``.
    """

    template_fields: Sequence[str] = (
        "dump_path",
        "database",
        "mode",
        "jobs",
        "exclude_tables",
        "exclude_data",
        "only_data",
        "pg_bin_dir",
        "maintenance",
        "target_app",
        "plan",
        "large_objects",
        "materialized_view_data",
    )
    ui_color = "#d6eaf8"

    def __init__(
        self,
        *,
        dump_path: Any,
        section: str = "all",
        postgres_conn_id: str = DEFAULT_STAGING_CONN_ID,
        database: str | None = None,
        mode: str = "auto",
        jobs: Any = None,
        exclude_tables: Any = None,
        exclude_data: Any = None,
        only_data: Any = None,
        pg_bin_dir: str | None = None,
        maintenance: Any = False,
        target_app: str | None = None,
        scalingo_conn_id: str = "scalingo_default",
        verify: str = "quick",
        count_rows: bool = True,
        plan: Any = None,
        large_objects: Any = None,
        materialized_view_data: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if section not in RESTORE_SECTIONS:
            raise ValueError(
                f"PgRestoreOperator: unknown section {section!r}; use one of {', '.join(RESTORE_SECTIONS)} "
                "(promote and cleanup are PromoteStagingOperator and StagingCleanupOperator)"
            )
        self.dump_path = dump_path
        self.section = section
        self.postgres_conn_id = postgres_conn_id
        self.database = database
        self.mode = mode
        self.jobs = jobs
        self.exclude_tables = exclude_tables
        self.exclude_data = exclude_data
        self.only_data = only_data
        self.pg_bin_dir = pg_bin_dir
        self.maintenance = maintenance
        self.target_app = target_app
        self.scalingo_conn_id = scalingo_conn_id
        self.verify = verify
        self.count_rows = count_rows
        self.plan = plan
        self.large_objects = large_objects
        self.materialized_view_data = materialized_view_data

    def copy_filter(self):
        """The data section's per-table COPY filter (subclasses: the stream masking engine)."""
        return None

    def restore_target(self):
        """The connection target of this restore (subclasses add session settings)."""
        return pg_target_from_connection(self.postgres_conn_id, database=as_str(self.database))

    @maps_sync_errors
    def execute(self, context: Any) -> dict:
        from scalingo_staging_sync.operators._dump import local_dump
        from scalingo_staging_sync.restore.api import restore

        maintenance = as_bool(self.maintenance, "maintenance")
        target_app = as_str(self.target_app)
        if maintenance and not target_app:
            raise ValueError(
                "PgRestoreOperator(maintenance=True) needs target_app (the staging Scalingo app)"
            )
        result = restore(
            str(local_dump(self.dump_path)),
            self.restore_target(),
            section=self.section,
            mode=as_str(self.mode, default="auto"),
            jobs=as_int(self.jobs, "jobs"),
            exclude_tables=[str(v) for v in as_list(self.exclude_tables, "exclude_tables")],
            exclude_data=[str(v) for v in as_list(self.exclude_data, "exclude_data")],
            only_data=None
            if self.only_data is None
            else [str(v) for v in as_list(self.only_data, "only_data")],
            pg_bin_dir=as_str(self.pg_bin_dir),
            verify=self.verify,
            scaler=_scaler(self.scalingo_conn_id) if maintenance else None,
            app=target_app if maintenance else None,
            count_rows=self.count_rows,
            plan=as_mapping(self.plan, "plan"),
            large_objects=as_str(self.large_objects),
            materialized_view_data=None
            if as_str(self.materialized_view_data) is None
            else as_bool(self.materialized_view_data, "materialized_view_data"),
            copy_filter=self.copy_filter(),
            owner=run_owner(context),
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
        if result.get("skipped"):
            self.log.info(
                "left out of this section: %d TOC entries (each with its reason in the result's skipped)",
                len(result["skipped"]),
            )
        return result
