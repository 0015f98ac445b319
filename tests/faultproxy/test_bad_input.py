"""Bad input gets a 4xx JSON error, never a crash, and never disturbs other proxies; plus a Hypothesis barrage."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.faults.proxy_client import FaultProxyClient, ProxyInfo
from tests.faultproxy.conftest import expect_status, in_project
from tests.faultproxy.fp_support import TcpServer, connect, rtt_ms

pytestmark = pytest.mark.unit


@pytest.fixture
def witness(client: FaultProxyClient, make_proxy, echo_server) -> Iterator[tuple[ProxyInfo, object]]:
    """A proxy with a live connection that must keep working whatever the bad requests do."""
    proxy = make_proxy(echo_server.addr)
    sock = connect(proxy.listen)
    rtt_ms(sock)
    yield proxy, sock
    assert rtt_ms(sock) < 100, "a live connection of another proxy was disturbed"
    with connect(proxy.listen) as fresh:
        assert rtt_ms(fresh) < 100
    sock.close()


# (method, path template, raw body, our status, upstream's status where it differs)
CASES = [
    ("POST", "/proxies", b"{bad json", 400, None),
    ("POST", "/proxies", b"[" * 100_000 + b"]" * 100_000, 400, None),   # deeper than any JSON decoder recurses
    ("POST", "/proxies", b"", 400, None),
    ("POST", "/proxies", b"[1, 2]", 400, None),
    ("POST", "/proxies", b'{"upstream": "127.0.0.1:1"}', 400, None),
    ("POST", "/proxies", b'{"name": "x1"}', 400, None),
    ("POST", "/proxies", b'{"name": 5, "upstream": "127.0.0.1:1"}', 400, None),
    ("POST", "/proxies", b'{"name": "x2", "upstream": "127.0.0.1:1", "enabled": "yes"}', 400, None),
    ("POST", "/proxies", b'{"name": "x3", "upstream": "127.0.0.1:1", "listen": "nonsense"}', 400, 500),
    ("POST", "/proxies", b'{"name": "{witness}", "upstream": "127.0.0.1:1", "listen": "127.0.0.1:0"}', 409, None),
    ("POST", "/proxies/{witness}/toxics", b"{not json", 400, None),
    ("POST", "/proxies/{witness}/toxics", b'{"type": "nosuch"}', 400, None),
    ("POST", "/proxies/{witness}/toxics", b'{"type": "latency", "stream": "sideways"}', 400, None),
    ("POST", "/proxies/{witness}/toxics", b'{"type": "latency", "attributes": {"latency": -5}}', 400, 200),
    ("POST", "/proxies/{witness}/toxics", b'{"type": "latency", "attributes": {"latency": "abc"}}', 400, None),
    ("POST", "/proxies/{witness}/toxics", b'{"type": "bandwidth", "attributes": {"rate": 1.5}}', 400, None),
    ("POST", "/proxies/{witness}/toxics", b'{"type": "latency", "toxicity": "high"}', 400, None),
    ("POST", "/proxies/{witness}/toxics", b'{"type": "latency", "toxicity": 3}', 400, 200),
    ("POST", "/proxies/{witness}/toxics", b'{"type": "slicer", "attributes": {"average_size": 0}}', 400, 200),
    ("PATCH", "/proxies/{witness}/toxics/missing", b'{"attributes": {"latency": 1}}', 404, None),
    ("POST", "/proxies/{witness}/toxics/missing", b'{"attributes": {"latency": 1}}', 404, None),
    ("DELETE", "/proxies/{witness}/toxics/missing", b"", 404, None),
    ("PATCH", "/proxies/missing-proxy", b'{"enabled": false}', 404, None),
    ("PATCH", "/proxies/{witness}", b'{"enabled": 1}', 400, None),
    ("GET", "/proxies/missing-proxy/toxics", b"", 404, None),
    ("POST", "/populate", b'{"name": "p"}', 400, None),
    ("POST", "/populate", b'[{"name": "p1"}]', 400, None),
    ("POST", "/populate", b'[{"name": "d", "upstream": "127.0.0.1:1", "listen": "127.0.0.1:0"},'
                          b' {"name": "d", "upstream": "127.0.0.1:1", "listen": "127.0.0.1:0"}]', 400, 500),
    ("PUT", "/proxies", b"{}", 405, None),
    ("GET", "/no/such/route", b"", 404, None),
]


@pytest.mark.parametrize("method, path, body, ours, upstream", CASES,
                         ids=[f"{c[0]} {c[1]} {c[2][:40]!r}" for c in CASES])
def test_bad_request_is_a_4xx_json_error(fp_url, witness, method, path, body, ours, upstream):
    proxy, _ = witness
    path = path.replace("{witness}", proxy.name)
    body = body.replace(b"{witness}", proxy.name.encode())
    resp = requests.request(method, fp_url + path, data=body, timeout=5,
                            headers={"Content-Type": "application/json"})
    expect_status(resp, ours, upstream)
    if in_project():
        assert resp.headers["Content-Type"].startswith("application/json")
    assert [t.name for t in FaultProxyClient(fp_url).toxics(proxy.name)] in ([], ["latency_downstream"],
                                                                              ["slicer_downstream"])


def test_listen_port_in_use_is_refused_and_others_keep_working(fp_url, witness, echo_server):
    proxy, _ = witness
    resp = requests.post(fp_url + "/proxies", json={"name": "clash", "listen": proxy.listen,
                                                    "upstream": echo_server.addr}, timeout=5)
    expect_status(resp, 409, 500)
    assert requests.get(fp_url + "/proxies/clash", timeout=5).status_code == 404


# -- Hypothesis: random API traffic, then the data path must still be right ------------------------------------
NAMES = st.sampled_from(["h0", "h1", "h2", "latency_downstream", "t", "%2F", "x" * 60])
TOXIC_TYPES = st.sampled_from(["latency", "bandwidth", "slow_close", "timeout", "reset_peer", "slicer",
                               "limit_data", "nope", ""])
FINITE = st.floats(allow_nan=False, allow_infinity=False)
ATTR_VALUES = st.one_of(st.integers(-10, 10**7), FINITE, st.text(max_size=5), st.none(), st.booleans())
ATTRIBUTES = st.dictionaries(st.sampled_from(["latency", "jitter", "rate", "delay", "timeout", "bytes",
                                              "average_size", "size_variation", "zzz"]), ATTR_VALUES, max_size=4)
# Listen addresses never name a fixed port: random binds must not grab ports other tests or helpers use.
LISTENS = st.sampled_from(["127.0.0.1:0", "localhost:0", "", "nonsense", "127.0.0.1:x", "[::1]:0", None])
UPSTREAMS = st.sampled_from(["127.0.0.1:1", "127.0.0.1:9", "db:5432", "bad", "", None])
JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), FINITE, st.text(max_size=8))
JSON_ANY = st.recursive(JSON_SCALARS, lambda kids: st.lists(kids, max_size=3)
                        | st.dictionaries(st.text(max_size=6), kids, max_size=3), max_leaves=8)


def _drop_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


PROXY_BODIES = st.builds(lambda n, li, u, e: _drop_none({"name": n, "listen": li, "upstream": u, "enabled": e}),
                         NAMES, LISTENS, UPSTREAMS, st.one_of(st.booleans(), st.none(), st.just("no")))
TOXIC_BODIES = st.builds(lambda n, t, s, tx, a: _drop_none({"name": n, "type": t, "stream": s, "toxicity": tx,
                                                            "attributes": a}),
                         st.one_of(NAMES, st.none()), TOXIC_TYPES,
                         st.sampled_from(["upstream", "downstream", "UPSTREAM", "x", None]),
                         st.one_of(st.floats(-1, 2, allow_nan=False), st.none(), st.text(max_size=2)), ATTRIBUTES)
BODIES = st.one_of(PROXY_BODIES, TOXIC_BODIES, JSON_ANY.map(json.dumps), st.binary(max_size=20),
                   st.lists(PROXY_BODIES, max_size=3))
REQUESTS = st.tuples(
    st.sampled_from(["GET", "POST", "PATCH", "DELETE"]),
    st.sampled_from(["/proxies", "/proxies/{p}", "/proxies/{p}/toxics", "/proxies/{p}/toxics/{t}",
                     "/populate", "/version", "/metrics"]),
    NAMES, NAMES, BODIES)


@pytest.mark.skipif(not in_project(), reason="random traffic could touch proxies of a shared official server")
def test_random_api_requests_never_crash_and_proxying_still_works(fp_url, witness, client):
    _, live = witness
    session = requests.Session()

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(REQUESTS, min_size=1, max_size=4))
    def barrage(reqs):
        for method, path, p, t, body in reqs:
            url = fp_url + path.replace("{p}", p).replace("{t}", t)
            if isinstance(body, (dict, list)):
                resp = session.request(method, url, json=body, timeout=10)
            else:
                data = body.encode() if isinstance(body, str) else body
                resp = session.request(method, url, data=data, timeout=10)
            assert resp.status_code < 500, (method, url, body, resp.status_code, resp.text)
            if resp.status_code >= 400:
                assert resp.json()["status"] == resp.status_code

    before = set(session.get(fp_url + "/proxies", timeout=10).json())
    try:
        barrage()
    finally:
        for name in set(session.get(fp_url + "/proxies", timeout=10).json()) - before:
            session.delete(f"{fp_url}/proxies/{quote(name, safe='')}", timeout=10)
    assert set(session.get(fp_url + "/proxies", timeout=10).json()) == before
    assert rtt_ms(live) < 100  # the witness' live connection
    upstream = TcpServer(lambda s: s.sendall(s.recv(100)[::-1]))
    try:
        fresh = client.create_proxy("after_barrage", "127.0.0.1:0", upstream.addr)
        with connect(fresh.listen) as sock:
            sock.sendall(b"abc")
            assert sock.recv(10) == b"cba"
    finally:
        client.delete_proxy("after_barrage")
        upstream.close()
