"""``run``/``replay``/``shrink``/``up`` input checks: bad input is one ``error:`` + ``fix:`` (exit 4), found
before any set-up or topology start; the default campaign runs the kept failing plans of found/ first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness import campaign, campaign_cli
from harness.cli import main
from harness.plans import loader

pytestmark = pytest.mark.unit

PLAN = """\
version: 1
name: {name}
description: one kill
steps:
  - {{kind: kill, at: 1, target: active(p1), duration: 2}}
"""


@pytest.fixture(autouse=True)
def no_side_effects(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Set-up, healing and topologies fail the test if they are reached."""
    reached: list[str] = []

    def forbidden(what: str) -> Any:
        def fail(*_a: Any, **_k: Any) -> Any:
            reached.append(what)
            raise AssertionError(f"{what} reached before the input was checked")
        return fail

    monkeypatch.setattr("harness.platform.setup.setup", forbidden("setup"))
    monkeypatch.setattr("harness.topology.compose.Topology.start", forbidden("topology start"))
    monkeypatch.setattr(campaign_cli, "heal_runs", forbidden("heal"))
    return reached


def _plans(d: Path, *names: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for n in names:
        (d / f"{n}.yaml").write_text(PLAN.format(name=n))
    return d


def _one_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("  fix: "), err
    for n in needles:
        assert n in err, err
    return err


@pytest.mark.parametrize("command", ["replay", "shrink"])
def test_replay_and_shrink_need_exactly_one_plan(tmp_path: Path, command: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([command, str(empty)]) == 4
    _one_error(capsys, "no plan file", str(empty))
    two = _plans(tmp_path / "two", "a", "b")
    assert main([command, str(two)]) == 4
    _one_error(capsys, "holds 2", "a.yaml", "b.yaml")


@pytest.mark.parametrize("argv", [["replay", "--times", "0"], ["replay", "--times", "-2"],
                                  ["shrink", "--times", "0"], ["shrink", "--max-runs", "0"]])
def test_counts_below_one_are_refused_before_set_up(tmp_path: Path, argv: list[str],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    plan = _plans(tmp_path, "one") / "one.yaml"
    assert main([argv[0], str(plan), *argv[1:]]) == 4
    _one_error(capsys, argv[1], "at least 1")


def test_negative_generate_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--generate", "-1"]) == 4
    _one_error(capsys, "--generate")


@pytest.mark.parametrize("argv", [["run", "--no-setup"], ["replay", "PLAN"], ["shrink", "PLAN"], ["up"]])
def test_unknown_bug_switches_are_refused_up_front(tmp_path: Path, argv: list[str],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    plan = str(_plans(tmp_path, "one") / "one.yaml")
    argv = [plan if a == "PLAN" else a for a in argv]
    assert main([*argv, "--bugs", "no_fencing,nofencing"]) == 4
    err = _one_error(capsys, "nofencing", "did you mean no_fencing", "dedup_in_memory", "write_behind_submit")
    assert "unknown bug switch" in err


def test_known_bug_switches_are_normalised() -> None:
    assert campaign.check_bugs(" no_fencing , dedup_in_memory,") == "dedup_in_memory,no_fencing"
    assert campaign.check_bugs("") == "" and campaign.check_bugs(None) == ""
    with pytest.raises(campaign.InputError):
        campaign.Campaign(Path("runs"), bugs="no_such_bug")


def test_the_default_campaign_runs_found_plans_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     no_side_effects: list[str]) -> None:
    found = _plans(tmp_path / "found", "kept-failure")
    (found / ".gitkeep").write_text("")
    curated = _plans(tmp_path / "curated", "alpha", "beta")
    monkeypatch.setattr(loader, "FOUND_DIR", found)
    monkeypatch.setattr(campaign, "CURATED_DIR", curated)
    monkeypatch.setattr(campaign_cli, "FOUND_DIR", found)
    monkeypatch.setattr(campaign_cli, "heal_runs", lambda _d: [])
    ran: list[str] = []
    sources: list[str] = []

    def run_campaign(self: campaign.Campaign, fixed: list[tuple[str, Any]], generated: Any = None) -> int:
        assert generated is None  # no --generate, no --budget: no generated plan
        sources.extend(s for s, _ in fixed)
        return ran.extend(p.name for _, p in fixed) or 0

    monkeypatch.setattr(campaign.Campaign, "run_campaign", run_campaign)
    assert main(["run", "--no-setup", "--runs-dir", str(tmp_path / "runs")]) == 0
    assert ran == ["kept-failure", "alpha", "beta"]
    assert sources == ["found", "curated", "curated"]
    assert campaign.default_plan_files() == [found / "kept-failure.yaml", curated / "alpha.yaml",
                                             curated / "beta.yaml"]


def test_the_default_campaign_without_found_plans(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    found = tmp_path / "found"
    found.mkdir()
    (found / ".gitkeep").write_text("")
    monkeypatch.setattr(loader, "FOUND_DIR", found)
    assert campaign.default_plan_files() == loader.plans_in(campaign.CURATED_DIR)


def test_the_summary_keeps_whole_report_paths_in_a_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Not a terminal (CI logs): the summary table is not folded at 80 columns, so report paths stay whole."""
    from harness.runner import RunOutcome
    c = campaign.Campaign(runs_dir=tmp_path)
    run_dir = tmp_path / "some-rather-long-run-directory-name-20261201-112233-abcd" / "kill-active-participant"
    c.outcomes.append(RunOutcome("kill-active-participant", "pass", run_dir, [], None, 42.0))
    c.summary()
    out = capsys.readouterr().out
    assert str(run_dir / "report.html") in out, out
