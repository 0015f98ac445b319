"""Synthetic histories: realistic clean runs of the reference topology, with named bugs injected on demand.

Why a generator rather than recorded fixtures: tests need one history per violation *and* the same history
without it, and the benchmark needs a million operations. The clean run models what the real harness records:
clients submitting through the LB with retries (UNAVAILABLE, timeouts as ``info`` - half of those were in fact
applied), deliberate resubmits answered DUPLICATE_COMMAND, definite rejections (some retried with the same
command id and then accepted), a DB blackhole on p1's active replica with a failover
to p1b and stream resumptions, a sequencer kill with a member re-subscribing elsewhere, 250 ms health probes,
write evidence, phase and expect markers. Each name in ``BUGS`` changes the run the way a broken node would.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from harness.history import Event

BUGS: dict[str, str] = {
    "overlap_writers": "1: p1b writes while p1a still writes (evidence epochs overlap, PostgreSQL samples show both)",
    "duplicate": "2: a deliberate resubmit is accepted again instead of DUPLICATE_COMMAND",
    "lost_ack": "3: an acknowledged submit never completes",
    "lost_tx": "4: an OK cross-participant transaction is missing from p2's stream",
    "offset_dup": "5: p1's transaction stream re-delivers its last element after the failover",
    "order": "6: two shared transactions appear in opposite order on p2",
    "seq_gap": "7: member p2 misses one sequencer counter",
    "watermark": "8: one event is served above the safe watermark",
    "two_ready": "9: p1a stays ready 1 s after p1b became ready",
    "slow_recovery": "10: nothing completes for bound + 5 s after the last heal",
    "p1_stuck": "10: p1 never serves again after the last heal (p2 does)",
    "stale_read": "4: a ledger-end read right after an OK completion does not include it",
    "ack_while_cut": "11: p1a acknowledges a submit while its database is cut",
    "rejected_executed": "3: a submission answered NOT_SEQUENCED_TIMEOUT is sequenced late and executed anyway",
}
#: the definite rejections a clean run contains (a small share of the acknowledged submissions)
REJECTIONS = ("NOT_SEQUENCED_TIMEOUT", "LOCAL_VERDICT_TIMEOUT", "REJECTED")
REJECT_RATIO = 0.015
MAX_SEQUENCING_S = 10.0   # a NOT_SEQUENCED_TIMEOUT / LOCAL_VERDICT_TIMEOUT is published this long after the ack
PARTS = {"p1": ("p1a", "p1b"), "p2": ("p2a", "p2b")}
SEQS = ("seq1", "seq2", "seq3")
MEMBERS = {"p1": "seq1", "p2": "seq2", "med1": "seq3"}
FAILOVER_S = 3.0
OPS_PER_COMMAND = 5.5  # measured: submit(s) + completion + ~1.3 transactions + ~2.2 sequencer events


@dataclass
class SynthConfig:
    ops: int = 5000
    seed: int = 1
    clients: int = 8
    bugs: frozenset[str] = field(default_factory=frozenset)
    fault_takes: bool = True  # False: the DB blackhole fails (nemesis fail) and no failover happens
    seq_readers: bool = True
    quiet_s: float | None = None  # history length after the last heal; None = long enough to judge
    recovery_bound_s: float = 20.0
    expect_failover: bool = True
    wall_start: float | None = None  # epoch seconds of t=0: fills ``wall`` (needed to align container logs)
    node_evidence: bool = True  # the nodes' write epochs (``evidence`` events), as /admin/evidence gives them
    pg_samples: bool = True  # PostgreSQL session samples (``pg_sample`` every 250 ms), as the workload takes them
    #: the run's ``target`` record (pairs, links), as runs write it; False: a history from before targets
    record_target: bool = True


@dataclass
class _Cmd:
    part: str
    cid: str
    user: str
    informees: list[str]
    t_commit: float = 0.0
    offsets: dict[str, int] = field(default_factory=dict)
    tx_id: str = ""
    rejected: str = ""   # the status of a definite rejection of its last acknowledged submission


class _Gen:
    def __init__(self, cfg: SynthConfig) -> None:
        unknown = set(cfg.bugs) - set(BUGS)
        if unknown:
            raise ValueError(f"unknown synthetic bug(s) {sorted(unknown)}; known: {sorted(BUGS)}")
        self.cfg, self.rng, self.ev = cfg, random.Random(cfg.seed), []
        self.rrng = random.Random(f"{cfg.seed}/rejections")   # its own stream: the rest of the run stays as it was
        self.bug = cfg.bugs.__contains__
        commands = max(50, int(cfg.ops / OPS_PER_COMMAND))
        self.d = max(60.0, commands / 200.0)
        self.rate = commands / self.d
        self.tf, self.th = 0.3 * self.d, 0.3 * self.d + 8.0  # DB blackhole of p1a
        self.tf2, self.th2 = 0.45 * self.d, 0.45 * self.d + 5.0  # kill seq2
        self.end = self.th2 + (cfg.quiet_s if cfg.quiet_s is not None else max(25.0, 0.55 * self.d - 5.0))
        self.stall = (self.th2, self.th2 + cfg.recovery_bound_s + 5.0) if self.bug("slow_recovery") else None
        if self.bug("p1_stuck"):
            self.stall = (self.th2, float("inf"))
        self.stalled = {"p1"} if self.bug("p1_stuck") else set(PARTS)
        self.completions: list[tuple[float, str, dict[str, Any], _Cmd | None]] = []
        self.accepted: list[_Cmd] = []
        self.once: set[str] = set()
        self.truth: dict[str, dict[str, Any]] = {}  # bug -> what it hit, for tests to look for

    def add(self, t: float, process: str, type_: str, f: str, value: dict[str, Any]) -> None:
        self.ev.append(Event(t=t, process=process, type=type_, f=f, value=value))  # type: ignore[arg-type]

    def first(self, bug: str) -> bool:
        """True exactly once per injected bug: the bug hits one operation, which tests then look for."""
        if self.bug(bug) and bug not in self.once:
            self.once.add(bug)
            return True
        return False

    # --- who is active ---------------------------------------------------------------------------------
    def active(self, part: str, t: float) -> str | None:
        a, b = PARTS[part]
        if part != "p1" or not self.cfg.fault_takes or t < self.tf:
            return a
        return None if t < self.tf + FAILOVER_S else b

    def available(self, part: str, t: float) -> bool:
        if self.stall and self.stall[0] <= t < self.stall[1] and part in self.stalled:
            return False
        return self.active(part, t) is not None

    # --- clients -----------------------------------------------------------------------------------------
    def clients(self) -> None:
        period = self.cfg.clients / self.rate
        for c in range(self.cfg.clients):
            part = "p1" if c % 2 == 0 else "p2"
            proc, user, t, n = f"client-{c}", f"user-{c}", self.rng.uniform(0, period), 0
            while t < self.end - 1.0:
                informees = [part, "p2" if part == "p1" else "p1"] if self.rng.random() < 0.3 else [part]
                cmd = _Cmd(part, f"c{c}-{n}", user, informees)
                t = self.command(proc, cmd, t, resubmit=False)
                if cmd.rejected and not cmd.tx_id and self.rrng.random() < 0.5 and t < self.end - 2.0:
                    # a definite rejection frees the change ID: the application retries it, and it is accepted
                    t = self.command(proc, cmd, t + 0.01, resubmit=False, tag="x", may_reject=False)
                if cmd.tx_id and self.rng.random() < 0.02 and t < self.end - 2.0:
                    t = self.command(proc, cmd, t + 0.01, resubmit=True)
                n += 1
                t += period * self.rng.uniform(0.5, 1.5)

    def command(self, proc: str, cmd: _Cmd, t: float, resubmit: bool, tag: str = "", may_reject: bool = True) -> float:
        """Submit until acknowledged (retrying like the workload); returns the time the client is free."""
        attempt = 0
        while True:
            attempt += 1
            v = {"participant": cmd.part, "command_id": cmd.cid, "user": cmd.user, "act_as": [cmd.user],
                 "submission_id": f"{cmd.cid}-{tag}{'r' if resubmit else ''}{attempt}", "informees": cmd.informees,
                 "resubmit": resubmit, "attempt": attempt, "via": "lb"}
            self.add(t, proc, "invoke", "submit", v)
            if cmd.part == "p1" and self.cfg.fault_takes and self.tf <= t < self.tf + FAILOVER_S \
                    and self.first("ack_while_cut"):
                t_ok = t + 0.01
                self.truth["ack_while_cut"] = {"submission_id": v["submission_id"]}
                self.add(t_ok, proc, "ok", "submit", {**v, "replica": "p1a"})
                self.completions.append((self.tf + FAILOVER_S + 0.5, cmd.part,
                                         {**v, "status": "NOT_SEQUENCED_TIMEOUT"}, None))
                return t_ok
            if not self.available(cmd.part, t):
                t_out = t + self.rng.uniform(0.05, 0.3)
                self.add(t_out, proc, "fail", "submit", {**v, "error": "UNAVAILABLE", "http_status": 503})
                t = t_out + 0.2
                if t >= self.end - 1.0:
                    return t  # the run ends: the client gives up
                continue
            if cmd.part == "p1" and self.cfg.fault_takes and self.tf - 0.5 <= t < self.tf and not resubmit:
                self.add(t + 2.0, proc, "info", "submit", {**v, "error": "timeout"})
                if self.rng.random() < 0.5 and not cmd.tx_id:  # in fact recorded and committed before the cut
                    self.accept(cmd, v, min(t + 0.1, self.tf - 0.001))
                t = t + 2.2
                continue
            replica = self.active(cmd.part, t)
            t_ok = t + self.rng.uniform(0.005, 0.02)
            self.add(t_ok, proc, "ok", "submit", {**v, "replica": replica})
            if not resubmit and self.first("lost_ack"):
                self.truth["lost_ack"] = {"submission_id": v["submission_id"]}
                return t_ok
            t_commit = t_ok + self.rng.uniform(0.05, 0.15)
            if not resubmit and may_reject and not cmd.tx_id and self.reject(cmd, v, t_ok, t_commit):
                return t_ok
            if cmd.tx_id and not (resubmit and self.first("duplicate")):
                dup = {**v, "status": "DUPLICATE_COMMAND", "existing_submission_id": cmd.tx_id}
                self.completions.append((t_commit, cmd.part, dup, cmd))
            elif cmd.tx_id:  # the bug: accepted a second time as a new transaction
                self.truth["duplicate"] = {"command_id": cmd.cid, "participant": cmd.part}
                self.accept(_Cmd(cmd.part, cmd.cid, cmd.user, cmd.informees), v, t_commit)
            else:
                self.accept(cmd, v, t_commit)
            return t_ok

    def accept(self, cmd: _Cmd, v: dict[str, Any], t_commit: float, complete: bool = True) -> None:
        cmd.t_commit, cmd.tx_id = t_commit, f"tx-{v['submission_id']}"
        self.accepted.append(cmd)
        if complete:
            self.completions.append((t_commit + 0.01, cmd.part, {**v, "status": "OK"}, cmd))

    def reject(self, cmd: _Cmd, v: dict[str, Any], t_ok: float, t_commit: float) -> bool:
        """A definite rejection of the acknowledged submission ``v`` (True), for a small share of them; away from
        the p1 failover, whose stream resumptions the clean run models separately. The ``rejected_executed`` bug
        turns the first one early in the run into a NOT_SEQUENCED_TIMEOUT whose request is then sequenced late
        and executed: a transaction of the change, with no OK completion."""
        late = t_ok + MAX_SEQUENCING_S
        if self.cfg.fault_takes and cmd.part == "p1" and t_ok < self.tf + FAILOVER_S + 1 and late > self.tf - 1:
            return False
        if late > self.end - 1.0:
            return False
        if self.bug("rejected_executed") and t_ok >= 1.0 and "rejected_executed" not in self.once \
                and late + 1.0 < min(self.tf, self.tf2) - 1.0:
            self.first("rejected_executed")
            cmd.rejected = "NOT_SEQUENCED_TIMEOUT"
            self.completions.append((late, cmd.part, {**v, "status": cmd.rejected}, None))
            self.accept(cmd, v, late + 0.5, complete=False)   # the late request's verdict: executed, no OK
            self.truth["rejected_executed"] = {"submission_id": v["submission_id"], "command_id": cmd.cid,
                                               "tx_id": cmd.tx_id, "participant": cmd.part}
            return True
        if self.rrng.random() >= REJECT_RATIO:
            return False
        cmd.rejected = self.rrng.choice(REJECTIONS)
        self.completions.append((t_commit if cmd.rejected == "REJECTED" else late, cmd.part,
                                 {**v, "status": cmd.rejected}, None))
        return True

    # --- read side ---------------------------------------------------------------------------------------
    def deliver_at(self, part: str, t: float) -> tuple[float, str | None]:
        """A stream of p1 is down during the failover; elements queue until it resumes on the new replica."""
        if part == "p1" and self.cfg.fault_takes and self.tf <= t < self.tf + FAILOVER_S + 0.1:
            return self.tf + FAILOVER_S + 0.1, PARTS["p1"][1]
        return t, self.active(part, t) or PARTS[part][1]

    def streams(self) -> None:
        self.accepted.sort(key=attrgetter("t_commit"))
        delay = {"p1": 0.02, "p2": 0.03}
        for q in PARTS:
            proc = f"transactions-{q}"
            self.add(0.0, proc, "info", "subscribe", {"participant": q, "from_offset": 0, "reason": "start"})
            mine = [c for c in self.accepted if q in c.informees]
            for off, c in enumerate(mine, start=1):
                c.offsets[q] = off
            lost = next((c for c in mine if q == "p2" and len(c.informees) > 1 and c.part == "p1"
                         and self.bug("lost_tx")), None)
            slots = list(mine)  # delivery times stay in place; the "order" bug swaps what is delivered
            if self.bug("order"):
                shared = [i for i, c in enumerate(mine) if q == "p2" and c.part == "p1" and len(c.informees) > 1]
                if len(shared) >= 2:
                    i, j = shared[len(shared) // 2], shared[len(shared) // 2 + 1]
                    mine = list(mine)
                    mine[i], mine[j] = mine[j], mine[i]
                    self.truth["order"] = {"tx_ids": {mine[i].tx_id, mine[j].tx_id}}
            last_off, last_ev, resumed = 0, None, False
            for k, (c, slot) in enumerate(zip(mine, slots, strict=True), start=1):
                t, rep = self.deliver_at(q, slot.t_commit + delay[q])
                if q == "p1" and not resumed and self.cfg.fault_takes and t >= self.tf + FAILOVER_S:
                    resumed = True
                    again = self.bug("offset_dup") and last_ev is not None
                    self.add(t - 0.001, proc, "info", "subscribe", {"participant": q, "from_offset":
                             last_off - 1 if again else last_off, "replica": rep, "reason": "failover"})
                    if again and last_ev is not None:
                        self.truth["offset_dup"] = {"offset": last_off, "participant": q}
                        self.add(t - 0.0005, proc, "ok", "transaction", dict(last_ev))
                if c is lost:
                    self.truth["lost_tx"] = {"tx_id": c.tx_id}
                    continue
                val = {"participant": q, "offset": k, "tx_id": c.tx_id, "command_id": c.cid, "user": c.user,
                       "act_as": [c.user], "submitter": c.part, "informees": c.informees,
                       "record_time": int(slot.t_commit * 1e6), "payload_hash": f"h{c.tx_id}", "replica": rep}
                self.add(t + k * 1e-9, proc, "ok", "transaction", val)
                last_off, last_ev = k, val
        self.completions.sort(key=lambda x: x[0])
        coff = {q: 0 for q in PARTS}
        for q in PARTS:
            self.add(0.0, f"completions-{q}", "info", "subscribe", {"participant": q, "from_offset": 0,
                                                                   "reason": "start"})
        resumed = False
        seen: dict[str, list[tuple[float, int]]] = {q: [] for q in PARTS}   # OK completions: (time, offset)
        for t0, part, v, cmd in self.completions:
            t, rep = self.deliver_at(part, t0)
            if part == "p1" and not resumed and self.cfg.fault_takes and t >= self.tf + FAILOVER_S:
                resumed = True
                self.add(t - 0.001, "completions-p1", "info", "subscribe",
                         {"participant": "p1", "from_offset": coff["p1"], "replica": rep, "reason": "failover"})
            coff[part] += 1
            val = {k: v[k] for k in ("participant", "command_id", "user", "act_as", "submission_id", "status")}
            val.update(completion_offset=coff[part], replica=rep, record_time=int(t0 * 1e6))
            if cmd is not None:
                val["offset"] = cmd.offsets.get(part)
                if v["status"] == "OK":
                    val["tx_id"] = cmd.tx_id
                else:
                    val["existing_submission_id"] = v.get("existing_submission_id")
            self.add(t, f"completions-{part}", "ok", "completion", val)
            if v["status"] == "OK" and val.get("offset") is not None:
                seen[part].append((t, val["offset"]))
        self.ledger_end_reads(seen)

    def ledger_end_reads(self, seen: dict[str, list[tuple[float, int]]]) -> None:
        """The workload reads the ledger end after OK completions it saw (every 5th here); a correct ledger end
        is at least the highest offset reported OK before the read."""
        for part, oks in seen.items():
            oks.sort()
            best, j = 0, 0
            for k in range(4, len(oks), 5):
                tr = oks[k][0] + 0.002
                while j < len(oks) and oks[j][0] <= tr:
                    best, j = max(best, oks[j][1]), j + 1
                end = best
                if tr > self.end * 0.5 and self.first("stale_read"):
                    end = best - 1
                    self.truth["stale_read"] = {"participant": part, "offset": best}
                rv = {"participant": part, "after_offset": best}
                self.add(tr, f"ledgerend-{part}", "invoke", "ledger_end", rv)
                self.add(tr + 0.004, f"ledgerend-{part}", "ok", "ledger_end",
                         {**rv, "offset": end, "replica": self.active(part, tr) or PARTS[part][1]})

    def sequencer(self) -> None:
        if not self.cfg.seq_readers:
            return
        step = 1.0 / self.rate
        for member, seq in MEMBERS.items():
            proc = f"seqreader-{member}"
            self.add(0.0, proc, "info", "seq_subscribe", {"member": member, "sequencer": seq, "from_counter": 0})
            t, counter, last, w = 0.001, 0, None, 0
            gap_at = self.end * 0.7 if member == "p2" and self.bug("seq_gap") else None
            while t < self.end:
                if seq == "seq2" and self.tf2 <= t:
                    seq = "seq1"
                    t = self.tf2 + 1.0
                    self.add(t, proc, "info", "seq_subscribe",
                             {"member": member, "sequencer": seq, "from_counter": counter - 1})
                    if last is not None:
                        self.add(t + 1e-6, proc, "ok", "seq_event", {**last, "sequencer": seq})
                    t += 2e-6
                ts = int(t * 1e6)
                w = max(w, ts + self.rng.randint(0, 5000))
                v = {"member": member, "sequencer": seq, "counter": counter, "ts": ts,
                     "prev_ts": last["ts"] if last else None, "safe_watermark": w, "payload_hash": f"s{ts}"}
                if member == "med1" and t > self.end * 0.6 and self.first("watermark"):
                    v["safe_watermark"] = ts - 1
                    self.truth["watermark"] = {"member": member, "counter": counter}
                if gap_at is not None and t >= gap_at:
                    gap_at = None  # the bug: this counter is never delivered
                    self.truth["seq_gap"] = {"member": member, "counter": counter + 1}
                else:
                    self.add(t, proc, "ok", "seq_event", v)
                last, counter = v, counter + 1
                t += step * self.rng.uniform(0.8, 1.2)

    # --- probes, nemesis, markers ------------------------------------------------------------------------
    def probes(self) -> None:
        n = int(self.end / 0.25)
        for i in range(n + 1):
            t = i * 0.25
            services: dict[str, dict[str, bool | None]] = {}
            for part, reps in PARTS.items():
                act = self.active(part, t)
                for r in reps:
                    ready = r == act or (r == "p1a" and self.bug("two_ready") and t < self.tf + FAILOVER_S + 1)
                    services[r] = {"ready": ready, "live": True, "api": ready}
            services["med1a"] = {"ready": True, "live": True, "api": None}
            services["med1b"] = {"ready": False, "live": True, "api": None}
            for s in SEQS:
                down = s == "seq2" and self.tf2 <= t < self.th2 + 1.0
                services[s] = {"ready": not down, "live": not down, "api": None}
            self.add(t, "probe", "ok", "health", {"services": services})
            self.add(t + 0.001, "probe", "ok", "pg_primary", {"primary": "pg1",
                                                              "members": {"pg1": "leader", "pg2": "replica"}})

    def nemesis(self) -> None:
        f0 = {"step": 0, "kind": "link-timeout", "target": "db link of the active replica of p1",
              "params": {"timeout": 0}}
        self.add(self.tf - 0.05, "nemesis", "invoke", "link-timeout", f0)
        if self.cfg.fault_takes:
            self.add(self.tf, "nemesis", "ok", "link-timeout", {**f0, "resolved": ["p1a-db"], "verified": True,
                     "cuts_db": ["p1a"], "cuts_sequencer": [], "stops": []})
            self.add(self.th - 0.02, "nemesis", "invoke", "heal", {"step": 0, "kind": "link-timeout",
                                                                     "resolved": ["p1a-db"]})
            self.add(self.th, "nemesis", "ok", "heal", {"step": 0, "kind": "link-timeout", "resolved": ["p1a-db"]})
        else:
            self.add(self.tf, "nemesis", "fail", "link-timeout", {**f0, "error": "toxic not observed on p1a-db"})
        f1 = {"step": 1, "kind": "kill", "target": "seq2", "params": {}}
        self.add(self.tf2 - 0.05, "nemesis", "invoke", "kill", f1)
        self.add(self.tf2, "nemesis", "ok", "kill", {**f1, "resolved": ["seq2"], "verified": True, "cuts_db": [],
                                                       "cuts_sequencer": [], "stops": ["seq2"]})
        self.add(self.th2 - 0.02, "nemesis", "invoke", "heal", {"step": 1, "kind": "kill", "resolved": ["seq2"]})
        self.add(self.th2, "nemesis", "ok", "heal", {"step": 1, "kind": "kill", "resolved": ["seq2"]})

    def markers(self) -> None:
        us = 1_000_000
        expect: dict[str, Any] = {"failover": ["p1"] if self.cfg.expect_failover else [], "primary_change": False,
                                  "recovery_bound_s": self.cfg.recovery_bound_s}  # the plan executor's shape
        self.add(0.0, "harness", "info", "expect", expect)
        if self.cfg.record_target:
            pairs = {"med1": ["med1a", "med1b"], **{p: list(reps) for p, reps in PARTS.items()}}
            clients = [r for reps in pairs.values() for r in reps]
            self.add(0.0, "harness", "info", "target", {
                "name": "reference", "pairs": pairs, "parties": {"p1": ["alice", "bob"], "p2": ["carol", "dave"]},
                "links": {**{f"{c}-db": c for c in clients},
                          **{f"{c}-{q}": c for c in clients for q in ("seq1", "seq2", "seq3")}}})
        for t, ph in ((0.0, "warmup"), (self.tf - 1.0, "faults"), (self.th2, "quiet"), (self.end, "end")):
            self.add(t, "harness", "info", "phase", {"phase": ph})
        cut = int(self.tf * us) if self.cfg.fault_takes else int(self.end * us)
        p1b_first = int((self.tf - 1.0) * us) if self.bug("overlap_writers") else cut + int(FAILOVER_S * us)
        p1 = [{"replica": "p1a", "epoch": 1, "start": 0, "end": cut, "first_write": 1000, "last_write": cut - 1000,
               "writes": 1000, "unfenced_writes": 0}]
        if self.cfg.fault_takes:
            p1.append({"replica": "p1b", "epoch": 2, "start": cut + 2 * us, "end": None, "first_write": p1b_first,
                       "last_write": int(self.end * us), "writes": 1000, "unfenced_writes": 0})
        if not self.cfg.node_evidence:
            return
        for node, epochs in (("p1", p1), ("p2", [{"replica": "p2a", "epoch": 1, "start": 0, "end": None,
                                                   "first_write": 1000, "last_write": int(self.end * us),
                                                   "writes": 1000, "unfenced_writes": 0}])):
            self.add(self.end + 0.5, "harness", "ok", "evidence", {"node": node, "epochs": epochs})

    def pg_samples(self) -> None:
        """PostgreSQL's session table every 250 ms, as ``harness/workload/pgsampler.py`` records it.

        Each replica has a lock session (main lock, never an xid) and, while active, two write sessions (writers
        lock shared) that show an xid in about a third of the samples. At p1a's DB cut its sessions stay on the
        server (one idle in a write transaction) until the server ends them 2.5 s later; only then does p1b take
        the writers lock and open its own write sessions: a correct takeover, the old write sessions alive while
        the new active waits. ``overlap_writers``: p1b's write sessions open and write from 1 s before the cut,
        while p1a's still write (and once in the same sample)."""
        if not self.cfg.pg_samples:
            return
        rng = random.Random(f"{self.cfg.seed}/pg")
        us = 1_000_000
        xid = [700]
        cut = self.tf if self.cfg.fault_takes else float("inf")
        gone = cut + FAILOVER_S - 0.5          # the server ends p1a's sessions (keepalive)
        takeover = cut + FAILOVER_S            # p1b's write sessions open
        p1b_writes = self.tf - 1.0 if self.bug("overlap_writers") else takeover
        both_at = self.tf - 0.5

        def key(node: str, purpose: int) -> int:
            return (1000 + list(PARTS).index(node)) * 128 + purpose

        def session(pid: int, start: float, state: str = "idle", locks: list[list[Any]] | None = None,
                    xid_: int | None = None, xact: float | None = None) -> dict[str, Any]:
            s: dict[str, Any] = {"pid": pid, "start": int(start * us), "state": state}
            if xid_ is not None:
                s.update(state="idle in transaction" if state == "idle" else state, xid=str(xid_),
                         xact_start=int((xact if xact is not None else start) * us))
            if locks:
                s["locks"] = locks
            return s

        def writes(node: str, pids: tuple[int, int], start: float, t: float, force: bool = False
                   ) -> list[dict[str, Any]]:
            out = []
            for j, pid in enumerate(pids):
                w = None
                if (force and j == 0) or rng.random() < 0.3:
                    xid[0] += 1
                    w = xid[0]
                out.append(session(pid, start, "active" if w else "idle", [[key(node, 1), "ShareLock", True]],
                                   w, t - 0.002))
            return out

        n = int(self.end / 0.25)
        for i in range(n + 1):
            t = i * 0.25 + 0.01
            p1: dict[str, list[dict[str, Any]]] = {"p1a": [], "p1b": []}
            if t < gone:
                p1["p1a"].append(session(1000, 0.0, locks=[[key("p1", 0), "ExclusiveLock", True]]))
                if t < cut:
                    p1["p1a"] += writes("p1", (1001, 1002), 0.5, t, force=abs(t - both_at) < 0.13)
                else:  # cut: the server still has the sessions, one of them idle in its last write transaction
                    p1["p1a"] += [session(1001, 0.5, xid_=699, xact=cut - 0.01,
                                          locks=[[key("p1", 1), "ShareLock", True]]),
                                  session(1002, 0.5, locks=[[key("p1", 1), "ShareLock", True]])]
            elif t >= self.th:
                p1["p1a"].append(session(1100, self.th + 0.2))   # p1a back: a passive lock session
            main_b = [[key("p1", 0), "ExclusiveLock", True]] if t >= gone else None
            p1["p1b"].append(session(2000, 0.1, locks=main_b))
            if t >= p1b_writes:
                p1["p1b"] += writes("p1", (2001, 2002), p1b_writes, t, force=abs(t - both_at) < 0.13)
            p2 = {"p2a": [session(3000, 0.0, locks=[[key("p2", 0), "ExclusiveLock", True]]),
                          *writes("p2", (3001, 3002), 0.5, t)],
                  "p2b": [session(4000, 0.1)]}
            self.add(t, "pgsampler", "ok", "pg_sample", {"server": "10.0.0.5", "db_time": int(t * us),
                                                         "nodes": {"p1": p1, "p2": p2}})


