"""Each bug switch re-creates the behaviour it names (so the harness's checkers can be shown to catch it)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from dataclasses import replace
from typing import Any

import asyncpg
import pytest
from sut_support import TEST_TIMERS, Cluster, PgServer, collect, http_status, node_config, wait_until
from test_election import _write_load, actives, pair, teardown
from test_sequencer import read_n, send_many, start_sequencers, url
from wire_faults import WireForwarder, upstream_port_of

from harness.client.json_api import HealthClient, LedgerClient, SequencerApiClient, SubmitResult
from harness.sut.common.db import FatalDbError, retry
from harness.sut.participant.node import ParticipantNode

pytestmark = pytest.mark.integration

NO_SEQ = ("127.0.0.1:1",)


@pytest.mark.parametrize("bug", [False, True])
def test_no_fencing_lets_two_replicas_write_at_once(pg: PgServer, bug: bool) -> None:
    """Invariant 1 (single writer): with ``no_fencing`` the epochs' write intervals overlap."""
    async def main() -> None:
        bugs = frozenset({"no_fencing"}) if bug else frozenset()
        db = await pg.create_db("p1")
        fw = [await WireForwarder(pg.port).start() for _ in range(2)]
        # the old active checks its lock rarely, the other tries often: a window in which only fencing helps
        slow = replace(TEST_TIMERS, lock_check=3.0, passive_check=0.2)
        old = ParticipantNode(node_config("participant", "p1a", "p1", pg.dsn(db, fw[0].port), endpoints=NO_SEQ,
                                          bugs=bugs, timers=slow))
        new = ParticipantNode(node_config("participant", "p1b", "p1", pg.dsn(db, fw[1].port), endpoints=NO_SEQ,
                                          bugs=bugs, timers=slow))
        stop = asyncio.Event()
        await old.start()
        await wait_until(lambda: old.election.role == "active", 10, "p1a active")
        await new.start()
        loads = [asyncio.create_task(_write_load(n, stop)) for n in (old, new)]
        try:
            await wait_until(lambda: new.election.main is not None and old.writer is not None, 5, "warm")
            # the server ends p1a's lock session while p1a notices nothing (a client told of the end goes
            # passive at once, closing the window); p1a cannot reconnect either
            fw[0].refuse_new()
            fw[0].silence(await upstream_port_of(pg, db, old.election.main.get_server_pid()))  # type: ignore[union-attr]
            both: list[float] = []

            def took_over() -> bool:
                if new.election.role == "active" and old.election.writer is not None:
                    both.append(time.monotonic())
                return new.election.role == "active" and old.election.writer is None
            await wait_until(took_over, 15, "takeover complete", interval=0.005)
            stop.set()
            await asyncio.gather(*loads)
            ep = [dict(r) for r in await pg.query(db, "select * from ha_epochs order by epoch")]
            a, b = ep[0], ep[1]
            overlap = b["first_write_us"] is not None and a["last_write_us"] > b["first_write_us"]
            if bug:
                assert both and overlap, ep
                assert a["unfenced_writes"] > 0 and b["unfenced_writes"] > 0
            else:
                assert not both and not overlap, ep
                assert a["unfenced_writes"] == b["unfenced_writes"] == 0
        finally:
            stop.set()
            await asyncio.gather(*loads, return_exceptions=True)
            await teardown([old, new], fw)
    asyncio.run(main())


