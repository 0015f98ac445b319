"""Budgeted campaigns on a fake runner (virtual time, no Docker): a plan starts only if it can finish, how many ran
is printed and recorded, failures are kept and shrunk within a share of the budget, every run's coverage is
written and steers the next draws, ``--shard`` splits the campaign exactly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _campaign_testkit import FakeRuns, install

from harness import campaign, campaign_cli
from harness.budget import Budget
from harness.cli import main
from harness.coverage import COVERAGE
from harness.plans import loader
from harness.plans.loader import load_plan
from harness.plans.schema import Plan
from harness.shard import Shard
from harness.swarm import Generated, Swarm, SwarmSource

pytestmark = pytest.mark.unit

KILL = """\
version: 1
name: {name}
description: one kill
warmup_s: 2
steps:
  - {{kind: kill, at: 1, target: active(p1), duration: {duration}}}
quiet_period: 10
recovery_bound_s: 10
"""


def _plan(tmp_path: Path, name: str, duration: float = 5) -> Plan:
    path = tmp_path / "plans" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(KILL.format(name=name, duration=duration))
    return load_plan(path)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeRuns:
    return install(monkeypatch, FakeRuns(), tmp_path / "found")


def _campaign(tmp_path: Path, fake: FakeRuns, budget_s: float | None, **kw: Any) -> campaign.Campaign:
    c = campaign.Campaign(tmp_path / "runs", seed=3, **kw)
    if budget_s is not None:
        c.budget = Budget(budget_s, clock=fake.clock.now)
    return c


def test_a_generated_campaign_never_starts_a_plan_that_cannot_finish(tmp_path: Path, fake: FakeRuns,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    fake.overhead_s = 40.0
    c = _campaign(tmp_path, fake, 600)
    assert c.run_campaign([], SwarmSource(3, tally=c.coverage)) == 0
    assert fake.log, "nothing ran"
    reserve = c.budget.reserve_s  # type: ignore[union-attr]
    for name, start, end in fake.log:
        assert end <= 600 - reserve, f"{name} ran from {start} to {end}: past the budget"
    # it stopped because the next plans did not fit, not because it ran out of plans
    assert c.not_started and all(n["estimate_s"] > n["remaining_s"] - reserve for n in c.not_started)
    assert 600 - fake.log[-1][2] < 300  # and it did not leave most of the budget unused
    out = capsys.readouterr().out
    assert "elapsed" in out and "left of 10m00s" in out
    assert f"ran {len(fake.log)} plan(s) ({len(fake.log)} generated)" in out


def test_the_summary_file_records_how_many_ran_and_the_coverage(tmp_path: Path, fake: FakeRuns,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    fixed = [("curated", _plan(tmp_path, "alpha")), ("found", _plan(tmp_path, "beta"))]
    c = _campaign(tmp_path, fake, 900)
    c.run_campaign(fixed, SwarmSource(3, tally=c.coverage))
    files = list((tmp_path / "runs" / campaign.CAMPAIGNS).glob(f"*/{campaign.CAMPAIGN_FILE}"))
    assert len(files) == 1
    doc = json.loads(files[0].read_text())
    ran = len(fake.log)
    assert doc["ran"]["total"] == ran and doc["ran"]["curated"] == 1 and doc["ran"]["found"] == 1
    assert doc["ran"]["generated"] == ran - 2 >= 1 and doc["budget_s"] == 900 and doc["seed"] == 3
    assert [r["source"] for r in doc["runs"]][:2] == ["curated", "found"]
    generated = [r for r in doc["runs"] if r["source"] == "generated"]
    assert all(r["swarm"]["kinds"] and r["swarm"]["roles"] and r["estimate_s"] > 0 for r in generated)
    for r in doc["runs"]:  # every run has its coverage.json, and the campaign's tally counted them all
        assert (files[0].parent / r["run_dir"] / COVERAGE).is_file()
    assert len(c.coverage.runs) == ran and "cells covered" in doc["coverage"]
    index = (files[0].parent / "index.html").read_text()
    assert index.count('href="../../') >= ran and "Fault coverage" in index
    out = capsys.readouterr().out
    assert "fault coverage" in out and doc["summary"] in out


def test_fixed_plans_that_do_not_fit_are_not_started(tmp_path: Path, fake: FakeRuns) -> None:
    c = _campaign(tmp_path, fake, 200)
    fixed = [("curated", _plan(tmp_path, "long", duration=300)), ("curated", _plan(tmp_path, "short"))]
    c.run_campaign(fixed)
    assert [n for n, *_ in fake.log] == ["short"]
    assert [n["plan"] for n in c.not_started] == ["long"]
    assert "1 not started" in c.ran_line()


def test_a_budget_too_small_for_any_plan_is_not_a_pass(tmp_path: Path, fake: FakeRuns,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    c = _campaign(tmp_path, fake, 60)
    assert c.run_campaign([("curated", _plan(tmp_path, "alpha"))], SwarmSource(3)) == 2
    assert not fake.log and len(c.not_started) == 1 + campaign.FIT_ATTEMPTS
    assert "ran 0 plan(s)" in capsys.readouterr().out


def test_exitfirst_starts_nothing_after_a_failure(tmp_path: Path, fake: FakeRuns) -> None:
    fake.fails = lambda plan: {"2"} if plan.name == "bad" else set()
    c = _campaign(tmp_path, fake, None, exitfirst=True)
    code = c.run_campaign([("curated", _plan(tmp_path, n)) for n in ("good", "bad", "later")],
                          SwarmSource(3, limit=3))
    assert code == 1 and [n for n, *_ in fake.log] == ["good", "bad"]


def test_a_failing_generated_plan_is_kept_and_shrunk_within_a_share_of_the_budget(
        tmp_path: Path, fake: FakeRuns) -> None:
    def fails(plan: Plan) -> set[str]:
        return {"2"} if any(s.kind_name in ("kill", "stop", "pause", "restart") for s in plan.steps) else set()

    fake.fails = fails
    c = _campaign(tmp_path, fake, 3 * 3600, exitfirst=True)
    source = SwarmSource(3, tally=c.coverage)
    first_failing = next(g for g in source if fails(g.plan))
    assert c.run_campaign([], [first_failing]) == 1
    found = sorted((tmp_path / "found").glob("*.yaml"))
    assert len(found) == 2 and len(c.kept) == 2  # as it ran, and the minimal plan
    minimal = load_plan(next(Path(p) for p in c.kept if load_plan(Path(p)).name.endswith("-min")))
    assert len(minimal.steps) == 1 and fails(minimal)
    assert c.shrink_outcomes and len(c.outcomes) == 1  # shrink runs are kept apart
    first_end = fake.log[0][2]
    shrink_time = fake.log[-1][2] - first_end
    assert shrink_time <= campaign.SHRINK_SHARE * (3 * 3600 - first_end)
    assert "shrink run(s)" in c.ran_line()


def test_shrinking_stops_when_its_share_is_spent(tmp_path: Path, fake: FakeRuns,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    fake.fails = lambda plan: {"2"}
    plan = _plan(tmp_path, "one-kill")  # 2 + 1 + 5 + 10 s nominal, 30 s overhead: 48 s a run
    c = _campaign(tmp_path, fake, 48 + 150, exitfirst=True)  # a quarter of the 150 s left: not one more run
    c.run_campaign([], [Generated(0, 1, Swarm(("kill",), ("participant",)), plan)])
    assert len(fake.log) == 1 and len(c.kept) == 1
    assert "its share of the budget is spent" in capsys.readouterr().out


def test_without_a_budget_a_failing_generated_plan_is_kept_as_it_ran(tmp_path: Path, fake: FakeRuns) -> None:
    fake.fails = lambda plan: {"3"}
    c = _campaign(tmp_path, fake, None)
    assert c.run_campaign([], SwarmSource(3, limit=2)) == 1
    assert len(fake.log) == 2 and len(c.kept) == 2 and not c.shrink_outcomes


# --- through the command line ------------------------------------------------------------------------------------
@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fake: FakeRuns) -> Path:
    monkeypatch.setattr(campaign_cli, "heal_runs", lambda _d: [])
    found = tmp_path / "found-dir"
    found.mkdir()
    (found / "0123456789.yaml").write_text(KILL.format(name="kept", duration=5))
    curated = tmp_path / "curated"
    for n in ("alpha", "beta", "gamma"):
        _plan(tmp_path, n)
    (tmp_path / "plans").rename(curated)
    monkeypatch.setattr(loader, "FOUND_DIR", found)
    monkeypatch.setattr(campaign_cli, "FOUND_DIR", found)
    monkeypatch.setattr(campaign, "CURATED_DIR", curated)
    return tmp_path / "runs"


def test_run_budget_generate_only(cli: Path, fake: FakeRuns, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--budget", "10m", "--generate-only", "--seed", "1", "--no-setup", "--runs-dir",
                 str(cli)]) == 0
    out = capsys.readouterr().out
    assert "campaign seed 1" in out and "budget 10m00s" in out
    assert fake.log and all(name.startswith("generated-1-") for name, *_ in fake.log)
    doc = json.loads(next((cli / campaign.CAMPAIGNS).glob(f"*/{campaign.CAMPAIGN_FILE}")).read_text())
    assert doc["ran"] == {"total": len(fake.log), "generated": len(fake.log), "shrink_runs": 0}
    assert all(end <= 600 for *_, end in fake.log)


def test_run_budget_runs_kept_and_curated_plans_first(cli: Path, fake: FakeRuns) -> None:
    assert main(["run", "--budget", "15m", "--seed", "1", "--no-setup", "--runs-dir", str(cli)]) == 0
    names = [n for n, *_ in fake.log]
    assert names[:4] == ["kept", "alpha", "beta", "gamma"] and len(names) > 4


@pytest.mark.parametrize("argv, needle", [
    (["--budget", "0"], "--budget"), (["--budget", "ten minutes"], "--budget"), (["--shard", "3/2"], "--shard"),
    (["--generate-only"], "--generate-only"), (["--generate-only", "--generate", "1", "PLAN"], "--generate-only"),
])
def test_bad_campaign_options_are_refused_before_set_up(cli: Path, argv: list[str], needle: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    argv = [str(tmp_path / "curated" / "alpha.yaml") if a == "PLAN" else a for a in argv]
    assert main(["run", "--no-setup", *argv]) == 4
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and "fix:" in err


def _what_runs(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> tuple[list[str], dict[int, tuple[int, str]]]:
    """The plan files and generated plans (number -> seed, plan text) `ha-chaos run ARGV` would run."""
    seen: dict[str, Any] = {}

    def run_campaign(self: campaign.Campaign, fixed: list[tuple[str, Plan]], generated: Any = None) -> int:
        seen["fixed"] = [p.name for _, p in fixed]
        seen["generated"] = {g.number: (g.seed, loader.dump_plan(g.plan)) for g in generated or []}
        return 0

    monkeypatch.setattr(campaign.Campaign, "run_campaign", run_campaign)
    assert main(["run", "--no-setup", *argv]) == 0
    return seen["fixed"], seen["generated"]


def test_shards_cover_exactly_the_plans_and_seeds_of_the_unsharded_campaign(
        cli: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["--generate", "7", "--seed", "9", "--runs-dir", str(cli)]
    whole_fixed, whole_gen = _what_runs(monkeypatch, argv)
    assert sorted(whole_fixed) == ["alpha", "beta", "gamma", "kept"] and sorted(whole_gen) == list(range(7))
    parts = [_what_runs(monkeypatch, [*argv, "--shard", f"{i}/2"]) for i in (1, 2)]
    (f1, g1), (f2, g2) = parts
    assert not set(f1) & set(f2) and sorted(f1 + f2) == sorted(whole_fixed)
    assert not set(g1) & set(g2) and {**g1, **g2} == whole_gen
    assert not {s for s, _ in g1.values()} & {s for s, _ in g2.values()}
    assert f1 and f2 and g1 and g2
    three = [_what_runs(monkeypatch, [*argv, "--shard", f"{i}/3"]) for i in (1, 2, 3)]
    assert sorted(n for f, _ in three for n in f) == sorted(whole_fixed)
    assert {k: v for _, g in three for k, v in g.items()} == whole_gen


def test_a_shard_selects_plan_files_by_sorted_file_name(cli: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # sorted file names: 0123456789.yaml alpha.yaml beta.yaml gamma.yaml; the kept plan still runs first
    assert _what_runs(monkeypatch, ["--shard", "1/2", "--runs-dir", str(cli)])[0] == ["kept", "beta"]
    assert _what_runs(monkeypatch, ["--shard", "2/2", "--runs-dir", str(cli)])[0] == ["alpha", "gamma"]
    assert Shard(1, 2).owns(0) and not Shard(1, 2).owns(1)
