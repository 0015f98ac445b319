"""Pure pieces of the fault proxy: seeded draws, slicer cuts, toxic parsing, the client's error mapping."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.errors import HarnessError
from harness.faultproxy.errors import ApiError
from harness.faultproxy.proxy import split_hostport
from harness.faultproxy.rng import toxic_rng, toxicity_draw
from harness.faultproxy.stages import slice_ends
from harness.faultproxy.toxics import apply_update, parse_new_toxic
from harness.faults.proxy_client import FaultProxyClient, FaultProxyError

pytestmark = pytest.mark.unit


def test_draws_depend_on_every_input_and_nothing_else():
    base = toxicity_draw(1, "p", "t", 1)
    assert toxicity_draw(1, "p", "t", 1) == base
    assert len({base, toxicity_draw(2, "p", "t", 1), toxicity_draw(1, "q", "t", 1),
                toxicity_draw(1, "p", "u", 1), toxicity_draw(1, "p", "t", 2)}) == 5
    assert toxic_rng(1, "p", "t", 1).random() == base


@given(size=st.integers(1, 5000), average=st.integers(1, 300), data=st.data())
def test_slices_cover_the_chunk_and_respect_the_bounds(size, average, data):
    variation = data.draw(st.integers(0, average - 1))
    ends = slice_ends(size, average, variation, random.Random(0))
    starts = [0, *ends[:-1]]
    lengths = [e - s for s, e in zip(starts, ends, strict=True)]
    assert ends[-1] == size and all(n > 0 for n in lengths)
    assert all(n <= average + variation for n in lengths)


def test_toxic_defaults_follow_upstream():
    spec = parse_new_toxic({"type": "bandwidth", "stream": "upstream"})
    assert spec.to_json() == {"attributes": {"rate": 0}, "name": "bandwidth_upstream", "type": "bandwidth",
                              "stream": "upstream", "toxicity": 1.0}


@pytest.mark.parametrize("body, status", [
    ({"type": "nope"}, 400), ({"type": "latency", "stream": "x"}, 400),
    ({"type": "latency", "attributes": {"latency": -1}}, 400), ({"type": "latency", "attributes": []}, 400),
    ({"type": "latency", "attributes": {"latency": True}}, 400), ({"type": "latency", "toxicity": 1.5}, 400),
    ([], 400), ({"type": "slicer", "attributes": {"average_size": 10, "size_variation": 10}}, 400),
])
def test_bad_toxics_are_400(body, status):
    with pytest.raises(ApiError) as err:
        parse_new_toxic(body)
    assert err.value.status == status


def test_update_merges_and_ignores_type_changes():
    spec = parse_new_toxic({"type": "latency", "attributes": {"latency": 5}})
    updated = apply_update(spec, {"type": "timeout", "attributes": {"jitter": 2}, "toxicity": 0.25})
    assert (updated.type, updated.attributes, updated.toxicity) == ("latency", {"latency": 5, "jitter": 2}, 0.25)
    assert spec.attributes == {"latency": 5, "jitter": 0}


@pytest.mark.parametrize("addr, parsed", [("127.0.0.1:80", ("127.0.0.1", 80)), ("[::1]:5", ("::1", 5)),
                                          (":8474", ("", 8474)), ("db:5432", ("db", 5432))])
def test_split_hostport(addr, parsed):
    assert split_hostport(addr, "listen") == parsed


@pytest.mark.parametrize("addr", ["nonsense", "host:", "a:b:c", "h:99999", "h:x"])
def test_split_hostport_rejects(addr):
    with pytest.raises(ApiError):
        split_hostport(addr, "listen")


def test_client_unreachable_server_is_a_harness_error():
    from tests.faultproxy.fp_support import free_port

    client = FaultProxyClient(f"http://127.0.0.1:{free_port()}", timeout=1)
    with pytest.raises(FaultProxyError) as err:
        client.version()
    assert isinstance(err.value, HarnessError) and err.value.fix


def test_wait_until_ready_gives_up_at_its_deadline():
    from tests.faultproxy.fp_support import free_port

    client = FaultProxyClient(f"http://127.0.0.1:{free_port()}", timeout=0.5)
    with pytest.raises(FaultProxyError, match="not ready after"):
        client.wait_until_ready(0.3)


def test_wait_until_ready_returns_the_version(client):
    assert client.wait_until_ready(5).startswith("2.")


def test_client_maps_status_codes_to_typed_errors(client, make_proxy, echo_server):
    from harness.faults.proxy_client import BadRequest, ProxyConflict, ProxyNotFound, ToxicNotFound

    proxy = make_proxy(echo_server.addr)
    with pytest.raises(ProxyNotFound) as missing:
        client.proxy("no_such_proxy")
    assert not isinstance(missing.value, ToxicNotFound) and missing.value.status == 404
    with pytest.raises(ToxicNotFound):
        client.update_toxic(proxy.name, "no_such_toxic", attributes={"latency": 1})
    with pytest.raises(ProxyConflict):
        client.create_proxy(proxy.name, "127.0.0.1:0", echo_server.addr)
    with pytest.raises(BadRequest):
        client.add_toxic(proxy.name, "no_such_type")
