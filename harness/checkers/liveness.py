"""Invariant 10 (bounded recovery) and the vacuity guards G1 (faults took effect), G2 (expected failover seen).

Why the guards are results of their own: a run whose fault never took, or whose expected failover never
happened, tested nothing it claimed to test. Reporting that as a separate ``unknown`` line keeps the invariant
verdicts readable while the overall verdict (fail > unknown > pass) can no longer be ``pass``.
"""

from __future__ import annotations

import bisect
import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from harness.checkers.common import as_index, node_of, resolve
from harness.checkers.index import Fault, HistoryIndex
from harness.checkers.model import CheckContext, CheckResult, result, witness
from harness.history import Event

#: Guards of the plan schema's ``expect`` (``primary_change``; ``pg_failover`` is accepted as an alias).
KNOWN_GUARDS = frozenset({"failover", "primary_change", "pg_failover", "failover_within_s"})


@dataclass
class _Fresh:
    """One participant's OK completions in time order, with the invoke time of their submit (-inf if unknown: a
    completion whose submit is not in the history - e.g. of a command submitted before the history began - is
    never a *fresh* recovery)."""

    ts: list[float] = field(default_factory=list)
    invoked: list[float] = field(default_factory=list)
    evs: list[Event] = field(default_factory=list)

    def first_after(self, t: float) -> tuple[float | None, Event | None]:
        """Seconds from ``t`` to the first OK completion of a command submitted at or after ``t``."""
        for i in range(bisect.bisect_left(self.ts, t), len(self.ts)):
            if self.invoked[i] >= t:
                return self.ts[i] - t, self.evs[i]
        return None, None


def _fresh_by_participant(idx: HistoryIndex) -> dict[str, _Fresh]:
    invoked: dict[Any, float] = {op.invoke.value.get("submission_id"): op.invoke.t for op in idx.submits}
    out: dict[str, _Fresh] = defaultdict(_Fresh)
    for ev in sorted((e for e in idx.completions if e.value.get("status") == "OK"), key=lambda e: e.t):
        fr = out[str(ev.value.get("participant"))]
        fr.ts.append(ev.t)
        fr.invoked.append(invoked.get(ev.value.get("submission_id"), float("-inf")))
        fr.evs.append(ev)
    return out


def _invokes_by_participant(idx: HistoryIndex) -> dict[str, list[float]]:
    out: dict[str, list[float]] = defaultdict(list)
    for op in idx.submits:
        out[str(op.invoke.value.get("participant"))].append(op.invoke.t)
    for ts in out.values():
        ts.sort()
    return out


def _tried(invokes: list[float], lo: float, hi: float = float("inf")) -> bool:
    return bisect.bisect_left(invokes, lo) < bisect.bisect_right(invokes, hi)


def _recovery(t: float, fresh: dict[str, _Fresh], invokes: dict[str, list[float]], horizon: float = float("inf")
              ) -> dict[str, tuple[float | None, Event | None]]:
    """Per participant that was sent a command in [t, horizon]: time from ``t`` to its first fresh OK."""
    return {p: fresh[p].first_after(t) if p in fresh else (None, None)
            for p, inv in sorted(invokes.items()) if _tried(inv, t, horizon)}


def _all_recovered(per: dict[str, tuple[float | None, Event | None]]) -> float | None:
    """The time until every participant recovered (None if one never did, or none was tried)."""
    ttrs = [ttr for ttr, _ in per.values()]
    return None if not ttrs or any(x is None for x in ttrs) else max(ttrs)  # type: ignore[type-var]


