"""Keyed fingerprints of original values, for residual-value proofs without storing PII.

The anonymizer records ``fingerprint(salt, original)`` for a sample of rows; the verifier recomputes
it on the values found after masking. Equal fingerprints at the same key mean the original survived.
"""

from __future__ import annotations

import hashlib
import hmac

ALGORITHM = "hmac-sha256/128"
#: the session's text output styles when fingerprinted values are read (those pg_dump sets, so an
#: archive's text of a value is what the server prints; TimeZone that of Scalingo's servers and of the
#: masking sessions), whatever the staging role or server sets
TEXT_STYLES = {"DateStyle": "ISO", "IntervalStyle": "postgres", "extra_float_digits": "3", "TimeZone": "UTC"}


def fingerprint(salt: str, value: str) -> str:
    """Hex HMAC-SHA256 of ``value`` (its PostgreSQL text form) under ``salt``, truncated to 128 bits."""
    return hmac.new(salt.encode("utf-8"), value.encode("utf-8"), hashlib.sha256).hexdigest()[:32]
