"""A self-checking command load for the reference nodes: the acceptance run of issue 4 and ``bench ledger``.

Why here and not in ``harness/workload``: this checks the reference nodes themselves (exactly one completion per
command, duplicates carry the original offset, both participants agree on shared transactions) and measures
them; it records no history. Clients retry on UNAVAILABLE/timeouts with the same command id and a new submission
id, as the model prescribes; idempotency comes from deduplication.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from harness.client.json_api import Indeterminate, LedgerClient, StreamEnded
from harness.topology.target import reference_target


def party_plan(parties: dict[str, list[str]]) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """From a target's parties: per participant, the party its commands act as, the party of the next participant
    that a cross-participant command also informs, and that next participant (none with a single participant)."""
    parts = list(parties)
    nxt = {p: parts[(i + 1) % len(parts)] for i, p in enumerate(parts) if len(parts) > 1}
    return ({p: parties[p][0] for p in parts}, {p: parties[q][-1] for p, q in nxt.items()}, nxt)


PARTY, OTHER, _NEXT = party_plan(reference_target().parties)


@dataclass
class LoadResult:
    commands: int
    resubmits: int
    seconds: float
    latencies_ms: list[float]
    retries: int
    problems: list[str] = field(default_factory=list)
    completions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    transactions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    starts_s: list[float] = field(default_factory=list)   # per latency: when the command started (s after t0)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else lat * 99
        return {"commands": self.commands, "resubmits": self.resubmits, "seconds": round(self.seconds, 2),
                "throughput_cmd_s": round(self.commands / self.seconds, 1) if self.seconds else None,
                "latency_p50_ms": round(q[49], 1) if lat else None, "latency_p99_ms": round(q[98], 1) if lat else None,
                "retries": self.retries, "problems": self.problems[:20], "problem_count": len(self.problems)}


class StreamFollower:
    """Follows one participant's completions or transactions through a URL, resuming from the last offset."""

    def __init__(self, url: str, kind: str, start: int = 0) -> None:
        self.url, self.kind = url, kind
        self.items: list[dict[str, Any]] = []
        self.by_command: dict[str, list[dict[str, Any]]] = {}
        self.waiters: dict[str, asyncio.Event] = {}
        self.start = start      # elements up to this offset are from before this load (not read)
        self.offset = start
        self.resumes = 0

    def _add(self, item: dict[str, Any]) -> None:
        self.items.append(item)
        cid = item.get("command_id", "")
        self.by_command.setdefault(cid, []).append(item)
        if cid in self.waiters:
            self.waiters[cid].set()

    async def wait_for(self, cid: str, pred: Any, deadline: float) -> list[dict[str, Any]]:
        """Wait until this command's elements satisfy ``pred`` (indexed: no scan of the whole stream)."""
        ev = self.waiters.setdefault(cid, asyncio.Event())
        while not pred(self.by_command.get(cid, [])):
            ev.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.kind}: condition not met for {cid}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ev.wait(), min(remaining, 1.0))
        return self.by_command[cid]

    async def run(self) -> None:
        key = "completion_offset" if self.kind == "completions" else "offset"
        while True:
            async with LedgerClient(self.url) as cl:
                stream = cl.completions if self.kind == "completions" else cl.transactions
                try:
                    async for item in stream(self.offset, idle_timeout=5.0):
                        self.offset = item[key]
                        self._add(item)
                except (StreamEnded, Indeterminate):
                    self.resumes += 1
                    await asyncio.sleep(0.1)


async def submit_until_acked(cl: LedgerClient, p: str, command_id: str, informees: list[str],
                             deadline: float, act_as: str | None = None) -> tuple[str, int]:
    """Submit with retries (new submission id each time); returns (submission id, retries)."""
    retries = 0
    while True:
        sid = uuid.uuid4().hex
        try:
            r = await cl.submit(user="bench", act_as=[act_as or PARTY[p]], command_id=command_id, submission_id=sid,
                                informees=informees, payload={"cmd": command_id})
            if r.ok:
                return sid, retries
            if r.http_status == 400:
                raise RuntimeError(f"invalid submission: {r.body}")
        except Indeterminate:
            pass
        retries += 1
        if time.monotonic() > deadline:
            raise TimeoutError(f"{p}/{command_id} not acknowledged")
        await asyncio.sleep(min(0.05 * retries, 0.5))


