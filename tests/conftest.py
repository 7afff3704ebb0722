"""Shared test setup: ``@pytest.mark.slow`` tests run only when SCION_FULL_TESTS=1."""

from __future__ import annotations

import os

import pytest

FULL = os.environ.get("SCION_FULL_TESTS") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if FULL:
        return
    skip = pytest.mark.skip(reason="slow: set SCION_FULL_TESTS=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
