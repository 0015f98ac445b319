"""Executor: events in the history, conditions, verify failures, heal on every exit path, crash recovery."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _plans_testkit import FileInjector

from harness.history import HistoryWriter, read_history
from harness.plans.executor import Executor, Terminated
from harness.plans.fakes import FakeClock, FakeInjector
from harness.plans.journal import JOURNAL_NAME, heal_from_journal, open_faults
from harness.plans.loader import parse_plan
from harness.plans.targets import FakeView
from harness.topology.model import TopologyModel

pytestmark = pytest.mark.unit

HEAD = "version: 1\nname: t\ndescription: d\nwarmup_s: 2\nquiet_period: 10\nrecovery_bound_s: 5\nsteps:\n"


def _run(tmp_path: Path, model: TopologyModel, steps: str, *, injector_kw: dict | None = None,
         clock: FakeClock | None = None, **kw):  # type: ignore[no-untyped-def]
    plan = parse_plan(HEAD + steps)
    view = FakeView.initial(model)
    inj = FakeInjector(view, **(injector_kw or {}))
    clock = clock or FakeClock()
    with HistoryWriter(tmp_path / "history.jsonl") as hist:
        try:
            result = Executor(plan, inj, view, hist, tmp_path, clock=clock, run_id="r", **kw).run()
        except KeyboardInterrupt:
            result = None
    return result, inj, view, read_history(tmp_path / "history.jsonl"), clock


def _nemesis(events):  # type: ignore[no-untyped-def]
    return [(e.type, e.f, e.value.get("step")) for e in events if e.process == "nemesis"]


def test_a_plan_runs_in_order_and_heals(tmp_path: Path, model: TopologyModel) -> None:
    steps = """\
  - kind: toxic
    at: 1
    target: db_link(active(p1))
    params: {type: timeout, attributes: {timeout: 0}}
    duration: 4
  - kind: kill
    after: failover(p1)
    delay: 0.5
    target: active(p1)
    duration: 2
"""
    result, inj, _view, events, _clock = _run(tmp_path, model, steps)
    assert [s.state for s in result.steps] == ["healed", "healed"]
    assert not result.harness_error and not inj.in_effect
    assert _nemesis(events) == [("invoke", "toxic", 0), ("ok", "toxic", 0), ("invoke", "kill", 1),
                                ("ok", "kill", 1), ("invoke", "heal", 1), ("ok", "heal", 1),
                                ("invoke", "heal", 0), ("ok", "heal", 0)]
    phases = [e.value["phase"] for e in events if e.f == "phase"]
    assert phases == ["warmup", "faults", "quiet", "end"]
    ok0 = next(e for e in events if e.type == "ok" and e.f == "toxic")
    assert ok0.value["resolved"] == ["p1a-db"] and ok0.value["cuts_db"] == ["p1a"] and ok0.value["verified"]
    assert ok0.t == pytest.approx(2 + 1, abs=2e-3), "fires at warmup + at: the loop sleeps to the deadline"
    ok1 = next(e for e in events if e.type == "ok" and e.f == "kill")
    assert ok1.value["resolved"] == ["p1b"], "the kill resolves after the failover the toxic caused"
    assert ok1.value["effect_s"] is not None and 0 <= ok1.value["effect_s"] < 0.2
    heal0 = next(e for e in events if e.f == "heal" and e.type == "ok" and e.value["step"] == 0)
    assert heal0.t - ok0.t == pytest.approx(4, abs=0.1)
    quiet = next(e for e in events if e.f == "phase" and e.value["phase"] == "quiet")
    end = next(e for e in events if e.f == "phase" and e.value["phase"] == "end")
    assert end.t - quiet.t == pytest.approx(10, abs=0.01)
    assert open_faults(tmp_path / JOURNAL_NAME) == []


KILL = """\
  - kind: kill
    at: 1
    target: active(p1)
    duration: 2