async def run_load(urls: dict[str, str], n: int = 1000, *, concurrency: int = 32, cross_every: int = 3,
                   resubmit_percent: float = 5.0, timeout: float = 300.0, rate: float | None = None,
                   parties: dict[str, list[str]] | None = None) -> LoadResult:
    """``n`` commands alternating p1/p2, every ``cross_every``-th cross-participant, plus resubmits of accepted
    command ids; waits for every completion and checks the outcomes (``LoadResult.problems``).

    Closed loop by default: ``concurrency`` clients, each submitting its next command once the last completed
    (the highest throughput the nodes sustain). With ``rate`` the load is open loop: command k starts at
    ``k / rate`` seconds whatever the others do (at most ``concurrency`` outstanding), and its latency counts from
    that scheduled moment, so a stall shows as latency instead of slowing the load down (no coordinated
    omission): the latency the nodes give at that throughput."""
    clients = {p: LedgerClient(u, timeout=5.0) for p, u in urls.items()}
    # Streams are followed from the current ledger ends: on a topology that already ran loads, reading its whole
    # history again would load the participants and this process during the measured run.
    ends = {p: await _ledger_end(cl) for p, cl in clients.items()}
    comps = {p: StreamFollower(u, "completions", ends[p][1]) for p, u in urls.items()}
    txs = {p: StreamFollower(u, "transactions", ends[p][0]) for p, u in urls.items()}
    followers = [asyncio.create_task(f.run()) for f in [*comps.values(), *txs.values()]]
    sem = asyncio.Semaphore(concurrency)
    deadline = time.monotonic() + timeout
    started: dict[tuple[str, str], float] = {}
    latencies: list[float] = []
    starts: list[float] = []
    retries = 0
    problems: list[str] = []
    party, other_party, nxt = party_plan({p: (parties or reference_target().parties)[p] for p in urls})
    parts = list(urls)
    plan = [(parts[k % len(parts)], f"c{k}-{uuid.uuid4().hex[:6]}", bool(nxt) and k % cross_every == 0)
            for k in range(n)]

    def has(status: str) -> Any:
        return lambda items: any(c["status"] == status for c in items)

    async def wait_ok(p: str, cid: str) -> None:
        await comps[p].wait_for(cid, has("OK"), deadline)

    async def one(k: int, p: str, cid: str, cross: bool) -> None:
        nonlocal retries
        if rate:
            started[(p, cid)] = t0 + k / rate
            await asyncio.sleep(max(0.0, started[(p, cid)] - time.monotonic()))
        async with sem:
            if not rate:
                started[(p, cid)] = time.monotonic()
            _, r = await submit_until_acked(clients[p], p, cid, [other_party[p]] if cross else [], deadline,
                                             party[p])
            retries += r
            await wait_ok(p, cid)
            latencies.append((time.monotonic() - started[(p, cid)]) * 1000)
            starts.append(started[(p, cid)] - t0)

    t0 = time.monotonic()
    try:
        await asyncio.gather(*(one(k, *x) for k, x in enumerate(plan)))
        elapsed = time.monotonic() - t0
        n_resub = int(n * resubmit_percent / 100)
        resub = plan[:: max(1, n // n_resub)][:n_resub] if n_resub else []
        for p, cid, cross in resub:
            _, r = await submit_until_acked(clients[p], p, cid, [other_party[p]] if cross else [], deadline,
                                             party[p])
            retries += r
        for p, cid, _ in resub:
            try:
                await comps[p].wait_for(cid, has("DUPLICATE_COMMAND"), deadline)
            except TimeoutError:
                problems.append(f"{p}/{cid}: no DUPLICATE_COMMAND for the resubmit")
        await _settle(comps, txs)
        problems += check(plan, {p: f.items for p, f in comps.items()}, {p: f.items for p, f in txs.items()},
                          {(p, c) for p, c, _ in resub},
                          comp_start={p: f.start for p, f in comps.items()},
                          tx_start={p: f.start for p, f in txs.items()}, informed=nxt)
    finally:
        for t in followers:
            t.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
        for cl in clients.values():
            await cl.close()
    return LoadResult(n, len(resub), elapsed, latencies, retries, problems,
                      {p: f.items for p, f in comps.items()}, {p: f.items for p, f in txs.items()}, starts)


async def _ledger_end(cl: LedgerClient, timeout: float = 30.0) -> tuple[int, int]:
    """(transaction offset, completion offset) of a participant's ledger end (retried while it fails over)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            end = await cl.ledger_end()
            if "offset" in end:
                return int(end["offset"]), int(end["completion_offset"])
        except Indeterminate:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("ledger end not readable")
        await asyncio.sleep(0.2)


async def _settle(*followers: dict[str, StreamFollower], quiet: float = 1.0) -> None:
    """Wait until no stream has grown for ``quiet`` seconds (late elements would be duplicates to catch)."""
    sizes: list[int] = []
    while True:
        now = [len(f.items) for group in followers for f in group.values()]
        if now == sizes:
            return
        sizes = now
        await asyncio.sleep(quiet)


def check(plan: list[tuple[str, str, bool]], comps: dict[str, list[dict[str, Any]]],
          txs: dict[str, list[dict[str, Any]]], resubmitted: set[tuple[str, str]], *,
          comp_start: dict[str, int] | None = None, tx_start: dict[str, int] | None = None,
          informed: dict[str, str] | None = None) -> list[str]:
    """Exactly one OK per command, duplicates carry the original offset, streams dense (after the offsets they
    were followed from) and in agreement (``informed``: participant -> the one its cross-participant commands
    also inform; default: the reference target's)."""
    nxt = informed if informed is not None else _NEXT
    problems: list[str] = []
    comp_start, tx_start = comp_start or {}, tx_start or {}
    comp_ix: dict[tuple[str, str], list[dict[str, Any]]] = {}
    tx_ix: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for p, items in comps.items():
        for c in items:
            comp_ix.setdefault((p, c["command_id"]), []).append(c)
    for p, items in txs.items():
        for t in items:
            tx_ix.setdefault((p, t["command_id"]), []).append(t)
    tx_ids = {p: {t["tx_id"] for t in items} for p, items in txs.items()}
    for p, cid, cross in plan:
        mine = comp_ix.get((p, cid), [])
        oks = [c for c in mine if c["status"] == "OK"]
        if len(oks) != 1:
            problems.append(f"{p}/{cid}: {len(oks)} OK completions ({[c['status'] for c in mine]})")
            continue
        for d in (c for c in mine if c["status"] == "DUPLICATE_COMMAND"):
            if d["offset"] != oks[0]["offset"]:
                problems.append(f"{p}/{cid}: duplicate offset {d['offset']} != {oks[0]['offset']}")
        if (p, cid) in resubmitted and not any(c["status"] == "DUPLICATE_COMMAND" for c in mine):
            problems.append(f"{p}/{cid}: resubmit without DUPLICATE_COMMAND")
        tx = [t for t in tx_ix.get((p, cid), []) if t["submitter"] == p]
        if len(tx) != 1 or tx[0]["offset"] != oks[0]["offset"]:
            problems.append(f"{p}/{cid}: {len(tx)} transactions for the OK completion")
        if cross:
            other = nxt[p]
            if oks[0]["tx_id"] not in tx_ids.get(other, set()):
                problems.append(f"{p}/{cid}: shared transaction missing on {other}")
    for p, items in txs.items():
        first = tx_start.get(p, 0) + 1
        if [t["offset"] for t in items] != list(range(first, first + len(items))):
            problems.append(f"{p}: transaction offsets not dense/increasing")
        if [t["record_time"] for t in items] != sorted(t["record_time"] for t in items):
            problems.append(f"{p}: record time decreases")
    for p, items in comps.items():
        first = comp_start.get(p, 0) + 1
        if [c["completion_offset"] for c in items] != list(range(first, first + len(items))):
            problems.append(f"{p}: completion offsets not dense/increasing")
    if len(txs) == 2:
        shared = [[t["tx_id"] for t in txs[p] if len(t["informee_participants"]) == 2] for p in sorted(txs)]
        if shared[0] != shared[1]:
            problems.append("p1 and p2 disagree on the shared transactions or their order")
    return problems
