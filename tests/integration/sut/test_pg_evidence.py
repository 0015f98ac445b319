"""Single-writer evidence from PostgreSQL alone (issue 13 item 4), against real nodes and a real PostgreSQL.

The harness's sampler (``harness/workload/pgsampler.py``) watches a participant pair through ``pg_stat_activity``
while the old active's lock session is ended at the server without the old active noticing (as in
test_bug_switches.py's ``no_fencing`` case). Judged with the PostgreSQL samples alone (``evidence=["pg"]``, no
``/admin/evidence``), invariant 1 fails with ``no_fencing`` and passes with correct fencing.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace

import pytest
from sut_support import TEST_TIMERS, PgServer, node_config, wait_until
from test_election import teardown
from wire_faults import WireForwarder, upstream_port_of

from harness.checkers import CheckContext
from harness.checkers.roles import check_single_writer
from harness.history import Event
from harness.sut.participant.node import ParticipantNode
from harness.workload.pgsampler import PgSampler

pytestmark = pytest.mark.integration

NO_SEQ = ("127.0.0.1:1",)


class Events:
    """A recorder for the sampler: the events as the history would hold them."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.t0 = asyncio.get_running_loop().time()

    def _add(self, type_: str, process: str, f: str, value: dict | None) -> None:
        t = asyncio.get_running_loop().time() - self.t0
        self.events.append(Event(t=t, process=process, type=type_, f=f, value=value or {}))  # type: ignore[arg-type]

    def ok(self, process: str, f: str, value: dict | None = None) -> None:
        self._add("ok", process, f, value)

    def info(self, process: str, f: str, value: dict | None = None) -> None:
        self._add("info", process, f, value)


async def _pair(pg: PgServer, db: str, bugs: frozenset[str]) -> tuple[list[WireForwarder], list[ParticipantNode]]:
    """p1a and p1b, each through its own forwarder (a fault point), with slow lock checks: the old active notices
    its lost lock late. The deployment names each replica's sessions (the reference topology's DSNs do the same)."""
    fw = [await WireForwarder(pg.port).start() for _ in range(2)]
    slow = replace(TEST_TIMERS, lock_check=3.0, passive_check=0.2)
    nodes = [ParticipantNode(node_config("participant", rep, "p1", f"{pg.dsn(db, f.port)}?application_name={rep}",
                                         endpoints=NO_SEQ, bugs=bugs, timers=slow))
             for rep, f in zip(("p1a", "p1b"), fw, strict=True)]
    return fw, nodes


async def _write_load(node: ParticipantNode, stop: asyncio.Event) -> None:
    """Keep the active writing in transactions of a few milliseconds, as the participant's event batches last
    through the fault proxy and pg-lb; a bare epoch update on a local server holds its xid for microseconds,
    which no sampler catches (test_election's load is such a one)."""
    while not stop.is_set():
        w = node.writer
        if w is not None:
            with contextlib.suppress(Exception):
                await w.write(lambda c: c.execute("select txid_current(), pg_sleep(0.005)"), what="probe")
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("bug", [False, True])
def test_postgres_samples_alone_fail_single_writer_without_fencing(pg: PgServer, bug: bool) -> None:
    async def main() -> None:
        bugs = frozenset({"no_fencing"}) if bug else frozenset()
        db = await pg.create_db("p1")
        fw, nodes = await _pair(pg, db, bugs)
        old, new = nodes
        rec = Events()
        sampler = PgSampler(lambda: pg.dsn("postgres"), rec, {"p1": ["p1a", "p1b"]})
        stop, stop_sampler = asyncio.Event(), asyncio.Event()
        sampling = asyncio.create_task(sampler.run(stop_sampler))
        loads: list[asyncio.Task[None]] = []
        try:
            await old.start()
            await wait_until(lambda: old.election.role == "active", 10, "p1a active")
            await new.start()
            loads = [asyncio.create_task(_write_load(n, stop)) for n in nodes]
            await wait_until(lambda: new.election.main is not None and old.writer is not None, 5, "warm")
            await asyncio.sleep(1.0)   # p1a's write sessions are sampled writing
            fw[0].refuse_new()
            fw[0].silence(await upstream_port_of(pg, db, old.election.main.get_server_pid()))  # type: ignore[union-attr]
            await wait_until(lambda: new.election.role == "active" and old.election.writer is None, 15,
                             "takeover complete", interval=0.01)
            await asyncio.sleep(1.0)   # p1b's write sessions are sampled writing
        finally:
            stop.set()
            await asyncio.gather(*loads, return_exceptions=True)
            stop_sampler.set()
            with contextlib.suppress(Exception):
                await sampling
            await teardown(nodes, fw)
        assert sampler.samples > 10 and {e.f for e in rec.events} == {"pg_sample"}
        r = check_single_writer(rec.events, CheckContext(evidence=["pg"]))
        assert r.metrics["pg_writers_seen"] == {"p1": ["p1a", "p1b"]}, r.metrics
        if bug:
            assert r.verdict == "fail", r.explanation
            assert {s["replica"] for s in r.witnesses[0]["value"]["sessions"]} == {"p1a", "p1b"}
        else:
            assert r.verdict == "pass", (r.explanation, r.witnesses)
    asyncio.run(main())


