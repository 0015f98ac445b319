"""Every fault kind applied to the live reference topology: its effect observed independently, then undone.

Also: a harness process SIGKILLed mid-plan leaves faults behind; ``ha-chaos heal`` (journal) removes them all.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from harness.campaign import heal_runs
from harness.faults.live import LiveInjector, LiveView
from harness.plans.injector import Resolution
from harness.plans.journal import JOURNAL_NAME, open_faults
from harness.plans.schema import STEP_TYPES
from harness.runner import settle
from harness.topology import pg
from harness.topology.compose import Topology

pytestmark = pytest.mark.integration


def _step(topo: Topology, kind: str, **fields):
    return STEP_TYPES[kind].model_validate({"kind": kind, "at": 0, **fields}, context={"model": topo.model})


def _res(targets: list[str], groups: list[list[str]] | None = None, n: int = 0) -> Resolution:
    return Resolution(n, f"hc-test-{time.monotonic_ns()}-s{n}", targets, groups)


def _reaches(topo: Topology, src: str, host: str, port: int) -> bool:
    code = (f"import socket\ntry:\n socket.create_connection(('{host}',{port}),1.5).close(); print('ok')\n"
            "except Exception as e: print('no')")
    _, out = topo.container(src).exec_run(["python3", "-c", code])
    return out.decode().strip() == "ok"


@pytest.fixture
def live(topology: Topology):
    settle(topology)
    inj = LiveInjector(topology)
    yield topology, inj
    settle(topology)


def test_toxic_and_link_down(live) -> None:
    topo, inj = live
    res = _res(["p1a-db"])
    applied = inj.apply(_step(topo, "toxic", target="p1a-db", duration=5,
                              params={"type": "latency", "attributes": {"latency": 50}}), res)
    assert applied.verify()
    assert [t.name for t in inj.proxy.toxics("p1a-db")] == [res.fault_id]
    applied.undo()
    assert inj.proxy.toxics("p1a-db") == []

    res = _res(["p2b-seq1"])
    applied = inj.apply(_step(topo, "link_down", target="p2b-seq1", duration=5), res)
    assert applied.verify() and not inj.proxy.proxy("p2b-seq1").enabled
    applied.undo()
    assert inj.proxy.proxy("p2b-seq1").enabled


def test_partition_two_way_and_one_way(live) -> None:
    topo, inj = live
    assert _reaches(topo, "seq3", "faultproxy", 8474)
    res = _res(["seq3", "faultproxy"], [["seq3"], ["faultproxy"]])
    applied = inj.apply(_step(topo, "partition", duration=5,
                              params={"groups": [["seq3"], ["faultproxy"]]}), res)
    assert applied.verify()
    assert not _reaches(topo, "seq3", "faultproxy", 8474)
    applied.undo()
    assert _reaches(topo, "seq3", "faultproxy", 8474)

    # one way: what the first group sends to the others is dropped; the reverse direction still connects
    res = _res(["seq3", "seq2"], [["seq3"], ["seq2"]], 1)
    applied = inj.apply(_step(topo, "partition", duration=5,
                              params={"groups": [["seq3"], ["seq2"]], "direction": "one_way"}), res)
    assert applied.verify()
    assert not _reaches(topo, "seq3", "seq2", 8080)
    applied.undo()
    assert _reaches(topo, "seq3", "seq2", 8080)


@pytest.mark.parametrize("kind,state", [("kill", "exited"), ("stop", "exited"), ("pause", "paused")])
def test_container_faults(live, kind: str, state: str) -> None:
    topo, inj = live
    params = {"timeout_s": 1} if kind == "stop" else {}
    applied = inj.apply(_step(topo, kind, target="seq3", duration=5, params=params), _res(["seq3"]))
    assert applied.verify()
    assert topo.container("seq3").status == state
    assert applied.effects.stops == ["seq3"]
    applied.undo()
    topo.container("seq3").reload()
    assert topo.container("seq3").status == "running"


def test_restart(live) -> None:
    topo, inj = live
    before = topo.container("seq2").attrs["State"]["StartedAt"]
    applied = inj.apply(_step(topo, "restart", target="seq2"), _res(["seq2"]))
    assert applied.verify()
    assert topo.container("seq2").attrs["State"]["StartedAt"] != before


@pytest.mark.parametrize("mode", ["kill_primary", "switchover", "pause_primary", "isolate_primary"])
def test_db_failover_changes_the_primary(live, mode: str) -> None:
    topo, inj = live
    old = pg.leader(topo)
    timing = {} if mode == "switchover" else {"duration": 5}  # a switchover happens once: nothing to undo
    applied = inj.apply(_step(topo, "db_failover", params={"mode": mode}, **timing), _res([old]))
    assert applied.verify(), f"{mode}: no new leader"
    new = pg.leader(topo)
    assert new not in (None, old)
    applied.undo()
    # after the undo the cluster must heal: one leader, every member running. Which node leads is Patroni's
    # business - a paused primary that wakes up may take its leadership back before the standby finished promoting.
    # With synchronous replication the next failover also needs a synchronous standby again (Patroni promotes
    # no other): wait for it too, so the next mode starts from a healed cluster.
    members = topo.model.replicas("postgres")
    sync = pg.synchronous_mode(topo)

    def healed() -> bool:
        ms = pg.members(topo)
        return (pg.leader(topo) is not None and len(ms) == len(members)
                and all(m.get("state") in ("running", "streaming") for m in ms.values())
                and (not sync or any(m.get("role") == "sync_standby" for m in ms.values())))

    pg.await_condition("one leader, every member running and (synchronous mode) a synchronous standby", healed, 120)


def test_former_primary_trap_routes_to_the_standby(live) -> None:
    topo, inj = live
    leader = pg.leader(topo)
    applied = inj.apply(_step(topo, "former_primary_trap", target="p2b-db", duration=5), _res(["p2b-db"]))
    assert applied.verify()
    standby = next(s for s in topo.model.replicas("postgres") if s != leader)
    assert inj.proxy.proxy("p2b-db").upstream == f"{standby}:5432"
    applied.undo()
    assert inj.proxy.proxy("p2b-db").upstream == "pg-lb:5432"


def test_partition_of_a_node_from_postgres_cuts_the_proxied_path_at_both_ends(live) -> None:
    """Node vs PostgreSQL: container rules between them would cut nothing (the node talks to the fault proxy,
    PostgreSQL to pg-lb), so the injector drops the node's DB link at the node and silences the node's open
    sessions at the server (rules on the ports pg-lb uses for them); heal removes every rule."""
    topo, inj = live
    view = LiveView(topo)
    node, primary = view.active("p2"), view.pg_primary()
    assert node and primary
    link = topo.model.link(f"{node}-db")
    sessions = inj._sessions_of(primary, node)
    assert sessions, f"{node} has no session on {primary} (application_name)"
    res = _res([node, primary], [[node], [primary]])
    applied = inj.apply(_step(topo, "partition", duration=5, params={"groups": [[node], [primary]]}), res)
    try:
        assert applied.verify()
        assert not _reaches(topo, node, "faultproxy", link.listen_port)
        assert _reaches(topo, node, "faultproxy", 8474), "only the DB link is cut, not the whole proxy"
        at_db = inj._rules_with(primary, res.fault_id)
        for _, port in sessions:
            assert any(f"--sport {port}" in r for r in at_db) and any(f"--dport {port}" in r for r in at_db)
        assert applied.effects.cuts_db == [node]
    finally:
        applied.undo()
    assert not inj._rules_with(node, res.fault_id) and not inj._rules_with(primary, res.fault_id)
    assert _reaches(topo, node, "faultproxy", link.listen_port)


def test_db_setting_is_set_and_reverted(live) -> None:
    """``ALTER DATABASE .. SET`` on the target nodes' database (without reconnecting anyone here), ``RESET`` at
    heal; the journal's record alone can revert it (``heal``)."""
    topo, inj = live

    def settings() -> list[str]:
        with psycopg.connect(pg.dsn(topo, dbname="postgres"), autocommit=True) as conn:
            row = conn.execute("select s.setconfig from pg_db_role_setting s join pg_database d "
                               "on d.oid = s.setdatabase where d.datname = 'p2' and s.setrole = 0").fetchone()
        return list(row[0]) if row else []

    step = _step(topo, "db_setting", target="p2a", duration=5,
                 params={"setting": "work_mem", "value": "5MB", "reconnect": False})
    res = _res(["p2a"])
    applied = inj.apply(step, res)
    assert applied.verify() and "work_mem=5MB" in settings()
    applied.undo()
    assert not any(c.startswith("work_mem=") for c in settings())
    inj.apply(step, res)
    inj.heal({"id": res.fault_id, "kind": "db_setting", "resolved": ["p2a"], "record": dict(applied.record)})
    assert not any(c.startswith("work_mem=") for c in settings())