@pytest.mark.parametrize("bug", [False, True])
def test_dedup_in_memory_accepts_a_change_id_twice_after_failover(pg: PgServer, bug: bool) -> None:
    """Invariant 2 (exactly once): after failover the new active has no memory of accepted change IDs."""
    async def main() -> None:
        bugs = frozenset({"dedup_in_memory"}) if bug else frozenset()
        c = await Cluster(pg, bugs={"p1a": bugs, "p1b": bugs}).start()

        async def statuses() -> list[str]:
            rows = await pg.query(c.dbs["p1"], "select body from p_completions order by completion_offset")
            return [json.loads(r["body"])["status"] for r in rows if json.loads(r["body"])["command_id"] == "once"]
        try:
            assert (await c.submit("p1", user="u", act_as=["alice"], command_id="once")).ok

            async def completed(n: int) -> bool:
                return len(await statuses()) >= n
            await wait_until(lambda: completed(1), 30, "first completion")
            first = c.active("p1")
            await first.election.set_passive()
            await wait_until(lambda: any(n.election.role == "active" and n is not first
                                         for n in c.participants["p1"]), 15, "failover to the other replica")
            r = await c.submit("p1", user="u", act_as=["alice"], command_id="once")
            assert r.ok and r.replica != first.cfg.replica
            await wait_until(lambda: completed(2), 30, "second completion")
            assert await statuses() == (["OK", "OK"] if bug else ["OK", "DUPLICATE_COMMAND"])
        finally:
            await c.stop()
    asyncio.run(main())


@pytest.mark.parametrize("bug", [False, True])
def test_ack_before_durable_shows_ok_before_commit(pg: PgServer, bug: bool) -> None:
    """Invariants 4/11: with ``ack_before_durable`` an OK completion is streamed while its commit is blocked."""
    async def main() -> None:
        bugs = frozenset({"ack_before_durable"}) if bug else frozenset()
        c = await Cluster(pg, bugs={"p1a": bugs, "p1b": bugs}).start()
        blocker = await asyncpg.connect(pg.dsn(c.dbs["p1"]))
        seen: list[dict[str, Any]] = []
        async with LedgerClient(c.ledger_url("p1")) as cl:
            task = asyncio.create_task(collect(cl.completions(0, idle_timeout=30), seen))
            try:
                tr = blocker.transaction()
                await tr.start()
                assert (await cl.submit(user="u", act_as=["alice"], command_id="c1")).ok
                await blocker.execute("lock table p_dedup in access exclusive mode")

                async def processor_blocked() -> bool:
                    rows = await pg.query(c.dbs["p1"], "select count(*) as n from pg_locks l join pg_class c "
                                          "on c.oid = l.relation where c.relname = 'p_dedup' and not l.granted")
                    return rows[0]["n"] > 0
                await wait_until(processor_blocked, 15, "the verdict's transaction waits for the lock")
                committed = (await pg.query(c.dbs["p1"], "select count(*) as n from p_completions"))[0]["n"]
                assert committed == 0
                if bug:
                    await wait_until(lambda: len(seen) == 1, 10, "early completion on the stream")
                    assert seen[0]["status"] == "OK" and seen[0].get("early") is True
                else:
                    with contextlib.suppress(AssertionError):
                        await wait_until(lambda: len(seen) > 0, 1.0, "no completion while not durable")
                    assert seen == []
                await tr.rollback()
                await wait_until(lambda: len(seen) >= 1, 10, "completion after the commit")
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await blocker.close()
                await c.stop()
    asyncio.run(main())


@pytest.mark.parametrize("bug", [False, True])
def test_no_watermark_wait_serves_beyond_safe_watermark(pg: PgServer, bug: bool) -> None:
    """Invariant 8: with ``no_watermark_wait`` events are served above the safe watermark."""
    async def main() -> None:
        bugs = frozenset({"no_watermark_wait"}) if bug else frozenset()
        db, nodes = await start_sequencers(pg, bugs=bugs)
        try:
            await nodes[2].stop(graceful=False)       # its stale watermark now holds the safe watermark back
            await send_many(nodes[:1], "s", 1, ["m"])
            ev = (await read_n(nodes[0], "m", 1))[0]
            online = (await pg.query(db, "select bool_and(online) as all_online from seq_watermarks"))[0]
            if bug:
                assert ev["ts"] > ev["safe_watermark"], ev
                assert online["all_online"] is True    # served while the dead instance was still online
            else:
                assert ev["ts"] <= ev["safe_watermark"], ev
        finally:
            for s in nodes[:2]:
                await s.stop()
    asyncio.run(main())