"""


@pytest.mark.parametrize("settle_after, expect_quiet, settled", [
    (3.0, 10.0, True),     # settled before MIN_QUIET_S: the quiet period still lasts that long
    (12.0, 12.0, True),    # settled at heal + 12 s: ends then
    (None, 30.0, False),   # never settles: the whole quiet period
])
def test_quiet_period_ends_once_the_workload_settled(tmp_path: Path, model: TopologyModel,
                                                     settle_after: float | None, expect_quiet: float,
                                                     settled: bool) -> None:
    """A 30 s quiet period ends early when the workload says it settled (never before MIN_QUIET_S); the end
    marker says so; the callback is asked about the time of the last heal."""
    _quiet_case(tmp_path, model, settle_after, expect_quiet, settled, quiet=30)


def _quiet_case(tmp_path: Path, model: TopologyModel, settle_after: float | None, expect_quiet: float,
                settled: bool, quiet: float = 10) -> None:
    asked: list[float] = []
    clock = FakeClock()

    def is_settled(since: float) -> bool:
        asked.append(since)
        return settle_after is not None and clock.now() >= since + settle_after

    plan = parse_plan(HEAD.replace("quiet_period: 10", f"quiet_period: {quiet}") + KILL)
    view = FakeView.initial(model)
    with HistoryWriter(tmp_path / "history.jsonl") as hist:
        result = Executor(plan, FakeInjector(view), view, hist, tmp_path, clock=clock, run_id="r",
                          settled=is_settled).run()
    heal = [s.healed_t for s in result.steps if s.healed_t is not None]
    events = read_history(tmp_path / "history.jsonl")
    quiet_ev = next(e for e in events if e.f == "phase" and e.value["phase"] == "quiet")
    end = next(e for e in events if e.f == "phase" and e.value["phase"] == "end")
    assert end.t - quiet_ev.t == pytest.approx(expect_quiet, abs=0.3)
    assert end.value.get("settled", False) is settled
    assert asked and set(asked) == {heal[-1]}


def test_a_condition_that_never_holds_skips_the_step(tmp_path: Path, model: TopologyModel) -> None:
    steps = "  - kind: kill\n    after: primary_changed\n    max_wait: 3\n    target: p1a\n    duration: 1\n"
    result, inj, _, events, _ = _run(tmp_path, model, steps)
    assert result.skipped == [0] and "not met within 3 s" in result.steps[0].error
    assert [(e.type, e.f) for e in events if e.process == "nemesis"] == [("info", "kill")]
    assert inj.log == []


def test_until_ends_a_fault_when_another_heals(tmp_path: Path, model: TopologyModel) -> None:
    steps = """\
  - kind: pause
    at: 0
    target: med1b
    until: step_healed(1)
  - kind: link_down
    at: 1
    target: p2b-db
    duration: 3
