"""Toxic stages: the per-connection, per-direction pieces of the data path that apply one toxic each.

Why one asyncio task per active stage, wired by queues: it mirrors upstream's goroutine-per-toxic chain, so toxics
compose in the same order with the same semantics (a latency stage pipelines chunks by their read time; a
bandwidth stage after it sees the delayed chunks). A stage whose toxicity draw says "not on this connection" runs
no task at all and hands chunks straight on, and a direction with no toxics at all bypasses stages entirely
(the fast path in ``link.py``).

Changing a live chain (add, update, remove) happens in one event-loop step: the stage's task is cancelled, the
chunk it was holding (``current``) and its queue are taken back synchronously and either re-queued (update) or
handed on (remove). Nothing is lost or reordered, which is what "toxics apply to existing connections" needs.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from harness.faultproxy.toxics import ToxicSpec

log = logging.getLogger("faultproxy.stages")


@dataclass(slots=True)
class Chunk:
    data: bytes
    ts: float  # loop time the chunk was read, moved forward by latency stages (upstream's Timestamp)


@dataclass(slots=True)
class Close:
    reset: bool = False  # True: close with SO_LINGER 0 (TCP RST), as reset_peer does


Item = Chunk | Close


class StageHost(Protocol):
    """What a stage needs from the direction it sits in."""

    def discard(self, nbytes: int) -> None: ...

    def applied(self, spec: ToxicSpec) -> None: ...


class ChunkQueue:
    """A deque with one waiter: cheaper than asyncio.Queue, and it can give items back to its front."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: deque[Item] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Item) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def push_front(self, items: list[Item]) -> None:
        self._items.extendleft(reversed(items))

    def drain(self) -> list[Item]:
        items = list(self._items)
        self._items.clear()
        return items

    async def get(self, deadline: float | None = None) -> tuple[Item | None, bool]:
        """Next item and whether we had to wait for it; ``None`` if ``deadline`` (loop time) passed first."""
        loop = asyncio.get_running_loop()
        waited = False
        while not self._items:
            if deadline is not None and loop.time() >= deadline:
                return None, waited
            waited = True
            fut: asyncio.Future[None] = loop.create_future()
            self._waiter = fut
            timer = loop.call_at(deadline, _wake, fut) if deadline is not None else None
            try:
                await fut
            finally:
                # A cancelled old task must not clear the waiter a restarted task has just installed.
                if self._waiter is fut:
                    self._waiter = None
                if timer is not None:
                    timer.cancel()
        return self._items.popleft(), waited


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _nowhere(item: Item) -> None:
    raise RuntimeError("stage output not wired")


class Stage:
    """One toxic on one direction of one connection."""

    def __init__(self, spec: ToxicSpec, rng: random.Random, host: StageHost) -> None:
        self.spec = spec
        self.rng = rng
        self.draw = rng.random()  # drawn once per connection per toxic; toxicity updates re-compare it
        self.host = host
        self.queue = ChunkQueue()
        self.out: Callable[[Item], None] = _nowhere
        self.current: Item | None = None
        self.task: asyncio.Task[None] | None = None
        self.done = False  # this stage has emitted a Close; everything after it is dropped
        self.state: dict[str, Any] = {}  # per-connection state that survives updates (limit_data, bandwidth)

    @property
    def active(self) -> bool:
        return self.draw < self.spec.toxicity

    # -- wiring -----------------------------------------------------------------------------------------
    def put(self, item: Item) -> None:
        if self.done:
            self._drop(item)
        elif self.task is None:
            self.out(item)
        else:
            self.queue.put(item)

    def start(self) -> None:
        if self.active and not self.done and self.task is None:
            self.task = asyncio.get_running_loop().create_task(RUNNERS[self.spec.type](self))
            self.task.add_done_callback(self._task_done)
            self.host.applied(self.spec)

    def stop(self) -> list[Item]:
        """Cancel the running toxic and return, in order, what it held and what was queued for it."""
        held: list[Item] = []
        if self.task is not None:
            self.task.cancel()
            self.task = None
        if self.current is not None:
            held.append(self.current)
            self.current = None
        held.extend(self.queue.drain())
        return held

    def update(self, spec: ToxicSpec) -> None:
        held = self.stop()
        self.spec = spec
        if self.done:
            for item in held:
                self._drop(item)
        elif self.active:
            self.queue.push_front(held)
            self.start()
        else:
            for item in held:
                self.out(item)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("toxic %s failed", self.spec.name, exc_info=task.exception())

    # -- helpers for runners -------------------------------------------------------------------------------
    async def next(self, deadline: float | None = None) -> tuple[Item | None, bool]:
        item, waited = await self.queue.get(deadline)
        self.current = item
        return item, waited

    def emit_current(self) -> None:
        item, self.current = self.current, None
        if item is not None:
            self.out(item)

    def drop_current(self) -> None:
        item, self.current = self.current, None
        if item is not None:
            self._drop(item)

    def finish(self, close: Close) -> None:
        """Emit a close downstream; from now on this stage swallows everything (upstream's stub.Close)."""
        self.drop_current()
        self.done = True
        self.out(close)
        for item in self.queue.drain():
            self._drop(item)

    def _drop(self, item: Item) -> None:
        if isinstance(item, Chunk):
            self.host.discard(len(item.data))


