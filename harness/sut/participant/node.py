"""A participant replica: election, role transitions, submission, event processing, time proofs.

Why the transitions look like this (model, "Transitions"): becoming active opens the fenced writer, resumes the
sequencer subscription at the last counter committed in the shared DB, re-sends acknowledged but unsequenced
submissions (idempotent message ids) and only then opens the Ledger API listener; becoming passive does the
reverse, so a passive replica has no listener and no sequencer connection.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiohttp import web

from harness.sut.common.config import NodeConfig
from harness.sut.common.db import FatalDbError, PassiveInstance
from harness.sut.common.election import Election, RoleHooks, Writer, read_evidence
from harness.sut.common.group import GroupCommit
from harness.sut.common.health import HealthSource, health_app, start_site
from harness.sut.common.log import log
from harness.sut.participant import store
from harness.sut.participant.api import StreamHub, ledger_app
from harness.sut.participant.dedup import DedupEntry, change_key, decide, dedup_period_us
from harness.sut.participant.protocol import Ctx, completion_body, process_batch, requests_only, response_for
from harness.sut.sequencer.client import EventFeed, NotSequenced, SequencerClient
from harness.sut.sequencer.pure import EventValidator, Seen
from harness.sut.sequencer.store import now_us


async def _no_reset(_conn: asyncpg.Connection) -> None:
    """The read pool holds no session state (no advisory lock, LISTEN or SET): skip asyncpg's reset query, a
    round trip on every release (i.e. on every stream poll)."""


_Outcome = tuple[str, DedupEntry | None]   # (decision, the dedup entry it was made from)


#: bug switch refuse_on_timeout: how long a submission's write may take before it is (wrongly) answered as refused
REFUSE_AFTER_S = 1.0


@dataclass
class _Submission:
    req: dict[str, Any]
    now: int                          # when it was received (dedup period reference)
    period: int
    mem_entry: DedupEntry | None      # only with the ``dedup_in_memory`` bug


class _SubmitGroup(GroupCommit[_Submission, _Outcome]):
    """The group commit of one active period (bound to its fenced writer)."""

    def __init__(self, node: ParticipantNode, writer: Writer) -> None:
        super().__init__(lambda subs: node._record_submissions(writer, subs), shared=(PassiveInstance,))
        self.writer = writer


class ParticipantNode:
    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self.election = Election(cfg, RoleHooks(self._to_active, self._to_passive), extra_ddl=store.PARTICIPANT_DDL)
        self.hub = StreamHub()
        self.read_pool: asyncpg.Pool | None = None
        self.writer: Writer | None = None
        self.seq: SequencerClient | None = None
        self.feed: EventFeed | None = None
        self.ctx = Ctx(cfg.node, cfg.replica, int(cfg.timers.decision_timeout * 1e6),
                       mem_dedup={} if "dedup_in_memory" in cfg.bugs else None,
                       unordered="unordered_indexing" in cfg.bugs)
        if "ack_before_durable" in cfg.bugs:
            self.ctx.early = self._publish_early
        self.fatal: BaseException | None = None
        self.last_event_ts: int | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._runners: list[web.AppRunner] = []
        self._api: web.AppRunner | None = None
        self._election_task: asyncio.Task[None] | None = None
        self._group: _SubmitGroup | None = None

    # --- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._runners.append(await start_site(health_app(self._health()), "0.0.0.0", self.cfg.health_port, "health"))
        await self.election.init_schema()
        if "passive_serves_api" in self.cfg.bugs:   # BUG: the listener runs whatever the role
            self._api = await start_site(ledger_app(self), self.cfg.api_host, self.cfg.api_port, "ledger_api")
        self._election_task = asyncio.create_task(self._guard(self.election.run()))

    async def stop(self) -> None:
        if self._election_task is not None:
            self._election_task.cancel()
            await asyncio.gather(self._election_task, return_exceptions=True)
        await self.election.stop()
        if self._api is not None:
            await self._api.cleanup()
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
        self.writer = writer
        self.hub.passive = False
        t = self.cfg.timers
        self.read_pool = await asyncpg.create_pool(self.cfg.db_dsn, min_size=1, max_size=4, reset=_no_reset,
                                                   timeout=t.db_connect_timeout, command_timeout=t.db_command_timeout)
        st = await self.read_pool.fetchrow("select * from p_state where id = 1")
        self.hub.reset(st["completion_offset"], st["tx_offset"])
        last = Seen(st["last_counter"], st["last_ts"], st["last_hash"]) if st["last_counter"] is not None else None
        self.ctx.deadline = await store.next_deadline(self.read_pool)
        self.seq = SequencerClient(self.cfg.sequencer_endpoints, self.cfg.node, t)
        self.feed = EventFeed(SequencerClient(self.cfg.sequencer_endpoints, self.cfg.node, t,
                                              resubscribe="no_resubscribe" not in self.cfg.bugs), EventValidator(last))
        self.feed.start()
        if "inflight_per_replica" in self.cfg.bugs:   # BUG: the old active's in-flight submissions are forgotten
            async with writer.pool.acquire() as conn:
                await conn.execute("delete from p_inflight")
        unsent = await self.read_pool.fetch("select request from p_inflight where sequenced_ts is null "
                                            "and max_sequencing_time > $1", now_us())
        self._tasks = [asyncio.create_task(self._guard(self._processor(self.feed, writer))),
                       asyncio.create_task(self._ticker())]
        for r in unsent:
            self._spawn_send(json.loads(r["request"]))
        self._group = _SubmitGroup(self, writer)
        if self._api is None:
            self._api = await start_site(ledger_app(self), self.cfg.api_host, self.cfg.api_port, "ledger_api")

    async def _to_passive(self) -> None:
        self.hub.passive = True
        self.hub.valid = False
        await self.hub.notify()
        if self._api is not None and "passive_serves_api" not in self.cfg.bugs:
            api, self._api = self._api, None
            await api.cleanup()
        if self._group is not None:
            group, self._group = self._group, None
            await group.close(PassiveInstance("became passive"))
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
        if self.read_pool is not None:
            self.read_pool.terminate()
            self.read_pool = None
        self.writer = None

    # --- sequencer side -------------------------------------------------------------------------------
    def _spawn_send(self, req: dict[str, Any]) -> None:
        seq = self.seq
        if seq is None:
            return
        recipients = sorted({req["mediator"], *req["informee_participants"]})
        payload = {k: v for k, v in req.items() if k != "change_key"}

        async def send() -> None:
            try:
                await seq.send(recipients, payload, max_sequencing_time=req["max_sequencing_time"],
                               message_id=req["request_id"])
            except NotSequenced as exc:
                log("request_not_sequenced", request_id=req["request_id"], reason=str(exc))
            except Exception as exc:
                log("request_send_failed", level="warning", request_id=req["request_id"], error=repr(exc))
        self._tasks.append(asyncio.create_task(send()))

    async def _processor(self, feed: EventFeed, writer: Writer) -> None:
        hosted = self.cfg.hosted_parties
        ack_early = "ack_before_durable" in self.cfg.bugs
        while True:
            batch = await feed.next_batch()
            for ev in batch:
                resp = response_for(self.ctx, hosted, ev)
                if resp is not None and self.seq is not None:
                    seq, (rcpt, body, mid) = self.seq, resp
                    mst = now_us() + int(self.cfg.timers.decision_timeout * 1e6)
                    self._tasks.append(asyncio.create_task(self._send_quiet(seq, rcpt, body, mid, mst)))
            fx = store.Effects()
            last = batch[-1]
            processed = (last["counter"], last["ts"], last["payload_hash"])
            one = requests_only(self.ctx, batch, processed)
            if one is not None:   # no verdict, no deadline: one statement, one round trip (no effects)
                await writer.write_one(one[0], *one[1], what="process_events")   # idempotent if re-run
            else:
                await writer.write(self._batch_tx(batch, fx, processed), what="process_events")
            self.last_event_ts = last["ts"]
            self._tasks = [t for t in self._tasks if not t.done()]
            if ack_early:
                self.hub.early.clear()
            self.hub.publish(fx.completions, fx.transactions)
            if fx.completions or fx.transactions or ack_early:
                await self.hub.notify()

    def _batch_tx(self, batch: list[dict[str, Any]], fx: store.Effects,
                  processed: tuple[int, int, str]) -> Callable[[asyncpg.Connection], Awaitable[None]]:
        """The transaction that processes ``batch``, for ``Writer.write``, which runs it again after a transient
        error - also after one that hit an attempt which had committed (the connection dropped before COMMIT's
        reply came). Such a retry finds the batch processed (``p_state`` holds its counter) and would produce
        nothing, so the committed transactions and completions never reached the stream hub: a caught-up stream
        saw them only after some later commit. It reads back what was committed since before the first attempt
        instead (``fx``, published by the caller), without processing the batch twice.

        ``ctx.deadline`` (the cached earliest pending deadline) is set by ``expire()`` from a query inside the
        attempt, after it deleted the expired rows. An attempt that rolls back brings those rows back but left the
        cache at a later deadline: the retry (and every batch until an event passes that later deadline) would skip
        the expiry, and a verdict sequenced after the passed deadline would be applied here alone (invariants
        3/4/6). Every retry therefore starts from the lower of the cache before the first attempt and the cache
        now: a deadline too low only costs an extra expiry check; concurrent submits only lower it."""
        since = (self.hub.high["p_transactions"], self.hub.high["p_completions"])   # published => committed
        deadline_before = self.ctx.deadline
        attempts = 0

        async def tx(conn: asyncpg.Connection) -> None:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                d = self.ctx.deadline
                self.ctx.deadline = d if deadline_before is None else \
                    deadline_before if d is None else min(d, deadline_before)
            fx.completions.clear()
            fx.transactions.clear()
            if attempts > 1 and await store.read_back_processed(conn, fx, processed[0], *since):
                return
            await process_batch(conn, self.ctx, fx, batch, processed)
        return tx

    @staticmethod
    async def _send_quiet(seq: SequencerClient, rcpt: list[str], body: dict[str, Any], mid: str, mst: int) -> None:
        """A confirmation response; if it is never sequenced the mediator times the request out."""
        try:
            await seq.send(rcpt, body, message_id=mid, max_sequencing_time=mst)
        except Exception as exc:
            log("response_not_sent", level="warning", message_id=mid, error=repr(exc))

    async def _publish_early(self, completion: dict[str, Any]) -> None:
        """BUG ack_before_durable: streams see this OK completion while its transaction is still open."""
        self.hub.early.append(completion)
        await self.hub.notify()

    async def _ticker(self) -> None:
        """Ask for a time proof (an event to ourselves) when a deadline passed but no event carried us past it."""
        while True:
            await asyncio.sleep(self.cfg.timers.tick)
            d = self.ctx.deadline
            if d is None or now_us() < d + 50_000 or (self.last_event_ts or 0) > d or self.seq is None:
                continue
            try:
                await self.seq.send([self.cfg.node], {"type": "tick"}, max_sequencing_time=now_us() + 5_000_000)
            except Exception as exc:
                log("tick_failed", level="warning", error=repr(exc))

    # --- Ledger API -----------------------------------------------------------------------------------
    async def submit(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        replica = self.cfg.replica
        writer = self.writer
        if self.election.role != "active" or writer is None:
            if "passive_serves_api" in self.cfg.bugs:   # BUG: acknowledged, never processed
                return 202, {"status": "ACCEPTED", "replica": replica}
            return 503, {"error": "NODE_IS_PASSIVE_REPLICA", "status": "UNAVAILABLE", "replica": replica}
        try:
            req = self._parse(body)
            period = dedup_period_us(body.get("deduplication_period_s"))
        except (KeyError, TypeError, ValueError) as exc:
            return 400, {"error": "INVALID_ARGUMENT", "reason": str(exc), "replica": replica}
        now = now_us()
        mem = self.ctx.mem_dedup
        mem_entry: DedupEntry | None = None
        if mem is not None:     # BUG dedup_in_memory: decided from this replica's memory only
            mem_entry = mem.get(req["change_key"])
            if decide(mem_entry, now, period) == "new":
                mem[req["change_key"]] = DedupEntry("inflight", req["submission_id"])
        group = self._group
        if group is None or group.writer is not writer:
            return 503, {"error": "NODE_IS_PASSIVE_REPLICA", "status": "UNAVAILABLE", "replica": replica}
        if "write_behind_submit" in self.cfg.bugs:   # BUG: acknowledged before the in-flight record is written
            self._tasks.append(asyncio.create_task(self._write_behind(group, _Submission(req, now, period, mem_entry))))
            return 202, {"status": "ACCEPTED", "submission_id": req["submission_id"], "request_id": req["request_id"],
                         "replica": replica, "duplicate": False}
        try:
            pending = group.submit(_Submission(req, now, period, mem_entry))
            if "refuse_on_timeout" in self.cfg.bugs:
                # BUG: a slow write is answered as refused while it goes on (and commits) in the background
                try:
                    decision, entry = await asyncio.wait_for(asyncio.shield(pending), REFUSE_AFTER_S)
                except TimeoutError:
                    return 503, {"error": "UNAVAILABLE", "status": "UNAVAILABLE", "replica": replica,
                                 "reason": f"submission not recorded within {REFUSE_AFTER_S:g} s"}
            else:
                decision, entry = await pending
        except PassiveInstance as exc:
            if exc.maybe_committed:
                # the claim may have committed before this replica turned passive: its outcome is unknown (the
                # new active takes over what it finds in flight), so it is not refused - as Canton's
                # REQUEST_TIME_OUT, a client resubmits the command id and deduplication tells
                return 504, {"error": "REQUEST_TIME_OUT", "status": "DEADLINE_EXCEEDED", "replica": replica,
                             "reason": "this replica turned passive while recording the submission"}
            return 503, {"error": "NODE_IS_PASSIVE_REPLICA", "status": "UNAVAILABLE", "replica": replica}
        except FatalDbError as exc:
            return 500, {"error": "INTERNAL", "reason": str(exc), "replica": replica}
        if decision == "in_flight":
            return 409, {"error": "SUBMISSION_ALREADY_IN_FLIGHT", "status": "ABORTED", "replica": replica,
                         "existing_submission_id": entry.submission_id if entry else None}
        # "completed": recorded in flight by an attempt whose reply was lost and completed since (its completion
        # is in the stream): accepted, not a duplicate
        return 202, {"status": "ACCEPTED", "submission_id": req["submission_id"], "request_id": req["request_id"],
                     "replica": replica, "duplicate": decision == "duplicate"}

    async def _write_behind(self, group: _SubmitGroup, sub: _Submission) -> None:
        """BUG ``write_behind_submit``: the in-flight record of an already acknowledged submission is written in
        the background; while the DB is unreachable the acknowledgement is a promise nobody keeps."""
        try:
            await group.submit(sub)
        except Exception as exc:
            log("write_behind_submit_lost", level="warning", request_id=sub.req["request_id"], error=repr(exc))

    async def _record_submissions(self, writer: Writer, subs: list[_Submission]) -> list[_Outcome | BaseException]:
        """Group commit of every submission queued meanwhile. New change IDs are claimed and recorded in flight by
        one statement that is its own transaction (one round trip: the common case costs nothing more); the
        others (a dedup row exists) are then decided one by one in a second transaction. The two are separate
        commits, so if the second fails its submissions alone fail: the claimed ones are durable and succeed.

        The writer retries either after a transient error, also after an attempt that committed and lost only
        its reply: a retry then finds the submission's own work - its claimed row (``claim_and_record_many``), its
        re-opened dedup row (``decide``: ``recorded``) or its completion (a duplicate's; or, once max-sequencing
        passed, its in-flight record's NOT_SEQUENCED_TIMEOUT: then accepted, not a duplicate) - and takes it as done."""
        mem = self.ctx.mem_dedup
        claimed: set[str] = set()
        if mem is None:
            claimed = await store.claim_and_record_many(
                lambda sql, *args: writer.write_one(sql, *args, what="submit", fetch="fetch"),
                [s.req for s in subs])
        rest = [s for s in subs if s.req["request_id"] not in claimed]
        decided: dict[str, _Outcome | BaseException] = {}
        fx = store.Effects()
        if rest:
            since = self.hub.high["p_completions"]   # published => committed, before the first attempt
            attempts = 0

            async def tx(conn: asyncpg.Connection) -> list[_Outcome]:
                nonlocal attempts
                attempts += 1
                fx.completions.clear()
                # The others may lock dedup rows and then p_state (a duplicate's completion): take p_state first,
                # in the order event processing takes them, so the two cannot deadlock.
                await conn.execute("select 1 from p_state where id = 1 for update")
                # A retry may follow an attempt that committed (its reply lost): the duplicates it answered have
                # their completion already; deciding again would write a second one (invariant 3).
                answered: dict[str, dict[str, Any]] = {}
                if attempts > 1:
                    answered = await store.completions_after(conn, since, [s.req["request_id"] for s in rest])
                out: list[_Outcome] = []
                for sub in rest:
                    req, key = sub.req, sub.req["change_key"]
                    done = answered.get(req["request_id"])
                    if done is not None:
                        fx.completions.append(done)    # published now: the committed attempt's may never have been
                        # DUPLICATE_COMMAND: the committed attempt answered a duplicate. Any other status: it
                        # recorded the submission in flight and it has completed since - e.g. NOT_SEQUENCED_TIMEOUT
                        # by ``expire()`` when the retry outlasted max-sequencing. Not a duplicate (a client takes
                        # that as success) and not to be sent or decided again (a second life, a second
                        # completion): accepted, and its one completion is out already.
                        out.append(("duplicate" if done.get("status") == "DUPLICATE_COMMAND" else "completed",
                                    None))
                        continue
                    if mem is not None:
                        entry = sub.mem_entry
                        decision = decide(entry, sub.now, sub.period)
                        if decision == "new":
                            await store.insert_inflight(conn, req)
                    else:
                        entry = await store.load_dedup(conn, key)
                        decision = decide(entry, sub.now, sub.period, req["request_id"])
                        if decision == "new":
                            await store.set_inflight(conn, key, req["submission_id"], req["request_id"])
                            await store.insert_inflight(conn, req)
                        elif decision == "recorded":   # by an attempt of this transaction whose reply was lost
                            decision = "new"
                    if decision == "duplicate" and entry is not None:
                        await store.add_completion(conn, fx, completion_body(
                            self.ctx, req, "DUPLICATE_COMMAND", offset=entry.tx_offset,
                            existing_submission_id=entry.submission_id), None)
                    out.append((decision, entry))
                return out

            try:
                for sub, outcome in zip(rest, await writer.write(tx, what="submit"), strict=True):
                    decided[sub.req["request_id"]] = outcome
            except Exception as exc:
                if not claimed:
                    raise
                fx.completions.clear()
                for sub in rest:
                    decided[sub.req["request_id"]] = exc
        outcomes: list[_Outcome | BaseException] = []
        for sub in subs:
            outcome = decided.get(sub.req["request_id"], ("new", None))
            outcomes.append(outcome)
            if not isinstance(outcome, BaseException) and outcome[0] == "new":
                mst = sub.req["max_sequencing_time"]
                self.ctx.deadline = mst if self.ctx.deadline is None else min(self.ctx.deadline, mst)
                self._spawn_send(sub.req)
        if fx.completions:
            self.hub.publish(fx.completions, [])
            await self.hub.notify()
        return outcomes

    def _parse(self, body: dict[str, Any]) -> dict[str, Any]:
        user, command_id = str(body["user"]), str(body["command_id"])
        act_as = [str(p) for p in body["act_as"]]
        if not act_as or not set(act_as) <= self.cfg.hosted_parties:
            raise ValueError(f"act_as {act_as} must be non-empty parties of {self.cfg.node}")
        informees = sorted({*(str(p) for p in body.get("informees", [])), *act_as})
        unknown = [p for p in informees if p not in self.cfg.party_map]
        if unknown:
            raise ValueError(f"unknown parties {unknown}")
        return {"type": "request", "request_id": uuid.uuid4().hex, "change_key": change_key(user, act_as, command_id),
                "submitter": self.cfg.node, "user": user, "act_as": act_as, "command_id": command_id,
                "submission_id": str(body.get("submission_id") or uuid.uuid4()), "informees": informees,
                "informee_participants": sorted({self.cfg.party_map[p] for p in informees}),
                "payload": body.get("payload"), "mediator": self.cfg.mediator,
                "max_sequencing_time": now_us() + int(self.cfg.timers.max_sequencing * 1e6)}

    # --- health ---------------------------------------------------------------------------------------
    def _health(self) -> HealthSource:
        def ready() -> bool:
            return (self.fatal is None and self.election.role == "active" and self._api is not None
                    and self.election.storage.failing_since is None)

        def live() -> bool:
            return self.fatal is None and self.election.storage.failing_for() < self.cfg.timers.failed_to_fatal

        async def status() -> dict[str, Any]:
            return {**self.election.status(), "api_listening": self._api is not None,
                    "sequencer": self.feed.client.current if self.feed else None,
                    "lock_connection_settings": await self.election.lock_connection_settings(),
                    "storage_error": self.election.storage.last_error}

        async def evidence() -> dict[str, Any]:
            return await read_evidence(self.cfg.db_dsn, self.cfg.node)

        return HealthSource(ready=ready, live=live, status=status, evidence=evidence,
                            set_passive=self.election.set_passive)
