"""Audit report of a run: model (:mod:`.report`) and JSON/text writers (:mod:`.writers`). No Airflow."""

from __future__ import annotations

import logging
import os
from typing import Any

from scalingo_staging_sync.audit.report import FORMAT, build_report, scrub
from scalingo_staging_sync.audit.writers import (
    AUDIT_DIR_ENV,
    default_audit_dir,
    render_json,
    render_text,
    safe_filename,
    write_report,
)

log = logging.getLogger(__name__)

__all__ = [
    "AUDIT_DIR_ENV",
    "FORMAT",
    "build_and_write_report",
    "build_report",
    "default_audit_dir",
    "render_json",
    "render_text",
    "safe_filename",
    "scrub",
    "write_report",
]


def build_and_write_report(*, audit_dir: str | os.PathLike | None = None, **kwargs: Any) -> dict[str, Any]:
    """:func:`build_report` then :func:`write_report`; returns the report with ``files`` added.

    ``audit_dir`` defaults to ``settings["audit_dir"]`` (the rules file), then the environment.
    """
    settings = kwargs.get("settings") or {}
    report = build_report(**kwargs)
    files = write_report(report, audit_dir or settings.get("audit_dir"))
    log.info("audit report written: %s and %s (result %s)", files["json"], files["text"], report["result"])
    return {**report, "files": files}
