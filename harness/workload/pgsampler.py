"""Single-writer evidence that needs no cooperation from the nodes: PostgreSQL's own view of their sessions.

A real Canton exposes no ``/admin/evidence``; what any deployment on PostgreSQL does expose is the server's session
table. Every ~250 ms the sampler reads, in one query on one connection, every client session of the watched
replicas (``pg_stat_activity`` rows whose ``application_name`` names a replica: the deployment sets it per replica,
as the reference topology's DSNs do and Canton's JDBC ``ApplicationName`` would) with

- the session's identity: server, ``pid`` and ``backend_start`` (a pid alone is reused once its process is gone);
- ``backend_xid``: the top-level transaction id of the session's open transaction, if it has one. PostgreSQL
  assigns an xid lazily, at a transaction's first *write* (INSERT/UPDATE/DELETE, DDL that changes the catalog, a
  row lock taken by ``FOR UPDATE`` on an existing row); reads, advisory locks and ``LISTEN`` never get one. So an
  xid is a write by that replica's backend, caught in the act. Why not ``pg_stat_database``'s xact/tuple counters:
  they count per database, not per session, and both replicas of a node share its database, so they cannot say
  *who* wrote;
- ``state``, ``xact_start``: how long an open transaction has lasted (an ``idle in transaction`` session with an
  old xid is a zombie the server has not noticed is gone);
- the advisory locks of the session (``pg_locks``, granted or waiting): the election's main and writers locks of
  a Canton-style node, recorded for a reader of the history (the checker does not rely on lock ids, which a
  black-box target does not document).

Why also a fast poll between samples: a write transaction holds its xid only from its first write to its commit,
often a millisecond or two, so a snapshot every 250 ms sees few of them. Every ~50 ms a light query lists only the
sessions that hold an xid; what it saw is attached to the next sample (``writes``), so the history keeps one event
per 250 ms while a session that writes a few times a second is almost surely known as a writer.

The samples go into the history as ``pg_sample`` events (docs/history.md); ``harness.checkers.pgwriters`` judges
them. The sampler's connection goes straight to pg-lb's published port, not through the fault proxy, so a fault
on a node's DB link never blinds it; a sample that cannot be taken is recorded as ``info`` with the error.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import asyncpg

log = logging.getLogger("ha-chaos.pgsampler")

#: the sampler's own sessions carry this name, so it never watches itself
APPLICATION_NAME = "ha-chaos-sampler"
PROCESS = "pgsampler"

#: One round trip, one snapshot: the server builds the JSON. Times are microseconds on the DB server's clock (the
#: clock of the nodes' own evidence). A lock key is the advisory lock's 64-bit key (classid << 32 | objid).
SAMPLE_SQL = """
with locks as (
  select pid, json_agg(json_build_array((classid::bigint << 32) | objid::bigint, mode, granted)
                       order by classid, objid, mode) as locks
  from pg_locks where locktype = 'advisory' group by pid)
select json_build_object(
  'db_time', (extract(epoch from clock_timestamp()) * 1000000)::bigint,
  'server', coalesce(inet_server_addr()::text, 'local'),
  'sessions', coalesce((
    select json_agg(json_build_object(
      'replica', a.application_name, 'db', a.datname, 'pid', a.pid,
      'start', (extract(epoch from a.backend_start) * 1000000)::bigint,
      'state', a.state, 'xid', a.backend_xid::text,
      'xact_start', (extract(epoch from a.xact_start) * 1000000)::bigint,
      'locks', l.locks) order by a.application_name, a.pid)
    from pg_stat_activity a left join locks l on l.pid = a.pid
    where a.backend_type = 'client backend' and a.application_name = any($1::text[])), '[]'::json))::text
"""


#: The fast poll: only the watched sessions that hold an xid right now.
POLL_SQL = """
select coalesce(inet_server_addr()::text, 'local') as server, pid,
       (extract(epoch from backend_start) * 1000000)::bigint as start, backend_xid::text as xid