"""
    result, _, _, events, _ = _run(tmp_path, model, steps)
    assert [s.heal_reason for s in result.steps] == ["until", "duration"]
    heals = {e.value["step"]: e.t for e in events if e.f == "heal" and e.type == "ok"}
    assert heals[0] >= heals[1]
    assert heals[0] - heals[1] < 0.2


def test_a_fault_that_does_not_take_is_a_fail_and_aborts(tmp_path: Path, model: TopologyModel) -> None:
    steps = "  - kind: kill\n    at: 1\n    target: p1b\n    duration: 5\n" \
            "  - kind: pause\n    at: 2\n    target: p2a\n    duration: 5\n" \
            "  - kind: stop\n    at: 9\n    target: p2b\n    duration: 5\n"
    result, inj, _, events, _ = _run(tmp_path, model, steps, injector_kw={"fail_verify": {"pause"}})
    assert result.aborted and result.harness_error
    assert [s.state for s in result.steps] == ["healed", "failed", "pending"]
    fail = next(e for e in events if e.type == "fail")
    assert fail.f == "pause" and "not observed" in fail.value["error"]
    assert not inj.in_effect, "both the unverified pause and the running kill are undone"
    assert "quiet" not in [e.value["phase"] for e in events if e.f == "phase"]
    assert open_faults(tmp_path / JOURNAL_NAME) == []


def test_apply_errors_without_stop_on_fail_continue(tmp_path: Path, model: TopologyModel) -> None:
    steps = "  - kind: restart\n    at: 0\n    target: seq1\n  - kind: kill\n    at: 1\n    target: seq2\n" \
            "    duration: 1\n"
    result, inj, _, events, _ = _run(tmp_path, model, steps, injector_kw={"fail_apply": {"restart"}},
                                     stop_on_fail=False)
    assert [s.state for s in result.steps] == ["failed", "healed"]
    assert "cannot apply restart" in result.steps[0].error
    assert ("fail", "restart", 0) in _nemesis(events)
    assert not inj.in_effect


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, "sigterm"])
def test_interrupt_heals_everything(tmp_path: Path, model: TopologyModel, interrupt: object) -> None:
    def hook(t: float) -> None:
        if t > 6:
            if interrupt == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)
            else:
                raise KeyboardInterrupt

    steps = "  - kind: kill\n    at: 1\n    target: active(p1)\n    duration: 50\n" \
            "  - kind: toxic\n    at: 2\n    target: seq_links(p2a)\n    duration: 50\n" \
            "    params: {type: latency, attributes: {latency: 100}}\n"
    clock = FakeClock(on_sleep=[hook])
    plan = parse_plan(HEAD + steps)
    view = FakeView.initial(model)
    inj = FakeInjector(view)
    expected = Terminated if interrupt == "sigterm" else KeyboardInterrupt
    with HistoryWriter(tmp_path / "history.jsonl") as hist, pytest.raises(expected):
        Executor(plan, inj, view, hist, tmp_path, clock=clock).run()
    assert not inj.in_effect
    events = read_history(tmp_path / "history.jsonl")
    assert [e.value.get("reason") for e in events if e.f == "heal" and e.type == "ok"] == ["interrupted"] * 2
    assert events[-1].f == "phase" and events[-1].value == {"phase": "end", "interrupted": True}
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))


def test_a_failed_heal_stays_in_the_journal(tmp_path: Path, model: TopologyModel) -> None:
    class StickyInjector(FakeInjector):
        broken = True

        def heal(self, entry):  # type: ignore[no-untyped-def]
            if self.broken:
                raise OSError("docker unreachable")
            super().heal(entry)

    plan = parse_plan(HEAD + "  - kind: kill\n    at: 1\n    target: p1b\n    duration: 2\n")
    view = FakeView.initial(model)
    inj = StickyInjector(view)
    with HistoryWriter(tmp_path / "history.jsonl") as hist:
        result = Executor(plan, inj, view, hist, tmp_path, clock=FakeClock()).run()
    assert result.heal_errors and "docker unreachable" in result.heal_errors[0]
    assert [e["step"] for e in open_faults(tmp_path / JOURNAL_NAME)] == [0]
    inj.broken = False
    report = heal_from_journal(tmp_path / JOURNAL_NAME, inj)
    assert report.ok and len(report.healed) == 1 and not inj.in_effect
    assert open_faults(tmp_path / JOURNAL_NAME) == []


CHILD = """
import sys
sys.path.insert(0, {testdir!r})
from pathlib import Path
from _plans_testkit import FileInjector
from harness.history import HistoryWriter
from harness.plans.executor import Executor
from harness.plans.loader import parse_plan
from harness.plans.targets import FakeView
from harness.topology.model import reference_model
plan = parse_plan(open({plan!r}).read())
run = Path({run!r})
with HistoryWriter(run / "history.jsonl") as h:
    Executor(plan, FileInjector(run / "state"), FakeView.initial(reference_model()), h, run).run()