# -- the toxics ---------------------------------------------------------------------------------------------
async def run_latency(st: Stage) -> None:
    loop = asyncio.get_running_loop()
    while True:
        item, _ = await st.next()
        if isinstance(item, Close):
            st.finish(item)
            return
        assert isinstance(item, Chunk)
        attrs = st.spec.attributes
        delay = attrs["latency"]
        if attrs["jitter"] > 0:
            delay += st.rng.randrange(2 * attrs["jitter"]) - attrs["jitter"]
        wait = item.ts + delay / 1000.0 - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        item.ts = loop.time()  # a later latency stage adds its delay on top, as upstream's Timestamp.Add
        st.emit_current()


async def run_bandwidth(st: Stage) -> None:
    """Rate in KB/s (1 KB = 1000 bytes); big chunks leave in 100 ms slices; rate 0 holds data (a stall)."""
    loop = asyncio.get_running_loop()
    while True:
        item, waited = await st.next()
        if isinstance(item, Close):
            st.finish(item)
            return
        assert isinstance(item, Chunk)
        rate = st.spec.attributes["rate"]
        if rate <= 0:
            await loop.create_future()  # held until the toxic is updated or removed
        now = loop.time()
        t_free = st.state.get("t_free", now)
        # An idle link earns no credit; a busy one may catch up on timer lateness (at most 100 ms worth),
        # otherwise every oversleep would lower the effective rate.
        t_free = max(t_free, now if waited else now - 0.1)
        bytes_per_s = rate * 1000.0
        step = rate * 100
        while True:
            assert isinstance(st.current, Chunk)
            data = st.current.data
            piece = data[:step] if len(data) > step else data
            t_free += len(piece) / bytes_per_s
            st.state["t_free"] = t_free
            wait = t_free - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if len(data) > step:
                st.current = Chunk(data[step:], item.ts)
                st.out(Chunk(piece, item.ts))
            else:
                st.emit_current()
                break


async def run_slow_close(st: Stage) -> None:
    while True:
        item, _ = await st.next()
        if isinstance(item, Close):
            await asyncio.sleep(st.spec.attributes["delay"] / 1000.0)
            st.finish(item)
            return
        st.emit_current()


async def run_timeout(st: Stage) -> None:
    """Drop data; close after ``timeout`` ms without data (re-armed per chunk, as upstream); 0 = never close."""
    loop = asyncio.get_running_loop()
    ms = st.spec.attributes["timeout"]
    deadline = loop.time() + ms / 1000.0 if ms > 0 else None
    while True:
        item, _ = await st.next(deadline)
        if item is None:
            st.finish(Close())
            return
        if isinstance(item, Close):
            st.finish(item)
            return
        st.drop_current()
        if ms > 0:
            deadline = loop.time() + ms / 1000.0


async def run_reset_peer(st: Stage) -> None:
    """On the first input (data or close), wait ``timeout`` ms then reset the connection with a TCP RST."""
    await st.next()
    st.drop_current()
    await asyncio.sleep(st.spec.attributes["timeout"] / 1000.0)
    st.finish(Close(reset=True))


def slice_ends(size: int, average: int, variation: int, rng: random.Random) -> list[int]:
    """End offsets of the slices of a ``size``-byte chunk, upstream's recursive halving made iterative."""
    ends: list[int] = []
    stack = [(0, size)]
    while stack:
        start, end = stack.pop()
        if (end - start) - average <= variation:
            ends.append(end)
            continue
        mid = start + (end - start) // 2
        if variation > 0:
            mid += rng.randrange(2 * variation) - variation
        mid = min(max(mid, start + 1), end - 1)
        stack.append((mid, end))
        stack.append((start, mid))
    return ends


async def run_slicer(st: Stage) -> None:
    while True:
        item, _ = await st.next()
        if isinstance(item, Close):
            st.finish(item)
            return
        assert isinstance(item, Chunk)
        attrs = st.spec.attributes
        data, pos = item.data, 0
        for end in slice_ends(len(data), attrs["average_size"], attrs["size_variation"], st.rng):
            piece, pos = data[pos:end], end
            st.current = Chunk(data[pos:], item.ts) if pos < len(data) else None
            st.out(Chunk(piece, item.ts))
            if attrs["delay"] > 0:
                await asyncio.sleep(attrs["delay"] / 1_000_000.0)


async def run_limit_data(st: Stage) -> None:
    limit = st.spec.attributes["bytes"]
    while True:
        item, _ = await st.next()
        if isinstance(item, Close):
            st.finish(item)
            return
        assert isinstance(item, Chunk)
        sent = st.state.get("sent", 0)
        remaining = max(0, limit - sent)
        if remaining < len(item.data):
            st.host.discard(len(item.data) - remaining)
            item.data = item.data[:remaining]
        if item.data:
            st.state["sent"] = sent + len(item.data)
            st.emit_current()
        else:
            st.current = None
        if limit - st.state.get("sent", 0) <= 0:
            st.finish(Close())
            return


RUNNERS: dict[str, Callable[[Stage], Any]] = {
    "latency": run_latency,
    "bandwidth": run_bandwidth,
    "slow_close": run_slow_close,
    "timeout": run_timeout,
    "reset_peer": run_reset_peer,
    "slicer": run_slicer,
    "limit_data": run_limit_data,
}
