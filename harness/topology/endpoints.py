"""Where to reach each service from the host, kept current while containers restart (container ports from the
target: targets/reference.yaml for the reference topology).

Why a refreshing table: every port is published on an *ephemeral* host port, and a killed-then-started container
gets a new one. The workload must keep working across such faults, so the table is re-read from Docker (one
``containers.list`` call) at most every ``min_refresh_s`` when a caller asks for a refresh after a failure.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from harness import RUN_LABEL
from harness.platform.setup import docker_client

if TYPE_CHECKING:
    from harness.topology.compose import Topology


class Endpoints:
    def __init__(self, topo: Topology, min_refresh_s: float = 0.5) -> None:
        self.topo = topo
        self.min_refresh_s = min_refresh_s
        self._ports: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()
        self._last = 0.0
        self.refresh(force=True)

    def refresh(self, force: bool = False) -> None:
        with self._lock:
            if not force and time.monotonic() - self._last < self.min_refresh_s:
                return
            ports: dict[tuple[str, int], int] = {}
            client = docker_client()
            for c in client.containers.list(filters={"label": f"{RUN_LABEL}={self.topo.run_id}"},
                                            ignore_removed=True):
                svc = c.labels.get("com.docker.compose.service")
                for key, binds in (c.attrs["NetworkSettings"]["Ports"] or {}).items():
                    if binds and svc:
                        ports[(svc, int(key.split("/")[0]))] = int(binds[0]["HostPort"])
            self._ports = ports
            self._last = time.monotonic()

    def host_port(self, service: str, port: int) -> int | None:
        """The host port (on 127.0.0.1) published for a container port, e.g. pg-lb's PostgreSQL port."""
        return self._ports.get((service, port))

    def url(self, service: str, port: int) -> str | None:
        p = self._ports.get((service, port))
        return f"http://127.0.0.1:{p}" if p else None

    def ledger(self, participant: str, via: str = "lb") -> str | None:
        """The Ledger API of a logical participant through the balancer, or of one replica (``via`` = replica)."""
        if via == "lb":
            return self.url("ledger-lb", self.topo.target.port("ledger-lb", participant))
        return self.ledger_of_replica(via)

    def ledger_of_replica(self, replica: str) -> str | None:
        """A participant replica's own Ledger API (listening only while it is active)."""
        return self.url(replica, self.topo.target.port("participant", "ledger"))

    def health(self, service: str) -> str | None:
        return self.url(service, self.topo.target.port(self.topo.model.service(service).role, "health"))

    def patroni(self, service: str) -> str | None:
        return self.url(service, self.topo.target.port("postgres", "patroni"))

    def sequencer(self, service: str) -> str | None:
        return self.url(service, self.topo.target.port("sequencer", "api"))
