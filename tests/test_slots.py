from __future__ import annotations

import threading
import time

from scalingo_staging_sync.pgconn import PgTarget
from scalingo_staging_sync.slots import connection_slot


def test_at_most_n_holders_at_a_time(staging_pg16):
    target = PgTarget(host=staging_pg16.host, port=staging_pg16.port, user="postgres", dbname="postgres")
    active, peak, lock = [0], [0], threading.Lock()

    def worker():
        with connection_slot(target, 2, "test-slots", poll_s=0.02):
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            time.sleep(0.2)
            with lock:
                active[0] -= 1

    threads = [threading.Thread(target=worker) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 2
    # every lock was released
    held = staging_pg16.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")[0][0]
    assert held == 0


def test_no_cap_when_slots_is_zero(staging_pg16):
    target = PgTarget(host=staging_pg16.host, port=staging_pg16.port, user="postgres", dbname="postgres")
    with connection_slot(target, 0) as slot:
        assert slot is None


def test_timeout_names_the_cap(staging_pg16):
    import pytest

    target = PgTarget(host=staging_pg16.host, port=staging_pg16.port, user="postgres", dbname="postgres")
    with connection_slot(target, 1, "test-timeout"):
        with pytest.raises(TimeoutError, match="among 1"):
            with connection_slot(target, 1, "test-timeout", poll_s=0.01, timeout_s=0.1):
                pass
