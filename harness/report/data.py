"""What the report draws, derived from the history in one pass: operations, rates, latencies, faults, roles.

Why a separate step: the SVG code should only place shapes; all interpretation of the history (pairing an
invoke with its outcome, a submit with its completion, a fault with its heal) happens here and is testable.
Sizes are bounded (per-second series, per-pixel buckets) so a million-operation run still yields a small file.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from harness.checkers.common import node_of
from harness.checkers.index import HistoryIndex
from harness.errors import HarnessError
from harness.report.rundir import MAX_SPAN_S

OUTCOMES = ("ok", "fail", "info")


@dataclass
class FaultBand:
    label: str
    target: str
    start: float
    end: float | None  # None: never healed
    took: bool  # False: the fault failed (drawn as a marker, not a band)
    error: str = ""


@dataclass
class RoleSegment:
    start: float
    end: float
    who: str  # the ready replica, "none" or "a+b"


@dataclass
class ReportData:
    t_end: float
    clients: dict[str, list[tuple[float, float, str]]] = field(default_factory=dict)
    per_second: dict[str, list[int]] = field(default_factory=dict)
    latency_ms: dict[str, list[float | None]] = field(default_factory=dict)
    faults: list[FaultBand] = field(default_factory=list)
    roles: dict[str, list[RoleSegment]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def fault_periods(self) -> list[tuple[float, float]]:
        return [(f.start, f.end if f.end is not None else self.t_end) for f in self.faults if f.took]


def _pct(xs: list[float], p: float) -> float:
    xs.sort()
    k = max(0, min(len(xs) - 1, math.ceil(p * len(xs)) - 1))
    return xs[k]


def _seconds(t_end: float) -> int:
    """Length of the per-second series: bounded, so a garbled ``t`` cannot allocate without limit."""
    if not t_end <= MAX_SPAN_S:  # also NaN
        raise HarnessError(f"malformed history: it reaches t={t_end:g} s, beyond the {MAX_SPAN_S / 86400:g}-day "
                           "limit of a run", "the history is damaged: fix or remove that event, or re-run the plan")
    return math.floor(t_end) + 1


def build_data(idx: HistoryIndex) -> ReportData:
    t_end = max(idx.t_end, 1e-9)
    n_sec = _seconds(t_end)
    d = ReportData(t_end=t_end)
    series = {k: [0] * n_sec for k in ("submit ok", "submit fail", "submit info", "completion OK")}
    invoked: dict[Any, float] = {}
    clients: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for op in idx.submits:
        inv = op.invoke
        invoked[inv.value.get("submission_id")] = inv.t
        out = op.outcome
        kind = op.type
        t1 = out.t if out is not None else t_end
        clients[inv.process].append((inv.t, t1, kind))
        series[f"submit {kind}"][_sec(t1, n_sec)] += 1
    lat: list[list[float]] = [[] for _ in range(n_sec)]
    for ev in idx.completions:
        status = ev.value.get("status")
        sec = _sec(ev.t, n_sec)
        if status == "OK":
            series["completion OK"][sec] += 1
        if status in ("OK", "DUPLICATE_COMMAND"):
            t0 = invoked.get(ev.value.get("submission_id"))
            if t0 is not None and ev.t >= t0:
                lat[sec].append((ev.t - t0) * 1000.0)
    d.per_second = series
    d.latency_ms = {"p50": [_pct(x, 0.5) if x else None for x in lat],
                    "p99": [_pct(x, 0.99) if x else None for x in lat]}
    d.clients = dict(sorted(clients.items(), key=lambda kv: _natural(kv[0])))
    for f in idx.faults:
        label = f"#{f.step} {f.kind}"
        if f.start is not None:
            d.faults.append(FaultBand(label, f.target, f.start, f.end, True))
        else:
            t = f.outcome.t if f.outcome is not None else f.invoke.t
            err = str(f.outcome.value.get("error", "")) if f.outcome is not None else "no outcome"
            d.faults.append(FaultBand(label, f.target, t, None, False, err))
    d.roles = _roles(idx, t_end)
    d.counts = {"events": len(idx.events), "submits": len(idx.submits), "completions": len(idx.completions),
                "health samples": len(idx.health)}
    return d


def _sec(t: float, n_sec: int) -> int:
    return max(0, min(n_sec - 1, int(t)))


def _roles(idx: HistoryIndex, t_end: float) -> dict[str, list[RoleSegment]]:
    """Per pair, contiguous segments of "who is ready" from the health samples."""
    out: dict[str, list[RoleSegment]] = defaultdict(list)
    for ev in idx.health:
        ready: dict[str, list[str]] = defaultdict(list)
        nodes: set[str] = set()
        for rep, st in (ev.value.get("services") or {}).items():
            node = node_of(rep, idx)
            if node is None or not isinstance(st, dict):
                continue
            nodes.add(node)
            if st.get("ready") is True:
                ready[node].append(rep)
        for node in nodes:
            who = "+".join(sorted(ready[node])) or "none"
            segs = out[node]
            if segs and segs[-1].who == who:
                segs[-1].end = ev.t
            else:
                if segs:
                    segs[-1].end = ev.t
                segs.append(RoleSegment(ev.t, ev.t, who))
    for segs in out.values():
        if segs:
            segs[-1].end = max(segs[-1].end, min(t_end, segs[-1].end + 0.25))
    return dict(sorted(out.items()))


def _natural(s: str) -> tuple[Any, ...]:
    import re

    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", s))