async def _insert_load(node: ParticipantNode, stop: asyncio.Event) -> None:
    """Keep the active writing rows (logged writes: ``log_statement = 'mod'`` logs INSERTs, not SELECTs)."""
    while not stop.is_set():
        w = node.writer
        if w is not None:
            with contextlib.suppress(Exception):
                await w.write(lambda c: c.execute("insert into hc_probe (by) values ($1)", node.cfg.replica),
                              what="probe")
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("bug", [False, True])
def test_postgres_statement_log_alone_fails_single_writer_without_fencing(pg: PgServer, bug: bool) -> None:
    """The ``pglog`` source: the same takeover as above, judged only on the server's statement log (every write
    with its session, ``harness/workload/pglog.py``): complete, no sampling gap."""
    from harness.workload.pglog import LOG_LINE_PREFIX, sessions_from_logs

    async def main() -> None:
        bugs = frozenset({"no_fencing"}) if bug else frozenset()
        db = await pg.create_db("p1")
        await pg.query("postgres", f"alter system set log_line_prefix = '{LOG_LINE_PREFIX}'")
        await pg.query("postgres", "select pg_reload_conf()")
        await pg.query("postgres", f'alter database "{db}" set log_statement = \'mod\'')
        await pg.query(db, "create table hc_probe (id bigserial primary key, by text)")
        log_from = (pg.root / "log").stat().st_size
        fw, nodes = await _pair(pg, db, bugs)
        old, new = nodes
        stop = asyncio.Event()
        loads: list[asyncio.Task[None]] = []
        try:
            await old.start()
            await wait_until(lambda: old.election.role == "active", 10, "p1a active")
            await new.start()
            loads = [asyncio.create_task(_insert_load(n, stop)) for n in nodes]
            await wait_until(lambda: new.election.main is not None and old.writer is not None, 5, "warm")
            await asyncio.sleep(0.5)
            fw[0].refuse_new()
            fw[0].silence(await upstream_port_of(pg, db, old.election.main.get_server_pid()))  # type: ignore[union-attr]
            await wait_until(lambda: new.election.role == "active" and old.election.writer is None, 15,
                             "takeover complete", interval=0.01)
            await asyncio.sleep(0.5)
        finally:
            stop.set()
            await asyncio.gather(*loads, return_exceptions=True)
            await teardown(nodes, fw)
        with (pg.root / "log").open("rb") as f:
            f.seek(log_from)
            text = f.read().decode(errors="replace")
        values = sessions_from_logs({"pg": text}, {"p1": ["p1a", "p1b"]})
        events = [Event(t=float(i), process="harness", type="ok", f="pg_log_session", value=v)  # type: ignore[arg-type]
                  for i, v in enumerate(values)]
        assert {v["replica"] for v in values} == {"p1a", "p1b"}, text[-2000:]
        r = check_single_writer(events, CheckContext(evidence=["pglog"]))
        if bug:
            assert r.verdict == "fail", r.explanation
            assert "statement log" in r.explanation
        else:
            assert r.verdict == "pass", (r.explanation, r.witnesses)
            assert "statement log" in r.explanation
    asyncio.run(main())
