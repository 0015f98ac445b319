"""A sequencer instance: the writer (store.py), the safe-watermark reader, the HTTP API and health.

Why one poller per instance fanning out to subscribers: the safe watermark (min over online instances) is read
once per wake-up and the new events in (served, safe] once, instead of once per subscriber. Wake-ups come from
PostgreSQL LISTEN/NOTIFY (as Canton's Postgres event signaller): every watermark update of every instance
notifies, so a reader reads when events were written or, while events wait, when a watermark rose; it falls back
to polling every ``HA_SEQ_POLL_LISTENING`` (``HA_SEQ_POLL`` while its listener connection is down). A subscriber
catches up from the DB up to the point the poller had served when it registered, then follows the live feed, so
it sees every event exactly once. Counters are positions in the member's ts-ordered stream, so every instance
assigns the same counter to the same event (that is what makes re-subscribing elsewhere possible).

Why heartbeats carry the reader's state (issue 12, 4c): an instance that lost its database keeps its subscriptions
open and its heartbeats flowing, but its reader serves nothing. A heartbeat therefore says whether this instance
serves (``serving``: its reader read successfully within ``_stale_after``) and how far (``safe_watermark``,
``served_upto``), so a subscriber can tell a quiet stream from a stuck one and move (``SequencerClient``). New
subscriptions are refused (503) while the instance does not serve, and readiness requires it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import asyncpg
from aiohttp import web

from harness.sut.common.config import NodeConfig
from harness.sut.common.db import StorageHealth, db_name_of, ensure_schema, retry
from harness.sut.common.health import HealthSource, health_app, start_site
from harness.sut.common.log import log
from harness.sut.sequencer.store import (
    KEEPALIVE_CHANNEL,
    SEQ_DDL,
    SIGNAL_CHANNEL,
    SendRequest,
    SequencerWriter,
    now_us,
    parse_signal,
)

EVENT_COLS = "ts, sender, recipients, message_id, payload::text as payload, payload_hash"
BROADCAST = "*"


#: the safe watermark and the events in (served, safe] in one statement: one round trip per wake-up, and both
#: from one snapshot (an event at or below a watermark committed with it, so none can be missing)
READ_SQL = f"""
with w as (select instance_index, watermark from seq_watermarks where online),
s as (select min(watermark) as safe, array_agg(instance_index) as ix, array_agg(watermark) as wms from w)
select s.safe, s.ix, s.wms, {', '.join('e.' + c for c in EVENT_COLS.split(', '))}
from s left join seq_events e on e.ts > $1 and e.ts <= s.safe order by e.ts
"""


def _event(row: asyncpg.Record) -> dict[str, Any]:
    """An event as fanned out to subscribers. ``line`` is its JSON body without the per-subscriber fields, built
    once from the stored payload text (no parse and re-encode per event and subscriber)."""
    ev = {"ts": row["ts"], "sender": row["sender"], "recipients": list(row["recipients"]),
          "message_id": row["message_id"], "payload_hash": row["payload_hash"]}
    body = json.dumps(ev, separators=(",", ":"))
    ev["line"] = body[:-1] + ',"payload":' + row["payload"] + "}"
    return ev


async def _no_reset(_conn: asyncpg.Connection) -> None:
    """Pool connections here hold no session state (no advisory lock, LISTEN or SET): skip asyncpg's reset query,
    a round trip on every release."""


class SequencerNode:
    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self.storage = StorageHealth()
        self.writer = SequencerWriter(cfg, self.storage)
        self.pool: asyncpg.Pool | None = None
        self.safe: int | None = None          # last safe watermark read
        self.served_upto: int | None = None   # events up to here have been fanned out
        self.subscribers: set[asyncio.Queue[list[dict[str, Any]]]] = set()
        self.reader_ok = False
        self.read_at: float | None = None     # monotonic time of the reader's last successful read
        #: a reader that has not read for this long does not serve (a read hangs on a blackholed link long
        #: before it fails): a healthy one reads at least every ``seq_poll_listening``
        self._stale_after = max(2 * cfg.timers.seq_heartbeat, 4 * cfg.timers.seq_poll_listening)
        self.listening = False                # the NOTIFY listener is connected (else: poll every seq_poll)
        self.signalled_upto = 0               # highest event-writing watermark signalled by any instance
        self.online_wm: dict[int, int] = {}   # online instances at the last read -> watermark (read or signalled)
        self.ignore_wm = "no_watermark_wait" in cfg.bugs
        self._poll_now = asyncio.Event()
        self.fatal: BaseException | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._runners: list[web.AppRunner] = []

    # --- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._runners.append(await start_site(health_app(self._health()), "0.0.0.0", self.cfg.health_port,
                                              "health"))
        t = self.cfg.timers

        async def schema() -> None:
            conn = await asyncpg.connect(self.cfg.db_dsn, timeout=t.db_connect_timeout)
            try:
                await ensure_schema(conn, db_name_of(self.cfg.db_dsn), SEQ_DDL)
            finally:
                await conn.close()
        if self.cfg.db_startup == "fail":
            await schema()
        else:
            await retry(schema, what="init_schema", low=t.db_retry_min, high=t.db_retry_max, health=self.storage)
        self.pool = await asyncpg.create_pool(self.cfg.db_dsn, min_size=1, max_size=6, reset=_no_reset,
                                              timeout=t.db_connect_timeout, command_timeout=t.db_command_timeout)
        await self.writer.start_instance()
        self._tasks = [asyncio.create_task(self._guard(self.writer.run())),
                       asyncio.create_task(self._guard(self.writer.offline_marker(self.pool))),
                       asyncio.create_task(self._guard(self._reader())),
                       asyncio.create_task(self._guard(self._listener()))]
        self._runners.append(await start_site(self._api(), self.cfg.api_host, self.cfg.api_port, "sequencer_api"))

    async def _guard(self, coro: Any) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.fatal = exc
            log("fatal", level="error", error=repr(exc))
            raise

    async def stop(self, graceful: bool = True) -> None:
        for r in self._runners:
            await r.cleanup()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if graceful:
            await self.writer.go_offline()
        elif self.writer.conn is not None:
            self.writer.conn.terminate()
        if self.pool is not None:
            self.pool.terminate()

    # --- reader -----------------------------------------------------------------------------------------
    async def _reader(self) -> None:
        """Poll the safe watermark; fan out events in (served, safe] in ts order to every live subscriber."""
        assert self.pool is not None
        ignore_wm = "no_watermark_wait" in self.cfg.bugs
        while True:
            try:
                if self.served_upto is None or ignore_wm:
                    safe = await self.pool.fetchval("select min(watermark) from seq_watermarks where online")
                    upper = safe
                    if ignore_wm:   # BUG: serve whatever is committed, beyond the safe watermark
                        upper = await self.pool.fetchval("select max(ts) from seq_events")
                    self.safe = safe
                    if self.served_upto is None:
                        self.served_upto = upper if upper is not None else 0
                    elif upper is not None and upper > self.served_upto:
                        rows = await self.pool.fetch(f"select {EVENT_COLS} from seq_events where ts > $1 "
                                                     "and ts <= $2 order by ts", self.served_upto, upper)
                        self.served_upto = upper
                        self._fan_out(rows)
                else:
                    rows = await self.pool.fetch(READ_SQL, self.served_upto)
                    safe = rows[0]["safe"] if rows else None
                    self.safe = safe
                    if rows:
                        self._learn_watermarks(rows[0]["ix"] or [], rows[0]["wms"] or [])
                    if safe is not None and safe > self.served_upto:
                        self.served_upto = safe
                        self._fan_out([r for r in rows if r["ts"] is not None])
                self.reader_ok = True
                self.read_at = time.monotonic()
                self.storage.ok()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.reader_ok:
                    log("reader_failed", level="warning", error=repr(exc))
                self.reader_ok = False
                self.storage.failed(exc)
                await self.pool.expire_connections()
            await self._next_poll()

    def serving(self) -> bool:
        """Whether this instance serves its subscribers: no fatal error, and its reader read successfully
        within ``_stale_after`` (its safe watermark and what it served are current)."""
        return (self.fatal is None and self.reader_ok and self.read_at is not None
                and time.monotonic() - self.read_at <= self._stale_after)

    def _heartbeat(self) -> bytes:
        return (json.dumps({"heartbeat": True, "safe_watermark": self.safe, "served_upto": self.served_upto,
                            "serving": self.serving(), "sequencer": self.cfg.replica}) + "\n").encode()

    def _fan_out(self, rows: list[asyncpg.Record]) -> None:
        if rows:
            batch = [_event(r) for r in rows]
            for q in self.subscribers:
                q.put_nowait(batch)

    async def _next_poll(self) -> None:
        """Sleep until a signal says there may be something to serve, or the fallback poll period passes."""
        t = self.cfg.timers
        if self._poll_now.is_set() and self.signalled_upto > (self.served_upto or 0):
            await asyncio.sleep(0.002)    # coalesce a burst of signals into one read
        elif self.listening:
            self._poll_now.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poll_now.wait(), t.seq_poll_listening)
        else:
            await asyncio.sleep(t.seq_poll)
        self._poll_now.clear()

    def _learn_watermarks(self, indexes: list[int], watermarks: list[int]) -> None:
        """The online instances and their watermarks as last read (signals then move the watermarks on)."""
        self.online_wm = {i: max(w, self.online_wm.get(i, 0)) for i, w in zip(indexes, watermarks, strict=True)}

    def _on_signal(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        sig = parse_signal(payload)
        if sig is None:
            return
        wrote, index, wm = sig
        if wrote:
            self.signalled_upto = max(self.signalled_upto, wm)
        if index in self.online_wm and wm > self.online_wm[index]:
            self.online_wm[index] = wm
        served = self.served_upto or 0
        if self.signalled_upto <= served:   # keep-alives matter only while events wait
            return
        # Read only when the safe watermark can have passed what was served: the minimum over the instances
        # online at the last read, moved on by their signals. Only a hint (the read is the truth): an instance
        # that came online or went offline meanwhile is seen by the next read, at the latest the fallback poll.
        if self.ignore_wm or not self.online_wm or min(self.online_wm.values()) > served:
            self._poll_now.set()

    async def _listener(self) -> None:
        """Keep a LISTEN connection (Canton's Postgres event signaller); while it is down the reader polls."""
        t = self.cfg.timers
        delay = t.db_retry_min
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.cfg.db_dsn, timeout=t.db_connect_timeout,
                                             command_timeout=t.db_command_timeout)
                await conn.add_listener(SIGNAL_CHANNEL, self._on_signal)
                await conn.add_listener(KEEPALIVE_CHANNEL, self._on_signal)
                self.listening, delay = True, t.db_retry_min
                self._poll_now.set()
                while True:   # a dead connection shows up here (the signals alone would just stop)
                    await asyncio.sleep(1.0)
                    await conn.fetchval("select 1", timeout=t.lock_check_timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.listening:
                    log("signal_listener_lost", level="warning", error=repr(exc))
                self.listening = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, t.db_retry_max)
            finally:
                self.listening = False
                if conn is not None:
                    conn.terminate()

    async def _subscribe(self, request: web.Request) -> web.StreamResponse:
        member = request.query.get("member")
        if not member:
            return web.json_response({"error": "member is required"}, status=400)
        from_counter = int(request.query.get("from_counter", "0"))
        if self.served_upto is None or self.pool is None:
            return web.json_response({"error": "UNAVAILABLE", "reason": "reader not started"}, status=503)
        if not self.serving():   # e.g. the database is unreachable: the subscriber should go elsewhere
            return web.json_response({"error": "UNAVAILABLE", "reason": "not serving (reader failing)"}, status=503)
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
        snapshot = self.served_upto
        self.subscribers.add(queue)
        members = [member, BROADCAST]
        log("subscribed", member=member, from_counter=from_counter)

        head = ',"sequencer":' + json.dumps(self.cfg.replica) + ","

        async def emit(counter: int, prev_ts: int | None, ev: dict[str, Any]) -> None:
            line = (f'{{"counter":{counter},"prev_ts":{"null" if prev_ts is None else prev_ts},'
                    f'"safe_watermark":{"null" if self.safe is None else self.safe}{head}{ev["line"][1:]}\n')
            await resp.write(line.encode())

        try:
            async with self.pool.acquire() as conn:
                total = await conn.fetchval("select count(*) from seq_events where recipients && $1 and ts <= $2",
                                            members, snapshot)
                prev_ts = None
                if from_counter <= total and total > 0:
                    offset = max(from_counter - 1, 0)
                    rows = await conn.fetch(f"select {EVENT_COLS} from seq_events where recipients && $1 and "
                                            "ts <= $2 order by ts offset $3 limit 1000", members, snapshot, offset)
                    counter = offset
                    while rows:
                        for r in rows:
                            if counter >= from_counter:
                                await emit(counter, prev_ts, _event(r))
                            prev_ts = r["ts"]
                            counter += 1
                        rows = await conn.fetch(f"select {EVENT_COLS} from seq_events where recipients && $1 and "
                                                "ts > $2 and ts <= $3 order by ts limit 1000",
                                                members, prev_ts, snapshot)
                elif total > 0:
                    prev_ts = await conn.fetchval("select max(ts) from seq_events where recipients && $1 "
                                                  "and ts <= $2", members, snapshot)
            counter = total
            # a heartbeat whenever nothing was written to this subscriber for seq_heartbeat, also while batches
            # of other members' events keep arriving (a subscriber must not take a busy sequencer for silent)
            beat = self.cfg.timers.seq_heartbeat
            written = time.monotonic()
            while True:
                idle = time.monotonic() - written
                if idle >= beat:
                    await resp.write(self._heartbeat())
                    written = time.monotonic()
                    continue
                try:
                    batch = await asyncio.wait_for(queue.get(), beat - idle)
                except TimeoutError:
                    continue
                for ev in batch:
                    if member in ev["recipients"] or BROADCAST in ev["recipients"]:
                        if counter >= from_counter:
                            await emit(counter, prev_ts, ev)
                            written = time.monotonic()
                        prev_ts = ev["ts"]
                        counter += 1
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.subscribers.discard(queue)
        return resp

    async def _send(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            req = SendRequest(sender=str(body["sender"]), recipients=[str(r) for r in body["recipients"]],
                              message_id=str(body["message_id"]), payload=body.get("payload"),
                              max_sequencing_time=body.get("max_sequencing_time"))
        except (KeyError, TypeError, ValueError) as exc:
            return web.json_response({"error": "INVALID_REQUEST", "reason": repr(exc)}, status=400)
        if not self.writer.online and not self.writer.queue:
            return web.json_response({"error": "UNAVAILABLE", "reason": "sequencer offline"}, status=503)
        self.writer.submit(req)
        result = await asyncio.shield(req.future)
        if "error" in result:
            return web.json_response(result, status=409)
        return web.json_response(result)

    def _api(self) -> web.Application:
        async def time_(_: web.Request) -> web.Response:
            return web.json_response({"now_us": now_us(), "safe_watermark": self.safe, "serving": self.serving()})
        app = web.Application()
        app.add_routes([web.post("/v1/send", self._send), web.get("/v1/subscribe", self._subscribe),
                        web.get("/v1/time", time_)])
        return app

    # --- health -----------------------------------------------------------------------------------------
    def _health(self) -> HealthSource:
        def ready() -> bool:
            return self.writer.online and self.serving()

        def live() -> bool:
            return self.fatal is None and self.storage.failing_for() < self.cfg.timers.failed_to_fatal

        async def status() -> dict[str, Any]:
            return {"role": "active" if self.writer.online else "offline", "node": self.cfg.node,
                    "replica": self.cfg.replica, "instance_index": self.writer.index, "safe_watermark": self.safe,
                    "served_upto": self.served_upto, "serving": self.serving(), "subscribers": len(self.subscribers),
                    "bugs": sorted(self.cfg.bugs)}

        async def evidence() -> dict[str, Any]:
            assert self.pool is not None
            rows = await self.pool.fetch("select * from seq_watermarks order by instance_index")
            return {"node": "sequencer", "epochs": [], "watermarks": [dict(r) for r in rows]}

        return HealthSource(ready=ready, live=live, status=status, evidence=evidence)
