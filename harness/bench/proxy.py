"""``ha-chaos bench proxy``: what the fault proxy costs, measured side by side with a direct loopback connection.

Why side by side in one run: absolute round-trip times on a shared 2-core machine drift by tens of percent from
minute to minute; the *difference* between the proxied and the direct path, measured in interleaved blocks against
the same upstream, is what the targets are about (overhead p50 <= 0.3 ms, p99 <= 2 ms, bulk >= 100 MB/s,
500 concurrent connections held). The proxy and the upstream each run as their own process, as in the topology,
so the client's measuring loop does not share an interpreter with either.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from harness.errors import HarnessError

TARGETS = {"overhead_p50_ms": 0.3, "overhead_p99_ms": 2.0, "bulk_mb_s": 100.0}


# -- the upstream process: echo on one port, counting sink on another ------------------------------------------
class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


class _Sink(asyncio.Protocol):
    """Reads an 8-byte length, then that many bytes, then answers one byte: a bulk transfer with an end marker."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.header = b""
        self.remaining: int | None = None

    def data_received(self, data: bytes) -> None:
        if self.remaining is None:
            self.header += data
            if len(self.header) < 8:
                return
            self.remaining = struct.unpack("!Q", self.header[:8])[0]
            data = self.header[8:]
        self.remaining -= len(data)
        if self.remaining <= 0:
            self.transport.write(b"k")
            self.remaining = None
            self.header = b""


async def _upstream_main(echo_port: int, sink_port: int) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_server(_Echo, "127.0.0.1", echo_port, backlog=2048)
    await loop.create_server(_Sink, "127.0.0.1", sink_port, backlog=128)
    print("ready", flush=True)
    await asyncio.Event().wait()


# -- measuring --------------------------------------------------------------------------------------------------
@dataclass
class PathFigures:
    rtt_p50_ms: float
    rtt_p99_ms: float
    bulk_mb_s: float
    connections_held: int
    connect_all_s: float


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _rtts(sock: socket.socket, n: int, payload: bytes) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        sock.sendall(payload)
        got = 0
        while got < len(payload):
            got += len(sock.recv(65536))
        out.append((time.perf_counter() - start) * 1000.0)
    return out


def _bulk_mb_s(port: int, total: int) -> float:
    block = b"\xab" * (1 << 20)
    with _connect(port) as sock:
        start = time.perf_counter()
        sock.sendall(struct.pack("!Q", total))
        sent = 0
        while sent < total:
            chunk = block[: min(len(block), total - sent)]
            sock.sendall(chunk)
            sent += len(chunk)
        if sock.recv(1) != b"k":
            raise HarnessError("bulk transfer: the sink did not confirm", "re-run the benchmark")
        return total / (time.perf_counter() - start) / 1e6


async def _hold(port: int, count: int, hold_s: float) -> tuple[int, float]:
    """Open ``count`` connections, keep them all open ``hold_s``, and count how many still echo."""
    start = time.perf_counter()
    conns = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in range(count)))
    connect_s = time.perf_counter() - start

    async def ping(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"p")
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(1), 10) == b"p"

    await asyncio.gather(*(ping(r, w) for r, w in conns))
    await asyncio.sleep(hold_s)
    alive = await asyncio.gather(*(ping(r, w) for r, w in conns), return_exceptions=True)
    for _, writer in conns:
        writer.close()
    return sum(1 for ok in alive if ok is True), connect_s


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _wait_ready(proc: subprocess.Popen[str], what: str, check: Any) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise HarnessError(f"{what} exited with {proc.returncode}", "run it by hand to see its error")
        try:
            if check():
                return
        except (OSError, HarnessError):
            pass
        time.sleep(0.05)
    raise HarnessError(f"{what} did not come up within 20 s", "check the machine's load and free ports")


