"""The workload: N submitting clients, stream readers that resume across failovers, and 250 ms probes.

Everything runs as asyncio tasks on one event loop in a background thread, so the plan executor (synchronous,
main thread) and the workload share only the HistoryWriter (thread-safe) and the clock. Every random choice
draws from ``random.Random`` seeded from the run seed; real containers still decide timing (no pretence of
determinism there).

Client behaviour follows what a Canton application does: a submission carries a change ID (user, act_as,
command_id) and a fresh submission id per attempt; on a timeout or UNAVAILABLE it retries with the *same*
command id (idempotency comes from deduplication); SUBMISSION_ALREADY_IN_FLIGHT and other definite refusals end
the attempt chain. A share of commands are deliberate resubmissions of change IDs already completed OK, which
must come back as DUPLICATE_COMMAND with the original offset.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from dataclasses import dataclass
from typing import Any

import aiohttp

from harness.client.api import LedgerApi, health_client, ledger_client
from harness.client.json_api import Indeterminate, SequencerApiClient, StreamEnded
from harness.history import HistoryWriter
from harness.topology import pg
from harness.topology.endpoints import Endpoints
from harness.topology.model import PG_LB_PORT
from harness.workload.pgsampler import PgSampler

log = logging.getLogger("ha-chaos.workload")

#: the sequencer member the harness reads as (besides every participant's own member, from the target)
OBSERVER_MEMBER = "harness-observer"


@dataclass
class WorkloadConfig:
    rate: float = 10.0
    clients: int = 4
    cross_participant_ratio: float = 0.3
    resubmit_ratio: float = 0.05
    #: logical participants the clients submit to (None: every participant of the target)
    participants: list[str] | None = None
    via: str = "lb"
    seed: int = 0
    #: namespaces command ids: runs share a topology and deduplication lasts for days, so a replayed plan must not
    #: collide with its earlier runs (which would turn fresh commands into DUPLICATE_COMMAND)
    run_nonce: str = ""
    retry_deadline_s: float = 30.0
    request_timeout_s: float = 5.0
    probe_interval_s: float = 0.25
    #: sample PostgreSQL's sessions of the paired replicas (single-writer evidence from outside the nodes)
    pg_sampling: bool = True

    @classmethod
    def from_plan(cls, w: Any, seed: int, run_nonce: str = "") -> WorkloadConfig:
        return cls(rate=w.rate, clients=w.clients, cross_participant_ratio=w.cross_participant_ratio,
                   resubmit_ratio=w.resubmit_ratio, participants=list(w.participants) if w.participants else None,
                   via=w.via, seed=seed, run_nonce=run_nonce)


@dataclass
class Stats:
    submitted: int = 0
    acknowledged: int = 0
    completions: int = 0
    transactions: int = 0
    probes: int = 0


class Progress:
    """What the quiet period waits for, kept as the workload observes it (thread-safe: the executor asks).

    Why: a quiet period is there so that the checkers may call what is missing lost, and to show recovery. Once
    every participant completed a fresh command, everything acknowledged before the last heal has completed and
    every OK transaction reached every informee's stream, waiting longer only adds time, not evidence."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[Any, float] = {}            # acknowledged, no completion yet: submission -> invoke t
        self._completed: set[Any] = set()
        self._invoked: dict[Any, tuple[float, str]] = {}  # acknowledged submission -> (invoke t, participant)
        self._fresh: dict[str, float] = {}              # participant -> latest invoke t of an OK-completed command
        self._missing: dict[Any, set[str]] = {}         # OK tx -> informees whose stream has not shown it yet
        self._seen: dict[str, set[Any]] = {}            # participant -> txs its stream showed

    def acknowledged(self, sub_id: str, t_invoke: float, participant: str) -> None:
        with self._lock:
            self._invoked[sub_id] = (t_invoke, participant)
            if sub_id not in self._completed:
                self._pending[sub_id] = t_invoke

    def completed(self, value: dict[str, Any], informees: list[str]) -> None:
        sid = value.get("submission_id")
        with self._lock:
            self._completed.add(sid)
            self._pending.pop(sid, None)
            if value.get("status") != "OK":
                return
            inv = self._invoked.get(sid)
            if inv is not None:
                part = str(value.get("participant"))
                self._fresh[part] = max(self._fresh.get(part, inv[0]), inv[0])
            tx = value.get("tx_id")
            if tx is not None:
                left = {p for p in informees if tx not in self._seen.get(p, set())}
                if left:
                    self._missing[tx] = left

    def transaction(self, participant: str, tx_id: Any) -> None:
        with self._lock:
            self._seen.setdefault(participant, set()).add(tx_id)
            left = self._missing.get(tx_id)
            if left is not None:
                left.discard(participant)
                if not left:
                    del self._missing[tx_id]

    def settled(self, since: float, participants: list[str]) -> bool:
        with self._lock:
            return (all(self._fresh.get(p, -1.0) >= since for p in participants)
                    and all(t >= since for t in self._pending.values()) and not self._missing)


