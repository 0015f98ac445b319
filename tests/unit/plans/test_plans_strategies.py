"""Generated plans: always valid, YAML round-trip, resolvable, and executable on fakes without leaking."""

from __future__ import annotations

import random
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.history import HistoryWriter
from harness.plans.executor import Executor
from harness.plans.fakes import FakeClock, FakeInjector
from harness.plans.loader import dump_plan, parse_plan
from harness.plans.profiles import PROFILES, load_profile, register_profiles
from harness.plans.schema import KINDS, Plan
from harness.plans.strategies import applicable_kinds, fault_plans
from harness.plans.targets import FakeView, ResolutionError, resolve
from harness.topology.model import postgres_model, reference_model

pytestmark = pytest.mark.unit
REFERENCE = reference_model()
register_profiles()


@settings(settings.get_profile("unit"), max_examples=150)
@given(fault_plans(REFERENCE, max_steps=5))
def test_generated_plans_are_valid_and_round_trip(plan: Plan) -> None:
    assert parse_plan(dump_plan(plan), "generated.yaml") == plan
    view = FakeView.initial(REFERENCE)
    for step in plan.steps:
        for target in step.targets:
            try:
                assert resolve(target, view, random.Random(plan.seed))
            except ResolutionError:
                pytest.fail(f"{target} does not resolve on a healthy topology")


@settings(settings.get_profile("unit"), max_examples=60)
@given(fault_plans(REFERENCE, max_steps=4))
def test_generated_plans_execute_on_fakes_without_leaks(plan: Plan) -> None:
    view = FakeView.initial(REFERENCE)
    inj = FakeInjector(view)
    with tempfile.TemporaryDirectory() as d, HistoryWriter(Path(d) / "h.jsonl") as hist:
        result = Executor(plan, inj, view, hist, d, clock=FakeClock(), stop_on_fail=False).run()
    assert not inj.in_effect
    assert all(s.state in ("healed", "failed", "skipped") for s in result.steps)


@settings(settings.get_profile("unit"), max_examples=40)
@given(fault_plans(postgres_model(), kinds=KINDS))
def test_the_postgres_profile_gets_only_kinds_it_can_take(plan: Plan) -> None:
    assert {s.kind_name for s in plan.steps} <= {"partition", "kill", "stop", "pause", "restart", "db_failover",
                                                 "slow_node", "packet_loss"}


@settings(settings.get_profile("unit"), max_examples=40)
@given(fault_plans(REFERENCE, kinds=["toxic"], max_steps=2))
def test_kinds_restrict_what_is_drawn(plan: Plan) -> None:
    assert {s.kind_name for s in plan.steps} == {"toxic"}


def test_targets_lean_toward_the_active_side() -> None:
    """Weighting is a claim about the distribution, so measure it over many draws."""
    counts: Counter[str] = Counter()

    @settings(settings.get_profile("unit"), max_examples=300, database=None, derandomize=True)
    @given(fault_plans(REFERENCE, kinds=["kill", "toxic"], max_steps=1))
    def collect(plan: Plan) -> None:
        target = plan.steps[0].targets[0]
        counts["active" if "active(" in target else "passive" if "passive(" in target else "other"] += 1

    collect()
    assert counts["active"] > 2 * counts["passive"]
    assert counts["active"] > counts["other"] / 2


def test_overlapping_faults_are_generated() -> None:
    seen = []

    @settings(settings.get_profile("unit"), max_examples=200, database=None, derandomize=True)
    @given(fault_plans(REFERENCE, kinds=["kill", "toxic", "pause"], max_steps=3))
    def collect(plan: Plan) -> None:
        spans = [(s.at, s.at + s.duration) for s in plan.steps if s.at is not None and s.duration]
        seen.append(any(a[0] <= b[0] < a[1] for a in spans for b in spans if a is not b))

    collect()
    assert sum(seen) > len(seen) // 10


def _shape(step: object) -> str:
    """A generated DB-tier fault, named as the issue names it (or "other")."""
    kind = step.kind_name  # type: ignore[attr-defined]
    if kind == "kill" and step.targets == ["any(etcd)"]:  # type: ignore[attr-defined]
        return "etcd member killed"
    if kind != "partition":
        return "other"
    groups = sorted(map(tuple, step.params.groups))  # type: ignore[attr-defined]
    direction = step.params.direction  # type: ignore[attr-defined]
    return {
        (("any(replica(postgres))",), ("primary(postgres)",)): f"one standby's replication cut, {direction}",
        (("primary(postgres)",), ("replica(postgres)",)): "every standby cut from the primary",
        (("all(etcd)",), ("primary(postgres)",)): "leader cut from the DCS",
        (("all(etcd)", "replica(postgres)"), ("primary(postgres)",)): "leader cut from the DCS and the standbys",
    }.get(tuple(groups), "other")  # type: ignore[arg-type]


@pytest.mark.parametrize("model", [REFERENCE, postgres_model()], ids=["full", "postgres"])
def test_db_tier_faults_are_generated(model: object) -> None:
    """Issue 12 item 2: the DB tier has three Patroni nodes and three etcd members; generated plans cut a
    standby's replication (both ways and one way), every standby, the leader from the DCS, and kill an etcd member.
    """
    counts: Counter[str] = Counter()

    @settings(settings.get_profile("unit"), max_examples=400, database=None, derandomize=True)
    @given(fault_plans(model, kinds=["partition", "kill"], max_steps=1))  # type: ignore[arg-type]
    def collect(plan: Plan) -> None:
        counts[_shape(plan.steps[0])] += 1
        for step in plan.steps:  # no literal "etcd" service any more: every target resolves
            view = FakeView.initial(model)  # type: ignore[arg-type]
            for text in step.targets + [t for g in getattr(getattr(step, "params", None), "groups", []) for t in g]:
                assert resolve(text, view, random.Random(0))

    collect()
    shapes = {"etcd member killed", "one standby's replication cut, two_way",
              "one standby's replication cut, one_way", "every standby cut from the primary",
              "leader cut from the DCS", "leader cut from the DCS and the standbys"}
    assert shapes <= set(counts), counts
    assert sum(counts[s] for s in shapes) > counts["other"] / 4, counts


def test_unknown_kind_and_profiles() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        applicable_kinds(REFERENCE, ["kil"])
    with pytest.raises(ValueError, match="applies"):
        applicable_kinds(postgres_model(), ["toxic"])
    assert set(PROFILES) >= {"ci", "nightly"}
    for name in ("ci", "nightly"):
        prof = settings.get_profile(name)
        assert prof.deadline is None
    assert settings.get_profile("ci").max_examples < settings.get_profile("nightly").max_examples
    with pytest.raises(ValueError):
        load_profile("weekly")


@given(st.data())
@settings(settings.get_profile("unit"), max_examples=5)
def test_strategy_is_usable_from_data(data: st.DataObject) -> None:
    plan = data.draw(fault_plans(REFERENCE, max_steps=2))
    assert 1 <= len(plan.steps) <= 2