def run_bench(rtt_samples: int, bulk_mb: int, connections: int, hold_s: float) -> dict[str, Any]:
    from harness.faultproxy.server import raise_fd_limit
    from harness.faults.proxy_client import FaultProxyClient

    raise_fd_limit()
    echo_port, sink_port, api_port = _free_port(), _free_port(), _free_port()
    upstream = subprocess.Popen([sys.executable, "-m", "harness.bench.proxy", "--upstream",
                                 str(echo_port), str(sink_port)], stdout=subprocess.PIPE, text=True)
    proxy_proc = subprocess.Popen([sys.executable, "-m", "harness.faultproxy", "--host", "127.0.0.1",
                                   "--port", str(api_port), "--log-level", "warning"],
                                  stdout=subprocess.DEVNULL)
    try:
        assert upstream.stdout is not None
        if upstream.stdout.readline().strip() != "ready":
            raise HarnessError("bench upstream did not start", "run the benchmark again")
        client = FaultProxyClient(f"http://127.0.0.1:{api_port}", timeout=5)
        _wait_ready(proxy_proc, "fault proxy", lambda: client.version() is not None)
        echo_proxy = client.create_proxy("bench_echo", "127.0.0.1:0", f"127.0.0.1:{echo_port}")
        sink_proxy = client.create_proxy("bench_sink", "127.0.0.1:0", f"127.0.0.1:{sink_port}")
        ports = {"direct": (echo_port, sink_port),
                 "proxied": (int(echo_proxy.listen.rsplit(":", 1)[1]), int(sink_proxy.listen.rsplit(":", 1)[1]))}

        payload = b"x" * 64
        samples: dict[str, list[float]] = {"direct": [], "proxied": []}
        socks = {path: _connect(p[0]) for path, p in ports.items()}
        for sock in socks.values():
            _rtts(sock, 200, payload)  # warm-up
        block = 100
        for _ in range(max(1, rtt_samples // block)):
            for path, sock in socks.items():
                samples[path].extend(_rtts(sock, block, payload))
        for sock in socks.values():
            sock.close()

        bulk: dict[str, list[float]] = {"direct": [], "proxied": []}
        for _ in range(3):
            for path, p in ports.items():
                bulk[path].append(_bulk_mb_s(p[1], bulk_mb << 20))

        held: dict[str, tuple[int, float]] = {}
        for path, p in ports.items():
            held[path] = asyncio.run(_hold(p[0], connections, hold_s))

        figures = {path: PathFigures(rtt_p50_ms=statistics.median(samples[path]),
                                     rtt_p99_ms=_percentile(samples[path], 0.99),
                                     bulk_mb_s=statistics.median(bulk[path]),
                                     connections_held=held[path][0], connect_all_s=held[path][1])
                   for path in ports}
    finally:
        for proc in (proxy_proc, upstream):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    d, p = figures["direct"], figures["proxied"]
    overhead = {"overhead_p50_ms": p.rtt_p50_ms - d.rtt_p50_ms, "overhead_p99_ms": p.rtt_p99_ms - d.rtt_p99_ms}
    return {
        "settings": {"rtt_samples": len(samples["proxied"]), "payload_bytes": len(payload),
                     "bulk_mb": bulk_mb, "bulk_runs": 3, "connections": connections, "hold_s": hold_s,
                     "load_average_1m": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()},
        "direct": asdict(d), "proxied": asdict(p), **overhead,
        "targets": TARGETS,
        "meets_targets": {
            "overhead_p50_ms": overhead["overhead_p50_ms"] <= TARGETS["overhead_p50_ms"],
            "overhead_p99_ms": overhead["overhead_p99_ms"] <= TARGETS["overhead_p99_ms"],
            "bulk_mb_s": p.bulk_mb_s >= TARGETS["bulk_mb_s"],
            "connections_held": p.connections_held == connections,
        },
    }


def _print_table(result: dict[str, Any]) -> None:
    d, p = result["direct"], result["proxied"]
    s = result["settings"]
    rows = [
        (f"RTT p50 ({s['payload_bytes']} B, {s['rtt_samples']} samples)", f"{d['rtt_p50_ms']:.3f} ms",
         f"{p['rtt_p50_ms']:.3f} ms", f"+{result['overhead_p50_ms']:.3f} ms (target <= 0.3)"),
        ("RTT p99", f"{d['rtt_p99_ms']:.3f} ms", f"{p['rtt_p99_ms']:.3f} ms",
         f"+{result['overhead_p99_ms']:.3f} ms (target <= 2)"),
        (f"bulk ({s['bulk_mb']} MB, median of 3)", f"{d['bulk_mb_s']:.0f} MB/s", f"{p['bulk_mb_s']:.0f} MB/s",
         "target >= 100 MB/s"),
        (f"connections held {s['hold_s']:.0f} s", f"{d['connections_held']}/{s['connections']}",
         f"{p['connections_held']}/{s['connections']}",
         f"opened in {d['connect_all_s']:.2f} s direct, {p['connect_all_s']:.2f} s proxied"),
    ]
    print(f"{'':38} {'direct':>12} {'proxied':>12}  overhead / target")
    for name, a, b, c in rows:
        print(f"{name:38} {a:>12} {b:>12}  {c}")
    print(f"machine: {s['cpus']} CPUs, 1-minute load average {s['load_average_1m']} (p99 suffers first under load)")
    missed = [k for k, ok in result["meets_targets"].items() if not ok]
    print("targets: all met" if not missed else f"targets missed: {', '.join(missed)}")


def _cmd(args: argparse.Namespace) -> int:
    result = run_bench(args.rtt_samples, args.bulk_mb, args.connections, args.hold)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_table(result)
    return 0


def register(bench_subparsers: Any) -> None:
    parser = bench_subparsers.add_parser(
        "proxy", help="fault proxy vs direct loopback: RTT p50/p99, bulk throughput, concurrent connections")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--rtt-samples", type=int, default=2000, help="round trips per path (default 2000)")
    parser.add_argument("--bulk-mb", type=int, default=64, help="MB per bulk run (default 64)")
    parser.add_argument("--connections", type=int, default=500, help="concurrent connections (default 500)")
    parser.add_argument("--hold", type=float, default=2.0, help="seconds to hold them open (default 2)")
    parser.set_defaults(func=_cmd)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--upstream":
        asyncio.run(_upstream_main(int(sys.argv[2]), int(sys.argv[3])))
    else:
        print("usage: python -m harness.bench.proxy --upstream ECHO_PORT SINK_PORT", file=sys.stderr)
        sys.exit(2)
