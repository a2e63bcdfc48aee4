"""Slack through the Slack provider's incoming-webhook hook (connection type ``slackwebhook``).

* :func:`notify` ``(conn_id, message)``: post one message; never raises (Slack must not fail a run).
* :func:`send_event` ``(conn_id, event, **kwargs)``: build a message (:mod:`.messages`) and post it.
* :class:`SyncSlackNotifier`: an Airflow notifier for ``on_execute_callback`` (``event="start"``),
  ``on_success_callback`` (``"phase"`` for unmapped tasks: a mapped instance posts nothing,
  ``"success"`` for the DAG) and
  ``on_failure_callback`` (``"failure"``: failing task and a link to its log).

``slack_conn_id`` empty or None means Slack is off: nothing is sent.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from airflow.sdk import BaseNotifier

from scalingo_staging_sync.notifications.messages import build_event_message, phase_message
from scalingo_staging_sync.operators._base import as_str
from scalingo_staging_sync.secrets import redact

log = logging.getLogger(__name__)

from scalingo_staging_sync.task_ids import AUDIT as DEFAULT_SUMMARY_TASK_ID  # noqa: E402


def notify(conn_id: str | None, message: str, *, channel: str | None = None, timeout: int = 10) -> bool:
    """Post ``message`` through connection ``conn_id``; True when Slack accepted it.

    A ``slack`` (API token) connection posts with ``chat.postMessage`` to ``channel`` (required then);
    a ``slackwebhook`` connection posts to its webhook, with ``channel`` in the payload when given
    (legacy webhooks honour it; app webhooks always post to the channel they were created for).
    """
    if not conn_id:
        return False
    text = redact(message)
    try:
        from airflow.sdk import BaseHook

        conn_type = BaseHook.get_connection(conn_id).conn_type
        if conn_type == "slack":
            from airflow.providers.slack.hooks.slack import SlackHook

            if not channel:
                raise ValueError(
                    "a Slack API connection needs slack_channel (rules file) to know where to post"
                )
            SlackHook(slack_conn_id=conn_id, timeout=timeout).call(
                "chat.postMessage", json={"channel": channel, "text": text}
            )
        else:
            from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

            extra = {"channel": channel} if channel else {}
            SlackWebhookHook(slack_webhook_conn_id=conn_id, timeout=timeout).send(text=text, **extra)
    except Exception as exc:  # notifications never fail a run
        log.warning("Slack message not sent through %r: %s", conn_id, redact(str(exc))[:300])
        return False
    return True


def send_event(conn_id: str | None, event: str, *, channel: str | None = None, **kwargs: Any) -> bool:
    """``start`` | ``phase`` | ``table`` | ``success`` | ``report`` | ``failure`` (see :mod:`.messages`)."""
    if not conn_id:
        return False
    return notify(conn_id, build_event_message(event, **kwargs), channel=channel)


def _duration(ti: Any) -> float | None:
    duration = getattr(ti, "duration", None)
    if duration:
        return float(duration)
    start = getattr(ti, "start_date", None)
    if start is None:
        return None
    end = getattr(ti, "end_date", None) or datetime.now(timezone.utc)
    return max((end - start).total_seconds(), 0.0)


class SyncSlackNotifier(BaseNotifier):
    """Notifier of the sync DAG's runs.

    :param slack_conn_id: ``slackwebhook`` or ``slack`` (API) connection (templated, e.g.
        ``"{{ params.slack_conn_id }}"``); empty means off.
    :param channel: channel to post to (templated; rules ``slack_channel``), see :func:`notify`.
    :param event: ``start`` | ``phase`` | ``success`` | ``failure``.
    :param source_app: / :param target_app: shown in messages (templated).
    :param labels: ``{"schema.table": "label"}`` keyed by qualified table names (``str(TableName)``),
        the ``translation`` of the rules' anonymization_tables (templated).
    :param summary_task_id: task whose XCom holds the audit report, read by ``success``; when XCom is
        out of reach (DAG-level callbacks), the run's audit JSON in ``audit_dir`` is read instead.
    :param audit_dir: audit directory (default: rules ``audit_dir`` / env / ``$AIRFLOW_HOME/...``).
    """

    template_fields: Sequence[str] = ("slack_conn_id", "channel", "source_app", "target_app", "labels")

    def __init__(
        self,
        *,
        slack_conn_id: str | None,
        event: str,
        source_app: str | None = None,
        target_app: str | None = None,
        labels: Mapping[str, str] | str | None = None,
        channel: str | None = None,
        summary_task_id: str | None = DEFAULT_SUMMARY_TASK_ID,
        audit_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if event not in ("start", "phase", "success", "failure"):
            raise ValueError(f"event must be start, phase, success or failure, got {event!r}")
        self.slack_conn_id = slack_conn_id
        self.event = event
        self.source_app = source_app
        self.target_app = target_app
        self.labels = labels
        self.channel = channel
        self.summary_task_id = summary_task_id
        self.audit_dir = audit_dir

    # ``dag.test()`` passes the serialized DAG to DAG-level callbacks, which has no Jinja environment:
    # render with a plain sandboxed one then.
    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        # One notifier object serves every run of the DAG: render from the templates, never from the
        # values a previous run rendered in place.
        raw = self.__dict__.setdefault("_templates", {f: getattr(self, f) for f in self.template_fields})
        for name, value in raw.items():
            setattr(self, name, value)
        dag = context.get("dag")
        if jinja_env is None and dag is not None and not hasattr(dag, "get_template_env"):
            jinja_env = self.get_template_env(dag=None)
        super().render_template_fields(context, jinja_env)

    def _render(self, template: Any, context: Any, dag: Any = None) -> Any:
        dag = dag or context.get("dag")
        if dag is not None and not hasattr(dag, "get_template_env"):
            dag = None
        return super(BaseNotifier, self)._render(template, context, dag)

    def build_message(self, context: Mapping[str, Any]) -> str:
        ti = context.get("ti")
        dag_run = context.get("dag_run")
        run_id = context.get("run_id") or getattr(dag_run, "run_id", None)
        if self.event == "start":
            return build_event_message(
                "start", source_app=as_str(self.source_app), target_app=as_str(self.target_app), run_id=run_id
            )
        if self.event == "phase":
            if getattr(ti, "map_index", -1) not in (-1, None):
                return ""  # one message per phase, not per mapped table
            return phase_message(getattr(ti, "task_id", "?"), _duration(ti))
        if self.event == "failure":
            exception = context.get("exception")
            return build_event_message(
                "failure",
                task_id=getattr(ti, "task_id", None),
                error=str(exception) if exception else context.get("reason"),
                log_url=getattr(ti, "log_url", None),
                target_app=as_str(self.target_app),
                run_id=run_id,
            )
        report = self._pull_report(ti) or self._read_report_file(run_id)
        if report:
            return build_event_message("report", report=report, labels=self._labels())
        total = None
        start = getattr(dag_run, "start_date", None)
        if start is not None:
            total = (datetime.now(timezone.utc) - start).total_seconds()
        return build_event_message(
            "success",
            summary={"total_duration_s": total},
            source_app=as_str(self.source_app),
            target_app=as_str(self.target_app),
        )

    def _labels(self) -> dict[str, str]:
        from scalingo_staging_sync.operators._base import as_mapping
        from scalingo_staging_sync.tablename import TableName

        labels = as_mapping(self.labels, "labels") or {}
        return {str(TableName.parse(k)): str(v) for k, v in labels.items()}

    def _pull_report(self, ti: Any) -> Mapping[str, Any] | None:
        if ti is None or not self.summary_task_id:
            return None
        try:
            value = ti.xcom_pull(task_ids=self.summary_task_id)
        except Exception as exc:  # a DAG callback may run where XCom is not reachable
            log.debug("audit report not reachable through XCom here (%s); trying the audit file", exc)
            return None
        return value if isinstance(value, Mapping) and "summary" in value else None

    def _read_report_file(self, run_id: str | None) -> Mapping[str, Any] | None:
        """DAG-level callbacks may run where XCom is unreachable: read the audit JSON of the run."""
        if not run_id:
            return None
        import json

        from scalingo_staging_sync.audit.writers import default_audit_dir, safe_filename

        path = default_audit_dir(self.audit_dir) / f"{safe_filename(run_id)}.json"
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return value if isinstance(value, Mapping) and value.get("run_id") == run_id else None

    def notify(self, context: Mapping[str, Any]) -> None:
        from scalingo_staging_sync.operators._base import as_str

        conn_id = as_str(self.slack_conn_id)
        if not conn_id:
            return
        try:
            message = self.build_message(context)
        except Exception as exc:  # never fail a task or a run because of Slack
            log.warning("Slack %s message could not be built: %s", self.event, exc)
            return
        if message:
            notify(conn_id, message, channel=as_str(self.channel))
