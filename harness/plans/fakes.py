"""In-memory stand-ins for the live topology: a virtual clock and an injector that 'fails over' a FakeView.

Why in the package and not only in tests: the executor, the shrinker and Hypothesis strategies are exercised
without Docker by unit tests, and a plan can be dry-run (``ha-chaos plan dry-run``) to see the exact event
sequence the executor would record. The fake's failover model is deliberately simple - a cut or stopped active
hands over to the first healthy other replica at once - it tests the plan machinery, not the SUT.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.plans.injector import Effects, Resolution, default_effects
from harness.plans.schema import StepBase
from harness.plans.targets import FakeView


@dataclass
class FakeClock:
    """Virtual time: ``sleep`` advances it and runs ``on_sleep`` so a test can change the world meanwhile."""

    t: float = 0.0
    slept: float = 0.0
    on_sleep: list[Any] = field(default_factory=list)

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(seconds, 1e-3)
        self.slept += max(seconds, 1e-3)
        for hook in self.on_sleep:
            hook(self.t)


@dataclass
class FakeApplied:
    injector: FakeInjector
    fault_id: str
    kind: str
    effects: Effects
    record: dict[str, Any]
    verified: bool = True

    def verify(self) -> bool:
        return self.verified

    def undo(self) -> None:
        self.injector.heal({"id": self.fault_id, "kind": self.kind, "record": self.record})


@dataclass
class FakeInjector:
    """Applies faults to a FakeView. ``fail_verify`` / ``fail_apply``: kinds whose verify returns False / whose
    apply raises. ``in_effect`` is the set of fault ids not yet undone - a leak detector for tests."""

    view: FakeView
    fail_verify: set[str] = field(default_factory=set)
    fail_apply: set[str] = field(default_factory=set)
    in_effect: dict[str, dict[str, Any]] = field(default_factory=dict)
    log: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)

    def apply(self, step: StepBase, resolved: Resolution) -> FakeApplied:
        kind = step.kind_name
        self.log.append(("apply", kind, tuple(resolved.targets)))
        if kind in self.fail_apply:
            raise RuntimeError(f"fake: cannot apply {kind}")
        effects = default_effects(step, resolved, self.view.model, self.view.primary)
        down = set(effects.stops) | set(effects.cuts_db)
        record = {"down": sorted(down), "kind": kind}
        self.view.unhealthy |= set(effects.stops)
        self._fail_over(down)
        if kind == "db_failover":
            self._switch_primary()
        if kind == "set_passive":
            self._fail_over(set(resolved.targets))
        self.in_effect[resolved.fault_id] = record
        return FakeApplied(self, resolved.fault_id, kind, effects, record, kind not in self.fail_verify)

    def heal(self, entry: dict[str, Any]) -> None:
        self.log.append(("heal", str(entry.get("kind")), (str(entry.get("id")),)))
        record = self.in_effect.pop(str(entry.get("id")), None)
        if record:
            self.view.unhealthy -= set(record.get("down", []))
            for pair, reps in self.view.model.pairs.items():
                if self.view.actives.get(pair) is None:
                    healthy = [r for r in reps if r not in self.view.unhealthy]
                    self.view.actives[pair] = healthy[0] if healthy else None

    def _fail_over(self, down: set[str]) -> None:
        for pair, reps in self.view.model.pairs.items():
            if self.view.actives.get(pair) in down:
                others = [r for r in reps if r not in down and r not in self.view.unhealthy]
                self.view.actives[pair] = others[0] if others else None

    def _switch_primary(self) -> None:
        pg = [s.name for s in self.view.model.by_role("postgres")]
        others = [p for p in pg if p != self.view.primary]
        if others:
            self.view.primary = others[0]
