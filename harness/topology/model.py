"""The reference HA topology as data: services, logical nodes, replicas, pairs and fault-proxy links.

Why a model separate from the compose files: fault plans name role-relative targets ("the active replica of
p1", "the links of p1a to the sequencers"); resolving them and generating plans with Hypothesis must work on a
fake topology in unit tests, without Docker. The compose files are checked against this model by a unit test
(tests/unit/test_topology_model.py), so the two cannot drift apart silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Role = Literal["etcd", "postgres", "pg-lb", "faultproxy", "sequencer", "mediator", "participant", "ledger-lb"]


@dataclass(frozen=True, slots=True)
class Service:
    """One compose service = one container."""

    name: str
    role: Role
    node: str | None = None  # logical node for replicas, e.g. "p1" for p1a


@dataclass(frozen=True, slots=True)
class Link:
    """A connection that passes through the fault proxy: ``client`` reaches ``upstream`` via proxy ``name``.

    ``kind`` is "db" (node -> PostgreSQL via the pg load balancer) or "sequencer" (node -> one sequencer).
    """

    name: str
    client: str
    upstream_service: str
    upstream_port: int
    listen_port: int
    kind: Literal["db", "sequencer"]

    @property
    def upstream(self) -> str:
        return f"{self.upstream_service}:{self.upstream_port}"

    @property
    def listen(self) -> str:
        return f"0.0.0.0:{self.listen_port}"


@dataclass(frozen=True)
class TopologyModel:
    services: tuple[Service, ...]
    links: tuple[Link, ...] = field(default_factory=tuple)

    # --- lookups -------------------------------------------------------------------------------------
    def service(self, name: str) -> Service:
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError(name)

    def by_role(self, role: str) -> list[Service]:
        return [s for s in self.services if s.role == role]

    def replicas(self, node: str) -> list[str]:
        """Replica service names of a logical node (``p1`` -> ``[p1a, p1b]``; ``sequencer`` -> all sequencers)."""
        if node in {"sequencer", "postgres", "participant", "mediator", "etcd"}:
            return [s.name for s in self.by_role(node)]
        return [s.name for s in self.services if s.node == node]

    @property
    def pairs(self) -> dict[str, list[str]]:
        """Active/passive pairs: logical node -> replicas."""
        out: dict[str, list[str]] = {}
        for s in self.services:
            if s.role in ("mediator", "participant") and s.node:
                out.setdefault(s.node, []).append(s.name)
        return out

    def links_of(self, client: str, kind: str | None = None) -> list[Link]:
        return [lk for lk in self.links if lk.client == client and (kind is None or lk.kind == kind)]

    def link(self, name: str) -> Link:
        for lk in self.links:
            if lk.name == name:
                return lk
        raise KeyError(name)

    def database(self, service: str) -> str:
        """The database a node replica uses: its logical node's (``p1a`` -> ``p1``); sequencers share one."""
        svc = self.service(service)
        if svc.role == "sequencer":
            return "sequencer"
        if svc.role in ("participant", "mediator") and svc.node:
            return svc.node
        raise KeyError(f"{service} ({svc.role}) has no node database")

    @property
    def service_names(self) -> list[str]:
        return [s.name for s in self.services]


SEQUENCERS = ("seq1", "seq2", "seq3")
MEDIATORS = ("med1a", "med1b")
PARTICIPANTS = {"p1": ("p1a", "p1b"), "p2": ("p2a", "p2b")}
PG_NODES = ("pg1", "pg2", "pg3")
ETCD_NODES = ("etcd1", "etcd2", "etcd3")
PG_LB_PORT = 5432
SEQUENCER_API_PORT = 7000
LINK_PORT_BASE = 20000


def _postgres_services() -> list[Service]:
    return [*(Service(n, "etcd", "etcd") for n in ETCD_NODES), *(Service(n, "postgres", "postgres") for n in PG_NODES),
            Service("pg-lb", "pg-lb")]


def postgres_model() -> TopologyModel:
    """The ``postgres`` profile: three etcd members, three Patroni nodes, HAProxy routing to the primary."""
    return TopologyModel(tuple(_postgres_services()))


def reference_model() -> TopologyModel:
    """The ``full`` profile: PostgreSQL HA, fault proxy, 3 sequencers, a mediator pair, 2 participant pairs, LB.

    Every node's DB connection and every node-to-sequencer connection goes through one named fault-proxy link.
    Link names: ``<client>-db`` and ``<client>-<sequencer>``; listen ports are allocated in this order from
    ``LINK_PORT_BASE`` inside the fault proxy container.
    """
    services = [*_postgres_services(), Service("faultproxy", "faultproxy")]
    services += [Service(s, "sequencer", "sequencer") for s in SEQUENCERS]
    services += [Service(m, "mediator", "med1") for m in MEDIATORS]
    for node, reps in PARTICIPANTS.items():
        services += [Service(r, "participant", node) for r in reps]
    services.append(Service("ledger-lb", "ledger-lb"))

    links: list[Link] = []
    port = LINK_PORT_BASE
    db_clients = [*SEQUENCERS, *MEDIATORS, *(r for reps in PARTICIPANTS.values() for r in reps)]
    for c in db_clients:
        links.append(Link(f"{c}-db", c, "pg-lb", PG_LB_PORT, port, "db"))
        port += 1
    for c in [*MEDIATORS, *(r for reps in PARTICIPANTS.values() for r in reps)]:
        for s in SEQUENCERS:
            links.append(Link(f"{c}-{s}", c, s, SEQUENCER_API_PORT, port, "sequencer"))
            port += 1
    return TopologyModel(tuple(services), tuple(links))


def model_for_profile(profile: str) -> TopologyModel:
    if profile == "postgres":
        return postgres_model()
    if profile == "full":
        return reference_model()
    raise ValueError(f"unknown profile {profile!r} (expected 'postgres' or 'full')")
