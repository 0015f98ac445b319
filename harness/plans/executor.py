"""The plan executor: fires steps on a monotonic clock, records them in the history, heals on every exit path.

Why one polling loop instead of a thread per step: conditions (``after: failover(p1)``), deadlines and heals
interleave, and a single loop makes their order - and therefore the history - easy to reason about. Why heal in
``finally`` *and* keep a journal: ``finally`` covers exceptions, Ctrl-C and SIGTERM (turned into an exception
by harness.topology.signals); only the journal covers SIGKILL of the harness, via ``heal_from_journal`` on
the next start.

The executor never judges the run. It records what it did and whether each fault was verified; a fault that
did not take is a ``fail`` event and a harness error, never a pass.
"""

from __future__ import annotations

import math
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from harness.history import HistoryWriter
from harness.plans.conditions import Condition
from harness.plans.injector import Applied, FaultInjector, Infeasible, Resolution
from harness.plans.journal import JOURNAL_NAME, FaultJournal
from harness.plans.schema import Plan, StepBase
from harness.plans.targets import ResolutionError, StepRef, TopologyView, resolve
from harness.topology.signals import Terminated, terminate_gracefully

__all__ = ["ExecutionResult", "Executor", "HealFailed", "StepRun", "Terminated"]

State = Literal["pending", "active", "healed", "failed", "skipped"]
POLL_S = 0.05
#: a role selector that matches nothing (e.g. active(p1) mid-failover, right after a DB switchover) is
#: re-resolved for this long before the step fails: roles settle within seconds on a healthy system
RESOLVE_WAIT_S = 10.0
OBSERVE_S = 0.25
#: the quiet period may end early once the workload has settled (see ``Executor``), but never before this
MIN_QUIET_S = 10.0


class Clock(Protocol):
    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


@dataclass
class HistoryClock:
    """The real clock: the history's monotonic time, so fault events and client operations share one axis."""

    history: HistoryWriter

    def now(self) -> float:
        return self.history.now()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))


@dataclass
class StepRun:
    """What happened to one step; times are on the executor's clock."""

    index: int
    kind: str
    state: State = "pending"
    armed_t: float | None = None  # when an 'after' step started waiting
    due_t: float | None = None  # the moment it should fire (its scheduled moment)
    fired_t: float | None = None
    verified_t: float | None = None
    healed_t: float | None = None
    resolved: list[str] = field(default_factory=list)
    groups: list[list[str]] | None = None  # a partition's resolved groups (what step(N, G) refers to)
    error: str | None = None
    heal_reason: str | None = None
    applied: Applied | None = None
    fault_id: str = ""
    open: bool = False  # journal intent written and not healed yet: maybe in effect, must be undone
    baseline: dict[str, str | None] = field(default_factory=dict)

    @property
    def effect_s(self) -> float | None:
        """Scheduled moment -> verified effect: the figure the issue asks for (p50/p99 per kind)."""
        if self.verified_t is None or self.due_t is None:
            return None
        return self.verified_t - self.due_t


@dataclass
class ExecutionResult:
    steps: list[StepRun]
    aborted: bool = False
    interrupted: bool = False
    heal_errors: list[str] = field(default_factory=list)

    @property
    def harness_error(self) -> bool:
        return self.aborted or bool(self.heal_errors) or any(s.state == "failed" for s in self.steps)

    @property
    def skipped(self) -> list[int]:
        return [s.index for s in self.steps if s.state == "skipped"]


