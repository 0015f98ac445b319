"""TCP test servers and measuring helpers for the fault-proxy conformance suite (loopback only).

Why threads and blocking sockets: the measured effects are wall-clock ones (latency, bandwidth, close timing), and
a plain blocking client shares nothing with the server under test - which may be another process entirely.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import statistics
import threading
import time
from collections.abc import Callable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def hostport(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class TcpServer:
    """A loopback TCP server whose per-connection behaviour is a function of the socket."""

    def __init__(self, handle: Callable[[socket.socket], None]) -> None:
        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with contextlib.suppress(OSError):
                    handle(self.request)

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self.addr = f"127.0.0.1:{self.port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def echo(sock: socket.socket, prefix: bytes = b"") -> None:
    while True:
        data = sock.recv(65536)
        if not data:
            return
        sock.sendall(prefix + data if prefix else data)


def source(sock: socket.socket) -> None:
    """Read a decimal byte count and a newline, send that many bytes of a known pattern, stay open."""
    buf = b""
    while b"\n" not in buf:
        data = sock.recv(100)
        if not data:
            return
        buf += data
    sock.sendall(pattern(int(buf.split(b"\n")[0])))
    while sock.recv(65536):
        pass


def pattern(n: int) -> bytes:
    block = bytes(range(256))
    return (block * (n // 256 + 1))[:n]


def say_bye_and_close(sock: socket.socket) -> None:
    sock.sendall(b"bye")
    sock.shutdown(socket.SHUT_WR)
    time.sleep(0.05)


def connect(addr: str, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(hostport(addr), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def rtt_ms(sock: socket.socket, payload: bytes = b"ping") -> float:
    start = time.perf_counter()
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed during round trip")
        got += data
    return (time.perf_counter() - start) * 1000.0


def median_rtt_ms(sock: socket.socket, samples: int = 7) -> float:
    return statistics.median(rtt_ms(sock) for _ in range(samples))


def read_until_closed(sock: socket.socket, deadline_s: float = 10.0) -> tuple[bytes, list[int]]:
    """Everything until EOF, and the size of each recv (to see slicing)."""
    sock.settimeout(deadline_s)
    got, sizes = bytearray(), []
    while True:
        data = sock.recv(65536)
        if not data:
            return bytes(got), sizes
        got += data
        sizes.append(len(data))


def read_exactly(sock: socket.socket, n: int, sizes: list[int] | None = None) -> bytes:
    got = bytearray()
    while len(got) < n:
        data = sock.recv(n - len(got))
        if not data:
            raise ConnectionError(f"closed after {len(got)} of {n} bytes")
        got += data
        if sizes is not None:
            sizes.append(len(data))
    return bytes(got)


def wait_for(condition: Callable[[], bool], deadline_s: float = 5.0, what: str = "condition") -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {deadline_s}s waiting for {what}")


def closed_or_reset(sock: socket.socket, deadline_s: float = 5.0) -> str:
    """'eof', 'reset' or raises if the socket is still open and silent after the deadline."""
    sock.settimeout(deadline_s)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return "eof"
    except ConnectionResetError:
        return "reset"


def paired_added_ms(toxic_sock: socket.socket, base_sock: socket.socket, samples: int) -> list[float]:
    """Round trips through the toxic path minus interleaved ones through a toxic-free twin path.

    Interleaving makes both see the same machine load; on a shared 2-core box that load moves a plain round trip
    by several milliseconds from one second to the next.
    """
    out = []
    for _ in range(samples):
        before = rtt_ms(base_sock)
        toxic = rtt_ms(toxic_sock)
        after = rtt_ms(base_sock)
        out.append(toxic - min(before, after))  # a hiccup on one baseline round trip does not count
    return out


def settle(measure: Callable[[], float], ok: Callable[[float], bool], attempts: int = 3) -> list[float]:
    """Measure up to ``attempts`` times until ``ok``; returns every measurement (assert on the last one).

    A load spike can spoil one measurement; a toxic that does the wrong thing fails every attempt.
    """
    results: list[float] = []
    for _ in range(attempts):
        results.append(measure())
        if ok(results[-1]):
            break
    return results
