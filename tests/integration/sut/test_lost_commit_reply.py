"""Writes of the active participant whose COMMIT went through but whose reply was lost (the connection dropped
right after the server committed). The writer retries such a write on a new connection: the retry finds the
first attempt's work already committed and must treat it as its own, not as somebody else's.

The fault is injected at the exact moment by ``WireForwarder.lose_reply`` on p1a's DB link (the other nodes of
the in-process network talk to PostgreSQL directly).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from sut_support import Cluster, PgServer, collect, node_config, wait_until
from wire_faults import WireForwarder

from harness.client.json_api import LedgerClient
from harness.sut.common.db import FatalDbError
from harness.sut.participant.node import ParticipantNode

pytestmark = pytest.mark.integration

CMD = "cmd-whose-reply-is-lost"


async def _network(pg: PgServer) -> tuple[Cluster, ParticipantNode, WireForwarder]:
    """Sequencers and the mediator pair of the in-process network, and p1 as a single replica p1a whose DB link
    runs through a ``WireForwarder``."""
    c = await Cluster(pg, with_participants=()).start()
    fw = await WireForwarder(pg.port).start()
    p1a = ParticipantNode(node_config(
        "participant", "p1a", "p1", pg.dsn(c.dbs["p1"], fw.port), timers=c.timers,
        endpoints=tuple(f"127.0.0.1:{s.cfg.api_port}" for s in c.sequencers)))
    c.participants["p1"] = [p1a]    # stopped with the cluster
    await p1a.start()
    await wait_until(lambda: p1a.election.role == "active" and p1a._api is not None, 15, "p1a serving")
    return c, p1a, fw


def _of(items: list[dict[str, Any]], submission_id: str) -> list[dict[str, Any]]:
    return [x for x in items if x.get("submission_id") == submission_id]


def _has(items: list[dict[str, Any]], submission_id: str) -> bool:
    return bool(_of(items, submission_id))


@pytest.mark.parametrize("path", ["claim", "reclaim"])
def test_a_submission_whose_record_committed_but_whose_reply_was_lost_is_accepted_and_completes(
        pg: PgServer, path: str) -> None:
    """API.md: a 409 SUBMISSION_ALREADY_IN_FLIGHT means nothing was recorded. Here the submission's in-flight
    record *was* committed, only the reply was lost: the retried write finds the replica's own record. It must
    not answer 409 with its own submission id (the request would never be sent, the change ID would stay in
    flight until its max-sequencing time and then complete as NOT_SEQUENCED_TIMEOUT although the client was
    told nothing was recorded): it is accepted (202) and completes exactly once, OK.

    ``claim``: a new change ID, recorded by the single-statement claim. ``reclaim``: a change ID accepted
    before and outside the (zero) dedup period now, recorded by the transaction that re-opens its dedup row."""
    async def main() -> None:
        c, _, fw = await _network(pg)
        comps: list[dict[str, Any]] = []
        try:
            async with LedgerClient(c.ledger_url("p1")) as cl:
                task = asyncio.create_task(collect(cl.completions(0, idle_timeout=60), comps))
                try:
                    if path == "reclaim":
                        assert (await cl.submit(user="u", act_as=["alice"], command_id=CMD, submission_id="s0")).ok
                        await wait_until(lambda: _has(comps, "s0"), 30, "the first submission completed")
                    lost = fw.lose_reply(CMD.encode(), commit=path == "reclaim")
                    r = await cl.submit(user="u", act_as=["alice"], command_id=CMD, submission_id="s1",
                                        deduplication_period_s=0)
                    assert lost.is_set(), "the reply of the submission's record was not lost: nothing was tested"
                    assert r.ok, r.body
                    await wait_until(lambda: _has(comps, "s1"), 30, "s1 completed")
                    assert [x["status"] for x in _of(comps, "s1")] == ["OK"]
                    rows = await pg.query(c.dbs["p1"], "select count(*) as n from p_inflight")
                    assert rows[0]["n"] == 0, "an in-flight record is left behind"
                finally:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
        finally:
            await c.stop()
            await fw.close()
    asyncio.run(main())


def test_a_transaction_whose_commit_reply_was_lost_is_retried_not_fatal(pg: PgServer) -> None:
    """A multi-statement write (``Writer.write``: BEGIN ... COMMIT) whose connection drops - here right after
    the server committed - is a transient error: the writer retries it on a new connection. It must not become a
    fatal one (the process exits): asyncpg hands a lost connection back to its pool at once, so asking the
    connection afterwards whether it is still in a transaction raised "released back to the pool", which is not
    a transient error. Every multi-statement write - event processing, a submission that re-opens a dedup row -
    had this failure on any connection loss."""
    async def main() -> None:
        db = await pg.create_db("p1")
        fw = await WireForwarder(pg.port).start()
        node = ParticipantNode(node_config("participant", "p1a", "p1", pg.dsn(db, fw.port),
                                           endpoints=("127.0.0.1:1",)))   # no sequencer needed
        await node.start()
        try:
            await wait_until(lambda: node.writer is not None, 15, "p1a active")
            assert node.writer is not None
            lost = fw.lose_reply(b"lost-commit-reply-marker", commit=True)
            try:
                await node.writer.write(lambda c: c.execute("select 'lost-commit-reply-marker'"), what="probe")
            except FatalDbError as exc:
                pytest.fail(f"a lost connection was taken for a fatal error: {exc}")
            assert lost.is_set(), "the commit reply was not lost: nothing was tested"
            assert node.fatal is None and node.election.role == "active"
        finally:
            await node.stop()
            await fw.close()
    asyncio.run(main())


def test_events_whose_processing_commit_reply_was_lost_reach_the_streams_once(pg: PgServer) -> None:
    """Issue 12 item 4d: the transaction that processes a verdict (the transaction, the OK completion) commits,
    its reply is lost, and the writer retries it. The retry finds the events already processed and produces
    nothing, so the committed elements never reached the streams' in-memory buffer: a caught-up stream saw them
    only after some later commit. They must be streamed now, each exactly once, and the offsets stay dense."""
    async def main() -> None:
        c, _, fw = await _network(pg)
        comps: list[dict[str, Any]] = []
        txs: list[dict[str, Any]] = []
        try:
            async with LedgerClient(c.ledger_url("p1")) as cl:
                tasks = [asyncio.create_task(collect(cl.completions(0, idle_timeout=60), comps)),
                         asyncio.create_task(collect(cl.transactions(0, idle_timeout=60), txs))]
                try:
                    # the first transaction that carries the command id and a COMMIT: the verdict's processing
                    lost = fw.lose_reply(CMD.encode(), commit=True)
                    assert (await cl.submit(user="u", act_as=["alice"], command_id=CMD, submission_id="s1")).ok
                    await wait_until(lost.is_set, 30, "the verdict's processing committed, its reply lost")

                    async def committed() -> bool:
                        rows = await pg.query(c.dbs["p1"], "select body from p_completions")
                        return any('"s1"' in r["body"] for r in rows)
                    await wait_until(committed, 30, "s1's completion committed")
                    await wait_until(lambda: _has(comps, "s1") and any(t["command_id"] == CMD for t in txs), 5,
                                     "s1's completion and transaction streamed")
                    # exactly once, nothing held back: a later command streams right behind them
                    assert (await cl.submit(user="u", act_as=["alice"], command_id="next", submission_id="s2")).ok
                    await wait_until(lambda: _has(comps, "s2") and len(txs) >= 2, 30, "s2 streamed")
                    assert [(x["completion_offset"], x["submission_id"], x["status"]) for x in comps] == [
                        (1, "s1", "OK"), (2, "s2", "OK")]
                    assert [(t["offset"], t["command_id"]) for t in txs] == [(1, CMD), (2, "next")]
                finally:
                    for t in tasks:
                        t.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await c.stop()
            await fw.close()
    asyncio.run(main())


def test_a_duplicate_whose_completion_commit_reply_was_lost_completes_once(pg: PgServer) -> None:
    """Invariant 3 (exactly one completion per acknowledged submit): a resubmission of an accepted change ID
    within its dedup period is answered by one DUPLICATE_COMMAND completion, written by the submit transaction.
    When that transaction committed but its reply was lost, the writer's retry found the change ID accepted,
    decided "duplicate" again and wrote a second completion (the first one reached the streams only through the
    second's DB read)."""
    async def main() -> None:
        c, _, fw = await _network(pg)
        comps: list[dict[str, Any]] = []
        try:
            async with LedgerClient(c.ledger_url("p1")) as cl:
                task = asyncio.create_task(collect(cl.completions(0, idle_timeout=60), comps))
                try:
                    assert (await cl.submit(user="u", act_as=["alice"], command_id=CMD, submission_id="s0")).ok
                    await wait_until(lambda: _has(comps, "s0"), 30, "s0 completed")
                    # the claim finds the dedup row; the next transaction with the command id decides and COMMITs
                    lost = fw.lose_reply(CMD.encode(), commit=True)
                    r = await cl.submit(user="u", act_as=["alice"], command_id=CMD, submission_id="s1")
                    assert lost.is_set(), "the reply of the duplicate's transaction was not lost: nothing was tested"
                    assert r.ok and r.body["duplicate"], r.body
                    assert (await cl.submit(user="u", act_as=["alice"], command_id="next", submission_id="s2")).ok
                    await wait_until(lambda: _has(comps, "s1") and _has(comps, "s2"), 30, "s1 and s2 streamed")
                    rows = await pg.query(c.dbs["p1"], "select body from p_completions order by completion_offset")
                    in_db = [json.loads(r["body"])["submission_id"] for r in rows]
                    assert in_db == ["s0", "s1", "s2"], in_db
                    assert [(x["completion_offset"], x["submission_id"], x["status"]) for x in comps] == [
                        (1, "s0", "OK"), (2, "s1", "DUPLICATE_COMMAND"), (3, "s2", "OK")]
                finally:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
        finally:
            await c.stop()
            await fw.close()
    asyncio.run(main())
