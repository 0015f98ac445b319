"""The sequencer client's stall detection (issue 12, 4c) against fake sequencers on 127.0.0.1.

A subscription that still delivers heartbeats but no longer progresses must be abandoned when the sequencer says
it does not serve, or when another sequencer is further; it must be kept when the stream is merely quiet (the
safe watermark rises) or when every sequencer is stuck at the same point (moving would not help).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from harness.sut.common.config import Timers
from harness.sut.sequencer.client import SequencerClient
from harness.sut.sequencer.pure import EventValidator, payload_hash

pytestmark = pytest.mark.unit

TIMERS = Timers(seq_client_timeout=0.4, seq_send_timeout=0.5)
BEAT = 0.05   # the fakes' heartbeat period: many heartbeats per stall period


@dataclass
class FakeSequencer:
    """``serving``: what its heartbeats and /v1/time say; ``moving``: whether its safe watermark rises;
    ``events``: served to a subscriber from counter 0, then heartbeats only."""

    name: str
    serving: bool = True
    moving: bool = False
    watermark: int = 1_000
    events: list[dict[str, Any]] = field(default_factory=list)
    subscribes: int = 0
    beats: int = 0
    runner: web.AppRunner | None = None
    url: str = ""

    async def start(self) -> FakeSequencer:
        app = web.Application()
        app.add_routes([web.get("/v1/subscribe", self._subscribe), web.get("/v1/time", self._time)])
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self

    def _wm(self) -> int:
        if self.moving:
            self.watermark += 1_000
        return self.watermark

    async def _time(self, _: web.Request) -> web.Response:
        return web.json_response({"now_us": 0, "safe_watermark": self._wm(), "serving": self.serving})

    async def _subscribe(self, request: web.Request) -> web.StreamResponse:
        self.subscribes += 1
        resp = web.StreamResponse()
        await resp.prepare(request)
        start = int(request.query.get("from_counter", "0"))
        for ev in self.events[start:]:
            await resp.write((json.dumps({**ev, "safe_watermark": self._wm(), "sequencer": self.name}) + "\n")
                             .encode())
        while True:
            await asyncio.sleep(BEAT)
            self.beats += 1
            await resp.write((json.dumps({"heartbeat": True, "safe_watermark": self._wm(),
                                          "serving": self.serving, "sequencer": self.name}) + "\n").encode())

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def events(n: int) -> list[dict[str, Any]]:
    out, prev = [], None
    for k in range(n):
        ts = 100 + k
        out.append({"counter": k, "ts": ts, "prev_ts": prev, "payload_hash": payload_hash({"k": k}),
                    "payload": {"k": k}, "sender": "s", "recipients": ["m"], "message_id": str(k)})
        prev = ts
    return out


async def until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        await asyncio.sleep(0.01)


def scenario(a: FakeSequencer, b: FakeSequencer,
             body: Callable[[SequencerClient, list[dict[str, Any]]], Awaitable[None]]) -> None:
    """The client subscribes as ``m`` with endpoints [a, b] (round robin starts at a) while ``body`` runs."""
    async def main() -> None:
        await a.start()
        await b.start()
        client = SequencerClient([a.url, b.url], "m", TIMERS)
        got: list[dict[str, Any]] = []

        async def collect() -> None:
            async for ev in client.events(EventValidator()):
                got.append(ev)
        task = asyncio.create_task(collect())
        try:
            await body(client, got)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await client.close()
            await a.stop()
            await b.stop()
    asyncio.run(main())


def test_a_sequencer_reporting_not_serving_is_left_for_a_healthy_one() -> None:
    """Heartbeats keep coming (no read timeout) but say NOT_SERVING and carry no progress: the client moves."""
    a = FakeSequencer("a", serving=False, events=events(1))
    b = FakeSequencer("b", moving=True, events=events(3))

    async def body(client: SequencerClient, got: list[dict[str, Any]]) -> None:
        await until(lambda: len(got) == 1 and client.current == a.url, 5, "subscribed to a")
        started = time.monotonic()
        await until(lambda: len(got) == 3, 5, "the events b serves")
        assert client.current == b.url and [e["counter"] for e in got] == [0, 1, 2]
        took = time.monotonic() - started
        assert TIMERS.seq_client_timeout <= took < 4 * TIMERS.seq_client_timeout, took
    scenario(a, b, body)


def test_a_stuck_sequencer_that_claims_to_serve_is_left_when_another_is_further() -> None:
    """Heartbeats say serving but the safe watermark stands still, while b's is higher: the client moves."""
    a = FakeSequencer("a", serving=True, events=events(1))
    b = FakeSequencer("b", moving=True, watermark=5_000, events=events(2))

    async def body(client: SequencerClient, got: list[dict[str, Any]]) -> None:
        await until(lambda: len(got) == 2, 5, "the event b serves")
        assert client.current == b.url
    scenario(a, b, body)


def test_a_quiet_stream_whose_watermark_rises_is_kept() -> None:
    """No event for many stall periods, but every heartbeat shows a higher safe watermark: it progresses."""
    a = FakeSequencer("a", moving=True, events=events(1))
    b = FakeSequencer("b", moving=True, watermark=10**9, events=events(1))

    async def body(client: SequencerClient, got: list[dict[str, Any]]) -> None:
        await until(lambda: len(got) == 1, 5, "subscribed to a")
        # a's heartbeats spanning three stall periods (each one progress): the client must not have moved
        await until(lambda: a.beats * BEAT > 3 * TIMERS.seq_client_timeout, 5, "three stall periods of heartbeats")
        assert client.current == a.url and a.subscribes == 1 and b.subscribes == 0
    scenario(a, b, body)


def test_every_sequencer_stuck_at_the_same_point_keeps_the_subscription() -> None:
    """A dead instance still marked online holds every safe watermark back: all are stuck alike and serving;
    moving would only churn, so the client stays until the watermark moves again."""
    a = FakeSequencer("a", events=events(1))
    b = FakeSequencer("b", events=events(1))

    async def body(client: SequencerClient, got: list[dict[str, Any]]) -> None:
        await until(lambda: len(got) == 1, 5, "subscribed to a")
        await until(lambda: a.beats * BEAT > 3 * TIMERS.seq_client_timeout, 5, "three stall periods of heartbeats")
        assert client.current == a.url and a.subscribes == 1 and b.subscribes == 0
    scenario(a, b, body)
