"""Batched event processing (``process_batch``) against the per-event reference (``process_event``).

Both run over the same random event sequences (own and foreign requests, approvals, rejections, verdicts for
unknown or already-decided requests, deadlines passing mid-batch) on two fresh databases; the resulting ledger
(transactions, completions, dedup, in-flight and pending tables, counters) and the published effects must be equal.
"""

from __future__ import annotations

import json
import random
from typing import Any

import asyncpg
import pytest
from sut_support import PgServer

from harness.sut.participant import store
from harness.sut.participant.dedup import change_key
from harness.sut.participant.protocol import Ctx, needs_expiry, process_batch, process_event, requests_only

pytestmark = pytest.mark.integration

TIMEOUT_US = 1_000_000
TABLES = {"p_state": "id", "p_dedup": "change_key", "p_inflight": "request_id", "p_requests": "request_id",
          "p_transactions": "tx_offset", "p_completions": "completion_offset"}


def _scenario(rng: random.Random, n: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """In-flight submissions of p1 (to seed the DB) and the event stream p1 sees."""
    submissions: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    open_requests: list[dict[str, Any]] = []
    ts = 1_000_000
    for k in range(n):
        ts += rng.choice([1_000, 5_000, 50_000, 400_000])
        roll = rng.random()
        if roll < 0.45 or not open_requests:
            submitter = "p1" if rng.random() < 0.7 else "p2"
            cross = rng.random() < 0.4
            req = {"type": "request", "request_id": f"r{k}", "submitter": submitter, "user": "u",
                   "act_as": ["alice" if submitter == "p1" else "carol"], "command_id": f"c{k}",
                   "submission_id": f"s{k}", "informees": ["alice", "carol"] if cross else ["alice"],
                   "informee_participants": ["p1", "p2"] if cross else ["p1"], "payload": {"k": k},
                   "mediator": "mediator", "max_sequencing_time": ts + 5 * TIMEOUT_US}
            req["change_key"] = change_key(req["user"], req["act_as"], req["command_id"])
            if submitter == "p1":
                submissions.append(req)
            events.append({"ts": ts, "payload": {k2: v for k2, v in req.items() if k2 != "change_key"}})
            open_requests.append(req)
        else:
            req = rng.choice(open_requests)
            if rng.random() < 0.8:
                open_requests.remove(req)
            verdict = "approve" if rng.random() < 0.75 else "reject"
            events.append({"ts": ts, "payload": {"type": "verdict", "request_id": req["request_id"],
                                                 "verdict": verdict, "reason": None if verdict == "approve" else "no"}})
        if rng.random() < 0.05:   # a verdict for a request this participant never saw
            events.append({"ts": ts + 1, "payload": {"type": "verdict", "request_id": f"ghost{k}",
                                                     "verdict": "approve"}})
            ts += 1
    for i, ev in enumerate(events):
        ev.update(counter=i, payload_hash=f"h{i}")
    return submissions, events


async def _fresh(pg: PgServer, submissions: list[dict[str, Any]]) -> asyncpg.Connection:
    conn = await asyncpg.connect(pg.dsn(await pg.create_db("batch")))
    await conn.execute(store.PARTICIPANT_DDL)
    for req in submissions:
        await store.claim_new(conn, req["change_key"], req["submission_id"], req["request_id"])
        await store.insert_inflight(conn, req)
    return conn


async def _dump(conn: asyncpg.Connection) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for table, key in TABLES.items():
        rows = await conn.fetch(f"select * from {table} order by {key}")
        out[table] = [{k: (json.loads(v) if k in ("body", "request") else v) for k, v in dict(r).items()}
                      for r in rows]
    return out


def _shape(batch: list[dict[str, Any]]) -> str:
    """Which statements the batched path runs for a batch that passes no deadline (every shape must be seen)."""
    requests = {ev["payload"]["request_id"] for ev in batch if ev["payload"]["type"] == "request"}
    verdicts = {ev["payload"]["request_id"] for ev in batch if ev["payload"]["type"] == "verdict"}
    if not verdicts:
        return "requests only"
    if not requests:
        return "verdicts only"
    return "one statement" if requests.isdisjoint(verdicts) else "verdict of the batch"


def test_batched_processing_equals_per_event_processing(pg: PgServer) -> None:
    """Six random scenarios; together they must exercise every statement shape of the batched path."""
    import asyncio
    kinds = {"requests only": 0, "verdicts only": 0, "one statement": 0, "verdict of the batch": 0}

    async def main(seed: int) -> None:
        rng = random.Random(seed)
        submissions, events = _scenario(rng, 160)
        ref, bat = await _fresh(pg, submissions), await _fresh(pg, submissions)
        try:
            ctx_ref, ctx_bat = Ctx("p1", "p1a", TIMEOUT_US), Ctx("p1", "p1a", TIMEOUT_US)
            for ctx, conn in ((ctx_ref, ref), (ctx_bat, bat)):
                ctx.deadline = await store.next_deadline(conn)
            fx_ref, fx_bat = store.Effects(), store.Effects()
            i, slow_batches = 0, 0
            while i < len(events):
                batch = events[i:i + rng.choice([1, 2, 5, 20, 60])]
                i += len(batch)
                last = batch[-1]
                async with ref.transaction():
                    for ev in batch:
                        await process_event(ref, ctx_ref, fx_ref, ev)
                    await ref.execute("update p_state set last_counter = $1, last_ts = $2, last_hash = $3 "
                                      "where id = 1", last["counter"], last["ts"], last["payload_hash"])
                slow = needs_expiry(ctx_bat, batch)
                slow_batches += slow
                if not slow:
                    kinds[_shape(batch)] += 1
                one = requests_only(ctx_bat, batch, (last["counter"], last["ts"], last["payload_hash"]))
                async with bat.transaction():
                    if one is not None:   # as the node runs it (Writer.write_one)
                        await bat.execute(one[0], *one[1])
                    else:
                        await process_batch(bat, ctx_bat, fx_bat, batch, (last["counter"], last["ts"],
                                                                          last["payload_hash"]))
            assert await _dump(bat) == await _dump(ref)
            assert fx_bat.completions == fx_ref.completions
            assert fx_bat.transactions == fx_ref.transactions
            statuses = {c["status"] for c in fx_ref.completions}
            assert {"OK", "REJECTED", "LOCAL_VERDICT_TIMEOUT"} <= statuses, statuses   # the scenario is not vacuous
            assert 0 < slow_batches < i     # both paths were exercised
        finally:
            await ref.close()
            await bat.close()
    for seed in range(6):
        asyncio.run(main(seed))
    assert all(kinds.values()), kinds     # the shapes a batch without expiry can take were all run


@pytest.mark.parametrize("bug", [False, True])
def test_unordered_indexing_reverses_a_batchs_transactions(pg: PgServer, bug: bool) -> None:
    """Invariant 6 (record time never decreases, same order everywhere): with ``unordered_indexing`` two
    approvals processed in one batch get offsets in reverse event order."""
    import asyncio

    async def main() -> None:
        reqs = [{"type": "request", "request_id": f"r{k}", "submitter": "p1", "user": "u", "act_as": ["alice"],
                 "command_id": f"c{k}", "submission_id": f"s{k}", "informees": ["alice"],
                 "informee_participants": ["p1"], "payload": None, "mediator": "mediator",
                 "max_sequencing_time": 10_000_000} for k in range(2)]
        for r in reqs:
            r["change_key"] = change_key(r["user"], r["act_as"], r["command_id"])
        conn = await _fresh(pg, reqs)
        try:
            ctx = Ctx("p1", "p1a", TIMEOUT_US, unordered=bug)
            events = [{"ts": 1_000_000 + k, "payload": {x: v for x, v in r.items() if x != "change_key"}}
                      for k, r in enumerate(reqs)]
            events += [{"ts": 1_100_000 + k, "payload": {"type": "verdict", "request_id": r["request_id"],
                                                        "verdict": "approve"}} for k, r in enumerate(reqs)]
            for i, ev in enumerate(events):
                ev.update(counter=i, payload_hash=f"h{i}")
            ctx.deadline = None
            fx = store.Effects()
            async with conn.transaction():
                await process_batch(conn, ctx, fx, events, (3, events[-1]["ts"], "h3"))
            rows = await conn.fetch("select record_time from p_transactions order by tx_offset")
            times = [r["record_time"] for r in rows]
            assert times == (sorted(times, reverse=True) if bug else sorted(times)) and len(set(times)) == 2
            comps = {c["command_id"]: c for c in fx.completions}     # completions still name their own tx
            txs = {t["tx_id"]: t for t in fx.transactions}
            assert all(c["offset"] == txs[c["tx_id"]]["offset"] for c in comps.values())
        finally:
            await conn.close()
    asyncio.run(main())
