"""Proxies: a listener, its live connections and its toxic lists; and the collection the API manages.

Why our own listening socket instead of ``loop.create_server(host, port)``: asyncio binds every address a name
resolves to (``localhost`` -> two sockets, two different ports for ``:0``), while Toxiproxy (Go's ``net.Listen``)
binds exactly one and reports it back as ``listen``. We resolve, bind one socket and report ``host:port`` the way
Go prints it (``127.0.0.1:41234``, ``[::]:8080``).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from typing import Any

from harness.faultproxy.errors import (
    PROXY_EXISTS,
    PROXY_NOT_FOUND,
    TOXIC_EXISTS,
    TOXIC_NOT_FOUND,
    ApiError,
)
from harness.faultproxy.link import Connection, Endpoint
from harness.faultproxy.toxics import DIRECTIONS, ToxicSpec, apply_update

log = logging.getLogger("faultproxy.proxy")


def split_hostport(addr: str, what: str) -> tuple[str, int]:
    """Parse ``host:port`` / ``[v6]:port`` / ``:port`` like Go's ``net.SplitHostPort``, or raise a 400."""
    host, sep, port_text = addr.rpartition(":")
    if not sep:
        raise ApiError(f"{what} {addr!r}: missing port in address", 400)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ApiError(f"{what} {addr!r}: too many colons in address", 400)
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ApiError(f"{what} {addr!r}: invalid port {port_text!r}", 400)
    return host, int(port_text)


def _format_addr(sockaddr: tuple[Any, ...], family: int) -> str:
    host, port = sockaddr[0], sockaddr[1]
    return f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"


async def bind_listener(listen: str) -> socket.socket:
    host, port = split_hostport(listen, "listen")
    loop = asyncio.get_running_loop()
    if host == "":
        candidates: list[tuple[int, tuple[Any, ...]]] = [(socket.AF_INET6, ("::", port)),
                                                         (socket.AF_INET, ("0.0.0.0", port))]
    else:
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except socket.gaierror as exc:
            raise ApiError(f"listen tcp {listen}: {exc.strerror}", 400) from exc
        infos.sort(key=lambda info: info[0] != socket.AF_INET)  # Go prefers IPv4 for names
        candidates = [(info[0], info[4]) for info in infos]
    last: OSError | None = None
    for family, sockaddr in candidates:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and host == "":
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(sockaddr)
            sock.listen(1024)
            sock.setblocking(False)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
            if exc.errno == errno.EADDRINUSE:
                break
    assert last is not None
    status = 409 if last.errno == errno.EADDRINUSE else 400
    raise ApiError(f"listen tcp {listen}: bind: {last.strerror.lower() if last.strerror else last}", status)


