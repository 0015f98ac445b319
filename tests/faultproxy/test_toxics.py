"""Each toxic's observable effect, measured from a client through the proxy (the issue's acceptance figures).

Timing assertions use medians of several round trips against a baseline taken on the same connection in the same
test, so a loaded 2-core machine shifts both; the tolerances are the issue's (+-5 ms latency, +-15 % bandwidth).
"""

from __future__ import annotations

import socket
import statistics
import time

import pytest

from harness.faults.proxy_client import FaultProxyClient
from tests.faultproxy.conftest import SEED, in_project
from tests.faultproxy.fp_support import (
    closed_or_reset,
    connect,
    median_rtt_ms,
    paired_added_ms,
    pattern,
    read_exactly,
    read_until_closed,
    rtt_ms,
    settle,
)

pytestmark = pytest.mark.unit


@pytest.fixture
def twin(make_proxy, echo_server):
    """A toxic-free proxy to the same upstream: its round trips are the interleaved baseline."""
    proxy = make_proxy(echo_server.addr)
    with connect(proxy.listen) as sock:
        rtt_ms(sock)
        yield sock


def _added_ms(sock, twin, samples: int = 7) -> float:
    return statistics.median(paired_added_ms(sock, twin, samples))


def test_latency_applies_to_live_connection_within_5ms(client: FaultProxyClient, make_proxy, echo_server, twin):
    proxy = make_proxy(echo_server.addr)
    with connect(proxy.listen) as sock:
        rtt_ms(sock)
        client.add_toxic(proxy.name, "latency", attributes={"latency": 100})
        added = settle(lambda: _added_ms(sock, twin), lambda v: abs(v - 100) <= 5)
        assert abs(added[-1] - 100) <= 5, f"latency 100 ms added {added} ms"
        client.remove_toxic(proxy.name, "latency_downstream")
        removed = settle(lambda: _added_ms(sock, twin), lambda v: abs(v) <= 5)
        assert abs(removed[-1]) <= 5, removed


def test_latency_both_directions_add_up(client: FaultProxyClient, make_proxy, echo_server, twin):
    proxy = make_proxy(echo_server.addr)
    client.add_toxic(proxy.name, "latency", stream="upstream", attributes={"latency": 40})
    client.add_toxic(proxy.name, "latency", stream="downstream", attributes={"latency": 60})
    with connect(proxy.listen) as sock:
        rtt_ms(sock)
        added = settle(lambda: _added_ms(sock, twin), lambda v: abs(v - 100) <= 5)
    assert abs(added[-1] - 100) <= 5, f"40+60 ms added {added} ms"


def test_jitter_stays_within_bounds_and_varies(client: FaultProxyClient, make_proxy, echo_server, twin):
    proxy = make_proxy(echo_server.addr)
    with connect(proxy.listen) as sock:
        rtt_ms(sock)
        client.add_toxic(proxy.name, "latency", attributes={"latency": 60, "jitter": 30})
        runs: list[list[float]] = []

        def outliers() -> float:
            runs.append(paired_added_ms(sock, twin, 15))
            return sum(not 25 <= s <= 95 for s in runs[-1])

        counts = settle(outliers, lambda n: n <= 1)  # one scheduling hiccup per run tolerated
    assert counts[-1] <= 1, runs
    assert max(runs[-1]) - min(runs[-1]) >= 10, f"jitter 30 ms but samples barely vary: {runs[-1]}"


def test_update_toxic_changes_live_connection(client: FaultProxyClient, make_proxy, echo_server, twin):
    proxy = make_proxy(echo_server.addr)
    client.add_toxic(proxy.name, "latency", name="lat", attributes={"latency": 30})
    with connect(proxy.listen) as sock:
        rtt_ms(sock)
        before = settle(lambda: _added_ms(sock, twin, 5), lambda v: abs(v - 30) <= 5)
        assert abs(before[-1] - 30) <= 5, before
        updated = client.update_toxic(proxy.name, "lat", attributes={"latency": 80})
        assert updated.attributes == {"latency": 80, "jitter": 0}
        after = settle(lambda: _added_ms(sock, twin, 5), lambda v: abs(v - 80) <= 5)
        assert abs(after[-1] - 80) <= 5, after


def test_toxicity_update_switches_a_live_connection(client: FaultProxyClient, make_proxy, echo_server):
    proxy = make_proxy(echo_server.addr)
    client.add_toxic(proxy.name, "latency", name="sw", toxicity=0.0, attributes={"latency": 100})
    with connect(proxy.listen) as sock:
        rtt_ms(sock)
        assert median_rtt_ms(sock, 3) < 50
        client.update_toxic(proxy.name, "sw", toxicity=1.0)
        assert median_rtt_ms(sock, 3) > 90


def test_toxicity_zero_never_applies(client: FaultProxyClient, make_proxy, echo_server):
    proxy = make_proxy(echo_server.addr)
    client.add_toxic(proxy.name, "latency", toxicity=0.0, attributes={"latency": 100})
    with connect(proxy.listen) as sock:
        assert median_rtt_ms(sock, 5) < 50


