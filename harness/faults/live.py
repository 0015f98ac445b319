"""The live nemesis: every fault kind of the plan schema, applied to a running topology, verified, and undone.

``LiveInjector`` implements ``harness.plans.injector.FaultInjector`` and ``LiveView`` implements
``harness.plans.targets.TopologyView``. Everything an injector creates is named after the step's ``fault_id``
(toxic names, iptables rule comments) and described in the ``record`` it returns, so ``heal(entry)`` can undo a
fault from the journal alone after the harness itself was killed.

Mechanisms (see ../shared/reference/environment.md for what works on these machines):
- toxics and link-down: the fault proxy's Toxiproxy API;
- partitions and primary isolation: iptables DROP rules in the containers' network namespaces, entered from the
  host with ``nsenter`` (works for every image, no tool needed inside), falling back to ``docker exec``;
- kill / stop / pause / restart: the Docker API;
- DB failover: SIGKILL, Patroni's REST ``/switchover``, pause or isolation of the primary;
- former-primary trap: re-point a node's DB link at a PostgreSQL node that is not the primary.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
from docker.errors import APIError, NotFound

from harness.errors import HarnessError
from harness.faults.proxy_client import FaultProxyClient, FaultProxyError, ProxyNotFound
from harness.plans.injector import Effects, Resolution, default_effects
from harness.plans.schema import StepBase
from harness.topology import pg
from harness.topology.compose import Topology
from harness.topology.model import TopologyModel

log = logging.getLogger("ha-chaos.faults")
VERIFY_TIMEOUT = 45.0
DB_FAILOVER_VERIFY_TIMEOUT = 120.0
#: how long a db_failover waits for a standby that Patroni would promote (see pg.promotable)
PROMOTABLE_WAIT_S = 60.0


@dataclass
class LiveApplied:
    effects: Effects
    record: dict[str, Any]
    _verify: Callable[[], bool]
    _undo: Callable[[], None]
    undone: bool = field(default=False)

    def verify(self) -> bool:
        return self._verify()

    def undo(self) -> None:
        if not self.undone:
            self._undo()
            self.undone = True


def _wait(cond: Callable[[], bool], timeout: float = VERIFY_TIMEOUT, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if cond():
                return True
        except (requests.RequestException, HarnessError, APIError):
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class LiveView:
    """Who is active / primary / healthy right now, from health endpoints, Patroni and Docker.

    Addresses come from one ``Endpoints`` table (one Docker call per refresh) rather than a container lookup per
    question: the executor asks every 250 ms while a condition is pending, and resolving ``active(p1)`` must take
    milliseconds, not the seconds a busy Docker daemon needs per inspect.
    """

    def __init__(self, topo: Topology) -> None:
        from harness.workload.endpoints import Endpoints

        self.topo = topo
        self.ep = Endpoints(topo)

    @property
    def model(self) -> TopologyModel:
        return self.topo.model

    def _get(self, url: str | None, path: str) -> dict[str, Any] | None:
        if url is None:
            return None
        try:
            return requests.get(url + path, timeout=2).json()
        except (requests.RequestException, ValueError):
            return None

    def role_of(self, service: str) -> str | None:
        data = self._get(self.ep.health(service), "/admin/status")
        if data is None:
            self.ep.refresh()  # a restarted container has a new host port
            data = self._get(self.ep.health(service), "/admin/status")
        return None if data is None else str(data.get("role"))

    def active(self, pair: str) -> str | None:
        actives = [r for r in self.topo.model.pairs.get(pair, []) if self.role_of(r) == "active"]
        return actives[0] if len(actives) == 1 else None

    def pg_primary(self) -> str | None:
        for svc in self.topo.model.replicas("postgres"):
            data = self._get(self.ep.patroni(svc), "/cluster")
            if data is not None:
                return pg.leader_of(data.get("members", []))
        self.ep.refresh()
        return None

    def healthy(self, service: str) -> bool:
        try:
            c = self.topo.container(service)
        except HarnessError:
            return False
        st = c.attrs.get("State", {})
        return st.get("Status") == "running" and (st.get("Health") or {}).get("Status") != "unhealthy"


class LiveInjector:
    """Applies plan steps to ``topo``; see the module docstring for the mechanisms."""

    def __init__(self, topo: Topology, proxy: FaultProxyClient | None = None) -> None:
        self.topo = topo
        self._proxy = proxy

    # --- plumbing -------------------------------------------------------------------------------------------
    @property
    def proxy(self) -> FaultProxyClient:
        if self._proxy is None:
            self._proxy = FaultProxyClient(self.topo.url("faultproxy", 8474), timeout=5)
        return self._proxy

    def _container(self, service: str):
        c = self.topo.container(service)
        c.reload()
        return c

    def _ip(self, service: str) -> str:
        nets = self._container(service).attrs["NetworkSettings"]["Networks"]
        for net in nets.values():
            if net.get("IPAddress"):
                return str(net["IPAddress"])
        raise HarnessError(f"{service} has no IP address on the project network")

    def _iptables(self, service: str, args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        c = self._container(service)
        pid = c.attrs["State"].get("Pid") or 0
        if os.geteuid() == 0 and shutil.which("nsenter") and shutil.which("iptables") and pid:
            cmd = ["nsenter", "-t", str(pid), "-n", "iptables", "-w", *args]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        else:
            rc, out = c.exec_run(["iptables", "-w", *args])
            proc = subprocess.CompletedProcess(args, rc, out.decode(errors="replace"), "")
        if check and proc.returncode != 0:
            raise HarnessError(f"iptables {' '.join(args)} in {service} failed: {(proc.stderr or proc.stdout).strip()}")
        return proc

    def _drop_from(self, service: str, sources: list[str], fault_id: str) -> list[list[str]]:
        rules = []
        for src in sources:
            rule = ["INPUT", "-s", self._ip(src), "-j", "DROP", "-m", "comment", "--comment", fault_id]
            self._iptables(service, ["-I", *rule])
            rules.append(rule)
        return rules

    def _rules_with(self, service: str, fault_id: str) -> list[str]:
        proc = self._iptables(service, ["-S", "INPUT"], check=False)
        return [ln for ln in proc.stdout.splitlines() if fault_id in ln and ln.startswith("-A ")]

    def _remove_rules(self, services: list[str], fault_id: str) -> None:
        for svc in services:
            try:
                for ln in self._rules_with(svc, fault_id):
                    self._iptables(svc, ["-D", *_split_rule(ln[3:])], check=False)
            except (HarnessError, NotFound, APIError) as exc:
                log.info("rules of %s on %s not removed (%s): container gone or restarted", fault_id, svc, exc)

    # --- the protocol --------------------------------------------------------------------------------------
    def apply(self, step: StepBase, resolved: Resolution) -> LiveApplied:
        kind = step.kind_name
        handler = getattr(self, f"_apply_{kind}", None)
        if handler is None:
            raise HarnessError(f"fault kind {kind!r} is not supported by the live injector")
        primary = pg.leader(self.topo) if kind in ("db_failover", "former_primary_trap") else None
        effects = default_effects(step, resolved, self.topo.model, primary)
        verify, undo, record = handler(step, resolved)
        record = {"kind": kind, "fault_id": resolved.fault_id, **record}
        return LiveApplied(effects, record, lambda: _wait(verify), undo)

    def heal(self, entry: dict[str, Any]) -> None:
        record = entry.get("record") or {}
        kind = record.get("kind") or entry.get("kind")
        fid = entry.get("id") or record.get("fault_id", "")
        resolved = entry.get("resolved") or []
        mode = record.get("mode") if kind == "db_failover" else None
        if kind == "toxic":
            for link in resolved:
                self._remove_toxic(link, fid)
        elif kind == "link_down":
            for link in resolved:
                self._set_enabled(link, True)
        elif kind == "former_primary_trap":
            for link, upstream in (record.get("upstreams") or {}).items():
                self.proxy.update_proxy(link, upstream=upstream)
        elif kind == "partition" or mode == "isolate_primary":
            self._remove_rules(record.get("services") or resolved, fid)
        elif kind in ("kill", "stop", "pause") or mode in ("kill_primary", "pause_primary"):
            for svc in record.get("services") or resolved:
                self.ensure_running(svc)

    # --- proxy faults -------------------------------------------------------------------------------------
    def _remove_toxic(self, link: str, name: str) -> None:
        with contextlib.suppress(ProxyNotFound):
            self.proxy.remove_toxic(link, name)

    def _set_enabled(self, link: str, enabled: bool) -> None:
        self.proxy.update_proxy(link, enabled=enabled)

    def _apply_toxic(self, step: Any, res: Resolution) -> tuple[Callable[[], bool], Callable[[], None], dict]:
        p = step.params
        attrs = p.attributes.model_dump()
        for link in res.targets:
            self.proxy.add_toxic(link, p.type, name=res.fault_id, stream=p.stream, toxicity=p.toxicity,
                                 attributes=attrs)

        def verify() -> bool:
            return all(any(t.name == res.fault_id for t in self.proxy.toxics(link)) for link in res.targets)

        def undo() -> None:
            for link in res.targets:
                self._remove_toxic(link, res.fault_id)

        return verify, undo, {"links": res.targets}

    def _apply_link_down(self, step: Any, res: Resolution) -> tuple[Callable[[], bool], Callable[[], None], dict]:
        for link in res.targets:
            self._set_enabled(link, False)

        def verify() -> bool:
            return all(not self.proxy.proxy(link).enabled for link in res.targets)

        def undo() -> None:
            for link in res.targets:
                self._set_enabled(link, True)

        return verify, undo, {"links": res.targets}

    def _apply_former_primary_trap(self, step: Any, res: Resolution) -> tuple[Callable[[], bool],
                                                                              Callable[[], None], dict]:
        leader = pg.leader(self.topo)
        standbys = [s for s in self.topo.model.replicas("postgres") if s != leader]
        if leader is None or not standbys:
            raise HarnessError("former_primary_trap needs a primary and a standby (no leader right now)")
        trap = f"{standbys[0]}:5432"
        upstreams = {link: self.proxy.proxy(link).upstream for link in res.targets}
        for link in res.targets:
            self.proxy.update_proxy(link, upstream=trap)

        def verify() -> bool:
            members = pg.members(self.topo)
            in_recovery = members.get(standbys[0], {}).get("role") in ("replica", "sync_standby")
            return in_recovery and all(self.proxy.proxy(link).upstream == trap for link in res.targets)

        def undo() -> None:
            for link, up in upstreams.items():
                self.proxy.update_proxy(link, upstream=up)

        return verify, undo, {"upstreams": upstreams, "trap": trap}

    # --- network partitions -------------------------------------------------------------------------------
    def _apply_partition(self, step: Any, res: Resolution) -> tuple[Callable[[], bool], Callable[[], None], dict]:
        groups = res.groups or []
        services = sorted({s for g in groups for s in g})
        one_way = step.params.direction == "one_way"
        for gi, group in enumerate(groups):
            others = [s for gj, g in enumerate(groups) if gj != gi for s in g]
            if one_way and gi == 0:
                continue  # one way: only the other groups drop what comes from the first group
            sources = groups[0] if one_way else others
            for svc in group:
                self._drop_from(svc, sources, res.fault_id)

        receivers = [s for g in (groups[1:] if one_way else groups) for s in g]

        def verify() -> bool:
            return all(self._rules_with(s, res.fault_id) for s in receivers)

        return verify, lambda: self._remove_rules(services, res.fault_id), {"services": services}

    # --- container faults ---------------------------------------------------------------------------------
    def ensure_running(self, service: str) -> None:
        try:
            c = self._container(service)
        except HarnessError:
            return
        status = c.attrs["State"]["Status"]
        if status == "paused":
            c.unpause()
        elif status in ("exited", "created", "dead"):
            c.start()

    def _start_all(self, services: list[str]) -> None:
        for svc in services:
            self.ensure_running(svc)

    def _status(self, service: str) -> str:
        return str(self._container(service).attrs["State"]["Status"])

    def _apply_kill(self, step: Any, res: Resolution) -> tuple[Callable[[], bool], Callable[[], None], dict]:
        for svc in res.targets:
            self._container(svc).kill(signal=f"SIG{step.params.signal}")
        verify = lambda: all(self._status(s) == "exited" for s in res.targets)  # noqa: E731
        return verify, lambda: self._start_all(res.targets), {"services": res.targets}

    def _apply_stop(self, step: Any, res: Resolution) -> tuple[Callable[[], bool], Callable[[], None], dict]:
        for svc in res.targets:
            self._container(svc).stop(timeout=int(step.params.timeout_s))
        verify = lambda: all(self._status(s) == "exited" for s in res.targets)  # noqa: E731
        return verify, lambda: self._start_all(res.targets), {"services": res.targets}

    def _apply_pause(self, step: Any, res: Resolution) -> tuple[Callable[[], bool], Callable[[], None], dict]:
        for svc in res.targets:
            self._container(svc).pause()
        verify = lambda: all(self._status(s) == "paused" for s in res.targets)  # noqa: E731
        return verify, lambda: self._start_all(res.targets), {"services": res.targets}

    def _apply_restart(self, step: Any, res: Resolution) -> tuple[Callable[[], bool], Callable[[], None], dict]:
        started = {s: self._container(s).attrs["State"]["StartedAt"] for s in res.targets}
        for svc in res.targets:
            c = self._container(svc)
            c.kill(signal=f"SIG{step.params.signal}")
            c.wait(timeout=30)
            c.start()

        def verify() -> bool:
            return all(self._status(s) == "running" and self._container(s).attrs["State"]["StartedAt"] != started[s]
                       for s in res.targets)

        return verify, lambda: None, {"services": res.targets}

    def _apply_set_passive(self, step: Any, res: Resolution) -> tuple[Callable[[], bool], Callable[[], None], dict]:
        for svc in res.targets:
            r = requests.post(self.topo.url(svc, 8080) + "/admin/set_passive", timeout=5)
            if not r.ok:
                raise HarnessError(f"set_passive on {svc} answered HTTP {r.status_code}: {r.text[:200]}")
        verify = lambda: all(self.topo.node_role(s) == "passive" for s in res.targets)  # noqa: E731
        return verify, lambda: None, {"services": res.targets}

    # --- database failover ----------------------------------------------------------------------------------
    def _apply_db_failover(self, step: Any, res: Resolution) -> tuple[Callable[[], bool], Callable[[], None], dict]:
        mode = step.params.mode
        old = pg.leader(self.topo)
        if old is None:
            raise HarnessError("db_failover: there is no PostgreSQL leader to fail over from")
        others = [s for s in self.topo.model.replicas("postgres") if s != old]
        # a failover needs a standby Patroni may promote (with synchronous_mode: the sync standby, which a
        # rejoined old leader becomes only some seconds after it streams); without one, nothing would fail over
        sync = pg.synchronous_mode(self.topo)    # read once, not on every poll below
        if not _wait(lambda: any(pg.promotable(self.topo, o, sync) for o in others), timeout=PROMOTABLE_WAIT_S):
            raise HarnessError(f"db_failover: no standby Patroni would promote within {PROMOTABLE_WAIT_S:g} s",
                               f"members: {pg.members(self.topo)}")
        record: dict[str, Any] = {"mode": mode, "old_primary": old, "services": [old]}
        undo: Callable[[], None] = lambda: None  # noqa: E731
        if mode == "kill_primary":
            self._container(old).kill()
            undo = lambda: self.ensure_running(old)  # noqa: E731
        elif mode == "pause_primary":
            self._container(old).pause()
            undo = lambda: self.ensure_running(old)  # noqa: E731
        elif mode == "switchover":
            try:  # Patroni answers only once the switchover is done; the verification below decides
                r = requests.post(self.topo.url(old, 8008) + "/switchover", timeout=60,
                                  json={"leader": old, "candidate": others[0]})
            except requests.Timeout:
                log.info("switchover request to %s timed out; verifying the leader change instead", old)
            else:
                if r.status_code >= 400:
                    raise HarnessError(f"Patroni refused the switchover: HTTP {r.status_code} {r.text[:200]}")
        elif mode == "isolate_primary":
            peers = [s.name for s in self.topo.model.services if s.name != old and s.name in self.topo.containers()]
            self._drop_from(old, peers, res.fault_id)
            undo = lambda: self._remove_rules([old], res.fault_id)  # noqa: E731

        def verify() -> bool:
            # a graceful switchover waits for the old primary's shutdown checkpoint: slow on a loaded machine
            return _wait(lambda: pg.leader(self.topo) not in (None, old), timeout=DB_FAILOVER_VERIFY_TIMEOUT)

        return verify, undo, record


def _split_rule(spec: str) -> list[str]:
    import shlex

    return shlex.split(spec)


__all__ = ["FaultProxyError", "LiveApplied", "LiveInjector", "LiveView"]
