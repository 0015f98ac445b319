"""Swarm generation of fault plans, steered toward fault coverage not yet reached.

Swarm testing (Groce et al., "Swarm Testing", ISSTA 2012; TigerBeetle's VOPR and FoundationDB's simulation do the
same): each generated plan enables only a random subset of the fault kinds and target roles, instead of every plan
mixing everything uniformly. A plan of only sequencer faults, or only kills and partitions of the DB tier, reaches
deep states (repeated failovers of one component, faults piling up on one side) that a uniform mix almost never
does, and across many plans every combination still appears. The subset is drawn from a ``random.Random`` seeded
per plan and passed to Hypothesis's ``fault_plans(model, kinds=..., roles=...)``, which draws the plan itself.

Steering: the draw of the subset is weighted by how uncovered each kind and each role still is in the ``Tally`` of
cells (kind x target role x phase, ``harness.coverage``) of this campaign and of the earlier ones in the runs dir:
a kind's weight is ``NOVELTY_FLOOR`` plus the mean of 1 / (1 + count) over its cells, so a kind whose cells were
never hit is drawn far more often than one covered many times, and a covered one still now and then.

Non-trivial plans: Hypothesis starts from the simplest example (one 0.5 s blackhole of one link) and shrinks toward
it; live examples cost 30-60 s each, so every generated plan must be a real scenario. Here each plan has at least
``MIN_STEPS`` steps, every lasting fault at least ``MIN_FAULT_S``, the workload always on and rich (``MIN_WORKLOAD``),
no two identical steps in effect at once, and it is picked among several Hypothesis examples of its seed, never the
first ones.
"""

from __future__ import annotations

import contextlib
import functools
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.coverage import PHASES, Tally, coarse_role, universe
from harness.plans.schema import Plan
from harness.plans.strategies import GENERATED_KINDS, TARGET_ROLES, applicable_kinds, fault_plans, restrict
from harness.plans.timeline import nominal_timeline
from harness.shard import UNSHARDED, Shard, plan_seed
from harness.topology.model import TopologyModel, reference_model

KINDS_PER_PLAN = (1, 4)
ROLES_PER_PLAN = (1, 3)
MIN_STEPS, MAX_STEPS = 2, 4
#: shorter than a lock check or a health probe's timeout, a fault only tests a glitch; curated plans cover those
MIN_FAULT_S, MAX_FAULT_S, MAX_AT_S = 3.0, 15.0, 15.0
#: invariant 10's bound for generated plans, and the quiet period that leaves room for it. Not drawn: a bound is the
#: system's recovery objective, not a fault parameter, and a drawn 5 s bound after a Patroni failover (promotion
#: alone takes up to ~17 s here) would FAIL correct nodes. The curated DB-tier plans use 35-40 s. A long quiet
#: period costs nothing on a healthy run: it ends once the workload has settled (at least 10 s after the last heal).
RECOVERY_BOUND_S, MIN_QUIET_S = 40.0, 45.0
#: the least workload of a generated plan: the faults are the swarm, the workload exercises every path each time.
#: Both participants get clients (client i submits to participant i mod n: one client loads p1 alone), some commands
#: are deliberate resubmissions (dedup), some are shared by both participants (cross-participant order, no lost
#: transaction), at a rate that keeps commands in flight when a fault strikes.
MIN_WORKLOAD = {"rate": 10.0, "clients": 2, "cross_participant_ratio": 0.3, "resubmit_ratio": 0.05}
#: Hypothesis examples drawn per plan; the first ones are its simplest (the all-zero choice sequence first)
EXAMPLES_PER_PLAN, SKIP_EXAMPLES = 8, 2
NOVELTY_FLOOR = 0.1


@dataclass(frozen=True)
class Swarm:
    """The fault kinds and target roles one generated plan may use."""

    kinds: tuple[str, ...]
    roles: tuple[str, ...]

    def text(self) -> str:
        return f"kinds {', '.join(self.kinds)}; roles {', '.join(self.roles)}"

    def to_dict(self) -> dict[str, list[str]]:
        return {"kinds": list(self.kinds), "roles": list(self.roles)}


