"""Errors raised by the restore core. All derive from :class:`RestoreError`."""

from __future__ import annotations

from scalingo_staging_sync.errors import SyncError


class RestoreError(SyncError, RuntimeError):
    """A restore step failed; the message says which step and why (never a password)."""


class PgToolsError(RestoreError):
    """The PostgreSQL client tools are missing or unusable."""


class DumpTooNewError(PgToolsError):
    """The dump was made by a newer PostgreSQL than the pg_restore at hand."""


class DumpFormatError(RestoreError):
    """The file is not a readable PostgreSQL dump (corrupt, truncated, unknown format)."""


class MissingExtensionError(RestoreError):
    """The dump needs extensions the target server does not offer."""


class TargetError(RestoreError):
    """The target database cannot be prepared, promoted or cleaned up."""
