"""PlanAnonymizationOperator: the anonymization plan of a run (one core call)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from scalingo_staging_sync.hooks.postgres import DEFAULT_STAGING_CONN_ID
from scalingo_staging_sync.operators._base import as_list, as_str, maps_sync_errors


class PlanAnonymizationOperator(BaseOperator):
    """Plan the masking of every table of the rules file (see :mod:`scalingo_staging_sync.anonymize.planner`).

    :param rules_file: path of the rules file (templated; the gate's ``settings["rules_file"]``).
    :param postgres_conn_id: postgres connection of the staging server.
    :param database: database holding the restored schema (templated; ``restore_schema``'s ``database``).
    :param dump_path: the archive (templated); with it simple rules are planned ``on_load``.
    :param exclude_tables: tables whose data is not copied: left out of the plan (templated).
    :param pg_bin_dir: PostgreSQL client bin directory (templated).

    XCom ``return_value``: the list of plan items (CONTRACTS shape: ``table``, ``schema``, ``name``,
    ``mode``, ``masked_columns``, ...); key ``masked_columns``: ``["schema.table.column", ...]``.
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
        from scalingo_staging_sync.anonymize.planner import plan_anonymization
        from scalingo_staging_sync.anonymize.rules import load_rules
        from scalingo_staging_sync.hooks.postgres import pg_target_from_connection
        from scalingo_staging_sync.operators._dump import local_dump
        from scalingo_staging_sync.restore.pgtools import find_pg_tools
        from scalingo_staging_sync.tablename import parse_table_names

        dump = as_str(self.dump_path, "dump_path")
        target = pg_target_from_connection(self.postgres_conn_id, database=as_str(self.database))
        items = plan_anonymization(
            target,
            load_rules(as_str(self.rules_file, "rules_file")),
            dump_path=str(local_dump(dump)) if dump else None,
            tools=find_pg_tools(as_str(self.pg_bin_dir)),
        )
        excluded = {str(t) for t in parse_table_names(as_list(self.exclude_tables, "exclude_tables"))}
        items = [i for i in items if i["table"] not in excluded]
        masked = [f"{i['table']}.{c}" for i in items for c in i.get("masked_columns", [])]
        context["ti"].xcom_push(key="masked_columns", value=masked)
        for item in items:
            self.log.info(
                "plan %s: mode %s, masked columns %s", item["table"], item["mode"], item.get("masked_columns")
            )
        return items