def test_passive_serves_api_acknowledges_on_the_passive(pg: PgServer) -> None:
    """Invariant 9 (health matches role): the passive (not ready) replica accepts Ledger API commands."""
    async def main() -> None:
        _, nodes, fw = await pair(pg, bugs=frozenset({"passive_serves_api"}))
        try:
            await wait_until(lambda: len(actives(*nodes)) == 1, 10, "one active")
            pas = next(n for n in nodes if n.election.role == "passive")
            assert await http_status(f"http://127.0.0.1:{pas.cfg.health_port}/health") == 503
            async with LedgerClient(f"http://127.0.0.1:{pas.cfg.api_port}") as cl:
                r = await cl.submit(user="u", act_as=["alice"], command_id=uuid.uuid4().hex)
            assert r.ok and r.replica == pas.cfg.replica
        finally:
            await teardown(nodes, fw)
    asyncio.run(main())


@pytest.mark.parametrize("bug", [False, True])
def test_write_behind_submit_acknowledges_with_the_database_cut(pg: PgServer, bug: bool) -> None:
    """Invariant 11 (outage honesty): with ``write_behind_submit`` the active acknowledges a submission while its
    database is unreachable; a correct node answers only after the in-flight record is written (or 503)."""
    async def main() -> None:
        _, nodes, fw = await pair(pg, fwd=True, bugs=frozenset({"write_behind_submit"}) if bug else frozenset())
        try:
            def one_active_writing() -> bool:
                return sum(n.election.role == "active" and n._api is not None for n in nodes) == 1
            await wait_until(one_active_writing, 10, "one active with its Ledger API listening")
            i, act = next((i, n) for i, n in enumerate(nodes) if n.election.role == "active")
            fw[i].cut()
            answer: SubmitResult | None = None
            async with LedgerClient(f"http://127.0.0.1:{act.cfg.api_port}") as cl:
                with contextlib.suppress(TimeoutError):
                    answer = await asyncio.wait_for(cl.submit(user="u", act_as=["alice"], command_id="cut"), 3)
            if bug:
                assert answer is not None and answer.ok and answer.replica == act.cfg.replica, answer
            else:   # still retrying the in-flight write (no answer yet), or passive by now (503)
                assert answer is None or not answer.ok, answer
        finally:
            await teardown(nodes, fw)
    asyncio.run(main())


@pytest.mark.parametrize("bug", [False, True])
def test_no_lock_keepalive_leaves_os_default_keepalives(pg: PgServer, bug: bool) -> None:
    """Dead-peer detection: without the keepalive settings PostgreSQL holds a dead replica's lock for hours."""
    async def main() -> None:
        _, nodes, fw = await pair(pg, bugs=frozenset({"no_lock_keepalive"}) if bug else frozenset())
        try:
            await wait_until(lambda: len(actives(*nodes)) == 1, 10, "one active")
            act = next(n for n in nodes if n.election.role == "active")
            async with HealthClient(f"http://127.0.0.1:{act.cfg.health_port}") as h:
                st = await h.status()
            settings = st["lock_connection_settings"]
            # the write connections hold the writers lock (shared): they need the same dead-peer detection
            assert act.election.writer is not None
            writer_idle = await act.election.writer.pool.fetchval("show tcp_keepalives_idle")
            if bug:
                assert settings["tcp_keepalives_idle"] != "10" and settings["client_connection_check_interval"] == "0"
                assert writer_idle != "10"
            else:
                assert settings == {"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "1",
                                    "tcp_keepalives_count": "5", "client_connection_check_interval": "5s"}
                assert writer_idle == "10"
        finally:
            await teardown(nodes, fw)
    asyncio.run(main())


