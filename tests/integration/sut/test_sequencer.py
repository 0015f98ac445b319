"""Three active-active sequencer instances over one real PostgreSQL database."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import pytest
from sut_support import TEST_TIMERS, Forwarder, PgServer, node_config, wait_until

from harness.client.json_api import SequencerApiClient
from harness.sut.sequencer.client import SequencerClient
from harness.sut.sequencer.node import SequencerNode
from harness.sut.sequencer.pure import EventValidator

pytestmark = pytest.mark.integration


async def start_sequencers(pg: PgServer, n: int = 3, bugs: frozenset[str] = frozenset()
                           ) -> tuple[str, list[SequencerNode]]:
    db = await pg.create_db("sequencer")
    nodes = [SequencerNode(node_config("sequencer", f"seq{i + 1}", "sequencer", pg.dsn(db), bugs=bugs))
             for i in range(n)]
    for s in nodes:
        await s.start()
    return db, nodes


def url(s: SequencerNode) -> str:
    return f"http://127.0.0.1:{s.cfg.api_port}"


async def read_n(s: SequencerNode, member: str, n: int, timeout: float = 20) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with SequencerApiClient(url(s)) as c:
        async def run() -> None:
            async for ev in c.subscribe(member):
                out.append(ev)
                if len(out) >= n:
                    return
        await asyncio.wait_for(run(), timeout)
    return out


async def send_many(nodes: list[SequencerNode], sender: str, count: int, recipients: list[str]) -> None:
    clients = [SequencerApiClient(url(s)) for s in nodes]
    try:
        for k in range(count):
            status, body = await clients[k % len(clients)].send(sender, recipients, {"k": k, "from": sender},
                                                                uuid.uuid4().hex)
            assert status == 200, body
    finally:
        for c in clients:
            await c.close()


def test_concurrent_writers_same_total_order_gap_free(pg: PgServer) -> None:
    async def main() -> None:
        _, nodes = await start_sequencers(pg)
        try:
            senders = [send_many(nodes, f"s{j}", 60, ["m1", "m2"] if j % 2 else ["*"]) for j in range(4)]
            await asyncio.gather(*senders)
            total = 240
            streams = {(s.cfg.replica, m): await read_n(s, m, total) for s in nodes for m in ("m1", "m2")}
            observer = [await read_n(s, "harness-observer", 120) for s in nodes]
            ref = [(e["counter"], e["ts"], e["payload_hash"]) for e in streams[("seq1", "m1")]]
            assert [c for c, _, _ in ref] == list(range(total))
            for key, evs in streams.items():
                assert [(e["counter"], e["ts"], e["payload_hash"]) for e in evs] == ref, key
                v = EventValidator()
                for e in evs:
                    assert v.accept(e)
                    assert e["ts"] <= e["safe_watermark"]
            assert {e["sequencer"] for evs in streams.values() for e in evs} == {"seq1", "seq2", "seq3"}
            # the observer only gets the broadcasts, in the same relative order on every instance
            obs = [[(e["ts"], e["payload_hash"]) for e in o] for o in observer]
            assert obs[0] == obs[1] == obs[2]
            assert [x for x in ref if x[1] in {ts for ts, _ in obs[0]}] and len(obs[0]) == 120
        finally:
            for s in nodes:
                await s.stop()
    asyncio.run(main())


def test_killed_instance_stalls_readers_until_marked_offline(pg: PgServer) -> None:
    async def main() -> None:
        db, nodes = await start_sequencers(pg)
        try:
            await send_many(nodes, "warm", 3, ["m"])
            await read_n(nodes[0], "m", 3)
            victim = nodes[2]
            await victim.stop(graceful=False)     # dies while still marked online
            dead_index = victim.writer.index
            wm_dead = (await pg.query(db, "select watermark from seq_watermarks where instance_index = $1",
                                      dead_index))[0]["watermark"]
            await send_many(nodes[:1], "after", 1, ["m"])
            evs = await read_n(nodes[0], "m", 4, timeout=20)
            # delivered only once the dead instance no longer holds the safe watermark back
            online = (await pg.query(db, "select online from seq_watermarks where instance_index = $1",
                                     dead_index))[0]["online"]
            assert evs[3]["ts"] > wm_dead
            assert online is False, "event beyond a dead instance's watermark served while it was online"
            assert evs[3]["safe_watermark"] >= evs[3]["ts"]
        finally:
            for s in nodes[:2]:
                await s.stop()
    asyncio.run(main())


def test_resubscribe_elsewhere_continues_without_gap_or_fork(pg: PgServer) -> None:
    async def main() -> None:
        _, nodes = await start_sequencers(pg)
        try:
            await send_many(nodes, "x", 30, ["m"])
            first = await read_n(nodes[0], "m", 10)
            v = EventValidator()
            for e in first:
                v.accept(e)
            v.resubscribed()
            async with SequencerApiClient(url(nodes[1])) as c:
                got = []
                async for e in c.subscribe("m", from_counter=v.next_from_counter):
                    if v.accept(e):
                        got.append(e)
                    if len(got) == 20:
                        break
            assert [e["counter"] for e in got] == list(range(10, 30))
        finally:
            for s in nodes:
                await s.stop()
    asyncio.run(main())


def test_graceful_stop_marks_offline(pg: PgServer) -> None:
    async def main() -> None:
        db, nodes = await start_sequencers(pg, n=2)
        try:
            idx = nodes[1].writer.index
            await nodes[1].stop(graceful=True)
            rows = await pg.query(db, "select online from seq_watermarks where instance_index = $1", idx)
            assert rows[0]["online"] is False
        finally:
            with contextlib.suppress(Exception):
                await nodes[0].stop()
    asyncio.run(main())


def test_wait_until_offline_marking_is_bounded(pg: PgServer) -> None:
    """Liveness: a killed instance is marked offline by its peers (seq_offline_after = 3 s in tests)."""
    async def main() -> None:
        db, nodes = await start_sequencers(pg)
        try:
            idx = nodes[2].writer.index
            await nodes[2].stop(graceful=False)

            async def offline() -> bool:
                rows = await pg.query(db, "select online from seq_watermarks where instance_index = $1", idx)
                return rows[0]["online"] is False
            await wait_until(offline, 15, "dead instance marked offline")
        finally:
            for s in nodes[:2]:
                await s.stop()
    asyncio.run(main())


def test_subscriber_moves_off_a_sequencer_that_lost_its_database(pg: PgServer) -> None:
    """Issue 12 item 4c: a sequencer whose database link is down keeps its subscriptions open and keeps sending
    heartbeats, but serves nothing (its reader cannot read). Its peers mark it offline and go on; a subscriber
    of it must notice that its subscription no longer progresses and re-subscribe to a healthy sequencer, so it
    receives events sent via the others within a bound (not only once the database link is back)."""
    async def main() -> None:
        db = await pg.create_db("sequencer")
        link = await Forwarder(pg.port).start()          # seq1's database link, cut below
        nodes = [SequencerNode(node_config("sequencer", f"seq{i + 1}", "sequencer",
                                           pg.dsn(db, link.port if i == 0 else None))) for i in range(3)]
        for s in nodes:
            await s.start()
        client = SequencerClient([url(s) for s in nodes], "m", TEST_TIMERS)   # round robin starts at seq1
        got: list[dict[str, Any]] = []

        async def collect() -> None:
            async for ev in client.events(EventValidator()):
                got.append(ev)
        task = asyncio.create_task(collect())
        try:
            await send_many(nodes[1:2], "warm", 1, ["m"])
            await wait_until(lambda: len(got) == 1, 10, "the first event")
            assert client.current == url(nodes[0]), client.current
            link.cut()                                    # seq1 loses its database; it stays up
            await send_many(nodes[1:2], "after", 1, ["m"])
            # the event becomes safe once seq1 is marked offline (seq_offline_after 3 s + a 0.5 s check); the
            # subscriber must then be on a sequencer that serves (its stall detection: seq_client_timeout 2 s)
            bound = TEST_TIMERS.seq_offline_after + TEST_TIMERS.seq_offline_check + 3 * TEST_TIMERS.seq_client_timeout
            await wait_until(lambda: len(got) == 2, bound, "the event sent via seq2 after seq1 lost its database")
            assert got[1]["payload"]["from"] == "after" and got[1]["sequencer"] in ("seq2", "seq3"), got[1]
            assert client.current != url(nodes[0])
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await client.close()
            for s in nodes:
                with contextlib.suppress(Exception):
                    await s.stop(graceful=False)
            await link.close()
    asyncio.run(main())
