"""The Ledger API over HTTP/JSON (port 7500, listening on the active replica only).

Streams are NDJSON over chunked HTTP, read from the DB from an exclusive offset and then woken by the indexer
after each commit, so a client that resumes from offset X (on any replica) gets exactly the elements after X.
When the replica turns passive, open streams end with ``{"error": "SYNC_SERVICE_BECAME_PASSIVE"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from harness.sut.participant.node import ParticipantNode


KEYS = {"p_completions": "completion_offset", "p_transactions": "offset"}


class StreamHub:
    """Wakes stream handlers after commits and keeps the latest committed elements in memory, so that streams
    which are caught up are served without a DB query; carries ``early`` completions for ``ack_before_durable``.

    Why a version counter: a handler reads the version *before* it queries and waits only if nothing was
    committed since; a bare condition variable lost every commit that happened while the handler was querying
    or writing, and the stream then lagged until its 1 s heartbeat.

    Why the memory is safe: elements are published right after their transaction committed, and offsets are
    handed out under the ``p_state`` row lock, so a committed offset implies every lower one is committed. A
    handler takes elements from memory only as a dense run starting right after its cursor; if the next one is
    not there although a higher one was published (published out of order, evicted, or from before this active
    period), it reads the DB as before.
    """

    TAIL = 4096

    def __init__(self) -> None:
        self.version = 0
        self._changed = asyncio.Event()
        self.passive = False
        self.early: list[dict[str, Any]] = []
        self.tails: dict[str, dict[int, bytes]] = {t: {} for t in KEYS}
        self.high: dict[str, int] = {t: 0 for t in KEYS}
        self.valid = False    # memory is used only while this replica is active (set by ``reset``)

    def reset(self, completion_offset: int, tx_offset: int) -> None:
        """On becoming active: everything up to these offsets is in the DB, nothing is in memory yet."""
        self.tails = {t: {} for t in KEYS}
        self.high = {"p_completions": completion_offset, "p_transactions": tx_offset}
        self.valid = True

    def publish(self, completions: list[dict[str, Any]], transactions: list[dict[str, Any]]) -> None:
        """Elements of a committed transaction (call ``notify`` afterwards)."""
        for table, items in (("p_completions", completions), ("p_transactions", transactions)):
            tail, key = self.tails[table], KEYS[table]
            for body in items:
                off = body[key]
                tail[off] = _line(body)
                if off > self.high[table]:
                    self.high[table] = off
            while len(tail) > self.TAIL:
                del tail[next(iter(tail))]

    def take(self, table: str, cursor: int) -> list[tuple[int, bytes]] | None:
        """The committed elements after ``cursor`` from memory (a dense run, maybe empty if nothing was committed
        after it), or None: the DB must be read."""
        if not self.valid:
            return None
        tail = self.tails[table]
        out: list[tuple[int, bytes]] = []
        nxt = cursor + 1
        while nxt in tail:
            out.append((nxt, tail[nxt]))
            nxt += 1
        if out or cursor >= self.high[table]:
            return out
        return None

    async def notify(self) -> None:
        self.version += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait(self, seen: int, timeout: float) -> None:
        """Return at once if something was committed after version ``seen``, else on the next commit."""
        if self.version != seen:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)


def _line(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


def ledger_app(node: ParticipantNode) -> web.Application:
    async def submit(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "INVALID_ARGUMENT", "reason": "body is not JSON"}, status=400)
        status, answer = await node.submit(body)
        return web.json_response(answer, status=status)

    async def stream(request: web.Request, table: str, key: str) -> web.StreamResponse:
        if node.read_pool is None or node.election.role != "active":
            return web.json_response({"error": "NODE_IS_PASSIVE_REPLICA"}, status=503)
        try:
            cursor = int(request.query.get("from_offset", "0"))
        except ValueError:
            return web.json_response({"error": "INVALID_ARGUMENT", "reason": "from_offset"}, status=400)
        if "stream_resume_inclusive" in node.cfg.bugs and cursor > 0:   # BUG: resumes AT the offset, not after it
            cursor -= 1
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        hub = node.hub
        try:
            while True:
                if hub.passive or node.read_pool is None:
                    await resp.write(_line({"error": "SYNC_SERVICE_BECAME_PASSIVE", "replica": node.cfg.replica}))
                    break
                if table == "p_completions" and hub.early:       # BUG ack_before_durable: not yet committed
                    for c in [c for c in hub.early if c["completion_offset"] > cursor]:
                        await resp.write(_line({**c, "early": True}))
                        cursor = c["completion_offset"]
                seen = hub.version
                rows = hub.take(table, cursor)
                if rows is None:
                    try:
                        rows = [(r["off"], r["body"].encode() + b"\n") for r in await node.read_pool.fetch(
                            f"select {key} as off, body from {table} where {key} > $1 order by {key} limit 500",
                            cursor)]
                    except Exception:
                        rows = []
                        await asyncio.sleep(0.2)
                for off, line in rows:
                    await resp.write(line)
                    cursor = off
                if len(rows) < 500:
                    await hub.wait(seen, 1.0)
                    if not rows:
                        await resp.write(_line({"heartbeat": True, "replica": node.cfg.replica}))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return resp

    async def completions(request: web.Request) -> web.StreamResponse:
        return await stream(request, "p_completions", "completion_offset")

    async def transactions(request: web.Request) -> web.StreamResponse:
        return await stream(request, "p_transactions", "tx_offset")

    async def ledger_end(_: web.Request) -> web.Response:
        if node.read_pool is None:
            return web.json_response({"error": "NODE_IS_PASSIVE_REPLICA"}, status=503)
        r = await node.read_pool.fetchrow("select tx_offset, completion_offset from p_state where id = 1")
        return web.json_response({"offset": r["tx_offset"], "completion_offset": r["completion_offset"],
                                  "replica": node.cfg.replica})

    async def parties(_: web.Request) -> web.Response:
        return web.json_response({"participant": node.cfg.node, "parties": sorted(node.cfg.hosted_parties),
                                  "party_map": node.cfg.party_map})

    app = web.Application()
    app.add_routes([web.post("/v1/commands/submit", submit), web.get("/v1/completions", completions),
                    web.get("/v1/transactions", transactions), web.get("/v1/ledger_end", ledger_end),
                    web.get("/v1/parties", parties)])
    return app
