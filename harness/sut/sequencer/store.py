"""One sequencer instance's write side: instance index, recovery, batched writes, keep-alives, offline marking.

Why one connection for the writer: the instance-index advisory lock lives on it, so losing it means another
instance may take the index; every reconnect therefore re-claims an index and runs recovery (model: "Recovery").
Events and the watermark advance commit in ONE transaction that only applies while the instance is online, so a
committed event is never above its writer's watermark.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from harness.sut.common import clock
from harness.sut.common.config import NodeConfig
from harness.sut.common.db import (
    LOCK_SEQ_INDEX_BASE,
    Backoff,
    FatalDbError,
    StorageHealth,
    classify,
    db_name_of,
    lock_id,
    retry,
)
from harness.sut.common.log import log
from harness.sut.sequencer.pure import canonical_hash, canonical_json, next_timestamp

SEQ_DDL = """
create table if not exists seq_watermarks (
  instance_index int primary key, watermark bigint not null, online boolean not null, replica text);
create table if not exists seq_events (
  ts bigint primary key, instance_index int not null, sender text not null, recipients text[] not null,
  message_id text not null, payload jsonb not null, payload_hash text not null, unique (sender, message_id));
create index if not exists seq_events_recipients on seq_events using gin (recipients);
"""

#: One batch = ONE statement (one round trip through the fault proxy and pg-lb instead of BEGIN, insert, update,
#: COMMIT). The watermark advance and the events commit atomically, as the model requires, and both apply only
#: while the instance is marked online: the insert is conditioned on the update having found the row online
#: (``wm``), so an instance marked offline meanwhile writes nothing (as the old transaction's rollback did). A
#: concurrent offline marking and this update serialise on the watermark row's lock under READ COMMITTED: whichever
#: comes second re-reads the row (``online`` / the advanced watermark) before it applies.
WRITE_SQL = """
with wm as (
  update seq_watermarks set watermark = $1 where instance_index = $2 and online
  returning watermark, pg_notify($3, $4)),
