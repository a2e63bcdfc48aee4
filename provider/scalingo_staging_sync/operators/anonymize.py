"""AnonymizeTableOperator: one mapped task per table of the anonymization plan.

    plan = plan_anonymization()            # @task calling anonymize.planner.plan_anonymization
    AnonymizeTableOperator.partial(
        task_id="anonymize_table",
        postgres_conn_id="staging_db",
        dump_path="{{ ti.xcom_pull(task_ids='fetch_backup')['dump_path'] }}",   # None: existing database
        max_active_tis_per_dagrun=3,                                           # connection cap (or a pool)
    ).expand(plan=plan)

Each task masks its table (on load through a trigger during its COPY, or in place with one UPDATE
transaction), retries transient database errors itself (exponential backoff), and returns the CONTRACTS
result ``{"table", "mode", "rows", "duration_s", "masked_columns", "proof"}`` to XCom. The salt comes from
the Airflow Variable ``scalingo_staging_sync_salt`` and is masked in logs.

Self-contained (one task does everything for its table). The reference DAG's shared data load uses
the masking steps of :mod:`scalingo_staging_sync.operators.masking` instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseOperator

from scalingo_staging_sync.operators._base import as_float, as_int, as_str, maps_sync_errors


class AnonymizeTableOperator(BaseOperator):
    """Anonymize one table from its plan item (see :mod:`scalingo_staging_sync.anonymize.planner`).

    :param plan: the plan item (mapped with ``.expand(plan=...)``).
    :param postgres_conn_id: Airflow postgres connection of the staging server (``staging_db``).
    :param database: database to work in, overriding the connection's (e.g. the side database).
    :param dump_path: the production archive. Given: the task loads its own table's data (masked on
        the way in for ``on_load`` items). None: the table already holds its data (``in_place`` only).
    :param pg_bin_dir: directory of pg_restore (else env SCALINGO_STAGING_SYNC_PG_BIN, else PATH).
    :param retry_attempts: attempts on transient errors (rules ``retry.attempts``).
    :param retry_base_delay_s: first backoff delay, doubled at each retry (rules ``retry.base_delay_s``).
    :param statement_timeout_s: statement timeout of the in-place UPDATE (None: server default).
    :param email_domain: reserved domain for custom strategies' ``ctx.mask(..., "email")``.
    :param parallel_connections: rules ``parallel_connections``: at most this many tables are masked
        at the same time on the database (advisory-lock slots, see :mod:`scalingo_staging_sync.slots`),
        on top of ``max_active_tis_per_dagrun`` / a pool. None or 0: no cap.

    XCom ``return_value``: ``{"table", "mode", "rows", "duration_s", "masked_columns", "proof"}``.
    """

    # "plan" is not templated: it holds SQL from the reviewed rules file, never rendered by Jinja.
    template_fields: Sequence[str] = (
        "postgres_conn_id",
        "database",
        "dump_path",
        "pg_bin_dir",
        "retry_attempts",
        "retry_base_delay_s",
        "statement_timeout_s",
        "email_domain",
        "parallel_connections",
    )
    ui_color = "#f5d76e"

    def __init__(
        self,
        *,
        plan: Mapping[str, Any],
        postgres_conn_id: str = "staging_db",
        database: str | None = None,
        dump_path: str | None = None,
        pg_bin_dir: str | None = None,
        retry_attempts: int = 3,
        retry_base_delay_s: float = 1.0,
        statement_timeout_s: float | None = None,
        email_domain: str = "example.com",
        parallel_connections: int | None = None,
        sample_rows: int = 200,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.postgres_conn_id = postgres_conn_id
        self.database = database
        self.dump_path = dump_path
        self.pg_bin_dir = pg_bin_dir
        self.retry_attempts = retry_attempts
        self.retry_base_delay_s = retry_base_delay_s
        self.statement_timeout_s = statement_timeout_s
        self.email_domain = email_domain
        self.parallel_connections = parallel_connections
        self.sample_rows = sample_rows

    @maps_sync_errors
    def execute(self, context: Any) -> dict[str, Any]:
        from scalingo_staging_sync.anonymize.salt import get_salt
        from scalingo_staging_sync.hooks.postgres import pg_target_from_connection
        from scalingo_staging_sync.operators._dump import local_dump
        from scalingo_staging_sync.operators.masking import check_plan_item

        item = check_plan_item(self.plan)
        salt = get_salt()
        target = pg_target_from_connection(as_str(self.postgres_conn_id), database=as_str(self.database))
        dump_path = str(local_dump(self.dump_path)) if as_str(self.dump_path) else None
        tools = None
        if dump_path:
            from scalingo_staging_sync.restore.pgtools import find_pg_tools

            tools = find_pg_tools(as_str(self.pg_bin_dir))
        self.log.info(
            "anonymizing %s (%s) in %s: columns %s%s",
            item["table"],
            item["mode"],
            target.describe(),
            ", ".join(item.get("masked_columns") or []) or "-",
            f", condition {item['condition']!r}" if item.get("condition") else "",
        )
        for warning in item.get("warnings") or []:
            self.log.warning("%s: %s", item["table"], warning)
        from scalingo_staging_sync.slots import connection_slot

        with connection_slot(target, as_int(self.parallel_connections, "parallel_connections", default=0)):
            return self._run(item, target, salt, dump_path, tools, context)

    def _run(self, item, target, salt, dump_path, tools, context) -> dict[str, Any]:
        from scalingo_staging_sync.anonymize import executor

        retry = executor.RetryPolicy(
            attempts=as_int(self.retry_attempts, "retry_attempts", default=3),
            base_delay_s=as_float(self.retry_base_delay_s, "retry_base_delay_s", default=1.0),
        )
        timeout = as_float(self.statement_timeout_s, "statement_timeout_s")
        return executor.run_table_plan(
            item,
            target,
            salt,
            dump_path=dump_path,
            tools=tools,
            retry=retry,
            statement_timeout_s=timeout or None,
            email_domain=as_str(self.email_domain, default="example.com"),
            sample_rows=int(self.sample_rows),
        )
