"""Helpers shared by the checkers: resolving the context against the history, and the quiet-period rule.

Why the quiet-period rule lives in one place: three invariants (3, 4, 10) may only call something *lost* or
*not recovered* once every fault is healed and the bound has elapsed; before that, absence is not evidence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from harness.checkers.index import HistoryIndex, build_index
from harness.checkers.model import CheckContext
from harness.history import Event

#: only for histories recorded before runs recorded their target (no ``target`` event): the reference naming
_LEGACY_REPLICA_RE = re.compile(r"^(?P<node>.*\d)(?P<rep>[a-z])$")


def node_of(name: str, idx: HistoryIndex) -> str | None:
    """The active/passive pair a replica belongs to, from the pairs its run recorded (the ``target`` event:
    ``p1a`` -> ``p1`` in the reference target); a fault-proxy link counts as its client's (``p1a-db`` -> ``p1``);
    sequencers and other services -> None (not in a pair). No name is guessed from a pattern, except in a history
    recorded before runs recorded their target."""
    target = idx.target
    if target is not None:
        name = str((target.get("links") or {}).get(name, name))
        for node, reps in (target.get("pairs") or {}).items():
            if name in reps:
                return str(node)
        return None
    m = _LEGACY_REPLICA_RE.match(name.split("-", 1)[0])
    return m.group("node") if m else None


def as_index(events: list[Event] | HistoryIndex) -> HistoryIndex:
    return events if isinstance(events, HistoryIndex) else build_index(list(events))


@dataclass(frozen=True)
class Resolved:
    recovery_bound_s: float
    expect: dict[str, Any]
    completion_grace_s: float
    health_consecutive: int
    dedup_period_s: float | None


def resolve(ctx: CheckContext | None, idx: HistoryIndex) -> Resolved:
    """Explicit context wins, then the history's ``expect`` marker, then defaults."""
    ctx = ctx or CheckContext()
    marker = dict(idx.expect)
    bound = ctx.recovery_bound_s
    if bound is None:
        bound = marker.get("recovery_bound_s")
    if bound is None:
        bound = CheckContext.DEFAULT_RECOVERY_BOUND_S
    expect = dict(ctx.expect) if ctx.expect is not None else {
        k: v for k, v in marker.items() if k != "recovery_bound_s"}
    return Resolved(float(bound), expect, float(ctx.completion_grace_s), max(1, int(ctx.health_consecutive)),
                    ctx.dedup_period_s)


@dataclass(frozen=True)
class QuietPeriod:
    """Whether absences may be judged, and up to which time an operation must have been acknowledged."""

    judgeable: bool
    reason: str
    judge_before: float  # operations acknowledged after this are pending, not lost


def quiet_period(idx: HistoryIndex, r: Resolved) -> QuietPeriod:
    unhealed = [f for f in idx.faults if f.start is not None and f.end is None]
    if unhealed:
        f = unhealed[0]
        return QuietPeriod(False, f"fault step {f.step} ({f.kind}) was never healed", idx.t_start)
    last_heal = idx.last_heal
    if last_heal is not None and idx.t_end - last_heal < r.recovery_bound_s and not idx.settled:
        return QuietPeriod(False, f"history ends {idx.t_end - last_heal:.1f}s after the last heal, before the "
                                  f"{r.recovery_bound_s:g}s quiet period", idx.t_start)
    return QuietPeriod(True, "", idx.t_end - r.completion_grace_s)


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
