"""``ha-chaos bench ledger``: steady-state throughput/latency through the ledger load balancers, then the
participant failover time (SIGKILL of p1's active replica under load until a fresh command completes OK).

Why also a ``--run`` mode: a topology already started (``ha-chaos up --profile full``) can be measured
repeatedly without paying the start-up each time; without it the bench starts and removes its own topology.
Figures are printed (``--json`` for machines); the run is also checked (exactly one OK per command etc.).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
import uuid
from typing import Any

from harness.errors import HarnessError
from harness.sut.client import HealthClient, Indeterminate, LedgerClient, StreamEnded
from harness.sut.loadgen import PARTY, run_load


class Handles:
    """Where the services of a running topology are reachable from the host, and how to kill one."""

    def __init__(self, run_id: str) -> None:
        import docker
        self.run_id = run_id
        self.docker = docker.from_env()

    def container(self, service: str) -> Any:
        found = self.docker.containers.list(all=True, filters={"label": [f"com.docker.compose.project={self.run_id}",
                                                               f"com.docker.compose.service={service}"]})
        if not found:
            raise HarnessError(f"service {service} of run {self.run_id} is not running",
                               "start it with `ha-chaos up --profile full`")
        return found[0]

    def url(self, service: str, port: int) -> str:
        c = self.container(service)
        c.reload()
        binding = c.ports.get(f"{port}/tcp") or []
        if not binding:
            raise HarnessError(f"{service}:{port} is not published")
        return f"http://127.0.0.1:{binding[0]['HostPort']}"


async def active_replica(h: Handles, replicas: tuple[str, ...], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for r in replicas:
            async with HealthClient(h.url(r, 8080), timeout=2) as hc:
                if await hc.ready():
                    return r
        await asyncio.sleep(0.25)
    raise HarnessError(f"no ready replica among {replicas} within {timeout}s")


async def failover(h: Handles, lb: str, *, timeout: float = 60) -> dict[str, Any]:
    """SIGKILL p1's active replica while commands flow; seconds until a fresh command completes OK via the LB."""
    victim = await active_replica(h, ("p1a", "p1b"))
    stop = asyncio.Event()
    accepted: dict[str, int] = {}

    async def background() -> None:     # keep the load on, counting OK completions per command id
        async with LedgerClient(lb, timeout=3) as cl:
            k = 0
            while not stop.is_set():
                k += 1
                with contextlib.suppress(Indeterminate):
                    await cl.submit(user="bench", act_as=[PARTY["p1"]], command_id=f"bg-{k}-{uuid.uuid4().hex[:4]}")
                await asyncio.sleep(0.02)

    bg = asyncio.create_task(background())
    await asyncio.sleep(1.0)
    h.container(victim).kill()
    t_kill = time.monotonic()
    recovered: float | None = None
    async with LedgerClient(lb, timeout=3) as cl:
        end = 0
        while recovered is None and time.monotonic() - t_kill < timeout:
            cid = f"probe-{uuid.uuid4().hex[:8]}"
            try:
                r = await cl.submit(user="bench", act_as=[PARTY["p1"]], command_id=cid)
                if r.ok:
                    async for c in cl.completions(end, idle_timeout=5):
                        end = c["completion_offset"]
                        if c["command_id"] == cid and c["status"] == "OK":
                            recovered = time.monotonic() - t_kill
                            break
            except (Indeterminate, StreamEnded):
                await asyncio.sleep(0.1)
        stop.set()
        await bg
        async for c in _all(cl):
            if c["status"] == "OK":
                accepted[c["command_id"]] = accepted.get(c["command_id"], 0) + 1
    h.container(victim).start()
    twice = sorted(k for k, v in accepted.items() if v > 1)
    return {"victim": victim, "failover_s": round(recovered, 2) if recovered is not None else None,
            "accepted_twice": twice}


async def _all(cl: LedgerClient) -> Any:
    """Every completion so far (stops after a quiet second)."""
    try:
        async for c in cl.completions(0, idle_timeout=1.5):
            yield c
    except (Indeterminate, StreamEnded):
        return


async def bench(h: Handles, n: int, concurrency: int, do_failover: bool) -> dict[str, Any]:
    urls = {"p1": h.url("ledger-lb", 7501), "p2": h.url("ledger-lb", 7502)}
    for p, reps in (("p1", ("p1a", "p1b")), ("p2", ("p2a", "p2b"))):
        await active_replica(h, reps)
        del p
    await run_load(urls, n=min(50, n), concurrency=concurrency)    # warm-up
    res = await run_load(urls, n=n, concurrency=concurrency)
    out: dict[str, Any] = {"steady": res.summary()}
    if do_failover:
        out["failover"] = await failover(h, urls["p1"])
    return out


def _cmd(args: argparse.Namespace) -> int:
    if args.run:
        result = asyncio.run(bench(Handles(args.run), args.commands, args.concurrency, not args.no_failover))
    else:
        from harness.topology.compose import Topology
        with Topology("full") as topo:
            topo.start()
            result = asyncio.run(bench(Handles(topo.run_id), args.commands, args.concurrency,
                                       not args.no_failover))
    if args.json:
        print(json.dumps(result))
    else:
        s = result["steady"]
        print(f"steady: {s['commands']} commands in {s['seconds']} s = {s['throughput_cmd_s']} cmd/s, "
              f"p50 {s['latency_p50_ms']} ms, p99 {s['latency_p99_ms']} ms, retries {s['retries']}, "
              f"problems {s['problem_count']}")
        if "failover" in result:
            f = result["failover"]
            print(f"failover: killed {f['victim']}, command OK again after {f['failover_s']} s, "
                  f"accepted twice: {len(f['accepted_twice'])}")
    bad = result["steady"]["problem_count"] or (result.get("failover") or {}).get("accepted_twice")
    return 1 if bad else 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("ledger", help="throughput/latency through ledger-lb and participant failover time")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--commands", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--run", help="measure an already running topology (run id) instead of starting one")
    p.add_argument("--no-failover", action="store_true", help="skip the SIGKILL failover measurement")
    p.set_defaults(func=_cmd)
