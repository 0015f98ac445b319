"""Effect-latency figures from a history, regression copies of found plans, and the dry-run command."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from _plans_testkit import MINIMAL, curated_plans

from harness.cli import main
from harness.history import Event
from harness.plans.loader import load_plan, parse_plan, save_found
from harness.plans.stats import effect_latencies, percentile

pytestmark = pytest.mark.unit


def test_percentiles_are_observed_values() -> None:
    values = [0.1 * i for i in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(5.0)
    assert percentile(values, 99) == pytest.approx(9.9)
    assert percentile([3.0], 99) == 3.0
    assert math.isnan(percentile([], 50))


def test_effect_latencies_per_kind() -> None:
    def ok(kind: str, eff: float | None) -> Event:
        return Event(t=1, process="nemesis", type="ok", f=kind, value={"effect_s": eff})

    events = [ok("kill", 0.2), ok("kill", 0.4), ok("kill", 1.0), ok("toxic", 0.05), ok("heal", 9.0),
              ok("pause", None), Event(t=1, process="client-1", type="ok", f="kill", value={"effect_s": 50})]
    stats = effect_latencies(events)
    assert set(stats) == {"kill", "toxic"}
    assert stats["kill"] == {"n": 3, "p50": 0.4, "p99": 1.0, "max": 1.0}


def test_save_found_is_content_addressed(tmp_path: Path) -> None:
    plan = parse_plan(MINIMAL)
    first = save_found(plan, tmp_path)
    assert first == save_found(plan, tmp_path)
    assert len(first.stem) == 10 and load_plan(first) == plan
    other = save_found(plan.model_copy(update={"seed": 9}), tmp_path)
    assert other != first


def test_dry_run_prints_events_and_leaves_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    path = next(p for p in curated_plans() if p.stem == "repeated-kills")
    assert main(["plan", "dry-run", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.count(" ok     kill ") == 10
    assert out.count(" ok     heal ") == 10
    assert "faults left in effect on the fake: 0" in out
