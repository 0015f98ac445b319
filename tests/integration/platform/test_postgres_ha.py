"""PostgreSQL HA on Patroni through the harness: failover under writes, status, leak sweeping, clear errors."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from harness import RUN_LABEL
from harness.bench.db_failover import kill_leader_once
from harness.platform.setup import docker_client
from harness.topology import pg, registry
from harness.topology.compose import Topology
from harness.topology.writeloop import WriteLoop

pytestmark = pytest.mark.integration


def _objects(run_id: str) -> int:
    client = docker_client()
    flt = {"label": f"{RUN_LABEL}={run_id}"}
    return (len(client.containers.list(all=True, filters=flt, ignore_removed=True))
            + len(client.networks.list(filters=flt)) + len(client.volumes.list(filters=flt)))


def test_leader_kill_with_synchronous_mode_loses_no_acknowledged_write(topology_factory) -> None:
    topo = topology_factory("postgres", synchronous_mode=True)
    status = topo.status()
    roles = {s.service: s.role for s in status}
    pg_roles = sorted(roles[s] for s in ("pg1", "pg2", "pg3"))  # one primary, two standbys (one may be synchronous)
    assert pg_roles[0] == "primary" and set(pg_roles[1:]) <= {"replica", "sync_standby"}, pg_roles
    assert topo.replication == "synchronous"
    assert {s.service: s.ports for s in status}["pg-lb"]["5432"] == topo.host_port("pg-lb", 5432)
    assert topo.primary() == next(s for s, r in roles.items() if r == "primary")
    pg.wait_writable(topo)
    pg.set_synchronous_mode(topo, True)
    loop = WriteLoop(pg.dsn(topo, connect_timeout=1)).start()
    try:
        # the leader lease is 20 s (Patroni 4's floor): a new leader comes about 20 s after the kill
        sample = kill_leader_once(topo, loop, sync=True, timeout=45)
    finally:
        loop.stop()
    assert sample.failover_s is not None, "writes did not resume within 45 s of the leader kill"
    assert sample.new_leader not in (None, sample.old_leader)
    assert sample.rejoined, f"{sample.old_leader} did not rejoin as a streaming replica"
    assert sample.acked > 0
    assert sample.lost == 0, f"{sample.lost} acknowledged writes lost with synchronous_mode on"
    # the known-unsafe case of async replication, with synchronous replication: the leader's replication is cut
    # while writes go on, then it is killed - nobody that missed a commit may be promoted
    loop = WriteLoop(pg.dsn(topo, connect_timeout=1), table="stall_kill").start()
    try:
        stalled = kill_leader_once(topo, loop, sync=True, fault="stall-kill", timeout=60)
    finally:
        loop.stop()
    assert stalled.failover_s is not None, "writes did not resume after the stalled leader was killed"
    assert stalled.rejoined, stalled
    assert stalled.lost == 0, f"{stalled.lost} acknowledged writes lost after a replication stall (synchronous)"


def test_sigkilled_harness_leaves_objects_that_the_next_start_sweeps(tmp_path) -> None:
    script = ("import sys,time\nfrom harness.topology.compose import Topology\n"
              "t=Topology('postgres').start()\nprint(t.run_id, flush=True)\ntime.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        run_id = proc.stdout.readline().strip()
        assert run_id.startswith("hc-"), "the child did not start a topology"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert _objects(run_id) > 0, "nothing was left to sweep: the test would prove nothing"
        entry = registry.lookup(run_id)
        assert entry is not None and not entry.alive()
        env_file = registry.ENV_DIR / f"{run_id}.env"
        assert env_file.exists()
        swept = registry.sweep_dead()  # what every Topology.start() does first
        assert run_id in swept
        assert _objects(run_id) == 0
        assert not env_file.exists(), "the dead run's compose env file was left behind"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigterm_tears_down(tmp_path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "bench", "db-failover", "--runs", "1",
                             "--synchronous-mode", "off"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        run_id = None
        while time.monotonic() < deadline and run_id is None:
            live = [e for e in registry.entries() if e.pid == proc.pid]
            run_id = live[0].run_id if live else None
            time.sleep(0.2)
        assert run_id, "the benchmark never registered a run"
        pg.await_condition("containers of the run", lambda: _objects(run_id) > 0, 60)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        assert _objects(run_id) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigterm_to_a_script_holding_a_topology_removes_it() -> None:
    """A process that started a topology and was told to stop (not SIGKILLed) takes it down with it."""
    script = ("import time\nfrom harness.topology.compose import Topology\n"
              "t=Topology('postgres').start()\nprint(t.run_id, flush=True)\ntime.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        run_id = proc.stdout.readline().strip()
        assert run_id.startswith("hc-"), proc.stderr.read()
        assert _objects(run_id) > 0
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        assert _objects(run_id) == 0, "SIGTERM killed the script without tearing its topology down"
        assert registry.lookup(run_id) is None
    finally:
        if proc.poll() is None:
            proc.kill()


HOLDING_TESTS = """
import time
import pytest

