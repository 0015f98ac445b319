"""Active/passive election and fencing of participant replicas over one real PostgreSQL database."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import replace

import pytest
from sut_support import TEST_TIMERS, PgServer, http_status, node_config, wait_until
from wire_faults import WireForwarder, upstream_port_of

from harness.sut.common.election import TransitionFailed
from harness.sut.participant.node import ParticipantNode

pytestmark = pytest.mark.integration

NO_SEQ = ("127.0.0.1:1",)   # election tests need no sequencer; the feed just keeps retrying


def actives(*nodes: ParticipantNode) -> list[str]:
    return [n.cfg.replica for n in nodes if n.election.role == "active"]


async def pair(pg: PgServer, *, fwd: bool = False, bugs: frozenset[str] = frozenset(),
               **kw: object) -> tuple[str, list[ParticipantNode], list[WireForwarder]]:
    db = await pg.create_db("p1")
    forwarders = [await WireForwarder(pg.port).start() for _ in range(2)] if fwd else []
    nodes = []
    for i, rep in enumerate(("p1a", "p1b")):
        dsn = pg.dsn(db, forwarders[i].port if fwd else None)
        nodes.append(ParticipantNode(node_config("participant", rep, "p1", dsn, endpoints=NO_SEQ, bugs=bugs, **kw)))
    for n in nodes:
        await n.start()
    return db, nodes, forwarders


async def teardown(nodes: list[ParticipantNode], forwarders: list[WireForwarder]) -> None:
    for n in nodes:
        await n.stop()
    for f in forwarders:
        await f.close()


async def watch_single_active(nodes: list[ParticipantNode], seconds: float) -> None:
    """Sample roles every 20 ms for ``seconds``: never two actives."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert len(actives(*nodes)) <= 1, f"two actives: {actives(*nodes)}"
        await asyncio.sleep(0.02)


def test_exactly_one_active_and_health_matches_role(pg: PgServer) -> None:
    async def main() -> None:
        _, nodes, fw = await pair(pg)
        try:
            await wait_until(lambda: len(actives(*nodes)) == 1, 10, "one active replica")
            await watch_single_active(nodes, 2.5)
            act = next(n for n in nodes if n.election.role == "active")
            pas = next(n for n in nodes if n is not act)
            assert await http_status(f"http://127.0.0.1:{act.cfg.health_port}/health") == 200
            assert await http_status(f"http://127.0.0.1:{pas.cfg.health_port}/health") == 503
            assert await http_status(f"http://127.0.0.1:{pas.cfg.health_port}/health/live") == 200
            assert await http_status(f"http://127.0.0.1:{act.cfg.api_port}/v1/parties") == 200
            assert await http_status(f"http://127.0.0.1:{pas.cfg.api_port}/v1/parties") is None  # no listener
        finally:
            await teardown(nodes, fw)
    asyncio.run(main())


async def _epochs(pg: PgServer, db: str) -> list[dict]:
    rows = await pg.query(db, "select * from ha_epochs order by epoch")
    return [dict(r) for r in rows]


async def _write_load(node: ParticipantNode, stop: asyncio.Event) -> None:
    """Keep the active writing (like the processor does) so epochs have first/last writes."""
    while not stop.is_set():
        w = node.writer
        if w is not None:
            with contextlib.suppress(Exception):
                await w.write(lambda c: c.execute("select 1"), what="probe")
        await asyncio.sleep(0.01)


