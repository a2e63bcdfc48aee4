"""Keep secrets (API token, JWTs, signed URLs, passwords, the anonymization salt) out of logs.

``mask_secret`` registers a value with Airflow's secrets masker when Airflow is importable (so task
logs show ``***``), and always with a logging filter installed on the package's own loggers, so the
core redacts secrets outside Airflow too.
"""

from __future__ import annotations

import logging
import threading

_lock = threading.Lock()
_secrets: set[str] = set()
REDACTED = "***"


def mask_secret(value: str | None) -> None:
    if not value or len(value) < 4:
        return
    with _lock:
        _secrets.add(value)
    try:  # Airflow task logs
        from airflow.sdk.log import mask_secret as airflow_mask_secret

        airflow_mask_secret(value)
    except Exception:  # pragma: no cover - Airflow absent or too old: our filter still applies
        pass


def redact(text: str) -> str:
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def install_log_filter(logger_name: str = "scalingo_staging_sync") -> None:
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, RedactingFilter) for f in logger.filters):
        logger.addFilter(RedactingFilter())


install_log_filter()
