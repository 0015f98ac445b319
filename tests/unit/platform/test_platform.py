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
        for name, svc in (yaml.safe_load(f.read_text()).get("services") or {}).items():
            # a later file may override some keys of a service (small.yml re-points faultproxy-init's volume),
            # as compose merges them
            services[name] = {**services.get(name, {}), **svc}
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


@pytest.mark.parametrize("argv", [["images", "build"], ["setup", "--no-images"]])
def test_unreachable_daemon_fails_fast_for_setup_and_builds(argv: list[str]) -> None:
    """`images build` used to debootstrap first and fail only at `docker import`; `setup` started a second dockerd
    (which exits on its pid file, the daemon at the default socket being alive) and waited 90 s for it."""
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent"}
    proc = subprocess.run([sys.executable, "-m", "harness.cli", *argv],
                          capture_output=True, text=True, env=env, timeout=30)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "unix:///nonexistent" in proc.stderr and "fix:" in proc.stderr


def test_setup_starts_no_daemon_for_a_docker_host_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.errors import DockerUnavailable
    from harness.platform import setup

    def no_popen(*a: object, **k: object) -> None:
        raise AssertionError(f"setup started {a[0]!r}: a local dockerd cannot serve DOCKER_HOST")

    monkeypatch.setenv("DOCKER_HOST", "unix:///some/other.sock")
    monkeypatch.setattr(setup, "docker_answers", lambda: False)
    monkeypatch.setattr(setup.subprocess, "Popen", no_popen)
    with pytest.raises(DockerUnavailable) as exc:
        setup.ensure_docker()
    assert "unix:///some/other.sock" in exc.value.what and "DOCKER_HOST" in (exc.value.fix or "")


def test_a_dockerd_that_exits_at_once_is_reported_at_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import time

    from harness.errors import DockerUnavailable
    from harness.platform import setup

    log = tmp_path / "dockerd.log"

    class Exited:
        returncode = 1

        def __init__(self, *a: object, **k: object) -> None:
            log.write_text("level=info msg=\"Starting up\"\nfailed to start daemon: pid file found\n")

        def poll(self) -> int:
            return self.returncode

    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setattr(setup, "docker_answers", lambda: False)
    monkeypatch.setattr(setup, "DOCKERD_LOG", log)
    monkeypatch.setattr(setup.os, "geteuid", lambda: 0)
    monkeypatch.setattr(setup.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(setup.subprocess, "Popen", Exited)
    t0 = time.monotonic()
    with pytest.raises(DockerUnavailable) as exc:
        setup.ensure_docker()
    assert time.monotonic() - t0 < 10, "waited out the 90 s deadline for a daemon that had already exited"
    assert "pid file found" in exc.value.what


def test_images_build_rejects_an_unknown_image_name() -> None:
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "images", "build", "--only", "postgress"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 4 and "Traceback" not in proc.stderr
    assert "unknown image postgress" in proc.stderr and "postgres" in proc.stderr


def test_port_check_covers_only_the_ports_the_profile_publishes() -> None:
    """A taken Ledger API port (base+1) must not stop `up --profile postgres`, which publishes only base+32."""
    from harness.topology.compose import PROFILE_PORTS

    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            base = s.getsockname()[1] - 1
            # the port is an ephemeral one: base+32 / base+74 may be taken by someone else on a busy machine
            # (seen once); such a base proves nothing, draw another
            if ports.busy_ports(base, PROFILE_PORTS["faultproxy"]):
                continue
            ports.check_ports(base, PROFILE_PORTS["postgres"])
            ports.check_ports(base, PROFILE_PORTS["faultproxy"])
            with pytest.raises(HarnessError, match="Ledger API of p1"):
                ports.check_ports(base, PROFILE_PORTS["full"])
            return
    pytest.fail("no port base with free PostgreSQL and fault-proxy ports in 50 draws")


def test_each_profile_requires_only_the_images_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """`up --profile postgres` used to refuse to start when the node or fault-proxy image was missing."""
    from harness.platform.setup import compose_v2_version
    from harness.topology.compose import Topology

    def names(tags: list[str]) -> set[str]:
        return {t.rsplit("/", 1)[1] for t in tags}

    assert names(Topology("postgres", run_id="hc-unit").project_images()) == {
        "etcd:latest", "postgres:latest", "haproxy:latest"}
    assert names(Topology("full", run_id="hc-unit").project_images()) == {f"{s.name}:latest" for s in images.IMAGES}
    if not compose_v2_version():
        pytest.skip("no compose v2 CLI to resolve the compose files' images")
    # what compose itself will run: the profile's files only, the prefix and the fault proxy's override applied
    prefix = {"HA_CHAOS_IMAGE_PREFIX": "unit-prefix"}
    assert set(Topology("postgres", run_id="hc-unit", extra_env=prefix).required_images()) == {
        "unit-prefix/etcd:latest", "unit-prefix/postgres:latest", "unit-prefix/haproxy:latest"}
    assert "unit-prefix/faultproxy:latest" in Topology("faultproxy", run_id="hc-unit", extra_env=prefix
                                                        ).required_images()
    monkeypatch.setenv("HA_CHAOS_FAULTPROXY_IMAGE", "ghcr.io/shopify/toxiproxy:2.9.0")
    fp = Topology("faultproxy", run_id="hc-unit", extra_env=prefix).required_images()
    assert "ghcr.io/shopify/toxiproxy:2.9.0" in fp and "unit-prefix/node:latest" in fp
    assert names(Topology("full", run_id="hc-unit").required_images()) >= names(
        Topology("full", run_id="hc-unit").project_images()) - {"faultproxy:latest"}


def test_compose_error_is_the_cause_not_the_progress_lines() -> None:
    from harness.topology.compose import compose_error

    stderr = [" Container hc-x-etcd-1  Starting", " Container hc-x-pg-lb-1  Starting",
              " Container hc-x-etcd-1  Started",
              "Error response from daemon: driver failed programming external connectivity on endpoint "
              "hc-x-pg-lb-1 (7a13da17616631090b3a6af06f815fb721ae56e36b6f764f30062e9276994bdb): Error starting "
              "userland proxy: listen tcp4 127.0.0.1:23032: bind: address already in use"]
    cause = compose_error(stderr)
    assert cause.startswith("Error response from daemon") and cause.endswith("address already in use")
    assert "Container" not in cause and "7a13da17" not in cause
    assert compose_error([]) == "no output"


def test_status_reports_published_ports() -> None:
    from types import SimpleNamespace

    from harness.topology.compose import _published

    c = SimpleNamespace(attrs={"NetworkSettings": {"Ports": {
        "5432/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18432"}], "5433/tcp": None,
        "8404/tcp": [{"HostIp": "127.0.0.1", "HostPort": "32940"}]}}})
    assert _published(c) == {"5432": 18432, "8404": 32940}


