"""Invariants 2, 3 and 4: the command path (exactly once, every acknowledged submit completes, no lost success).

Honesty about ``info``: an indeterminate submit may or may not have been recorded. These checkers therefore
count *observed* accepted transactions and completions, never submits: an info submit can neither be reported
lost (nothing was promised) nor count as a duplicate (only two accepted transactions of one change ID do).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from harness.checkers.common import as_index, plural, quiet_period, resolve
from harness.checkers.index import ChangeKey, HistoryIndex, change_key, offset_key
from harness.checkers.model import CheckContext, CheckResult, result, witness
from harness.history import Event

DUPLICATE = "DUPLICATE_COMMAND"


def check_exactly_once(events: list[Event] | HistoryIndex, ctx: CheckContext | None = None) -> CheckResult:
    """2. Per participant, at most one accepted transaction per change ID (within the dedup period)."""
    idx = as_index(events)
    r = resolve(ctx, idx)
    accepted: dict[ChangeKey, dict[Any, Event]] = defaultdict(dict)
    for ev in idx.completions:
        v = ev.value
        if v.get("status") == "OK" and v.get("tx_id") is not None:
            accepted[change_key(v)].setdefault(v["tx_id"], ev)
    for part, stream in idx.transactions.items():
        for ev in stream:
            v = ev.value
            if ev.f != "transaction" or v.get("submitter", part) != part or v.get("tx_id") is None:
                continue
            accepted[change_key({**v, "participant": part})].setdefault(v["tx_id"], ev)
    if not accepted:
        return result("2", "unknown", "no accepted transaction observed (no OK completion, no own transaction)")
    witnesses: list[dict[str, Any]] = []
    violations = 0
    for key, txs in accepted.items():
        if len(txs) < 2:
            continue
        evs = sorted(txs.values(), key=lambda e: e.t)
        if r.dedup_period_s is not None:
            rts = [e.value.get("record_time") for e in evs]
            if all(isinstance(x, int | float) for x in rts) and \
                    max(rts) - min(rts) > r.dedup_period_s * 1e6:  # type: ignore[type-var,operator]
                continue
        violations += 1
        for e in evs[:3]:
            witnesses.append(witness(e, f"change {key[3]!r} on {key[0]}: {len(txs)} accepted transactions"))
    if violations:
        return result("2", "fail", f"{plural(violations, 'change ID')} accepted more than once "
                                   f"(of {len(accepted)} accepted)", witnesses)
    return result("2", "pass", f"{len(accepted)} accepted change IDs, each exactly once")


def check_acknowledged_completes(events: list[Event] | HistoryIndex,
                                 ctx: CheckContext | None = None) -> CheckResult:
    """3. Each acknowledged submit gets exactly one completion; a duplicate carries the earlier offset."""
    idx = as_index(events)
    r = resolve(ctx, idx)
    qp = quiet_period(idx, r)
    by_sub: dict[Any, dict[Any, Event]] = defaultdict(dict)
    ok_offset: dict[ChangeKey, Any] = {}
    for ev in idx.completions:
        v = ev.value
        sid = v.get("submission_id")
        marker = v.get("completion_offset", (v.get("status"), v.get("offset")))
        by_sub[sid].setdefault(marker, ev)
        if v.get("status") == "OK":
            ok_offset.setdefault(change_key(v), v.get("offset"))
    acked = [op for op in idx.submits if op.outcome is not None and op.outcome.type == "ok"]
    if not acked:
        return result("3", "unknown", "no submit was acknowledged: nothing to check")
    witnesses: list[dict[str, Any]] = []
    lost = doubled = pending = bad_dup = 0
    for op in acked:
        sid = op.invoke.value.get("submission_id")
        comps = by_sub.get(sid)
        if not comps:
            assert op.outcome is not None
            if qp.judgeable and op.outcome.t <= qp.judge_before:
                lost += 1
                witnesses.append(witness(op.outcome, "acknowledged, never completed"))
            else:
                pending += 1
        elif len(comps) > 1:
            doubled += 1
            for e in list(comps.values())[:2]:
                witnesses.append(witness(e, f"submission {sid} completed {len(comps)} times"))
    for ev in idx.completions:
        v = ev.value
        if v.get("status") != DUPLICATE:
            continue
        earlier = ok_offset.get(change_key(v))
        if earlier is not None and v.get("offset") != earlier:
            bad_dup += 1
            witnesses.append(witness(ev, f"duplicate points at offset {v.get('offset')!r}, "
                                         f"accepted at {earlier!r}"))
    if lost or doubled or bad_dup:
        parts = [s for n, s in ((lost, f"{lost} lost"), (doubled, f"{doubled} completed twice"),
                                (bad_dup, f"{bad_dup} duplicates with a wrong offset")) if n]
        return result("3", "fail", f"of {len(acked)} acknowledged submits: " + ", ".join(parts), witnesses,
                      {"acknowledged": len(acked), "lost": lost, "pending": pending})
    if pending and not qp.judgeable:
        return result("3", "unknown", f"{plural(pending, 'acknowledged submit')} without completion; cannot call them "
                                      f"lost: {qp.reason}", metrics={"pending": pending})
    note = f" ({pending} acknowledged in the last {r.completion_grace_s:g}s not judged)" if pending else ""
    return result("3", "pass", f"all {len(acked) - pending} judged acknowledged submits completed once{note}",
                  metrics={"acknowledged": len(acked), "pending": pending})


def stale_reads(idx: HistoryIndex) -> list[tuple[Event, Event]]:
    """Ledger-end reads invoked after an OK completion was seen whose ledger end is below that completion's
    offset: the success was reported before it was durable (or it was lost). Pairs (completion, read outcome).

    Why this is a violation: a participant reports a completion only once its transaction is committed, so
    its ledger end includes the transaction from then on (Canton's Ledger API guarantees it); any replica that
    answers afterwards reads the same shared database."""
    by_part: dict[str, list[Event]] = defaultdict(list)
    for ev in idx.completions:
        if ev.value.get("status") == "OK" and ev.value.get("offset") is not None:
            by_part[str(ev.value.get("participant"))].append(ev)
    out: list[tuple[Event, Event]] = []
    for part, oks in by_part.items():
        oks.sort(key=lambda e: e.t)
        reads = sorted((op for op in idx.ledger_ends if op.outcome is not None and op.outcome.type == "ok"
                        and str(op.invoke.value.get("participant")) == part
                        and op.outcome.value.get("offset") is not None), key=lambda op: op.invoke.t)
        i, best = 0, None
        for op in reads:
            while i < len(oks) and oks[i].t < op.invoke.t:
                if best is None or offset_key(oks[i].value["offset"]) > offset_key(best.value["offset"]):
                    best = oks[i]
                i += 1
            assert op.outcome is not None
            if best is not None and offset_key(op.outcome.value["offset"]) < offset_key(best.value["offset"]):
                out.append((best, op.outcome))
    return out


def check_no_lost_success(events: list[Event] | HistoryIndex, ctx: CheckContext | None = None) -> CheckResult:
    """4. An OK completion's transaction is in the submitter's and every informee's stream, with one content,
    and a ledger-end read made after the completion was seen includes it (no success reported before it is
    durable)."""
    idx = as_index(events)
    r = resolve(ctx, idx)
    qp = quiet_period(idx, r)
    streams: dict[str, dict[Any, Event]] = {}
    for part, stream in idx.transactions.items():
        d: dict[Any, Event] = {}
        for ev in stream:
            if ev.f == "transaction":
                d.setdefault(ev.value.get("tx_id"), ev)
        streams[part] = d
    informees_of: dict[Any, list[str]] = {}
    for op in idx.submits:
        v = op.invoke.value
        if v.get("informees"):
            informees_of[v.get("submission_id")] = [str(x) for x in v["informees"]]
    oks = [ev for ev in idx.completions if ev.value.get("status") == "OK"]
    if not oks:
        return result("4", "unknown", "no OK completion observed")
    if not streams:
        return result("4", "unknown", "no transaction stream was read")
    witnesses: list[dict[str, Any]] = []
    missing = mismatched = pending = 0
    for ev in oks:
        v = ev.value
        part = str(v.get("participant"))
        tx = v.get("tx_id")
        own = streams.get(part, {}).get(tx)
        informees = informees_of.get(v.get("submission_id")) or (
            [str(x) for x in own.value.get("informees", [part])] if own is not None else [part])
        if part not in informees:
            informees = [part, *informees]
        if own is not None and v.get("offset") is not None and own.value.get("offset") != v.get("offset"):
            mismatched += 1
            witnesses.append(witness(ev, f"completion offset {v.get('offset')!r} but stream has "
                                         f"{own.value.get('offset')!r}"))
        ref = own
        for q in informees:
            got = streams.get(q, {}).get(tx)
            if got is None:
                if qp.judgeable and ev.t <= qp.judge_before and q in streams:
                    missing += 1
                    witnesses.append(witness(ev, f"transaction {tx} missing from {q}'s stream"))
                else:
                    pending += 1
                continue
            if ref is None:
                ref = got
            elif (got.value.get("payload_hash"), got.value.get("command_id")) != \
                    (ref.value.get("payload_hash"), ref.value.get("command_id")):
                mismatched += 1
                witnesses.append(witness(got, f"content differs from {ref.value.get('participant')}'s copy"))
                witnesses.append(witness(ref, "reference copy"))
    stale = stale_reads(idx)
    stale_witnesses: list[dict[str, Any]] = []
    for comp, read in stale[:5]:
        stale_witnesses.append(witness(comp, "OK completion seen"))
        stale_witnesses.append(witness(read, f"read after it: ledger end {read.value.get('offset')!r} is below "
                                             f"offset {comp.value.get('offset')!r}"))
    if missing or mismatched or stale:
        parts = [f"{plural(missing, 'transaction')} missing from a stream",
                 f"{mismatched} with differing content/offset"]
        if stale:
            parts.append(f"{plural(len(stale), 'ledger-end read')} after an OK completion not including it "
                         "(success reported before it was durable)")
        return result("4", "fail", f"of {len(oks)} OK completions: " + ", ".join(parts),
                      stale_witnesses + witnesses, {"stale_reads": len(stale)})
    if pending and not qp.judgeable:
        return result("4", "unknown", f"{plural(pending, 'transaction')} not (yet) in a stream; {qp.reason}")
    reads = sum(1 for op in idx.ledger_ends if op.type == "ok")
    tail = f"; {reads} ledger-end reads after them all included them" if reads else ""
    return result("4", "pass", f"{len(oks)} OK completions, each transaction in every informee's stream{tail}",
                  metrics={"ok_completions": len(oks), "not_judged": pending, "ledger_end_reads": reads})