def _cfs_quota(topo: Topology, service: str) -> str:
    """The CPU quota the container's own cgroup holds (cgroup v1 or v2), read from inside it."""
    code = ("cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cut -d' ' -f1 /sys/fs/cgroup/cpu.max")
    _, out = topo.container(service).exec_run(["sh", "-c", code])
    return out.decode().strip()


def test_slow_node_squeezes_the_cpu_quota_and_gives_it_back(live) -> None:
    topo, inj = live
    assert _cfs_quota(topo, "p1a") in ("-1", "max")
    applied = inj.apply(_step(topo, "slow_node", target="p1a", duration=5, params={"cpus": 0.05}), _res(["p1a"]))
    assert applied.verify()
    assert _cfs_quota(topo, "p1a") == "5000"  # 5 ms per 100 ms period
    applied.undo()
    assert _cfs_quota(topo, "p1a") in ("-1", "max")
    applied.undo()  # idempotent


def _sequencer_clock_skew(topo: Topology, service: str) -> float:
    """How far the sequencer's own clock (what it timestamps with: its /v1/time) is from the host's, in seconds."""
    import requests

    t0 = time.time()
    now_us = requests.get(topo.url(service, 7000) + "/v1/time", timeout=5).json()["now_us"]
    return now_us / 1e6 - (t0 + time.time()) / 2