def test_forgetting_a_run_removes_its_env_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A swept dead run used to leave ~/.cache/ha-chaos/env/<run>.env behind, one file per killed harness."""
    from harness.topology import registry

    monkeypatch.setattr(registry, "REGISTRY_DIR", tmp_path / "runs")
    monkeypatch.setattr(registry, "ENV_DIR", tmp_path / "env")
    env_file = tmp_path / "env" / "hc-unit.env"
    env_file.parent.mkdir()
    env_file.write_text("HA_CHAOS_RUN_ID=hc-unit\n")
    registry.register("hc-unit", "postgres", str(env_file))
    registry.unregister("hc-unit")
    assert registry.lookup("hc-unit") is None
    assert not env_file.exists()


def test_db_failover_bench_reports_a_failover_that_never_happened() -> None:
    """The text output used to give min/median/max over the kills that recovered only, and exit 0."""
    from harness.bench.db_failover import FailoverSample, failures, summarize

    ok = FailoverSample(False, "pg1", "pg2", 9.5, True, 5.0, 400, 3)
    stuck = FailoverSample(False, "pg2", None, None, True, 5.5, 800, 3)
    sync_ok = FailoverSample(True, "pg1", "pg2", 10.2, True, 4.8, 600, 0)
    assert failures([ok, sync_ok]) == []  # loss without synchronous_mode is reported, not a failure
    assert failures([ok, stuck]) == ["kill 2 (synchronous_mode=false, pg2 killed): writes did not resume within "
                                     "60 s, no new leader was elected"]
    assert summarize([ok, stuck])["synchronous_mode=false fault=kill"]["writes_never_resumed"] == 1
    lost = FailoverSample(True, "pg1", "pg2", 10.2, False, None, 600, 2)
    assert failures([lost]) == ["kill 1 (synchronous_mode=true, pg1 killed): pg1 did not rejoin as a streaming "
                                "replica", "synchronous_mode=true fault=kill: 2 acknowledged writes lost"]
    # stall-kill: async loss is reported only; with synchronous replication nobody is promoted (new leader None)
    # and the old leader leading again is the expected recovery; a loss there is a failure
    async_loss = FailoverSample(False, "pg1", "pg2", 11.0, True, 6.0, 900, 412, fault="stall-kill")
    sync_back = FailoverSample(True, "pg2", None, 31.0, True, None, 1200, 0, fault="stall-kill")
    assert failures([async_loss, sync_back]) == []
    assert summarize([async_loss, sync_back])["synchronous_mode=false fault=stall-kill"][
        "acknowledged_writes_lost"] == 412
    sync_lost = FailoverSample(True, "pg2", None, 31.0, False, None, 1200, 5, fault="stall-kill")
    assert failures([sync_lost]) == ["stall-kill 1 (synchronous_mode=true, pg2 killed): pg2 did not resume as "
                                     "leader", "synchronous_mode=true fault=stall-kill: 5 acknowledged writes lost"]


def test_sigterm_handling_while_a_topology_is_owned() -> None:
    import signal

    from harness.topology import signals

    assert issubclass(signals.Terminated, KeyboardInterrupt), "pytest must treat SIGTERM as an interruption"
    old = {s: signal.getsignal(s) for s in signals.SIGNALS}
    try:
        for s in signals.SIGNALS:
            signal.signal(s, signal.SIG_DFL)
        changed = signals.install_if_default()
        assert set(changed) == set(signals.SIGNALS)
        with pytest.raises(signals.Terminated):
            signal.raise_signal(signal.SIGTERM)
        signals.restore_default(changed)
        assert all(signal.getsignal(s) == signal.SIG_DFL for s in signals.SIGNALS)

        def mine(*_: object) -> None:
            pass

        signal.signal(signal.SIGTERM, mine)  # somebody's own handler stays
        changed = signals.install_if_default()
        assert changed == [signal.SIGHUP] and signal.getsignal(signal.SIGTERM) is mine
        signals.restore_default(changed)
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def test_write_loop_does_not_count_a_write_acknowledged_during_its_own_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """The write loop goes on while `lost()` reads the table: an ack recorded meanwhile is not in the read's
    snapshot and was counted as lost (the db-failover bench reported 1 lost write with synchronous_mode)."""
    from harness.topology import writeloop

    loop = writeloop.WriteLoop("host=unused", table="t")
    loop.acks = [writeloop.Ack(1, 1.0), writeloop.Ack(2, 2.0)]

    class Conn:
        def __enter__(self) -> Conn:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def execute(self, sql: str) -> list[tuple[int]]:
            loop.acks.append(writeloop.Ack(3, 3.0))  # the loop thread acknowledges id 3 after the snapshot
            return [(1,), (2,)]

    monkeypatch.setattr(writeloop.psycopg, "connect", lambda *a, **k: Conn())
    assert loop.lost() == []
    loop.acks = [writeloop.Ack(1, 1.0), writeloop.Ack(4, 4.0)]
    assert loop.lost() == [4]  # a write acknowledged before the read and missing from it is lost


def test_a_missing_upstream_image_is_pulled_not_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """With HA_CHAOS_FAULTPROXY_IMAGE naming the official Toxiproxy image, `images build` cannot help."""
    from harness.topology import compose

    upstream = "ghcr.io/shopify/toxiproxy:2.9.0"
    topo = compose.Topology("faultproxy", run_id="hc-unit")
    monkeypatch.setattr(compose, "docker_client", lambda: None)
    monkeypatch.setattr(compose, "compose_v2_version", lambda: "2.40.3")
    monkeypatch.setattr(topo, "required_images", lambda: [upstream, images.IMAGES[0].tag])
    monkeypatch.setattr(compose.images, "image_exists", lambda tag: False)
    with pytest.raises(HarnessError) as exc:
        topo._preflight()
    assert f"docker pull {upstream}" in (exc.value.fix or "") and "images build" in (exc.value.fix or "")
    monkeypatch.setattr(topo, "required_images", lambda: [images.IMAGES[0].tag])
    with pytest.raises(HarnessError) as exc:
        topo._preflight()
    assert exc.value.fix == "run `ha-chaos images build`"


def test_the_runs_settings_win_over_the_shell_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Compose lets a variable of the calling process override the --env-file value: a shell that exported
    HA_CHAOS_SUT_BUGS (the README names it) silently replaced `--bugs`, HA_CHAOS_IMAGE_PREFIX the image prefix."""
    from harness.topology import compose, registry

    monkeypatch.setenv("HA_CHAOS_SUT_BUGS", "no_fencing")
    seen: list[dict[str, str]] = []

    def fake_run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        seen.append(kw["env"])  # type: ignore[arg-type]
        return subprocess.CompletedProcess(cmd, 0, "", "")

    topo = compose.Topology("postgres", run_id="hc-unit", bugs="dedup_in_memory")
    monkeypatch.setattr(compose.subprocess, "run", fake_run)
    topo._compose._run_command([*topo._compose.compose_command_property, "up", "--detach"])
    topo.required_images()
    assert [env["HA_CHAOS_SUT_BUGS"] for env in seen] == ["dedup_in_memory", "dedup_in_memory"]
    assert all(env["HA_CHAOS_RUN_ID"] == "hc-unit" for env in seen)

    # a handle attached from another process (`ha-chaos down`) uses the run's own settings too
    monkeypatch.setattr(registry, "REGISTRY_DIR", tmp_path / "runs")
    topo.env_file = tmp_path / "hc-unit.env"
    topo.env_file.write_text("".join(f"{k}={v}\n" for k, v in topo.env.items()))
    registry.register("hc-unit", "postgres", str(topo.env_file), detached=True)
    attached = compose.Topology.attach("hc-unit")
    assert attached.env["HA_CHAOS_SUT_BUGS"] == "dedup_in_memory"
    assert attached._compose.run_env["HA_CHAOS_SUT_BUGS"] == "dedup_in_memory"
    with pytest.raises(HarnessError, match="no run 'hc-other'") as exc:
        compose.Topology.attach("hc-other")
    assert exc.value.fix == "known runs: hc-unit"


