"""``ha-chaos bench db-failover``: SIGKILL the Patroni leader under a write loop and measure what a client sees.

Per failover: seconds from the kill to the first acknowledged write through pg-lb, whether the old leader
rejoined as a streaming replica (and how long that took after it was started again), and how many acknowledged
writes were lost. Two faults: ``kill`` (the leader alone) and ``stall-kill`` (the leader's replication to every
standby is cut first, writes go on for a few seconds, then the leader is killed: the known-unsafe case of
asynchronous replication). Runs with ``synchronous_mode`` false and true on one topology (switched through
Patroni's REST API), because loss without synchronous replication is real PostgreSQL behaviour: reported, not
hidden; with synchronous replication a lost acknowledged write is a failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass, field

from harness.errors import HarnessError
from harness.topology import pg
from harness.topology.compose import Topology
from harness.topology.signals import terminate_gracefully
from harness.topology.writeloop import WriteLoop

FAULTS = ("kill", "stall-kill")
#: how long the leader's replication is cut, under writes, before it is killed (stall-kill)
STALL_S = 8.0
#: stall-kill with synchronous replication: no standby is synchronous when the leader dies, so Patroni promotes
#: nobody (no acknowledged commit is lost); after this long the old leader is started again and resumes
NO_PROMOTION_WAIT_S = 25.0


@dataclass
class FailoverSample:
    synchronous_mode: bool
    old_leader: str
    new_leader: str | None
    failover_s: float | None
    rejoined: bool
    rejoin_s: float | None
    acked: int
    lost: int
    #: when writes did not resume or no new leader was elected: the last log lines of the surviving members
    diagnosis: list[str] = field(default_factory=list)
    fault: str = "kill"


def _iptables(topo: Topology, service: str, args: list[str]) -> None:
    """iptables in ``service``'s network namespace (nsenter from the host as root, else docker exec)."""
    c = topo.container(service)
    c.reload()
    pid = c.attrs["State"].get("Pid") or 0
    if os.geteuid() == 0 and shutil.which("nsenter") and shutil.which("iptables") and pid:
        proc = subprocess.run(["nsenter", "-t", str(pid), "-n", "iptables", "-w", *args], capture_output=True,
                              text=True, timeout=20)
        rc, out = proc.returncode, proc.stderr or proc.stdout
    else:
        rc, raw = c.exec_run(["iptables", "-w", *args])
        out = raw.decode(errors="replace")
    if rc != 0:
        raise HarnessError(f"iptables {' '.join(args)} in {service} failed: {out.strip()[:200]}")


def _ip(topo: Topology, service: str) -> str:
    c = topo.container(service)
    c.reload()
    for net in c.attrs["NetworkSettings"]["Networks"].values():
        if net.get("IPAddress"):
            return str(net["IPAddress"])
    raise HarnessError(f"{service} has no IP address on the project network")


def cut_replication(topo: Topology, leader: str) -> None:
    """Drop everything between ``leader`` and the other PostgreSQL members, in the leader's namespace only: the
    rules end with the leader's container (a killed container gets a new network namespace when started)."""
    for other in [s for s in topo.model.replicas("postgres") if s != leader]:
        ip = _ip(topo, other)
        _iptables(topo, leader, ["-I", "INPUT", "-s", ip, "-j", "DROP"])
        _iptables(topo, leader, ["-I", "OUTPUT", "-d", ip, "-j", "DROP"])


FAILOVER_TIMEOUT_S = 60.0


def kill_leader_once(topo: Topology, loop: WriteLoop, *, sync: bool, fault: str = "kill",
                     timeout: float = FAILOVER_TIMEOUT_S) -> FailoverSample:
    old = pg.await_condition("a Patroni leader", lambda: pg.leader(topo), 60)
    pg.await_condition("acknowledged writes before the kill", lambda: loop.first_ack_after(time.monotonic() - 1), 30)
    if fault == "stall-kill":
        cut_replication(topo, old)
        time.sleep(STALL_S)  # the fault's length, not a wait for a condition: writes go on meanwhile
    topo.container(old).kill()  # SIGKILL; returns once the signal is delivered
    t_kill = time.monotonic()  # taken after the kill so that no ack of the old leader can count as "after"
    promotion_expected = not (fault == "stall-kill" and sync)
    # Start the old leader again only once another node leads: restarted within the leader TTL, it would
    # still hold the leader key and simply resume as leader (real Patroni behaviour, not a failover). With
    # synchronous replication after a stall no standby is synchronous: Patroni rightly promotes none, and the
    # old leader must come back for writes to resume.
    try:
        new = pg.await_condition("a new Patroni leader", lambda: pg.leader(topo) not in (None, old) and pg.leader(topo),
                                 timeout if promotion_expected else NO_PROMOTION_WAIT_S)
    except HarnessError:
        new = None
    if not promotion_expected and new is None:
        topo.container(old).start()
    t_ok = loop.await_ack_after(t_kill, timeout)
    diagnosis = []
    if t_ok is None or (new is None and promotion_expected):  # say why before restarting the old leader
        diagnosis = [f"members: {pg.members(topo)}"]
        for svc in topo.model.replicas("postgres"):
            if svc != old:
                diagnosis += [f"{svc}: {line}" for line in topo.log_tail(svc, 12)]
    rejoin_s: float | None = None
    if new is None:   # nobody was promoted: the old leader must resume as leader
        if promotion_expected:
            topo.container(old).start()
        try:
            pg.await_condition(f"{old} to lead again", lambda: pg.leader(topo) == old, timeout)
            rejoined = True
        except HarnessError:
            rejoined = False
    else:
        topo.container(old).start()
        try:
            rejoin_s = pg.wait_replica_streaming(topo, old, timeout=120)
            rejoined = True
        except HarnessError:
            rejoined = False
    if sync:  # wait until synchronous replication is back before the next kill
        pg.await_condition("a synchronous standby", lambda: any(
            m.get("role") == "sync_standby" for m in pg.members(topo).values()), 60)
    acked = len(loop.acks)
    pg.ensure_streaming(topo)   # every standby streams again before the next sample
    return FailoverSample(sync, old, new, None if t_ok is None else t_ok - t_kill, rejoined, rejoin_s,
                          acked, len(loop.lost()), diagnosis, fault)


