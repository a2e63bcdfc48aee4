"""The root of every error the provider raises on purpose, with a ``retryable`` flag.

Core modules raise subclasses of :class:`SyncError`. The Airflow adapters turn a non-retryable one into
``AirflowFailException`` (the task fails at once, its retries are not spent) and let a retryable one
propagate (Airflow retries the task). That mapping lives in one place: ``operators._base``.

``retryable`` is a class attribute that an instance may override (``SyncError("...", retryable=True)``).
"""

from __future__ import annotations


class SyncError(Exception):
    """Base class. ``retryable=False`` by default: wrong input never gets better by retrying."""

    retryable: bool = False

    def __init__(self, *args: object, retryable: bool | None = None) -> None:
        super().__init__(*args)
        if retryable is not None:
            self.retryable = retryable


class TransientError(SyncError):
    """A failure that may pass on its own (network, server restarting, lock timeout)."""

    retryable = True


def is_retryable(exc: BaseException) -> bool:
    """Whether retrying the task could help. Errors that are not ours count as retryable (unknown)."""
    if isinstance(exc, SyncError):
        return bool(exc.retryable)
    return True
