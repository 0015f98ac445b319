"""Running the fault proxy: the asyncio server object, and a background-thread runner for tests and benchmarks.

Why both: ``python -m harness.faultproxy`` owns its event loop and its signals; tests and ``ha-chaos bench proxy``
want a server they can start on a free loopback port and stop again without managing a subprocess.
"""

from __future__ import annotations

import asyncio
import logging
import random
import resource
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aiohttp import web

from harness.faultproxy.api import build_app, decode_body
from harness.faultproxy.errors import ApiError
from harness.faultproxy.metrics import Metrics
from harness.faultproxy.proxy import ProxyCollection

log = logging.getLogger("faultproxy")


def raise_fd_limit() -> int:
    """Lift the soft open-files limit to the hard one: every proxied connection costs two descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


class FaultProxyServer:
    """The HTTP API plus every proxy it manages, on the running event loop."""

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed if seed is not None else random.SystemRandom().randrange(2**63)
        self.metrics = Metrics()
        self.collection = ProxyCollection(self.seed, self.metrics)
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        app = build_app(self.collection, self.metrics)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((socket.gethostbyname(host) if family == socket.AF_INET else host, port))
        except OSError:
            sock.close()
            await self._runner.cleanup()
            raise
        sock.listen(128)
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        log.info("starting Toxiproxy-compatible HTTP server address=%s:%d seed=%d", host, self.port, self.seed)
        return self.port

    async def populate_file(self, path: Path) -> None:
        """``-config``: create proxies from a JSON file (the ``/populate`` body format)."""
        entries = decode_body(path.read_bytes())
        if not isinstance(entries, list):
            raise ApiError(f"{path}: expected a JSON array of proxies", 400)
        async with self.collection.lock:
            for entry in entries:
                await self.collection.add_or_replace(entry["name"], entry.get("listen", ""), entry["upstream"],
                                                     entry.get("enabled", True))
        log.info("populated proxies from file config=%s proxies=%d", path, len(entries))

    async def stop(self) -> None:
        await self.collection.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        log.info("stopped")


@contextmanager
def running_server(host: str = "127.0.0.1", port: int = 0, seed: int | None = None) -> Iterator[str]:
    """Run a server on its own event loop in a daemon thread; yields its base URL, stops it on exit."""
    loop = asyncio.new_event_loop()
    server = FaultProxyServer(seed)
    started = threading.Event()
    errors: list[BaseException] = []

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.start(host, port))
        except BaseException as exc:
            errors.append(exc)
            started.set()
            return
        started.set()
        loop.run_forever()
        loop.run_until_complete(server.stop())
        loop.close()

    thread = threading.Thread(target=main, name="faultproxy", daemon=True)
    thread.start()
    started.wait(30)
    if errors:
        raise errors[0]
    try:
        yield f"http://{host}:{server.port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)