class Workload:
    def __init__(self, endpoints: Endpoints, history: HistoryWriter, config: WorkloadConfig) -> None:
        self.ep = endpoints
        self.h = history
        self.cfg = config
        self.stats = Stats()
        #: logical participant -> the parties it hosts, from the target (targets/reference.yaml for the reference)
        self.parties: dict[str, list[str]] = endpoints.topo.target.parties
        self.completed_ok: dict[str, list[dict[str, Any]]] = {p: [] for p in self.parties}
        if config.participants is None:
            config.participants = list(self.parties)
        self._commands: dict[tuple[str, str], dict[str, Any]] = {}
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._stop_submit = asyncio.Event()
        self._stop_all = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = threading.Event()
        #: per participant: the highest OK offset seen in its completion stream, and a wake-up for its reader
        self._ok_seen: dict[str, int] = {}
        self._ok_event: dict[str, asyncio.Event] = {}
        self._progress = Progress()
        #: workload tasks that died of an exception (the run is then a harness error)
        self.crashes: list[str] = []

    # --- lifecycle (called from the main thread) ---------------------------------------------------------
    def start(self) -> Workload:
        self._thread = threading.Thread(target=self._run_loop, name="workload", daemon=True)
        self._thread.start()
        self._ready.wait(90)  # the ledger ends are read first (see _ledger_end)
        return self

    def settled(self, since: float) -> bool:
        """Whether the run has shown everything its quiet period is for (callable from any thread): every
        participant completed a command submitted at or after ``since`` (history time), every submission
        acknowledged before ``since`` has its completion, and every OK transaction is in each informee's stream."""
        return self._progress.settled(since, self.cfg.participants)

    def stop_submitting(self) -> None:
        self._loop.call_soon_threadsafe(self._stop_submit.set)

    def stop(self, drain_s: float = 5.0) -> None:
        """Stop submitting, let readers catch up for ``drain_s``, then stop everything and join."""
        if self._thread is None:
            return
        self.stop_submitting()
        self._stop_all_after(drain_s)
        self._thread.join(timeout=drain_s + 30)
        self._thread = None

    def _stop_all_after(self, delay: float) -> None:
        self._loop.call_soon_threadsafe(lambda: self._loop.call_later(delay, self._stop_all.set))

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=2)
        async with aiohttp.ClientSession(timeout=timeout) as self._session:
            starts = {p: await self._ledger_end(p) for p in self.parties}
            self._tasks = [asyncio.create_task(self._client(i)) for i in range(self.cfg.clients)]
            for p in self.parties:
                self._tasks.append(asyncio.create_task(self._reader(p, "completions", starts[p][1])))
                self._tasks.append(asyncio.create_task(self._reader(p, "transactions", starts[p][0])))
            for p in self.parties:
                self._ok_event[p] = asyncio.Event()
                self._tasks.append(asyncio.create_task(self._read_after_ack(p)))
            for m in (OBSERVER_MEMBER, *self.parties):
                self._tasks.append(asyncio.create_task(self._seq_reader(m)))
            self._tasks.append(asyncio.create_task(self._probe()))
            sampler = self._pg_sampler()
            if sampler is not None:
                self._tasks.append(asyncio.create_task(sampler.run(self._stop_all)))
            self._ready.set()
            for t in self._tasks:
                t.add_done_callback(self._task_done)
            await self._stop_all.wait()
            for t in self._tasks:
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """A workload task that died of an exception: recorded, and the run is a harness error (a client that
        silently stopped submitting would leave invariants unexercised and the run judged on too little)."""
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        what = f"{task.get_coro().__qualname__}: {type(exc).__name__}: {exc}"
        self.crashes.append(what)
        log.error("workload task died: %s", what)
        self.h.info("harness", "workload_error", {"error": what[:300]})

    # --- submitting clients ------------------------------------------------------------------------------
    async def _client(self, idx: int) -> None:
        rng = random.Random(f"{self.cfg.seed}/client/{idx}")
        proc = f"client-{idx}"
        interval = self.cfg.clients / self.cfg.rate
        loop = asyncio.get_running_loop()
        next_t = loop.time() + rng.random() * interval
        n = 0
        # an application talks to its own participant: with at least one client per participant, each client
        # keeps to one, so that a participant's outage (clients retrying its commands) does not starve the others
        parts = self.cfg.participants
        own = parts[idx % len(parts)] if self.cfg.clients >= len(parts) else None
        while not self._stop_submit.is_set():
            await asyncio.sleep(max(0.0, next_t - loop.time()))
            next_t += interval
            if self._stop_submit.is_set():
                break
            p = own or rng.choice(parts)
            pool = self.completed_ok[p]
            if pool and rng.random() < self.cfg.resubmit_ratio:
                cmd = {**rng.choice(pool), "resubmit": True}
            else:
                n += 1
                act_as = [rng.choice(self.parties[p])]
                informees = {p}
                others = [q for q in self.parties if q != p]
                if others and rng.random() < self.cfg.cross_participant_ratio:
                    other = rng.choice(others)
                    informees.add(other)
                    parties = [*act_as, rng.choice(self.parties[other])]
                else:
                    parties = list(act_as)
                cmd = {"participant": p, "command_id": f"c{self.cfg.run_nonce}{self.cfg.seed}-{idx}-{n}",
                       "user": f"user-{idx}",
                       "act_as": act_as, "informee_parties": parties, "informees": sorted(informees),
                       "resubmit": False}
                self._commands[(p, cmd["command_id"])] = cmd
            await self._submit(proc, cmd, rng)

    async def _submit(self, proc: str, cmd: dict[str, Any], rng: random.Random) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.retry_deadline_s
        attempt = 0
        backoff = 0.1
        while loop.time() < deadline and not self._stop_all.is_set():
            attempt += 1
            url = self.ep.ledger(cmd["participant"], self.cfg.via)
            if url is None:
                self.ep.refresh()
                await asyncio.sleep(backoff)
                continue
            sub_id = f"{cmd['command_id']}-{'r' if cmd['resubmit'] else 's'}{attempt}-{rng.getrandbits(32):08x}"
            value = {k: cmd[k] for k in ("participant", "command_id", "user", "act_as", "informees", "resubmit")}
            value.update(submission_id=sub_id, attempt=attempt, via=self.cfg.via)
            t_invoke = self.h.invoke(proc, "submit", value).t
            self.stats.submitted += 1
            client = self._ledger(url)
            try:
                res = await client.submit(user=cmd["user"], act_as=cmd["act_as"], command_id=cmd["command_id"],
                                          submission_id=sub_id, informees=cmd["informee_parties"],
                                          payload={"cmd": cmd["command_id"]})
            except Indeterminate as exc:
                self.h.info(proc, "submit", {**value, "error": exc.kind})
            else:
                # the client classifies the answer (harness/client: one table per protocol)
                status = getattr(res, "http_status", None)
                if res.outcome == "ok":
                    self.h.ok(proc, "submit", {**value, "replica": res.replica})
                    self.stats.acknowledged += 1
                    self._progress.acknowledged(sub_id, t_invoke, cmd["participant"])
                    return
                if res.outcome == "indeterminate":
                    # e.g. the load balancer's answer for a server that took the request and gave no response (it
                    # died or timed out meanwhile): the submission may have been recorded and executed - not a
                    # definite failure
                    self.h.info(proc, "submit", {**value, "error": res.error, "http_status": status})
                else:
                    self.h.fail(proc, "submit", {**value, "error": res.error, "http_status": status,
                                                 "replica": res.replica})
                    if res.outcome != "retryable":
                        return
            self.ep.refresh()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    # --- the client interface (harness/client/api.py), by the protocol the target names -----------------------
    def _protocol(self, service: str, endpoint: str) -> str:
        target = self.ep.topo.target
        return target.endpoints[self.ep.topo.model.service(service).role][endpoint].protocol  # type: ignore[index]

    def _ledger(self, url: str, timeout: float | None = None) -> LedgerApi:
        """A Ledger API client (every participant endpoint and balancer frontend of a target speaks one
        protocol: the participants' ``ledger`` endpoint's)."""
        proto = self.ep.topo.target.endpoints["participant"]["ledger"].protocol  # type: ignore[index]
        return ledger_client(proto, url, self._session,
                             timeout=self.cfg.request_timeout_s if timeout is None else timeout)

    # --- stream readers ------------------------------------------------------------------------------------
    async def _ledger_end(self, participant: str, timeout: float = 60.0) -> tuple[int, int]:
        """(transaction offset, completion offset) at the start: a run reads only what happens during it, as an
        application subscribing "from now" would; earlier runs on the same topology are not its business."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            url = self.ep.ledger(participant)
            if url:
                try:
                    end = await self._ledger(url, timeout=2).read_ledger_end()
                    if end.ok:
                        return int(end.offset or 0), int(end.completion_offset or 0)
                except Indeterminate:
                    pass
            self.ep.refresh()
            await asyncio.sleep(0.3)
        log.warning("ledger end of %s unknown after %.0f s: streams start from 0", participant, timeout)
        return 0, 0

    async def _reader(self, participant: str, kind: str, start: int = 0) -> None:
        proc = f"{kind}-{participant}"
        key = "completion_offset" if kind == "completions" else "offset"
        cursor, reason = start, "start"
        while not self._stop_all.is_set():
            url = self.ep.ledger(participant)
            if url is None:
                self.ep.refresh()
                await asyncio.sleep(0.2)
                continue
            self.h.info(proc, "subscribe", {"participant": participant, "from_offset": cursor, "reason": reason})
            client = self._ledger(url)
            stream = client.completions(cursor) if kind == "completions" else client.transactions(cursor)
            try:
                async for item in stream:
                    self._record_stream_item(proc, participant, kind, item)
                    cursor = max(cursor, int(item.get(key) or cursor))
                reason = "ended"
            except StreamEnded:
                reason = "failover"
            except (TimeoutError, Indeterminate, aiohttp.ClientError, ValueError):
                reason = "error"
            self.ep.refresh()
            await asyncio.sleep(0.2)

    def _record_stream_item(self, proc: str, participant: str, kind: str, item: dict[str, Any]) -> None:
        if kind == "completions":
            value = {k: item.get(k) for k in ("command_id", "user", "act_as", "submission_id", "status", "offset",
                                              "existing_submission_id", "tx_id", "completion_offset", "replica",
                                              "record_time")}
            value["participant"] = participant
            if item.get("early"):
                value["early"] = True
            self.h.ok(proc, "completion", value)
            self.stats.completions += 1
            original = self._commands.get((participant, str(value["command_id"])))
            informees = (original or {}).get("informees") or [participant]
            self._progress.completed(value, informees)
            if value["status"] == "OK" and isinstance(value.get("offset"), int):
                self._ok_seen[participant] = max(self._ok_seen.get(participant, 0), value["offset"])
                if participant in self._ok_event:
                    self._ok_event[participant].set()
            if value["status"] == "OK" and original is not None and not item.get("early"):
                self.completed_ok[participant].append(original)
        else:
            value = {k: item.get(k) for k in ("offset", "tx_id", "command_id", "user", "act_as", "submitter",
                                              "record_time", "payload_hash", "replica")}
            value["participant"] = participant
            value["informees"] = item.get("informee_participants") or []
            self.h.ok(proc, "transaction", value)
            self.stats.transactions += 1
            self._progress.transaction(participant, value.get("tx_id"))

    async def _read_after_ack(self, participant: str) -> None:
        """Read the ledger end right after OK completions were seen (one read at a time, the newest first).

        An application that saw "OK at offset X" may read at once and must find X there: a participant reports a
        completion only after its transaction committed. A replica that reports before its commit is durable
        (``ack_before_durable``) is caught by invariant 4 when the read comes back below X."""
        proc = f"ledgerend-{participant}"
        event = self._ok_event[participant]
        while not self._stop_all.is_set():
            await event.wait()
            event.clear()
            url = self.ep.ledger(participant)
            if url is None:
                continue
            value = {"participant": participant, "after_offset": self._ok_seen.get(participant, 0)}
            self.h.invoke(proc, "ledger_end", value)
            try:
                end = await self._ledger(url).read_ledger_end()
            except Indeterminate as exc:
                self.h.info(proc, "ledger_end", {**value, "error": exc.kind})
                continue
            if end.ok:
                self.h.ok(proc, "ledger_end", {**value, "offset": end.offset,
                                               "completion_offset": end.completion_offset, "replica": end.replica})
            else:
                self.h.fail(proc, "ledger_end", {**value, "http_status": end.http_status, "error": end.error})

    async def _seq_reader(self, member: str) -> None:
        proc = f"seqreader-{member}"
        sequencers = self.ep.topo.model.replicas("sequencer")
        i, last = 0, None
        while not self._stop_all.is_set():
            seq = sequencers[i % len(sequencers)]
            url = self.ep.sequencer(seq)
            if url is None:
                i += 1
                self.ep.refresh()
                await asyncio.sleep(0.2)
                continue
            frm = 0 if last is None else last  # inclusive: the first event must repeat the last one seen
            self.h.info(proc, "seq_subscribe", {"member": member, "sequencer": seq, "from_counter": frm})
            client = SequencerApiClient(url, self._session, timeout=self.cfg.request_timeout_s)
            try:
                async for ev in client.subscribe(member, frm, idle_timeout=5.0):
                    self.h.ok(proc, "seq_event", {"member": member, "sequencer": ev.get("sequencer", seq),
                                                  **{k: ev.get(k) for k in ("counter", "ts", "prev_ts",
                                                                            "safe_watermark", "payload_hash")}})
                    last = ev.get("counter", last)
            except StreamEnded as exc:  # refused (not serving: 503 UNAVAILABLE) or ended by the sequencer
                self.h.info(proc, "seq_stream_ended", {"member": member, "sequencer": seq, "error": exc.error})
            except (TimeoutError, Indeterminate, aiohttp.ClientError, ValueError):
                pass
            i += 1  # re-subscribe to the next sequencer, as the model's sequencer client does
            await asyncio.sleep(0.2)

    # --- probes --------------------------------------------------------------------------------------------
    async def _probe(self) -> None:
        model = self.ep.topo.model
        replicas = [r for reps in model.pairs.values() for r in reps] + model.replicas("sequencer")
        participants = set(model.replicas("participant"))
        while not self._stop_all.is_set():
            t_next = asyncio.get_running_loop().time() + self.cfg.probe_interval_s
            results = await asyncio.gather(*(self._probe_one(r, r in participants) for r in replicas))
            self.h.ok("probe", "health", {"services": dict(zip(replicas, results, strict=True))})
            self.h.ok("probe", "pg_primary", await self._pg_primary())
            self.stats.probes += 1
            await asyncio.sleep(max(0.0, t_next - asyncio.get_running_loop().time()))

    def _pg_sampler(self) -> PgSampler | None:
        """The PostgreSQL sampler over pg-lb's published port (to the primary), if there are pairs to watch."""
        pairs = {node: list(reps) for node, reps in self.ep.topo.model.pairs.items()}
        if not self.cfg.pg_sampling or not pairs:
            return None

        def dsn() -> str | None:
            port = self.ep.host_port("pg-lb", PG_LB_PORT)
            return f"postgresql://postgres:{pg.PG_PASSWORD}@127.0.0.1:{port}/postgres" if port else None

        last = [0.0]

        def refresh() -> None:
            # pg-lb gets a new host port only if it restarts: look again now and then, not after every failed
            # sample (a refresh is a blocking Docker call on this loop, and a PG failover fails many samples)
            now = asyncio.get_running_loop().time()
            if now - last[0] >= 5.0:
                last[0] = now
                self.ep.refresh()
        return PgSampler(dsn, self.h, pairs, interval_s=self.cfg.probe_interval_s, on_error=refresh)

    async def _probe_one(self, service: str, participant: bool) -> dict[str, bool | None]:
        url = self.ep.health(service)
        if url is None:
            return {"ready": None, "live": None, "api": None}
        hc = health_client(self._protocol(service, "health"), url, self._session, timeout=1.0)
        ready, live = await asyncio.gather(hc.ready(), hc.live())
        api: bool | None = None
        if participant:
            api_url = self.ep.ledger_of_replica(service)
            api = await self._ledger(api_url, timeout=1.0).accepts_submissions() if api_url else None
        return {"ready": ready, "live": live, "api": api}

    async def _pg_primary(self) -> dict[str, Any]:
        members: list[dict[str, Any]] = []
        for svc in self.ep.topo.model.replicas("postgres"):
            url = self.ep.patroni(svc)
            if url is None or self._session is None:
                continue
            try:
                async with self._session.get(url + "/cluster", timeout=aiohttp.ClientTimeout(total=1)) as r:
                    data = await r.json()
                members = data.get("members", [])
                break
            except (TimeoutError, aiohttp.ClientError, ValueError):
                continue
        return {"primary": pg.leader_of(members), "members": {m["name"]: m.get("role", "?") for m in members}}
