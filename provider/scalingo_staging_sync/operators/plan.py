"""PlanAnonymizationOperator: the anonymization plan of a run, made from the archive before the restore;
DryRunStopOperator: where a dry run stops, after the plan, printing it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.providers.standard.operators.python import ShortCircuitOperator
from airflow.sdk import BaseOperator

from scalingo_staging_sync.hooks.postgres import DEFAULT_STAGING_CONN_ID
from scalingo_staging_sync.operators._base import (
    as_bool,
    as_list,
    as_mapping,
    as_str,
    maps_sync_errors,
    sync_errors,
)

ARCHIVE_PLAN_KEY = "archive_plan"
MASKED_COLUMNS_KEY = "masked_columns"
CONDITIONAL_KEY = "conditional"
PARTIALLY_MASKED_KEY = "partially_masked"


class PlanAnonymizationOperator(BaseOperator):
    """Plan the masking of a run (see :mod:`scalingo_staging_sync.inventory`).

    With ``dump_path`` (the reference DAG), the plan is made from the archive alone, before anything is
    restored: :func:`~scalingo_staging_sync.inventory.plan_from_archive` reads the archive's inventory,
    checks every rule against it (tables, columns, types, lengths, unique keys kept by unique
    transformers) and classifies every entry that carries data. A rule error fails the task (not
    retried) and staging has not been touched. Without ``dump_path`` the rules are planned against the
    restored catalog of ``database`` (every table masked in place; for DAGs that restore first).

    :param rules_file: path of the rules file (templated; the gate's ``settings["rules_file"]``).
    :param dump_path: the archive, or the backup task's result (templated).
    :param exclude_tables: more tables whose data is not copied (templated; the run's exclusions).
    :param pg_bin_dir: PostgreSQL client bin directory (templated).
    :param postgres_conn_id: / :param database: the restored database (only without ``dump_path``).

    XCom ``return_value``: the list of plan items (CONTRACTS shape: one per ruled table and per leaf
    partition / inheritance child of one); key ``archive_plan``: ``ArchivePlan.to_json()`` (items,
    classification, masked / excluded / scanned tables, large objects, skip_dump_ids, summary); key
    ``masked_columns``: ``["schema.table.column", ...]``; key ``conditional``: ``{table: condition}``
    of the items whose rule has a condition (the PII scan samples the rows outside it); key
    ``partially_masked``: ``{"schema.table.column": [json path, ...]}`` of the columns a ``json`` rule
    masks (the PII scan judges the rest of those documents).
    """

    template_fields: Sequence[str] = ("rules_file", "database", "dump_path", "exclude_tables", "pg_bin_dir")
    ui_color = "#fdebd0"

    def __init__(
        self,
        *,
        rules_file: str,
        postgres_conn_id: str = DEFAULT_STAGING_CONN_ID,
        database: str | None = None,
        dump_path: Any = None,
        exclude_tables: Any = None,
        pg_bin_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.rules_file = rules_file
        self.postgres_conn_id = postgres_conn_id
        self.database = database
        self.dump_path = dump_path
        self.exclude_tables = exclude_tables
        self.pg_bin_dir = pg_bin_dir

    @maps_sync_errors
    def execute(self, context: Any) -> list[dict]:
        from scalingo_staging_sync.anonymize.rules import load_rules
        from scalingo_staging_sync.restore.pgtools import find_pg_tools
        from scalingo_staging_sync.tablename import parse_table_names

        rules = load_rules(as_str(self.rules_file, "rules_file"))
        tools = find_pg_tools(as_str(self.pg_bin_dir))
        exclude = [str(t) for t in parse_table_names(as_list(self.exclude_tables, "exclude_tables"))]
        dump = self.dump_path  # a path, the backup task's result (local or stored), or nothing
        if isinstance(dump, str):
            dump = as_str(self.dump_path, "dump_path")
        ti = context["ti"]
        if not dump:
            items = self._plan_on_catalog(rules, tools, exclude)
            archive_plan = None
        else:
            from scalingo_staging_sync.inventory import plan_from_archive
            from scalingo_staging_sync.operators._dump import local_dump

            # rules already name their own exclusions: pass only the run's extra ones (the param's)
            extra = [t for t in exclude if t not in {str(r) for r in parse_table_names(rules.exclude_tables)}]
            plan = plan_from_archive(
                str(local_dump(dump)), rules, exclude_tables=extra, tools=tools
            )  # reads only
            archive_plan = plan.to_json()
            items = archive_plan["items"]
            for line in plan_lines(archive_plan):
                self.log.info("%s", line)
        masked = [f"{i['table']}.{c}" for i in items for c in i.get("masked_columns", [])]
        ti.xcom_push(key=MASKED_COLUMNS_KEY, value=masked)
        ti.xcom_push(
            key=CONDITIONAL_KEY, value={i["table"]: i["condition"] for i in items if i.get("condition")}
        )
        from scalingo_staging_sync.pii.scanner import partially_masked_from_plan

        ti.xcom_push(key=PARTIALLY_MASKED_KEY, value=partially_masked_from_plan(items))
        if archive_plan is not None:
            ti.xcom_push(key=ARCHIVE_PLAN_KEY, value=archive_plan)
        return items

    def _plan_on_catalog(self, rules: Any, tools: Any, exclude: list[str]) -> list[dict]:
        from scalingo_staging_sync.anonymize.planner import plan_anonymization
        from scalingo_staging_sync.hooks.postgres import pg_target_from_connection

        target = pg_target_from_connection(self.postgres_conn_id, database=as_str(self.database))
        items = plan_anonymization(target, rules, dump_path=None, tools=tools)
        items = [i for i in items if i["table"] not in set(exclude)]
        for item in items:
            self.log.info(
                "plan %s: mode %s, masked columns %s", item["table"], item["mode"], item.get("masked_columns")
            )
        return items


def plan_lines(archive_plan: dict[str, Any]) -> list[str]:
    """The archive plan as text: classification (each data-carrying entry, its class and why), then
    the masked tables (the same text as ``scalingo-staging-sync plan``)."""
    from scalingo_staging_sync.inventory.plan import plan_lines

    return plan_lines(archive_plan)


class DryRunStopOperator(ShortCircuitOperator):
    """Where a dry run stops: after the backup was fetched and planned (both only read), it prints the
    plan and the classification of every data-carrying entry of the archive, then skips everything
    downstream (teardowns still run: the cleanup removes the downloaded archive). A real run passes.

    :param dry_run: the run's ``dry_run`` setting (templated).
    :param archive_plan: the plan task's ``archive_plan`` (templated).

    XCom ``return_value``: True (real run) or False (dry run).
    """

    template_fields: Sequence[str] = ("dry_run", "archive_plan")
    ui_color = "#fadbd8"

    def __init__(self, *, dry_run: Any, archive_plan: Any = None, **kwargs: Any) -> None:
        kwargs.setdefault("ignore_downstream_trigger_rules", True)
        super().__init__(python_callable=self._decide, **kwargs)
        self.dry_run = dry_run
        self.archive_plan = archive_plan

    def execute(self, context: Any) -> Any:
        with sync_errors():
            return super().execute(context)

    def _values(self) -> tuple[bool, dict]:
        return as_bool(self.dry_run, "dry_run"), as_mapping(self.archive_plan, "archive_plan") or {}

    def _decide(self, **context: Any) -> bool:
        # the callable is bound at parse time; the rendered fields are on the running task
        dry_run, plan = (context.get("task") or self)._values()
        if not dry_run:
            return True
        self.log.info("DRY RUN: the archive was read and planned; nothing is restored. The run would:")
        for line in plan_lines(plan):
            self.log.info("  %s", line)
        return False
