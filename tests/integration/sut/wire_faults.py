"""Wire-level DB faults at an exact protocol moment, for the SUT integration tests (no timing races).

Why at the wire: the faults these tests need happen between two packets. A *lost commit reply* is a transaction
the server committed whose answer never reaches the client (the connection drops right after COMMIT); a
*silently dropped session* is one the server ended (e.g. its keepalive gave up on the client) while the client,
idle, has not noticed. Cutting a link at a random time only hits such moments by luck; a forwarder that reads the
PostgreSQL protocol hits them every time.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from sut_support import Forwarder, PgServer

#: ReadyForQuery with transaction status "idle": the server finished a transaction (committed it, if it wrote)
#: and now waits for the next command. Nothing is sent after it until the client asks.
READY_IDLE = b"Z\x00\x00\x00\x05I"


@dataclass
class _Link:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    #: what the client sent since the server was last idle, i.e. the current transaction (kept while armed)
    sent: bytearray = field(default_factory=bytearray)
    silenced: bool = False


@dataclass
class _Drop:
    marker: bytes
    commit: bool
    done: asyncio.Event = field(default_factory=asyncio.Event)


class WireForwarder(Forwarder):
    """A ``Forwarder`` (cut/heal/refuse_new as there) that can also lose a transaction's reply after the server
    committed it (``lose_reply``) or end one session at the server while its client notices nothing
    (``silence``). Links are keyed by the forwarder's upstream port, which is the session's ``client_port`` in
    ``pg_stat_activity`` (``upstream_port_of``)."""

    def __init__(self, upstream_port: int) -> None:
        super().__init__(upstream_port)
        self.links: dict[int, _Link] = {}
        self._drop: _Drop | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    def lose_reply(self, marker: bytes, *, commit: bool) -> asyncio.Event:
        """Arm once: the first transaction whose client bytes contain ``marker`` (and the text ``COMMIT`` if
        ``commit``: an explicit transaction, not a single-statement one) is executed and committed by the server,
        then its connection drops before the client gets the answer. The returned event is set when that
        happened."""
        self._drop = _Drop(marker, commit)
        return self._drop.done

    def silence(self, upstream_port: int) -> None:
        """End one session at the server (its locks are released at once) while the client's side of the
        connection stays open and silent: the client learns nothing until a query of it times out."""
        link = self.links[upstream_port]
        link.silenced = True
        self._writers -= {link.client, link.server}   # ``cut`` must not wake the client up either
        link.server.transport.abort()

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if self.cut_now:
            w.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            w.transport.abort()
            return
        link = _Link(w, uw)
        port = uw.get_extra_info("sockname")[1]
        self.links[port] = link
        self._writers |= {w, uw}

        async def upstream() -> None:
            try:
                while data := await r.read(65536):
                    if link.silenced:
                        continue          # the server side is gone; the client must not notice
                    if self._drop is not None:
                        link.sent += data
                    uw.write(data)
                    await uw.drain()
            except Exception:
                pass
            finally:
                uw.transport.abort()
                if not link.silenced:
                    w.transport.abort()

        async def downstream() -> None:
            tail = b""
            try:
                while data := await ur.read(65536):
                    seen, tail = tail + data, data[-len(READY_IDLE):]
                    if READY_IDLE in seen:
                        if self._lose_this(link):
                            return        # the server committed; the answer is never delivered
                        # cleared before forwarding: once the client has the answer it may send the next command
                        link.sent.clear()
                    w.write(data)
                    await w.drain()
            except Exception:
                pass
            finally:
                uw.transport.abort()
                if not link.silenced:
                    w.transport.abort()

        try:
            await asyncio.gather(upstream(), downstream())
        finally:
            self._writers -= {w, uw}
            self.links.pop(port, None)

    def _lose_this(self, link: _Link) -> bool:
        d = self._drop
        if d is None or d.marker not in link.sent or (d.commit and b"COMMIT" not in link.sent):
            return False
        self._drop = None
        d.done.set()
        return True

    async def close(self) -> None:
        for link in list(self.links.values()):
            if link.silenced:
                link.client.transport.abort()
        await super().close()
        if self._handlers:   # every link is aborted: let the handlers end rather than be cancelled at loop close
            await asyncio.wait(set(self._handlers), timeout=2)


async def upstream_port_of(pg: PgServer, db: str, pid: int) -> int:
    """The ``WireForwarder`` link (its upstream port) that carries the server session ``pid``."""
    rows = await pg.query(db, "select client_port from pg_stat_activity where pid = $1", pid)
    assert rows, f"no session with pid {pid}"
    return int(rows[0]["client_port"])
