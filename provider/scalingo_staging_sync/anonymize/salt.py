"""The anonymization salt: Airflow Variable ``scalingo_staging_sync_salt`` (env
``AIRFLOW_VAR_SCALINGO_STAGING_SYNC_SALT``), never in the rules file, never logged.

SQL never sees the salt itself: it sees a key derived from it (``derive_key``), set per session as the
custom setting ``scalingo_staging_sync.key`` (``set_config`` for in-place UPDATEs, ``PGOPTIONS`` in
pg_restore's environment for on-load triggers), so it is written neither in the catalog (trigger
bodies read ``current_setting``) nor on a command line. Both are registered with the secret masker.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from scalingo_staging_sync.anonymize.transformers import KEY_GUC
from scalingo_staging_sync.errors import SyncError
from scalingo_staging_sync.fingerprint import TEXT_STYLES
from scalingo_staging_sync.pgconn import PgTarget
from scalingo_staging_sync.secrets import mask_secret

SALT_VARIABLE = "scalingo_staging_sync_salt"
SALT_ENV = "AIRFLOW_VAR_" + SALT_VARIABLE.upper()
#: at least this many bytes (UTF-8)
MIN_SALT_BYTES = 32
#: at least this many different characters (refuses "aaaa...", "changemechangeme...", short alphabets)
MIN_DISTINCT_CHARS = 16

#: Salts anyone who has read this repository (or any tutorial) knows: refused. Every salt-like example in
#: the repository's *.md / *.yaml files must be refused (tests/safety/test_salt.py greps them), so add
#: the value here when you write a new one in the docs. Compared case-insensitively; the longer ones
#: are also refused when they appear inside a salt.
KNOWN_PLACEHOLDERS: frozenset[str] = frozenset(
    {
        # docker-compose.yaml fallback (before compose refused to start without a salt)
        "change-me-to-a-long-random-secret",
        "change-me",
        "changeme",
        "change_me",
        "replace-me",
        "replaceme",
        "secret",
        "my-secret",
        "mysecret",
        "my-salt",
        "salt",
        "your-salt",
        "your-salt-here",
        "your_salt_here",
        "<long random secret>",
        "long-random-secret",
        "a-long-random-secret",
        "test-salt",
        "example-salt",
        "please-change-me",
    }
)
_CONTAINED_MIN = 16  # placeholders at least this long are refused inside a longer salt too


class SaltError(SyncError, RuntimeError):
    pass


HOW_TO = (
    f"set the Airflow Variable {SALT_VARIABLE!r} to a long random secret "
    f'(e.g. `airflow variables set {SALT_VARIABLE} "$(openssl rand -base64 48)"`, or the environment '
    f"variable {SALT_ENV}); keep it stable between runs so masked values stay the same"
)


def salt_problem(salt: str | None) -> str | None:
    """Why ``salt`` is refused (a sentence that never contains the salt), or None when it is usable.

    Refused: missing or blank; fewer than ``MIN_SALT_BYTES`` bytes; a known placeholder (the
    docker-compose fallback, anything the docs show as an example); fewer than ``MIN_DISTINCT_CHARS``
    different characters. A weak salt lets anyone recompute the keyed hashes and reverse masked
    e-mails and phone numbers with a dictionary."""
    if salt is None or not salt.strip():
        return "no anonymization salt is set"
    mask_secret(salt)
    folded = salt.strip().casefold()
    for placeholder in KNOWN_PLACEHOLDERS:
        if folded == placeholder or (len(placeholder) >= _CONTAINED_MIN and placeholder in folded):
            return (
                "the anonymization salt is a known placeholder (from docker-compose.yaml or the docs): anyone "
                "who has read them can recompute the masked values"
            )
    size = len(salt.encode("utf-8"))
    if size < MIN_SALT_BYTES:
        return f"the anonymization salt has {size} bytes, fewer than the {MIN_SALT_BYTES} required"
    distinct = len(set(salt))
    if distinct < MIN_DISTINCT_CHARS:
        return (
            f"the anonymization salt uses only {distinct} different characters (at least "
            f"{MIN_DISTINCT_CHARS} required): it is not random enough"
        )
    return None


def check_salt(salt: str | None) -> str:
    """``salt`` when usable; :class:`SaltError` (saying why and how to fix it) otherwise."""
    problem = salt_problem(salt)
    if problem:
        raise SaltError(f"{problem}: {HOW_TO}")
    return salt  # type: ignore[return-value]


def read_salt() -> str | None:
    """The salt from the Airflow Variable (or its env form), masked in logs, not yet checked (the
    preflight's ``salt_valid`` check judges it); None when it is not set."""
    salt = None
    try:
        from airflow.sdk import Variable

        salt = Variable.get(SALT_VARIABLE, default=None)
    except Exception:  # outside a task / Airflow absent: the env form still works
        salt = None
    if not salt:
        salt = os.environ.get(SALT_ENV)
    if salt:
        mask_secret(salt)
    return salt or None


def get_salt() -> str:
    """The salt from the Airflow Variable (or its env form), masked in logs; clear error when missing."""
    return check_salt(read_salt())


def derive_key(salt: str) -> str:
    """Hex key used inside SQL (HMAC of a fixed label under the salt), masked in logs.

    128 bits (32 hex characters): every keyed hash is ``md5(key || '|purpose|' || value)``, and with
    a 32-character key a short value (name, date, phone, postal code) fits md5's first 64-byte block,
    which halves the hashing cost of those columns."""
    mac = hmac.new(salt.encode("utf-8"), b"scalingo-staging-sync/anonymize/v2", hashlib.sha256)
    key = mac.hexdigest()[:32]
    mask_secret(key)
    return key


#: text styles of every masking session: ``date_shift`` hashes a date's or timestamp's text, which the
#: role's or server's DateStyle and TimeZone would otherwise change (and with it every shift); the
#: same values as verification reads in (fingerprint.TEXT_STYLES)
MASKING_STYLES = {name: TEXT_STYLES[name] for name in ("DateStyle", "TimeZone")}


def key_settings(key: str) -> dict[str, str]:
    """The settings a masking session needs: ``{KEY_GUC: key}`` and :data:`MASKING_STYLES`."""
    return {KEY_GUC: key, **MASKING_STYLES}


def target_with_key(target: PgTarget, key: str) -> PgTarget:
    """``target`` whose sessions (psycopg or libpq tools through PGOPTIONS) carry the key
    setting."""
    from dataclasses import replace

    options = dict(target.options)
    # hex, digits and "-" only: nothing to escape
    extra = " ".join(f"-c {name}={value}" for name, value in key_settings(key).items())
    options["options"] = f"{options['options']} {extra}" if options.get("options") else extra
    return replace(target, options=options)