@dataclass
class SynthRun:
    events: list[Event]
    truth: dict[str, dict[str, Any]]  # per injected bug: the operation it hit (tests check witnesses against it)
    fault_window: tuple[float, float]  # the DB blackhole of p1a
    last_heal: float


def generate(cfg: SynthConfig | None = None, **kw: Any) -> list[Event]:
    """A history in time order (stable for equal times). ``generate(ops=..., bugs={"lost_ack"})`` is a shortcut."""
    return generate_run(cfg, **kw).events


def generate_run(cfg: SynthConfig | None = None, **kw: Any) -> SynthRun:
    if cfg is None:
        kw["bugs"] = frozenset(kw.get("bugs", ()))
        cfg = SynthConfig(**kw)
    g = _Gen(cfg)
    g.markers()
    g.nemesis()
    g.probes()
    g.clients()
    g.streams()
    g.sequencer()
    g.pg_samples()
    g.ev.sort(key=attrgetter("t"))
    if cfg.wall_start is not None:
        from datetime import UTC, datetime

        for e in g.ev:
            e.wall = datetime.fromtimestamp(cfg.wall_start + e.t, UTC).isoformat(timespec="milliseconds")
    if "overlap_writers" in cfg.bugs:
        g.truth["overlap_writers"] = {"node": "p1"}
    if "two_ready" in cfg.bugs:
        g.truth["two_ready"] = {"node": "p1", "after": g.tf + FAILOVER_S}
    if "slow_recovery" in cfg.bugs:
        g.truth["slow_recovery"] = {"heal_t": g.th2}
    if "p1_stuck" in cfg.bugs:
        g.truth["p1_stuck"] = {"heal_t": g.th2, "participant": "p1"}
    return SynthRun(g.ev, g.truth, (g.tf, g.th), g.th2)


def count_ops(events: list[Event]) -> int:
    """Operations as Jepsen counts them: an invoke and its outcome are one; an observation is one."""
    return sum(1 for e in events if e.type != "invoke" and e.process != "harness" and e.f != "heal")
