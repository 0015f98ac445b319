"""Time budgets of generated campaigns (``ha-chaos run --budget 30m``, ``pytest -m chaos --chaos-budget 2h``).

A budget is wall time for the whole campaign: starting the topology, every run (settle, plan, logs, checks),
shrinking a failure, and stopping the topology. A plan is started only if its estimated cost fits in what is left
(``Budget.fits``): its nominal timeline (``harness.plans.timeline``: warmup, faults, the full quiet period) plus the
overhead observed on this campaign's earlier runs (settling the topology, collecting logs and evidence, checking),
so the last plan never overruns a CI job's limit.

Why hand-written duration parsing: the accepted forms are a handful (``90``, ``90s``, ``30m``, ``2h``, ``1h30m``);
a dependency such as ``pytimeparse`` would accept far more (``1:30``, ``1.5 weeks``) than a budget needs.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from harness.errors import InputError
from harness.plans.schema import Plan
from harness.plans.timeline import nominal_timeline

_PART = re.compile(r"(\d+(?:\.\d+)?)([hms])")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}
#: named budgets of the pytest plugin; a duration is a generated campaign until it is spent
NAMED_BUDGETS = ("ci", "nightly")


def parse_duration(text: str, option: str = "--budget") -> float:
    """``90`` / ``90s`` / ``30m`` / ``2h`` / ``1h30m`` -> seconds (> 0); anything else is an InputError."""
    raw = str(text).strip().lower()
    seconds: float | None = None
    if re.fullmatch(r"\d+(?:\.\d+)?", raw):
        seconds = float(raw)
    elif raw and re.fullmatch(rf"(?:{_PART.pattern})+", raw):
        units = [u for _, u in _PART.findall(raw)]
        if len(set(units)) == len(units) and units == sorted(units, key="hms".index):
            seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(raw))
    if seconds is None or not seconds > 0:
        raise InputError(f"{option} {text!r} is not a duration above 0",
                         f"pass seconds or a duration such as 90s, 30m, 2h or 1h30m, e.g. {option} 30m")
    return seconds


def is_duration(text: str) -> bool:
    try:
        parse_duration(text)
    except InputError:
        return False
    return True


def format_duration(seconds: float) -> str:
    """``1h02m``, ``12m04s``, ``45s``: compact and readable in progress lines."""
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m"
    if m:
        return f"{m}m{sec:02d}s"
    return f"{sec}s"


@dataclass
class Budget:
    """Wall time for a campaign, counted from its creation on ``clock`` (injectable for tests)."""

    total_s: float
    clock: Callable[[], float] = time.monotonic
    #: kept back for stopping the topology at the end (compose down + removal by label: ~10-20 s here)
    reserve_s: float = 20.0
    started: float = field(init=False)

    def __post_init__(self) -> None:
        self.started = self.clock()

    @property
    def elapsed_s(self) -> float:
        return self.clock() - self.started

    @property
    def remaining_s(self) -> float:
        return max(0.0, self.total_s - self.elapsed_s)

    def fits(self, cost_s: float) -> bool:
        """Whether something estimated to take ``cost_s`` can finish inside the budget (minus the reserve)."""
        return cost_s <= self.remaining_s - self.reserve_s

    def line(self) -> str:
        return (f"{format_duration(self.elapsed_s)} elapsed, {format_duration(self.remaining_s)} left of "
                f"{format_duration(self.total_s)}")


@dataclass
class CostModel:
    """Estimated wall time of one run: the plan's nominal length plus the overhead observed around runs.

    The overhead is the largest of the last ``window`` observations (actual - nominal, never below 0), so one slow
    settle raises the estimate for a while and then ages out; before any observation ``default_overhead_s``
    (settle ~10 s, logs, evidence and checks ~10-20 s on the 2-core machine, with a margin). A quiet period that
    ends early (the workload settled) only makes a run shorter than estimated.
    """

    default_overhead_s: float = 45.0
    window: int = 5
    observed: list[float] = field(default_factory=list)

    @staticmethod
    def nominal_s(plan: Plan) -> float:
        return nominal_timeline(plan).total

    def overhead_s(self) -> float:
        recent = self.observed[-self.window:]
        return max(recent) if recent else self.default_overhead_s

    def estimate(self, plan: Plan) -> float:
        return self.nominal_s(plan) + self.overhead_s()

    def observe(self, plan: Plan, seconds: float) -> None:
        self.observed.append(max(0.0, seconds - self.nominal_s(plan)))
