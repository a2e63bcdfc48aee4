"""Seeds: SQL files from the rules file, run against the anonymized database before promotion.

Each file runs in its own transaction; the first error stops the run and names the file (and the
rules-file entry), so a half-seeded database is never promoted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from scalingo_staging_sync.errors import SyncError
from scalingo_staging_sync.pgconn import PgTarget

log = logging.getLogger(__name__)


class SeedError(SyncError, RuntimeError):
    pass


def resolve_seed_paths(seeds: Sequence[str], rules_path: str | Path | None) -> list[Path]:
    """Seed paths are relative to the rules file's directory; every file must exist."""
    base = Path(rules_path).resolve().parent if rules_path else Path.cwd()
    paths = []
    for index, seed in enumerate(seeds):
        path = Path(seed)
        if not path.is_absolute():
            path = base / path
        if not path.is_file():
            raise SeedError(
                f"seeds[{index}]: {seed!r} not found (looked for {path}); seed paths are relative to "
                + ("the rules file" if rules_path else "the worker's current directory (no rules file given)")
            )
        paths.append(path)
    return paths


def check_seed_files(seeds: Sequence[str], rules_path: str | Path | None) -> list[Path]:
    """Every seed file exists and can be read (one byte is read): the preflight's check. Raises
    :class:`SeedError` naming the first bad entry."""
    paths = resolve_seed_paths(seeds, rules_path)
    for index, path in enumerate(paths):
        try:
            with path.open("rb") as fh:
                fh.read(1)
        except OSError as exc:
            raise SeedError(
                f"seeds[{index}]: {seeds[index]!r} ({path}) cannot be read: {exc.strerror or exc}; "
                "make it readable by the user Airflow runs as"
            ) from None
    return paths


def run_seeds(target: PgTarget, paths: Sequence[Path]) -> list[dict]:
    """Run each SQL file in one transaction; returns [{file, duration_s}]."""
    results = []
    for index, path in enumerate(paths):
        started = time.monotonic()
        sql_text = path.read_text(encoding="utf-8")
        try:
            with target.connect(autocommit=False) as conn:
                with conn.transaction():
                    conn.execute(sql_text)  # the reviewed seed file is SQL by design
        except Exception as exc:
            raise SeedError(f"seeds[{index}] ({path.name}) failed: {exc}".strip()) from exc
        duration = round(time.monotonic() - started, 3)
        log.info("seed %s applied in %.2fs", path.name, duration)
        results.append({"file": path.name, "duration_s": duration})
    return results
