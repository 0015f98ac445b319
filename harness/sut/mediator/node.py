"""A mediator replica: collects confirmation responses per request and sends the verdict (approve / reject).

Why in-flight aggregations live in memory only (model: "Mediator failover drops in-flight requests"): the new
active resumes the subscription at the last counter committed in the shared DB, so responses to requests the old
active had seen arrive for unknown requests and are dropped; participants then time out (LOCAL_VERDICT_TIMEOUT).
Verdicts are sent with ``max_sequencing_time`` = the request's deadline, so a late verdict is never sequenced
after the participants have given up, and to ``*`` so every member (incl. a harness observer) sees them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from harness.sut.common.config import NodeConfig
from harness.sut.common.db import PassiveInstance
from harness.sut.common.election import Election, RoleHooks, Writer, read_evidence
from harness.sut.common.health import HealthSource, health_app, start_site
from harness.sut.common.log import log
from harness.sut.sequencer.client import EventFeed, NotSequenced, SequencerClient
from harness.sut.sequencer.pure import EventValidator, Seen

MEDIATOR_DDL = """
create table if not exists m_state (id int primary key, last_counter bigint, last_ts bigint, last_hash text);
insert into m_state (id) values (1) on conflict do nothing;
create table if not exists m_verdicts (request_id text primary key, verdict text not null, ts bigint not null);
"""


@dataclass
class Aggregation:
    request_id: str
    expected: set[str]
    ts: int
    deadline: int
    responses: dict[str, str] = field(default_factory=dict)


class MediatorNode:
    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self.election = Election(cfg, RoleHooks(self._to_active, self._to_passive), extra_ddl=MEDIATOR_DDL)
        self.pending: dict[str, Aggregation] = {}
        self.feed: EventFeed | None = None
        self.seq: SequencerClient | None = None
        self.fatal: BaseException | None = None
        self.dropped = 0
        self.committed_ts: int | None = None   # sequencer time of the last event whose processing committed
        self._tasks: list[asyncio.Task[Any]] = []
        self._runners: list[web.AppRunner] = []
        self._election_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._runners.append(await start_site(health_app(self._health()), "0.0.0.0", self.cfg.health_port, "health"))
        await self.election.init_schema()
        self._election_task = asyncio.create_task(self._guard(self.election.run()))

    async def stop(self) -> None:
        if self._election_task is not None:
            self._election_task.cancel()
            await asyncio.gather(self._election_task, return_exceptions=True)
        await self.election.stop()
        for r in self._runners:
            await r.cleanup()

    async def _guard(self, coro: Any) -> None:
        try:
            await coro
        except (asyncio.CancelledError, PassiveInstance):
            raise
        except BaseException as exc:
            self.fatal = exc
            log("fatal", level="error", error=repr(exc))
            raise

    async def _to_active(self, writer: Writer) -> None:
        st = await writer.pool.fetchrow("select * from m_state where id = 1")
        last = Seen(st["last_counter"], st["last_ts"], st["last_hash"]) if st["last_counter"] is not None else None
        self.pending = {}   # whatever the previous active had in flight is gone
        self.seq = SequencerClient(self.cfg.sequencer_endpoints, self.cfg.node, self.cfg.timers)
        self.feed = EventFeed(SequencerClient(self.cfg.sequencer_endpoints, self.cfg.node, self.cfg.timers,
                                              resubscribe="no_resubscribe" not in self.cfg.bugs),
                              EventValidator(last))
        self.feed.start()
        self._tasks = [asyncio.create_task(self._guard(self._processor(self.feed, writer)))]

    async def _to_passive(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.feed is not None:
            await self.feed.stop()
            self.feed = None
        if self.seq is not None:
            await self.seq.close()
            self.seq = None
        if self.pending:
            log("dropped_in_flight", count=len(self.pending))
        self.pending = {}

    def _on_event(self, ev: dict[str, Any], verdicts: list[tuple[str, str, int, str | None]]) -> None:
        ts, p = ev["ts"], ev["payload"]
        for rid in [r for r, a in self.pending.items() if a.deadline < ts]:
            del self.pending[rid]
            log("request_timed_out", request_id=rid)
        kind = p.get("type") if isinstance(p, dict) else None
        if kind == "request" and self.cfg.node == p.get("mediator"):
            self.pending[p["request_id"]] = Aggregation(
                p["request_id"], set(p["informee_participants"]), ts,
                ts + int(self.cfg.timers.decision_timeout * 1e6))
        elif kind == "response":
            agg = self.pending.get(p["request_id"])
            if agg is None:
                self.dropped += 1       # unknown request: e.g. seen by the previous active only
                return
            agg.responses[p["participant"]] = p["verdict"]
            if p["verdict"] == "reject":
                verdicts.append((agg.request_id, "reject", agg.deadline, f"rejected by {p['participant']}"))
                del self.pending[agg.request_id]
            elif agg.expected <= {k for k, v in agg.responses.items() if v == "approve"}:
                verdicts.append((agg.request_id, "approve", agg.deadline, None))
                del self.pending[agg.request_id]

    async def _processor(self, feed: EventFeed, writer: Writer) -> None:
        while True:
            batch = await feed.next_batch()
            verdicts: list[tuple[str, str, int, str | None]] = []
            for ev in batch:
                self._on_event(ev, verdicts)

            last = batch[-1]
            # one statement, its own transaction (one round trip): the verdicts and the processed counter
            await writer.write_one(
                "with v as (insert into m_verdicts (request_id, verdict, ts) select r, v, $4 "
                "from unnest($1::text[], $2::text[]) as u(r, v) on conflict do nothing) "
                "update m_state set last_counter = $3, last_ts = $4, last_hash = $5 where id = 1",
                [v[0] for v in verdicts], [v[1] for v in verdicts], last["counter"], last["ts"],
                last["payload_hash"], what="mediator_events")
            self.committed_ts = last["ts"]
            for rid, verdict, deadline, reason in verdicts:
                self._tasks.append(asyncio.create_task(self._send_verdict(rid, verdict, deadline, reason)))
            self._tasks = [t for t in self._tasks if not t.done()]

    async def _send_verdict(self, rid: str, verdict: str, deadline: int, reason: str | None) -> None:
        if self.seq is None:
            return
        try:
            await self.seq.send(["*"], {"type": "verdict", "request_id": rid, "verdict": verdict, "reason": reason},
                                max_sequencing_time=deadline, message_id=f"verdict-{rid}")
        except NotSequenced:
            log("verdict_not_sequenced", request_id=rid)

    def _health(self) -> HealthSource:
        def ready() -> bool:
            return self.fatal is None and self.election.role == "active" and \
                self.election.storage.failing_since is None

        def live() -> bool:
            return self.fatal is None and self.election.storage.failing_for() < self.cfg.timers.failed_to_fatal

        async def status() -> dict[str, Any]:
            return {**self.election.status(), "pending": len(self.pending), "dropped_responses": self.dropped,
                    "committed_ts": self.committed_ts,
                    "sequencer": self.feed.client.current if self.feed else None,
                    "lock_connection_settings": await self.election.lock_connection_settings()}

        async def evidence() -> dict[str, Any]:
            return await read_evidence(self.cfg.db_dsn, self.cfg.node)

        return HealthSource(ready=ready, live=live, status=status, evidence=evidence,
                            set_passive=self.election.set_passive)