@pytest.mark.parametrize("base", [-5, 65530, 70000])
def test_port_base_out_of_range_is_an_input_error(base: int) -> None:
    """`up --port-base 65530` ended in an OverflowError traceback; a negative base started a topology."""
    from harness.errors import InputError
    from harness.topology.compose import Topology

    with pytest.raises(InputError, match="out of range"):  # what `up` builds first, before touching Docker
        Topology("postgres", run_id="hc-unit", port_base=base)
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "doctor", "--port-base", str(base)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "out of range" in proc.stderr and "fix:" in proc.stderr
    ports.validate_base(0)
    ports.validate_base(65535 - 74)


def test_down_of_an_unknown_run_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`ha-chaos down --run typo` used to print "run typo removed"."""
    import argparse

    from harness.topology import cli, registry

    monkeypatch.setattr(registry, "REGISTRY_DIR", tmp_path)
    monkeypatch.setattr(registry, "remove_run_objects", lambda run_id: {"containers": 0, "networks": 0, "volumes": 0})
    monkeypatch.setattr(registry, "labelled_runs", lambda: {"hc-live"})
    with pytest.raises(HarnessError, match="no run 'typo'") as exc:
        cli._down(argparse.Namespace(all=False, run="typo"))
    assert exc.value.fix == "runs: hc-live"


def test_sigterm_during_an_image_build_removes_its_temporary_root(tmp_path: Path) -> None:
    """A SIGTERMed `images build` left its debootstrap root file system (~130 MB) in /tmp."""
    import signal

    marker = tmp_path / "rootfs-dir"
    script = f"""
