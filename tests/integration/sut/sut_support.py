"""Support for the SUT integration tests: a throwaway PostgreSQL 15, a cuttable TCP forwarder, node factories.

Why a host PostgreSQL instead of the compose topology: these tests check the nodes' HA logic against a REAL
PostgreSQL (advisory locks, pg_terminate_backend, SERIALIZABLE) in seconds, independent of the Docker images.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from harness.sut.common.config import NodeConfig, Timers

PG_BIN = Path("/usr/lib/postgresql/15/bin")

#: Short test timers (the model's figures scaled down, as in compose).
TEST_TIMERS = Timers(lock_check=1.0, passive_check=1.0, role_reeval=1.0, lock_check_timeout=4.0,
                     reconnect_max=1.0, db_retry_max=0.5, db_connect_timeout=1.0, db_command_timeout=5.0,
                     seq_offline_check=0.5, seq_offline_after=3.0, seq_client_timeout=2.0, seq_send_timeout=1.0,
                     max_sequencing=5.0, decision_timeout=5.0, tick=0.2)


_PORTS = random.Random()


def free_port() -> int:
    """A port for a listener that binds later (e.g. a Ledger API opened on becoming active).

    Drawn below the kernel's ephemeral range (``ip_local_port_range``, 32768+): a port the kernel handed out with
    bind(0) can meanwhile become the source port of an outgoing DB connection, and the late bind then failed
    with EADDRINUSE (seen with reconnect churn during a DB outage).
    """
    for _ in range(200):
        port = _PORTS.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32000")


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@dataclass
class PgServer:
    """A throwaway PostgreSQL 15 on 127.0.0.1 (initdb into a temp dir, trust auth, fsync off)."""

    port: int = 0
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ha-chaos-pg-")))

    def start(self) -> PgServer:
        if not (PG_BIN / "initdb").exists():
            from harness.platform.setup import ensure_tools

            ensure_tools()  # the same install path as `ha-chaos setup` (apt update on a miss, clear error if not root)
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        data = self.root / "data"
        subprocess.run(_as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres",
                                     "--auth=trust", "-E", "UTF8"]), check=True, capture_output=True)
        self.resume()
        return self

    def resume(self) -> None:
        """Start the server (again) on the same port."""
        opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c max_connections=500 -c full_page_writes=off")
        subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.root / "data"), "-o", opts, "-l",
                                     str(self.root / "log"), "-w", "start"]), check=True, capture_output=True)

    def halt(self) -> None:
        """A DB outage: stop the server (sessions are terminated, new connections refused)."""
        subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast",
                                     "-w", "stop"]), check=True, capture_output=True)

    def stop(self) -> None:
        subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate",
                                     "stop"]), capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, db: str, port: int | None = None) -> str:
        return f"postgresql://postgres@127.0.0.1:{port or self.port}/{db}"

    async def create_db(self, prefix: str) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        conn = await asyncpg.connect(self.dsn("postgres"))
        try:
            await conn.execute(f'create database "{name}"')
        finally:
            await conn.close()
        return name

    async def query(self, db: str, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.dsn(db))
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()


class Forwarder:
    """A TCP forwarder to cut one replica from the DB: ``cut()`` resets every connection and refuses new ones."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.cut_now = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> Forwarder:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if self.cut_now:
            w.transport.abort()
            return
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            w.transport.abort()
            return
        self._writers |= {w, uw}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except Exception:
                pass
            finally:
                dst.transport.abort()
        await asyncio.gather(pipe(r, uw), pipe(ur, w))
        self._writers -= {w, uw}

    def cut(self) -> None:
        self.cut_now = True
        for w in list(self._writers):
            w.transport.abort()

    def heal(self) -> None:
        self.cut_now = False

    def refuse_new(self) -> None:
        """Keep established connections, refuse new ones (a replica that cannot reconnect)."""
        self.cut_now = True

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()


def node_config(role: str, replica: str, node: str, dsn: str, *, bugs: frozenset[str] = frozenset(),
                endpoints: tuple[str, ...] = (), timers: Timers = TEST_TIMERS, **kw: Any) -> NodeConfig:
    cfg = NodeConfig(role=role, node=node, replica=replica, db_dsn=dsn, db_startup="wait",  # type: ignore[arg-type]
                     sequencer_endpoints=endpoints, health_port=free_port(), api_port=free_port(),
                     api_host="127.0.0.1", bugs=bugs, timers=timers)
    return replace(cfg, **kw) if kw else cfg


DEADLINE_SCALE = float(os.environ.get("HA_CHAOS_DEADLINE_SCALE", "3"))


async def wait_until(pred: Callable[[], Awaitable[bool] | bool], timeout: float, what: str,
                     interval: float = 0.05) -> None:
    """Poll ``pred`` until true; fail with ``what`` at the deadline (never a fixed sleep).

    Deadlines are scaled by HA_CHAOS_DEADLINE_SCALE (default 3): on the 2-core CI machine these host tests run
    while the session's reference topology is still up, and 30 s deadlines were missed by a correct node.
    """
    timeout *= DEADLINE_SCALE
    deadline = time.monotonic() + timeout
    while True:
        res = pred()
        if not isinstance(res, bool):
            res = await res
        if res:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {what}")
        await asyncio.sleep(interval)


async def http_status(url: str) -> int | None:
    try:
        async with aiohttp.ClientSession() as s, s.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
            return r.status
    except Exception:
        return None


