"""The live nemesis: every fault kind of the plan schema, applied to a running topology, verified, and undone.

``LiveInjector`` implements ``harness.plans.injector.FaultInjector`` and ``LiveView`` implements
``harness.plans.targets.TopologyView``. Everything an injector creates is named after the step's ``fault_id``
(toxic names, iptables rule comments) and described in the ``record`` it returns, so ``heal(entry)`` can undo a
fault from the journal alone after the harness itself was killed. A plan's own undo is that same ``heal`` of the
record: one undo per kind, not one in memory and another for the journal.

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
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import requests
from docker.errors import APIError, NotFound
from psycopg import sql

from harness.client.api import admin_client
from harness.client.json_api import Indeterminate
from harness.errors import HarnessError
from harness.faults import kinds
from harness.faults.proxy_client import FaultProxyClient, FaultProxyError, ProxyNotFound
from harness.plans.injector import Effects, Infeasible, Resolution, default_effects
from harness.plans.schema import StepBase
from harness.topology import pg
from harness.topology.compose import Topology
from harness.topology.live import LiveState

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


class LiveView(LiveState):
    """The executor's view of the live topology: the one live-state reader (harness/topology/live.py)."""


class LiveInjector:
    """Applies plan steps to ``topo``; see the module docstring for the mechanisms."""

    def __init__(self, topo: Topology, proxy: FaultProxyClient | None = None) -> None:
        self.topo = topo
        self._proxy = proxy
        #: while a fault is being applied: the containers inspected once (service -> container), and the rules
        #: collected per service, inserted at the end in one iptables-restore per service, all in parallel
        #: (each rule used to cost two Docker inspects and one process: ~2 s for a partition of one service)
        self._snapshot: dict[str, Any] | None = None
        self._batch: dict[str, list[list[str]]] | None = None
        self._known: dict[str, Any] = {}   # service -> its container object (re-inspected by id)

    # --- plumbing -------------------------------------------------------------------------------------------
    @property
    def proxy(self) -> FaultProxyClient:
        if self._proxy is None:
            self._proxy = FaultProxyClient(self.topo.url("faultproxy", 8474), timeout=5)
        return self._proxy

    def container(self, service: str):
        """The service's container, freshly inspected (for the fault kinds of ``harness.faults.kinds``)."""
        return self._container(service)

    def ip(self, service: str) -> str:
        """The service's address on the project network."""
        return self._ip(service)

    def addresses(self) -> dict[str, str]:
        """Every running service's address on the project network, from one container listing."""
        out: dict[str, str] = {}
        for svc, c in self.topo.containers().items():
            nets = (c.attrs.get("NetworkSettings") or {}).get("Networks") or {}
            ip = next((n.get("IPAddress") for n in nets.values() if n.get("IPAddress")), None)
            if ip:
                out[svc] = str(ip)
        return out

    def insert_rules(self, service: str, rules: list[list[str]]) -> None:
        """Insert iptables ``rules`` (each: chain first, no ``-I``) in the service's network namespace, in one
        ``iptables-restore``. Name each rule after its fault id (``-m comment --comment ID``): that is how
        ``rules_with`` and ``remove_rules`` find them."""
        self._insert_rules(service, rules)

    def rules_with(self, service: str, fault_id: str) -> list[str]:
        return self._rules_with(service, fault_id)

    def remove_rules(self, services: list[str], fault_id: str) -> None:
        self._remove_rules(services, fault_id)

    def container_or_none(self, service: str):
        """The service's container, or None when it has none (for undoing a fault: nothing left to undo)."""
        try:
            return self._container(service)
        except (HarnessError, NotFound):
            return None

    def _container(self, service: str):
        """The service's container, freshly inspected. Known containers are re-inspected by id (one Docker call);
        the run's container list is read only for a service not seen yet or whose container is gone."""
        if self._snapshot is not None and service in self._snapshot:
            return self._snapshot[service]
        c = self._known.get(service)
        if c is not None:
            try:
                c.reload()
            except NotFound:
                c = None
        if c is None:
            c = self.topo.container(service)
            c.reload()
        self._known[service] = c
        if self._snapshot is not None:
            self._snapshot[service] = c
        return c

    @contextlib.contextmanager
    def _batched(self, services: list[str]) -> Iterator[None]:
        """Inspect ``services`` once, in parallel; collect the rules ``_drop_*`` add; insert them at the end, one
        ``iptables-restore --noflush`` per service, all services in parallel."""
        from concurrent.futures import ThreadPoolExecutor

        containers = self.topo.containers()
        missing = [s for s in services if s not in containers]
        if missing:
            raise HarnessError(f"no container for {', '.join(missing)} in run {self.topo.run_id}")
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda s: containers[s].reload(), services))
        self._snapshot = {s: containers[s] for s in services}
        self._batch = {}
        try:
            yield
            batch = self._batch
            self._batch = None
            with ThreadPoolExecutor(max_workers=8) as pool:
                for fut in [pool.submit(self._insert_rules, svc, rules) for svc, rules in batch.items()]:
                    fut.result()
        finally:
            self._snapshot = None
            self._batch = None

    def _insert_rules(self, service: str, rules: list[list[str]]) -> None:
        c = self._container(service)
        pid = c.attrs["State"].get("Pid") or 0
        if os.geteuid() == 0 and shutil.which("nsenter") and shutil.which("iptables-restore") and pid:
            text = "*filter\n" + "".join(" ".join(_quote(a) for a in ["-I", *r]) + "\n" for r in rules) + "COMMIT\n"
            proc = subprocess.run(["nsenter", "-t", str(pid), "-n", "iptables-restore", "--noflush", "-w"],
                                  input=text, capture_output=True, text=True, timeout=20)
            if proc.returncode != 0:
                raise HarnessError(f"iptables-restore in {service} failed: {(proc.stderr or proc.stdout).strip()}")
            return
        for r in rules:
            self._iptables(service, ["-I", *r])

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

    def _add_rule(self, service: str, rule: list[str]) -> None:
        """Insert ``rule`` (chain first) now, or at the end of the ``_batched`` block in progress."""
        if self._batch is not None:
            self._batch.setdefault(service, []).append(rule)
        else:
            self._iptables(service, ["-I", *rule])

    def _drop_from(self, service: str, sources: list[str], fault_id: str) -> list[list[str]]:
        rules = []
        for src in sources:
            rule = ["INPUT", "-s", self._ip(src), "-j", "DROP", "-m", "comment", "--comment", fault_id]
            self._add_rule(service, rule)
            rules.append(rule)
        return rules

    def _drop_port(self, service: str, chain: str, peer_ip: str, port: int, port_side: str, fault_id: str) -> None:
        """Drop TCP packets of ``service`` to (OUTPUT) / from (INPUT) ``peer_ip`` whose ``port_side`` port
        (``dport``/``sport``) is ``port``: one connection or one listener, not the whole peer."""
        addr = "-d" if chain == "OUTPUT" else "-s"
        self._add_rule(service, [chain, "-p", "tcp", addr, peer_ip, f"--{port_side}", str(port), "-j", "DROP",
                                 "-m", "comment", "--comment", fault_id])

    def _rules_with(self, service: str, fault_id: str) -> list[str]:
        lines: list[str] = []
        for chain in ("INPUT", "OUTPUT"):
            proc = self._iptables(service, ["-S", chain], check=False)
            lines += [ln for ln in proc.stdout.splitlines() if fault_id in ln and ln.startswith("-A ")]
        return lines

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
        module_kind = kinds.kind(kind)
        handler = (lambda st, res: module_kind.apply(self, st, res)) if module_kind is not None \
            else getattr(self, f"_apply_{kind}", None)
        if handler is None:
            raise HarnessError(f"fault kind {kind!r} is not supported by the live injector")
        primary = pg.leader(self.topo) if kind in ("db_failover", "former_primary_trap") else None
        effects = default_effects(step, resolved, self.topo.model, primary)
        verify, record = handler(step, resolved)
        record = {"kind": kind, "fault_id": resolved.fault_id, **record}
        # the undo is the journal's heal of this record: one code path for a plan's own heal and for
        # `ha-chaos heal` after a crash (issue 15 item 4)
        entry = {"record": record, "kind": kind, "id": resolved.fault_id, "resolved": list(resolved.targets)}
        return LiveApplied(effects, record, lambda: _wait(verify), lambda: self.heal(entry))

    def heal(self, entry: dict[str, Any]) -> None:
        record = entry.get("record") or {}
        kind = record.get("kind") or entry.get("kind")
        fid = entry.get("id") or record.get("fault_id", "")
        resolved = entry.get("resolved") or []
        mode = record.get("mode") if kind == "db_failover" else None
        module_kind = kinds.kind(str(kind))
        if module_kind is not None:
            module_kind.heal(self, record, list(resolved), fid)
        elif kind == "toxic":
            for link in resolved:
                self._remove_toxic(link, fid)
        elif kind == "link_down":
            for link in resolved:
                self._set_enabled(link, True)
        elif kind == "former_primary_trap":
            for link, upstream in (record.get("upstreams") or {}).items():
                self.proxy.update_proxy(link, upstream=upstream)
        elif kind == "partition":
            # PostgreSQL members get rules even when only pg-lb was named (see _cut_paths): sweep them too
            self._remove_rules(sorted(set(record.get("services") or resolved)
                                      | set(self.topo.model.replicas("postgres"))), fid)
        elif mode == "isolate_primary":
            self._remove_rules(record.get("services") or resolved, fid)
        elif kind == "db_setting":
            self._reset_db_setting(record.get("databases") or [], str(record.get("setting") or ""))
        elif kind in ("kill", "stop", "pause") or mode in ("kill_primary", "pause_primary"):
            for svc in record.get("services") or resolved:
                self.ensure_running(svc)

    # --- proxy faults -------------------------------------------------------------------------------------
    def _remove_toxic(self, link: str, name: str) -> None:
        with contextlib.suppress(ProxyNotFound):
            self.proxy.remove_toxic(link, name)

    def _set_enabled(self, link: str, enabled: bool) -> None:
        self.proxy.update_proxy(link, enabled=enabled)

    def _apply_toxic(self, step: Any, res: Resolution) -> tuple[Callable[[], bool], dict]:
        p = step.params
        attrs = p.attributes.model_dump()
        for link in res.targets:
            self.proxy.add_toxic(link, p.type, name=res.fault_id, stream=p.stream, toxicity=p.toxicity,
                                 attributes=attrs)

        def verify() -> bool:
            return all(any(t.name == res.fault_id for t in self.proxy.toxics(link)) for link in res.targets)

        return verify, {"links": res.targets}

    def _apply_link_down(self, step: Any, res: Resolution) -> tuple[Callable[[], bool], dict]:
        for link in res.targets:
            self._set_enabled(link, False)

        def verify() -> bool:
            return all(not self.proxy.proxy(link).enabled for link in res.targets)

        return verify, {"links": res.targets}

    def _apply_former_primary_trap(self, step: Any, res: Resolution) -> tuple[Callable[[], bool], dict]:
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

        return verify, {"upstreams": upstreams, "trap": trap}

    # --- network partitions -------------------------------------------------------------------------------
    def _apply_partition(self, step: Any, res: Resolution) -> tuple[Callable[[], bool], dict]:
        """iptables DROP between the groups' containers; and through the proxies (see ``_cut_paths``)."""
        groups = res.groups or []
        services = sorted({s for g in groups for s in g})
        one_way = step.params.direction == "one_way"
        # Two phases, each one batch (one iptables-restore per service, all in parallel). The node side of every
        # cut path must be in place before the server-side sessions are listed (phase 2), or a session the node
        # opens meanwhile escapes both cuts - seen live on correct nodes when one batch did both (active-participant-
        # cut-from-db, FAIL 10: an unlisted writer session of the old active kept the writers lock).
        with self._batched(services):
            for gi, group in enumerate(groups):
                others = [s for gj, g in enumerate(groups) if gj != gi for s in g]
                if one_way and gi == 0:
                    continue  # one way: only the other groups drop what comes from the first group
                sources = groups[0] if one_way else others
                for svc in group:
                    self._drop_from(svc, sources, res.fault_id)
            node_side, server_side = self._cut_paths(groups, one_way, res.fault_id)
        cut_members: list[str] = []
        if server_side:
            with self._batched(sorted({m for m, _, _, _ in server_side})):
                cut_members = self._cut_sessions(server_side, res.fault_id)
        touched = set(node_side) | set(cut_members)
        receivers = [s for g in (groups[1:] if one_way else groups) for s in g] + sorted(touched)
        services = sorted(set(services) | touched)

        def verify() -> bool:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=8) as pool:
                return all(pool.map(lambda s: bool(self._rules_with(s, res.fault_id)), receivers))

        return verify, {"services": services}

    def _cut_paths(self, groups: list[list[str]], one_way: bool,
                   fault_id: str) -> tuple[list[str], list[tuple[str, str, bool, bool]]]:
        """A node reaches PostgreSQL and the sequencers only through the fault proxy (and pg-lb), so container
        rules between a node and those services cut nothing. A partition between them means the paths: the
        node's links to them are dropped at the node (no new connection gets through; added here) and, towards
        PostgreSQL, the node's open sessions go silent at the database server (``_cut_sessions``, once the node
        side is in place). The server then sees what it would see of a dead or partitioned peer on a direct
        connection, and only TCP keepalives tell it: whether it notices, and when, depends on the settings the
        node chose. Returns the nodes that got rules, and (member, node, to_other, from_other) per PostgreSQL
        member whose sessions of a node must be cut."""
        model = self.topo.model
        pg_roles = ("postgres", "pg-lb")
        touched: list[str] = []
        sessions: list[tuple[str, str, bool, bool]] = []
        pairs = [(a, b) for gi, ga in enumerate(groups) for gj, gb in enumerate(groups) if gi != gj
                 and (not one_way or gi == 0 or gj == 0) for a in ga for b in gb]
        fp_ip: str | None = None
        for node, other in pairs:
            role = model.service(other).role
            links = [lk for lk in model.links_of(node) if (lk.kind == "db" and role in pg_roles)
                     or (lk.kind == "sequencer" and lk.upstream_service == other)]
            if not links:
                continue
            fp_ip = fp_ip or self._ip("faultproxy")
            node_first = node in groups[0]
            to_other = not one_way or node_first        # what the node sends is dropped
            from_other = not one_way or not node_first  # what it would receive is dropped
            for lk in links:
                if to_other:
                    self._drop_port(node, "OUTPUT", fp_ip, lk.listen_port, "dport", fault_id)
                if from_other:
                    self._drop_port(node, "INPUT", fp_ip, lk.listen_port, "sport", fault_id)
            touched.append(node)
            if role in pg_roles:
                members = model.replicas("postgres") if role == "pg-lb" else [other]
                sessions += [(member, node, to_other, from_other) for member in members]
        return sorted(set(touched)), sessions

    def _cut_sessions(self, cuts: list[tuple[str, str, bool, bool]], fault_id: str) -> list[str]:
        """Silence at each PostgreSQL member the sessions a node has open there (listed in parallel); returns
        the members that got rules."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=8) as pool:
            listed = list(pool.map(lambda c: self._sessions_of(c[0], c[1]), cuts))
        touched: set[str] = set()
        for (member, _node, to_other, from_other), sessions in zip(cuts, listed, strict=True):
            for addr, port in sessions:
                if to_other:
                    self._drop_port(member, "INPUT", addr, port, "sport", fault_id)
                if from_other:
                    self._drop_port(member, "OUTPUT", addr, port, "dport", fault_id)
                touched.add(member)
        return sorted(touched)

    def _sessions_of(self, member: str, replica: str) -> list[tuple[str, int]]:
        """(peer address, peer port) of ``replica``'s sessions on PostgreSQL ``member`` (by application_name),
        asked inside the member's container: members are not published on the host, only pg-lb is."""
        if not re.fullmatch(r"[a-z0-9-]+", replica):
            raise HarnessError(f"unexpected replica name {replica!r}")
        query = (f"select host(client_addr) || ' ' || client_port from pg_stat_activity "
                 f"where application_name = '{replica}' and client_port > 0")
        rc, out = self._container(member).exec_run(
            ["psql", "-h", "/tmp", "-U", "postgres", "-d", "postgres", "-tAX", "-c", query], user="postgres")
        text = out.decode(errors="replace")
        if rc != 0:
            raise HarnessError(f"cannot list {replica}'s sessions on {member}: {text.strip()[:200]}")
        rows = [ln.split() for ln in text.splitlines() if ln.strip()]
        return [(addr, int(port)) for addr, port in rows]

    # --- database settings ------------------------------------------------------------------------------------
    def _apply_db_setting(self, step: Any, res: Resolution) -> tuple[Callable[[], bool], dict]:
        p = step.params
        dbs = sorted({self.topo.model.database(s) for s in res.targets})
        setting = sql.SQL(p.setting)  # the schema restricts it to a parameter name
        with psycopg.connect(pg.dsn(self.topo, dbname="postgres"), autocommit=True) as conn:
            for db in dbs:
                conn.execute(sql.SQL("alter database {} set {} to {}").format(
                    sql.Identifier(db), setting, sql.Literal(p.value)))
            if p.reconnect:
                conn.execute("select pg_terminate_backend(pid) from pg_stat_activity "
                             "where datname = any(%s) and pid <> pg_backend_pid()", (dbs,))

        def verify() -> bool:
            with psycopg.connect(pg.dsn(self.topo, dbname="postgres"), autocommit=True) as conn:
                rows = conn.execute(
                    "select d.datname, s.setconfig from pg_db_role_setting s join pg_database d "
                    "on d.oid = s.setdatabase where s.setrole = 0 and d.datname = any(%s)", (dbs,)).fetchall()
            have = {str(db) for db, conf in rows if any(c.startswith(f"{p.setting}=") for c in conf or [])}
            return have == set(dbs)

        return verify, {"databases": dbs, "setting": p.setting}

    def _reset_db_setting(self, dbs: list[str], setting: str) -> None:
        """The revert: new sessions get the default again; sessions opened meanwhile keep what they got."""
        if not dbs or not setting:
            return
        with psycopg.connect(pg.dsn(self.topo, dbname="postgres"), autocommit=True) as conn:
            for db in dbs:
                conn.execute(sql.SQL("alter database {} reset {}").format(sql.Identifier(db), sql.SQL(setting)))

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

    def _status(self, service: str) -> str:
        return str(self._container(service).attrs["State"]["Status"])

    def _apply_kill(self, step: Any, res: Resolution) -> tuple[Callable[[], bool], dict]:
        for svc in res.targets:
            self._container(svc).kill(signal=f"SIG{step.params.signal}")
        verify = lambda: all(self._status(s) == "exited" for s in res.targets)  # noqa: E731
        return verify, {"services": res.targets}

    def _apply_stop(self, step: Any, res: Resolution) -> tuple[Callable[[], bool], dict]:
        for svc in res.targets:
            self._container(svc).stop(timeout=int(step.params.timeout_s))
        verify = lambda: all(self._status(s) == "exited" for s in res.targets)  # noqa: E731
        return verify, {"services": res.targets}

    def _apply_pause(self, step: Any, res: Resolution) -> tuple[Callable[[], bool], dict]:
        for svc in res.targets:
            self._container(svc).pause()
        verify = lambda: all(self._status(s) == "paused" for s in res.targets)  # noqa: E731
        return verify, {"services": res.targets}

    def _apply_restart(self, step: Any, res: Resolution) -> tuple[Callable[[], bool], dict]:
        started = {s: self._container(s).attrs["State"]["StartedAt"] for s in res.targets}
        for svc in res.targets:
            c = self._container(svc)
            c.kill(signal=f"SIG{step.params.signal}")
            c.wait(timeout=30)
            c.start()

        def verify() -> bool:
            return all(self._status(s) == "running" and self._container(s).attrs["State"]["StartedAt"] != started[s]
                       for s in res.targets)

        return verify, {"services": res.targets}

    def _apply_set_passive(self, step: Any, res: Resolution) -> tuple[Callable[[], bool], dict]:
        for svc in res.targets:
            role = self.topo.model.service(svc).role
            url = self.topo.url(svc, self.topo.target.port(role, "health"))
            proto = self.topo.target.endpoints[role]["health"].protocol  # type: ignore[index]
            try:
                status, text = admin_client(proto, url, timeout=5).set_passive()
            except Indeterminate as exc:
                raise HarnessError(f"set_passive on {svc} could not be asked: {exc}") from None
            if not 200 <= status < 300:
                raise HarnessError(f"set_passive on {svc} answered HTTP {status}: {text[:200]}")
        verify = lambda: all(self.topo.node_role(s) == "passive" for s in res.targets)  # noqa: E731
        return verify, {"services": res.targets}

    # --- database failover ----------------------------------------------------------------------------------
    def _apply_db_failover(self, step: Any, res: Resolution) -> tuple[Callable[[], bool], dict]:
        mode = step.params.mode
        old = pg.leader(self.topo)
        if old is None:
            raise HarnessError("db_failover: there is no PostgreSQL leader to fail over from")
        others = [s for s in self.topo.model.replicas("postgres") if s != old]
        # a failover needs a standby Patroni may promote (with synchronous_mode: the sync standby, which a
        # rejoined old leader becomes only some seconds after it streams); without one, nothing would fail over
        sync = pg.synchronous_mode(self.topo)    # read once, not on every poll below
        if not _wait(lambda: any(pg.promotable(self.topo, o, sync) for o in others), timeout=PROMOTABLE_WAIT_S):
            raise Infeasible(f"db_failover: no standby Patroni would promote within {PROMOTABLE_WAIT_S:g} s "
                             f"(members: {pg.members(self.topo)})")
        record: dict[str, Any] = {"mode": mode, "old_primary": old, "services": [old]}
        if mode == "kill_primary":
            self._container(old).kill()
        elif mode == "pause_primary":
            self._container(old).pause()
        elif mode == "switchover":
            try:  # Patroni answers only once the switchover is done; the verification below decides
                # with synchronous_mode Patroni switches over only to the synchronous standby
                candidate = next(o for o in others if pg.promotable(self.topo, o, sync))
                patroni = self.topo.url(old, self.topo.target.port("postgres", "patroni"))
                r = requests.post(patroni + "/switchover", timeout=60, json={"leader": old, "candidate": candidate})
            except requests.Timeout:
                log.info("switchover request to %s timed out; verifying the leader change instead", old)
            else:
                if r.status_code == 412:   # "no good candidates": the plan's own faults may have cut them off
                    raise Infeasible(f"Patroni refused the switchover: HTTP 412 {r.text[:200]}")
                if r.status_code >= 400:
                    raise HarnessError(f"Patroni refused the switchover: HTTP {r.status_code} {r.text[:200]}")
        elif mode == "isolate_primary":
            peers = [s.name for s in self.topo.model.services if s.name != old and s.name in self.topo.containers()]
            with self._batched([old, *peers]):
                self._drop_from(old, peers, res.fault_id)

        def verify() -> bool:
            # a graceful switchover waits for the old primary's shutdown checkpoint: slow on a loaded machine
            return _wait(lambda: pg.leader(self.topo) not in (None, old), timeout=DB_FAILOVER_VERIFY_TIMEOUT)

        return verify, record


def _quote(arg: str) -> str:
    """An iptables-restore word: quoted when it holds a space (comments are fault ids: they never do)."""
    return f'"{arg}"' if any(ch.isspace() for ch in arg) else arg


def _split_rule(spec: str) -> list[str]:
    import shlex

    return shlex.split(spec)


__all__ = ["FaultProxyError", "LiveApplied", "LiveInjector", "LiveView"]
