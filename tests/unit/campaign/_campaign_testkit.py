"""A fake live runner for campaign tests: no Docker, virtual time.

``FakeRuns.run_plan`` stands in for ``harness.runner.run_plan``: it executes the plan on the in-memory fakes
(``harness.plans.fakes``) into a real run directory - so the history holds real nemesis events, with 250 ms health
and ``pg_primary`` probes of the fake view, and coverage can be computed from it - writes a results.json whose
verdict a predicate decides, and advances the campaign's virtual clock by the plan's nominal length plus an
overhead, as a live run would take.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from harness import campaign
from harness.checkers.model import CheckResult
from harness.history import HistoryWriter
from harness.plans.executor import Executor
from harness.plans.fakes import FakeClock, FakeInjector
from harness.plans.loader import dump_plan, save_found
from harness.plans.schema import Plan
from harness.plans.targets import FakeView
from harness.plans.timeline import nominal_timeline
from harness.report.results import results_document, write_results
from harness.report.rundir import RunDir
from harness.runner import RunOutcome
from harness.topology.model import reference_model


def _probe_hook(view: FakeView, hist: HistoryWriter) -> Callable[[float], None]:
    state = {"next": 0.0}

    def hook(t: float) -> None:
        while state["next"] <= t:
            at = state["next"]
            services = {r: {"ready": view.actives.get(p) == r, "live": r not in view.unhealthy, "api": None}
                        for p, reps in view.model.pairs.items() for r in reps}
            hist.append("probe", "ok", "health", {"services": services}, t=at)
            hist.append("probe", "ok", "pg_primary", {"primary": view.primary, "members": {}}, t=at + 0.001)
            state["next"] += 0.25

    return hook


@dataclass
class FakeRuns:
    clock: FakeClock = field(default_factory=FakeClock)
    overhead_s: float = 30.0
    fails: Callable[[Plan], set[str]] = lambda plan: set()
    #: (plan name, virtual time at start, virtual time at end, campaign budget left at start)
    log: list[tuple[str, float, float]] = field(default_factory=list)

    def run_plan(self, plan: Plan, topo: Any, runs_dir: Path | str, *, bugs: str = "",
                 plan_path: str | None = None, generated: bool = False) -> RunOutcome:
        start = self.clock.t
        rd = RunDir.create(runs_dir, plan.name)
        rd.write_plan(dump_plan(plan))
        view = FakeView.initial(reference_model())
        clock = FakeClock()
        with HistoryWriter(rd.history_path) as hist:
            clock.on_sleep.append(_probe_hook(view, hist))
            hist.info("harness", "expect", {"failover": [], "recovery_bound_s": plan.recovery_bound_s})
            Executor(plan, FakeInjector(view), view, hist, rd.path, clock=clock, stop_on_fail=False).run()
        failed = self.fails(plan)
        results = [CheckResult("1", "single-writer", "pass", "fine")]
        results += [CheckResult(inv, f"invariant {inv}", "fail", "violated",
                                [{"t": 1.0, "process": "client-1", "type": "ok", "f": "submit", "value": {}}])
                    for inv in sorted(failed)]
        write_results(rd, results_document(rd, results, context={}, history={"t_end": clock.t}))
        rd.report_path.write_text(f"<html>{plan.name}</html>", encoding="utf-8")
        took = nominal_timeline(plan).total + self.overhead_s
        self.clock.t += took
        self.log.append((plan.name, start, self.clock.t))
        return RunOutcome(plan.name, "fail" if failed else "pass", rd.path, results, None, took)


@contextmanager
def _no_topology(self: campaign.Campaign) -> Iterator[Any]:
    yield SimpleNamespace(run_id="hc-fake")


def install(monkeypatch: pytest.MonkeyPatch, runs: FakeRuns, found_dir: Path) -> FakeRuns:
    """Route a Campaign's live parts to ``runs``: no topology, no settling, virtual time, found/ in a tmp dir."""
    monkeypatch.setattr(campaign, "run_plan", runs.run_plan)
    monkeypatch.setattr(campaign, "settle", lambda topo: None)
    monkeypatch.setattr(campaign.Campaign, "topology", _no_topology)
    monkeypatch.setattr(campaign, "monotonic", runs.clock.now)
    monkeypatch.setattr(campaign, "save_found", lambda plan: save_found(plan, found_dir))
    return runs
