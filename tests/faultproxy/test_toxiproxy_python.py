"""toxiproxy-python 0.1.1 drives the server unchanged: create, toxify, disable, destroy.

Its quirks (see shared environment notes): host/port are class globals on ``APIConsumer`` - set them, and restore
them afterwards; its default listen ``127.0.0.1:0`` is fine on loopback, but we pass ``127.0.0.1:PORT`` explicitly
as the harness must.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest
from toxiproxy import Toxiproxy
from toxiproxy.api import APIConsumer

from tests.faultproxy.fp_support import closed_or_reset, connect, free_port, paired_added_ms, rtt_ms, settle

pytestmark = pytest.mark.unit


@pytest.fixture
def toxiproxy(fp_url: str) -> Iterator[Toxiproxy]:
    saved = (APIConsumer.host, APIConsumer.port)
    url = urlparse(fp_url)
    server = Toxiproxy()
    server.update_api_consumer(url.hostname, url.port)
    try:
        yield server
    finally:
        APIConsumer.host, APIConsumer.port = saved


def test_toxiproxy_python_full_cycle(toxiproxy: Toxiproxy, echo_server):
    assert toxiproxy.running()
    assert b"version" in toxiproxy.version()
    listen = f"127.0.0.1:{free_port()}"
    proxy = toxiproxy.create(upstream=echo_server.addr, name="tpy", listen=listen)
    try:
        assert proxy.listen == listen and proxy.enabled is True
        assert "tpy" in toxiproxy.proxies()
        twin = toxiproxy.create(upstream=echo_server.addr, name="tpy_twin", listen=f"127.0.0.1:{free_port()}")
        with connect(listen) as sock, connect(twin.listen) as base:
            rtt_ms(sock)
            rtt_ms(base)
            proxy.add_toxic(type="latency", attributes={"latency": 80})
            added = settle(lambda: statistics.median(paired_added_ms(sock, base, 5)), lambda v: abs(v - 80) <= 5)
            assert abs(added[-1] - 80) <= 5, added
            assert set(proxy.toxics()) == {"latency_downstream"}
            assert proxy.get_toxic("latency_downstream").attributes["latency"] == 80
            proxy.destroy_toxic("latency_downstream")
            removed = settle(lambda: statistics.median(paired_added_ms(sock, base, 5)), lambda v: abs(v) <= 5)
            assert abs(removed[-1]) <= 5, removed
            proxy.disable()
            assert closed_or_reset(sock) in ("eof", "reset")
        with pytest.raises(ConnectionRefusedError):
            connect(listen).close()
        proxy.enable()
        with proxy.down(), pytest.raises(ConnectionRefusedError):
            connect(listen).close()
        with connect(listen) as sock:
            assert rtt_ms(sock) < 50
        assert toxiproxy.reset()
    finally:
        assert toxiproxy.destroy(proxy)
        twin_proxy = toxiproxy.get_proxy("tpy_twin")
        if twin_proxy is not None:
            twin_proxy.destroy()
    assert toxiproxy.get_proxy("tpy") is None


def test_toxiproxy_python_populate(toxiproxy: Toxiproxy, echo_server):
    spec = [{"name": "tpy_pop", "upstream": echo_server.addr, "listen": f"127.0.0.1:{free_port()}"}]
    try:
        created = toxiproxy.populate(spec)
        assert [p.name for p in created] == ["tpy_pop"]
        assert toxiproxy.populate(spec) == []  # already there, unchanged
    finally:
        existing = toxiproxy.get_proxy("tpy_pop")
        assert existing is not None and toxiproxy.destroy(existing)
    assert "tpy_pop" not in toxiproxy.proxies()
