"""A local stand-in for Slack incoming webhooks: records every POST (for tests and the demo).

    with SlackReceiver() as slack:
        os.environ["AIRFLOW_CONN_SLACK_TEST"] = slack.airflow_conn_json()
        ...  # run things that post to Slack through connection "slack_test"
        assert "succeeded" in slack.texts()[-1]

The connection puts the full webhook URL in the password field: the Slack provider's
SlackWebhookHook uses a password holding ``://`` as the URL as is.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WEBHOOK_PATH = "/services/T000/B000/XXX"


@dataclass
class RecordedPost:
    path: str
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return str(self.body.get("text", ""))


class SlackReceiver:
    """HTTP server on 127.0.0.1 (random port) answering ``ok`` like Slack, recording the posts."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, status: int = 200):
        self.posts: list[RecordedPost] = []
        self.status = status
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw.decode("utf-8") or "{}")
                except ValueError:
                    body = {"raw": raw.decode("utf-8", "replace")}
                with receiver._lock:
                    receiver.posts.append(RecordedPost(self.path, body, dict(self.headers.items())))
                payload = b"ok" if receiver.status == 200 else b"invalid_token"
                self.send_response(receiver.status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:  # quiet
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{WEBHOOK_PATH}"

    def airflow_conn_json(self) -> str:
        """This receiver as an Airflow ``slackwebhook`` connection (JSON for ``AIRFLOW_CONN_<ID>``)."""
        return json.dumps({"conn_type": "slackwebhook", "password": self.url})

    def texts(self) -> list[str]:
        with self._lock:
            return [p.text for p in self.posts]

    def clear(self) -> None:
        with self._lock:
            self.posts.clear()

    def start(self) -> SlackReceiver:
        self._thread = threading.Thread(target=self._server.serve_forever, name="slack-receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> SlackReceiver:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