@pytest.mark.skipif(not in_project(), reason="upstream's -seed does not make draws reproducible")
def test_toxicity_draws_are_a_function_of_seed_proxy_toxic_ordinal(client, make_proxy, echo_server):
    from harness.faultproxy.rng import toxicity_draw

    proxy = make_proxy(echo_server.addr, name="seeded_draws")  # fixed name: a fixed expected pattern
    client.add_toxic(proxy.name, "latency", name="half", toxicity=0.5, attributes={"latency": 60})
    observed, expected = [], []
    for ordinal in range(1, 13):
        with connect(proxy.listen) as sock:
            rtt_ms(sock)  # the first round trip also waits for the proxy's upstream connect
            observed.append(median_rtt_ms(sock, 3) > 30)
        expected.append(toxicity_draw(SEED, proxy.name, "half", ordinal) < 0.5)
    assert observed == expected
    assert 0 < sum(observed) < len(observed)


def test_bandwidth_within_15_percent(client: FaultProxyClient, make_proxy, source_server):
    proxy = make_proxy(source_server.addr)
    client.add_toxic(proxy.name, "bandwidth", attributes={"rate": 2000})  # KB/s = 2,000,000 B/s
    n = 3_000_000
    with connect(proxy.listen, timeout=20) as sock:
        start = time.perf_counter()
        sock.sendall(f"{n}\n".encode())
        data = read_exactly(sock, n)
        elapsed = time.perf_counter() - start
    assert data == pattern(n)
    rate = n / elapsed
    assert abs(rate - 2_000_000) <= 0.15 * 2_000_000, f"{rate:.0f} B/s for rate 2000 KB/s"


def test_bandwidth_zero_stalls_until_removed(client: FaultProxyClient, make_proxy, echo_server):
    proxy = make_proxy(echo_server.addr)
    client.add_toxic(proxy.name, "bandwidth", name="stall", attributes={"rate": 0})
    with connect(proxy.listen) as sock:
        sock.sendall(b"held")
        sock.settimeout(0.3)
        with pytest.raises(socket.timeout):
            sock.recv(10)
        client.remove_toxic(proxy.name, "stall")
        sock.settimeout(5)
        assert read_exactly(sock, 4) == b"held"


def test_reset_peer_gives_client_econnreset(client: FaultProxyClient, make_proxy, echo_server):
    proxy = make_proxy(echo_server.addr)
    client.add_toxic(proxy.name, "reset_peer", attributes={"timeout": 0})
    with connect(proxy.listen) as sock:
        sock.sendall(b"x")
        sock.settimeout(5)
        with pytest.raises(ConnectionResetError):
            while sock.recv(100):
                pass


def test_timeout_zero_delivers_nothing_and_does_not_close(client: FaultProxyClient, make_proxy, echo_server):
    proxy = make_proxy(echo_server.addr)
    with connect(proxy.listen) as sock:
        rtt_ms(sock)
        client.add_toxic(proxy.name, "timeout", name="hole", attributes={"timeout": 0})
        sock.sendall(b"lost")
        sock.settimeout(0.5)
        with pytest.raises(socket.timeout):
            sock.recv(10)  # neither data nor EOF
        sock.sendall(b"still open")
        with pytest.raises(socket.timeout):
            sock.recv(10)
        client.remove_toxic(proxy.name, "hole")  # upstream's cleanup closes what the toxic held
        assert closed_or_reset(sock) in ("eof", "reset")
    with connect(proxy.listen) as sock:
        assert rtt_ms(sock) < 50


def test_timeout_closes_after_delay(client: FaultProxyClient, make_proxy, echo_server):
    proxy = make_proxy(echo_server.addr)
    client.add_toxic(proxy.name, "timeout", attributes={"timeout": 300})
    with connect(proxy.listen) as sock:
        start = time.perf_counter()
        assert closed_or_reset(sock) == "eof"
        elapsed = (time.perf_counter() - start) * 1000
    assert 300 - 5 <= elapsed <= 300 + 200, elapsed


def test_limit_data_closes_after_exactly_n_bytes(client: FaultProxyClient, make_proxy, source_server):
    proxy = make_proxy(source_server.addr)
    client.add_toxic(proxy.name, "limit_data", attributes={"bytes": 1000})
    with connect(proxy.listen) as sock:
        sock.sendall(b"5000\n")
        data, _ = read_until_closed(sock)
    assert data == pattern(5000)[:1000]


def test_slicer_chunk_sizes_within_bounds(client: FaultProxyClient, make_proxy, source_server):
    proxy = make_proxy(source_server.addr)
    client.add_toxic(proxy.name, "slicer",
                     attributes={"average_size": 100, "size_variation": 20, "delay": 10_000})
    sizes: list[int] = []
    with connect(proxy.listen) as sock:
        sock.sendall(b"2000\n")
        data = read_exactly(sock, 2000, sizes)
    assert data == pattern(2000)
    # Slices are at most average+variation; TCP may still merge two on a busy machine, so allow a few.
    within = [s for s in sizes if s <= 120]
    assert len(sizes) >= 12, sizes
    assert len(within) >= 0.9 * len(sizes), sizes
    assert 40 <= statistics.median(sizes) <= 120, sizes


