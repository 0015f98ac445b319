"""The fencing gap after a short DB glitch: the old active lost its main lock but has not checked it yet.

Seen live (code review, issue 12 item 4): with a 0.6 s cut of p1a's DB link, p1b took the main lock and started
writing; p1a's writer pool then reconnected, took the writers lock *shared* (compatible with p1b's shared hold)
and committed 138 ms after p1b's first write (invariant 1); and in ``db-glitch-1s`` both replicas accepted Ledger
API submissions for two probe samples (invariant 9). Both tests make the moment deterministic: the old active's
lock check period is far longer than the test, so only the fence (or noticing the dropped lock connection) can
keep it from writing or serving.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest
from sut_support import TEST_TIMERS, PgServer, http_status, node_config, wait_until
from test_election import actives, watch_single_active
from wire_faults import WireForwarder, upstream_port_of

from harness.sut.common.db import PassiveInstance
from harness.sut.participant.node import ParticipantNode

pytestmark = pytest.mark.integration

NO_SEQ = ("127.0.0.1:1",)   # no sequencer needed; the feed just keeps retrying

#: the old active re-checks its lock only after the test is over (and a check on a silenced lock connection
#: would hang for a minute); the other replica tries every 0.2 s
GAP_TIMERS = replace(TEST_TIMERS, lock_check=120.0, lock_check_timeout=60.0, db_command_timeout=60.0,
                     passive_check=0.2)


async def _start_pair(pg: PgServer) -> tuple[str, list[ParticipantNode], list[WireForwarder]]:
    """p1a (active) and p1b (passive), each behind its own forwarder."""
    db = await pg.create_db("p1")
    fw = [await WireForwarder(pg.port).start() for _ in range(2)]
    nodes = [ParticipantNode(node_config("participant", rep, "p1", pg.dsn(db, f.port), endpoints=NO_SEQ,
                                         timers=GAP_TIMERS)) for rep, f in zip(("p1a", "p1b"), fw, strict=True)]
    await nodes[0].start()
    await wait_until(lambda: nodes[0].election.role == "active", 10, "p1a active")
    await nodes[1].start()
    await wait_until(lambda: nodes[1].election.main is not None, 10, "p1b connected (passive)")
    return db, nodes, fw


async def _stop(nodes: list[ParticipantNode], fw: list[WireForwarder]) -> None:
    for n in nodes:
        await n.stop()
    for f in fw:
        await f.close()


async def _writes(node: ParticipantNode, outcomes: list[str], stop: asyncio.Event) -> None:
    """Keep ``node`` writing through its writer (as its processor would) and record how each write ended."""
    while not stop.is_set():
        w = node.writer
        if w is None:
            await asyncio.sleep(0.01)
            continue
        try:
            await w.write(lambda c: c.execute("select 1"), what="probe")
            outcomes.append("ok")
        except PassiveInstance:
            outcomes.append("passive")
        except Exception as exc:
            outcomes.append(repr(exc))
        await asyncio.sleep(0.01)


def test_a_write_connection_opened_after_the_takeover_cannot_commit(pg: PgServer) -> None:
    """Invariant 1: p1a's lock session ends at the server (p1a does not notice), its write connections drop and
    stay down until p1b has taken over and written. When p1a's writer reconnects, the new connection takes the
    writers lock shared next to p1b's: the fence must still refuse it (PassiveInstance), so no write of p1a
    commits after p1b's first one."""
    async def main() -> None:
        db, (old, new), fw = await _start_pair(pg)
        stop = asyncio.Event()
        old_outcomes: list[str] = []
        loads = [asyncio.create_task(_writes(old, old_outcomes, stop)),
                 asyncio.create_task(_writes(new, [], stop))]
        try:
            await wait_until(lambda: "ok" in old_outcomes, 10, "p1a writing")
            assert old.election.main is not None
            fw[0].silence(await upstream_port_of(pg, db, old.election.main.get_server_pid()))
            fw[0].cut()      # p1a's other connections drop, and none reconnects until the heal

            async def new_wrote() -> bool:
                rows = await pg.query(db, "select 1 from ha_epochs where replica = 'p1b' and first_write_us > 0")
                return bool(rows)
            await wait_until(new_wrote, 15, "p1b active and writing")
            assert old.election.role == "active", "p1a noticed its lost lock: the gap under test did not open"
            pending = len(old_outcomes)
            fw[0].heal()     # p1a's pending write reconnects now, with p1b active
            await wait_until(lambda: len(old_outcomes) > pending, 15, "p1a's pending write ended")
            assert old_outcomes[pending] == "passive", old_outcomes[pending:]
            # A refused write connection is proof enough that the main lock is gone: p1a turns passive (stops
            # serving) now, not when a lock check on its silenced lock connection finally times out.
            await wait_until(lambda: old.election.role == "passive" and old._api is None, 3, "p1a passive")
            stop.set()
            await asyncio.gather(*loads)
            ep = {r["replica"]: dict(r) for r in await pg.query(db, "select * from ha_epochs order by epoch")}
            assert ep["p1a"]["last_write_us"] < ep["p1b"]["first_write_us"], ep
        finally:
            stop.set()
            await asyncio.gather(*loads, return_exceptions=True)
            await _stop([old, new], fw)
    asyncio.run(main())


def test_the_old_active_stops_serving_when_its_lock_connection_drops(pg: PgServer) -> None:
    """Invariant 9: when p1a's DB link drops (all connections closed, as in ``db-glitch-1s``), p1a must stop
    serving at once - not at its next lock check - so that p1b, which takes over meanwhile, is never serving the
    Ledger API next to it."""
    async def main() -> None:
        _, (old, new), fw = await _start_pair(pg)
        try:
            await wait_until(lambda: old._api is not None, 10, "p1a's Ledger API listening")
            both: list[float] = []

            def new_serving() -> bool:
                serving = new.election.role == "active" and new._api is not None
                if serving and (old.election.role == "active" or old._api is not None):
                    both.append(time.monotonic())
                return serving
            fw[0].cut()
            await wait_until(new_serving, 15, "p1b serving", interval=0.002)
            assert not both, f"p1a still serving while p1b served ({len(both)} samples)"
            assert await http_status(f"http://127.0.0.1:{old.cfg.api_port}/v1/parties") is None
            fw[0].heal()
            await wait_until(lambda: old.election.main is not None, 15, "p1a reconnected (passive)")
            await watch_single_active([old, new], 1.0)
            assert actives(old, new) == ["p1b"]
        finally:
            await _stop([old, new], fw)
    asyncio.run(main())
