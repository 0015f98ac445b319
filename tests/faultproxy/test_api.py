"""The HTTP API against upstream Toxiproxy's contract: routes, field names, defaults, status codes, ordering."""

from __future__ import annotations

import pytest
import requests

from harness.faults.proxy_client import FaultProxyClient, ProxyConflict, ProxyNotFound
from tests.faultproxy.conftest import expect_status, in_project
from tests.faultproxy.fp_support import closed_or_reset, connect, rtt_ms

pytestmark = pytest.mark.unit


def test_version_is_json(fp_url: str, client: FaultProxyClient):
    resp = requests.get(fp_url + "/version", timeout=5)
    assert resp.status_code == 200
    assert resp.json()["version"].startswith("2.")
    assert client.version() == resp.json()["version"]


def test_create_proxy_fields_defaults_and_status(fp_url: str, client: FaultProxyClient, echo_server):
    name = "api_create"
    resp = requests.post(fp_url + "/proxies", json={"name": name, "listen": "127.0.0.1:0",
                                                    "upstream": echo_server.addr}, timeout=5)
    try:
        expect_status(resp, 201)
        body = resp.json()
        assert set(body) == {"name", "listen", "upstream", "enabled", "toxics"}
        assert body["enabled"] is True and body["toxics"] == [] and body["upstream"] == echo_server.addr
        assert body["listen"].startswith("127.0.0.1:") and not body["listen"].endswith(":0")
        dup = requests.post(fp_url + "/proxies", json={"name": name, "listen": "127.0.0.1:0",
                                                       "upstream": echo_server.addr}, timeout=5)
        expect_status(dup, 409)
        assert dup.json()["error"] == "proxy already exists"
        assert requests.get(f"{fp_url}/proxies/{name}", timeout=5).json() == body
        assert requests.get(f"{fp_url}/proxies", timeout=5).json()[name] == body
    finally:
        assert requests.delete(f"{fp_url}/proxies/{name}", timeout=5).status_code == 204
    missing = requests.get(f"{fp_url}/proxies/{name}", timeout=5)
    expect_status(missing, 404)
    assert missing.json()["error"] == "proxy not found"


def test_create_disabled_proxy_does_not_listen(client: FaultProxyClient, make_proxy, echo_server):
    proxy = make_proxy(echo_server.addr, enabled=False)
    assert proxy.enabled is False
    assert client.proxy(proxy.name).enabled is False


def test_toxic_defaults_and_status_codes(fp_url: str, make_proxy, echo_server):
    proxy = make_proxy(echo_server.addr)
    base = f"{fp_url}/proxies/{proxy.name}/toxics"
    resp = requests.post(base, json={"type": "latency"}, timeout=5)
    expect_status(resp, 200)
    toxic = resp.json()
    assert toxic == {"attributes": {"latency": 0, "jitter": 0}, "name": "latency_downstream",
                     "type": "latency", "stream": "downstream", "toxicity": 1}
    expect_status(requests.post(base, json={"type": "latency"}, timeout=5), 409)
    assert requests.get(f"{base}/latency_downstream", timeout=5).json() == toxic
    nf = requests.get(f"{base}/nope", timeout=5)
    expect_status(nf, 404)
    assert nf.json()["error"] == "toxic not found"
    # PATCH merges attributes and toxicity; POST is the deprecated spelling of the same update
    patched = requests.patch(f"{base}/latency_downstream", json={"attributes": {"jitter": 5}}, timeout=5)
    expect_status(patched, 200)
    assert patched.json()["attributes"] == {"latency": 0, "jitter": 5}
    posted = requests.post(f"{base}/latency_downstream", json={"toxicity": 0.5}, timeout=5).json()
    assert posted["toxicity"] == 0.5 and posted["attributes"] == {"latency": 0, "jitter": 5}
    assert requests.delete(f"{base}/latency_downstream", timeout=5).status_code == 204
    expect_status(requests.delete(f"{base}/latency_downstream", timeout=5), 404)


@pytest.mark.parametrize("toxic_type, attributes", [
    ("latency", {"latency": 0, "jitter": 0}),
    ("bandwidth", {"rate": 0}),
    ("slow_close", {"delay": 0}),
    ("timeout", {"timeout": 0}),
    ("reset_peer", {"timeout": 0}),
    ("limit_data", {"bytes": 0}),
])
def test_every_toxic_type_has_upstream_attribute_names(client, make_proxy, echo_server, toxic_type, attributes):
    proxy = make_proxy(echo_server.addr)
    toxic = client.add_toxic(proxy.name, toxic_type, stream="upstream")
    assert toxic.name == f"{toxic_type}_upstream"
    assert toxic.attributes == attributes