def check_recovery(events: list[Event] | HistoryIndex, ctx: CheckContext | None = None) -> CheckResult:
    """10. After the last heal, a fresh command completes OK on every participant within the bound; time to
    recover per fault; with ``expect.failover_within_s``, each expected pair serves again within that many
    seconds of the first fault on it, while the fault lasts (HA masks the loss of one replica)."""
    idx = as_index(events)
    r = resolve(ctx, idx)
    faults = idx.effective_faults()
    if not faults:
        return result("10", "unknown", "no fault took effect: recovery not exercised", metrics={"applicable": False})
    fresh, invokes = _fresh_by_participant(idx), _invokes_by_participant(idx)
    per_fault: list[dict[str, Any]] = []
    for f in faults:
        per = _recovery(f.end, fresh, invokes) if f.end is not None else {}
        ttr = _all_recovered(per)
        per_fault.append({"step": f.step, "kind": f.kind, "target": f.target, "start": f.start, "heal": f.end,
                          "ttr_s": None if ttr is None else round(ttr, 3),
                          "per_participant": {p: None if x is None else round(x, 3) for p, (x, _) in per.items()}})
    metrics: dict[str, Any] = {"recovery_bound_s": r.recovery_bound_s, "faults": per_fault}
    masking = _failover_within(idx, r, faults, fresh, invokes, metrics)
    if masking is not None:
        return masking
    unhealed = [f for f in faults if f.end is None]
    if unhealed:
        return result("10", "unknown", f"fault step {unhealed[0].step} ({unhealed[0].kind}) was never healed",
                      [witness(unhealed[0].outcome)] if unhealed[0].outcome else [], metrics)
    last = max(faults, key=lambda f: f.end or 0.0)
    assert last.end is not None and last.heal is not None
    slow = _slow_intermediate(faults, last, r.recovery_bound_s, fresh, invokes)
    if slow:
        f, p, ttr = slow[0]
        got = "no fresh OK" if ttr is None else f"first fresh OK after {ttr:.2f}s"
        return result("10", "fail", f"after the heal of step {f.step} ({f.kind}) nothing else was injected for "
                                    f"{r.recovery_bound_s:g}s, yet {p} had {got} (bound {r.recovery_bound_s:g}s)",
                      [witness(g.heal, f"heal of step {g.step}") for g, _, _ in slow if g.heal is not None], metrics)
    per = _recovery(last.end, fresh, invokes)
    ttr_all = _all_recovered(per)
    metrics["ttr_s"] = None if ttr_all is None else round(ttr_all, 3)
    if not per:
        return result("10", "unknown", "no command was submitted after the last heal: recovery not exercised",
                      [witness(last.heal, "last heal")], metrics)
    waited = idx.t_end - last.end
    late = {p: x for p, (x, _) in per.items() if x is not None and x > r.recovery_bound_s}
    never = [p for p, (x, _) in per.items() if x is None]
    firsts = [witness(ev, f"first fresh OK on {p}") for p, (_, ev) in per.items() if ev is not None]
    heal_w = witness(last.heal, "last heal")
    if late:
        p, x = max(late.items(), key=lambda kv: kv[1])
        return result("10", "fail", f"first fresh command on {p} completed {x:.2f}s after the last heal, over the "
                                    f"{r.recovery_bound_s:g}s bound", [heal_w, *firsts], metrics)
    if never and waited >= r.recovery_bound_s:
        return result("10", "fail", f"no fresh command on {', '.join(never)} completed OK in the {waited:.1f}s after "
                                    f"the last heal (bound {r.recovery_bound_s:g}s)", [heal_w, *firsts], metrics)
    if never:
        return result("10", "unknown", f"history ends {waited:.1f}s after the last heal, before the "
                                       f"{r.recovery_bound_s:g}s bound, with no fresh OK on {', '.join(never)}",
                      metrics=metrics)
    assert ttr_all is not None
    return result("10", "pass", f"every participant recovered within {ttr_all:.2f}s of the last heal "
                                f"(bound {r.recovery_bound_s:g}s)", [heal_w, *firsts], metrics)


def _touches(fault: Fault, pair: str, idx: HistoryIndex) -> bool:
    """Whether a fault hit a replica of ``pair`` (a service ``p1a`` or one of its links ``p1a-db``)."""
    resolved = fault.outcome.value.get("resolved") if fault.outcome is not None else None
    return any(node_of(str(x), idx) == pair for x in resolved or [])


def _failover_within(idx: HistoryIndex, r: Any, faults: list[Fault], fresh: dict[str, _Fresh],
                     invokes: dict[str, list[float]], metrics: dict[str, Any]) -> CheckResult | None:
    """The masking rule: a failing result if an expected pair did not serve again within the bound, else None."""
    within = r.expect.get("failover_within_s")
    pairs = r.expect.get("failover") or []
    if not within or not pairs:
        return None
    within = float(within)
    rows: dict[str, float | None] = {}
    for pair in [pairs] if isinstance(pairs, str) else pairs:
        hits = [f for f in faults if _touches(f, str(pair), idx) and f.start is not None]
        if not hits:
            continue  # the fault never hit this pair: G2 says whether the failover happened at all
        first = min(hits, key=lambda f: f.start or 0.0)
        t0 = first.start
        assert t0 is not None
        # a participant pair serves when a command to it completes; a mediator pair when any command does
        parts = [str(pair)] if str(pair) in invokes else sorted(invokes)
        candidates = [(x, ev) for p in parts if p in fresh for x, ev in [fresh[p].first_after(t0)] if x is not None]
        ttf, ev = min(candidates, key=lambda c: c[0]) if candidates else (None, None)
        rows[str(pair)] = None if ttf is None else round(ttf, 3)
        if ttf is not None and ttf <= within:
            continue
        if ttf is None and idx.t_end - t0 < within:
            continue  # the history ended first: not judged here
        got = "nothing completed" if ttf is None else f"the first fresh command completed after {ttf:.2f}s"
        ws = [witness(first.outcome, f"step {first.step} hits {pair}")] if first.outcome is not None else []
        if ev is not None:
            ws.append(witness(ev, f"first fresh OK on {pair}"))
        metrics["failover_s"] = rows
        return result("10", "fail", f"{pair} did not serve again within {within:g}s of step {first.step} "
                                    f"({first.kind}): {got} (expect.failover_within_s)", ws, metrics)
    metrics["failover_s"] = rows
    return None


