"""The sequencer client used by mediators and participants (client-side load balancing, model "Sequencer").

Why client-side: the model's clients know every sequencer endpoint (here: each through its own fault-proxy
link) and round-robin over the healthy ones; a subscription that fails or goes silent is re-opened on the next
endpoint from the last counter, and every event is validated (``EventValidator``), so a fork or a gap is caught.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from harness.sut.common.config import Timers
from harness.sut.common.log import log
from harness.sut.sequencer.pure import EventValidator


class NotSequenced(Exception):
    """The send will never be sequenced (max-sequencing-time passed)."""


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

    def _mark_down(self, ep: str) -> None:
        self._down_until[ep] = time.monotonic() + 1.0

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
                    async for line in r.content:
                        if not line.strip():
                            continue
                        ev = json.loads(line)
                        if ev.get("heartbeat"):
                            continue
                        if validator.accept(ev):
                            yield ev
                    raise ConnectionError("subscription ended")
            except asyncio.CancelledError:
                raise
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
