"""Shared test setup.

- ``@pytest.mark.slow`` tests run only when SCION_FULL_TESTS=1.
- ``@pytest.mark.netns`` tests (and any test using the ``requires_root_netns`` or ``netns_pair``
  fixtures) need root and working network namespaces; elsewhere they are skipped with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from scion_appliance import netns

FULL = os.environ.get("SCION_FULL_TESTS") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    slow_skip = None if FULL else pytest.mark.skip(reason="slow: set SCION_FULL_TESTS=1 to run")
    netns_items = [item for item in items if "netns" in item.keywords]
    why_not = netns.unavailable_reason() if netns_items else None
    for item in items:
        if slow_skip is not None and "slow" in item.keywords:
            item.add_marker(slow_skip)
    if why_not is not None:
        netns_skip = pytest.mark.skip(reason=f"netns: {why_not}")
        for item in netns_items:
            item.add_marker(netns_skip)


@pytest.fixture
def requires_root_netns() -> None:
    """Skips the test, with the reason, unless it runs as root where network namespaces work."""
    why_not = netns.unavailable_reason()
    if why_not is not None:
        pytest.skip(f"netns: {why_not}")


@pytest.fixture
def netns_pair(requires_root_netns: None) -> Iterator[netns.LinkedPair]:
    """Two fresh namespaces joined by a veth (``veth0`` in each): 198.51.100.1/30 in ``a``,
    198.51.100.2/30 in ``b``. Deleted after the test whatever happens."""
    with netns.linked_pair("198.51.100.1/30", "198.51.100.2/30") as pair:
        yield pair