class Proxy:
    """One named proxy: ``listen`` -> ``upstream``, with toxics per direction in the order they were added."""

    def __init__(self, name: str, listen: str, upstream: str, seed: int, metrics: Any) -> None:
        self.name = name
        self.listen = listen
        self.upstream = upstream
        self.enabled = False
        self.seed = seed
        self.metrics = metrics
        self.toxics: dict[str, list[ToxicSpec]] = {d: [] for d in DIRECTIONS}
        self.connections: set[Connection] = set()
        self.ordinal = 0  # connections accepted over the proxy's life; survives disable/enable
        self._server: asyncio.Server | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "listen": self.listen, "upstream": self.upstream,
                "enabled": self.enabled, "toxics": [t.to_json() for t in self.toxic_list()]}

    # -- lifecycle -----------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.enabled:
            return
        upstream_addr = split_hostport(self.upstream, "upstream")
        sock = await bind_listener(self.listen)
        self.listen = _format_addr(sock.getsockname(), sock.family)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: self._accepted(upstream_addr), sock=sock,
                                                 backlog=1024)
        self.enabled = True
        log.info("started proxy name=%s listen=%s upstream=%s", self.name, self.listen, self.upstream)

    def _accepted(self, upstream_addr: tuple[str, int]) -> Endpoint:
        endpoint = _ClientEndpoint(self, upstream_addr)
        return endpoint

    async def stop(self) -> None:
        """Close the listener and every live connection (upstream's ``stop``)."""
        if not self.enabled:
            return
        self.enabled = False
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self.connections):
            conn.abort()
        log.info("terminated proxy name=%s listen=%s upstream=%s", self.name, self.listen, self.upstream)

    async def update(self, listen: str, upstream: str, enabled: bool) -> None:
        split_hostport(upstream, "upstream")
        if listen != self.listen or upstream != self.upstream:
            await self.stop()
            self.listen, self.upstream = listen, upstream
        if enabled and not self.enabled:
            await self.start()
        elif not enabled:
            await self.stop()

    def forget(self, conn: Connection) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            self.metrics.connection_closed(self, conn)

    # -- toxics --------------------------------------------------------------------------------------------
    def toxic_list(self) -> list[ToxicSpec]:
        return [t for d in DIRECTIONS for t in self.toxics[d]]

    def find_toxic(self, name: str) -> ToxicSpec | None:
        return next((t for t in self.toxic_list() if t.name == name), None)

    def get_toxic(self, name: str) -> ToxicSpec:
        spec = self.find_toxic(name)
        if spec is None:
            raise ApiError(TOXIC_NOT_FOUND, 404)
        return spec

    def add_toxic(self, spec: ToxicSpec) -> None:
        if self.find_toxic(spec.name) is not None:
            raise ApiError(TOXIC_EXISTS, 409)
        self.toxics[spec.direction].append(spec)
        for conn in list(self.connections):
            if conn.pipes:
                conn.pipes[spec.direction].add_stage(spec)

    def update_toxic(self, name: str, body: Any) -> ToxicSpec:
        old = self.get_toxic(name)
        new = apply_update(old, body)
        specs = self.toxics[old.direction]
        specs[specs.index(old)] = new
        for conn in list(self.connections):
            if conn.pipes:
                conn.pipes[new.direction].update_stage(new)
        return new

    def remove_toxic(self, name: str) -> None:
        spec = self.get_toxic(name)
        self.toxics[spec.direction].remove(spec)
        for conn in list(self.connections):
            if conn.pipes:
                conn.pipes[spec.direction].remove_stage(name)

    def reset_toxics(self) -> None:
        for spec in self.toxic_list():
            self.remove_toxic(spec.name)

    def note_applied(self, spec: ToxicSpec) -> None:
        self.metrics.toxic_applied(self, spec)


class _ClientEndpoint(Endpoint):
    """The accepted side: on accept, registers a connection and dials the upstream."""

    def __init__(self, proxy: Proxy, upstream_addr: tuple[str, int]) -> None:
        super().__init__()
        self.proxy = proxy
        self.upstream_addr = upstream_addr

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        proxy = self.proxy
        proxy.ordinal += 1
        conn = Connection(proxy, self, proxy.ordinal)
        proxy.connections.add(conn)
        proxy.metrics.connection_opened(proxy)
        conn.task = asyncio.get_running_loop().create_task(conn.open(self.upstream_addr))


class ProxyCollection:
    """All proxies by name. Mutations are serialised by one lock: starting a proxy awaits, requests don't."""

    def __init__(self, seed: int, metrics: Any) -> None:
        self.seed = seed
        self.metrics = metrics
        self.proxies: dict[str, Proxy] = {}
        self.lock = asyncio.Lock()

    def get(self, name: str) -> Proxy:
        proxy = self.proxies.get(name)
        if proxy is None:
            raise ApiError(PROXY_NOT_FOUND, 404)
        return proxy

    async def add(self, name: str, listen: str, upstream: str, enabled: bool) -> Proxy:
        if name in self.proxies:
            raise ApiError(PROXY_EXISTS, 409)
        proxy = Proxy(name, listen, upstream, self.seed, self.metrics)
        split_hostport(upstream, "upstream")
        if enabled:
            await proxy.start()
        self.proxies[name] = proxy
        return proxy

    async def add_or_replace(self, name: str, listen: str, upstream: str, enabled: bool) -> Proxy:
        """``/populate``: an identical proxy is kept as it is; a different one is stopped and replaced."""
        existing = self.proxies.get(name)
        if existing is not None:
            if existing.listen == listen and existing.upstream == upstream:
                return existing
            await existing.stop()
            del self.proxies[name]
        return await self.add(name, listen, upstream, enabled)

    async def remove(self, name: str) -> None:
        proxy = self.get(name)
        await proxy.stop()
        del self.proxies[name]

    async def clear(self) -> None:
        for name in list(self.proxies):
            await self.remove(name)