def test_slow_close_delays_the_close(client: FaultProxyClient, make_proxy, bye_server):
    proxy = make_proxy(bye_server.addr)
    with connect(proxy.listen) as sock:
        assert read_exactly(sock, 3) == b"bye"
        start = time.perf_counter()
        assert closed_or_reset(sock) == "eof"
        baseline = (time.perf_counter() - start) * 1000
    client.add_toxic(proxy.name, "slow_close", attributes={"delay": 300})
    with connect(proxy.listen) as sock:
        assert read_exactly(sock, 3) == b"bye"
        start = time.perf_counter()
        assert closed_or_reset(sock) == "eof"
        delayed = (time.perf_counter() - start) * 1000
    assert baseline < 100
    assert 300 - 5 <= delayed <= 300 + 250, delayed


def test_disable_drops_live_connections_and_enable_listens_again(client: FaultProxyClient, make_proxy,
                                                                 echo_server):
    proxy = make_proxy(echo_server.addr)
    sock = connect(proxy.listen)
    try:
        rtt_ms(sock)
        client.update_proxy(proxy.name, enabled=False)
        assert closed_or_reset(sock) in ("eof", "reset")
    finally:
        sock.close()
    with pytest.raises(ConnectionRefusedError):
        connect(proxy.listen).close()
    again = client.update_proxy(proxy.name, enabled=True)
    assert again.listen == proxy.listen
    with connect(proxy.listen) as sock2:
        assert rtt_ms(sock2) < 50


def test_changing_upstream_reroutes_new_connections(client: FaultProxyClient, make_proxy, echo_server):
    from tests.faultproxy.fp_support import TcpServer, echo

    other = TcpServer(lambda s: echo(s, prefix=b"B:"))
    try:
        proxy = make_proxy(echo_server.addr)
        old = connect(proxy.listen)
        rtt_ms(old)
        client.update_proxy(proxy.name, upstream=other.addr)
        assert closed_or_reset(old) in ("eof", "reset")
        old.close()
        with connect(proxy.listen) as sock:
            sock.sendall(b"hi")
            assert read_exactly(sock, 4) == b"B:hi"
    finally:
        other.close()


@pytest.mark.skipif(not in_project(), reason="upstream's -seed does not make jitter reproducible")
def test_jitter_sequence_is_a_function_of_seed_proxy_toxic_ordinal(client, make_proxy, echo_server, twin):
    from harness.faultproxy.rng import toxic_rng

    proxy = make_proxy(echo_server.addr)
    rng = toxic_rng(SEED, proxy.name, "jit", 1)
    rng.random()  # the toxicity draw comes first
    expected = [50 + rng.randrange(80) - 40 for _ in range(8)]

    seen: list[list[int]] = []

    def matches() -> float:
        # Re-adding the toxic restarts its generator: same (seed, proxy, toxic, ordinal), same sequence.
        client.add_toxic(proxy.name, "latency", name="jit", attributes={"latency": 50, "jitter": 40})
        measured = paired_added_ms(sock, twin, 8)  # one chunk per round trip, one draw per chunk
        client.remove_toxic(proxy.name, "jit")
        seen.append([round(m) for m in measured])
        return sum(abs(m - e) <= 5 for m, e in zip(measured, expected, strict=True))

    with connect(proxy.listen) as sock:  # connection ordinal 1 of this proxy
        rtt_ms(sock)
        results = settle(matches, lambda n: n >= 6)
    # A different sequence would miss by tens of ms almost everywhere (6 of 8 by chance: p < 2e-4).
    assert results[-1] >= 6, (results, seen, expected)


@pytest.mark.skipif(not in_project(), reason="upstream's slicer panics with size_variation 0 (rand.Intn(0))")
def test_toxics_compose_in_the_order_added(client: FaultProxyClient, make_proxy, source_server):
    """slicer then limit_data cuts the 6-7 byte slices at 20 bytes; limit_data then slicer slices 20 bytes."""
    slicer = {"average_size": 10, "size_variation": 0, "delay": 50_000}
    sizes_by_order = {}
    for order in (("slicer", "limit_data"), ("limit_data", "slicer")):
        proxy = make_proxy(source_server.addr)
        for kind in order:
            client.add_toxic(proxy.name, kind, attributes=slicer if kind == "slicer" else {"bytes": 20})
        with connect(proxy.listen) as sock:
            sock.sendall(b"100\n")
            data, sizes = read_until_closed(sock)
        assert data == pattern(100)[:20]
        sizes_by_order[order] = sizes
    # 100 bytes halve to 6/7-byte slices; 20 bytes halve to two 10-byte slices.
    assert max(sizes_by_order[("slicer", "limit_data")]) <= 7, sizes_by_order
    assert sizes_by_order[("limit_data", "slicer")] in ([10, 10], [20]), sizes_by_order
