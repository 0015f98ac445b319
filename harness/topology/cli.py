"""Sub-commands ``up``, ``status``, ``down``."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from harness.errors import HarnessError
from harness.topology import registry
from harness.topology.compose import Topology
from harness.topology.signals import Terminated, terminate_gracefully


def add_replication_flags(p: argparse.ArgumentParser) -> None:
    """``--synchronous-mode`` (the default) / ``--async-replication``: the PostgreSQL replication mode of a
    topology the command starts (dest ``synchronous_mode``: True, False)."""
    sync = p.add_mutually_exclusive_group()
    sync.add_argument("--synchronous-mode", dest="synchronous_mode", action="store_true", default=True,
                      help="Patroni synchronous_mode: true, no acknowledged commit lost on failover (the default)")
    sync.add_argument("--async-replication", dest="synchronous_mode", action="store_false",
                      help="Patroni synchronous_mode: false - the known-unsafe mode: a failover may lose "
                           "acknowledged commits")


def add_target_flag(p: argparse.ArgumentParser) -> None:
    """``--target FILE``: the deployment a command starts and tests, described as data (dest ``target``)."""
    p.add_argument("--target", metavar="FILE", default=None,
                   help="target file describing the deployment (default: targets/reference.yaml, the reference "
                        "topology); `ha-chaos target schema` prints its format")


def _latest_detached() -> str:
    detached = [e for e in registry.entries() if e.detached]
    if not detached:
        raise HarnessError("no topology started with `ha-chaos up` is running", "start one with `ha-chaos up`")
    return max(detached, key=lambda e: e.created).run_id


def _up(args: argparse.Namespace) -> int:
    topo = Topology(args.profile, port_base=args.port_base, bugs=args.bugs or "",
                    synchronous_mode=args.synchronous_mode, detached=True, target=args.target)
    with terminate_gracefully():
        try:
            topo.start(timeout=args.timeout)
        except (KeyboardInterrupt, Terminated):
            print("interrupted: topology torn down")
            return 130
    print(f"run {topo.run_id} is up (target {topo.target.name}, profile {args.profile}, {topo.replication} "
          f"PostgreSQL replication); "
          "`ha-chaos down` removes it")
    _print_status(topo, as_json=False)
    return 0


def _print_status(topo: Topology, *, as_json: bool) -> None:
    rows = topo.status()
    if as_json:
        print(json.dumps({"run_id": topo.run_id, "profile": topo.profile, "target": topo.target.name,
                          "replication": topo.replication,
                          "primary": topo.primary(),
                          "services": [r.as_dict() for r in rows]}, indent=2))
        return
    table = Table(title=f"run {topo.run_id}")
    for col in ("service", "state", "health", "role"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.service, r.state, r.health, r.role or "")
    Console().print(table)


def _status(args: argparse.Namespace) -> int:
    topo = Topology.attach(args.run or _latest_detached())
    _print_status(topo, as_json=args.json)
    return 0


def _down(args: argparse.Namespace) -> int:
    if args.all:
        swept = registry.sweep_dead(include_detached=True)
        print(f"removed {len(swept)} run(s): {', '.join(swept) or '-'}")
        return 0
    run_id = args.run or _latest_detached()
    known = registry.lookup(run_id) is not None
    counts = Topology.attach(run_id).stop() if known else registry.remove_run_objects(run_id)
    if not known and not any(counts.values()):
        runs = sorted({e.run_id for e in registry.entries()} | registry.labelled_runs())
        raise HarnessError(f"no run {run_id!r}: not started here and nothing carries its label",
                           f"runs: {', '.join(runs) or 'none'}")
    print(f"run {run_id} removed ({counts.get('containers', 0)} leftover containers swept by label)")
    return 0


def _target_check(args: argparse.Namespace) -> int:
    from harness.topology.target import load_target

    t = load_target(args.file)
    model = t.model("full")
    print(f"target {t.name}: valid ({args.file})")
    roles: dict[str, list[str]] = {}
    for svc in model.services:
        roles.setdefault(svc.role, []).append(svc.name)
    for role, names in roles.items():
        print(f"  {role}: {', '.join(names)}")
    print("  pairs: " + ("; ".join(f"{n} = {', '.join(r)}" for n, r in model.pairs.items()) or "-"))
    print("  parties: " + ("; ".join(f"{n}: {', '.join(p)}" for n, p in t.parties.items()) or "-"))
    print(f"  fault-proxy links: {len(model.links)}; replication {t.replication}; evidence {', '.join(t.evidence)}; "
          f"profiles {', '.join(t.compose)}")
    return 0


def _target_schema(args: argparse.Namespace) -> int:
    from harness.topology.target import target_schema

    print(json.dumps(target_schema(), indent=1))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("target", help="target files: the deployment under test described as data")
    tsub = p.add_subparsers(dest="target_command", required=True)
    t = tsub.add_parser("check", help="validate a target file and print the topology it describes")
    t.add_argument("file", help="a target file, e.g. targets/reference.yaml")
    t.set_defaults(func=_target_check)
    t = tsub.add_parser("schema", help="print the JSON Schema of target files (targets/schema.json)")
    t.set_defaults(func=_target_schema)

    p = sub.add_parser("up", help="start a topology and leave it running (until `ha-chaos down`)")
    p.add_argument("--profile", choices=["postgres", "faultproxy", "full"], default="full",
                   help="postgres: 3 etcd + 3 Patroni nodes + pg-lb; full: the whole reference topology")
    p.add_argument("--port-base", type=int, default=18400,
                   help="fixed host ports: Ledger API p1/p2 = base+1/+2, PostgreSQL = base+32, "
                        "fault proxy = base+74 (0 = all ephemeral)")
    p.add_argument("--bugs", help="comma list of reference-node bug switches (HA_CHAOS_SUT_BUGS)")
    add_replication_flags(p)
    add_target_flag(p)
    p.add_argument("--timeout", type=float, default=180, help="seconds to wait for health")
    p.set_defaults(func=_up)

    p = sub.add_parser("status", help="per service: state, health, role (PG primary/replica, active/passive)")
    p.add_argument("--run", help="run id (default: the latest started with `up`)")
    p.add_argument("--json", action="store_true", help="machine-readable output, names the PG primary")
    p.set_defaults(func=_status)

    p = sub.add_parser("down", help="remove a topology started with `up`")
    p.add_argument("--run", help="run id (default: the latest started with `up`)")
    p.add_argument("--all", action="store_true",
                   help="remove every run started with `up` and every leftover of a dead run "
                        "(runs owned by a live harness process are left alone)")
    p.set_defaults(func=_down)
