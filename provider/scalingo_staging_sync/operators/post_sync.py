"""RunSeedsOperator and PostSyncCommandsOperator: what runs on the anonymized copy after verification."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from scalingo_staging_sync.errors import SyncError
from scalingo_staging_sync.hooks.postgres import DEFAULT_STAGING_CONN_ID, pg_target_from_connection
from scalingo_staging_sync.operators._base import as_list, as_str, maps_sync_errors


class PostSyncConfigError(SyncError, ValueError):
    retryable = False


class RunSeedsOperator(BaseOperator):
    """Run SQL seed files on the anonymized copy before it is promoted (:mod:`scalingo_staging_sync.seeds`).

    :param seeds: seed file paths (templated); relative ones are resolved against ``rules_file``'s folder.
    :param rules_file: the rules file (templated).
    :param postgres_conn_id: / :param database: the restored database (templated).

    XCom ``return_value``: ``[{"file", "duration_s", ...}, ...]`` (empty without seeds).
    """

    template_fields: Sequence[str] = ("seeds", "rules_file", "database")
    ui_color = "#e8daef"

    def __init__(
        self,
        *,
        seeds: Any = None,
        rules_file: str | None = None,
        postgres_conn_id: str = DEFAULT_STAGING_CONN_ID,
        database: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.seeds = seeds
        self.rules_file = rules_file
        self.postgres_conn_id = postgres_conn_id
        self.database = database

    @maps_sync_errors
    def execute(self, context: Any) -> list[dict]:
        from scalingo_staging_sync.seeds import resolve_seed_paths, run_seeds

        seeds = [str(s) for s in as_list(self.seeds, "seeds")]
        if not seeds:
            self.log.info("no seeds")
            return []
        paths = resolve_seed_paths(seeds, as_str(self.rules_file))
        target = pg_target_from_connection(self.postgres_conn_id, database=as_str(self.database))
        return run_seeds(target, paths)


class PostSyncCommandsOperator(BaseOperator):
    """Run commands as detached one-off containers in the staging app, after promotion.

    :param commands: commands (templated), e.g. ``["bundle exec rails db:migrate"]``.
    :param target_app: Scalingo app of the staging database (templated).
    :param scalingo_conn_id: Scalingo connection.

    XCom ``return_value``: ``[{"command", "duration_s", "result": {"id", "state", ...}}, ...]``.
    """

    template_fields: Sequence[str] = ("commands", "target_app")
    ui_color = "#e8daef"

    def __init__(
        self,
        *,
        commands: Any = None,
        target_app: str | None = None,
        scalingo_conn_id: str = "scalingo_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.commands = commands
        self.target_app = target_app
        self.scalingo_conn_id = scalingo_conn_id

    @maps_sync_errors
    def execute(self, context: Any) -> list[dict]:
        commands = [str(c) for c in as_list(self.commands, "commands")]
        if not commands:
            self.log.info("no post-sync commands")
            return []
        app = as_str(self.target_app)
        if not app:
            raise PostSyncConfigError(
                "post-sync commands need a target app: set the target_app param, the rules file's target_app "
                "or [scalingo_staging_sync] target_app"
            )
        from scalingo_staging_sync.hooks.scalingo import ScalingoHook

        hook = ScalingoHook(scalingo_conn_id=self.scalingo_conn_id)
        results = []
        for command in commands:
            self.log.info("running %r as a detached one-off container in %s", command, app)
            started = time.monotonic()
            outcome = hook.run_detached(app, command)
            short = _short_outcome(outcome)
            results.append(
                {"command": command, "duration_s": round(time.monotonic() - started, 1), "result": short}
            )
        return results


def _short_outcome(outcome: Any) -> dict[str, Any]:
    """What XCom keeps of a one-off run (``ScalingoClient.run_detached``): its container and the
    operation Scalingo reported done."""
    if not isinstance(outcome, dict):
        return {"raw": str(outcome)[:200]}
    container = outcome.get("container") if isinstance(outcome.get("container"), dict) else {}
    operation = outcome.get("operation") if isinstance(outcome.get("operation"), dict) else {}
    return {
        "container_id": container.get("id"),
        "operation_id": operation.get("id"),
        "status": operation.get("status"),
    }