def test_toxics_listed_per_direction_in_order_added(client: FaultProxyClient, make_proxy, echo_server):
    proxy = make_proxy(echo_server.addr)
    client.add_toxic(proxy.name, "latency", name="a", stream="downstream")
    client.add_toxic(proxy.name, "limit_data", name="b", stream="upstream", attributes={"bytes": 10**9})
    client.add_toxic(proxy.name, "slow_close", name="c", stream="downstream")
    client.add_toxic(proxy.name, "bandwidth", name="d", stream="upstream", attributes={"rate": 10**6})
    assert [t.name for t in client.toxics(proxy.name)] == ["b", "d", "a", "c"]
    assert [t.name for t in client.proxy(proxy.name).toxics] == ["b", "d", "a", "c"]
    with pytest.raises(ProxyConflict):
        client.add_toxic(proxy.name, "latency", name="c")


def test_populate_is_idempotent_and_keeps_live_connections(client: FaultProxyClient, echo_server):
    from tests.faultproxy.fp_support import free_port

    port = free_port()
    spec = [{"name": "pop_a", "listen": f"127.0.0.1:{port}", "upstream": echo_server.addr}]
    try:
        first = client.populate(spec)
        assert [p.name for p in first] == ["pop_a"] and first[0].enabled
        with connect(first[0].listen) as sock:
            rtt_ms(sock)
            second = client.populate(spec)
            assert second[0].listen == first[0].listen
            assert rtt_ms(sock) < 100  # same proxy kept: the live connection survived
    finally:
        client.delete_proxy("pop_a")


def test_populate_response_shape(fp_url: str, echo_server):
    resp = requests.post(fp_url + "/populate", json=[{"name": "pop_b", "listen": "127.0.0.1:0",
                                                      "upstream": echo_server.addr, "enabled": False}], timeout=5)
    try:
        expect_status(resp, 201)
        assert [p["name"] for p in resp.json()["proxies"]] == ["pop_b"]
        assert resp.json()["proxies"][0]["enabled"] is False
    finally:
        requests.delete(fp_url + "/proxies/pop_b", timeout=5)


def test_reset_enables_proxies_and_removes_toxics(fp_url: str, client: FaultProxyClient, make_proxy,
                                                  echo_server):
    proxy = make_proxy(echo_server.addr)
    client.add_toxic(proxy.name, "latency", attributes={"latency": 100})
    client.update_proxy(proxy.name, enabled=False)
    assert requests.post(fp_url + "/reset", timeout=5).status_code == 204
    after = client.proxy(proxy.name)
    assert after.enabled and after.toxics == ()
    with connect(after.listen) as sock:
        assert rtt_ms(sock) < 50


def test_delete_proxy_closes_its_connections(client: FaultProxyClient, make_proxy, echo_server):
    proxy = make_proxy(echo_server.addr)
    with connect(proxy.listen) as sock:
        rtt_ms(sock)
        client.delete_proxy(proxy.name)
        assert closed_or_reset(sock) in ("eof", "reset")
    with pytest.raises(ProxyNotFound):
        client.proxy(proxy.name)


@pytest.mark.skipif(not in_project(), reason="upstream serves /metrics only with metrics flags, other names")
def test_metrics_count_connections_and_bytes(fp_url: str, client: FaultProxyClient, make_proxy, echo_server):
    proxy = make_proxy(echo_server.addr)
    client.add_toxic(proxy.name, "latency", name="m", attributes={"latency": 1})
    with connect(proxy.listen) as sock:
        for _ in range(3):
            rtt_ms(sock, b"12345")
        text = requests.get(fp_url + "/metrics", timeout=5).text
    lines = {line.rsplit(" ", 1)[0]: line.rsplit(" ", 1)[1] for line in text.splitlines()
             if line and not line.startswith("#") and f'proxy="{proxy.name}"' in line}
    sent = [v for k, v in lines.items() if k.startswith("toxiproxy_proxy_sent_bytes_total")
            and 'direction="downstream"' in k]
    assert sent == ["15"]
    assert lines[f'faultproxy_connections_total{{proxy="{proxy.name}"}}'] == "1"
    assert lines[f'faultproxy_connections_active{{proxy="{proxy.name}"}}'] == "1"
    assert lines[f'faultproxy_toxics_applied_total{{proxy="{proxy.name}",toxic="m",type="latency"}}'] == "1"


def test_unreachable_upstream_closes_the_client(make_proxy):
    from tests.faultproxy.fp_support import free_port

    proxy = make_proxy(f"127.0.0.1:{free_port()}")  # nothing listens there
    with connect(proxy.listen) as sock:
        assert closed_or_reset(sock) in ("eof", "reset")
