"""Swarm generation: plans limited to a subset of kinds and target roles (``fault_plans(roles=...)``), the subset
drawn per plan and steered toward uncovered cells, and every generated plan a real scenario."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.coverage import PHASES, Tally, coarse_role, universe
from harness.plans.loader import dump_plan
from harness.plans.profiles import register_profiles
from harness.plans.schema import Plan
from harness.plans.strategies import GENERATED_KINDS, TARGET_ROLES, applicable_kinds, fault_plans, restrict
from harness.plans.targets import FakeView, resolve
from harness.plans.timeline import nominal_timeline
from harness.shard import Shard, plan_seed
from harness.swarm import (
    MIN_FAULT_S,
    MIN_STEPS,
    MIN_WORKLOAD,
    RECOVERY_BOUND_S,
    Swarm,
    SwarmSource,
    compatibility,
    distinct_steps,
    draw_swarm,
    weighted_sample,
)
from harness.topology.model import reference_model

pytestmark = pytest.mark.unit
MODEL = reference_model()
register_profiles()


def _hit_roles(step: object) -> set[str]:
    """The model roles of what a step hits on a healthy topology (a link: its client's role)."""
    view = FakeView.initial(MODEL)
    groups = getattr(getattr(step, "params", None), "groups", None)
    texts = [t for g in groups for t in g] if groups else step.targets  # type: ignore[attr-defined]
    if not texts:
        texts = ["primary(postgres)"]  # db_failover
    names = {n for t in texts for n in resolve(t, view, random.Random(0))}
    links = {lk.name: lk for lk in MODEL.links}
    return {MODEL.service(links[n].client if n in links else n).role for n in names} - {"faultproxy"}


@settings(settings.get_profile("unit"), max_examples=150)
@given(st.data())
def test_plans_limited_to_roles_hit_only_those_roles(data: st.DataObject) -> None:
    roles = data.draw(st.sets(st.sampled_from(TARGET_ROLES), min_size=1, max_size=3), label="roles")
    kinds = applicable_kinds(restrict(MODEL, roles), GENERATED_KINDS)
    plan = data.draw(fault_plans(MODEL, kinds=kinds, roles=roles, min_steps=2, min_duration=3.0), label="plan")
    assert len(plan.steps) >= 2
    for step in plan.steps:
        assert _hit_roles(step) <= roles, (roles, step)
        if step.duration is not None:
            assert step.duration >= 3.0


def test_restricting_to_roles() -> None:
    with pytest.raises(ValueError, match="unknown target role"):
        restrict(MODEL, ["participant", "ledger-lb"])
    etcd = restrict(MODEL, ["etcd"])
    assert {s.role for s in etcd.services} == {"etcd"} and not etcd.links  # no proxied link: no fault proxy
    seq = restrict(MODEL, ["sequencer"])
    assert {s.role for s in seq.services} == {"sequencer", "faultproxy"}
    assert {lk.client for lk in seq.links} == {"seq1", "seq2", "seq3"}
    with pytest.raises(ValueError, match="applies"):
        applicable_kinds(etcd, ["toxic", "set_passive", "db_failover"])


def test_a_partition_from_the_fault_proxy_always_cuts_a_service_with_proxied_links() -> None:
    linked = {lk.client for lk in MODEL.links}

    @settings(settings.get_profile("unit"), max_examples=200, database=None, derandomize=True)
    @given(fault_plans(MODEL, kinds=["partition"], max_steps=1))
    def check(plan: Plan) -> None:
        groups = plan.steps[0].params.groups  # type: ignore[attr-defined]
        if ["faultproxy"] in groups:
            other = next(g for g in groups if g != ["faultproxy"])
            view = FakeView.initial(MODEL)
            assert {n for t in other for n in resolve(t, view, random.Random(0))} <= linked, groups

    check()


def test_each_kind_is_compatible_with_the_roles_it_can_hit() -> None:
    compat = compatibility(MODEL, GENERATED_KINDS)
    assert compat["db_failover"] == ("postgres",)
    assert set(compat["toxic"]) == {"participant", "mediator", "sequencer"}
    assert set(compat["set_passive"]) == {"participant", "mediator"}
    assert set(compat["kill"]) == set(TARGET_ROLES) and set(compat["partition"]) == set(TARGET_ROLES)


def test_a_swarm_is_a_compatible_subset_drawn_reproducibly() -> None:
    compat = compatibility(MODEL, GENERATED_KINDS)
    sizes = Counter()
    for seed in range(300):
        swarm = draw_swarm(random.Random(seed), MODEL)
        assert swarm == draw_swarm(random.Random(seed), MODEL)
        assert 1 <= len(swarm.kinds) <= 4 and 1 <= len(swarm.roles) <= 3
        assert all(set(compat[k]) & set(swarm.roles) for k in swarm.kinds)
        assert applicable_kinds(restrict(MODEL, swarm.roles), swarm.kinds)
        sizes[len(swarm.kinds)] += 1
    assert len(sizes) >= 3  # plans differ in how much they mix, not only in what


def test_weighted_sampling_favours_heavier_keys_without_repeats() -> None:
    rng = random.Random(1)
    picks = Counter()
    for _ in range(2000):
        drawn = weighted_sample(rng, {"a": 1.0, "b": 1.0, "c": 8.0, "z": 0.0}, 2)
        assert len(set(drawn)) == 2 and "z" not in drawn
        picks.update(drawn)
    assert picks["c"] > 1.5 * picks["a"]


def _covered_except(kind: str | None = None, role: str | None = None, times: int = 5) -> Tally:
    """A tally that covered every cell ``times`` times except those of ``kind`` / of coarse ``role``."""
    tally = Tally()
    cells = [{"kind": k, "role": r, "phase": p, "count": times} for k, r in universe(MODEL) for p in PHASES
             if k != kind and coarse_role(r) != role]
    tally.add({"run": "earlier/night", "cells": cells})
    return tally


def test_steering_draws_uncovered_kinds_more_often() -> None:
    steered, plain = Counter(), Counter()
    tally = _covered_except(kind="pause")
    for seed in range(400):
        steered.update(draw_swarm(random.Random(seed), MODEL, tally).kinds)
        plain.update(draw_swarm(random.Random(seed), MODEL, Tally()).kinds)
    others = [steered[k] for k in GENERATED_KINDS if k != "pause"]
    assert steered["pause"] > 2 * (sum(others) / len(others)), steered
    assert steered["pause"] > 1.5 * plain["pause"], (steered, plain)
    assert all(steered[k] > 0 for k in GENERATED_KINDS)  # covered kinds still come now and then


def test_steering_draws_uncovered_roles_more_often() -> None:
    steered, plain = Counter(), Counter()
    tally = _covered_except(role="mediator")
    for seed in range(400):
        steered.update(draw_swarm(random.Random(seed), MODEL, tally).roles)
        plain.update(draw_swarm(random.Random(seed), MODEL, Tally()).roles)
    assert steered["mediator"] > 1.5 * plain["mediator"], (steered, plain)
    assert steered["mediator"] == max(steered.values()), steered


def test_generated_plans_are_real_scenarios() -> None:
    """No 0.5 s blackhole of one link, no two identical toxics at once: at least two steps, lasting faults of at
    least MIN_FAULT_S, the workload on, and only the swarm's kinds and roles."""
    for g in SwarmSource(11, limit=12):
        plan = g.plan
        assert plan.name == f"generated-11-{g.number}" and g.seed == plan_seed(11, g.number)
        assert len(plan.steps) >= MIN_STEPS and plan.workload is not None
        assert all(getattr(plan.workload, k) >= v for k, v in MIN_WORKLOAD.items())  # both participants, resubmits
        assert all(s.duration is None or s.duration >= MIN_FAULT_S for s in plan.steps)
        assert distinct_steps(plan)
        assert {s.kind_name for s in plan.steps} <= set(g.swarm.kinds)
        assert all(_hit_roles(s) <= set(g.swarm.roles) for s in plan.steps)
        assert g.swarm.text() in plan.description
        assert plan.recovery_bound_s == RECOVERY_BOUND_S <= plan.quiet_period  # a drawn 5 s bound fails correct nodes
        assert nominal_timeline(plan).total <= 150  # a plan fits many times in a 30-minute budget


def test_identical_steps_in_effect_together_are_refused() -> None:
    from harness.plans.loader import parse_plan

    text = """\
version: 1
name: twice
description: the same toxic twice
steps:
  - {kind: toxic, at: 0, target: db_link(active(p1)), params: {type: timeout, attributes: {timeout: 0}}, duration: 5}
  - {kind: toxic, at: %s, target: db_link(active(p1)), params: {type: timeout, attributes: {timeout: 0}}, duration: 5}
"""
    assert not distinct_steps(parse_plan(text % 2, "x.yaml"))
    assert distinct_steps(parse_plan(text % 10, "x.yaml"))  # one after the other: a repeated fault, fine


def test_the_same_seed_and_coverage_give_the_same_plans_and_shards_split_them() -> None:
    whole = {g.number: (g.seed, dump_plan(g.plan), g.swarm) for g in SwarmSource(5, limit=6)}
    again = {g.number: (g.seed, dump_plan(g.plan), g.swarm) for g in SwarmSource(5, limit=6)}
    assert whole == again and sorted(whole) == list(range(6))
    parts = [{g.number: (g.seed, dump_plan(g.plan), g.swarm) for g in SwarmSource(5, shard=Shard(i, 2), limit=6)}
             for i in (1, 2)]
    assert not set(parts[0]) & set(parts[1])
    assert {**parts[0], **parts[1]} == whole
    assert isinstance(whole[0][2], Swarm)
