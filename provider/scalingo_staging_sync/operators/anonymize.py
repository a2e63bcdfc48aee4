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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseOperator

STEPS = ("all", "prepare", "finish")


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
    :param step: ``all`` (default): the task does everything for its table (loads its own data when
        ``dump_path`` is given). With one shared data load (``PgRestoreOperator(section="data",
        mask_on_load=True)``, every table's data in one ``pg_restore --jobs``): ``prepare`` takes the
        proof and installs the masking trigger of an ``on_load`` table before the load; ``finish``,
        after it, drops the trigger and counts the rows, or runs the UPDATE of an ``in_place`` table.
    :param prepare_task_id: task id of the ``prepare`` step (read by ``finish``, same map index).
    :param parallel_connections: rules ``parallel_connections``: at most this many tables are masked
        at the same time on the database (advisory-lock slots, see :mod:`scalingo_staging_sync.slots`),
        on top of ``max_active_tis_per_dagrun`` / a pool. None or 0: no cap.
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
        step: str = "all",
        prepare_task_id: str = "prepare_masking",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if step not in STEPS:
            raise ValueError(f"AnonymizeTableOperator: unknown step {step!r}; use one of {', '.join(STEPS)}")
        self.step = step
        self.prepare_task_id = prepare_task_id
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

    def execute(self, context: Any) -> dict[str, Any]:
        from scalingo_staging_sync.anonymize.salt import get_salt
        from scalingo_staging_sync.hooks.postgres import pg_target_from_connection

        item = dict(self.plan)
        for key in ("table", "schema", "name", "mode"):
            if key not in item:
                raise ValueError(f"plan item has no {key!r}: {sorted(item)}")
        salt = get_salt()
        target = pg_target_from_connection(self.postgres_conn_id, database=self.database or None)
        dump_path = self.dump_path or None
        tools = None
        if dump_path:
            from scalingo_staging_sync.restore.pgtools import find_pg_tools

            tools = find_pg_tools(self.pg_bin_dir)
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

        with connection_slot(target, int(self.parallel_connections or 0)):
            return self._run(item, target, salt, dump_path, tools, context)

    def _run(self, item, target, salt, dump_path, tools, context) -> dict[str, Any]:
        from scalingo_staging_sync.anonymize import executor

        retry = executor.RetryPolicy(
            attempts=int(self.retry_attempts), base_delay_s=float(self.retry_base_delay_s)
        )
        if self.step == "prepare":
            if item["mode"] != "on_load":
                self.log.info("%s is masked in place after the data load: nothing to prepare", item["table"])
                return {"table": item["table"], "mode": item["mode"], "step": "nothing to prepare"}
            return executor.prepare_on_load(
                item, target, salt, dump_path, tools=tools, retry=retry, sample_rows=int(self.sample_rows)
            )
        if self.step == "finish":
            if item["mode"] == "on_load":
                prepared = context["ti"].xcom_pull(
                    task_ids=self.prepare_task_id, map_indexes=context["ti"].map_index
                )
                if not isinstance(prepared, dict) or prepared.get("table") != item["table"]:
                    raise ValueError(
                        f"{item['table']}: no result of {self.prepare_task_id!r} for this table "
                        "(the masking trigger was not installed): refusing to report it as masked"
                    )
                return executor.finish_on_load(item, target, prepared, retry=retry)
            dump_path = None  # the shared data load brought its rows: UPDATE them in place
        return executor.run_table_plan(
            item,
            target,
            salt,
            dump_path=dump_path,
            tools=tools,
            retry=retry,
            statement_timeout_s=float(self.statement_timeout_s) if self.statement_timeout_s else None,
            email_domain=self.email_domain or "example.com",
            sample_rows=int(self.sample_rows),
        )
