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
    if kind == "request" and ctx.node in p.get("informee_participants", []):
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
