"""Fixtures of the plan-layer unit tests (no Docker anywhere here)."""

from __future__ import annotations

import pytest

from harness.topology.model import TopologyModel, reference_model


@pytest.fixture
def model() -> TopologyModel:
    """The reference topology that plans are validated against."""
    return reference_model()
