"""The browser tests: `pytest -m browser tests/browser` selects them; `make test` runs them too."""

from __future__ import annotations


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "browser: drives a real Airflow (standalone) with headless Chromium through Playwright"
    )