@pytest.mark.parametrize("bug", [False, True])
def test_retry_non_transient_retries_a_fatal_error_forever(pg: PgServer, bug: bool) -> None:
    """Fatal errors must stop the node; with ``retry_non_transient`` a fatal SQL error is retried forever."""
    async def main() -> None:
        conn = await asyncpg.connect(pg.dsn("postgres"))
        calls = 0

        async def op() -> None:
            nonlocal calls
            calls += 1
            await conn.execute("select 1/0")
        try:
            if bug:
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(retry(op, what="t", low=0.01, high=0.05, retry_non_transient=True), 1)
                assert calls > 3
            else:
                with pytest.raises(FatalDbError):
                    await retry(op, what="t", low=0.01, high=0.05)
                assert calls == 1
        finally:
            await conn.close()
    asyncio.run(main())


def test_sequencer_observer_sees_verdicts(pg: PgServer) -> None:
    """Not a bug switch: the harness observer member receives every broadcast (verdicts)."""
    async def main() -> None:
        c = await Cluster(pg).start()
        try:
            assert (await c.submit("p1", user="u", act_as=["alice"], command_id="v")).ok
            async with SequencerApiClient(url(c.sequencers[1])) as sc:
                async for ev in sc.subscribe("harness-observer"):
                    assert ev["payload"]["type"] == "verdict" and ev["payload"]["verdict"] == "approve"
                    break
        finally:
            await c.stop()
    asyncio.run(main())


async def _completions_of(pg: PgServer, db: str, command_id: str) -> list[dict[str, Any]]:
    rows = await pg.query(db, "select body from p_completions order by completion_offset")
    return [b for b in (json.loads(r["body"]) for r in rows) if b["command_id"] == command_id]


@pytest.mark.parametrize("bug", [False, True])
def test_inflight_per_replica_loses_the_old_actives_submissions(pg: PgServer, bug: bool) -> None:
    """Invariant 3 (every acknowledged submit completes): with ``inflight_per_replica`` a submission the old
    active acknowledged but could not sequence never completes after failover; correct nodes re-send it."""
    async def main() -> None:
        bugs = frozenset({"inflight_per_replica"}) if bug else frozenset()
        c = await Cluster(pg, bugs={"p1a": bugs, "p1b": bugs}).start()
        try:
            first = c.active("p1")
            c.cut_sequencers(first.cfg.replica)            # acknowledged, durable, but not sequenced
            assert (await c.submit("p1", user="u", act_as=["alice"], command_id="held")).ok
            await first.election.set_passive()
            await wait_until(lambda: any(n.election.role == "active" and n is not first
                                         for n in c.participants["p1"]), 15, "failover to the other replica")
            c.heal_sequencers(first.cfg.replica)
            if bug:
                # past max-sequencing-time + a margin: a correct node would have published OK or a timeout
                end = time.monotonic() + c.timers.max_sequencing + 3
                await wait_until(lambda: time.monotonic() > end, 30, "the submission's deadline passed")
                assert await _completions_of(pg, c.dbs["p1"], "held") == []
            else:
                async def completed() -> bool:
                    return len(await _completions_of(pg, c.dbs["p1"], "held")) == 1
                await wait_until(completed, 20, "the new active completes the old active's submission")
                assert (await _completions_of(pg, c.dbs["p1"], "held"))[0]["status"] in ("OK", "NOT_SEQUENCED_TIMEOUT")
        finally:
            await c.stop()
    asyncio.run(main())


@pytest.mark.parametrize("bug", [False, True])
def test_stream_resume_inclusive_redelivers_the_resume_offset(pg: PgServer, bug: bool) -> None:
    """Invariant 5 (a resumed stream has no duplicate): with ``stream_resume_inclusive`` a stream resumed from
    offset X delivers X again."""
    async def main() -> None:
        bugs = frozenset({"stream_resume_inclusive"}) if bug else frozenset()
        c = await Cluster(pg, bugs={"p1a": bugs, "p1b": bugs}, with_participants=("p1",)).start()
        try:
            for k in range(3):
                assert (await c.submit("p1", user="u", act_as=["alice"], command_id=f"c{k}")).ok

            async def three() -> bool:
                rows = await pg.query(c.dbs["p1"], "select count(*) as n from p_completions")
                return rows[0]["n"] >= 3
            await wait_until(three, 30, "three completions")
            async with LedgerClient(c.ledger_url("p1")) as cl:
                got = [x async for x in _take(cl.completions(2, idle_timeout=5), 1)]
            assert got[0]["completion_offset"] == (2 if bug else 3)
        finally:
            await c.stop()
    asyncio.run(main())


