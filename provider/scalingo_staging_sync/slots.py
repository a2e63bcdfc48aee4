"""Connection slots: at most N workers at a time on one database, across processes and workers.

The rules' ``parallel_connections`` caps how many tables are masked at once. Airflow's
``max_active_tis_per_dagrun`` is fixed when the DAG is parsed (the rules file is not read then), so
each mapped task also takes one of N session-level advisory locks on the target database before it
works, and waits (logging) while all N are held. Locks vanish with their session, so a killed task
never leaks a slot.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from scalingo_staging_sync.pgconn import PgTarget

log = logging.getLogger(__name__)


def _namespace_key(namespace: str) -> int:
    return zlib.crc32(namespace.encode("utf-8")) & 0x7FFFFFFF


@contextmanager
def connection_slot(
    target: PgTarget,
    slots: int,
    namespace: str = "scalingo_staging_sync.anonymize",
    *,
    poll_s: float = 0.5,
    timeout_s: float | None = None,
) -> Iterator[int | None]:
    """Hold one of ``slots`` advisory locks on ``target``'s database while the block runs.

    ``slots`` <= 0 or None means no cap. Yields the slot number taken.
    """
    if not slots or int(slots) <= 0:
        yield None
        return
    slots = int(slots)
    key = _namespace_key(namespace)
    started = time.monotonic()
    waited_logged = False
    with target.connect(autocommit=True) as conn:
        while True:
            for slot in range(slots):
                taken = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (key, slot)).fetchone()[0]
                if taken:
                    if waited_logged:
                        log.info(
                            "connection slot %d/%d free after %.1f s",
                            slot + 1,
                            slots,
                            time.monotonic() - started,
                        )
                    try:
                        yield slot
                    finally:
                        conn.execute("SELECT pg_advisory_unlock(%s, %s)", (key, slot))
                    return
            if not waited_logged:
                log.info("all %d connection slots (parallel_connections) are busy: waiting", slots)
                waited_logged = True
            if timeout_s is not None and time.monotonic() - started > timeout_s:
                raise TimeoutError(f"no free connection slot among {slots} after {timeout_s:.0f} s")
            time.sleep(poll_s)
