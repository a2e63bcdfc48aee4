"""Storage fixtures (the S3 server fixtures ``s3_server`` / ``s3_bucket`` are in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def make_dump():
    """``make_dump(path, size, seed=0)``: see :func:`write_fake_dump`."""
    return write_fake_dump


def write_fake_dump(path: Path, size: int, seed: int = 0) -> Path:
    """A file shaped like a pg_dump custom archive (``PGDMP`` magic + pseudo-random bytes)."""
    import random

    rnd = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(b"PGDMP")
        left = size - 5
        while left > 0:
            n = min(left, 1 << 20)
            fh.write(rnd.randbytes(n))
            left -= n
    return path
