"""The per-node health/admin HTTP server (port 8080 on every node).

Why a separate server from the APIs: a passive replica runs no Ledger API listener, yet load balancers and the
harness must still ask it for readiness (503), liveness (200), its role and the DB evidence.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from harness.sut.common import clock
from harness.sut.common.log import log


@dataclass
class HealthSource:
    """What the health server asks the node. ``ready``/``live`` may raise: that is a 500 (check failed)."""

    ready: Callable[[], bool]
    live: Callable[[], bool]
    status: Callable[[], Awaitable[dict[str, Any]]]
    evidence: Callable[[], Awaitable[dict[str, Any]]]
    set_passive: Callable[[], Awaitable[None]] | None = None


def _probe(check: Callable[[], bool]) -> web.Response:
    try:
        ok = check()
    except Exception as exc:
        return web.json_response({"status": "UNKNOWN", "error": repr(exc)}, status=500)
    return web.json_response({"status": "SERVING" if ok else "NOT_SERVING"}, status=200 if ok else 503)


def health_app(src: HealthSource) -> web.Application:
    async def ready(_: web.Request) -> web.Response:
        return _probe(src.ready)

    async def live(_: web.Request) -> web.Response:
        return _probe(src.live)

    async def status(_: web.Request) -> web.Response:
        # the node's wall clock with every status: how a clock fault is seen to have taken (harness.faults.kinds)
        return web.json_response({**await src.status(), "clock_us": clock.wall_us()})

    async def evidence(_: web.Request) -> web.Response:
        try:
            return web.json_response(await src.evidence())
        except Exception as exc:
            return web.json_response({"error": repr(exc)}, status=503)

    async def set_passive(_: web.Request) -> web.Response:
        if src.set_passive is None:
            return web.json_response({"error": "not an active/passive node"}, status=400)
        await src.set_passive()
        return web.json_response({"ok": True})

    app = web.Application()
    app.add_routes([web.get("/health", ready), web.get("/health/ready", ready), web.get("/health/live", live),
                    web.get("/admin/status", status), web.get("/admin/evidence", evidence),
                    web.post("/admin/set_passive", set_passive)])
    return app


async def start_site(app: web.Application, host: str, port: int, what: str) -> web.AppRunner:
    """Start an aiohttp app; returns the runner (``await runner.cleanup()`` stops the listener)."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    log("listening", what=what, host=host, port=port)
    return runner
