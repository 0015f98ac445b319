"""Invariant 10 (bounded recovery) and the vacuity guards G1 (faults took effect), G2 (expected failover seen).

Why the guards are results of their own: a run whose fault never took, or whose expected failover never
happened, tested nothing it claimed to test. Reporting that as a separate ``unknown`` line keeps the invariant
verdicts readable while the overall verdict (fail > unknown > pass) can no longer be ``pass``.
"""

from __future__ import annotations

import bisect
import itertools
from typing import Any

from harness.checkers.common import as_index, resolve
from harness.checkers.index import Fault, HistoryIndex
from harness.checkers.model import CheckContext, CheckResult, result, witness
from harness.history import Event

#: Guards of the plan schema's ``expect`` (``primary_change``; ``pg_failover`` is accepted as an alias).
KNOWN_GUARDS = frozenset({"failover", "primary_change", "pg_failover"})


def _fresh_ok_completions(idx: HistoryIndex) -> tuple[list[float], list[float], list[Event]]:
    """OK completions in time order with the invoke time of their submit (inf when the submit is unknown)."""
    invoked: dict[Any, float] = {op.invoke.value.get("submission_id"): op.invoke.t for op in idx.submits}
    rows = sorted(((ev.t, invoked.get(ev.value.get("submission_id"), float("inf")), ev)
                   for ev in idx.completions if ev.value.get("status") == "OK"), key=lambda x: x[0])
    return [x[0] for x in rows], [x[1] for x in rows], [x[2] for x in rows]


def time_to_recover(fault: Fault, ts: list[float], invoked: list[float], evs: list[Event]
                    ) -> tuple[float | None, Event | None]:
    """Seconds from the fault's heal to the first OK completion of a command submitted after that heal."""
    if fault.end is None:
        return None, None
    heal = fault.end
    for i in range(bisect.bisect_left(ts, heal), len(ts)):
        if invoked[i] >= heal:
            return ts[i] - heal, evs[i]
    return None, None


def check_recovery(events: list[Event] | HistoryIndex, ctx: CheckContext | None = None) -> CheckResult:
    """10. After the last heal, a fresh command completes OK within the bound; time to recover per fault."""
    idx = as_index(events)
    r = resolve(ctx, idx)
    faults = idx.effective_faults()
    if not faults:
        return result("10", "unknown", "no fault took effect: recovery not exercised", metrics={"applicable": False})
    ts, invoked, evs = _fresh_ok_completions(idx)
    per_fault: list[dict[str, Any]] = []
    for f in faults:
        ttr, _ = time_to_recover(f, ts, invoked, evs)
        per_fault.append({"step": f.step, "kind": f.kind, "target": f.target, "start": f.start, "heal": f.end,
                          "ttr_s": None if ttr is None else round(ttr, 3)})
    metrics = {"recovery_bound_s": r.recovery_bound_s, "faults": per_fault}
    unhealed = [f for f in faults if f.end is None]
    if unhealed:
        return result("10", "unknown", f"fault step {unhealed[0].step} ({unhealed[0].kind}) was never healed",
                      [witness(unhealed[0].outcome)] if unhealed[0].outcome else [], metrics)
    last = max(faults, key=lambda f: f.end or 0.0)
    assert last.end is not None and last.heal is not None
    ttr, first = time_to_recover(last, ts, invoked, evs)
    metrics["ttr_s"] = None if ttr is None else round(ttr, 3)
    invokes = sorted(op.invoke.t for op in idx.submits)
    slow = _slow_intermediate(faults, last, per_fault, r.recovery_bound_s, invokes)
    if slow:
        f, row = slow[0]
        got = "no fresh OK" if row["ttr_s"] is None else f"first fresh OK after {row['ttr_s']:.2f}s"
        return result("10", "fail", f"after the heal of step {f.step} ({f.kind}) nothing else was injected for "
                                    f"{r.recovery_bound_s:g}s, yet {got} (bound {r.recovery_bound_s:g}s)",
                      [witness(g.heal, f"heal of step {g.step}") for g, _ in slow if g.heal is not None], metrics)
    if ttr is not None and ttr <= r.recovery_bound_s:
        return result("10", "pass", f"recovered {ttr:.2f}s after the last heal (bound {r.recovery_bound_s:g}s)",
                      [witness(last.heal, "last heal"), witness(first, "first fresh OK")] if first else [],
                      metrics)
    if ttr is not None:
        return result("10", "fail", f"first fresh command completed {ttr:.2f}s after the last heal, over the "
                                    f"{r.recovery_bound_s:g}s bound",
                      [witness(last.heal, "last heal"), witness(first, "first fresh OK")] if first else [],
                      metrics)
    waited = idx.t_end - last.end
    if not any(op.invoke.t >= last.end for op in idx.submits):
        return result("10", "unknown", "no command was submitted after the last heal: recovery not exercised",
                      [witness(last.heal, "last heal")], metrics)
    if waited >= r.recovery_bound_s:
        return result("10", "fail", f"no fresh command completed OK in the {waited:.1f}s after the last heal "
                                    f"(bound {r.recovery_bound_s:g}s)", [witness(last.heal, "last heal")], metrics)
    return result("10", "unknown", f"history ends {waited:.1f}s after the last heal, before the "
                                   f"{r.recovery_bound_s:g}s bound, with no fresh OK", metrics=metrics)


def _slow_intermediate(faults: list[Fault], last: Fault, rows: list[dict[str, Any]], bound: float,
                       invokes: list[float]) -> list[tuple[Fault, dict[str, Any]]]:
    """Earlier faults followed by a fault-free window of at least ``bound`` must also have recovered within it;
    a heal followed closely by the next fault is not judged (the system had no quiet time to recover), nor one
    after which no command was even tried within the bound."""
    out: list[tuple[Fault, dict[str, Any]]] = []
    for f, row in zip(faults, rows, strict=True):
        if f is last or f.end is None:
            continue
        end, horizon = f.end, f.end + bound
        busy = any(g is not f and g.start is not None and g.start < horizon and (g.end is None or g.end > end)
                   for g in faults)
        tried = bisect.bisect_left(invokes, end) < bisect.bisect_right(invokes, horizon)
        if not busy and tried and (row["ttr_s"] is None or row["ttr_s"] > bound):
            out.append((f, row))
    return out


def check_faults_took_effect(events: list[Event] | HistoryIndex,
                             ctx: CheckContext | None = None) -> CheckResult | None:
    """G1. Every planned fault was applied, verified and healed; None when the plan had no fault."""
    idx = as_index(events)
    if not idx.faults:
        return None
    witnesses: list[dict[str, Any]] = []
    problems: list[str] = []
    for f in idx.faults:
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
    return result("G1", "pass", f"all {len(idx.faults)} faults took effect and were healed")


def failovers(idx: HistoryIndex) -> dict[str, list[tuple[str, str, Event]]]:
    """Per pair, the changes of its single ready replica seen in health samples: (from, to, sample)."""
    from harness.checkers.common import node_of

    active: dict[str, str] = {}
    out: dict[str, list[tuple[str, str, Event]]] = {}
    for ev in idx.health:
        ready: dict[str, list[str]] = {}
        for rep, st in (ev.value.get("services") or {}).items():
            node = node_of(rep)
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
