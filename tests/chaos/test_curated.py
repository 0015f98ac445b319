"""Curated plans on the correct reference nodes must PASS (faults took effect, every invariant held)."""

from __future__ import annotations

import pytest

from harness.pytest_plugin import describe

pytestmark = pytest.mark.chaos


def test_curated_plan_passes(chaos_run, curated_plan: str) -> None:
    outcome = chaos_run(curated_plan)
    assert outcome.verdict == "pass", describe(outcome)
