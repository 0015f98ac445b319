"""Shrinker and replay against a fake runner with a known minimal cause and 30 % flakiness."""

from __future__ import annotations

import random

import pytest

from harness.plans.loader import dump_plan, parse_plan
from harness.plans.schema import Plan
from harness.plans.shrink import DidNotReproduce, candidates, replay, shrink

pytestmark = pytest.mark.unit

BIG = """\
version: 1
name: big
description: eight faults, two of which together cause the failure
seed: 7
workload: {rate: 20, clients: 8}
steps:
  - {kind: pause, at: 1, target: passive(p2), duration: 6}
  - {kind: kill, at: 3, target: active(p1), params: {signal: KILL}, duration: 12}
  - {kind: toxic, at: 4, target: seq_links(active(p2)), duration: 9,
     params: {type: latency, attributes: {latency: 400, jitter: 100}}}
  - {kind: link_down, at: 5, target: [db_link(passive(p1)), db_link(all(sequencer))], duration: 4}
  - {kind: toxic, after: step_applied(3), target: db_link(active(p2)), duration: 16,
     params: {type: timeout, attributes: {timeout: 0}}}
  - {kind: db_failover, at: 9, params: {mode: switchover}}
  - {kind: restart, at: 11, target: any(sequencer)}
  - {kind: stop, after: step_healed(0), target: passive(med1), until: step_healed(4), max_wait: 30}
quiet_period: 20
"""


def flaky_runner(seed: int, flake: float = 0.3):  # type: ignore[no-untyped-def]
    """Fails 'exactly_once' only if a kill of active(p1) and a blackhole of p2's DB of >= 2 s are both present,
    and then only 70 % of the time; 'liveness' fails at random 20 % of the time, whatever the plan."""
    rng = random.Random(seed)
    calls = []

    def run(plan: Plan) -> set[str]:
        calls.append(plan)
        kill = any(s.kind_name == "kill" and s.target == "active(p1)" for s in plan.steps)
        blackhole = any(s.kind_name == "toxic" and s.target == "db_link(active(p2))"
                        and s.params.type == "timeout" and (s.duration or 0) >= 2 for s in plan.steps)
        failed = set()
        if kill and blackhole and rng.random() >= flake:
            failed.add("exactly_once")
        if rng.random() < 0.2:
            failed.add("liveness")
        return failed

    run.calls = calls  # type: ignore[attr-defined]
    return run


@pytest.mark.parametrize("seed", range(10))
def test_shrinker_finds_the_known_minimal_cause(seed: int) -> None:
    plan = parse_plan(BIG)
    runner = flaky_runner(seed)
    result = shrink(plan, runner, "exactly_once", k=4, max_runs=400)
    kinds = sorted((s.kind_name, s.target) for s in result.minimal.steps)
    assert kinds == [("kill", "active(p1)"), ("toxic", "db_link(active(p2))")], dump_plan(result.minimal)
    toxic = next(s for s in result.minimal.steps if s.kind_name == "toxic")
    assert toxic.duration == 2, "16 s halves to 2 s; 1 s no longer fails"
    assert toxic.after is None and toxic.at is not None, "the removed step it waited on became a time"
    kill = next(s for s in result.minimal.steps if s.kind_name == "kill")
    assert kill.duration == 0.5 and kill.params.signal == "TERM"
    assert result.minimal.workload.rate == 1 and result.minimal.workload.clients == 1
    assert result.runs == len(runner.calls) <= 400
    assert parse_plan(dump_plan(result.minimal)) == result.minimal, "the minimal plan is a valid plan file"
    assert "Minimised from big" in result.minimal.description


def test_shrinker_picks_the_first_failing_invariant_and_refuses_non_reproducers() -> None:
    plan = parse_plan(BIG)
    with pytest.raises(DidNotReproduce):
        shrink(plan, lambda p: set(), k=3)
    with pytest.raises(DidNotReproduce):
        shrink(plan, flaky_runner(1, flake=1.0), "exactly_once", k=3)
    result = shrink(plan, lambda p: {"order"} if len(p.steps) >= 3 else set(), k=1)
    assert result.invariant == "order" and len(result.minimal.steps) == 3


def test_replay_reports_reproduction_rates() -> None:
    plan = parse_plan(BIG)
    result = replay(plan, flaky_runner(3), 200)
    assert result.runs == 200
    assert 0.6 < result.rate("exactly_once") < 0.8
    assert 0.1 < result.rate("liveness") < 0.3
    assert result.summary()["reproduction"]["exactly_once"]["failed"] == result.failures["exactly_once"]
    with pytest.raises(ValueError):
        replay(plan, flaky_runner(3), 0)


def test_every_candidate_is_simpler_and_most_are_valid() -> None:
    from pydantic import ValidationError

    from harness.plans.schema import validate_plan

    plan = parse_plan(BIG)
    valid = 0
    for _label, data in candidates(plan):
        try:
            cand = validate_plan(data)
        except ValidationError:
            continue
        valid += 1
        assert len(cand.steps) <= len(plan.steps)
        assert cand != plan
    assert valid >= 20
