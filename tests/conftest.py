"""This project's own run order: unit tests first (fast feedback), then the rest in collection order.

The ha-chaos pytest plugin then moves what is its to move - tests of the shared ``topology`` fixture, then chaos
tests - to the end (``harness.pytest_plugin.pytest_collection_modifyitems``, which runs after this hook). So the
whole suite runs: unit, Docker tests with their own processes or topologies, the shared topology's tests, chaos.
The plugin does not put unit tests first itself: it is installed for every project on the machine, and another
project's order is not its business.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: 0 if item.get_closest_marker("unit") else 1)
