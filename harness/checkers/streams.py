"""Invariants 5 and 6: the participants' read side (offsets, order across informees, record time).

Why these need subscribe markers: a stream resumed after failover is judged against the offset it resumed from;
without the ``subscribe`` info events a resumption gap would look like an ordinary jump in offsets.
"""

from __future__ import annotations

from typing import Any

from harness.checkers.common import as_index
from harness.checkers.index import HistoryIndex, offset_key
from harness.checkers.model import CheckContext, CheckResult, keep, result
from harness.history import Event


def _check_stream(stream: list[Event], field: str, what: str, witnesses: list[dict[str, Any]]) -> tuple[int, int]:
    """Walk one stream (with subscribe markers). Returns (#elements, #violations)."""
    last: Event | None = None
    n = bad = 0
    for ev in stream:
        if ev.f == "subscribe":
            x = ev.value.get("from_offset")
            if last is not None and x is not None and \
                    offset_key(x) > offset_key(last.value.get(field)):
                bad += 1
                keep(witnesses, ev, f"{what} resumed from {x!r} after {last.value.get(field)!r}: gap")
                keep(witnesses, last, "last element before the resumption")
            continue
        off = ev.value.get(field)
        if off is None:
            continue
        n += 1
        if last is not None and offset_key(off) <= offset_key(last.value.get(field)):
            bad += 1
            kind = "duplicate" if off == last.value.get(field) else "went back"
            keep(witnesses, ev, f"{what} offset {off!r} after {last.value.get(field)!r}: {kind}")
            continue
        last = ev
    return n, bad


def check_offsets(events: list[Event] | HistoryIndex, ctx: CheckContext | None = None) -> CheckResult:
    """5. Offsets strictly increase per stream; a resumed stream shows no duplicate and no gap."""
    idx = as_index(events)
    witnesses: list[dict[str, Any]] = []
    total = bad = 0
    for stream in idx.transactions.values():
        n, b = _check_stream(stream, "offset", "transaction stream", witnesses)
        total, bad = total + n, bad + b
    for stream in idx.completion_streams.values():
        n, b = _check_stream(stream, "completion_offset", "completion stream", witnesses)
        total, bad = total + n, bad + b
    resumes = sum(1 for s in idx.tx_subscribes.values() for e in s if e.value.get("reason") != "start")
    if bad:
        return result("5", "fail", f"{bad} offset violations in {total} stream elements", witnesses)
    if not total:
        return result("5", "unknown", "no transaction or completion stream element with an offset")
    return result("5", "pass", f"{total} stream elements strictly increasing across {resumes} resumptions",
                  metrics={"elements": total, "resumptions": resumes})


def check_order(events: list[Event] | HistoryIndex, ctx: CheckContext | None = None) -> CheckResult:
    """6. Shared transactions appear in the same relative order on every informee; record time never decreases."""
    idx = as_index(events)
    witnesses: list[dict[str, Any]] = []
    bad_rt = 0
    order: dict[str, list[Event]] = {}
    for part, stream in idx.transactions.items():
        seen: set[Any] = set()
        seq: list[Event] = []
        last_rt: Any = None
        last_ev: Event | None = None
        for ev in stream:
            if ev.f != "transaction":
                continue
            tx = ev.value.get("tx_id")
            if tx in seen:
                continue
            seen.add(tx)
            seq.append(ev)
            rt = ev.value.get("record_time")
            if rt is not None and last_rt is not None and rt < last_rt:
                bad_rt += 1
                keep(witnesses, ev, f"record time {rt} < previous {last_rt} on {part}")
                if last_ev is not None:
                    keep(witnesses, last_ev, "previous transaction")
            if rt is not None:
                last_rt, last_ev = rt, ev
        order[part] = seq
    if not order:
        return result("6", "unknown", "no transaction stream was read")
    inversions = shared_total = 0
    parts = sorted(order)
    for i, a in enumerate(parts):
        for b in parts[i + 1:]:
            pos_b = {ev.value.get("tx_id"): (k, ev) for k, ev in enumerate(order[b])}
            prev: tuple[int, Event, Event] | None = None
            for ev in order[a]:
                hit = pos_b.get(ev.value.get("tx_id"))
                if hit is None:
                    continue
                shared_total += 1
                if prev is not None and hit[0] < prev[0]:
                    inversions += 1
                    keep(witnesses, ev, f"after {prev[1].value.get('tx_id')} on {a}, before it on {b}")
                    keep(witnesses, prev[2], f"{prev[1].value.get('tx_id')} as seen on {b}")
                    continue
                prev = (hit[0], ev, hit[1])
    if inversions or bad_rt:
        return result("6", "fail", f"{inversions} order inversions between participants, "
                                   f"{bad_rt} record-time decreases", witnesses)
    if not shared_total:
        # a workload that submitted no cross-participant command cannot exercise this: not applicable, like
        # outage honesty without a DB cut; cross-participant submits without a shared transaction stay unknown
        crossed = any(len(op.invoke.value.get("informees") or []) > 1 for op in idx.submits)
        return result("6", "unknown", "no transaction shared by two participants' streams: cross-participant "
                                      "order not exercised" + ("" if crossed else " (no cross-participant "
                                                                             "command was submitted)"),
                      metrics={"applicable": crossed})
    return result("6", "pass", f"{shared_total} shared transactions in one order on every informee",
                  metrics={"shared": shared_total})