"""


def test_sigkill_mid_plan_then_heal_from_journal(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("version: 1\nname: crash\ndescription: d\nwarmup_s: 0\nsteps:\n"
                    "  - kind: kill\n    at: 0\n    target: p1a\n    duration: 60\n"
                    "  - kind: pause\n    at: 0\n    target: seq2\n    duration: 60\n", encoding="utf-8")
    code = CHILD.format(testdir=str(Path(__file__).parent), plan=str(plan), run=str(tmp_path))
    child = subprocess.Popen([sys.executable, "-c", code])
    journal = tmp_path / JOURNAL_NAME
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:  # poll (no fixed sleep) until both faults are recorded as applied
            lines = journal.read_text().splitlines() if journal.exists() else []
            if sum(json.loads(x)["op"] == "applied" for x in lines if x.strip()) == 2:
                break
            assert child.poll() is None, "the child exited before applying its faults"
            time.sleep(0.02)
        else:
            pytest.fail("faults were not applied within 30 s")
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    injector = FileInjector(tmp_path / "state")
    ids = [e["id"] for e in open_faults(journal)]
    assert len(ids) == 2 and all(i.startswith("hc-run-") for i in ids)
    assert injector.in_effect() == sorted(ids), "the SIGKILL leaked both faults"
    report = heal_from_journal(journal, injector)
    assert report.healed == ids[::-1], "newest first"
    assert injector.in_effect() == [] and open_faults(journal) == []


class CountingView(FakeView):
    calls = 0

    def active(self, pair):  # type: ignore[no-untyped-def]
        self.calls += 1
        return super().active(pair)

    def pg_primary(self):  # type: ignore[no-untyped-def]
        self.calls += 1
        return super().pg_primary()


@pytest.mark.parametrize("after, min_calls, max_calls", [
    ("at: 1", 0, 0), ("after: primary_changed\n    max_wait: 10", 30, 41)])
def test_the_view_is_asked_only_when_needed_and_throttled(tmp_path: Path, model: TopologyModel, after: str,
                                                          min_calls: int, max_calls: int) -> None:
    """A live view answers over HTTP/Docker: no polling without a condition, at most 4 samples/s with one."""
    plan = parse_plan(HEAD + f"  - kind: kill\n    {after}\n    target: p1a\n    duration: 1\n")
    base = FakeView.initial(model)
    view = CountingView(model, base.actives, base.primary)
    with HistoryWriter(tmp_path / "h.jsonl") as hist:
        Executor(plan, FakeInjector(view), view, hist, tmp_path, clock=FakeClock()).run()
    assert min_calls <= view.calls <= max_calls  # 10 s of waiting at 4 samples/s, one question each


def test_an_interrupt_inside_verify_still_heals_that_fault(tmp_path: Path, model: TopologyModel) -> None:
    """Ctrl-C between apply and verify: the step is not 'active' yet, but its fault may be in effect."""

    class InterruptingInjector(FakeInjector):
        def apply(self, step, resolved):  # type: ignore[no-untyped-def]
            applied = super().apply(step, resolved)
            if step.kind_name == "pause":
                applied.verify = lambda: (_ for _ in ()).throw(KeyboardInterrupt())  # type: ignore[method-assign]
            return applied

    plan = parse_plan(HEAD + "  - kind: kill\n    at: 0\n    target: p1b\n    duration: 9\n"
                      "  - kind: pause\n    at: 1\n    target: seq3\n    duration: 9\n")
    view = FakeView.initial(model)
    inj = InterruptingInjector(view)
    with HistoryWriter(tmp_path / "h.jsonl") as hist, pytest.raises(KeyboardInterrupt):
        Executor(plan, inj, view, hist, tmp_path, clock=FakeClock()).run()
    assert not inj.in_effect and "seq3" not in view.unhealthy
    assert open_faults(tmp_path / JOURNAL_NAME) == []


def test_a_target_that_matches_nothing_fails_the_step(tmp_path: Path, model: TopologyModel) -> None:
    plan = parse_plan(HEAD + "  - kind: kill\n    at: 1\n    target: active(p2)\n    duration: 2\n")
    view = FakeView.initial(model)
    view.actives["p2"] = None  # mid-failover: nobody is active
    inj = FakeInjector(view)
    with HistoryWriter(tmp_path / "h.jsonl") as hist:
        result = Executor(plan, inj, view, hist, tmp_path, clock=FakeClock()).run()
    assert result.aborted and result.steps[0].state == "failed"
    assert "no active replica" in result.steps[0].error and inj.log == []


def test_a_role_selector_waits_for_the_role_to_settle(tmp_path: Path, model: TopologyModel) -> None:
    """active(p2) mid-failover matches nothing; once a replica takes over (within RESOLVE_WAIT_S) the step fires."""
    plan = parse_plan(HEAD + "  - kind: kill\n    at: 1\n    target: active(p2)\n    duration: 2\n")
    view = FakeView.initial(model)
    active = view.actives["p2"]
    view.actives["p2"] = None
    clock = FakeClock()
    clock.on_sleep.append(lambda t: view.actives.__setitem__("p2", active) if t > 3 else None)
    inj = FakeInjector(view)
    with HistoryWriter(tmp_path / "h.jsonl") as hist:
        result = Executor(plan, inj, view, hist, tmp_path, clock=clock).run()
    assert result.steps[0].state != "failed", result.steps[0].error
    assert result.steps[0].resolved == [active] and result.steps[0].fired_t is not None


def test_a_late_executor_heals_what_is_overdue_before_a_later_step_waits_for_a_role(
        tmp_path: Path, model: TopologyModel) -> None:
    """Seen live (repeated-kills on a loaded machine, kills taking 5-10 s to take effect): step 7 waited 10 s for
    an active p1 replica while the heal that would start one again (step 5's, overdue) could not run, and the
    run ended in a harness ERROR. Overdue heals come before a later step's firing and while it waits."""
    steps = """\
  - kind: kill
    at: 1
    target: active(p1)
    duration: 1
  - kind: kill
    at: 1.5
    target: active(p1)
    duration: 1
  - kind: kill
    at: 2.5
    target: active(p1)
    duration: 1
"""
    plan = parse_plan(HEAD + steps)
    view = FakeView.initial(model)
    clock = FakeClock()

    class SlowInjector(FakeInjector):
        def apply(self, step, resolved):  # type: ignore[no-untyped-def]
            clock.sleep(1.5)   # the docker daemon of a loaded machine: an effect takes 1.5 s to apply
            return super().apply(step, resolved)

    inj = SlowInjector(view)
    with HistoryWriter(tmp_path / "h.jsonl") as hist:
        result = Executor(plan, inj, view, hist, tmp_path, clock=clock).run()
    assert not result.harness_error, [s.error for s in result.steps]
    assert [s.state for s in result.steps] == ["healed", "healed", "healed"]
    assert not inj.in_effect


def test_a_generated_plan_skips_a_step_whose_target_its_own_faults_removed(tmp_path: Path,
                                                                          model: TopologyModel) -> None:
    """Seen live (generated-21-4): one replica of med1 paused, the other cut, then 'pause active(med1)': nobody is
    active, by the plan's own doing. A drawn plan cannot foresee that; the step is skipped with its reason (an
    info event), not a harness error. Curated plans keep failing such a step (the test above)."""
    plan = parse_plan(HEAD + "  - kind: kill\n    at: 1\n    target: active(p2)\n    duration: 2\n"
                             "  - kind: kill\n    at: 2\n    target: step(0)\n    duration: 2\n")
    view = FakeView.initial(model)
    view.actives["p2"] = None
    inj = FakeInjector(view)
    with HistoryWriter(tmp_path / "h.jsonl") as hist:
        result = Executor(plan, inj, view, hist, tmp_path, clock=FakeClock(), skip_unresolvable=True).run()
    assert not result.aborted and not result.harness_error
    assert [s.state for s in result.steps] == ["skipped", "skipped"]
    assert "no active replica" in (result.steps[0].error or "") and inj.log == []
    assert '"skipped"' in (tmp_path / "h.jsonl").read_text()


def test_a_generated_plan_skips_a_fault_the_system_refuses_as_impossible_now(tmp_path: Path,
                                                                             model: TopologyModel) -> None:
    """Seen live (generated-21-6): a switchover while the only reachable standby was partitioned away; Patroni
    answered 412 "no good candidates". Skipped (and its journal entry closed) in a generated plan."""
    from harness.plans.injector import Infeasible

    class Refusing(FakeInjector):
        def apply(self, step, resolved):  # type: ignore[no-untyped-def]
            raise Infeasible("Patroni refused the switchover: HTTP 412 no good candidates")

    plan = parse_plan(HEAD + "  - kind: kill\n    at: 1\n    target: active(p2)\n    duration: 2\n")
    view = FakeView.initial(model)
    with HistoryWriter(tmp_path / "h.jsonl") as hist:
        result = Executor(plan, Refusing(view), view, hist, tmp_path, clock=FakeClock(),
                          skip_unresolvable=True).run()
    assert not result.harness_error and result.steps[0].state == "skipped"
    assert open_faults(tmp_path / JOURNAL_NAME) == []
    with HistoryWriter(tmp_path / "h2.jsonl") as hist:
        curated = Executor(plan, Refusing(view), view, hist, tmp_path, clock=FakeClock()).run()
    assert curated.steps[0].state == "failed"


def test_a_generated_step_skipped_for_its_own_faults_does_not_make_the_run_unknown(tmp_path: Path,
                                                                                   model: TopologyModel) -> None:
    """G1 (faults took effect) names the skipped step but passes: nobody claimed that drawn step would happen; a
    curated step that never fired still makes G1 unknown."""
    from harness.checkers import check_all
    from harness.history import read_history

    plan = parse_plan(HEAD + "  - kind: kill\n    at: 1\n    target: active(p2)\n    duration: 2\n"
                             "  - kind: kill\n    at: 1\n    target: active(p1)\n    duration: 2\n")
    view = FakeView.initial(model)
    view.actives["p2"] = None
    with HistoryWriter(tmp_path / "h.jsonl") as hist:
        Executor(plan, FakeInjector(view), view, hist, tmp_path, clock=FakeClock(), skip_unresolvable=True).run()
    g1 = next(r for r in check_all(read_history(tmp_path / "h.jsonl")) if r.invariant == "G1")
    assert g1.verdict == "pass" and "skipped" in g1.explanation, g1.explanation