@dataclass
class Cluster:
    """The whole reference network in-process: 3 sequencers, a mediator pair, participant pairs p1 and p2."""

    pg: PgServer
    bugs: dict[str, frozenset[str]] = field(default_factory=dict)   # replica -> bug switches
    timers: Timers = TEST_TIMERS
    sequencers: list[Any] = field(default_factory=list)
    mediators: list[Any] = field(default_factory=list)
    participants: dict[str, list[Any]] = field(default_factory=dict)
    dbs: dict[str, str] = field(default_factory=dict)
    #: replica -> forwarders of its sequencer connections (one per sequencer), to cut it from the sequencers
    seq_links: dict[str, list[Forwarder]] = field(default_factory=dict)
    with_participants: tuple[str, ...] = ("p1", "p2")

    async def _endpoints(self, replica: str) -> tuple[str, ...]:
        links = [await Forwarder(s.cfg.api_port).start() for s in self.sequencers]
        self.seq_links[replica] = links
        return tuple(f"127.0.0.1:{f.port}" for f in links)

    def cut_sequencers(self, replica: str) -> None:
        for f in self.seq_links[replica]:
            f.cut()

    def heal_sequencers(self, replica: str) -> None:
        for f in self.seq_links[replica]:
            f.heal()

    async def start(self) -> Cluster:
        from harness.sut.mediator.node import MediatorNode
        from harness.sut.participant.node import ParticipantNode
        from harness.sut.sequencer.node import SequencerNode
        for name in ("sequencer", "med1", "p1", "p2"):
            self.dbs[name] = await self.pg.create_db(name)
        for i in range(3):
            rep = f"seq{i + 1}"
            self.sequencers.append(SequencerNode(node_config(
                "sequencer", rep, "sequencer", self.pg.dsn(self.dbs["sequencer"]), timers=self.timers,
                bugs=self.bugs.get(rep, frozenset()))))
        for s in self.sequencers:
            await s.start()
        for rep in ("med1a", "med1b"):
            self.mediators.append(MediatorNode(node_config(
                "mediator", rep, "med1", self.pg.dsn(self.dbs["med1"]), endpoints=await self._endpoints(rep),
                timers=self.timers, bugs=self.bugs.get(rep, frozenset()))))
        for p in self.with_participants:
            self.participants[p] = [ParticipantNode(node_config(
                "participant", f"{p}{x}", p, self.pg.dsn(self.dbs[p]), endpoints=await self._endpoints(f"{p}{x}"),
                timers=self.timers, bugs=self.bugs.get(f"{p}{x}", frozenset()))) for x in "ab"]
        for n in [*self.mediators, *(n for reps in self.participants.values() for n in reps)]:
            await n.start()
        for pair in [self.mediators, *self.participants.values()]:
            await wait_until(lambda pair=pair: sum(n.election.role == "active" for n in pair) == 1, 15,
                             "one active per pair")
        # the role turns active before the transition opens the Ledger API listener (last step): tests that
        # submit right away must not race it (seen as "connection refused" on the active's API port)
        for reps in self.participants.values():
            await wait_until(lambda reps=reps: any(n.election.role == "active" and n._api is not None
                                                   for n in reps), 15, "the active participant's API listening")
        return self

    def active(self, p: str) -> Any:
        return next(n for n in self.participants[p] if n.election.role == "active")

    def ledger_url(self, p: str) -> str:
        return f"http://127.0.0.1:{self.active(p).cfg.api_port}"

    async def submit(self, p: str, timeout: float = 30, **kw: Any) -> Any:
        """Submit to whichever replica of ``p`` is active, retrying like a client behind a load balancer
        (a loaded machine may fail over at any time; tests about other things must not depend on it)."""
        from harness.client.json_api import Indeterminate, LedgerClient
        deadline = time.monotonic() + timeout
        while True:
            try:
                async with LedgerClient(self.ledger_url(p)) as cl:
                    r = await cl.submit(**kw)
                if r.http_status != 503:
                    return r
            except (Indeterminate, StopIteration):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"no replica of {p} accepted the submission within {timeout}s")
            await asyncio.sleep(0.2)

    async def stop(self) -> None:
        for n in [*self.participants.get("p1", []), *self.participants.get("p2", []), *self.mediators]:
            with contextlib.suppress(Exception):
                await n.stop()
        for s in self.sequencers:
            with contextlib.suppress(Exception):
                await s.stop()
        for links in self.seq_links.values():
            for f in links:
                await f.close()


async def collect(stream: Any, sink: list[dict[str, Any]]) -> None:
    """Drain an async iterator into ``sink`` until cancelled (stream errors end the collection)."""
    try:
        async for item in stream:
            sink.append(item)
    except asyncio.CancelledError:
        raise
    except Exception:
        return


def node_env(cfg: NodeConfig) -> dict[str, str]:
    """The environment that configures ``python -m harness.sut`` like ``cfg`` (API.md lists the variables)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HA_", "NODE_", "DB_"))}
    env.update({"NODE_ROLE": cfg.role, "NODE_NAME": cfg.node, "NODE_REPLICA": cfg.replica, "DB_DSN": cfg.db_dsn,
                "DB_STARTUP": cfg.db_startup, "SEQUENCER_ENDPOINTS": ",".join(cfg.sequencer_endpoints),
                "HEALTH_PORT": str(cfg.health_port), "API_PORT": str(cfg.api_port), "API_HOST": cfg.api_host,
                "HA_CHAOS_SUT_BUGS": ",".join(sorted(cfg.bugs))})
    for name in cfg.timers.__dataclass_fields__:
        env["HA_" + name.upper()] = str(getattr(cfg.timers, name))
    return env
