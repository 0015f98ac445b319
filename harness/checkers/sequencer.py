"""Invariants 7 and 8: what each member reads from the active-active sequencers.

What is observable from the subscriber side, and therefore what invariant 8 checks:
(a) no event is served with ``ts`` above the safe watermark reported with it;
(b) the safe watermark one sequencer instance serves to a member never goes back (a regression is what lets an
event appear below an already-served watermark; right after a switch to another instance a slightly lower value
is normal, as each instance polls the shared watermarks on its own);
(c) no new event arrives with ``ts`` at or below a watermark already served to that member *and* below a
timestamp the member already holds - that event was sequenced "in the past" of a finished prefix.
An event written late but above every timestamp the member holds is indistinguishable from a slow reader here;
that needs the writer's evidence, not the stream.
"""

from __future__ import annotations

from typing import Any

from harness.checkers.common import as_index
from harness.checkers.index import HistoryIndex
from harness.checkers.model import CheckContext, CheckResult, keep, result
from harness.history import Event


def check_sequencer_stream(events: list[Event] | HistoryIndex, ctx: CheckContext | None = None) -> CheckResult:
    """7. Per member: gap-free counters, strictly increasing ts, prev_ts chains, no fork after re-subscribe."""
    idx = as_index(events)
    witnesses: list[dict[str, Any]] = []
    total = bad = resubs = 0
    for member, stream in idx.seq_streams.items():
        seen: dict[Any, tuple[Any, Any]] = {}
        max_c: Any = None
        last: Event | None = None
        expect_from: Any = None  # from_counter of a fresh subscription, until its first event
        replaying = False  # redeliveries are legitimate only at the start of a fresh subscription
        for ev in stream:
            v = ev.value
            if ev.f == "seq_subscribe":
                resubs += last is not None
                expect_from = v.get("from_counter")
                replaying = True
                continue
            c, ts = v.get("counter"), v.get("ts")
            if c is None or ts is None:
                continue
            total += 1
            if expect_from is not None:
                if c != expect_from:
                    bad += 1
                    keep(witnesses, ev, f"{member} re-subscribed from {expect_from}, first event is {c}")
                expect_from = None
            if max_c is not None and c <= max_c:
                old = seen.get(c)
                if old is not None and old != (ts, v.get("payload_hash")):
                    bad += 1
                    keep(witnesses, ev, f"fork: counter {c} was ts={old[0]} hash={old[1]} before")
                elif not replaying:
                    bad += 1
                    keep(witnesses, ev, f"counter {c} repeated without a re-subscribe")
                last = ev
                continue
            replaying = False
            if max_c is not None and c != max_c + 1:
                bad += 1
                keep(witnesses, ev, f"{member}: counter {c} after {max_c}: gap")
            prev = seen.get(max_c) if max_c is not None else None
            if prev is not None and ts <= prev[0]:
                bad += 1
                keep(witnesses, ev, f"{member}: ts {ts} not after {prev[0]}")
            if prev is not None and v.get("prev_ts") is not None and v["prev_ts"] != prev[0]:
                bad += 1
                keep(witnesses, ev, f"{member}: prev_ts {v['prev_ts']} but previous event has ts "
                                    f"{prev[0]}")
            seen[c] = (ts, v.get("payload_hash"))
            max_c = c
            last = ev
    if bad:
        return result("7", "fail", f"{bad} sequencer stream violations in {total} events", witnesses)
    if not total:
        return result("7", "unknown", "no sequencer stream was read")
    return result("7", "pass", f"{total} events over {len(idx.seq_streams)} members consistent across "
                               f"{resubs} re-subscriptions", metrics={"events": total, "resubscribes": resubs})


def check_watermark(events: list[Event] | HistoryIndex, ctx: CheckContext | None = None) -> CheckResult:
    """8. Nothing served beyond the safe watermark; nothing appears later below a served watermark."""
    idx = as_index(events)
    witnesses: list[dict[str, Any]] = []
    total = bad = 0
    for member, stream in idx.seq_streams.items():
        w_max: Any = None  # highest watermark served to this member, over all subscriptions
        w_sub: Any = None  # ... within the current subscription (one sequencer instance)
        w_ev: Event | None = None
        ts_max: Any = None
        max_c: Any = None
        for ev in stream:
            if ev.f == "seq_subscribe":
                # another instance may poll the shared watermarks a little later: a lower value right after
                # switching is not a violation; only a regression within one instance's stream is
                w_sub, w_ev = None, None
                continue
            if ev.f != "seq_event":
                continue
            v = ev.value
            ts, w, c = v.get("ts"), v.get("safe_watermark"), v.get("counter")
            if ts is None or w is None:
                continue
            total += 1
            if ts > w:
                bad += 1
                keep(witnesses, ev, f"ts {ts} served beyond safe watermark {w}")
            if w_sub is not None and w < w_sub:
                bad += 1
                keep(witnesses, ev, f"{member}: safe watermark {w} after {w_sub} was served by "
                                    f"{v.get('sequencer')}")
                if w_ev is not None:
                    keep(witnesses, w_ev, "earlier, higher watermark")
            is_new = max_c is None or c is None or c > max_c
            if is_new and w_max is not None and ts_max is not None and ts <= w_max and ts < ts_max:
                bad += 1
                keep(witnesses, ev, f"{member}: new event ts {ts} below served watermark {w_max}")
            if w_sub is None or w > w_sub:
                w_sub, w_ev = w, ev
            if w_max is None or w > w_max:
                w_max = w
            if is_new:
                ts_max = ts if ts_max is None else max(ts_max, ts)
                if c is not None:
                    max_c = c
    if bad:
        return result("8", "fail", f"{bad} watermark violations in {total} events", witnesses)
    if not total:
        return result("8", "unknown", "no sequencer event carried a safe watermark")
    return result("8", "pass", f"{total} events served at or below the safe watermark, watermarks monotonic")
