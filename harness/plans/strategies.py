"""Hypothesis strategies that invent fault plans, composed from small named pieces.

Why weighted toward the active replica and the PG primary: a fault on a passive replica mostly tests that
nothing happens; the bugs this harness hunts (two writers, lost or doubled commands) live where the active side
is cut, stopped or fails over, especially when faults overlap - and in the PostgreSQL HA tier underneath (a
standby's replication cut, the Patroni leader cut from etcd, an etcd member lost), where an acknowledged commit
can vanish in a failover. Every generated plan is validated against the
same schema as hand-written ones (``fault_plans`` maps through ``validate_plan``), so a strategy bug shows up
as an error at generation time, never as a silently different plan.

``roles`` limits what a plan aims at to services of some roles (swarm testing: ``harness.swarm`` draws a subset
of kinds and roles per plan); ``min_steps`` and ``min_duration`` keep a campaign's plans from being trivial.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from hypothesis import strategies as st

from harness.faults.kinds import kind as module_kind
from harness.faults.kinds import registered
from harness.plans.schema import KINDS, Plan, validate_plan
from harness.topology.model import TopologyModel

LINK_KINDS = ("toxic", "link_down", "former_primary_trap")
#: kinds Hypothesis draws from by default. ``db_setting`` is left out: a meaningful setting is a deliberate
#: scenario (see fault_plans/bad-db-setting.yaml), not something to sample blindly.
#: The kinds defined one module each (``harness.faults.kinds``) say themselves whether they are drawn.
GENERATED_KINDS = tuple(k for k in KINDS if k != "db_setting" and (module_kind(k) is None or registered()[k].generated))
INSTANT_KINDS = ("restart", "set_passive")
HALF_SECONDS = st.integers(0, 10**6)
#: roles a plan can be limited to (``fault_plans(roles=...)``): the roles of the services faults hit. The load
#: balancers and the fault proxy are not among them: HAProxy and the ledger balancer are stateless routers whose
#: loss looks to the nodes like a cut DB link or to clients like an unavailable API, which link faults and
#: partitions already produce; the fault proxy is the mechanism of link faults, not a target.
TARGET_ROLES = ("participant", "mediator", "sequencer", "postgres", "etcd")


def restrict(model: TopologyModel, roles: Collection[str]) -> TopologyModel:
    """The part of ``model`` a plan limited to ``roles`` aims at: the services of those roles, the fault-proxy
    links those services are the clients of, and the fault proxy itself when there are such links (a partition
    from it cuts them). Plans drawn on it are still validated against the whole model."""
    unknown = sorted(set(roles) - set(TARGET_ROLES))
    if unknown:
        raise ValueError(f"unknown target role(s) {unknown} (one of {', '.join(TARGET_ROLES)})")
    keep = [s for s in model.services if s.role in roles]
    names = {s.name for s in keep}
    links = tuple(lk for lk in model.links if lk.client in names)
    if links:
        keep += model.by_role("faultproxy")
    return TopologyModel(tuple(keep), links, model.clock_roles)


def weighted(options: Sequence[tuple[int, st.SearchStrategy[Any]]]) -> st.SearchStrategy[Any]:
    """Pick one strategy with probability proportional to its weight; shrinks toward the first option."""
    expanded = [s for w, s in options for _ in range(w) if w > 0]
    return st.sampled_from(range(len(expanded))).flatmap(lambda i: expanded[i])


def seconds(lo: float, hi: float) -> st.SearchStrategy[float]:
    """Half-second steps: readable plans, and shrinking lands on round numbers."""
    return st.integers(int(lo * 2), int(hi * 2)).map(lambda n: n / 2)


# --- targets ----------------------------------------------------------------------------------------------
def _pairs(model: TopologyModel, role: str | None = None) -> list[str]:
    return sorted(p for p, reps in model.pairs.items() if role is None or model.service(reps[0]).role == role)


def service_targets(model: TopologyModel) -> st.SearchStrategy[str]:
    """Services to kill/stop/pause: mostly active replicas, then sequencers and the PG primary."""
    pairs = _pairs(model)
    options: list[tuple[int, st.SearchStrategy[str]]] = []
    if pairs:
        options += [(6, st.sampled_from(pairs).map(lambda p: f"active({p})")),
                    (1, st.sampled_from(pairs).map(lambda p: f"passive({p})"))]
    if model.by_role("sequencer"):
        options += [(2, st.just("any(sequencer)"))]
    if model.by_role("postgres"):
        options += [(2, st.just("primary(postgres)"))]
    if len(model.by_role("postgres")) > 1:  # one standby: a single failure, as when there was only one standby
        options += [(1, st.just("any(replica(postgres))"))]
    if model.by_role("etcd"):  # one DCS member: with a quorum left, nothing above PostgreSQL may notice
        options += [(1, st.just("any(etcd)"))]
    options += [(1, st.sampled_from(sorted(s.name for s in model.services if s.role != "faultproxy")))]
    return weighted(options)


def db_link_targets(model: TopologyModel) -> st.SearchStrategy[str]:
    pairs = _pairs(model)
    options: list[tuple[int, st.SearchStrategy[str]]] = [
        (5, st.sampled_from(pairs).map(lambda p: f"db_link(active({p}))")),
        (1, st.sampled_from(pairs).map(lambda p: f"db_link(passive({p}))")),
    ] if pairs else []
    if any(lk.kind == "db" and model.service(lk.client).role == "sequencer" for lk in model.links):
        options.append((2, st.just("db_link(any(sequencer))")))
    options.append((1, st.sampled_from(sorted(lk.name for lk in model.links if lk.kind == "db"))))
    return weighted(options)


def link_targets(model: TopologyModel) -> st.SearchStrategy[str]:
    """Links for toxics / link_down: DB links of actives first, then sequencer links."""
    pairs = _pairs(model)
    options: list[tuple[int, st.SearchStrategy[str]]] = [(5, db_link_targets(model))]
    if pairs and any(lk.kind == "sequencer" for lk in model.links):
        options += [(2, st.sampled_from(pairs).map(lambda p: f"seq_links(active({p}))")),
                    (1, st.sampled_from(pairs).map(lambda p: f"seq_link(active({p}), any(sequencer))"))]
    return weighted(options)


def linked_service_targets(model: TopologyModel) -> st.SearchStrategy[str]:
    """Services that reach others through the fault proxy: cut from it, they lose their links. (A service without
    proxied links - a PostgreSQL member, etcd - cut from the fault proxy loses nothing.)"""
    clients = sorted({lk.client for lk in model.links})
    pairs = [p for p in _pairs(model) if set(model.pairs[p]) & set(clients)]
    options: list[tuple[int, st.SearchStrategy[str]]] = []
    if pairs:
        options += [(6, st.sampled_from(pairs).map(lambda p: f"active({p})")),
                    (1, st.sampled_from(pairs).map(lambda p: f"passive({p})"))]
    if any(model.service(c).role == "sequencer" for c in clients):
        options += [(2, st.just("any(sequencer)"))]
    options += [(1, st.sampled_from(clients))]
    return weighted(options)


def _either_order(a: list[str], b: list[str]) -> st.SearchStrategy[list[list[str]]]:
    """Two groups in either order: a one-way partition drops what the first group sends."""
    return st.sampled_from([[a, b], [b, a]])


def db_tier_groups(model: TopologyModel) -> list[tuple[int, st.SearchStrategy[list[list[str]]]]]:
    """Partitions inside the PostgreSQL HA tier (Patroni nodes and etcd), with their weights.

    The replication path of one standby (its WAL stops, or only its replies do: ``direction`` is drawn apart),
    every standby at once (the primary alone: with synchronous replication its commits wait), the Patroni leader
    cut from the DCS (it must demote itself within the TTL), and the leader cut from the DCS and its standbys.
    """
    if len(model.by_role("postgres")) < 2:
        return []
    primary, one, every = ["primary(postgres)"], ["any(replica(postgres))"], ["replica(postgres)"]
    options = [(2, _either_order(one, primary)), (1, _either_order(every, primary))]
    if model.by_role("etcd"):
        options += [(2, st.just([primary, ["all(etcd)"]])),
                    (2, st.just([primary, ["all(etcd)", "replica(postgres)"]]))]
    return options


def partition_groups(model: TopologyModel) -> st.SearchStrategy[list[list[str]]]:
    options: list[tuple[int, st.SearchStrategy[list[list[str]]]]] = db_tier_groups(model)
    if model.by_role("faultproxy") and model.links:
        options.append((2, linked_service_targets(model).map(lambda t: [[t], ["faultproxy"]])))
    if model.pairs and model.by_role("postgres") and model.links:  # a node cut from its database (both ends)
        options.append((1, st.sampled_from(_pairs(model)).map(lambda p: [[f"active({p})"], ["primary(postgres)"]])))
    if not options:
        names = sorted(model.service_names)
        options.append((1, st.permutations(names).map(lambda ns: [[ns[0]], [ns[1]]])))
    return weighted(options)


# --- parameters ---------------------------------------------------------------------------------------------
def toxic_params() -> st.SearchStrategy[dict[str, Any]]:
    """Any Toxiproxy toxic; blackholes (timeout 0) and bandwidth 0 are favoured: they cut, and cutting matters."""
    attrs = weighted([
        (4, st.just({"type": "timeout", "attributes": {"timeout": 0}})),
        (3, st.builds(lambda lat, jit: {"type": "latency", "attributes": {"latency": lat, "jitter": jit}},
                      st.sampled_from([50, 200, 1000, 3000]), st.sampled_from([0, 50, 500]))),
        (2, st.sampled_from([0, 1, 16, 256]).map(lambda r: {"type": "bandwidth", "attributes": {"rate": r}})),
        (1, st.sampled_from([0, 100]).map(lambda t: {"type": "reset_peer", "attributes": {"timeout": t}})),
        (1, st.sampled_from([100, 2000]).map(lambda t: {"type": "timeout", "attributes": {"timeout": t}})),
        (1, st.just({"type": "slicer", "attributes": {"average_size": 64, "size_variation": 32, "delay": 500}})),
        (1, st.sampled_from([0, 1000]).map(lambda d: {"type": "slow_close", "attributes": {"delay": d}})),
        (1, st.sampled_from([0, 4096]).map(lambda b: {"type": "limit_data", "attributes": {"bytes": b}})),
    ])
    extra = st.fixed_dictionaries({}, optional={"stream": st.sampled_from(["upstream", "downstream"]),
                                                "toxicity": st.sampled_from([0.5, 1.0])})
    return st.builds(lambda a, e: {**a, **e}, attrs, extra)


def params_for(kind: str, model: TopologyModel) -> st.SearchStrategy[dict[str, Any] | None]:
    defined = module_kind(kind)
    if defined is not None:
        return defined.params(model)
    if kind == "toxic":
        return toxic_params()
    if kind == "partition":
        return st.builds(lambda g, d: {"groups": g, "direction": d}, partition_groups(model),
                         st.sampled_from(["two_way", "one_way"]))
    if kind == "db_failover":
        return weighted([(3, st.just("kill_primary")), (2, st.just("switchover")), (1, st.just("pause_primary")),
                         (1, st.just("isolate_primary"))]).map(lambda m: {"mode": m})
    if kind in ("kill", "restart"):
        return weighted([(4, st.none()), (1, st.just({"signal": "TERM"}))])
    if kind == "stop":
        return weighted([(3, st.none()), (1, st.just({"timeout_s": 0}))])
    if kind == "db_setting":  # sessions opened meanwhile cannot see the node's tables (a fatal error)
        return st.just({"setting": "search_path", "value": "ha_chaos_nowhere"})
    return st.none()


def target_for(kind: str, model: TopologyModel) -> st.SearchStrategy[str | None]:
    defined = module_kind(kind)
    if defined is not None:
        return defined.target(model)
    if kind in ("toxic", "link_down"):
        return link_targets(model)
    if kind == "former_primary_trap":
        return db_link_targets(model)
    if kind in ("set_passive", "db_setting"):
        return st.sampled_from(_pairs(model)).map(lambda p: f"active({p})")
    if kind in ("partition", "db_failover"):
        return st.none()
    return service_targets(model)


def applicable_kinds(model: TopologyModel, kinds: Sequence[str]) -> list[str]:
    """Kinds that make sense on ``model`` (no link faults without links, no set_passive without pairs)."""
    out = []
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"unknown kind {k!r}")
        if k in LINK_KINDS and not model.links:
            continue
        if k in ("set_passive", "db_setting") and not model.pairs:
            continue
        if k == "db_failover" and len(model.by_role("postgres")) < 2:
            continue
        if k == "partition" and len(model.services) < 2:
            continue
        defined = module_kind(k)
        if defined is not None and not defined.applicable(model):
            continue
        out.append(k)
    if not out:
        raise ValueError(f"none of {list(kinds)} applies to this topology")
    return out


# --- steps and plans ----------------------------------------------------------------------------------------
@st.composite
def fault_steps(draw: st.DrawFn, model: TopologyModel, kinds: Sequence[str], index: int,
                prev: dict[str, Any] | None, n_steps: int, max_at: float, max_duration: float,
                min_duration: float = 0.5) -> dict[str, Any]:
    kind = draw(st.sampled_from(list(kinds)))
    step: dict[str, Any] = {"kind": kind}
    params = draw(params_for(kind, model))
    instant = kind in INSTANT_KINDS or (params or {}).get("mode") == "switchover"
    # timing: independent, overlapping the previous step, or chained on it
    timing = draw(weighted([(4, st.just("at")), (3, st.just("overlap")), (1, st.just("after"))])) \
        if prev is not None else "at"
    if timing == "overlap" and prev is not None and "at" in prev:
        step["at"] = prev["at"] + draw(seconds(0, prev.get("duration", 1.0)))
    elif timing == "after":
        conds = ["step_applied", "step_healed"] if prev is not None and "duration" in prev else ["step_applied"]
        step["after"] = f"{draw(st.sampled_from(conds))}({index - 1})"
        step["delay"] = draw(seconds(0, 3))
        step["max_wait"] = max_duration * 2
    else:
        step["at"] = draw(seconds(0, max_at))
    target = draw(target_for(kind, model))
    if target is not None:
        step["target"] = target
    if params is not None:
        step["params"] = params
    if not instant:
        others = [j for j in range(n_steps) if j != index]
        if others and draw(st.integers(0, 9)) == 0:
            step["until"] = f"step_healed({draw(st.sampled_from(others))})"
            step["max_wait"] = max_duration
        else:
            step["duration"] = draw(seconds(min(min_duration, max_duration), max_duration))
    return step


@st.composite
def workloads(draw: st.DrawFn) -> dict[str, Any]:
    return {"rate": draw(st.sampled_from([5.0, 10.0, 20.0])), "clients": draw(st.integers(1, 8)),
            "cross_participant_ratio": draw(st.sampled_from([0.0, 0.3, 0.7])),
            "resubmit_ratio": draw(st.sampled_from([0.0, 0.05, 0.2]))}


@st.composite
def fault_plans(draw: st.DrawFn, model: TopologyModel, kinds: Sequence[str] = GENERATED_KINDS, max_steps: int = 4,
                max_at: float = 20.0, max_duration: float = 15.0, *, roles: Collection[str] | None = None,
                min_steps: int = 1, min_duration: float = 0.5) -> Plan:
    """A valid plan for ``model`` with min_steps..max_steps steps drawn from ``kinds``, aimed only at services of
    ``roles`` (``TARGET_ROLES``; None: anything), each lasting fault at least ``min_duration`` seconds."""
    aim = model if roles is None else restrict(model, roles)
    usable = applicable_kinds(aim, kinds)
    n = draw(st.integers(max(1, min(min_steps, max_steps)), max_steps))
    steps: list[dict[str, Any]] = []
    for i in range(n):
        steps.append(draw(fault_steps(aim, usable, i, steps[-1] if steps else None, n, max_at, max_duration,
                                      min_duration)))
    quiet = draw(seconds(10, 30))
    data: dict[str, Any] = {
        "version": 1, "name": "generated", "description": "generated by harness.plans.strategies.fault_plans",
        "seed": draw(st.integers(0, 2**32 - 1)), "warmup_s": draw(seconds(2, 5)), "steps": steps,
        "quiet_period": quiet, "recovery_bound_s": draw(seconds(5, quiet)),
    }
    if model.pairs:
        data["workload"] = draw(workloads())
    return validate_plan(data, model)
