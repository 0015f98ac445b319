"""Hypothesis-generated fault plans against the live topology.

The ``ci`` budget runs a couple of short plans, ``nightly`` the profile's large budget. Hypothesis's own
shrinking is off for live runs (it is flaky against real containers); a failing plan is written to
``fault_plans/found/`` and minimised with ``ha-chaos shrink``, which tolerates flakiness.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from harness.plans.loader import save_found
from harness.plans.strategies import fault_plans
from harness.pytest_plugin import describe
from harness.topology.model import reference_model

pytestmark = pytest.mark.chaos


def _budget() -> int | None:
    import os

    return None if os.environ.get("HA_CHAOS_BUDGET") == "nightly" else 2


# The ci budget draws the same few plans every time (derandomize): CI is a smoke test and must be reproducible;
# exploring new plans is the nightly budget's job (random, with the example database).
@settings(max_examples=_budget() or settings().max_examples, derandomize=_budget() is not None,
          database=None if _budget() is not None else settings().database)
@given(plan=fault_plans(reference_model(), max_steps=2, max_at=10.0, max_duration=10.0))
def test_generated_plans_hold_every_invariant(chaos_run, plan) -> None:
    outcome = chaos_run(plan)
    if outcome.verdict == "fail":
        path = save_found(plan)
        pytest.fail(f"{describe(outcome)}\n  saved: {path}", pytrace=False)
    assert outcome.verdict != "error", describe(outcome)