ins as (
  insert into seq_events (ts, instance_index, sender, recipients, message_id, payload, payload_hash)
  select t, $2::int, s, string_to_array(r, ','), m, p::jsonb, h
  from unnest($5::bigint[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[]) as u(t, s, r, m, p, h)
  where exists (select 1 from wm)
  on conflict (sender, message_id) do nothing returning ts)
select (select count(*) from wm) as online, array(select ts from ins) as inserted
"""

#: LISTEN/NOTIFY channels of the sequencer instances (as Canton's Postgres event signaller): every watermark
#: update notifies ``<e|k>,<instance index>,<watermark>``: on SIGNAL_CHANNEL if the transaction wrote events (e),
#: on KEEPALIVE_CHANNEL if it only advanced the watermark (k). Writers listen to events only (a peer's events are
#: what makes them advance their own watermark at once); readers listen to both (a keep-alive can make events
#: safe). Two channels because PostgreSQL delivers every notification of a channel to every listener.
SIGNAL_CHANNEL = "ha_seq_signal"
KEEPALIVE_CHANNEL = "ha_seq_keepalive"


def parse_signal(payload: str) -> tuple[bool, int, int] | None:
    """(wrote events, instance index, watermark) of a signal payload; None if malformed."""
    try:
        kind, index, wm = payload.split(",")
        return kind == "e", int(index), int(wm)
    except ValueError:
        return None


def now_us() -> int:
    """The sequencer's wall clock (its timestamps and its view of peers' watermarks: clocks are assumed in sync)."""
    return clock.wall_us()


class MarkedOffline(Exception):
    """Our watermark update found the instance marked offline by a peer: stop writing and recover."""


class NoFreeIndex(Exception):
    """Every instance index is taken or still marked online (a transient condition: peers mark dead ones)."""


@dataclass
class SendRequest:
    sender: str
    recipients: list[str]
    message_id: str
    payload: Any
    max_sequencing_time: int | None
    future: asyncio.Future[dict[str, Any]] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class SequencerWriter:
    def __init__(self, cfg: NodeConfig, storage: StorageHealth) -> None:
        self.cfg = cfg
        self.t = cfg.timers
        self.n = cfg.seq_max_writers
        self.db = db_name_of(cfg.db_dsn)
        self.storage = storage
        self.conn: asyncpg.Connection | None = None
        self.index: int | None = None
        self.online = False
        self.last_ts = 0
        self.queue: deque[SendRequest] = deque()
        self._wake = asyncio.Event()
        self._peer_top = 0      # highest watermark of a peer's event-writing transaction we were signalled
        self.stopping = False
        #: BUG ``sequence_late_sends``: max-sequencing-time is not enforced; a send that reaches the writer after
        #: it is sequenced anyway, although its sender may already have timed it out (NOT_SEQUENCED_TIMEOUT)
        self.late_ok = "sequence_late_sends" in cfg.bugs
        self.clock_trusted = "wall_clock_timestamps" in cfg.bugs

    # --- instance lifecycle ------------------------------------------------------------------------------
    async def _connect(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(self.cfg.db_dsn, timeout=self.t.db_connect_timeout,
                                     command_timeout=self.t.db_command_timeout)
        await conn.add_listener(SIGNAL_CHANNEL, self._on_signal)
        return conn

    def _on_signal(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        """A peer committed events above our watermark: advance ours now rather than at the next keep-alive,
        so the events become safe (min over online watermarks) without waiting ``seq_keepalive``."""
        sig = parse_signal(payload)
        if sig is not None and sig[0] and sig[1] != self.index:
            self._peer_top = max(self._peer_top, sig[2])
            if self._peer_top >= self.last_ts:
                self._wake.set()

    async def _claim(self, conn: asyncpg.Connection) -> int:
        order = list(range(self.n))
        if self.index is not None:
            order.remove(self.index)
            order.insert(0, self.index)
        for i in order:
            lid = lock_id(self.db, LOCK_SEQ_INDEX_BASE + i)
            if not await conn.fetchval("select pg_try_advisory_lock($1)", lid):
                continue
            online = await conn.fetchval("select online from seq_watermarks where instance_index = $1", i)
            if not online or i == self.index:
                return i
            await conn.execute("select pg_advisory_unlock($1)", lid)
        raise NoFreeIndex(f"all {self.n} instance indexes are taken or marked online")

    async def _recover(self, conn: asyncpg.Connection, i: int) -> None:
        """Delete own events above own watermark; watermark := max(all, now), online; wait for the clock."""
        await conn.execute(
            "delete from seq_events where instance_index = $1 and ts > coalesce("
            "(select watermark from seq_watermarks where instance_index = $1), -1)", i)
        async with conn.transaction(isolation="serializable"):
            top = await conn.fetchval("select max(watermark) from seq_watermarks")
            wm = max(top or 0, now_us())
            await conn.execute(
                "insert into seq_watermarks (instance_index, watermark, online, replica) values ($1, $2, true, $3) "
                "on conflict (instance_index) do update set watermark = $2, online = true, replica = $3",
                i, wm, self.cfg.replica)
        self.last_ts = wm
        while now_us() <= wm:
            await asyncio.sleep(max(0.001, (wm - now_us()) / 1e6))

    async def start_instance(self) -> None:
        """Connect, claim an index and recover; transient failures (incl. no free index) retried forever."""
        async def once() -> None:
            conn = await self._connect()
            try:
                i = await self._claim(conn)
                await self._recover(conn, i)
            except BaseException:
                conn.terminate()
                raise
            self.conn, self.index, self.online = conn, i, True
            log("sequencer_online", instance_index=i, watermark=self.last_ts)

        async def guarded() -> None:
            try:
                await once()
            except NoFreeIndex as exc:
                raise ConnectionError(str(exc)) from exc   # transient: peers will mark dead ones offline

        await retry(guarded, what="sequencer_start", low=self.t.db_retry_min, high=self.t.db_retry_max,
                    health=self.storage, retry_non_transient="retry_non_transient" in self.cfg.bugs)

    async def go_offline(self) -> None:
        """Graceful stop: mark this instance offline so readers need not wait for it."""
        self.stopping = True
        self.online = False
        if self.conn is not None and self.index is not None:
            try:
                await asyncio.wait_for(self.conn.execute(
                    "update seq_watermarks set online = false where instance_index = $1", self.index), 2)
                log("sequencer_offline", instance_index=self.index)
            except Exception as exc:
                log("sequencer_offline_failed", level="warning", error=repr(exc))
            self.conn.terminate()
            self.conn = None

    # --- write path -------------------------------------------------------------------------------------
    def submit(self, req: SendRequest) -> None:
        self.queue.append(req)
        self._wake.set()

    def _next_ts(self) -> int:
        assert self.index is not None
        # bug switch wall_clock_timestamps: trust the wall clock to only move forward (a clock stepped back then
        # hands out timestamps below the ones already written and below the instance's own watermark)
        last = 0 if self.clock_trusted else self.last_ts
        self.last_ts = next_timestamp(now_us(), last, self.n, self.index)
        return self.last_ts

    async def _write_batch(self, items: list[SendRequest]) -> None:
        assert self.conn is not None
        conn = self.conn
        accepted: list[tuple[int, SendRequest]] = []
        late: list[tuple[int, SendRequest]] = []
        for it in items:
            ts = self._next_ts()
            if it.max_sequencing_time is not None and ts > it.max_sequencing_time:
                if not self.late_ok:
                    late.append((ts, it))
                    continue
                log("late_send_sequenced", level="warning", sender=it.sender, message_id=it.message_id, ts=ts,
                    max_sequencing_time=it.max_sequencing_time)
            accepted.append((ts, it))
        top = self._next_ts() if not items else self.last_ts
        signal = f"{'e' if accepted else 'k'},{self.index},{top}"
        texts = [_json(it.payload) for _, it in accepted]
        row = await conn.fetchrow(
            WRITE_SQL, top, self.index, SIGNAL_CHANNEL if accepted else KEEPALIVE_CHANNEL, signal,
            [ts for ts, _ in accepted],
            [it.sender for _, it in accepted], [",".join(it.recipients) for _, it in accepted],
            [it.message_id for _, it in accepted], texts, [canonical_hash(t) for t in texts])
        if not row["online"]:
            raise MarkedOffline(f"instance {self.index} was marked offline")
        inserted = set(row["inserted"])
        existing: dict[tuple[str, str], int] = {}
        dups = [it for ts, it in accepted if ts not in inserted]
        if dups:   # idempotent re-sends of messages sequenced earlier (committed: the insert waited for them)
            for r in await conn.fetch(
                    "select sender, message_id, ts from seq_events e join unnest($1::text[], $2::text[]) as u(s, m) "
                    "on e.sender = u.s and e.message_id = u.m",
                    [it.sender for it in dups], [it.message_id for it in dups]):
                existing[(r["sender"], r["message_id"])] = r["ts"]
        for ts, it in accepted:
            if not it.future.done():
                it.future.set_result({"ts": existing.get((it.sender, it.message_id), ts),
                                      "sequencer": self.cfg.replica})
        for ts, it in late:
            if not it.future.done():
                it.future.set_result({"error": "MAX_SEQUENCING_TIME_EXCEEDED", "ts": ts,
                                      "max_sequencing_time": it.max_sequencing_time})

    async def run(self) -> None:
        """Batch pending sends into one transaction; when idle, keep-alive the watermark every ~50 ms."""
        backoff = Backoff(self.t.db_retry_min, self.t.db_retry_max)
        while not self.stopping:
            if self.conn is None:
                await self.start_instance()
                backoff.reset()
            if not self.queue and self._peer_top < self.last_ts:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.t.seq_keepalive)
            items = [self.queue.popleft() for _ in range(min(len(self.queue), 500))]
            items = [it for it in items if not it.future.done()]
            try:
                await self._write_batch(items)
                self.storage.ok()
            except asyncio.CancelledError:
                self.queue.extendleft(reversed(items))
                raise
            except MarkedOffline as exc:
                self.queue.extendleft(reversed(items))
                log("sequencer_marked_offline", level="warning", error=str(exc))
                self.online = False
                await self._drop_connection()
            except Exception as exc:
                self.queue.extendleft(reversed(items))
                if classify(exc, retry_non_transient="retry_non_transient" in self.cfg.bugs) == "fatal":
                    raise FatalDbError(repr(exc)) from exc
                self.storage.failed(exc)
                self.online = False
                delay = backoff.next()
                log("sequencer_write_failed", level="warning", error=repr(exc), retry_in=round(delay, 3))
                await self._drop_connection()
                await asyncio.sleep(delay)

    async def _drop_connection(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.terminate()

    # --- failure detection of peers ------------------------------------------------------------------
    async def offline_marker(self, pool: asyncpg.Pool) -> None:
        """Every ~5 s mark offline the instances whose watermark is older than now - 8 s (synchronized clocks)."""
        while True:
            await asyncio.sleep(self.t.seq_offline_check * (1 + 0.2 * random.random()))
            if not self.online:
                continue
            try:
                rows = await pool.fetch(
                    "update seq_watermarks set online = false where online and instance_index <> $1 "
                    "and watermark < $2 returning instance_index, replica, watermark",
                    self.index, now_us() - int(self.t.seq_offline_after * 1e6))
                for r in rows:
                    log("marked_peer_offline", peer_index=r["instance_index"], peer=r["replica"],
                        watermark=r["watermark"])
            except Exception as exc:
                log("offline_marker_failed", level="warning", error=repr(exc))


_json = canonical_json
