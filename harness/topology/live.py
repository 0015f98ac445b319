"""The one reader of a running deployment's live state (issue 13 item 3): who is the PostgreSQL primary, which
replica of a pair is active, whether a container is healthy.

Why one reader: the harness used to answer "who is the PostgreSQL primary" two ways (each member's ``/patroni``
role in ``Topology.primary`` vs the ``/cluster`` leader rule in ``pg.leader_of``), and they disagree while a
failover is under way. Every host-side question now goes through here, with one rule each:

- PostgreSQL primary: the single running leader of Patroni's ``/cluster``, read from the first member that answers
  (``pg.leader_of``); None while there is none or more than one.
- Active replica of a pair: the single replica whose health endpoint reports role ``active``; None otherwise.
- Healthy container: running, and not marked unhealthy by its health check.

Addresses come from one ``Endpoints`` table (one Docker call per refresh) rather than a container lookup per
question: the executor asks every 250 ms while a condition is pending, and resolving ``active(p1)`` must take
milliseconds, not the seconds a busy Docker daemon needs per inspect. The workload's asynchronous probes apply the
same rules (``pg.leader_of`` on the same ``/cluster`` document).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import requests

from harness.client.api import admin_client
from harness.errors import HarnessError
from harness.topology import pg
from harness.topology.endpoints import Endpoints

if TYPE_CHECKING:
    from harness.topology.compose import Topology
    from harness.topology.model import TopologyModel

#: Patroni ``/cluster`` member role -> the role the harness shows (the leader is the primary)
PG_ROLE_NAMES = {"leader": "primary", "master": "primary", "primary": "primary"}


class LiveState:
    def __init__(self, topo: Topology, endpoints: Endpoints | None = None) -> None:
        self.topo = topo
        self.ep = endpoints or Endpoints(topo)

    @property
    def model(self) -> TopologyModel:
        return self.topo.model

    def _get(self, url: str | None, path: str, timeout: float = 2) -> Any:
        if url is None:
            return None
        try:
            return requests.get(url + path, timeout=timeout).json()
        except (requests.RequestException, ValueError):
            return None

    # --- active/passive pairs -------------------------------------------------------------------------
    def role_of(self, service: str) -> str | None:
        """A node replica's own view of its role (``active``/``passive``/...), None when it does not answer."""
        def ask() -> str | None:
            url = self.ep.health(service)
            if url is None:
                return None
            proto = self.topo.target.endpoints[self.model.service(service).role]["health"].protocol  # type: ignore
            return admin_client(proto, url).role()

        role = ask()
        if role is None:
            self.ep.refresh()  # a restarted container has a new host port
            role = ask()
        return role

    def active(self, pair: str) -> str | None:
        actives = [r for r in self.model.pairs.get(pair, []) if self.role_of(r) == "active"]
        return actives[0] if len(actives) == 1 else None

    # --- PostgreSQL -----------------------------------------------------------------------------------
    def pg_members(self) -> list[dict[str, Any]]:
        """Patroni's ``/cluster`` members from the first member that answers ([] when none does)."""
        for svc in self.model.replicas("postgres"):
            data = self._get(self.ep.patroni(svc), "/cluster")
            if isinstance(data, dict):
                return list(data.get("members", []))
        self.ep.refresh()
        return []

    def pg_primary(self) -> str | None:
        return pg.leader_of(self.pg_members())

    def pg_roles(self) -> dict[str, str]:
        """Service -> its role in the Patroni cluster (primary, sync_standby, replica, ...; ``unreachable`` for a
        member ``/cluster`` does not list). A member is called primary only under the one leader rule."""
        members = self.pg_members()
        leader = pg.leader_of(members)
        listed = {str(m.get("name")): str(m.get("role", "unknown")) for m in members}
        out = {}
        for svc in self.model.replicas("postgres"):
            role = listed.get(svc, "unreachable")
            out[svc] = "primary" if svc == leader else ("leader?" if role in PG_ROLE_NAMES else role)
        return out

    # --- containers -----------------------------------------------------------------------------------
    def healthy(self, service: str) -> bool:
        try:
            c = self.topo.container(service)
        except HarnessError:
            return False
        st = c.attrs.get("State", {})
        return st.get("Status") == "running" and (st.get("Health") or {}).get("Status") != "unhealthy"