pytestmark = pytest.mark.integration

def test_first({fixture}):
    topo = {make}
    print("holding", topo.run_id, flush=True)
    time.sleep(300)

def test_second({fixture}):  # the same fixture: the plugin orders tests by the topology they use
    print("SECOND RAN", flush=True)
"""


@pytest.mark.parametrize("fixture", ["topology_factory", "topology"])
def test_sigterm_to_pytest_ends_the_session_and_removes_the_topology(tmp_path, fixture: str) -> None:
    """`kill <pytest>` must act like Ctrl-C: before, a test holding a `topology_factory` topology was killed outright
    (its containers, network and volumes stayed until the next start swept them), and with the session `topology`
    the SIGTERM failed only the running test: the session went on with the next one."""
    make = "topology_factory('postgres')" if fixture == "topology_factory" else "topology"
    (tmp_path / "test_holding.py").write_text(HOLDING_TESTS.format(fixture=fixture, make=make))
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-s", "--chaos-no-setup",
                             "--chaos-profile", "postgres", "--rootdir", str(tmp_path), "test_holding.py"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out: list[str] = []
    try:
        run_id = None
        for line in proc.stdout:
            out.append(line)
            if "holding hc-" in line:  # with -q -s the print may share its line with the progress output
                run_id = line.split("holding ", 1)[1].split()[0]
                break
        assert run_id, "".join(out)
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=120)
        output = "".join(out) + rest
        assert proc.returncode == pytest.ExitCode.INTERRUPTED, output
        assert "SECOND RAN" not in output, "the session went on after SIGTERM"
        assert _objects(run_id) == 0, output
        assert registry.lookup(run_id) is None
    finally:
        if proc.poll() is None:
            proc.kill()


def _cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *argv], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_up_with_a_port_taken_is_a_clear_error_and_leaves_nothing() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        base = s.getsockname()[1] - 32  # pg-lb's fixed port = base + 32
        before = registry.labelled_runs()
        proc = _cli("up", "--profile", "postgres", "--port-base", str(base))
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr and "in use" in proc.stderr and "fix:" in proc.stderr
    assert registry.labelled_runs() <= before


def test_up_with_an_image_missing_is_a_clear_error() -> None:
    proc = _cli("up", "--profile", "postgres", "--port-base", "0", env={"HA_CHAOS_IMAGE_PREFIX": "no-such-prefix"})
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr
    assert "image missing: no-such-prefix/" in proc.stderr and "images build" in proc.stderr


def test_port_taken_after_the_check_is_one_line_and_leaves_nothing(monkeypatch, capfd) -> None:
    """The port is free when checked but taken when compose publishes it (a race the pre-check cannot close)."""
    from harness.errors import HarnessError
    from harness.topology import compose

    monkeypatch.setattr(compose.ports, "check_ports", lambda *a, **k: None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        topo = Topology("postgres", port_base=s.getsockname()[1] - 32)
        with pytest.raises(HarnessError) as exc:
            topo.start(timeout=60)
    what = exc.value.what
    assert "address already in use" in what and "Container " not in what, what
    assert "--port-base" in (exc.value.fix or "")
    err = capfd.readouterr().err
    assert "Traceback" not in err and "STDERR" not in err, err
    assert _objects(topo.run_id) == 0 and registry.lookup(topo.run_id) is None
    assert not topo.env_file.exists()


def test_image_gone_after_the_check_is_one_line_and_leaves_nothing(monkeypatch, capfd) -> None:
    from harness.errors import HarnessError
    from harness.topology import compose

    monkeypatch.setattr(compose.images, "image_exists", lambda tag: True)
    topo = Topology("postgres", extra_env={"HA_CHAOS_IMAGE_PREFIX": "no-such-prefix"})
    with pytest.raises(HarnessError) as exc:
        topo.start(timeout=60)
    assert "No such image: no-such-prefix/" in exc.value.what and "Container " not in exc.value.what
    assert "images build" in (exc.value.fix or "")
    err = capfd.readouterr().err
    assert "Traceback" not in err and "STDERR" not in err, err
    assert _objects(topo.run_id) == 0 and registry.lookup(topo.run_id) is None


def test_topology_lifecycle_leaves_nothing() -> None:
    topo = Topology("postgres")
    with topo:
        assert _objects(topo.run_id) > 0
    assert _objects(topo.run_id) == 0
