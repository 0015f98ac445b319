"""The data path: a proxied TCP connection as two sockets and two directions (``Pipe``) between them.

Why asyncio protocols rather than streams: ``data_received`` can write straight into the other transport, which is
what makes the no-toxic fast path cheap (one callback, one write, no task switch). When a direction has toxics,
chunks go through the stage chain in ``stages.py`` and come back to ``Pipe.deliver``.

Close semantics follow upstream's ``link.go``: when one side ends (EOF or error), the close travels through the
toxic chain after the data before it, and then the *other* socket is closed entirely (Toxiproxy does not keep
half-open connections); that close ends the opposite direction the same way. Back-pressure: a direction stops
reading its source while more than ``HIGH_WATER`` bytes sit in its toxics or the destination's send buffer is full.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from typing import TYPE_CHECKING

from harness.faultproxy.rng import toxic_rng
from harness.faultproxy.stages import Chunk, Close, Item, Stage
from harness.faultproxy.toxics import DOWNSTREAM, UPSTREAM, ToxicSpec

if TYPE_CHECKING:
    from harness.faultproxy.proxy import Proxy

log = logging.getLogger("faultproxy.link")

HIGH_WATER = 4 * 1024 * 1024
LOW_WATER = 1024 * 1024
CONNECT_TIMEOUT_S = 30.0


class Endpoint(asyncio.Protocol):
    """One socket of a proxied connection; it starts paused until both sides are wired."""

    def __init__(self, conn: Connection | None = None) -> None:
        self.conn = conn
        self.transport: asyncio.Transport | None = None
        self.out_pipe: Pipe | None = None  # the direction this socket feeds
        self.in_pipe: Pipe | None = None  # the direction that writes into this socket
        self.write_paused = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport's interface without subclassing it
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Go sets TCP_NODELAY on every TCP conn; without it small writes (and slicer slices) get coalesced.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Not pause_reading() here: on CPython 3.11.2 (Debian bookworm, the container runtime) a pause inside
        # connection_made() is undone when the selector transport registers its reader right after, and a
        # later resume_reading() is then a no-op, so wiring order is not reliable. Instead, bytes that arrive
        # before both sides are wired are held in ``early`` and fed on wiring (see ``wire``).
        self.early: list[bytes] = []
        self.early_eof = False

    def data_received(self, data: bytes) -> None:
        if self.out_pipe is not None:
            self.out_pipe.feed(data)
        else:
            self.early.append(data)

    def eof_received(self) -> bool:
        if self.out_pipe is not None:
            self.out_pipe.feed_eof()
        else:
            self.early_eof = True
        return True  # keep the socket open for the other direction until it is closed deliberately

    def wire(self) -> None:
        """Both sides are connected and ``out_pipe`` is set: feed what arrived before."""
        early, self.early = self.early, []
        for chunk in early:
            if self.out_pipe is not None:
                self.out_pipe.feed(chunk)
        if self.early_eof and self.out_pipe is not None:
            self.out_pipe.feed_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.out_pipe is not None:
            self.out_pipe.feed_eof()
        if self.conn is not None:
            self.conn.endpoint_closed()

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.in_pipe is not None:
            self.in_pipe.check_pressure()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.in_pipe is not None:
            self.in_pipe.check_pressure()

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def set_reading(self, on: bool) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            return
        if on:
            self.transport.resume_reading()
        else:
            self.transport.pause_reading()

    def close(self, reset: bool = False) -> None:
        if self.transport is None or self.closed:
            return
        if reset:
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.transport.abort()
        else:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()


class Pipe:
    """One direction: source socket -> toxic stages (in the order added) -> destination socket."""

    def __init__(self, conn: Connection, direction: str, src: Endpoint, dst: Endpoint) -> None:
        self.conn = conn
        self.direction = direction
        self.src = src
        self.dst = dst
        self.stages: list[Stage] = []
        self.buffered = 0  # bytes inside the stages
        self.received = 0
        self.sent = 0
        self.eof = False
        self.closed = False
        self.paused = False
        self._loop = asyncio.get_running_loop()

    # -- source side --------------------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        self.received += len(data)
        if not self.stages:
            if not self.closed:
                self.sent += len(data)
                self.dst.write(data)
            return
        self.buffered += len(data)
        self.stages[0].put(Chunk(data, self._loop.time()))
        self.check_pressure()

    def feed_eof(self) -> None:
        if self.eof:
            return
        self.eof = True
        if self.stages:
            self.stages[0].put(Close())
        else:
            self.deliver(Close())

    # -- destination side ----------------------------------------------------------------------------------
    def deliver(self, item: Item) -> None:
        if isinstance(item, Chunk):
            n = len(item.data)
            self.buffered -= n
            if not self.closed:
                self.sent += n
                self.dst.write(item.data)
            self.check_pressure()
            return
        if self.closed:
            return
        self.closed = True
        if item.reset:
            self.src.close(reset=True)
        self.dst.close(reset=item.reset)

    def discard(self, nbytes: int) -> None:
        self.buffered -= nbytes
        self.check_pressure()

    def applied(self, spec: ToxicSpec) -> None:
        self.conn.proxy.note_applied(spec)

    def check_pressure(self) -> None:
        if not self.paused and (self.buffered > HIGH_WATER or self.dst.write_paused):
            self.paused = True
            self.src.set_reading(False)
        elif self.paused and self.buffered <= LOW_WATER and not self.dst.write_paused:
            self.paused = False
            self.src.set_reading(True)

    # -- the chain -------------------------------------------------------------------------------------------
    def _rewire(self) -> None:
        for i, stage in enumerate(self.stages):
            stage.out = self.stages[i + 1].put if i + 1 < len(self.stages) else self.deliver

    def add_stage(self, spec: ToxicSpec) -> None:
        proxy = self.conn.proxy
        rng = toxic_rng(proxy.seed, proxy.name, spec.name, self.conn.ordinal)
        stage = Stage(spec, rng, self)
        self.stages.append(stage)
        self._rewire()
        stage.start()

    def update_stage(self, spec: ToxicSpec) -> None:
        for stage in self.stages:
            if stage.spec.name == spec.name:
                stage.update(spec)

    def remove_stage(self, name: str) -> None:
        for i, stage in enumerate(self.stages):
            if stage.spec.name != name:
                continue
            was_running = stage.task is not None
            held = stage.stop()
            self.stages.pop(i)
            if stage.spec.type == "timeout" and was_running:
                # Upstream's TimeoutToxic.Cleanup closes the stub: removing it ends the connections it held.
                for item in held:
                    stage._drop(item)
                stage.out(Close())
            else:
                for item in held:
                    stage.out(item)
            self._rewire()
            return

    def stop_stages(self) -> None:
        for stage in self.stages:
            stage.stop()
        self.stages = []


class Connection:
    """A client socket, its upstream socket, and the two directions between them."""

    def __init__(self, proxy: Proxy, client: Endpoint, ordinal: int) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream: Endpoint | None = None
        self.ordinal = ordinal
        self.pipes: dict[str, Pipe] = {}
        self.task: asyncio.Task[None] | None = None
        self.finished = False
        client.conn = self

    async def open(self, upstream_addr: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, up = await asyncio.wait_for(
                loop.create_connection(lambda: Endpoint(self), upstream_addr[0], upstream_addr[1]),
                CONNECT_TIMEOUT_S)
        except (TimeoutError, OSError) as exc:
            log.warning("proxy %s: unable to open connection to upstream %s: %s",
                        self.proxy.name, self.proxy.upstream, exc)
            self.client.close()
            self.endpoint_closed()
            return
        assert isinstance(up, Endpoint)
        self.upstream = up
        if self.client.closed or self.finished:
            up.abort()
            self.endpoint_closed()
            return
        self.pipes = {UPSTREAM: Pipe(self, UPSTREAM, self.client, up),
                      DOWNSTREAM: Pipe(self, DOWNSTREAM, up, self.client)}
        self.client.out_pipe = up.in_pipe = self.pipes[UPSTREAM]
        up.out_pipe = self.client.in_pipe = self.pipes[DOWNSTREAM]
        for direction, pipe in self.pipes.items():
            for spec in self.proxy.toxics[direction]:
                pipe.add_stage(spec)
        self.client.wire()
        up.wire()

    def endpoint_closed(self) -> None:
        if self.finished:
            return
        if self.client.closed and (self.upstream is None or self.upstream.closed):
            self.finished = True
            for pipe in self.pipes.values():
                pipe.stop_stages()
            self.proxy.forget(self)

    def abort(self) -> None:
        """Drop the connection now (disable, delete, upstream change): Go's conn.Close on both sockets."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
        for pipe in self.pipes.values():
            pipe.stop_stages()
            pipe.closed = True
        self.client.abort()
        if self.upstream is not None:
            self.upstream.abort()
        self.finished = True
        self.proxy.forget(self)
