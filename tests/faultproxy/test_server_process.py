"""The server as a process: ``--help``, logging to stdout, clean exit on SIGTERM (what ``docker stop`` sends)."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from harness.faults.proxy_client import FaultProxyClient, FaultProxyError
from tests.faultproxy.conftest import start_server_process
from tests.faultproxy.fp_support import closed_or_reset, connect, free_port, rtt_ms

pytestmark = pytest.mark.unit


def test_help_works():
    out = subprocess.run([sys.executable, "-m", "harness.faultproxy", "--help"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0
    assert "--seed" in out.stdout and "--port" in out.stdout


def test_sigterm_closes_connections_and_exits_zero(tmp_path, echo_server):
    port = free_port()
    log_path = tmp_path / "server.log"
    proc = start_server_process(port, log_path, seed=7)
    try:
        client = FaultProxyClient(f"http://127.0.0.1:{port}", timeout=5)
        proxy = client.create_proxy("sig", "127.0.0.1:0", echo_server.addr)
        with connect(proxy.listen) as sock:
            rtt_ms(sock)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0
            assert closed_or_reset(sock) in ("eof", "reset")
        with pytest.raises(FaultProxyError):
            client.version()
    finally:
        if proc.poll() is None:
            proc.kill()
    log = log_path.read_text()
    assert "seed=7" in log and "started proxy name=sig" in log and "shutting down" in log


def test_config_file_populates_at_start(tmp_path, echo_server):
    import json

    config = tmp_path / "proxies.json"
    config.write_text(json.dumps([{"name": "from_file", "listen": "127.0.0.1:0", "upstream": echo_server.addr}]))
    port = free_port()
    proc = start_server_process(port, tmp_path / "server.log", extra=("--config", str(config)))
    try:
        proxy = FaultProxyClient(f"http://127.0.0.1:{port}").proxy("from_file")
        with connect(proxy.listen) as sock:
            assert rtt_ms(sock) < 100
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_api_port_in_use_exits_with_error(tmp_path):
    with connect_listener() as port:
        out = subprocess.run([sys.executable, "-m", "harness.faultproxy", "--host", "127.0.0.1",
                              "--port", str(port)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 3
    assert "cannot listen" in out.stdout


class connect_listener:
    """A bound, listening loopback socket for the duration of a ``with``; yields its port."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