def test_terminated_lock_connection_takeover_waits_for_old_writers(pg: PgServer) -> None:
    async def main() -> None:
        db, nodes, fw = await pair(pg, fwd=True)
        stop = asyncio.Event()
        loads = [asyncio.create_task(_write_load(n, stop)) for n in nodes]
        try:
            await wait_until(lambda: len(actives(*nodes)) == 1, 10, "one active replica")
            old = next(n for n in nodes if n.election.role == "active")
            new = next(n for n in nodes if n is not old)
            await wait_until(lambda: old.writer is not None and new.election.main is not None, 5, "warm")
            # the server ends the old active's lock session without the old active noticing (a client told of
            # the end goes passive at once); it cannot reconnect (so it cannot re-take its lock first), but its
            # write connections stay open: the takeover must wait for them
            link = fw[nodes.index(old)]
            link.refuse_new()
            link.silence(await upstream_port_of(pg, db, old.election.main.get_server_pid()))  # type: ignore[union-attr]
            overlap: list[float] = []

            def new_active() -> bool:
                if new.election.role == "active" and old.election.writer is not None:
                    overlap.append(time.monotonic())
                return new.election.role == "active"
            await wait_until(new_active, 15, "the other replica took over", interval=0.005)
            assert not overlap, "new replica active while the old one still had its writer"
            await watch_single_active(nodes, 2)
            stop.set()
            ep = await _epochs(pg, db)
            assert len(ep) >= 2, ep
            # single writer: every epoch's writes end before the next epoch's first write
            for a, b in itertools.pairwise(ep):
                if a["last_write_us"] and b["first_write_us"]:
                    assert a["last_write_us"] < b["first_write_us"], (a, b)
                assert b["start_us"] > (a["last_write_us"] or a["start_us"]), (a, b)
            assert all(e["unfenced_writes"] == 0 for e in ep)
        finally:
            stop.set()
            await asyncio.gather(*loads)
            await teardown(nodes, fw)
    asyncio.run(main())


def test_short_db_glitch_keeps_exactly_one_active(pg: PgServer) -> None:
    async def main() -> None:
        _, nodes, fw = await pair(pg, fwd=True)
        try:
            await wait_until(lambda: len(actives(*nodes)) == 1, 10, "one active replica")
            for f in fw:
                f.cut()
            watcher = asyncio.create_task(watch_single_active(nodes, 1.0))
            await asyncio.sleep(1.0)
            for f in fw:
                f.heal()
            await watcher
            await wait_until(lambda: len(actives(*nodes)) == 1, 10, "one active after the glitch")
            await watch_single_active(nodes, 3)
        finally:
            await teardown(nodes, fw)
    asyncio.run(main())


def test_both_cut_from_db_both_passive_then_one_active(pg: PgServer) -> None:
    async def main() -> None:
        _, nodes, fw = await pair(pg, fwd=True)
        try:
            await wait_until(lambda: len(actives(*nodes)) == 1, 10, "one active replica")
            for f in fw:
                f.cut()
            await wait_until(lambda: not actives(*nodes), 10, "both passive while cut from the DB")
            for n in nodes:
                assert await http_status(f"http://127.0.0.1:{n.cfg.health_port}/health") == 503
            for f in fw:
                f.heal()
            await wait_until(lambda: len(actives(*nodes)) == 1, 15, "one active after recovery")
            await watch_single_active(nodes, 3)
        finally:
            await teardown(nodes, fw)
    asyncio.run(main())


def test_a_stuck_passive_transition_fails_and_the_other_replica_takes_over(pg: PgServer) -> None:
    """A passive transition that does not finish (seen live: a cancellation swallowed by the DB driver on a
    blackholed link) is a failed transition: the replica exits (the supervisor restarts it) instead of hanging
    with its sessions, and the other replica takes over, because the lock and the write connections are
    released anyway."""
    async def main() -> None:
        timers = replace(TEST_TIMERS, transition_timeout=2.0)
        release = asyncio.Event()
        _, nodes, fw = await pair(pg, timers=timers)
        try:
            await wait_until(lambda: len(actives(*nodes)) == 1, 10, "one active replica")
            old = next(n for n in nodes if n.election.role == "active")
            other = next(n for n in nodes if n is not old)

            async def stuck() -> None:
                with contextlib.suppress(asyncio.CancelledError):   # swallows the transition's cancellation
                    await asyncio.sleep(3600)
                await release.wait()
            old.election.hooks.to_passive = stuck
            t0 = time.monotonic()
            await old.election.set_passive()
            await wait_until(lambda: old.fatal is not None, 10, "the stuck transition failed")
            assert isinstance(old.fatal, TransitionFailed), repr(old.fatal)
            assert time.monotonic() - t0 < 2.0 + 3
            await wait_until(lambda: other.election.role == "active", 15, "the other replica active")
        finally:
            release.set()
            await teardown(nodes, fw)
    asyncio.run(main())