import sys, tempfile, time
from pathlib import Path
from harness.platform import images, setup
setup.docker_client = lambda timeout=60: None
def build_images(**kw):
    with tempfile.TemporaryDirectory(dir={str(tmp_path)!r}) as tmp:
        Path({str(marker)!r}).write_text(tmp)
        print("building", flush=True)
        time.sleep(60)
    return []
images.build_images = build_images
from harness.cli import main
sys.exit(main(["images", "build"]))
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "building", proc.stderr.read()
        rootfs = Path(marker.read_text())
        assert rootfs.is_dir()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert not rootfs.exists(), "the temporary root file system was left behind"
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("exc, code", [("term", 143), ("hup", 129), ("ctrl-c", 130)])
def test_signals_end_the_cli_with_their_conventional_exit_code(exc: str, code: int,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM/SIGHUP arrive as ``Terminated`` (a KeyboardInterrupt, so pytest tears down on them too): the CLI
    must still exit 128 + signal for them and 130 only for Ctrl-C."""
    import argparse
    import signal

    from harness import cli
    from harness.topology.signals import Terminated

    raised = {"term": Terminated(signal.SIGTERM), "hup": Terminated(signal.SIGHUP), "ctrl-c": KeyboardInterrupt()}

    def boom(_args: object) -> int:
        raise raised[exc]

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    monkeypatch.setattr(parser, "parse_args", lambda argv=None: argparse.Namespace(verbose=False, func=boom))
    assert cli.main([]) == code


def test_a_killed_base_image_build_leaves_no_rootfs_behind(tmp_path) -> None:
    """debootstrap trees are named after the building process; the next build removes those of dead ones."""
    import os

    from harness.platform.images import ROOTFS_PREFIX, sweep_rootfs

    dead = _dead_pid()
    (tmp_path / f"{ROOTFS_PREFIX}{dead}-abc" / "rootfs").mkdir(parents=True)
    (tmp_path / f"{ROOTFS_PREFIX}old_style").mkdir()
    live = tmp_path / f"{ROOTFS_PREFIX}{os.getpid()}-def"
    live.mkdir()
    removed = {p.name for p in sweep_rootfs(str(tmp_path))}
    assert removed == {f"{ROOTFS_PREFIX}{dead}-abc", f"{ROOTFS_PREFIX}old_style"}
    assert live.exists()


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid
