"""Invariants 2, 3 and 4: the command path (exactly once, every acknowledged submit completes, no lost success).

Honesty about ``info``: an indeterminate submit may or may not have been recorded. These checkers therefore
count *observed* accepted transactions and completions, never submits: an info submit can neither be reported
lost (nothing was promised) nor count as a duplicate (only two accepted transactions of one change ID do).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from harness.checkers.common import QuietPeriod, as_index, plural, quiet_period, resolve
from harness.checkers.index import ChangeKey, HistoryIndex, change_key, offset_key
from harness.checkers.model import CheckContext, CheckResult, keep, result, witness
from harness.history import Event

DUPLICATE = "DUPLICATE_COMMAND"
#: completion statuses that tell the client "definitely not executed": it may retry the change ID safely
DEFINITE_REJECTIONS = frozenset({"NOT_SEQUENCED_TIMEOUT", "LOCAL_VERDICT_TIMEOUT", "REJECTED"})


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
            close = _within_period(evs, r.dedup_period_s)
            if close is None:
                continue
            evs = [*close, *(e for e in evs if e not in close)]
        violations += 1
        for e in evs[:3]:
            keep(witnesses, e, f"change {key[3]!r} on {key[0]}: {len(txs)} accepted transactions")
    if violations:
        return result("2", "fail", f"{plural(violations, 'change ID')} accepted more than once "
                                   f"(of {len(accepted)} accepted)", witnesses)
    return result("2", "pass", f"{len(accepted)} accepted change IDs, each exactly once")


def _within_period(evs: list[Event], period_s: float) -> tuple[Event, Event] | None:
    """Two acceptances of one change ID that the deduplication period should have caught: consecutive ones (by
    record time) at most ``period_s`` apart, None if every consecutive pair is further apart. A period starts
    at each acceptance, so the spread of all of them says nothing (1 s apart, then 90 s later, with a 10 s
    period, is a violation). Without a record time on each, the first two (they cannot be told apart)."""
    rts = [e.value.get("record_time") for e in evs]
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in rts):
        return evs[0], evs[1]
    by_rt = sorted(evs, key=lambda e: e.value["record_time"])
    for a, b in itertools.pairwise(by_rt):
        if b.value["record_time"] - a.value["record_time"] <= period_s * 1e6:
            return a, b
    return None


def check_acknowledged_completes(events: list[Event] | HistoryIndex,
                                 ctx: CheckContext | None = None) -> CheckResult:
    """3. Each acknowledged submit gets exactly one completion; a duplicate carries the earlier offset; and a
    definite rejection is the submission's only outcome: it was not executed as well.

    Why the last rule belongs here (not to 4, which follows OK completions into the streams): a completion is
    the one outcome the client learns, and NOT_SEQUENCED_TIMEOUT, LOCAL_VERDICT_TIMEOUT and REJECTED promise
    "not executed" - the client may retry the change ID on the strength of it. A submission rejected *and*
    executed has two contradictory outcomes, which is what "exactly one completion" rules out. The model's
    reason it cannot happen: a send not sequenced before its max-sequencing-time is never delivered afterwards,
    and a request without a verdict before its decision timeout is never applied. See ``rejected_executed``
    for how a transaction is tied to the rejected submission without counting ``info`` submits."""
    idx = as_index(events)
    r = resolve(ctx, idx)
    qp = quiet_period(idx, r)
    rex = rejected_executed(idx, qp)
    refused = refused_executed(idx)
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
        if rex.executed or refused:
            text = "; ".join(x for x in (rex.explanation() if rex.executed else "", _refused_text(refused)) if x)
            return result("3", "fail", text, rex.witnesses + _refused_witnesses(refused),
                          {**rex.metrics(), "refused_executed": len(refused)})
        return result("3", "unknown", "no submit was acknowledged: nothing to check")
    # a participant whose completion stream the harness never subscribed to cannot show a completion: its
    # missing completions are a gap of the harness, not evidence against the node
    read = {p for p, stream in idx.completion_streams.items() if stream}
    witnesses: list[dict[str, Any]] = []
    lost = doubled = pending = bad_dup = dangling = dup_unjudged = 0
    unread: set[str] = set()
    unread_n = 0
    for op in acked:
        sid = op.invoke.value.get("submission_id")
        comps = by_sub.get(sid)
        if not comps:
            assert op.outcome is not None
            part = str(op.invoke.value.get("participant"))
            if part not in read:
                unread.add(part)
                unread_n += 1
            elif qp.judgeable and op.outcome.t <= qp.judge_before:
                lost += 1
                keep(witnesses, op.outcome, "acknowledged, never completed")
            else:
                pending += 1
        elif len(comps) > 1:
            doubled += 1
            for e in list(comps.values())[:2]:
                keep(witnesses, e, f"submission {sid} completed {len(comps)} times")
    tx_streams: dict[str, _TxStream] | None = None
    for ev in idx.completions:
        v = ev.value
        if v.get("status") != DUPLICATE:
            continue
        earlier = ok_offset.get(change_key(v))
        if earlier is not None:
            if v.get("offset") != earlier:
                bad_dup += 1
                keep(witnesses, ev, f"duplicate points at offset {v.get('offset')!r}, accepted at {earlier!r}")
            continue
        if tx_streams is None:
            tx_streams = _tx_streams(idx)
        why = _dangling(ev, tx_streams.get(str(v.get("participant"))), qp)
        if why is None:
            dup_unjudged += 1
        elif why:
            dangling += 1
            keep(witnesses, ev, f"duplicate of a change never accepted: {why}")
    metrics = {"acknowledged": len(acked), "lost": lost, "pending": pending, "not_read": unread_n,
               "duplicates_not_judged": dup_unjudged, **rex.metrics(), "refused_executed": len(refused)}
    if lost or doubled or bad_dup or dangling or rex.executed or refused:
        parts = [s for n, s in ((lost, f"{lost} lost"), (doubled, f"{doubled} completed twice"),
                                (bad_dup, f"{bad_dup} duplicates with a wrong offset"),
                                (dangling, f"{dangling} duplicates pointing at no transaction of their change "
                                           f"(the client takes them as success: the write is lost)")) if n]
        text = f"of {len(acked)} acknowledged submits: " + ", ".join(parts) if parts else ""
        if rex.executed:
            text = "; ".join(x for x in (rex.explanation(), text) if x)
        if refused:
            text = "; ".join(x for x in (_refused_text(refused), text) if x)
        return result("3", "fail", text, _refused_witnesses(refused) + rex.witnesses + witnesses, metrics)
    if unread:
        return result("3", "unknown", f"{plural(unread_n, 'acknowledged submit')} without completion on "
                                      f"{', '.join(sorted(unread))}, whose completion stream was never read",
                      metrics=metrics)
    if pending and not qp.judgeable:
        return result("3", "unknown", f"{plural(pending, 'acknowledged submit')} without completion; cannot call them "
                                      f"lost: {qp.reason}", metrics=metrics)
    if rex.not_judged and not qp.judgeable:
        return result("3", "unknown", f"{plural(rex.not_judged, 'transaction')} of a definitely rejected change ID "
                                      f"without an OK completion seen; cannot tell yet whether a rejected submission "
                                      f"was executed: {qp.reason}", metrics=metrics)
    note = f" ({pending} acknowledged in the last {r.completion_grace_s:g}s not judged)" if pending else ""
    if rex.rejections:
        note += f"; {plural(rex.rejections, 'definite rejection')}, none executed"
        if rex.not_judged:
            note += (f" ({plural(rex.not_judged, 'transaction')} of a rejected change seen in the last "
                     f"{r.completion_grace_s:g}s without an OK completion yet: not judged)")
    if dup_unjudged:
        note += (f" ({plural(dup_unjudged, 'duplicate')} of a change whose acceptance the streams never covered "
                 f"not judged)")
    return result("3", "pass", f"all {len(acked) - pending} judged acknowledged submits completed once{note}",
                  metrics=metrics)


def refused_executed(idx: HistoryIndex) -> list[tuple[Event, Event]]:
    """(refusal, completion) for each submit answered ``fail`` whose own submission was processed anyway.

    A ``fail`` submit is the node's word that it did not take the submission (NODE_IS_PASSIVE_REPLICA,
    UNAVAILABLE, SUBMISSION_ALREADY_IN_FLIGHT, a definite refusal): the client may retry or give up on that
    strength. Its submission id is unique to that attempt, and only a recorded submission gets a completion, so
    any completion carrying it (OK: executed; a rejection: processed and rejected) means the refused attempt itself
    was recorded (e.g. a node that timed out its own write, answered a refusal, and let the write commit).
    ``info`` submits (unknown outcome) never count."""
    refused: dict[Any, Event] = {}
    for op in idx.submits:
        if op.outcome is not None and op.outcome.type == "fail":
            sid = op.invoke.value.get("submission_id")
            if sid is not None:
                refused[sid] = op.outcome
    out: list[tuple[Event, Event]] = []
    seen: set[Any] = set()
    for ev in idx.completions:
        sid = ev.value.get("submission_id")
        if sid in refused and sid not in seen:
            seen.add(sid)
            out.append((refused[sid], ev))
    return out


def _refused_text(pairs: list[tuple[Event, Event]]) -> str:
    if not pairs:
        return ""
    return (f"{plural(len(pairs), 'submit')} refused (answered as not accepted) and processed anyway: a completion "
            "of the refused submission followed - the client was told to retry or give up")


def _refused_witnesses(pairs: list[tuple[Event, Event]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for refusal, comp in pairs[:5]:
        sid = comp.value.get("submission_id")
        keep(out, refusal, f"submission {sid!r} refused: {refusal.value.get('error')!r}")
        keep(out, comp, f"submission {sid!r} completed {comp.value.get('status')} (completion offset "
                        f"{comp.value.get('completion_offset')!r})")
    return out


@dataclass
class RejectedExecuted:
    """Definitely rejected submissions that were executed anyway: ``pairs`` of (rejection completion,
    transaction); ``not_judged``: such transactions seen too late in the history to tell."""

    rejections: int = 0
    executed: int = 0
    not_judged: int = 0
    witnesses: list[dict[str, Any]] = field(default_factory=list)
    pairs: list[tuple[Event, Event]] = field(default_factory=list)

    def explanation(self) -> str:
        return (f"{plural(self.executed, 'definitely rejected submission')} executed anyway (of "
                f"{plural(self.rejections, 'definite rejection')}): a transaction of the change ID that no OK "
                "completion accounts for - the client was told 'not executed' and may retry it")

    def metrics(self) -> dict[str, int]:
        return {"definite_rejections": self.rejections, "rejected_executed": self.executed,
                "rejected_executed_not_judged": self.not_judged}


def _num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def rejected_executed(idx: HistoryIndex, qp: QuietPeriod) -> RejectedExecuted:
    """Transactions of a definitely rejected submission (completion NOT_SEQUENCED_TIMEOUT, LOCAL_VERDICT_TIMEOUT
    or REJECTED).

    A transaction T (in any participant's stream) belongs to the rejected submission when it is a transaction of
    the same change ID (its submitter, user, act_as, command_id) and no OK completion accounts for it (no OK
    completion of its submitter carries its ``tx_id``). Why that is enough, and honest about ``info``: a
    transaction commits together with the OK completion of the submission that produced it, so an executed
    submission of that change - whatever its submit's outcome, ``info`` included - shows its own OK completion
    and accounts for its transaction; a retry after the rejection (allowed: a rejection frees the change ID) is
    accounted for the same way. Nothing is inferred from a submit: only observed completions and transactions
    count. A transaction that no OK completion accounts for *yet* is judged only once the history is judgeable
    (faults healed, quiet period passed) and it was seen at least ``completion_grace_s`` before the end (its
    completion would have been read by then) or the submitter's completion stream was read past its record time
    (the OK completion would carry that record time); otherwise it is counted as not judged.

    The witness pair names the change ID, the rejected submission (its completion: status, completion offset)
    and the transaction (its ``tx_id`` and offset). With several rejections of one change ID, the one that
    precedes the transaction most closely (by record time, else by history time) is named."""
    out = RejectedExecuted()
    rejections: dict[ChangeKey, list[Event]] = defaultdict(list)
    accounted: set[tuple[str, Any]] = set()
    read_past: dict[str, int] = {}   # participant -> highest record time read on its completion stream
    for ev in idx.completions:
        v = ev.value
        rt = v.get("record_time")
        if isinstance(rt, int):
            part = str(v.get("participant"))
            read_past[part] = max(read_past.get(part, rt), rt)
        status = v.get("status")
        if status in DEFINITE_REJECTIONS:
            rejections[change_key(v)].append(ev)
            out.rejections += 1
        elif status == "OK" and v.get("tx_id") is not None:
            accounted.add((str(v.get("participant")), v.get("tx_id")))
    if not rejections:
        return out
    found: dict[tuple[str, Any], tuple[Event, float]] = {}   # (submitter, tx_id) -> (copy to show, first seen)
    for part, stream in idx.transactions.items():
        for ev in stream:
            v = ev.value
            tx = v.get("tx_id")
            if ev.f != "transaction" or tx is None:
                continue
            submitter = str(v.get("submitter", part))
            if (submitter, tx) in accounted or change_key({**v, "participant": submitter}) not in rejections:
                continue
            k = (submitter, tx)
            prev = found.get(k)
            if prev is None:
                found[k] = (ev, ev.t)
            elif part == submitter and str(prev[0].value.get("participant", "")) != submitter:
                found[k] = (ev, min(prev[1], ev.t))   # the submitter's own copy is the clearer witness
            else:
                found[k] = (prev[0], min(prev[1], ev.t))
    for (submitter, tx), (tev, first_seen) in found.items():
        # Judged when seen before the grace, or when the submitter's completion stream was already read past the
        # transaction's record time: an OK completion accounting for it commits with it, at the same record
        # time (the verdict's sequencing time, the same on every informee), and a completion stream is read in
        # record-time order, so it would have been read by now.
        rt = tev.value.get("record_time")
        read_beyond = isinstance(rt, int) and read_past.get(submitter, rt) > rt
        if not (qp.judgeable and (first_seen <= qp.judge_before or read_beyond)):
            out.not_judged += 1
            continue
        key = change_key({**tev.value, "participant": submitter})
        rej = _closest_before(rejections[key], tev)
        out.executed += 1
        out.pairs.append((rej, tev))
        change = (f"change (participant {key[0]}, user {key[1]}, act_as {list(key[2])}, command {key[3]!r})")
        rv = rej.value
        keep(out.witnesses, rej, f"{change}: submission {rv.get('submission_id')!r} definitely rejected "
                                 f"({rv.get('status')}, completion offset {rv.get('completion_offset')!r})")
        keep(out.witnesses, tev, f"{change}: executed anyway - transaction {tx!r} at offset "
                                 f"{tev.value.get('offset')!r} in {tev.value.get('participant', submitter)}'s "
                                 f"stream, no OK completion accounts for it")
    return out


def _closest_before(rejs: list[Event], tev: Event) -> Event:
    rt = tev.value.get("record_time")
    if _num(rt):
        cands = [e for e in rejs if _num(e.value.get("record_time")) and e.value["record_time"] <= rt]
        if cands:
            return max(cands, key=lambda e: e.value["record_time"])
    before = [e for e in rejs if e.t <= tev.t]
    return before[-1] if before else rejs[0]


@dataclass
class _TxStream:
    """What one participant's transaction stream showed: transactions by offset, and the offset ranges it read.

    A subscription ``from_offset`` F delivers the transactions with offset *above* F (exclusive, as Canton's
    ``begin_exclusive``; ``LedgerClient.transactions``); each ``subscribe`` marker starts a segment (F, hi] where
    hi is the highest offset it delivered. Transactions before any marker start a segment of unknown origin,
    which covers nothing."""

    by_offset: dict[Any, list[Event]] = field(default_factory=lambda: defaultdict(list))
    segments: list[tuple[Any, Any]] = field(default_factory=list)  # (offset_key(F), offset_key(hi) or None)


def _tx_streams(idx: HistoryIndex) -> dict[str, _TxStream]:
    out: dict[str, _TxStream] = {}
    for part, stream in idx.transactions.items():
        ts = out[part] = _TxStream()
        seg: list[Any] | None = None
        for ev in stream:
            off = ev.value.get("from_offset" if ev.f == "subscribe" else "offset")
            if ev.f == "subscribe":
                if seg is not None:
                    ts.segments.append((seg[0], seg[1]))
                seg = [offset_key(off), None] if off is not None else None
                continue
            if off is None:
                continue
            ts.by_offset[offset_key(off)].append(ev)
            if seg is not None and (seg[1] is None or offset_key(off) > seg[1]):
                seg[1] = offset_key(off)
        if seg is not None:
            ts.segments.append((seg[0], seg[1]))
    return out


def _dangling(dup: Event, stream: _TxStream | None, qp: QuietPeriod) -> str | None:
    """Why a DUPLICATE_COMMAND of a change with no OK completion points at nothing ("" = it points at the
    change's transaction, fine; None = the submitter's stream did not read that offset: not judged).

    Judged when the stream read the duplicate's offset O: a segment (F, hi] with F < O <= hi, or the last
    segment (still reading when the history ended) starts below O and every fault has healed and the quiet
    period passed (the stream settled, so a transaction at O would have arrived)."""
    v = dup.value
    o = v.get("offset")
    if stream is None or o is None:
        return None
    ko = offset_key(o)
    key = change_key(v)
    there = stream.by_offset.get(ko, [])
    if any(change_key({**e.value, "participant": key[0]}) == key and e.value.get("submitter", key[0]) == key[0]
           for e in there):
        return ""
    if there:
        return (f"offset {o!r} holds {there[0].value.get('tx_id')!r} of command "
                f"{there[0].value.get('command_id')!r}")
    read = any(f < ko and hi is not None and ko <= hi for f, hi in stream.segments)
    if not read and stream.segments:
        f, hi = stream.segments[-1]
        read = f < ko and (hi is None or ko > hi) and qp.judgeable and dup.t <= qp.judge_before
    return f"no transaction at offset {o!r} in {key[0]}'s stream, which read it" if read else None


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
    missing = mismatched = pending = unread = 0
    not_read: set[str] = set()
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
            keep(witnesses, ev, f"completion offset {v.get('offset')!r} but stream has "
                                f"{own.value.get('offset')!r}")
        ref = own
        for q in informees:
            got = streams.get(q, {}).get(tx)
            if got is None:
                if q not in streams:  # never read: absence is not evidence, and presence was never checked
                    unread += 1
                    not_read.add(q)
                elif qp.judgeable and ev.t <= qp.judge_before:
                    missing += 1
                    keep(witnesses, ev, f"transaction {tx} missing from {q}'s stream")
                else:
                    pending += 1
                continue
            if ref is None:
                ref = got
            elif (got.value.get("payload_hash"), got.value.get("command_id")) != \
                    (ref.value.get("payload_hash"), ref.value.get("command_id")):
                mismatched += 1
                keep(witnesses, got, f"content differs from {ref.value.get('participant')}'s copy")
                keep(witnesses, ref, "reference copy")
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
    if unread:
        return result("4", "unknown", f"{plural(unread, 'OK transaction')} for an informee whose transaction stream "
                                      f"was never read ({', '.join(sorted(not_read))})",
                      metrics={"ok_completions": len(oks), "not_read": unread})
    reads = sum(1 for op in idx.ledger_ends if op.type == "ok")
    tail = f"; {reads} ledger-end reads after them all included them" if reads else ""
    return result("4", "pass", f"{len(oks)} OK completions, each transaction in every informee's stream{tail}",
                  metrics={"ok_completions": len(oks), "not_judged": pending, "ledger_end_reads": reads})
