"""Over many seeds: a clean synthetic run always passes, and each injected bug fails exactly its invariant."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.checkers import check_all
from harness.checkers.synth import BUGS, generate_run

pytestmark = pytest.mark.unit

seeds = st.integers(min_value=0, max_value=2**31 - 1)


@settings(max_examples=15, deadline=None)
@given(seed=seeds, ops=st.integers(min_value=800, max_value=5000))
def test_clean_runs_pass_for_any_seed(seed: int, ops: int) -> None:
    results = check_all(generate_run(ops=ops, seed=seed).events)
    assert [(r.invariant, r.explanation) for r in results if r.verdict != "pass"] == []


@settings(max_examples=25, deadline=None)
@given(seed=seeds, bug=st.sampled_from(sorted(BUGS)))
def test_each_bug_fails_exactly_one_invariant_for_any_seed(seed: int, bug: str) -> None:
    run = generate_run(ops=2500, seed=seed, bugs=frozenset({bug}))
    assert bug in run.truth
    fails = [r.invariant for r in check_all(run.events) if r.verdict == "fail"]
    assert len(fails) == 1, fails