def _slow_intermediate(faults: list[Fault], last: Fault, bound: float, fresh: dict[str, _Fresh],
                       invokes: dict[str, list[float]]) -> list[tuple[Fault, str, float | None]]:
    """Earlier faults followed by a fault-free window of at least ``bound`` must also have recovered within it,
    on every participant that was sent a command in that window; a heal followed closely by the next fault is
    not judged (the system had no quiet time to recover)."""
    out: list[tuple[Fault, str, float | None]] = []
    for f in faults:
        if f is last or f.end is None:
            continue
        end, horizon = f.end, f.end + bound
        busy = any(g is not f and g.start is not None and g.start < horizon and (g.end is None or g.end > end)
                   for g in faults)
        if busy:
            continue
        for p, (ttr, _) in _recovery(end, fresh, invokes, horizon).items():
            if ttr is None or ttr > bound:
                out.append((f, p, ttr))
                break
    return out


def check_faults_took_effect(events: list[Event] | HistoryIndex,
                             ctx: CheckContext | None = None) -> CheckResult | None:
    """G1. Every planned fault was applied, verified and healed; None when the plan had no fault."""
    idx = as_index(events)
    if not idx.faults:
        return None
    witnesses: list[dict[str, Any]] = []
    problems: list[str] = []
    drawn: list[str] = []   # steps of a generated plan skipped because its own faults removed their target
    for f in idx.faults:
        if f.outcome is not None and f.outcome.type == "info" and f.outcome.value.get("drawn"):
            drawn.append(f"step {f.step} ({f.kind}) skipped: {f.outcome.value.get('skipped')}")
            continue
        if f.outcome is None:
            problems.append(f"step {f.step} ({f.kind}) has no outcome")
            witnesses.append(witness(f.invoke, "fault invoked, no outcome recorded"))
        elif f.outcome.type != "ok":
            skipped = f.outcome.value.get("skipped")
            problems.append(f"step {f.step} ({f.kind}) {'was skipped' if skipped else 'did not take effect'}")
            witnesses.append(witness(f.outcome, str(skipped or f.outcome.value.get("error", "fault failed"))))
        elif f.outcome.value.get("verified") is False:
            problems.append(f"step {f.step} ({f.kind}) effect not verified")
            witnesses.append(witness(f.outcome, "verified=false"))
        elif f.end is None:
            problems.append(f"step {f.step} ({f.kind}) never healed")
            witnesses.append(witness(f.outcome, "no heal ok"))
    if problems:
        return result("G1", "unknown", "; ".join(problems[:3]) + (" ..." if len(problems) > 3 else ""),
                      witnesses)
    applied = len(idx.faults) - len(drawn)
    note = f"; {'; '.join(drawn[:3])}" if drawn else ""
    return result("G1", "pass", f"all {applied} faults applied took effect and were healed{note}")


def failovers(idx: HistoryIndex) -> dict[str, list[tuple[str, str, Event]]]:
    """Per pair, the changes of its single ready replica seen in health samples: (from, to, sample)."""
    active: dict[str, str] = {}
    out: dict[str, list[tuple[str, str, Event]]] = {}
    for ev in idx.health:
        ready: dict[str, list[str]] = {}
        for rep, st in (ev.value.get("services") or {}).items():
            node = node_of(rep, idx)
            if node and isinstance(st, dict) and st.get("ready") is True:
                ready.setdefault(node, []).append(rep)
        for node, reps in ready.items():
            if len(reps) != 1:
                continue
            prev = active.get(node)
            if prev is not None and prev != reps[0]:
                out.setdefault(node, []).append((prev, reps[0], ev))
            active[node] = reps[0]
    return out


def check_expected_failover(events: list[Event] | HistoryIndex,
                            ctx: CheckContext | None = None) -> CheckResult | None:
    """G2. The plan's ``expect`` guards held (a failover of each listed pair; a PG primary change)."""
    idx = as_index(events)
    r = resolve(ctx, idx)
    if not any(r.expect.values()):  # the executor always writes the guards; empty/false ones expect nothing
        return None
    missing: list[str] = []
    witnesses: list[dict[str, Any]] = []
    seen = failovers(idx)
    nodes = r.expect.get("failover") or []
    for node in [nodes] if isinstance(nodes, str) else nodes:
        if seen.get(str(node)):
            a, b, ev = seen[str(node)][0]
            witnesses.append(witness(ev, f"{node} failed over {a} -> {b}"))
        else:
            missing.append(f"no failover of {node} seen in {len(idx.health)} health samples")
    if r.expect.get("primary_change") or r.expect.get("pg_failover"):
        prims = [(e, e.value.get("primary")) for e in idx.pg_primary if e.value.get("primary")]
        change = next(((e, p) for (e0, p0), (e, p) in itertools.pairwise(prims) if p != p0), None)
        if change is None:
            missing.append("no PostgreSQL primary change seen")
        else:
            witnesses.append(witness(change[0], f"PG primary now {change[1]}"))
    for k in sorted(k for k, v in r.expect.items() if v and k not in KNOWN_GUARDS):
        missing.append(f"cannot verify guard {k!r}")
    if missing:
        return result("G2", "unknown", "; ".join(missing), witnesses)
    return result("G2", "pass", "every expected failover happened", witnesses)
