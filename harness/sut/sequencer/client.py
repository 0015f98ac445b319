"""The sequencer client used by mediators and participants (client-side load balancing, model "Sequencer").

Why client-side: the model's clients know every sequencer endpoint (here: each through its own fault-proxy
link) and round-robin over the healthy ones; a subscription that fails, goes silent or stops progressing is
re-opened on the next endpoint from the last counter, and every event is validated (``EventValidator``), so a
fork or a gap is caught.

Why "stops progressing" and not only "silent" (issue 12, 4c): a sequencer that lost its database keeps the
subscription open and keeps sending heartbeats, but serves nothing; a read timeout never fires. A subscription
progresses when it delivers an event or a heartbeat shows a higher safe watermark (a healthy instance's safe
watermark moves with its peers' keep-alives, so it rises on every heartbeat even when nothing is sent). After
``seq_client_timeout`` without progress the subscription has failed if the sequencer says it does not serve
(heartbeat ``serving: false``: its reader is failing) or another sequencer is further (its safe watermark is
above the highest this subscription showed). If every sequencer is stuck at the same point (e.g. a dead instance
still marked online holds every safe watermark back until its peers mark it offline), moving would not help,
and the client stays.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from harness.sut.common.config import Timers
from harness.sut.common.log import log
from harness.sut.sequencer.pure import EventValidator


class NotSequenced(Exception):
    """The send will never be sequenced (max-sequencing-time passed)."""


class SubscriptionStalled(ConnectionError):
    """The subscription is open but no longer progresses, and another sequencer would do better."""


@dataclass
class _Progress:
    """What one subscription has shown: when it last progressed, the highest safe watermark it carried, and
    whether the sequencer said in its last heartbeat that it serves."""

    since: float
    watermark: int | None = None
    serving: bool = True
    asked_peers: float = 0.0

    def saw(self, line: dict[str, Any], now: float) -> None:
        wm = line.get("safe_watermark")
        risen = isinstance(wm, int) and (self.watermark is None or wm > self.watermark)
        if risen:
            self.watermark = wm
        if line.get("heartbeat"):
            self.serving = line.get("serving") is not False   # a sequencer that does not say is taken at its word
            if risen:
                self.since = now
        else:   # an event is progress whatever its watermark
            self.serving = True
            self.since = now


def _url(endpoint: str) -> str:
    return endpoint if endpoint.startswith("http") else f"http://{endpoint}"


class SequencerClient:
    def __init__(self, endpoints: list[str] | tuple[str, ...], member: str, timers: Timers, *,
                 resubscribe: bool = True) -> None:
        if not endpoints:
            raise ValueError("no sequencer endpoints configured (SEQUENCER_ENDPOINTS)")
        self.endpoints = [_url(e) for e in endpoints]
        self.member = member
        self.t = timers
        self._rr = 0
        self._down_until: dict[str, float] = {}
        self.session: aiohttp.ClientSession | None = None
        self.current: str | None = None    # endpoint of the live subscription
        self.resubscribe = resubscribe     # False only with the ``no_resubscribe`` bug

    async def __aenter__(self) -> SequencerClient:
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    def _session(self) -> aiohttp.ClientSession:
        if self.session is None:
            self.session = aiohttp.ClientSession()
        return self.session

    def _pick(self) -> str:
        """Next endpoint in round-robin order, preferring those not recently failed."""
        now = time.monotonic()
        for _ in range(len(self.endpoints)):
            ep = self.endpoints[self._rr % len(self.endpoints)]
            self._rr += 1
            if self._down_until.get(ep, 0) <= now:
                return ep
        ep = self.endpoints[self._rr % len(self.endpoints)]
        self._rr += 1
        return ep

    def _mark_down(self, ep: str, seconds: float = 1.0) -> None:
        self._down_until[ep] = time.monotonic() + seconds

    async def _peer_ahead(self, current: str, watermark: int | None) -> str | None:
        """Another endpoint (not marked down) that serves with a safe watermark above ``watermark``: where a
        stalled subscription should go. None if no peer answers so or none is further (all are stuck)."""
        now = time.monotonic()
        peers = [ep for ep in self.endpoints if ep != current and self._down_until.get(ep, 0) <= now]

        async def probe(ep: str) -> str | None:
            try:
                async with self._session().get(f"{ep}/v1/time",
                                               timeout=aiohttp.ClientTimeout(total=self.t.seq_send_timeout)) as r:
                    if r.status != 200:
                        return None
                    data = await r.json()
            except asyncio.CancelledError:
                raise
            except Exception:
                return None
            wm = data.get("safe_watermark")
            if data.get("serving") is not False and isinstance(wm, int) and (watermark is None or wm > watermark):
                return f"{ep} serves at safe watermark {wm} > {watermark}"
            return None
        for found in await asyncio.gather(*(probe(ep) for ep in peers)):
            if found is not None:
                return found
        return None

    async def _stalled(self, ep: str, progress: _Progress) -> str | None:
        """Why the subscription on ``ep`` has failed although lines still arrive (None: it has not). Judged
        after ``seq_client_timeout`` without progress; peers are asked at most once per that period."""
        now = time.monotonic()
        limit = self.t.seq_client_timeout
        if now - progress.since < limit:
            return None
        if not progress.serving:
            return f"no progress for {now - progress.since:.1f}s and the sequencer reports NOT_SERVING"
        if now - progress.asked_peers < limit:
            return None
        progress.asked_peers = now
        ahead = await self._peer_ahead(ep, progress.watermark)
        if ahead is not None:
            return f"no progress for {now - progress.since:.1f}s while {ahead}"
        return None

    async def send(self, recipients: list[str], payload: Any, *, max_sequencing_time: int,
                   message_id: str | None = None) -> dict[str, Any]:
        """Send until sequenced; retried over endpoints with the same message id (idempotent on the sequencer)."""
        body = {"sender": self.member, "recipients": recipients, "payload": payload,
                "message_id": message_id or uuid.uuid4().hex, "max_sequencing_time": max_sequencing_time}
        delay = 0.05
        while True:
            if time.time_ns() // 1000 > max_sequencing_time + 1_000_000:
                raise NotSequenced(f"max sequencing time passed for {body['message_id']}")
            ep = self._pick()
            try:
                async with self._session().post(f"{ep}/v1/send", json=body,
                                                timeout=aiohttp.ClientTimeout(total=self.t.seq_send_timeout)) as r:
                    data = await r.json()
                    if r.status == 200:
                        return data
                    if r.status == 409:
                        raise NotSequenced(data.get("error", "rejected"))
                    self._mark_down(ep)
            except NotSequenced:
                raise
            except asyncio.CancelledError:
                raise
            except Exception:
                self._mark_down(ep)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def events(self, validator: EventValidator) -> AsyncIterator[dict[str, Any]]:
        """Validated events of this member, forever, re-subscribing on another endpoint after any failure."""
        first = True
        failures = 0
        while True:
            ep = self._pick()
            if not first and not self.resubscribe:   # BUG no_resubscribe: a lost subscription is final
                log("sequencer_subscription_abandoned", level="warning", member=self.member)
                return
            if not first:
                validator.resubscribed()
            first = False
            from_counter = validator.next_from_counter
            try:
                timeout = aiohttp.ClientTimeout(total=None, connect=self.t.seq_send_timeout,
                                                sock_read=self.t.seq_client_timeout)
                async with self._session().get(f"{ep}/v1/subscribe", timeout=timeout,
                                               params={"member": self.member,
                                                       "from_counter": str(from_counter)}) as r:
                    if r.status != 200:
                        raise ConnectionError(f"subscribe answered {r.status}")
                    self.current = ep
                    failures = 0
                    log("sequencer_subscribed", sequencer=ep, from_counter=from_counter)
                    progress = _Progress(since=time.monotonic())
                    async for line in r.content:
                        if not line.strip():
                            continue
                        ev = json.loads(line)
                        progress.saw(ev, time.monotonic())
                        if not ev.get("heartbeat") and validator.accept(ev):
                            yield ev
                        why = await self._stalled(ep, progress)
                        if why is not None:
                            raise SubscriptionStalled(why)
                    raise ConnectionError("subscription ended")
            except asyncio.CancelledError:
                raise
            except SubscriptionStalled as exc:
                self.current = None
                self._mark_down(ep, self.t.seq_client_timeout)
                failures += 1
                log("sequencer_subscription_stalled", level="warning", sequencer=ep, reason=str(exc))
                await asyncio.sleep(min(0.05 * failures, 0.5))
            except (aiohttp.ClientError, ConnectionError, TimeoutError, ValueError) as exc:
                self.current = None
                self._mark_down(ep)
                failures += 1
                if failures == 1 or failures % 50 == 0:
                    log("sequencer_subscription_lost", level="warning", sequencer=ep, error=repr(exc),
                        failures=failures)
                await asyncio.sleep(min(0.05 * failures, 0.5))


class EventFeed:
    """Runs a subscription in the background and hands out batches, so a node processes many events per
    DB transaction (the subscription keeps reading while a batch commits)."""

    def __init__(self, client: SequencerClient, validator: EventValidator, max_batch: int = 200) -> None:
        self.client = client
        self.validator = validator
        self.max_batch = max_batch
        self.queue: asyncio.Queue[dict[str, Any] | BaseException] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for ev in self.client.events(self.validator):
                self.queue.put_nowait(ev)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:   # fork / invalid stream: surfaced to the consumer as fatal
            self.queue.put_nowait(exc)

    async def next_batch(self) -> list[dict[str, Any]]:
        items = [await self.queue.get()]
        while len(items) < self.max_batch and not self.queue.empty():
            items.append(self.queue.get_nowait())
        for it in items:
            if isinstance(it, BaseException):
                raise it
        return items  # type: ignore[return-value]

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.client.close()
