"""The masking steps around one shared data load (anonymize layer).

    prepare = PrepareMaskingOperator.partial(task_id=..., dump_path=..., database=...).expand(plan=plan)
    load = MaskedDataLoadOperator(task_id=..., dump_path=..., database=..., mode=...)   # one pg_restore --jobs
    finish = FinishMaskingOperator.partial(task_id=..., database=...).expand(prepared=prepare.output)

``prepare`` takes the residual-value proof from the archive and installs the masking trigger of each
``on_load`` table; the load restores every table's data in one ``pg_restore --jobs`` with the masking
key in its sessions (rows written once, already masked); ``finish`` drops the trigger and counts the
rows, or runs the UPDATE of an ``in_place`` table. Each prepare result carries its plan item, so
``finish`` needs no other task's XCom.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseOperator

from scalingo_staging_sync.hooks.postgres import DEFAULT_STAGING_CONN_ID, pg_target_from_connection
from scalingo_staging_sync.operators._base import as_float, as_int, as_mapping, as_str, maps_sync_errors
from scalingo_staging_sync.operators.restore import PgRestoreOperator

_TEMPLATED = ("database", "retry_attempts", "retry_base_delay_s")


def check_plan_item(item: Any) -> dict[str, Any]:
    item = as_mapping(item, "plan") or {}
    missing = [k for k in ("table", "schema", "name", "mode") if k not in item]
    if missing:
        raise ValueError(
            f"plan item has no {missing}: {sorted(item)} (pass an item of the plan task's result)"
        )
    return item


class _MaskingStep(BaseOperator):
    ui_color = "#f5d76e"

    def __init__(
        self,
        *,
        postgres_conn_id: str = DEFAULT_STAGING_CONN_ID,
        database: str | None = None,
        retry_attempts: Any = 3,
        retry_base_delay_s: Any = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.postgres_conn_id = postgres_conn_id
        self.database = database
        self.retry_attempts = retry_attempts
        self.retry_base_delay_s = retry_base_delay_s

    def _target(self):
        return pg_target_from_connection(self.postgres_conn_id, database=as_str(self.database))

    def _retry(self):
        from scalingo_staging_sync.anonymize.executor import RetryPolicy

        return RetryPolicy(
            attempts=as_int(self.retry_attempts, "retry_attempts", default=3),
            base_delay_s=as_float(self.retry_base_delay_s, "retry_base_delay_s", default=1.0),
        )


class PrepareMaskingOperator(_MaskingStep):
    """Before the shared data load: proof from the archive + masking trigger of one ``on_load`` table.

    :param plan: one plan item (map with ``.expand(plan=...)``; not templated: it holds reviewed SQL).
    :param dump_path: the archive, or the backup task's result (templated).
    :param pg_bin_dir: PostgreSQL client bin directory (templated).
    :param postgres_conn_id: / :param database: the restored database (templated).
    :param sample_rows: rows sampled from the archive for the residual-value proof.

    XCom ``return_value``: ``{"table", "mode", "step", "masked_columns", "proof", "duration_s", "plan"}``
    (``step`` is ``"nothing to prepare"`` for an ``in_place`` item); ``plan`` is the item itself, for
    :class:`FinishMaskingOperator`.
    """

    template_fields: Sequence[str] = ("dump_path", "pg_bin_dir", *_TEMPLATED)

    def __init__(
        self,
        *,
        plan: Mapping[str, Any],
        dump_path: Any,
        pg_bin_dir: str | None = None,
        sample_rows: int = 200,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.pg_bin_dir = pg_bin_dir
        self.dump_path = dump_path
        self.sample_rows = sample_rows

    @maps_sync_errors
    def execute(self, context: Any) -> dict[str, Any]:
        from scalingo_staging_sync.anonymize import executor
        from scalingo_staging_sync.anonymize.salt import get_salt
        from scalingo_staging_sync.operators._dump import local_dump
        from scalingo_staging_sync.restore.pgtools import find_pg_tools

        item = check_plan_item(self.plan)
        if item["mode"] != "on_load":
            self.log.info("%s is masked in place after the data load: nothing to prepare", item["table"])
            return {"table": item["table"], "mode": item["mode"], "step": "nothing to prepare", "plan": item}
        result = executor.prepare_on_load(
            item,
            self._target(),
            get_salt(),
            str(local_dump(self.dump_path)),
            tools=find_pg_tools(as_str(self.pg_bin_dir)),
            retry=self._retry(),
            sample_rows=int(self.sample_rows),
        )
        return {**result, "plan": item}


class MaskedDataLoadOperator(PgRestoreOperator):
    """The shared data load: every table's data in one ``pg_restore --jobs``, sessions carrying the
    masking key (through ``PGOPTIONS``, never a command line) so the triggers that
    :class:`PrepareMaskingOperator` installed mask rows as COPY writes them. The tables it loads are
    truncated first, so a retry never duplicates rows. Arguments: those of
    :class:`~scalingo_staging_sync.operators.restore.PgRestoreOperator` (``section`` is ``data``).

    :param masking_engine: ``auto`` (default), ``stream`` or ``trigger`` (templated). ``stream``
        masks a table's COPY text on the worker with DuckDB (the ``[stream]`` extra) before it
        reaches PostgreSQL, with the same output as the trigger, which is dropped only inside the
        transaction that loads the table and created again, disabled, before its commit; tables it
        cannot mask keep their trigger (:mod:`scalingo_staging_sync.anonymize.stream`). ``auto``: ``stream`` when DuckDB is
        installed, else ``trigger``. ``trigger``: the triggers mask every row.

    XCom ``return_value``: the restore result (see ``PgRestoreOperator``), with
    ``masked_on_worker``: the tables the stream engine masked.
    """

    template_fields: Sequence[str] = (*PgRestoreOperator.template_fields, "masking_engine")

    def __init__(self, *, masking_engine: Any = "auto", **kwargs: Any) -> None:
        kwargs.setdefault("section", "data")
        if kwargs["section"] != "data":
            raise ValueError("MaskedDataLoadOperator only loads section='data'")
        super().__init__(**kwargs)
        self.masking_engine = masking_engine

    def copy_filter(self):
        from scalingo_staging_sync.anonymize.stream import StreamMasking

        return StreamMasking(as_str(self.masking_engine, default="auto") or "auto")

    def restore_target(self):
        from psycopg import sql

        from scalingo_staging_sync.anonymize.salt import derive_key, get_salt, target_with_key
        from scalingo_staging_sync.operators._dump import local_dump
        from scalingo_staging_sync.restore import targets
        from scalingo_staging_sync.restore.pgtools import find_pg_tools
        from scalingo_staging_sync.restore.toc import read_toc

        target = super().restore_target()
        into = targets.restore_database(
            target, targets.resolve_mode(target, as_str(self.mode, default="auto"))
        )
        names = {
            (e.schema, e.tag)
            for e in read_toc(str(local_dump(self.dump_path)), find_pg_tools(as_str(self.pg_bin_dir)))
            if e.desc == "TABLE DATA" and e.schema
        }
        plan = as_mapping(self.plan, "plan") if self.plan else None
        with into.connect(autocommit=True) as conn:
            if plan:
                from scalingo_staging_sync.anonymize.executor import (
                    AnonymizationError,
                    missing_masking_triggers,
                )

                missing = missing_masking_triggers(conn, plan.get("items") or [])
                if missing:
                    raise AnonymizationError(
                        f"the masking trigger of {', '.join(missing)} is not in {into.dbname}: its rows would "
                        "load unmasked. Another run may have replaced the database after this run's "
                        "prepare_masking (two runs on one staging), or prepare_masking did not run for "
                        "it. Nothing was loaded; start a new run (one at a time per staging database).",
                        retryable=False,
                    )
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


class FinishMaskingOperator(_MaskingStep):
    """After the shared data load: drop the trigger and count the rows (``on_load``), or mask the
    table with one UPDATE (``in_place``: conditional rules, inline queries, custom strategies).

    :param prepared: one :class:`PrepareMaskingOperator` result (map with
        ``.expand(prepared=prepare.output)``); it carries the plan item.
    :param postgres_conn_id: / :param database: the restored database (templated).
    :param email_domain: reserved domain for custom strategies (templated).
    :param parallel_connections: at most this many tables masked at once on the database (templated).
    :param statement_timeout_s: statement timeout of the in-place UPDATE (templated).

    XCom ``return_value``: ``{"table", "mode", "rows", "duration_s", "masked_columns", "proof"}``.
    """

    template_fields: Sequence[str] = (
        *_TEMPLATED,
        "email_domain",
        "parallel_connections",
        "statement_timeout_s",
    )

    def __init__(
        self,
        *,
        prepared: Mapping[str, Any],
        email_domain: str = "example.com",
        parallel_connections: Any = None,
        statement_timeout_s: Any = None,
        sample_rows: int = 200,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.prepared = prepared
        self.email_domain = email_domain
        self.parallel_connections = parallel_connections
        self.statement_timeout_s = statement_timeout_s
        self.sample_rows = sample_rows

    @maps_sync_errors
    def execute(self, context: Any) -> dict[str, Any]:
        from scalingo_staging_sync.anonymize import executor
        from scalingo_staging_sync.anonymize.salt import get_salt
        from scalingo_staging_sync.slots import connection_slot

        prepared = as_mapping(self.prepared, "prepared") or {}
        item = check_plan_item(prepared.get("plan"))
        target = self._target()
        with connection_slot(target, as_int(self.parallel_connections, "parallel_connections", default=0)):
            if item["mode"] == "on_load":
                if prepared.get("step") != "prepared" or prepared.get("table") != item["table"]:
                    raise ValueError(
                        f"{item['table']}: the masking trigger was not installed (prepare result {prepared.get('step')!r}): "
                        "refusing to report it as masked"
                    )
                return executor.finish_on_load(item, target, prepared, retry=self._retry())
            timeout = as_float(self.statement_timeout_s, "statement_timeout_s")
            return executor.run_table_plan(
                item,
                target,
                get_salt(),
                dump_path=None,
                retry=self._retry(),
                statement_timeout_s=timeout or None,
                email_domain=as_str(self.email_domain, default="example.com"),
                sample_rows=int(self.sample_rows),
            )


class FinalizeMaskedDataOperator(BaseOperator):
    """After the last masking step and post-data, before the PII scan and the verification: refresh the
    materialized views from the masked tables (their archived data is never restored), ``ANALYZE`` so
    ``pg_stats`` only describes masked data, and clear the statistics of tables left empty
    (:func:`scalingo_staging_sync.anonymize.postload.finalize_masked_data`).

    :param postgres_conn_id: / :param database: the restored database (templated).
    :param masked_columns: the plan's masked columns (templated): the materialized-view columns that
        only carry them are returned as ``masked_view_columns``, for the PII scan.
    :param conditional: ``{table: condition}`` of conditional rules (the plan task's ``conditional``,
        templated): their columns keep originals outside the condition, so views computed from them
        are not counted as masked and the PII scan samples them.
    :param partially_masked: ``{"schema.table.column": [json path, ...]}`` (the plan task's
        ``partially_masked``, templated): a ``json`` rule masks only those paths, so views computed from
        such a column are not counted as masked either.
    :param jobs: sessions that ANALYZE at once, the largest relation first (templated; default: the
        worker's CPU count, like ``PgRestoreOperator``'s ``jobs``; the reference DAG passes
        ``restore_jobs``).

    XCom ``return_value``: ``{"materialized_views": {...}, "analyze": {"analyzed", "cleared",
    "duration_s", "jobs"}, "masked_view_columns": ["schema.view.column", ...]}``.
    """

    template_fields: Sequence[str] = ("database", "masked_columns", "conditional", "partially_masked", "jobs")
    ui_color = "#f5d76e"

    def __init__(
        self,
        *,
        postgres_conn_id: str = DEFAULT_STAGING_CONN_ID,
        database: str | None = None,
        masked_columns: Any = None,
        conditional: Any = None,
        partially_masked: Any = None,
        jobs: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.postgres_conn_id = postgres_conn_id
        self.database = database
        self.masked_columns = masked_columns
        self.conditional = conditional
        self.partially_masked = partially_masked
        self.jobs = jobs

    @maps_sync_errors
    def execute(self, context: Any) -> dict[str, Any]:
        from scalingo_staging_sync.anonymize.postload import finalize_masked_data

        target = pg_target_from_connection(self.postgres_conn_id, database=as_str(self.database))
        from scalingo_staging_sync.operators._base import as_list, as_mapping

        partial = {str(c) for c in as_mapping(self.partially_masked, "partially_masked") or {}}
        masked = [
            str(c) for c in as_list(self.masked_columns, "masked_columns") if str(c) not in partial
        ]  # a json rule masks some paths only: a view computed from such a column is not masked
        conditional = as_mapping(self.conditional, "conditional") or {}
        from scalingo_staging_sync.restore.runner import default_jobs

        jobs = as_int(self.jobs, "jobs") or default_jobs()
        if jobs < 1:
            raise ValueError(
                f"FinalizeMaskedDataOperator: jobs={jobs}: give 1 or more (sessions that ANALYZE at once)"
            )
        result = finalize_masked_data(target, masked, [str(t) for t in conditional], jobs=jobs)
        self.log.info(
            "masked data finalized on %s: materialized views %s; %d relation(s) analyzed, statistics cleared on %s",
            target.describe(),
            result.get("materialized_views"),
            len((result.get("analyze") or {}).get("analyzed") or []),
            (result.get("analyze") or {}).get("cleared") or "none",
        )
        return result
