"""Invariant 1 (single writer) judged on PostgreSQL's own view of the nodes' sessions (``pg_sample`` events).

Why a second source beside the nodes' ``/admin/evidence``: a real Canton exposes no evidence endpoint, while every
deployment on PostgreSQL exposes ``pg_stat_activity``. The sampler (``harness/workload/pgsampler.py``) lists every
session of every paired replica four times a second: its identity (server, pid, backend start), its replica
(``application_name``) and ``backend_xid``, the id PostgreSQL assigns to a transaction at its first write (never
to a read or an advisory lock). Terms used below:

- a *write session* is a session that some sample shows with an xid, or that the fast polls between samples
  saw with one (``writes``): that replica's backend wrote through it;
- two sessions are *co-listed* in a sample when both appear in it (both existed at that instant).

What fencing guarantees (canton-ha-model.md, "Fencing"): every write connection holds the writers lock shared for
its whole life; a replica becomes active only after taking that lock exclusively, i.e. after every write
connection of the previous active is gone, and a connection the old active opens later is refused before it
writes. So in a correct deployment the lifetimes of two replicas' write sessions never overlap. During a correct
takeover the old active's write sessions may still exist while the new active *waits* for the exclusive lock:
the new active then has a lock session (no xid, ever) but no write session yet, which breaks no rule below.

Violations, per logical node:

(a) *concurrent writes*: one sample shows sessions of two replicas each with an xid: both had an open write
    transaction at the same instant (one snapshot of the session table: its entries are copied microseconds
    apart, far less than a new active needs to connect after its exclusive take). This needs no assumption
    beyond the xid's meaning.
(b) *coexisting writers*: the same two write sessions of two replicas are co-listed in two samples (or more).
    Both existed from the first of those samples to the second, one sample interval at least. The only way a
    correct deployment could show a *single* such sample: the older session was leaving (its locks released at
    backend exit, a few microseconds before it leaves ``pg_stat_activity``) just as the new active's session
    opened; two samples would need that exit to last a whole sample interval, so one co-listing alone is never
    counted. (b) catches what (a) samples too sparsely to see: both replicas writing in the same second, each
    transaction a few milliseconds long.

Samples are snapshots: an overlap shorter than the sampling interval can be missed, so a pass on this evidence
alone means "no overlap in N samples", which the result says. Consecutive violating samples of one node are one
violation (an overlap of 2 s is one finding, not eight).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from harness.checkers.model import MAX_WITNESSES
from harness.history import Event

SessionKey = tuple[str, int, int]  # (server, pid, backend start µs): a pid alone is reused after its process ends
Listed = tuple[str, SessionKey, str | None]  # (replica, session, xid in this sample)


@dataclass
class PgWriters:
    """What the PostgreSQL samples say about single writers."""

    samples: int = 0
    failures: int = 0
    #: nodes the sampler watched, and per node the replicas seen writing (a write session)
    watched: set[str] = field(default_factory=set)
    writers: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    #: violations (runs of consecutive violating samples per node), and samples of each kind
    violations: int = 0
    concurrent_samples: int = 0
    coexisting_samples: int = 0
    witnesses: list[dict[str, Any]] = field(default_factory=list)
    violating_nodes: set[str] = field(default_factory=set)

    @property
    def judged(self) -> set[str]:
        """Nodes on which the samples are evidence: some replica was seen writing."""
        return {n for n, reps in self.writers.items() if reps}


def _listed(ev: Event, wrote: dict[SessionKey, tuple[float, str]] | None = None) -> dict[str, list[Listed]]:
    """The sessions of a sample per node; fills ``wrote`` (first sighting of a write per session: the sample's
    own xid, or one the fast polls saw since the previous sample, ``writes``)."""
    server = str(ev.value.get("server"))
    out: dict[str, list[Listed]] = {}
    for node, replicas in (ev.value.get("nodes") or {}).items():
        rows: list[Listed] = []
        for rep, sessions in (replicas or {}).items():
            for s in sessions or []:
                key = (server, int(s["pid"]), int(s.get("start") or 0))
                xid = s.get("xid")
                rows.append((str(rep), key, None if xid is None else str(xid)))
                seen = [str(x) for x in s.get("writes") or []] + ([str(xid)] if xid is not None else [])
                if wrote is not None and seen:
                    wrote.setdefault(key, (ev.t, seen[0]))
        out[str(node)] = rows
    return out


def _describe(rep: str, key: SessionKey, xid: str | None, first_write: dict[SessionKey, tuple[float, str]]) -> str:
    pid = key[1]
    if xid is not None:
        return f"{rep} pid {pid} (open write transaction, xid {xid})"
    t, wx = first_write[key]
    return f"{rep} pid {pid} (wrote: xid {wx}, seen by t={t:.3f})"


def _witness(ev: Event, node: str, sessions: list[Listed], note: str) -> dict[str, Any]:
    """A compact pointer at the sample: only the sessions involved, not the whole session table."""
    return {"t": round(ev.t, 6), "process": ev.process, "type": ev.type, "f": ev.f,
            "value": {"node": node, "server": ev.value.get("server"), "db_time": ev.value.get("db_time"),
                      "sessions": [{"replica": r, "pid": k[1], "start": k[2], "xid": x} for r, k, x in sessions]},
            "note": note}


def judge_pg_samples(samples: list[Event]) -> PgWriters:
    """Apply rules (a) and (b) of the module docstring to the ``pg_sample`` events (in history order)."""
    out = PgWriters()
    ok = [ev for ev in samples if ev.type == "ok"]
    out.failures = len(samples) - len(ok)
    out.samples = len(ok)
    # pass 1: which sessions ever wrote (first sighting of an xid, in a sample or in the polls before it)
    first_write: dict[SessionKey, tuple[float, str]] = {}
    listed = [(ev, _listed(ev, first_write)) for ev in ok]
    for _, nodes in listed:
        out.watched.update(nodes)
        for node, rows in nodes.items():
            out.writers[node].update(rep for rep, key, _ in rows if key in first_write)
    # pass 2: per sample and node, rule (a) and rule (b)
    co_listed: set[tuple[SessionKey, SessionKey]] = set()
    in_violation: dict[str, bool] = defaultdict(bool)
    for ev, nodes in listed:
        for node, rows in nodes.items():
            writing = [r for r in rows if r[2] is not None]
            concurrent = len({r[0] for r in writing}) > 1
            writers = [r for r in rows if r[1] in first_write]
            coexisting: list[tuple[Listed, Listed]] = []
            for i, a in enumerate(writers):
                for b in writers[i + 1:]:
                    if a[0] == b[0]:
                        continue
                    pair = (min(a[1], b[1]), max(a[1], b[1]))
                    if pair in co_listed:
                        coexisting.append((a, b))
                    co_listed.add(pair)
            bad = concurrent or bool(coexisting)
            out.concurrent_samples += concurrent
            out.coexisting_samples += bool(coexisting)
            if bad and not in_violation[node]:
                out.violations += 1
                out.violating_nodes.add(node)
                if len(out.witnesses) < MAX_WITNESSES:
                    if concurrent:
                        by_rep = {r[0]: r for r in writing}
                        involved = list(by_rep.values())
                        note = (f"{node}: " + " and ".join(_describe(r, k, x, first_write) for r, k, x in involved)
                                + " at the same instant: two replicas writing at once")
                    else:
                        a, b = coexisting[0]
                        involved = [a, b]
                        note = (f"{node}: write sessions " + " and ".join(
                            _describe(r, k, x, first_write) for r, k, x in involved)
                            + " both open in two samples: a replica's write session outlived the other's "
                              "takeover (fencing allows no overlap)")
                    out.witnesses.append(_witness(ev, node, involved, note))
            in_violation[node] = bad
    return out
