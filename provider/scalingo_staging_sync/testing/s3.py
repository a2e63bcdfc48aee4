"""A real S3-compatible server on 127.0.0.1 for tests: moto in server mode.

    with MotoS3Server() as s3:
        conn_json = s3.create_bucket("backups")          # Airflow ``aws`` connection, as JSON
        os.environ["AIRFLOW_CONN_BACKUPS_S3"] = conn_json
        ObjectStoragePath("s3://backups/x", conn_id="backups_s3")   # reaches the server

The server records every request (``requests``: ``(method, path, query)``) so that tests can prove what
was (not) transferred, e.g. ``s3.count("GET", "/backups/key")``. Moto keeps its state per process: every
server started in one process sees the same buckets.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass

ACCESS_KEY = "testing-access-key"
SECRET_KEY = "testing-secret-key"
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Request:
    method: str
    path: str
    query: str


class MotoS3Server:
    """``moto.server.ThreadedMotoServer`` on 127.0.0.1 and a free port, with a request log."""

    def __init__(self) -> None:
        self.requests: list[S3Request] = []
        self._lock = threading.Lock()
        self._server = None
        self.endpoint_url: str | None = None

    # -------------------------------------------------------------- lifecycle
    def start(self) -> MotoS3Server:
        from moto.moto_server.threaded_moto_server import ThreadedMotoServer
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        recorder = self

        class _QuietHandler(MotoRequestHandler):
            def log_request(self, *args, **kwargs) -> None:  # werkzeug prints every request otherwise
                pass

        def counting(app):
            def wsgi(environ, start_response):
                with recorder._lock:
                    recorder.requests.append(
                        S3Request(
                            environ["REQUEST_METHOD"],
                            environ.get("PATH_INFO", ""),
                            environ.get("QUERY_STRING", ""),
                        )
                    )
                return app(environ, start_response)

            return wsgi

        class _Server(ThreadedMotoServer):
            def _server_entry(self) -> None:
                app = counting(DomainDispatcherApplication(create_backend_app))
                self._server = make_server(
                    self._ip_address, self._port, app, True, request_handler=_QuietHandler
                )
                self._server_ready_event.set()
                self._server.serve_forever()

        self._server = _Server(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> MotoS3Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -------------------------------------------------------------- helpers
    def client(self):
        """A boto3 S3 client on this server (for assertions: list, overwrite, multipart uploads)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )

    def conn_json(self) -> str:
        """The server as an Airflow ``aws`` connection, JSON for an ``AIRFLOW_CONN_<ID>`` env var."""
        return json.dumps(
            {
                "conn_type": "aws",
                "login": ACCESS_KEY,
                "password": SECRET_KEY,
                "extra": {"endpoint_url": self.endpoint_url, "region_name": REGION},
            }
        )

    def create_bucket(self, name: str) -> str:
        """Create ``name`` (idempotent) and return :meth:`conn_json`."""
        client = self.client()
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if name not in existing:
            client.create_bucket(Bucket=name)
        return self.conn_json()

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        client = self.client()
        out: list[str] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            out.extend(obj["Key"] for obj in page.get("Contents", []))
        return sorted(out)

    def multipart_uploads(self, bucket: str) -> list[str]:
        """Keys of the multipart uploads started and neither completed nor aborted."""
        return sorted(
            u["Key"] for u in self.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        )

    def empty_bucket(self, bucket: str) -> None:
        client = self.client()
        for key in self.keys(bucket):
            client.delete_object(Bucket=bucket, Key=key)
        for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])

    def count(self, method: str, path: str) -> int:
        """Requests seen with this method and exact path (``/bucket/key``)."""
        with self._lock:
            return sum(1 for r in self.requests if r.method == method and r.path == path)

    def reset_requests(self) -> None:
        with self._lock:
            self.requests.clear()