def test_clock_steps_a_sequencer_clock_and_puts_it_right(live) -> None:
    topo, inj = live
    assert abs(_sequencer_clock_skew(topo, "seq1")) < 0.5
    applied = inj.apply(_step(topo, "clock", target="seq1", duration=5, params={"offset_s": -30}), _res(["seq1"]))
    assert applied.verify()
    assert abs(_sequencer_clock_skew(topo, "seq1") + 30) < 0.5
    assert abs(_sequencer_clock_skew(topo, "seq2")) < 0.5  # only the target is skewed
    applied.undo()
    deadline = time.monotonic() + 5
    while abs(_sequencer_clock_skew(topo, "seq1")) >= 0.5 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert abs(_sequencer_clock_skew(topo, "seq1")) < 0.5


def test_packet_loss_drops_what_a_service_exchanges_with_its_peers(live) -> None:
    topo, inj = live
    assert _reaches(topo, "p1a", "faultproxy", 8474)
    applied = inj.apply(_step(topo, "packet_loss", target="p1a", duration=5, params={"probability": 1.0}),
                        _res(["p1a"]))
    assert applied.verify()
    assert not _reaches(topo, "p1a", "faultproxy", 8474)
    assert _reaches(topo, "p1b", "faultproxy", 8474)  # only the target
    applied.undo()
    assert _reaches(topo, "p1a", "faultproxy", 8474)
    applied.undo()  # idempotent


def test_live_view_sees_roles(live) -> None:
    topo, _ = live
    view = LiveView(topo)
    assert view.pg_primary() in topo.model.replicas("postgres")
    for pair, replicas in topo.model.pairs.items():
        assert view.active(pair) in replicas


PLAN = """
version: 1
name: leave-faults-behind
description: long faults, so the harness is killed while they are in effect
seed: 1
warmup_s: 0
steps:
  - {kind: toxic, at: 0, target: p2b-seq2, duration: 300, params: {type: latency, attributes: {latency: 100}}}
  - {kind: pause, at: 0, target: seq3, duration: 300}
  - {kind: partition, at: 0, duration: 300, params: {groups: [[seq2], [faultproxy]]}}
quiet_period: 5
recovery_bound_s: 5
"""

CHILD = """
import sys
from pathlib import Path
from harness.faults.live import LiveInjector, LiveView
from harness.history import HistoryWriter
from harness.plans.executor import Executor
from harness.plans.loader import parse_plan
from harness.topology.compose import Topology
topo = Topology.attach(sys.argv[1])
run_dir = Path(sys.argv[2])
plan = parse_plan(Path(sys.argv[3]).read_text(), sys.argv[3], topo.model)
Executor(plan, LiveInjector(topo), LiveView(topo), HistoryWriter(run_dir / "history.jsonl"), run_dir,
         run_id=topo.run_id).run()
"""


def test_sigkill_mid_plan_then_heal_leaves_nothing(live, tmp_path: Path) -> None:
    topo, inj = live
    from harness.topology import registry

    registry.set_detached(topo.run_id, True)  # so the child can attach to it
    run_dir = tmp_path / "runs" / "leave-faults-behind" / "t1"
    run_dir.mkdir(parents=True)
    (run_dir / "topology.json").write_text(json.dumps({"run_id": topo.run_id}))
    plan_path = tmp_path / "plan.yaml"
    plan_path.write_text(PLAN)
    child = subprocess.Popen([sys.executable, "-c", CHILD, topo.run_id, str(run_dir), str(plan_path)])
    try:
        journal = run_dir / JOURNAL_NAME
        pg.await_condition("three applied faults in the journal",
                           lambda: journal.exists() and journal.read_text().count('"op":"applied"') >= 3, 90)
        pg.await_condition("the pause to take", lambda: topo.container("seq3").status == "paused", 30)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        assert len(open_faults(journal)) == 3
        assert inj.proxy.toxics("p2b-seq2"), "nothing was left behind: the test would prove nothing"
        heal_runs(tmp_path / "runs")
        assert open_faults(journal) == []
        assert inj.proxy.toxics("p2b-seq2") == []
        topo.container("seq3").reload()
        assert topo.container("seq3").status == "running"
        assert not [ln for ln in inj._iptables("seq2", ["-S", "INPUT"]).stdout.splitlines() if "hc-" in ln]
    finally:
        registry.set_detached(topo.run_id, False)
        if child.poll() is None:
            child.kill()
