"""Processing of sequenced events by a participant (the "sync service" + indexer), inside one DB transaction.

Why decisions by sequencer time only: every participant sees the same events in the same ts order, so deciding
timeouts by event ts (never by the local clock) makes all informee participants agree: a verdict sequenced before
a request's deadline is applied everywhere, one sequenced after it is ignored everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from harness.sut.participant.dedup import DedupEntry
from harness.sut.participant.store import Effects, add_completion, add_transaction, drop_inflight_dedup, set_accepted
from harness.sut.sequencer.pure import payload_hash


@dataclass
class Ctx:
    node: str
    replica: str
    decision_timeout_us: int
    mem_dedup: dict[str, DedupEntry] | None = None   # only with the ``dedup_in_memory`` bug
    unordered: bool = False                           # the ``unordered_indexing`` bug
    deadline: int | None = None                       # cached earliest deadline (avoids a query per event)
    #: only with the ``ack_before_durable`` bug: publishes an OK completion before its transaction commits
    early: Callable[[dict[str, Any]], Awaitable[None]] | None = None


def completion_body(ctx: Ctx, req: dict[str, Any], status: str, **extra: Any) -> dict[str, Any]:
    return {"participant": ctx.node, "command_id": req["command_id"], "user": req["user"], "act_as": req["act_as"],
            "submission_id": req["submission_id"], "status": status, "replica": ctx.replica,
            "request_id": req["request_id"], **extra}


async def _reject_own(conn: asyncpg.Connection, ctx: Ctx, fx: Effects, request_id: str, status: str,
                      ts: int, reason: str | None = None) -> None:
    row = await conn.fetchval("delete from p_inflight where request_id = $1 returning request", request_id)
    if row is None:
        return
    req = json.loads(row)
    await add_completion(conn, fx, completion_body(ctx, req, status, reason=reason), ts)
    await _drop_dedup(conn, ctx, req)


async def _drop_dedup(conn: asyncpg.Connection, ctx: Ctx, req: dict[str, Any]) -> None:
    if ctx.mem_dedup is not None:
        if ctx.mem_dedup.get(req["change_key"]) is not None and \
                ctx.mem_dedup[req["change_key"]].state == "inflight":
            del ctx.mem_dedup[req["change_key"]]
        return
    await drop_inflight_dedup(conn, req["change_key"], req["request_id"])


async def expire(conn: asyncpg.Connection, ctx: Ctx, fx: Effects, ts: int) -> None:
    """Time out what sequencer time ``ts`` has passed: requests without verdict, unsequenced submissions."""
    if ctx.deadline is None or ts <= ctx.deadline:
        return
    for r in await conn.fetch("delete from p_requests where deadline < $1 returning request_id, submitter", ts):
        if r["submitter"] == ctx.node:
            await _reject_own(conn, ctx, fx, r["request_id"], "LOCAL_VERDICT_TIMEOUT", ts)
    for r in await conn.fetch("delete from p_inflight where sequenced_ts is null and max_sequencing_time < $1 "
                              "returning request", ts):
        req = json.loads(r["request"])
        await add_completion(conn, fx, completion_body(ctx, req, "NOT_SEQUENCED_TIMEOUT"), ts)
        await _drop_dedup(conn, ctx, req)
    ctx.deadline = await conn.fetchval(
        "select min(x) from (select min(deadline) as x from p_requests union all "
        "select min(max_sequencing_time) from p_inflight where sequenced_ts is null) s")


def response_for(ctx: Ctx, hosted: set[str], ev: dict[str, Any]) -> tuple[list[str], dict[str, Any], str] | None:
    """The confirmation response this participant sends for a request event (computed before the commit; sent
    with a deterministic message id, so a re-processed event re-sends idempotently)."""
    p = ev["payload"]
    if p.get("type") != "request" or ctx.node not in p.get("informee_participants", []):
        return None
    mine = [x for x in p["informees"] if x in hosted]
    ok = bool(mine) and not (isinstance(p.get("payload"), dict) and p["payload"].get("reject"))
    body = {"type": "response", "request_id": p["request_id"], "participant": ctx.node,
            "verdict": "approve" if ok else "reject", "request_ts": ev["ts"]}
    return [p["mediator"]], body, f"resp-{p['request_id']}-{ctx.node}"


async def process_event(conn: asyncpg.Connection, ctx: Ctx, fx: Effects, ev: dict[str, Any]) -> None:
    ts = ev["ts"]
    await expire(conn, ctx, fx, ts)
    p = ev["payload"]
    kind = p.get("type") if isinstance(p, dict) else None
    if _is_own_request(ctx, p):
        deadline = ts + ctx.decision_timeout_us
        await conn.execute("insert into p_requests (request_id, ts, deadline, submitter, body) "
                           "values ($1, $2, $3, $4, $5) on conflict do nothing",
                           p["request_id"], ts, deadline, p["submitter"], json.dumps(p))
        ctx.deadline = deadline if ctx.deadline is None else min(ctx.deadline, deadline)
        if p["submitter"] == ctx.node:
            await conn.execute("update p_inflight set sequenced_ts = $2 where request_id = $1", p["request_id"], ts)
    elif kind == "verdict":
        row = await conn.fetchrow("delete from p_requests where request_id = $1 returning body, submitter",
                                  p["request_id"])
        if row is None:
            return
        req = json.loads(row["body"])
        mine = row["submitter"] == ctx.node
        if p.get("verdict") == "approve":
            tx = {"participant": ctx.node, "tx_id": req["request_id"], "command_id": req["command_id"],
                  "user": req["user"], "act_as": req["act_as"], "submitter": req["submitter"],
                  "informees": req["informees"], "informee_participants": req["informee_participants"],
                  "payload": req.get("payload"), "payload_hash": payload_hash(req.get("payload")),
                  "replica": ctx.replica}
            off = await add_transaction(conn, fx, tx, ts)
            if mine:
                own = await conn.fetchval("delete from p_inflight where request_id = $1 returning request",
                                          req["request_id"])
                if own is not None:
                    sub = json.loads(own)
                    done = await add_completion(conn, fx, completion_body(ctx, sub, "OK", offset=off,
                                                                          tx_id=req["request_id"]), ts)
                    if ctx.early is not None:
                        await ctx.early(done)
                    if ctx.mem_dedup is not None:
                        ctx.mem_dedup[sub["change_key"]] = DedupEntry("accepted", sub["submission_id"], off, ts)
                    else:
                        await set_accepted(conn, sub["change_key"], sub["request_id"], off, ts)
        elif mine:
            await _reject_own(conn, ctx, fx, req["request_id"], "REJECTED", ts, reason=p.get("reason"))


def _is_own_request(ctx: Ctx, p: Any) -> bool:
    return isinstance(p, dict) and p.get("type") == "request" and ctx.node in p.get("informee_participants", [])


def needs_expiry(ctx: Ctx, batch: list[dict[str, Any]]) -> bool:
    """Whether some event of ``batch`` passes a deadline (known or set by an earlier request of the batch)."""
    d = ctx.deadline
    for ev in batch:
        if d is not None and ev["ts"] > d:
            return True
        if _is_own_request(ctx, ev["payload"]):
            nd = ev["ts"] + ctx.decision_timeout_us
            d = nd if d is None else min(d, nd)
    return False


def _is_verdict(p: Any) -> bool:
    return isinstance(p, dict) and p.get("type") == "verdict"


def _recorded_requests(ctx: Ctx, batch: list[dict[str, Any]]) -> list[list[Any]]:
    """The batch's requests this participant records, as the 7 column arrays of ``_RECORD_REQUESTS_SQL`` /
    ``_RECORD_CTE`` (request rows, then the sequencing times of our own); moves ``ctx.deadline`` on."""
    req_rows: list[tuple[str, int, int, str, str]] = []
    own_sequenced: list[tuple[str, int]] = []
    for ev in batch:
        ts, p = ev["ts"], ev["payload"]
        if _is_own_request(ctx, p):
            deadline = ts + ctx.decision_timeout_us
            req_rows.append((p["request_id"], ts, deadline, p["submitter"], json.dumps(p)))
            ctx.deadline = deadline if ctx.deadline is None else min(ctx.deadline, deadline)
            if p["submitter"] == ctx.node:
                own_sequenced.append((p["request_id"], ts))
    req_cols = [list(c) for c in zip(*req_rows, strict=True)] if req_rows else [[], [], [], [], []]
    seq_cols = [list(c) for c in zip(*own_sequenced, strict=True)] if own_sequenced else [[], []]
    return [*req_cols, *seq_cols]


def requests_only(ctx: Ctx, batch: list[dict[str, Any]], last: tuple[int, int, str]) -> tuple[str, list[Any]] | None:
    """The one statement that processes ``batch`` (with ``last`` recorded as processed) if the batch holds no
    verdict and passes no deadline - what ``process_batch`` would do, as a statement the caller can run as its own
    transaction (``Writer.write_one``: one round trip instead of four); None if the batch needs the full path."""
    if needs_expiry(ctx, batch) or any(_is_verdict(ev["payload"]) for ev in batch):
        return None
    return _RECORD_REQUESTS_SQL.format(tail=_STATE_CTE), [*_recorded_requests(ctx, batch), *last]


async def process_batch(conn: asyncpg.Connection, ctx: Ctx, fx: Effects, batch: list[dict[str, Any]],
                        last: tuple[int, int, str]) -> None:
    """Process ``batch`` (ts order) with a handful of set-based statements, then record ``last`` (counter, ts,
    hash) as processed - the same outcome as ``process_event`` per event, in a fixed number of round trips.

    Why: every statement is a round trip through the fault proxy and pg-lb, and per-event processing (about ten
    statements for an approved own command) capped a participant at a few dozen commands per second. A batch in
    which some event passes a deadline takes the per-event path, so timeouts keep their exact event-time order.
    """
    if needs_expiry(ctx, batch):
        for ev in batch:
            await process_event(conn, ctx, fx, ev)
        await conn.execute("update p_state set last_counter = $1, last_ts = $2, last_hash = $3 where id = 1", *last)
        return
    recorded = _recorded_requests(ctx, batch)
    verdicts = [(ev["ts"], ev["payload"]) for ev in batch if _is_verdict(ev["payload"])]
    if not verdicts:   # requests only: recorded with the processed counter in one statement
        await conn.execute(_RECORD_REQUESTS_SQL.format(tail=_STATE_CTE), *recorded, *last)
        return
    verdict_ids = [p["request_id"] for _, p in verdicts]
    verdict_kinds = [None if p.get("verdict") is None else str(p.get("verdict")) for _, p in verdicts]
    record = ""
    record_args: list[Any] = []
    if recorded[0]:   # own sequencing times belong to recorded requests, so no requests means nothing to record
        if set(recorded[0]).isdisjoint(verdict_ids):   # different rows: one statement can do both
            record, record_args = _RECORD_CTE, recorded
        else:   # a verdict for a request of this very batch: the take must see the request recorded
            await conn.execute(_RECORD_REQUESTS_SQL.format(tail=""), *recorded)
    requests: dict[str, tuple[dict[str, Any], str]] = {}
    inflight: dict[str, dict[str, Any]] = {}
    rows = await conn.fetch(_TAKE_VERDICTED_SQL.format(record=record), verdict_ids, verdict_kinds, ctx.node, *last,
                            *record_args)
    for r in rows:
        if r["request_id"] is None:
            continue
        requests[r["request_id"]] = (json.loads(r["body"]), r["submitter"])
        if r["own"] is not None:
            inflight[r["request_id"]] = json.loads(r["own"])
    top = rows[0]
    # decide in event order; offsets are assigned below from one block per counter
    txs: list[tuple[int, dict[str, Any]]] = []
    comps: list[tuple[int, dict[str, Any], int | None, str]] = []   # (ts, body, index into txs, change key)
    for ts, p in verdicts:
        found = requests.pop(p["request_id"], None)
        if found is None:
            continue
        req, submitter = found
        sub = inflight.pop(req["request_id"], None) if submitter == ctx.node else None
        if p.get("verdict") == "approve":
            txs.append((ts, {"participant": ctx.node, "tx_id": req["request_id"], "command_id": req["command_id"],
                             "user": req["user"], "act_as": req["act_as"], "submitter": req["submitter"],
                             "informees": req["informees"], "informee_participants": req["informee_participants"],
                             "payload": req.get("payload"), "payload_hash": payload_hash(req.get("payload")),
                             "replica": ctx.replica}))
            if sub is not None:
                comps.append((ts, completion_body(ctx, sub, "OK", tx_id=req["request_id"]), len(txs) - 1,
                              sub["change_key"]))
        elif sub is not None:
            comps.append((ts, completion_body(ctx, sub, "REJECTED", reason=p.get("reason")), None,
                          sub["change_key"]))
    if ctx.unordered and len(txs) > 1:   # BUG unordered_indexing: offsets in reverse event order
        order = list(reversed(range(len(txs))))
        txs = [txs[i] for i in order]
        where = {old: new for new, old in enumerate(order)}
        comps = [(ts, body, where[ix] if ix is not None else None, key) for ts, body, ix, key in comps]
    if (top["n_tx"], top["n_comp"]) != (len(txs), len(comps)):   # the statement counted what is decided here
        raise RuntimeError(f"offset blocks {top['n_tx']}/{top['n_comp']} != {len(txs)}/{len(comps)} decided")
    if not txs and not comps:
        return
    tx_first, comp_first = top["tx_offset"] - len(txs) + 1, top["completion_offset"] - len(comps) + 1
    tx_bodies = [{**body, "offset": tx_first + i, "record_time": ts} for i, (ts, body) in enumerate(txs)]
    comp_bodies = []
    for i, (ts, body, tx_index, _) in enumerate(comps):
        extra = {"offset": tx_bodies[tx_index]["offset"]} if tx_index is not None else {}
        comp_bodies.append({**body, **extra, "completion_offset": comp_first + i, "record_time": ts})
    keys = {b["request_id"]: c[3] for b, c in zip(comp_bodies, comps, strict=True)}
    accepted = [c for c in comp_bodies if c["status"] == "OK"]
    rejected = [c for c in comp_bodies if c["status"] != "OK"]
    if ctx.early is not None:   # BUG ack_before_durable: streamed before the commit
        for c in accepted:
            await ctx.early(c)
    if ctx.mem_dedup is not None:   # BUG dedup_in_memory: the DB's dedup rows are left alone
        _settle_mem_dedup(ctx, accepted, rejected, keys)
        accepted, rejected = [], []
    # transactions, completions and the dedup outcome of the completed change IDs: one statement
    await conn.execute(
        _INDEX_SQL,
        [b["offset"] for b in tx_bodies], [b["tx_id"] for b in tx_bodies], [b["record_time"] for b in tx_bodies],
        [json.dumps(b) for b in tx_bodies],
        [b["completion_offset"] for b in comp_bodies], [b["record_time"] for b in comp_bodies],
        [json.dumps(b) for b in comp_bodies],
        [keys[c["request_id"]] for c in accepted], [c["request_id"] for c in accepted],
        [c["offset"] for c in accepted], [c["record_time"] for c in accepted],
        [keys[c["request_id"]] for c in rejected], [c["request_id"] for c in rejected])
    fx.transactions.extend(tx_bodies)
    fx.completions.extend(comp_bodies)


#: requests sequenced to us (pending until their verdict) and the sequencing time of our own; ``{tail}`` may add
#: the processed-counter update (parameters $8..$10)
_RECORD_REQUESTS_SQL = (
    "with r as (insert into p_requests (request_id, ts, deadline, submitter, body) "
    "  select r, t, d, s, b::jsonb from unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[]) "
    "  as u(r, t, d, s, b) on conflict do nothing), "
    "i as (update p_inflight i set sequenced_ts = u.t from unnest($6::text[], $7::bigint[]) as u(r, t) "
    "  where i.request_id = u.r){tail} select 1")
_STATE_CTE = ", st as (update p_state set last_counter = $8, last_ts = $9, last_hash = $10 where id = 1)"

#: the pending requests that got their verdict, and (for our own) their in-flight submissions, taken in one go,
#: with the processed counter ($4..$6) and the offset blocks of what they decide: as many transactions as first
#: verdicts (per request, in event order: ordinality) that approve a pending request, as many completions as
#: first verdicts of our own in-flight ones - the counts ``process_batch`` then checks against its decisions.
#: One row at least (``st``), with null request columns when nothing was pending. ``{record}`` may add the
#: batch's requests (``_RECORD_CTE``, parameters $7..$13) when no verdict of the batch is for one of them.
_TAKE_VERDICTED_SQL = (
    "with u as (select * from unnest($1::text[], $2::text[]) with ordinality as u(rid, verdict, n)), "
    "r as (delete from p_requests where request_id = any($1::text[]) returning request_id, body, submitter), "
    "i as (delete from p_inflight where request_id in (select request_id from r where submitter = $3) "
    "  returning request_id, request), "
    "f as (select distinct on (u.rid) u.rid, u.verdict from u join r on r.request_id = u.rid order by u.rid, u.n), "
    "c as (select (select count(*) from f where verdict = 'approve') as n_tx, "
    "  (select count(*) from f join i on i.request_id = f.rid) as n_comp), "
    "st as (update p_state set tx_offset = tx_offset + (select n_tx from c), "
    "  completion_offset = completion_offset + (select n_comp from c), "
    "  last_counter = $4, last_ts = $5, last_hash = $6 where id = 1 returning tx_offset, completion_offset){record} "
    "select st.tx_offset, st.completion_offset, c.n_tx, c.n_comp, r.request_id, r.body, r.submitter, "
    "  i.request as own from st cross join c left join r on true left join i on i.request_id = r.request_id")
_RECORD_CTE = (
    ", q as (insert into p_requests (request_id, ts, deadline, submitter, body) "
    "  select r, t, d, s, b::jsonb from unnest($7::text[], $8::bigint[], $9::bigint[], $10::text[], $11::text[]) "
    "  as u(r, t, d, s, b) on conflict do nothing), "
    "iq as (update p_inflight i set sequenced_ts = u.t from unnest($12::text[], $13::bigint[]) as u(r, t) "
    "  where i.request_id = u.r)")

_INDEX_SQL = (
    "with t as (insert into p_transactions (tx_offset, tx_id, record_time, body) select o, i, t, b::jsonb "
    "  from unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[]) as u(o, i, t, b)), "
    "c as (insert into p_completions (completion_offset, record_time, body) select o, t, b::jsonb "
    "  from unnest($5::bigint[], $6::bigint[], $7::text[]) as u(o, t, b)), "
    # accepted change IDs become duplicates-to-be; rejected ones are freed (rejections don't deduplicate)
    "a as (update p_dedup d set state = 'accepted', tx_offset = u.o, accepted_at = u.t "
    "  from unnest($8::text[], $9::text[], $10::bigint[], $11::bigint[]) as u(k, r, o, t) "
    "  where d.change_key = u.k and d.request_id = u.r), "
    "x as (delete from p_dedup d using unnest($12::text[], $13::text[]) as u(k, r) "
    "  where d.change_key = u.k and d.request_id = u.r and d.state = 'inflight') "
    "select 1")


def _settle_mem_dedup(ctx: Ctx, accepted: list[dict[str, Any]], rejected: list[dict[str, Any]],
                      keys: dict[str, str]) -> None:
    """BUG dedup_in_memory: the outcome goes to this replica's memory only."""
    assert ctx.mem_dedup is not None
    for c in accepted:
        ctx.mem_dedup[keys[c["request_id"]]] = DedupEntry("accepted", c["submission_id"], c["offset"],
                                                          c["record_time"])
    for c in rejected:
        e = ctx.mem_dedup.get(keys[c["request_id"]])
        if e is not None and e.state == "inflight":
            del ctx.mem_dedup[keys[c["request_id"]]]