@functools.lru_cache(maxsize=8)
def compatibility(model: TopologyModel, kinds: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Per kind, the target roles it can hit on its own (``toxic`` has no etcd target: etcd has no proxied link)."""
    out: dict[str, list[str]] = {k: [] for k in kinds}
    for role in TARGET_ROLES:
        try:
            usable = applicable_kinds(restrict(model, [role]), kinds)
        except ValueError:  # no kind applies to this role alone, or the model has no service of it
            continue
        for k in usable:
            out[k].append(role)
    return {k: tuple(v) for k, v in out.items()}


def _novelty(tally: Tally, cells: list[tuple[str, str, str]]) -> float:
    return sum(1.0 / (1 + tally.covered(c)) for c in cells) / len(cells) if cells else 0.0


def weights(tally: Tally, model: TopologyModel, kinds: Sequence[str]) -> tuple[dict[str, float], dict[str, float]]:
    """Draw weights of kinds and of (coarse) target roles: the floor plus the mean novelty of their cells."""
    rows = universe(model, kinds)
    kind_w = {k: NOVELTY_FLOOR + _novelty(tally, [(kk, r, p) for kk, r in rows if kk == k for p in PHASES])
              for k in kinds}
    role_w = {role: NOVELTY_FLOOR + _novelty(tally, [(k, r, p) for k, r in rows if coarse_role(r) == role
                                                     for p in PHASES])
              for role in TARGET_ROLES}
    return kind_w, role_w


def weighted_sample(rng: random.Random, weights: dict[str, float], n: int) -> list[str]:
    """``n`` distinct keys, each drawn with probability proportional to its weight (Efraimidis-Spirakis keys).

    Why by hand: ``random.sample`` takes integer counts, not weights, and ``random.choices`` draws with
    replacement; numpy's ``choice(replace=False, p=...)`` would do it, but numpy is not a dependency."""
    scored = [(rng.random() ** (1.0 / w), key) for key, w in weights.items() if w > 0]
    return [key for _, key in sorted(scored, reverse=True)[:n]]


def draw_swarm(rng: random.Random, model: TopologyModel, tally: Tally | None = None,
               kinds: Sequence[str] = GENERATED_KINDS) -> Swarm:
    """A random subset of kinds (1-4), then of the roles at least one of them can hit (1-3), weighted toward what
    ``tally`` has covered least; kinds that none of the drawn roles can take are dropped (at least one stays)."""
    compat = compatibility(model, tuple(kinds))
    usable = [k for k in kinds if compat[k]]
    kind_w, role_w = weights(tally or Tally(), model, usable)
    chosen = weighted_sample(rng, {k: kind_w[k] for k in usable}, rng.randint(*KINDS_PER_PLAN))
    reachable = [r for r in TARGET_ROLES if any(r in compat[k] for k in chosen)]
    roles = weighted_sample(rng, {r: role_w[r] for r in reachable}, rng.randint(*ROLES_PER_PLAN))
    chosen = [k for k in chosen if set(compat[k]) & set(roles)]
    return Swarm(tuple(k for k in usable if k in chosen), tuple(r for r in TARGET_ROLES if r in roles))


def distinct_steps(plan: Plan) -> bool:
    """No two identical steps (same kind, target and parameters) in effect at the same time: the second one adds
    nothing (two identical toxics on one link) and costs a live run."""
    rows = nominal_timeline(plan).rows
    texts = [repr((s.kind_name, s.targets, s.groups, getattr(s, "params", None))) for s in plan.steps]
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            if texts[i] == texts[j] and rows[i].start <= rows[j].end and rows[j].start <= rows[i].end:
                return False
    return True


def generate_plan(model: TopologyModel, swarm: Swarm, seed: int, name: str) -> Plan:
    """One plan of ``swarm`` drawn by Hypothesis from ``seed`` (same seed, swarm and Hypothesis version: same plan)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed
    from hypothesis.errors import Unsatisfiable

    strategy = fault_plans(model, kinds=swarm.kinds, roles=swarm.roles, min_steps=MIN_STEPS, max_steps=MAX_STEPS,
                           min_duration=MIN_FAULT_S, max_duration=MAX_FAULT_S, max_at=MAX_AT_S)
    examples: list[Plan] = []

    @hseed(seed)
    @settings(max_examples=EXAMPLES_PER_PLAN, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy.filter(distinct_steps))
    def collect(plan: Plan) -> None:
        examples.append(plan)

    with contextlib.suppress(Unsatisfiable):  # every example repeated a step: then take them as drawn
        collect()
    if not examples:
        examples = _unfiltered(strategy, seed)
    pick = random.Random(seed).choice(examples[SKIP_EXAMPLES:] or examples)
    desc = (f"Generated by harness.swarm (plan seed {seed}): swarm {swarm.text()}.\n\n{pick.description}")
    update: dict[str, Any] = {"name": name, "description": desc, "recovery_bound_s": RECOVERY_BOUND_S,
                              "quiet_period": max(pick.quiet_period, MIN_QUIET_S)}
    if pick.workload is not None:
        wl = pick.workload
        update["workload"] = wl.model_copy(update={k: max(getattr(wl, k), v) for k, v in MIN_WORKLOAD.items()})
    return pick.model_copy(update=update)


def _unfiltered(strategy: object, seed: int) -> list[Plan]:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    out: list[Plan] = []

    @hseed(seed)
    @settings(max_examples=EXAMPLES_PER_PLAN, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(plan: Plan) -> None:
        out.append(plan)

    collect()
    return out


@dataclass
class Generated:
    number: int   # within the campaign (0, 1, 2, ...): shard i takes number % N == i - 1
    seed: int     # the plan seed, derived from the campaign seed and the number
    swarm: Swarm
    plan: Plan


@dataclass
class SwarmSource:
    """The generated plans of one campaign (shard), drawn lazily: each draw sees the coverage of every run so far
    (``tally`` is shared with the campaign, which adds each finished run)."""

    campaign_seed: int
    model: TopologyModel = field(default_factory=reference_model)
    shard: Shard = UNSHARDED
    tally: Tally = field(default_factory=Tally)
    limit: int | None = None   # generated plans of the whole campaign (all shards); None: without end
    kinds: tuple[str, ...] = GENERATED_KINDS

    def __iter__(self) -> Iterator[Generated]:
        for number in self.shard.numbers(self.limit):
            yield self.draw(number)

    def draw(self, number: int) -> Generated:
        seed = plan_seed(self.campaign_seed, number)
        swarm = draw_swarm(random.Random(seed), self.model, self.tally, self.kinds)
        plan = generate_plan(self.model, swarm, seed, f"generated-{self.campaign_seed}-{number}")
        return Generated(number, seed, swarm, plan)