def run_bench(runs: int, modes: list[bool], faults: list[str] = ["kill"]) -> list[FailoverSample]:  # noqa: B006
    samples: list[FailoverSample] = []
    with terminate_gracefully(), Topology("postgres") as topo:
        pg.wait_writable(topo)
        pg.ensure_streaming(topo)   # a standby still being built would make the first sample meaningless
        for sync in modes:
            pg.set_synchronous_mode(topo, sync)
            for fault in faults:
                # one table per (mode, fault): "lost" counts this sample set's writes only
                table = f"bench_{'sync' if sync else 'async'}_{fault.replace('-', '_')}"
                loop = WriteLoop(pg.dsn(topo, connect_timeout=1), table=table).start()
                try:
                    for _ in range(runs):
                        samples.append(kill_leader_once(topo, loop, sync=sync, fault=fault))
                finally:
                    loop.stop()
    return samples


def summarize(samples: list[FailoverSample]) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for sync, fault in sorted({(s.synchronous_mode, s.fault) for s in samples}):
        ss = [s for s in samples if s.synchronous_mode == sync and s.fault == fault]
        times = [s.failover_s for s in ss if s.failover_s is not None]
        out[f"synchronous_mode={str(sync).lower()} fault={fault}"] = {
            "runs": len(ss),
            "failover_s": {"min": min(times), "median": statistics.median(times), "max": max(times)} if times else None,
            "writes_never_resumed": len(ss) - len(times),
            "old_leader_rejoined": f"{sum(s.rejoined for s in ss)}/{len(ss)}",
            "rejoin_s_median": statistics.median([s.rejoin_s for s in ss if s.rejoin_s is not None] or [0]),
            "acknowledged_writes": ss[-1].acked,
            "acknowledged_writes_lost": ss[-1].lost,
        }
    return out


def failures(samples: list[FailoverSample]) -> list[str]:
    """What the platform promises and a sample broke: writes resume, the old leader rejoins as a replica, and with
    synchronous_mode no acknowledged write is lost (loss without it is PostgreSQL's behaviour: reported only)."""
    out = []
    for i, s in enumerate(samples):
        tag = f"{s.fault} {i + 1} (synchronous_mode={str(s.synchronous_mode).lower()}, {s.old_leader} killed)"
        if s.failover_s is None:
            out.append(f"{tag}: writes did not resume within {FAILOVER_TIMEOUT_S:.0f} s"
                       + ("" if s.new_leader else ", no new leader was elected"))
        if not s.rejoined:
            out.append(f"{tag}: {s.old_leader} did not rejoin as a streaming replica"
                       if s.new_leader else f"{tag}: {s.old_leader} did not resume as leader")
    for fault in FAULTS:   # the last sample of each fault counts every write of its loop
        for s in [s for s in samples if s.synchronous_mode and s.fault == fault][-1:]:
            if s.lost:
                out.append(f"synchronous_mode=true fault={fault}: {s.lost} acknowledged writes lost")
    return out


def _db_failover(args: argparse.Namespace) -> int:
    modes = {"both": [False, True], "on": [True], "off": [False]}[args.synchronous_mode]
    faults = list(FAULTS) if args.fault == "both" else [args.fault]
    samples = run_bench(args.runs, modes, faults)
    summary = summarize(samples)
    failed = failures(samples)
    if args.json:
        print(json.dumps({"summary": summary, "failures": failed, "samples": [asdict(s) for s in samples]},
                         indent=2))
    else:
        for mode, fig in summary.items():
            ft = fig["failover_s"]
            times = f"min {ft['min']:.1f} s / median {ft['median']:.1f} s / max {ft['max']:.1f} s" if ft else "n/a"
            never = f" ({fig['writes_never_resumed']} never resumed)" if fig["writes_never_resumed"] else ""
            print(f"{mode}: {fig['runs']} leader kills; kill -> first acknowledged write: {times}{never}; "
                  f"old leader back (replica, or leader again when nobody was promotable): "
                  f"{fig['old_leader_rejoined']}; "
                  f"acknowledged writes lost: {fig['acknowledged_writes_lost']} of {fig['acknowledged_writes']}")
        for line in failed:
            print(f"FAILED {line}")
        for s in samples:
            for line in s.diagnosis:
                print(f"  {line}")
    return 1 if failed else 0


def register(bench: argparse._SubParsersAction) -> None:
    p = bench.add_parser("db-failover", help="kill the Patroni leader under a write loop; failover time, rejoin, loss",
                         description="Exits 1 when writes did not resume after a kill, an old leader did not rejoin "
                                     "as a streaming replica (or resume as leader when no standby was "
                                     "promotable), or an acknowledged write was lost with synchronous_mode (loss "
                                     "without it is reported, not a failure).")
    p.add_argument("--runs", type=int, default=3, help="leader kills per synchronous_mode setting and fault")
    p.add_argument("--synchronous-mode", choices=["both", "on", "off"], default="both")
    p.add_argument("--fault", choices=["kill", "stall-kill", "both"], default="both",
                   help="kill: SIGKILL of the leader; stall-kill: its replication to every standby cut for "
                        f"{STALL_S:g} s under writes, then SIGKILL (the known-unsafe case of async replication)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_db_failover)
