"""Platform pieces that need no Docker: port checks, apt mirror discovery, link table, compose conventions."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.errors import HarnessError
from harness.platform import images, ports
from harness.topology import links
from harness.topology.model import postgres_model, reference_model

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "compose"


def test_checked_in_proxy_table_matches_the_model() -> None:
    on_disk = json.loads((COMPOSE / "config/faultproxy/proxies.json").read_text())
    assert on_disk == links.populate_payload(reference_model()), \
        "regenerate: python -m harness.topology.links > compose/config/faultproxy/proxies.json"


def test_every_link_has_a_unique_listen_port_and_name() -> None:
    m = reference_model()
    assert len({lk.listen_port for lk in m.links}) == len(m.links)
    assert len({lk.name for lk in m.links}) == len(m.links)
    # every node replica has a DB link, every participant/mediator replica one link per sequencer
    for s in m.services:
        if s.role in ("sequencer", "mediator", "participant"):
            assert len(m.links_of(s.name, "db")) == 1
        if s.role in ("mediator", "participant"):
            assert len(m.links_of(s.name, "sequencer")) == 3


def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        base = taken - 74  # the fault-proxy API port of this base is the taken one
        with pytest.raises(HarnessError) as exc:
            ports.check_ports(base)
    assert f"127.0.0.1:{taken}" in exc.value.what and "fault-proxy API" in exc.value.what
    assert ports.port_env(0)["HA_CHAOS_PORT_PG"] == ""


@pytest.mark.parametrize("text,mirror,security", [
    ("Types: deb\nURIs: http://deb.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n"
     "Types: deb\nURIs: http://sec.example/debian-security\nSuites: bookworm-security\nComponents: main\n",
     "http://deb.example/debian", "http://sec.example/debian-security"),
    ("deb [arch=amd64] http://m.example/debian bookworm main\ndeb http://s.example bookworm-security main\n",
     "http://m.example/debian", "http://s.example"),
])
def test_apt_mirror_discovery(text: str, mirror: str, security: str) -> None:
    assert images.apt_sources(text) == (mirror, security)


def test_no_mirror_is_a_clear_error() -> None:
    with pytest.raises(HarnessError, match="no bookworm mirror"):
        images.apt_sources("# nothing here\n")


def _compose_services() -> dict[str, dict]:
    services: dict[str, dict] = {}
    for f in sorted(COMPOSE.glob("*.yml")):
        services.update(yaml.safe_load(f.read_text()).get("services", {}))
    return services


def test_compose_services_follow_the_conventions() -> None:
    services = _compose_services()
    assert services, "no compose services found"
    for name, svc in services.items():
        assert svc.get("labels", {}).get("ha-chaos.run") == "${HA_CHAOS_RUN_ID}", name
        assert svc.get("pull_policy") == "never", name
        for p in svc.get("ports", []):
            assert str(p).startswith("127.0.0.1:"), f"{name} publishes {p} beyond loopback"
        if name != "faultproxy-init":
            assert svc.get("init") is True, name
            assert "healthcheck" in svc, name
            assert svc.get("stop_grace_period") == "2s", name


def test_every_model_service_is_in_the_compose_files() -> None:
    services = _compose_services()
    model = reference_model() if (COMPOSE / "reference.yml").exists() else postgres_model()
    assert [s.name for s in model.services if s.name not in services] == []


@pytest.mark.parametrize("argv", [["doctor", "--port-base", "0"], ["up", "--profile", "postgres"],
                                  ["status"]])
def test_unreachable_daemon_is_one_line_and_no_traceback(argv: list[str]) -> None:
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent"}
    proc = subprocess.run([sys.executable, "-m", "harness.cli", *argv],
                          capture_output=True, text=True, env=env, timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Traceback" not in out
    assert "fix" in out


def test_leader_of_patroni_members() -> None:
    from harness.topology.pg import leader_of

    running = [{"name": "pg1", "role": "leader", "state": "running"},
               {"name": "pg2", "role": "replica", "state": "streaming"}]
    assert leader_of(running) == "pg1"
    assert leader_of([{**running[0], "state": "stopped"}, running[1]]) is None  # a stopped leader leads nothing
    assert leader_of([running[0], {**running[1], "role": "master", "state": "running"}]) is None  # two: none
