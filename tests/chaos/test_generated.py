"""Hypothesis-generated fault plans against the live topology.

The ``ci`` budget runs a couple of short plans, ``nightly`` the profile's large budget. ``--chaos-seed S`` seeds
the generation (the seed in use is printed in the session header and summary, recorded as the JUnit property
``chaos_seed`` and named in a failure); ``nightly`` without it draws a fresh seed, ``ci`` without it is
derandomized. Hypothesis's own shrinking is off for live runs (it is flaky against real containers); a failing
plan is written, as run, to ``fault_plans/found/`` (run first by ``ha-chaos run`` and the nightly tier) and
minimised with ``ha-chaos shrink``, which tolerates flakiness.

The test runs every example, so its pytest-timeout is derived from the budget: examples x the bound of one live
example (``harness.pytest_plugin.generated_timeout_s``), instead of pyproject's 900 s for one test.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import seed as hypothesis_seed

from harness.plans.loader import save_found
from harness.plans.strategies import fault_plans
from harness.pytest_plugin import describe, generated_timeout_s, plan_seed
from harness.topology.model import reference_model

pytestmark = pytest.mark.chaos


def _budget() -> int | None:
    import os

    return None if os.environ.get("HA_CHAOS_BUDGET") == "nightly" else 2


SEED = plan_seed()
EXAMPLES = _budget() or settings().max_examples


def _seeded(test):  # type: ignore[no-untyped-def]
    """A given seed overrides derandomize (and, by Hypothesis's rule, leaves the example database out)."""
    return hypothesis_seed(SEED)(test) if SEED is not None else test


# The ci budget draws the same few plans every time (derandomize): CI is a smoke test and must be reproducible;
# exploring new plans is the nightly budget's job (a fresh seed, printed).
@pytest.mark.timeout(generated_timeout_s(EXAMPLES))
@_seeded
@settings(max_examples=EXAMPLES, derandomize=_budget() is not None,
          database=None if _budget() is not None else settings().database)
@given(plan=fault_plans(reference_model(), max_steps=2, max_at=10.0, max_duration=10.0))
def test_generated_plans_hold_every_invariant(chaos_run, request, plan) -> None:
    seed_property = ("chaos_seed", "derandomized" if SEED is None else SEED)
    if seed_property not in request.node.user_properties:  # once, not once per example
        request.node.user_properties.append(seed_property)
    outcome = chaos_run(plan, generated=True)
    reproduce = "" if SEED is None else f"\n  seed: {SEED} (reproduce with --chaos-seed {SEED})"
    if outcome.verdict == "fail":
        path = save_found(plan)
        pytest.fail(f"{describe(outcome)}\n  saved: {path}{reproduce}", pytrace=False)
    assert outcome.verdict != "error", describe(outcome) + reproduce
