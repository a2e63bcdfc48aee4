"""Keyed fingerprints of original values, for residual-value proofs without storing PII.

The anonymizer records ``fingerprint(salt, original)`` for a sample of rows; the verifier recomputes
it on the values found after masking. Equal fingerprints at the same key mean the original survived.
"""

from __future__ import annotations

import hashlib
import hmac

ALGORITHM = "hmac-sha256/128"


def fingerprint(salt: str, value: str) -> str:
    """Hex HMAC-SHA256 of ``value`` (its PostgreSQL text form) under ``salt``, truncated to 128 bits."""
    return hmac.new(salt.encode("utf-8"), value.encode("utf-8"), hashlib.sha256).hexdigest()[:32]