from pg_stat_activity
where backend_type = 'client backend' and backend_xid is not null and application_name = any($1::text[])
"""

Session = tuple[str, int, int]  # (server, pid, backend start µs)


class Recorder(Protocol):
    def ok(self, process: str, f: str, value: dict[str, Any] | None = None) -> Any: ...

    def info(self, process: str, f: str, value: dict[str, Any] | None = None) -> Any: ...


def sample_value(raw: dict[str, Any], pairs: Mapping[str, list[str] | tuple[str, ...]],
                 polled: Mapping[Session, set[str]] | None = None) -> dict[str, Any]:
    """The ``pg_sample`` value of one query result: sessions grouped by logical node and replica, null fields
    left out (a sample lists tens of sessions four times a second; the history should not double in size).
    ``polled``: the xids the fast polls saw per session since the previous sample, kept as ``writes``."""
    node_of = {rep: node for node, reps in pairs.items() for rep in reps}
    nodes: dict[str, dict[str, list[dict[str, Any]]]] = {node: {} for node in pairs}
    server = str(raw.get("server"))
    for s in raw.get("sessions") or []:
        node = node_of.get(str(s.get("replica")))
        if node is None:
            continue
        entry = {k: s[k] for k in ("pid", "start", "state", "xid", "xact_start", "db", "locks")
                 if s.get(k) is not None}
        seen = (polled or {}).get((server, int(s["pid"]), int(s.get("start") or 0)))
        if seen:
            entry["writes"] = sorted(seen, key=lambda x: (len(x), x))
        nodes[node].setdefault(str(s["replica"]), []).append(entry)
    return {"server": raw.get("server"), "db_time": raw.get("db_time"), "nodes": nodes}


class PgSampler:
    """Samples the watched replicas' sessions every ``interval_s`` into ``recorder`` until ``stop`` is set.

    ``dsn()`` names where to connect now (None: not known yet, e.g. pg-lb's port is being looked up again); the
    connection is kept between samples and re-opened after any error, with ``statement_timeout`` and a client
    timeout so a hung server costs one missed sample, not a stuck sampler.
    """

    def __init__(self, dsn: Callable[[], str | None], recorder: Recorder,
                 pairs: Mapping[str, list[str] | tuple[str, ...]], *, interval_s: float = 0.25,
                 poll_s: float = 0.05, timeout_s: float = 1.0, on_error: Callable[[], None] | None = None) -> None:
        self.dsn = dsn
        self.recorder = recorder
        self.pairs = {node: list(reps) for node, reps in pairs.items()}
        self.replicas = sorted(r for reps in self.pairs.values() for r in reps)
        self.interval_s = interval_s
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self.on_error = on_error
        self.samples = 0
        self.failures = 0
        self._conn: asyncpg.Connection | None = None
        self._polled: dict[Session, set[str]] = {}

    async def _connect(self, dsn: str) -> asyncpg.Connection:
        ms = str(int(self.timeout_s * 1000))
        return await asyncpg.connect(dsn, timeout=2 * self.timeout_s, command_timeout=self.timeout_s + 0.5,
                                     server_settings={"application_name": APPLICATION_NAME,
                                                      "statement_timeout": ms, "lock_timeout": ms})

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            dsn = self.dsn()
            if dsn is None:
                raise ConnectionError("the database address is not known")
            self._conn = await self._connect(dsn)
        return self._conn

    async def poll_once(self) -> None:
        """The fast poll: remember which sessions hold an xid now. A failed poll is not recorded (the next
        sample says whether the server answers); it drops the connection so the sample reconnects."""
        try:
            conn = await self._connection()
            rows = await conn.fetch(POLL_SQL, self.replicas, timeout=self.timeout_s + 0.5)
        except asyncio.CancelledError:
            raise
        except Exception:
            await self.close()
            return
        for r in rows:
            self._polled.setdefault((r["server"], r["pid"], r["start"]), set()).add(r["xid"])

    async def sample_once(self) -> dict[str, Any] | None:
        """Take and record one sample; returns its value (None if it could not be taken, recorded as info)."""
        try:
            conn = await self._connection()
            text = await conn.fetchval(SAMPLE_SQL, self.replicas, timeout=self.timeout_s + 0.5)
            value = sample_value(json.loads(text), self.pairs, self._polled)
            self._polled = {}
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure (server gone, failover, timeout) costs this sample only
            self.failures += 1
            await self.close()
            if self.on_error is not None:
                self.on_error()
            self.recorder.info(PROCESS, "pg_sample", {"error": f"{type(exc).__name__}: {exc}"[:300]})
            return None
        self.samples += 1
        self.recorder.ok(PROCESS, "pg_sample", value)
        return value

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not stop.is_set():
                t_next = loop.time() + self.interval_s
                ok = await self.sample_once() is not None
                # polls only while the server answers; after a failure wait a full interval (4 tries a second)
                while ok and self.poll_s > 0 and loop.time() + self.poll_s < t_next and not stop.is_set():
                    t_poll = loop.time() + self.poll_s
                    await self.poll_once()
                    await asyncio.sleep(max(0.0, t_poll - loop.time()))
                await asyncio.sleep(max(0.0, t_next - loop.time()))
        finally:
            await self.close()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()  # never wait on a connection to a server that may be gone
