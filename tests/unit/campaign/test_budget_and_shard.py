"""Budget parsing and accounting (``--budget``, ``--chaos-budget``), the cost estimate of a plan, and the shard
split (``--shard i/N``): deterministic, disjoint, and together exactly the unsharded campaign."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.budget import Budget, CostModel, format_duration, is_duration, parse_duration
from harness.errors import InputError
from harness.plans.fakes import FakeClock
from harness.plans.loader import parse_plan
from harness.plans.timeline import nominal_timeline
from harness.shard import UNSHARDED, Shard, plan_seed

pytestmark = pytest.mark.unit

PLAN = parse_plan("""\
version: 1
name: one-kill
description: one kill
warmup_s: 5
steps:
  - {kind: kill, at: 5, target: active(p1), duration: 20}
quiet_period: 30
""", "one-kill.yaml")


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400),
                                           ("1.5h", 5400), (" 45S ", 45), ("2m30s", 150), ("0.5m", 30)])
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert is_duration(text)


@pytest.mark.parametrize("text", ["", "0", "0s", "-5m", "30 minutes", "m", "1d", "30m1h", "1m1m", "abc", "1:30"])
def test_bad_durations_are_one_input_error(text: str) -> None:
    with pytest.raises(InputError) as err:
        parse_duration(text, "--budget")
    assert "--budget" in err.value.what and "30m" in (err.value.fix or "")
    assert not is_duration(text)


def test_durations_print_compactly() -> None:
    assert [format_duration(s) for s in (0, 45, 61, 724, 3600, 5400.4)] == ["0s", "45s", "1m01s", "12m04s", "1h00m",
                                                                            "1h30m"]


def test_a_budget_counts_on_its_clock_and_keeps_a_reserve() -> None:
    clock = FakeClock()
    budget = Budget(300, clock=clock.now, reserve_s=20)
    assert budget.remaining_s == 300 and budget.fits(280) and not budget.fits(281)
    clock.t = 200
    assert budget.elapsed_s == 200 and budget.remaining_s == 100
    assert budget.fits(80) and not budget.fits(81)
    assert budget.line() == "3m20s elapsed, 1m40s left of 5m00s"
    clock.t = 400
    assert budget.remaining_s == 0 and not budget.fits(0.1)


def test_the_cost_of_a_plan_is_its_nominal_timeline_plus_the_observed_overhead() -> None:
    cost = CostModel(default_overhead_s=45, window=2)
    nominal = nominal_timeline(PLAN).total
    assert nominal == 5 + 5 + 20 + 30
    assert cost.estimate(PLAN) == nominal + 45  # nothing observed yet
    cost.observe(PLAN, nominal + 12)
    assert cost.estimate(PLAN) == nominal + 12
    cost.observe(PLAN, nominal + 30)
    cost.observe(PLAN, nominal - 10)  # the quiet period ended early: never below the nominal length
    assert cost.overhead_s() == 30
    cost.observe(PLAN, nominal + 1)   # the slow observation ages out of the window
    assert cost.overhead_s() == 1


# --- shards ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["0/2", "3/2", "1/0", "2", "a/b", "1/2/3", "-1/2"])
def test_bad_shards_are_one_input_error(text: str) -> None:
    with pytest.raises(InputError, match="i/N"):
        Shard.parse(text)


def test_shards_parse() -> None:
    assert Shard.parse("2/4") == Shard(2, 4) and str(Shard(2, 4)) == "2/4"
    assert Shard.parse(None) == UNSHARDED == Shard.parse("") and not UNSHARDED.sharded
    assert Shard.parse(" 1 / 3 ").sharded


def test_plan_files_go_round_robin_by_sorted_name_and_keep_their_order() -> None:
    files = [Path("found/ff.yaml"), Path("c/zeta.yaml"), Path("c/alpha.yaml"), Path("c/beta.yaml"),
             Path("c/gamma.yaml")]
    one, two = (Shard(i, 2).select(files, name=lambda f: f.name) for i in (1, 2))
    # sorted: alpha beta ff gamma zeta -> shard 1: alpha ff zeta, shard 2: beta gamma; each in the given order
    assert one == [Path("found/ff.yaml"), Path("c/zeta.yaml"), Path("c/alpha.yaml")]
    assert two == [Path("c/beta.yaml"), Path("c/gamma.yaml")]
    assert UNSHARDED.select(files, name=lambda f: f.name) == files


@pytest.mark.parametrize("count", [2, 3, 5])
def test_shards_split_generated_numbers_and_seeds_without_overlap(count: int) -> None:
    shards = [Shard(i, count) for i in range(1, count + 1)]
    numbers = [list(s.numbers(23)) for s in shards]
    assert sorted(n for ns in numbers for n in ns) == list(range(23))
    seeds = [{plan_seed(7, n) for n in ns} for ns in numbers]
    assert sum(len(s) for s in seeds) == 23 and len(set().union(*seeds)) == 23
    assert all(s.owns(n) for s, ns in zip(shards, numbers, strict=True) for n in ns)


def test_plan_seeds_are_stable_and_depend_on_the_campaign_seed() -> None:
    assert plan_seed(1, 0) == plan_seed(1, 0)
    assert plan_seed(1, 0) != plan_seed(2, 0) and plan_seed(1, 0) != plan_seed(1, 1)
    assert all(0 <= plan_seed(s, n) < 2**32 for s in range(5) for n in range(5))
