"""``ha-chaos bench db-failover``: SIGKILL the Patroni leader under a write loop and measure what a client sees.

Per failover: seconds from the kill to the first acknowledged write through pg-lb, whether the old leader
rejoined as a streaming replica (and how long that took after it was started again), and how many acknowledged
writes were lost. Runs with ``synchronous_mode`` false and true on one topology (switched through Patroni's REST
API), because loss without synchronous replication is real PostgreSQL behaviour: reported, not hidden.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass, field

from harness.errors import HarnessError
from harness.topology import pg
from harness.topology.compose import Topology
from harness.topology.signals import terminate_gracefully
from harness.topology.writeloop import WriteLoop


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


FAILOVER_TIMEOUT_S = 60.0


def kill_leader_once(topo: Topology, loop: WriteLoop, *, sync: bool,
                     timeout: float = FAILOVER_TIMEOUT_S) -> FailoverSample:
    old = pg.await_condition("a Patroni leader", lambda: pg.leader(topo), 60)
    pg.await_condition("acknowledged writes before the kill", lambda: loop.first_ack_after(time.monotonic() - 1), 30)
    topo.container(old).kill()  # SIGKILL; returns once the signal is delivered
    t_kill = time.monotonic()  # taken after the kill so that no ack of the old leader can count as "after"
    t_ok = loop.await_ack_after(t_kill, timeout)
    # Start the old leader again only once another node leads: restarted within the leader TTL, it would
    # still hold the leader key and simply resume as leader (real Patroni behaviour, not a failover).
    try:
        new = pg.await_condition("a new Patroni leader", lambda: pg.leader(topo) not in (None, old) and pg.leader(topo),
                                 timeout)
    except HarnessError:
        new = None
    diagnosis = []
    if t_ok is None or new is None:  # say why before restarting the old leader changes the picture
        diagnosis = [f"members: {pg.members(topo)}"]
        for svc in topo.model.replicas("postgres"):
            if svc != old:
                diagnosis += [f"{svc}: {line}" for line in topo.log_tail(svc, 12)]
    topo.container(old).start()
    try:
        rejoin_s: float | None = pg.wait_replica_streaming(topo, old, timeout=120)
        rejoined = True
    except HarnessError:
        rejoin_s, rejoined = None, False
    if sync:  # wait until synchronous replication is back before the next kill
        pg.await_condition("a synchronous standby", lambda: any(
            m.get("role") == "sync_standby" for m in pg.members(topo).values()), 60)
    acked = len(loop.acks)
    return FailoverSample(sync, old, new, None if t_ok is None else t_ok - t_kill, rejoined, rejoin_s,
                          acked, len(loop.lost()), diagnosis)


def run_bench(runs: int, modes: list[bool]) -> list[FailoverSample]:
    samples: list[FailoverSample] = []
    with terminate_gracefully(), Topology("postgres") as topo:
        pg.wait_writable(topo)
        for sync in modes:
            pg.set_synchronous_mode(topo, sync)
            loop = WriteLoop(pg.dsn(topo, connect_timeout=1), table=f"bench_{'sync' if sync else 'async'}").start()
            try:
                for _ in range(runs):
                    samples.append(kill_leader_once(topo, loop, sync=sync))
            finally:
                loop.stop()
    return samples


def summarize(samples: list[FailoverSample]) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for sync in sorted({s.synchronous_mode for s in samples}):
        ss = [s for s in samples if s.synchronous_mode == sync]
        times = [s.failover_s for s in ss if s.failover_s is not None]
        out[f"synchronous_mode={str(sync).lower()}"] = {
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
        tag = f"kill {i + 1} (synchronous_mode={str(s.synchronous_mode).lower()}, {s.old_leader} killed)"
        if s.failover_s is None:
            out.append(f"{tag}: writes did not resume within {FAILOVER_TIMEOUT_S:.0f} s"
                       + ("" if s.new_leader else ", no new leader was elected"))
        if not s.rejoined:
            out.append(f"{tag}: {s.old_leader} did not rejoin as a streaming replica")
    for s in [s for s in samples if s.synchronous_mode][-1:]:
        if s.lost:
            out.append(f"synchronous_mode=true: {s.lost} acknowledged writes lost")
    return out


def _db_failover(args: argparse.Namespace) -> int:
    modes = {"both": [False, True], "on": [True], "off": [False]}[args.synchronous_mode]
    samples = run_bench(args.runs, modes)
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
                  f"old leader rejoined as replica: {fig['old_leader_rejoined']}; "
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
                                     "as a streaming replica, or an acknowledged write was lost with "
                                     "synchronous_mode (loss without it is reported, not a failure).")
    p.add_argument("--runs", type=int, default=3, help="leader kills per synchronous_mode setting")
    p.add_argument("--synchronous-mode", choices=["both", "on", "off"], default="both")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_db_failover)