async def _take(stream: Any, n: int) -> Any:
    k = 0
    async for x in stream:
        yield x
        k += 1
        if k >= n:
            return


@pytest.mark.parametrize("bug", [False, True])
def test_no_resubscribe_stalls_after_a_lost_subscription(pg: PgServer, bug: bool) -> None:
    """Invariant 10 (bounded recovery): with ``no_resubscribe`` a participant whose subscription broke never
    processes again, though every sequencer is back; correct nodes re-subscribe and complete new commands."""
    async def main() -> None:
        bugs = frozenset({"no_resubscribe"}) if bug else frozenset()
        c = await Cluster(pg, bugs={"p1a": bugs, "p1b": bugs}, with_participants=("p1",)).start()
        try:
            def subscribed() -> bool:
                act = next((n for n in c.participants["p1"] if n.election.role == "active"), None)
                return act is not None and act.feed is not None and act.feed.client.current is not None
            await wait_until(subscribed, 15, "the active replica is subscribed")
            act = c.active("p1")
            feed = act.feed
            assert feed is not None and feed.task is not None
            c.cut_sequencers(act.cfg.replica)
            await wait_until(lambda: feed.client.current is None, 15, "the subscription is lost")
            if bug:
                await wait_until(lambda: feed.task.done(), 15, "the subscription was abandoned")
            c.heal_sequencers(act.cfg.replica)
            assert (await c.submit("p1", user="u", act_as=["alice"], command_id="after")).ok
            if bug:
                end = time.monotonic() + c.timers.max_sequencing + c.timers.decision_timeout + 2
                await wait_until(lambda: time.monotonic() > end, 40, "the command's deadlines passed")
                # (a role change on a loaded machine would give the other replica a fresh subscription)
                if act.election.role == "active" and act.feed is feed:
                    assert await _completions_of(pg, c.dbs["p1"], "after") == []
            else:
                assert not feed.task.done()
                async def completed() -> bool:
                    return [x["status"] for x in await _completions_of(pg, c.dbs["p1"], "after")] == ["OK"]
                await wait_until(completed, 20, "the command completes after re-subscribing")
        finally:
            await c.stop()
    asyncio.run(main())


