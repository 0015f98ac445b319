"""PostgreSQL HA primitives on a running topology: Patroni roles, failover, synchronous mode, a write probe.

These are the platform's DB-failover building blocks; the nemesis (``harness/faults``) and the ``bench
db-failover`` command both use them. Every wait has a deadline and says what it waited for when it runs out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psycopg
import requests

from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.topology.compose import Topology

PG_PASSWORD = "ha-chaos"


def await_condition(what: str, cond: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    """Poll ``cond`` until it returns something truthy; HarnessError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise HarnessError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def patroni(topo: Topology, service: str, path: str, method: str = "GET", **kw: Any) -> requests.Response:
    return requests.request(method, topo.url(service, topo.target.port("postgres", "patroni")) + path, timeout=3,
                            **kw)


def cluster(topo: Topology) -> dict[str, Any]:
    """Patroni's ``/cluster`` from any reachable member."""
    for svc in topo.model.replicas("postgres"):
        try:
            return patroni(topo, svc, "/cluster").json()
        except (requests.RequestException, HarnessError, ValueError):
            continue
    raise HarnessError("no Patroni member answers /cluster")


def members(topo: Topology) -> dict[str, dict[str, Any]]:
    try:
        return {m["name"]: m for m in cluster(topo).get("members", [])}
    except HarnessError:
        return {}


LEADER_ROLES = ("leader", "master", "primary")


def leader_of(members_list: list[dict[str, Any]]) -> str | None:
    """The running leader among Patroni ``/cluster`` members, or None (no leader, or not exactly one)."""
    leaders = [m["name"] for m in members_list if m.get("role") in LEADER_ROLES and m.get("state") == "running"]
    return leaders[0] if len(leaders) == 1 else None


def leader(topo: Topology) -> str | None:
    return leader_of(list(members(topo).values()))


def set_synchronous_mode(topo: Topology, enabled: bool, timeout: float = 60) -> None:
    """Switch Patroni's synchronous_mode at run time and wait until a sync standby exists (when enabled)."""
    for svc in topo.model.replicas("postgres"):
        try:
            r = patroni(topo, svc, "/config", method="PATCH", json={"synchronous_mode": enabled})
            if r.ok:
                break
        except (requests.RequestException, HarnessError):
            continue
    else:
        raise HarnessError("could not PATCH Patroni /config on any member")
    if enabled:
        await_condition("a synchronous standby",
                        lambda: any(m.get("role") == "sync_standby" for m in members(topo).values()), timeout)


def synchronous_mode(topo: Topology) -> bool:
    """Patroni's current ``synchronous_mode`` (read from any member's /config)."""
    for svc in topo.model.replicas("postgres"):
        try:
            r = patroni(topo, svc, "/config")
            if r.ok:
                return bool(r.json().get("synchronous_mode"))
        except (requests.RequestException, HarnessError, ValueError):
            continue
    raise HarnessError("could not read Patroni /config on any member")


def promotable(topo: Topology, service: str, sync: bool) -> bool:
    """Whether Patroni would promote ``service`` if the leader went away now: a streaming replica, and with
    synchronous_mode (``sync``, see ``synchronous_mode``) the synchronous standby (Patroni never promotes a replica
    that may miss commits)."""
    m = members(topo).get(service, {})
    if m.get("state") not in ("streaming", "running"):
        return False
    return m.get("role") == "sync_standby" if sync else m.get("role") in ("replica", "sync_standby")


def streaming_replicas(topo: Topology) -> set[str]:
    """Members streaming from the leader, from the leader's own pg_stat_replication (through pg-lb).

    Why not Patroni's member state: Patroni 3.0.2 reports a replica that cannot follow the leader (e.g. on a newer
    timeline) as "running", just like a healthy one."""
    with psycopg.connect(dsn(topo, dbname="postgres"), autocommit=True) as conn:
        rows = conn.execute("select application_name from pg_stat_replication where state = 'streaming'").fetchall()
    return {str(r[0]) for r in rows}


def ensure_streaming(topo: Topology, timeout: float = 120, grace: float = 20) -> list[str]:
    """Every member but the leader streams from it; one that does not within ``grace`` seconds is reinitialized
    from the leader through Patroni (POST /reinitialize). Returns the members that were reinitialized.

    Seen live: a primary paused past its TTL woke up and kept leading on its timeline while the standby had been
    promoted onto the next one; the standby then followed the leader "successfully" per Patroni and never streamed
    ("highest timeline N of the primary is behind recovery timeline N+1"), so no further failover was possible."""
    def streams(m: str) -> bool:
        try:
            return m in streaming_replicas(topo)
        except psycopg.Error:
            return False

    await_condition("a PostgreSQL leader", lambda: leader(topo), timeout, interval=0.5)
    reinitialized: list[str] = []
    for m in [s for s in topo.model.replicas("postgres") if s != leader(topo)]:
        t0 = time.monotonic()
        while not streams(m) and time.monotonic() - t0 < grace:
            time.sleep(0.5)
        if streams(m):
            continue
        r = patroni(topo, m, "/reinitialize", method="POST", json={"force": True})
        if r.status_code >= 400:
            raise HarnessError(f"{m} does not stream from the leader and Patroni refused to reinitialize it: "
                               f"HTTP {r.status_code} {r.text[:200]}")
        reinitialized.append(m)
        await_condition(f"{m} streaming from the leader after reinitialize", lambda m=m: streams(m), timeout,
                        interval=1.0)
    return reinitialized


def dsn(topo: Topology, *, service: str = "pg-lb", port: int = 5432, dbname: str = "harness",
        connect_timeout: int = 2) -> str:
    return (f"host=127.0.0.1 port={topo.host_port(service, port)} dbname={dbname} user=postgres "
            f"password={PG_PASSWORD} connect_timeout={connect_timeout}")


def wait_writable(topo: Topology, timeout: float = 60) -> None:
    conninfo = dsn(topo)

    def writable() -> bool:
        try:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                return conn.execute("select not pg_is_in_recovery()").fetchone()[0]
        except psycopg.Error:
            return False

    await_condition("a writable primary through pg-lb", writable, timeout, interval=0.3)


def wait_replica_streaming(topo: Topology, service: str, timeout: float = 90) -> float:
    """Wait until ``service`` is a running replica that streams from the leader; returns seconds waited.

    Patroni's member state alone is not enough: it reports a replica that cannot follow the leader (e.g. stuck on
    another timeline) as "running", like a healthy one (see ``streaming_replicas``); the leader's
    pg_stat_replication must list it as streaming."""
    t0 = time.monotonic()

    def streaming() -> bool:
        m = members(topo).get(service, {})
        if m.get("role") not in ("replica", "sync_standby") or m.get("state") not in ("streaming", "running"):
            return False
        try:
            return service in streaming_replicas(topo)
        except psycopg.Error:
            return False

    await_condition(f"{service} to rejoin as a streaming replica", streaming, timeout, interval=0.5)
    return time.monotonic() - t0
