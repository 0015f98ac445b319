"""Fixtures of the fault-proxy conformance suite.

By default the suite starts the in-project server (``python -m harness.faultproxy --seed 4242``) as a subprocess on
a free 127.0.0.1 port. With ``FAULTPROXY_URL=http://HOST:PORT`` it drives that server instead - e.g. the official
Toxiproxy - so both can be held to the same tests.

Assumption for ``FAULTPROXY_URL``: the server shares the test's network namespace (a local binary, or a container
with ``--network host``), because the tests create proxies listening on ``127.0.0.1:0`` and pointing at upstream
servers on ``127.0.0.1`` ports of the test process. Tests of this project's deliberate deviations and additions
(seeded draws, ``/metrics`` names, 4xx where upstream answers 500 or accepts) adapt or skip there; see
``expect_status``. Set ``FAULTPROXY_IMPL=ha-chaos`` when the URL is this project's server (started with
``--seed 4242``) to hold it to the full suite.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from harness.faults.proxy_client import FaultProxyClient, ProxyInfo, ProxyNotFound
from tests.faultproxy.fp_support import TcpServer, echo, free_port, say_bye_and_close, source

SEED = 4242
REMOTE_URL = os.environ.get("FAULTPROXY_URL")
#: What answers at FAULTPROXY_URL: "toxiproxy" (the official server, the default) or "ha-chaos" (this project's,
#: started with ``--seed 4242``). Decides which status codes are expected where the two deliberately differ.
IMPL = os.environ.get("FAULTPROXY_IMPL", "toxiproxy" if REMOTE_URL else "ha-chaos")


def in_project() -> bool:
    return IMPL == "ha-chaos"


def expect_status(resp: requests.Response, ours: int, upstream: int | None = None) -> None:
    """Assert the status code; ``upstream`` is what the official server answers where we deliberately differ."""
    want = upstream if (upstream is not None and not in_project()) else ours
    assert resp.status_code == want, f"{resp.request.method} {resp.request.url}: {resp.status_code} {resp.text}"
    if want >= 400 and in_project():
        body = resp.json()
        assert body["status"] == want and isinstance(body["error"], str) and body["error"], body


def start_server_process(port: int, log_path: Path, seed: int = SEED,
                         extra: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.faultproxy", "--host", "127.0.0.1", "--port", str(port),
         "--seed", str(seed), *extra],
        stdout=log_path.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"fault proxy exited with {proc.returncode}: {log_path.read_text()}")
        try:
            if requests.get(url + "/version", timeout=1).ok:
                return proc
        except requests.RequestException:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"fault proxy did not answer on {url} within 20 s: {log_path.read_text()}")


@pytest.fixture(scope="session")
def fp_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if REMOTE_URL:
        yield REMOTE_URL.rstrip("/")
        return
    port = free_port()
    log_path = tmp_path_factory.mktemp("faultproxy") / "server.log"
    proc = start_server_process(port, log_path)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def client(fp_url: str) -> Iterator[FaultProxyClient]:
    with FaultProxyClient(fp_url, timeout=10) as c:
        yield c


@pytest.fixture(scope="session")
def echo_server() -> Iterator[TcpServer]:
    server = TcpServer(echo)
    yield server
    server.close()


@pytest.fixture(scope="session")
def source_server() -> Iterator[TcpServer]:
    server = TcpServer(source)
    yield server
    server.close()


@pytest.fixture(scope="session")
def bye_server() -> Iterator[TcpServer]:
    server = TcpServer(say_bye_and_close)
    yield server
    server.close()


_names = itertools.count(1)


@pytest.fixture
def make_proxy(client: FaultProxyClient, request: pytest.FixtureRequest) -> Iterator[Callable[..., ProxyInfo]]:
    """Create uniquely named proxies on 127.0.0.1:0; delete them after the test."""
    created: list[str] = []

    def make(upstream: str, *, name: str | None = None, enabled: bool = True) -> ProxyInfo:
        name = name or f"t{next(_names)}_{request.node.name[:40]}".replace("[", "_").replace("]", "")
        info = client.create_proxy(name, "127.0.0.1:0", upstream, enabled=enabled)
        created.append(name)
        return info

    yield make
    for name in created:
        with contextlib.suppress(ProxyNotFound):
            client.delete_proxy(name)
