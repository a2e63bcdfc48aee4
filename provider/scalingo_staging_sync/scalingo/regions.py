"""Static table of Scalingo regions (fallback when the regions endpoint cannot be read) and URL helpers."""

from __future__ import annotations

from urllib.parse import urlsplit

DEFAULT_REGION = "osc-fr1"
DEFAULT_AUTH_URL = "https://auth.scalingo.com"

STATIC_REGIONS: dict[str, dict[str, str]] = {
    "osc-fr1": {
        "api": "https://api.osc-fr1.scalingo.com",
        "database_api": "https://db-api.osc-fr1.scalingo.com",
    },
    "osc-secnum-fr1": {
        "api": "https://api.osc-secnum-fr1.scalingo.com",
        "database_api": "https://db-api.osc-secnum-fr1.scalingo.com",
    },
}


def normalize_base_url(value: str, field: str) -> str:
    """``scheme://host[:port][/prefix]`` without trailing slash; the client appends ``/v1`` or ``/api``.

    A trailing ``/v1`` or ``/api`` (a common copy-paste) is dropped; any other path is kept as a prefix
    (an API served behind a path, e.g. a proxy or a test server), as are no query and no fragment.
    """
    raw = (value or "").strip()
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"{field}={raw!r} is not a base URL: expected scheme and host like "
            f"'https://api.osc-fr1.scalingo.com' (the client adds /v1 or /api itself)."
        )
    if parts.query or parts.fragment:
        raise ValueError(
            f"{field}={raw!r} has a query or fragment; give only scheme and host, e.g. "
            f"'{parts.scheme}://{parts.netloc}' (the client adds /v1 or /api itself)."
        )
    path = parts.path.rstrip("/")
    for suffix in ("/v1", "/api"):
        if path.endswith(suffix):
            path = path[: -len(suffix)].rstrip("/")
            break
    return f"{parts.scheme}://{parts.netloc}{path}"