@pytest.mark.parametrize("bug", [False, True])
def test_sequence_late_sends_executes_a_definitely_rejected_submission(pg: PgServer, bug: bool) -> None:
    """Invariant 3 (a definite rejection is the submission's only outcome): with ``sequence_late_sends`` the
    sequencers sequence a send that reaches them after its max-sequencing-time.

    p1's active replica is cut from every sequencer while a submission is acknowledged, so its request is not
    sequenced in time; once the links are back, p1 sees sequencer time pass the request's max-sequencing-time and
    publishes NOT_SEQUENCED_TIMEOUT. Then the request reaches a sequencer late: the test delivers p1's own send
    (same sender, message id, recipients and body) as a network that held it would. A buggy sequencer sequences
    it, and p1 and the mediator process it like any request: a transaction of the change the client was told is
    definitely not executed. A correct sequencer answers 409 MAX_SEQUENCING_TIME_EXCEEDED and sequences nothing.
    The history of the streams then fails (bug) / passes (correct) invariant 3."""
    from harness.checkers.model import CheckContext
    from harness.checkers.submissions import check_acknowledged_completes
    from harness.history import Event
    from harness.sut.sequencer.store import now_us

    async def main() -> None:
        bugs = frozenset({"sequence_late_sends"}) if bug else frozenset()
        c = await Cluster(pg, bugs={f"seq{i}": bugs for i in (1, 2, 3)}, with_participants=("p1",)).start()
        db = c.dbs["p1"]
        try:
            act = c.active("p1")
            c.cut_sequencers(act.cfg.replica)             # acknowledged and durable, but not sequenced
            sub = await c.submit("p1", user="u", act_as=["alice"], command_id="late")
            assert sub.ok, sub
            row = (await pg.query(db, "select request, max_sequencing_time from p_inflight"))[0]
            req, mst = json.loads(row["request"]), row["max_sequencing_time"]
            # p1's sequencer client re-sends until max-sequencing-time + 1 s (then gives up): past that, and past
            # its last back-off (at most 1 s), the send below is the only copy that can reach a sequencer
            await wait_until(lambda: now_us() > mst + 2_500_000, 30, "p1's client gave up its send")
            c.heal_sequencers(act.cfg.replica)

            async def statuses() -> list[str]:
                return [x["status"] for x in await _completions_of(pg, db, "late")]

            async def timed_out() -> bool:
                return await statuses() == ["NOT_SEQUENCED_TIMEOUT"]
            await wait_until(timed_out, 20, "p1 publishes NOT_SEQUENCED_TIMEOUT (its ticker's time proof)")
            # the held send arrives now (what SequencerClient.send would have sent for this request)
            recipients = sorted({req["mediator"], *req["informee_participants"]})
            payload = {k: v for k, v in req.items() if k != "change_key"}
            async with SequencerApiClient(url(c.sequencers[1])) as sc:
                status, answer = await sc.send("p1", recipients, payload, req["request_id"], max_sequencing_time=mst)

            async def executed() -> list[dict[str, Any]]:
                return [json.loads(r["body"]) for r in
                        await pg.query(db, "select body from p_transactions where tx_id = $1", req["request_id"])]
            if bug:
                assert status == 200 and answer["ts"] > mst, (status, answer)

                async def tx_seen() -> bool:
                    return len(await executed()) == 1
                await wait_until(tx_seen, 30, "the late request is executed")
                assert await statuses() == ["NOT_SEQUENCED_TIMEOUT"]   # and no OK completion: the client was told no
            else:
                assert status == 409 and answer["error"] == "MAX_SEQUENCING_TIME_EXCEEDED", (status, answer)
                seq = await pg.query(c.dbs["sequencer"], "select count(*) as n from seq_events where message_id = $1",
                                     req["request_id"])
                assert seq[0]["n"] == 0 and await executed() == []
            # the same outcome as the harness records it from the Ledger API streams
            async with LedgerClient(c.ledger_url("p1")) as cl:
                comps = [x async for x in _take(cl.completions(0, idle_timeout=5), 1)]
                txs = [x async for x in _take(cl.transactions(0, idle_timeout=5), 1)] if bug else []
            v = {"participant": "p1", "command_id": "late", "user": "u", "act_as": ["alice"],
                 "submission_id": sub.body["submission_id"]}
            history = [Event(0.0, "client-1", "invoke", "submit", v), Event(0.1, "client-1", "ok", "submit", v),
                       Event(0.2, "completions-p1", "info", "subscribe", {"participant": "p1", "from_offset": 0}),
                       *(Event(1.0, "completions-p1", "ok", "completion", {**x, "participant": "p1"})
                         for x in comps),
                       *(Event(2.0, "transactions-p1", "ok", "transaction", {**x, "participant": "p1"})
                         for x in txs),
                       Event(3.0, "harness", "info", "phase", {"phase": "end"})]
            verdict = check_acknowledged_completes(history, CheckContext(completion_grace_s=0))
            assert verdict.verdict == ("fail" if bug else "pass"), verdict.explanation
            if bug:
                assert {w["value"].get("tx_id") for w in verdict.witnesses} >= {req["request_id"]}
                assert verdict.witnesses[0]["value"]["submission_id"] == sub.body["submission_id"]
        finally:
            await c.stop()
    asyncio.run(main())
