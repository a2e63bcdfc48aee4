"""Shared plumbing of every operator: coercion of templated values and the one error mapping.

**Coercion.** A templated field is a native value when the DAG sets ``render_template_as_native_obj``
and a string otherwise (``"False"``, ``"0"``, ``"['a']"``, ``'["a"]'``, ``"a,b"``, ``"None"``). Every
operator reads its templated fields through these helpers, so it behaves the same either way.

**Errors.** :func:`sync_errors` is the only place where provider errors meet Airflow: a
:class:`~scalingo_staging_sync.errors.SyncError` that a retry cannot fix (``retryable=False``) becomes
``AirflowFailException`` (the task fails at once, no retry spent), and so does a plain ``ValueError`` (an
argument the code refused: ``mode="bogus"``); a retryable one is re-raised as is.
"""

from __future__ import annotations

import ast
import functools
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from scalingo_staging_sync.errors import SyncError

_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off", "none", "null", ""}
_EMPTY = ("", "none", "null")


class CoercionError(SyncError, ValueError):
    """A templated value cannot be read as the type its field needs (bad input: not retryable)."""

    retryable = False


def _is_empty_text(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() in _EMPTY


def as_bool(value: Any, name: str = "value") -> bool:
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    if isinstance(value, (int, float)):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise CoercionError(f"{name}: expected a boolean (true/false), got {value!r}")


def as_int(value: Any, name: str = "value", *, default: int | None = None) -> int | None:
    if value is None or _is_empty_text(value):
        return default
    if isinstance(value, bool):
        raise CoercionError(f"{name}: expected an integer, got {value!r}")
    try:
        number = float(value) if isinstance(value, str) and "." in value else value
        if isinstance(number, float) and not number.is_integer():
            raise ValueError
        return int(number)
    except (TypeError, ValueError):
        raise CoercionError(f"{name}: expected an integer, got {value!r}") from None


def as_float(value: Any, name: str = "value", *, default: float | None = None) -> float | None:
    if value is None or _is_empty_text(value):
        return default
    if isinstance(value, bool):
        raise CoercionError(f"{name}: expected a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise CoercionError(f"{name}: expected a number, got {value!r}") from None


def as_str(value: Any, name: str = "value", *, default: str | None = None) -> str | None:
    if value is None or _is_empty_text(value):
        return default
    return str(value).strip()


def _literal(text: str, name: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise CoercionError(f"{name}: {text[:200]!r} is neither JSON nor a Python literal") from None


def as_list(value: Any, name: str = "value") -> list[Any]:
    """None / "" / "None" -> []; a list, tuple or lazy XCom sequence -> list; ``"['a']"``, ``'["a"]'``
    -> parsed; ``"a,b"`` -> ``["a", "b"]``; ``"a"`` -> ``["a"]``; a mapping (one item) -> ``[mapping]``."""
    if value is None or _is_empty_text(value):
        return []
    if isinstance(value, Mapping):
        return [dict(value)]
    if isinstance(value, str):
        text = value.strip()
        if text[:1] in "[(":
            parsed = _literal(text, name)
            if not isinstance(parsed, (list, tuple)):
                raise CoercionError(f"{name}: expected a list, got {value!r}")
            return list(parsed)
        if text[:1] == "{":
            return [as_mapping(text, name)]
        return [part.strip() for part in text.split(",") if part.strip()]
    try:
        return list(value)
    except TypeError:
        raise CoercionError(f"{name}: expected a list, got {value!r}") from None


def as_mapping(value: Any, name: str = "value") -> dict[str, Any] | None:
    """None / "" / "None" -> None; a mapping -> dict; a JSON or Python-literal string -> dict."""
    if value is None or _is_empty_text(value):
        return None
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str):
        parsed = _literal(value.strip(), name)
        if parsed is None:
            return None
        if isinstance(parsed, Mapping):
            return dict(parsed)
    raise CoercionError(f"{name}: expected a mapping (JSON object), got {str(value)[:200]!r}")


def as_mapping_list(value: Any, name: str = "value") -> list[dict[str, Any]]:
    """A list of mappings (e.g. mapped tasks' results); None items are dropped."""
    out = []
    for item in as_list(value, name):
        mapping = as_mapping(item, name)
        if mapping is not None:
            out.append(mapping)
    return out


# ----------------------------------------------------------------------------- errors
def airflow_exception_for(exc: BaseException) -> BaseException | None:
    """The exception to raise instead of ``exc``: AirflowFailException for a non-retryable SyncError
    (or None: re-raise ``exc`` unchanged)."""
    if (isinstance(exc, SyncError) and not getattr(exc, "retryable", True)) or type(exc) is ValueError:
        # a plain ValueError is an argument the code refused (an unknown mode, a bad level): a retry
        # cannot fix it (its subclasses, such as a JSON decoding error of an answer, keep their retries)
        from airflow.sdk.exceptions import AirflowFailException

        return AirflowFailException(f"{type(exc).__name__}: {exc}")
    return None


@contextmanager
def sync_errors() -> Iterator[None]:
    """Map provider errors to Airflow's retry semantics (see the module docstring)."""
    try:
        yield
    except (SyncError, ValueError) as exc:
        mapped = airflow_exception_for(exc)
        if mapped is None:
            raise
        raise mapped from exc


F = TypeVar("F", bound=Callable[..., Any])


def maps_sync_errors(method: F) -> F:
    """Decorator for ``execute`` / ``execute_complete``: runs it inside :func:`sync_errors`, then releases
    the dump copies the task leased (:func:`scalingo_staging_sync.operators._dump.release_dumps`)."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from scalingo_staging_sync.operators._dump import releasing_dumps

        with sync_errors(), releasing_dumps():
            return method(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def run_owner(context: Any) -> str | None:
    """``<dag id>/<run id>`` of the running task (the owner a scratch database records), or None."""
    try:
        ti = context["ti"]
        return f"{ti.dag_id}/{ti.run_id}"
    except (KeyError, TypeError, AttributeError):
        return None
