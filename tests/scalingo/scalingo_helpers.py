"""Helpers shared by the Scalingo tests (importable: pytest puts this directory on sys.path)."""

from __future__ import annotations

import contextlib
import logging

from scalingo_staging_sync.scalingo.client import ScalingoClient
from scalingo_staging_sync.testing.fake_scalingo import FakeScalingoAPI

APP = "my-prod-app"


def make_client(fake: FakeScalingoAPI, **kwargs) -> ScalingoClient:
    params = dict(
        auth_url=fake.url, api_url=fake.url, db_api_url=fake.url, backoff_s=0.01, backoff_max_s=0.05
    )
    params.update(kwargs)
    return ScalingoClient(fake.api_token, **params)


@contextlib.contextmanager
def archive_log():
    """The messages the archive module logs (a handler on its logger: Airflow's logging set-up can
    keep records from reaching caplog)."""
    messages: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: messages.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("scalingo_staging_sync.scalingo.archive")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
