"""Airflow hooks of the provider."""

from __future__ import annotations

import importlib

__all__ = ["ScalingoHook"]


def __getattr__(name: str):
    if name == "ScalingoHook":
        value = importlib.import_module("scalingo_staging_sync.hooks.scalingo").ScalingoHook
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