class Executor:
    """Runs one plan once. ``run()`` returns an ExecutionResult; it raises only on interrupt (after healing).

    ``settled(t)``, if given, tells whether the workload has shown recovery from faults healed by time ``t``
    (every participant completed a fresh command, nothing acknowledged before ``t`` is outstanding, every OK
    transaction reached its informees): the quiet period then ends early, after at least ``MIN_QUIET_S``, and
    the ``end`` marker says ``settled: true`` so the checkers may judge the shorter history. Waiting is awaiting
    that condition with the plan's ``quiet_period`` as the deadline, not sleeping a fixed time.
    """

    def __init__(self, plan: Plan, injector: FaultInjector, view: TopologyView, history: HistoryWriter,
                 run_dir: str | Path, *, clock: Clock | None = None, run_id: str = "run",
                 stop_on_fail: bool = True, on_phase: Callable[[str], None] | None = None,
                 settled: Callable[[float], bool] | None = None, skip_unresolvable: bool = False) -> None:
        self.plan, self.injector, self.view, self.history = plan, injector, view, history
        #: a step whose target matches nothing (after RESOLVE_WAIT_S) is skipped, not failed: for generated plans,
        #: whose own earlier faults can remove what a later step aims at (no active replica left to pause); a
        #: curated plan's step that hits nothing is a plan that does not test what it says (failed)
        self.skip_unresolvable = skip_unresolvable
        self.settled = settled
        self.clock = clock or HistoryClock(history)
        self.journal = FaultJournal(Path(run_dir) / JOURNAL_NAME)
        self.rng = random.Random(plan.seed)
        self.run_id, self.stop_on_fail, self.on_phase = run_id, stop_on_fail, on_phase
        # unique per execution (several plans may run on one topology): names toxics, iptables comments, ...
        self.fault_prefix = f"{run_id if run_id.startswith('hc-') else 'hc-' + run_id}-{secrets.token_hex(2)}"
        self.runs = [StepRun(i, s.kind_name) for i, s in enumerate(plan.steps)]
        self._known_active: dict[str, str | None] = {}
        self._known_primary: str | None = None
        self._now_active: dict[str, str | None] = {}
        self._now_primary: str | None = None
        self._observed_t = -math.inf
        conds = [c for st in plan.steps for c in (st.after_condition(), st.until_condition()) if c is not None]
        self._pairs_watched = sorted({str(c.arg) for c in conds if c.name == "failover"})
        self._watch_primary = any(c.name == "primary_changed" for c in conds)
        self._needs_view = bool(self._pairs_watched) or self._watch_primary

    # --- history helpers ----------------------------------------------------------------------------------
    def _event(self, process: str, type_: Any, f: str, value: dict[str, Any]) -> None:
        self.history.append(process, type_, f, value, t=self.clock.now())

    def _phase(self, phase: str, **extra: Any) -> None:
        self._event("harness", "info", "phase", {"phase": phase, **extra})
        if self.on_phase:
            self.on_phase(phase)

    def _sleep_until(self, t: float) -> None:
        while (left := t - self.clock.now()) > 0:
            self.clock.sleep(min(left, 0.5))

    # --- observing the topology for conditions ------------------------------------------------------------
    def _observe(self, now: float) -> None:
        """Sample who is active / primary, at most every OBSERVE_S and only if a condition needs it.

        Why throttled: against a live topology each question is an HTTP or Docker call; the probes sample at
        250 ms too, so conditions cannot be observed more precisely than that anyway.
        """
        if not self._needs_view or now - self._observed_t < OBSERVE_S:
            return
        self._observed_t = now
        self._now_active = {pair: self.view.active(pair) for pair in self._pairs_watched}
        self._now_primary = self.view.pg_primary() if self._watch_primary else None
        for pair, act in self._now_active.items():
            if act is not None:
                self._known_active[pair] = act
        if self._now_primary is not None:
            self._known_primary = self._now_primary

    def _baseline(self) -> dict[str, str | None]:
        return {"primary": self._known_primary, **{f"active:{p}": a for p, a in self._known_active.items()}}

    def _holds(self, cond: Condition, baseline: dict[str, str | None]) -> bool | None:
        """True / False, or None if it can never hold (it refers to a step that failed or was skipped)."""
        if cond.name == "primary_changed":
            now = self._now_primary
            return now is not None and now != baseline.get("primary")
        if cond.name == "failover":
            now = self._now_active.get(str(cond.arg))
            return now is not None and now != baseline.get(f"active:{cond.arg}")
        ref = self.runs[int(cond.arg)]  # type: ignore[arg-type]
        if ref.state in ("failed", "skipped"):
            return None
        if cond.name == "step_applied":
            return ref.state in ("active", "healed")
        return ref.state == "healed"

    # --- firing and healing -------------------------------------------------------------------------------
    def _base_value(self, i: int, step: StepBase) -> dict[str, Any]:
        params = step.params.model_dump(mode="json") if hasattr(step, "params") else {}
        return {"step": i, "kind": step.kind_name, "target": step.target, "params": params}

    def _resolve(self, step: StepBase) -> tuple[list[str], list[list[str]] | None]:
        def names(texts: list[str]) -> list[str]:
            return list(dict.fromkeys(n for t in texts for n in resolve(t, self.view, self.rng,
                                                                        steps=self._step_targets)))

        if step.groups is not None:
            groups = [names(g) for g in step.groups]
            return [n for g in groups for n in g], groups
        return names(step.targets), None

    def _step_targets(self, ref: StepRef) -> list[str]:
        """``step(N)``: what step N resolved to when it fired (validation made N an earlier step)."""
        run = self.runs[ref.index]
        if not run.resolved:
            raise ResolutionError(f"{ref}: step {ref.index} hit nothing ({run.state})")
        if ref.group is None:
            return list(run.resolved)
        if run.groups is None or ref.group >= len(run.groups):
            raise ResolutionError(f"{ref}: step {ref.index} has no group {ref.group}")
        return list(run.groups[ref.group])

    def _aim(self, step: StepBase) -> str | None:
        """For a step aiming at earlier steps (``step(N)``): "wait" while one of them has not fired yet (it may
        be due later, or wait for a condition), a reason to skip it if one never hit anything (skipped, or
        failed before resolving), None when it can fire."""
        for ref in step.step_references():
            run = self.runs[ref.index]
            if run.resolved:
                continue
            if run.state == "pending":
                return "wait"
            return f"{ref} {run.state} without hitting anything: nothing to aim at"
        return None

    def _fire(self, run: StepRun, step: StepBase) -> None:
        run.fired_t = self.clock.now()
        value = self._base_value(run.index, step)
        self._event("nemesis", "invoke", step.kind_name, value)
        try:
            while True:
                try:
                    targets, groups = self._resolve(step)
                    break
                except ResolutionError:
                    if self.clock.now() - run.fired_t >= RESOLVE_WAIT_S:
                        raise
                    self.clock.sleep(5 * POLL_S)
                    self._heal_overdue()   # an earlier fault's heal may be what brings the role back
        except Exception as exc:  # nothing matches now (ResolutionError) or the view itself failed
            if isinstance(exc, ResolutionError) and self.skip_unresolvable:
                run.state, run.error = "skipped", f"nothing to aim at: {exc} (still after {RESOLVE_WAIT_S:g} s)"
                self._event("nemesis", "info", step.kind_name, {**value, "skipped": run.error, "drawn": True})
                return
            kind = "" if isinstance(exc, ResolutionError) else f"{type(exc).__name__}: "
            waited = f" (still after {RESOLVE_WAIT_S:g} s)" if isinstance(exc, ResolutionError) else ""
            run.state, run.error = "failed", f"resolution: {kind}{exc}{waited}"
            self._event("nemesis", "fail", step.kind_name, {**value, "error": run.error})
            return
        run.resolved, run.groups, run.fault_id = targets, groups, f"{self.fault_prefix}-s{run.index}"
        res = Resolution(run.index, run.fault_id, targets, groups)
        run.open = True
        self.journal.intent(run.fault_id, step=run.index, kind=step.kind_name, target=step.target,
                            resolved=targets, groups=groups, params=value["params"])
        try:
            run.applied = self.injector.apply(step, res)
            self.journal.applied(run.fault_id, dict(run.applied.record))
            verified = bool(run.applied.verify())
            error = None if verified else "effect not observed (verify returned false)"
        except Exception as exc:  # the injector's failure is a harness error of this step, not of the run loop
            error = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, Infeasible) and self.skip_unresolvable:
                run.state, run.error = "skipped", f"not possible now: {exc}"
                self._event("nemesis", "info", step.kind_name, {**value, "resolved": targets, "skipped": run.error,
                                                                "drawn": True})
                self._heal(run, step, "not applied")
                return
        if error is not None:
            run.state, run.error = "failed", error
            self._event("nemesis", "fail", step.kind_name, {**value, "resolved": targets, "error": error})
            self._heal(run, step, "not verified")
            return
        run.state, run.verified_t = "active", self.clock.now()
        eff = run.applied.effects  # type: ignore[union-attr]
        self._event("nemesis", "ok", step.kind_name, {
            **value, "resolved": targets, "groups": groups, "verified": True, "cuts_db": eff.cuts_db,
            "cuts_sequencer": eff.cuts_sequencer, "stops": eff.stops, "scheduled": run.due_t,
            "effect_s": run.effect_s})
        run.baseline = self._baseline()
        if step.is_instant:
            self._heal(run, step, "instant")

    def _heal(self, run: StepRun, step: StepBase, reason: str) -> None:
        value = {"step": run.index, "kind": step.kind_name, "resolved": run.resolved, "reason": reason}
        self._event("nemesis", "invoke", "heal", value)
        try:
            if run.applied is not None:
                run.applied.undo()
            else:
                self.injector.heal({"id": run.fault_id, "step": run.index, "kind": step.kind_name,
                                    "resolved": run.resolved, "record": {}})
        except Exception as exc:
            err = f"{type(exc).__name__}: {exc}"
            self._event("nemesis", "fail", "heal", {**value, "error": err})
            raise HealFailed(f"step {run.index} ({step.kind_name}): {err}") from exc
        self.journal.healed(run.fault_id)
        run.open = False
        self._event("nemesis", "ok", "heal", value)
        run.healed_t, run.heal_reason = self.clock.now(), reason
        if run.state == "active":
            run.state = "healed"

    def _heal_all(self, result: ExecutionResult, reason: str) -> None:
        # 'open', not just 'active': an interrupt inside apply/verify leaves a fault that may have taken
        for run in sorted((r for r in self.runs if r.open), key=lambda r: -(r.fired_t or 0)):
            try:
                self._heal(run, self.plan.steps[run.index], reason)
            except HealFailed as exc:
                result.heal_errors.append(str(exc))

    # --- the loop -----------------------------------------------------------------------------------------
    def _tick(self, t0: float, result: ExecutionResult) -> bool:
        """One pass: fire what is due, heal what has ended. Returns True when every step is done."""
        now = self.clock.now()
        self._observe(now)
        for i, (run, step) in enumerate(zip(self.runs, self.plan.steps, strict=True)):
            if run.state != "pending":
                continue
            if step.at is not None:
                run.due_t = t0 + step.at
            else:
                if i > 0 and self.runs[i - 1].state == "pending":
                    continue  # an 'after' step waits for the step before it to fire
                if run.armed_t is None:
                    run.armed_t, run.baseline = now, self._baseline()
                if run.due_t is None:
                    holds = self._holds(step.after_condition(), run.baseline)  # type: ignore[arg-type]
                    if holds:
                        run.due_t = now + step.delay
                    elif holds is None or now - run.armed_t >= step.max_wait:
                        self._skip(run, step, f"condition {step.after} not met within {step.max_wait:g} s"
                                   if holds is not None else f"condition {step.after} can no longer hold")
                        continue
            if run.due_t is not None and now >= run.due_t:
                self._heal_overdue()
                aim = self._aim(step)
                if aim == "wait":
                    continue  # fires once the step it aims at has fired
                if aim is not None:
                    self._skip(run, step, aim)
                    continue
                self._fire(run, step)
                if run.state == "failed" and self.stop_on_fail:
                    result.aborted = True
                    return True
        self._heal_due(self.clock.now())
        return all(r.state not in ("pending", "active") for r in self.runs)

    def _heal_overdue(self) -> None:
        """Heal the faults whose duration has run out (only those: ``until`` conditions are judged in the tick).

        Why also before a step fires and while it waits for its target: when applying faults is slow (a loaded
        machine's docker daemon took 5-10 s per kill), a later step can come due while an earlier one's heal is
        overdue; fired first, it may wait for a role that only that heal brings back (seen live: repeated-kills
        waited 10 s for an active p1 replica while the heal that starts one again could not run)."""
        self._heal_due(self.clock.now(), conditions=False)

    def _heal_due(self, now: float, *, conditions: bool = True) -> None:
        """Heal what has ended: a duration run out, and (``conditions``) an ``until`` that holds or waited too long."""
        for run, step in zip(self.runs, self.plan.steps, strict=True):
            if run.state != "active":
                continue
            elapsed = now - (run.verified_t or now)
            if step.duration is not None and elapsed >= step.duration:
                self._heal(run, step, "duration")
            elif conditions and step.until is not None:
                holds = self._holds(step.until_condition(), run.baseline)  # type: ignore[arg-type]
                if holds or holds is None:
                    self._heal(run, step, "until")
                elif elapsed >= step.max_wait:
                    self._heal(run, step, "max_wait")

    def _skip(self, run: StepRun, step: StepBase, reason: str) -> None:
        run.state, run.error = "skipped", reason
        self._event("nemesis", "info", step.kind_name, {**self._base_value(run.index, step), "skipped": reason})

    def _next_wait(self, t0: float) -> float:
        """Sleep until the next known deadline (so ``at`` steps fire on time), polling at least every POLL_S."""
        now = self.clock.now()
        deadlines = [POLL_S]
        for run, step in zip(self.runs, self.plan.steps, strict=True):
            if run.state == "pending" and (due := run.due_t if step.at is None else t0 + step.at) is not None:
                if due > now:  # one already due is waiting for the step it aims at: polled
                    deadlines.append(due - now)
            elif run.state == "active" and step.duration is not None and run.verified_t is not None:
                deadlines.append(run.verified_t + step.duration - now)
        return max(0.0, min(deadlines))

    def run(self) -> ExecutionResult:
        result = ExecutionResult(self.runs)
        start = self.clock.now()
        with terminate_gracefully():
            self._event("harness", "info", "expect", {**self.plan.expect.model_dump(mode="json"),
                                                       "recovery_bound_s": self.plan.recovery_bound_s})
            self._phase("warmup")
            try:
                self._sleep_until(start + self.plan.warmup_s)
                self._phase("faults")
                t0 = self.clock.now()
                while not self._tick(t0, result):
                    self.clock.sleep(self._next_wait(t0))
            except (KeyboardInterrupt, Terminated):
                result.interrupted = True
                raise
            except HealFailed as exc:
                result.heal_errors.append(str(exc))
                result.aborted = True
            finally:
                self._heal_all(result, "interrupted" if result.interrupted else
                               "aborted" if result.aborted else "end")
                if result.interrupted:
                    self._phase("end", interrupted=True)
            settled = False
            if not result.aborted:
                self._phase("quiet")
                settled = self._quiet()
            self._phase("end", aborted=result.aborted, **({"settled": True} if settled else {}))
        return result

    def _quiet(self) -> bool:
        """The quiet period: until its end, or until the workload settled (after ``MIN_QUIET_S``)."""
        start = self.clock.now()
        deadline = start + self.plan.quiet_period
        if self.settled is None:
            self._sleep_until(deadline)
            return False
        healed = max((r.healed_t for r in self.runs if r.healed_t is not None), default=start)
        earliest = start + min(self.plan.quiet_period, MIN_QUIET_S)
        self._sleep_until(earliest)
        while self.clock.now() < deadline:
            if self.settled(healed):
                return True
            self.clock.sleep(min(0.25, deadline - self.clock.now()))
        return False


class HealFailed(RuntimeError):
    """An undo raised: the fault may still be in effect; its journal entry stays open for ``ha-chaos heal``."""
