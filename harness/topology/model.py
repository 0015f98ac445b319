"""A topology as data: services, logical nodes, replicas, pairs and fault-proxy links (read from a target file:
harness/topology/target.py; the reference topology is targets/reference.yaml).

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
    #: roles whose nodes' clocks the harness can skew (the target's ``clock``; the ``clock`` fault kind)
    clock_roles: tuple[str, ...] = ()

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


#: PostgreSQL's port on its balancer (the target's ``pg-lb`` ``postgres`` endpoint; kept as a name for the pg sampler)
PG_LB_PORT = 5432


def postgres_model() -> TopologyModel:
    """The ``postgres`` profile of the reference target: three etcd members, three Patroni nodes, HAProxy."""
    return model_for_profile("postgres")


def reference_model() -> TopologyModel:
    """The ``full`` profile of the reference target (targets/reference.yaml): PostgreSQL HA, fault proxy, three
    sequencers, a mediator pair, two participant pairs, the Ledger API balancer, and every fault-proxy link
    (``<client>-db``, ``<client>-<sequencer>``; listen ports allocated in order from the target's port base)."""
    return model_for_profile("full")


def model_for_profile(profile: str) -> TopologyModel:
    """A profile's model from the reference target (any profile but ``full`` models the database tier)."""
    from harness.topology.target import reference_target  # the target module builds on this one

    if profile not in ("postgres", "full"):
        raise ValueError(f"unknown profile {profile!r} (expected 'postgres' or 'full')")
    return reference_target().model(profile)
