"""Replay and minimisation of failing plans, built for flaky runs against real containers.

Why not Hypothesis's shrinker: it assumes a test that fails the same way every time. A live run reproduces a
race only sometimes, so here a candidate counts as failing if it fails *the same invariant* in at least one of
``k`` runs, and the search is greedy with a cache that is cleared once at the end for a confirmation pass (a
candidate wrongly judged "passes" because of bad luck gets one more chance). A flake can only make the result
larger than necessary, never wrong: every accepted candidate really failed.

Both functions take a ``runner(plan) -> set of failed invariant names``; the live runner (containers, workload,
checkers) is plugged in by the CLI, a fake one by the unit tests.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from harness.errors import HarnessError
from harness.faults.kinds import kind as module_kind
from harness.plans.loader import dump_plan
from harness.plans.schema import Plan, plan_to_data, validate_plan
from harness.plans.targets import Selector, SelectorError, StepRef, parse, substitute_steps
from harness.plans.timeline import nominal_timeline
from harness.topology.model import TopologyModel

Runner = Callable[[Plan], set[str]]
MIN_DURATION = 0.5


class DidNotReproduce(HarnessError):
    """The plan to shrink never failed the invariant in the runs allowed."""

    exit_code = 2


# --- replay ------------------------------------------------------------------------------------------------
@dataclass
class ReplayResult:
    runs: int
    per_run: list[set[str]] = field(default_factory=list)

    @property
    def failures(self) -> Counter[str]:
        return Counter(inv for failed in self.per_run for inv in failed)

    def rate(self, invariant: str) -> float:
        return self.failures[invariant] / self.runs if self.runs else 0.0

    def summary(self) -> dict[str, Any]:
        return {"runs": self.runs, "reproduction": {inv: {"failed": n, "rate": round(n / self.runs, 3)}
                                                    for inv, n in sorted(self.failures.items())}}


def replay(plan: Plan, runner: Runner, times: int) -> ReplayResult:
    """Run ``plan`` ``times`` times; report how often each invariant failed (the honest reproduction rate)."""
    if times < 1:
        raise ValueError("times must be >= 1")
    result = ReplayResult(times)
    for _ in range(times):
        result.per_run.append(set(runner(plan)))
    return result


# --- candidates ----------------------------------------------------------------------------------------------
def _retarget(texts: list[str], plan: Plan, new_index: dict[int, int]) -> list[str]:
    """Targets with their ``step(N)`` renumbered; a reference to a removed step becomes what that step was written
    with (``step(0, 0)`` -> ``active(p1)``): re-resolved instead of reused, the nearest plan without step 0.
    SelectorError when that has no single equivalent inside a function."""
    def replace(ref: StepRef) -> list[Selector]:
        if ref.index in new_index:
            return [StepRef(new_index[ref.index], ref.group)]
        src = plan.steps[ref.index]
        groups = src.groups
        written = src.targets if groups is None else groups[ref.group] if ref.group is not None else \
            [t for g in groups for t in g]
        return [sel for t in written for sel in substitute_steps(parse(t), replace)]

    return list(dict.fromkeys(str(sel) for t in texts for sel in substitute_steps(parse(t), replace)))


def _renumber(data: dict[str, Any], removed: set[int], plan: Plan) -> dict[str, Any] | None:
    """Drop steps; rewrite references to removed steps as nominal times (conditions) or as the targets the removed
    step was written with (``step(N)``), renumber the rest. None: nothing left, or no faithful rewrite."""
    tl = {r.index: r for r in nominal_timeline(plan).rows}
    new_index = {}
    for i in range(len(plan.steps)):
        if i not in removed:
            new_index[i] = len(new_index)
    steps = []
    for i, step in enumerate(data["steps"]):
        if i in removed:
            continue
        step = dict(step)
        for key in ("after", "until"):
            cond = getattr(plan.steps[i], f"{key}_condition")()
            if cond is None or not cond.name.startswith("step_"):
                continue
            ref = int(cond.arg)  # type: ignore[arg-type]
            if ref in new_index:
                step[key] = f"{cond.name}({new_index[ref]})"
            elif key == "after":
                step.pop("after")
                step.pop("delay", None)
                step["at"] = max(0.0, round(tl[i].start - plan.warmup_s, 1))
            else:
                step.pop("until")
                step["duration"] = max(MIN_DURATION, round(tl[i].end - tl[i].start, 1))
        if plan.steps[i].step_references():
            try:
                if "target" in step:
                    texts = _retarget(plan.steps[i].targets, plan, new_index)
                    step["target"] = texts[0] if isinstance(step["target"], str) and len(texts) == 1 else texts
                if plan.steps[i].groups is not None:
                    groups = [_retarget(g, plan, new_index) for g in plan.steps[i].groups]  # type: ignore[union-attr]
                    step["params"] = {**step["params"], "groups": groups}
            except SelectorError:
                return None
        steps.append(step)
    return {**data, "steps": steps} if steps else None


def _weaker_params(kind: str, params: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    defined = module_kind(kind)
    if defined is not None:
        yield from defined.weaker(params)
        return
    attrs = params.get("attributes", {})
    if kind == "toxic":
        typ = params.get("type")
        if typ == "latency":
            if attrs.get("jitter"):
                yield "no jitter", {**params, "attributes": {**attrs, "jitter": 0}}
            if attrs.get("latency", 0) > 10:
                yield "half the latency", {**params, "attributes": {**attrs, "latency": attrs["latency"] // 2}}
        if typ == "bandwidth" and attrs.get("rate", 0) < 100_000:
            yield "4x bandwidth", {**params, "attributes": {**attrs, "rate": max(1, attrs["rate"] * 4)}}
        if typ == "slicer" and attrs.get("delay"):
            yield "no slicer delay", {**params, "attributes": {**attrs, "delay": 0}}
    if params.get("signal") != "TERM" and kind in ("kill", "restart"):
        yield "SIGTERM instead of SIGKILL", {**params, "signal": "TERM"}
    if kind == "partition" and params.get("direction", "two_way") == "two_way":
        yield "one-way partition", {**params, "direction": "one_way"}
    if kind == "db_failover" and params.get("mode") in ("kill_primary", "pause_primary", "isolate_primary"):
        yield "graceful switchover", {**params, "mode": "switchover"}


def candidates(plan: Plan) -> Iterator[tuple[str, dict[str, Any]]]:
    """Simpler variants of ``plan``, biggest simplifications first (as plain data; may be invalid)."""
    data = plan_to_data(plan)
    n = len(plan.steps)
    size = n // 2
    while size >= 1:  # remove chunks of steps, halves first (delta debugging)
        for start in range(0, n, size):
            removed = set(range(start, min(n, start + size)))
            if len(removed) < n and (new := _renumber(data, removed, plan)) is not None:
                label = f"remove step {start}" if size == 1 else f"remove steps {start}..{start + size - 1}"
                yield label, new
        size //= 2
    for i, step in enumerate(data["steps"]):
        def with_step(changes: dict[str, Any], i: int = i, step: dict[str, Any] = step) -> dict[str, Any]:
            steps = list(data["steps"])
            steps[i] = {**step, **changes}
            return {**data, "steps": steps}

        if isinstance(step.get("target"), list) and len(step["target"]) > 1:
            for j in range(len(step["target"])):
                yield f"step {i}: drop target {j}", with_step({"target": step["target"][:j] + step["target"][j + 1:]})
        dur = step.get("duration")
        if dur is not None and dur > MIN_DURATION:
            yield f"step {i}: halve duration", with_step({"duration": max(MIN_DURATION, math.floor(dur) / 2)})
        at = step.get("at")
        if at is not None and at >= 1:
            yield f"step {i}: fire earlier", with_step({"at": math.floor(at / 2)})
        for label, params in _weaker_params(step["kind"], step.get("params", {})):
            yield f"step {i}: {label}", with_step({"params": params})
    wl = data.get("workload", {})
    rate, clients = wl.get("rate", 10.0), wl.get("clients", 4)
    if rate > 1:
        yield "halve the rate", {**data, "workload": {**wl, "rate": max(1.0, math.floor(rate) / 2)}}
    if clients > 1:
        yield "halve the clients", {**data, "workload": {**wl, "clients": max(1, clients // 2)}}


# --- shrink --------------------------------------------------------------------------------------------------
@dataclass
class Attempt:
    change: str
    steps: int
    failed: bool
    runs: int


@dataclass
class ShrinkResult:
    original: Plan
    minimal: Plan
    invariant: str
    runs: int
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def accepted(self) -> list[str]:
        return [a.change for a in self.attempts if a.failed]


def _fails(plan: Plan, runner: Runner, invariant: str, k: int) -> tuple[bool, int]:
    for r in range(k):
        if invariant in runner(plan):
            return True, r + 1
    return False, k


def shrink(plan: Plan, runner: Runner, invariant: str | None = None, *, k: int = 3, max_runs: int = 300,
           model: TopologyModel | None = None, log: Callable[[Attempt], None] | None = None) -> ShrinkResult:
    """Minimise ``plan`` while it still fails ``invariant`` (default: the first one it is seen to fail)."""
    runs = 0
    if invariant is None:
        for _ in range(k):
            runs += 1
            failed = runner(plan)
            if failed:
                invariant = sorted(failed)[0]
                break
        else:
            raise DidNotReproduce(f"plan {plan.name} failed no invariant in {k} runs",
                                  "replay it with more runs (--times) to measure its reproduction rate")
    else:
        ok, used = _fails(plan, runner, invariant, k)
        runs += used
        if not ok:
            raise DidNotReproduce(f"plan {plan.name} did not fail {invariant} in {k} runs",
                                  "replay it with more runs (--times) to measure its reproduction rate")
    result = ShrinkResult(plan, plan, invariant, runs)
    tried: set[str] = set()
    confirmed = False
    while result.runs < max_runs:
        progress = False
        for change, data in candidates(result.minimal):
            try:
                cand = validate_plan(data, model)
            except ValidationError:
                continue
            key = dump_plan(cand)
            if key in tried:
                continue
            tried.add(key)
            ok, used = _fails(cand, runner, invariant, k)
            result.runs += used
            attempt = Attempt(change, len(cand.steps), ok, used)
            result.attempts.append(attempt)
            if log:
                log(attempt)
            if ok:
                result.minimal, progress = cand, True
                break
            if result.runs >= max_runs:
                break
        if progress:
            confirmed = False
            continue
        if confirmed:
            break
        tried.clear()  # one confirmation pass: give candidates rejected by bad luck another chance
        confirmed = True
    name = f"{plan.name[:70]}-min"
    desc = f"Minimised from {plan.name} by harness.plans.shrink ({result.runs} runs, k={k}): still fails " \
           f"{invariant}.\n\n{plan.description}"
    result.minimal = result.minimal.model_copy(update={"name": name, "description": desc})
    return result
