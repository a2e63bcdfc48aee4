"""Typed errors of the Scalingo client. Every message says what went wrong *and* what to do about it."""

from __future__ import annotations

from scalingo_staging_sync.errors import SyncError


class ScalingoApiError(SyncError):
    """Any failure talking to Scalingo (base class).

    ``status`` is the HTTP status when there was a response, ``url`` the request URL (never a signed
    download URL: those are secrets), ``body`` the parsed error body when Scalingo sent one. ``unsent``:
    the request failed before the server could act on it (a 429, a connection never made), so sending
    it again cannot repeat its effect.
    """

    unsent: bool = False

    def __init__(self, message: str, *, status: int | None = None, url: str | None = None, body=None):
        super().__init__(message)
        self.status = status
        self.url = url
        self.body = body

    def reworded(self, message: str, cls: type[ScalingoApiError] | None = None) -> ScalingoApiError:
        """The same failure (``status``, ``url``, ``body``) told by ``message``, as ``cls`` (its own
        class by default): an error that says more about what to do, raised ``from None``."""
        return (cls or type(self))(message, status=self.status, url=self.url, body=self.body)


class ScalingoAuthError(ScalingoApiError):
    """The API token, the user JWT or an addon token was refused (401/403)."""


class ScalingoNotFoundError(ScalingoApiError):
    """App, addon, database or backup not found (404)."""


class BackupNotListedError(ScalingoNotFoundError):
    """The backup id is in neither the one-backup route nor the list of the addon's backups."""


class AddonNotFoundError(ScalingoNotFoundError):
    """The app has no PostgreSQL addon, or several and no explicit addon id was given."""


class ScalingoRateLimitError(ScalingoApiError):
    """429 Too Many Requests, still failing after the retries."""

    retryable = True


class ScalingoServerError(ScalingoApiError):
    """5xx or connection error, still failing after the retries."""

    retryable = True


class BackupNotReadyError(ScalingoApiError):
    """No usable (``done``) backup yet, or waiting for one timed out."""

    retryable = True


class BackupFailedError(ScalingoApiError):
    """The backup ended in ``error`` / ``cancelled``."""


class ScalingoDownloadError(ScalingoApiError):
    """The backup archive could not be downloaded completely (size, interrupted stream, not a gzip)."""

    retryable = True


class ScalingoArchiveError(ScalingoApiError):
    """The archive is unsafe (``..``, absolute path, link, device) or holds no PostgreSQL dump."""


class ScalingoOperationError(ScalingoApiError):
    """A scale / restart / one-off run operation ended in error or did not finish in time."""
