"""Invariants 1, 9 and 11: who may write and who claims to serve.

Single writer (1) is judged on evidence from the database, because a client cannot see which replica committed a
write: the write epochs each node records in its own database (read after the run), and PostgreSQL's own session
table sampled during the run (``harness.checkers.pgwriters``); health (9) on the probe's samples;
outage honesty (11) on submits acknowledged by a replica while a fault had cut its database.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from harness.checkers.common import as_index, node_of, plural, resolve
from harness.checkers.index import HistoryIndex
from harness.checkers.model import MAX_WITNESSES, CheckContext, CheckResult, keep, result, witness
from harness.checkers.pglog import judge_pg_log
from harness.checkers.pgwriters import judge_pg_samples
from harness.history import Event

#: Evidence sources of invariant 1: the nodes' own write epochs, and PostgreSQL's view of their sessions.
EVIDENCE_SOURCES = ("node", "pg", "pglog")
#: what a run gathers unless HA_CHAOS_EVIDENCE says otherwise: ``pglog`` is opt-in until campaigns on correct
#: nodes have shown it never fails them (it is new, 2026-12-01)
DEFAULT_SOURCES = ("node", "pg")
_SOURCE_NAMES = {"node": "node write epochs (/admin/evidence)", "pg": "PostgreSQL samples (pg_stat_activity)",
                 "pglog": "PostgreSQL statement log (log_statement = mod)"}


#: The environment variable that picks the sources: of a run (what it gathers) and of ``ha-chaos check``.
EVIDENCE_ENV = "HA_CHAOS_EVIDENCE"


def parse_evidence(text: str) -> list[str] | None:
    """The sources a comma list names (``"pg"``, ``"node,pg"``), in canonical order; None for an empty text
    (every source). ValueError naming the unknown ones: a typo must not silently drop evidence."""
    if not text.strip():
        return None
    chosen = [x.strip() for x in text.split(",") if x.strip()]
    unknown = sorted(set(chosen) - set(EVIDENCE_SOURCES))
    if unknown or not chosen:
        what = f"unknown evidence source(s) {', '.join(unknown)}" if unknown else "no evidence source named"
        raise ValueError(f"{EVIDENCE_ENV}={text!r}: {what} (known: {', '.join(EVIDENCE_SOURCES)})")
    return [s for s in EVIDENCE_SOURCES if s in chosen]


def evidence_sources(ctx: CheckContext | None, idx: HistoryIndex) -> tuple[str, ...]:
    """Which sources invariant 1 may use: the context's ``evidence``, else the history's ``evidence_sources``
    marker (a run made with some evidence switched off), else every source the history holds."""
    chosen = ctx.evidence if ctx is not None and ctx.evidence is not None else idx.evidence_sources
    if chosen is None:
        return EVIDENCE_SOURCES
    unknown = sorted(set(chosen) - set(EVIDENCE_SOURCES))
    if unknown:
        raise ValueError(f"unknown evidence source(s) {unknown}; known: {', '.join(EVIDENCE_SOURCES)}")
    return tuple(s for s in EVIDENCE_SOURCES if s in chosen)


@dataclass
class _NodeEpochs:
    bad: int = 0
    witnesses: list[dict[str, Any]] = field(default_factory=list)
    ok: set[str] = field(default_factory=set)
    missing: dict[str, Event] = field(default_factory=dict)


def _judge_node_epochs(idx: HistoryIndex) -> _NodeEpochs:
    """The nodes' own evidence: per node, the write intervals of different epochs never overlap and no write
    went without the writers lock (DB-clock µs, read from each node's database after the run)."""
    out = _NodeEpochs()
    for ev in idx.evidence:
        node = str(ev.value.get("node"))
        if ev.type != "ok":
            out.missing[node] = ev
            continue
        epochs = [e for e in ev.value.get("epochs") or [] if isinstance(e, dict)]
        node_bad = 0
        for e in epochs:
            if int(e.get("unfenced_writes") or 0) > 0:
                node_bad += 1
                keep(out.witnesses, ev, f"{node}: {e.get('unfenced_writes')} writes without the writers "
                                        f"lock by {e.get('replica')} (epoch {e.get('epoch')})")
        spans = sorted((e for e in epochs if e.get("first_write") is not None),
                       key=lambda e: e["first_write"])
        open_: dict[str, Any] | None = None
        for e in spans:
            last = e.get("last_write") if e.get("last_write") is not None else e["first_write"]
            if open_ is not None and e["first_write"] <= open_["_last"]:
                node_bad += 1
                keep(out.witnesses, ev, f"{node}: {e.get('replica')} epoch {e.get('epoch')} wrote from "
                                        f"{e['first_write']} while {open_.get('replica')} epoch "
                                        f"{open_.get('epoch')} wrote until {open_['_last']}")
            if open_ is None or last > open_["_last"]:
                open_ = {**e, "_last": last}
        out.bad += node_bad
        if not node_bad:
            out.ok.add(node)
    return out


def check_single_writer(events: list[Event] | HistoryIndex, ctx: CheckContext | None = None) -> CheckResult:
    """1. Per logical node, two replicas never write at once.

    Two sources of evidence, each enough to fail the invariant on its own:
    - ``node``: the write epochs each node records in its own database (``evidence`` events, DB-clock µs): the
      write intervals of different epochs never overlap and no write went without the writers lock. Complete
      (every committed write counts), but only a node that cooperates has it.
    - ``pg``: PostgreSQL's own session table, sampled every 250 ms (``pg_sample`` events; the rules are in
      ``harness.checkers.pgwriters``): two replicas' write transactions open at the same instant, or two
      replicas' write sessions alive together in two samples. Needs nothing from the nodes but their
      ``application_name``; sampled, so a short overlap can be missed.

    ``CheckContext.evidence`` (or the history's ``evidence_sources`` marker) restricts the sources, e.g. to
    ``["pg"]`` to judge a reference run as a black-box target would be judged. A node passes when some enabled
    source judged it (its epochs were read, or the samples saw its replicas write) and none found a violation; a
    node no enabled source judged makes the invariant unknown with the reason, never a pass. The explanation names
    the evidence used.
    """
    idx = as_index(events)
    sources = evidence_sources(ctx, idx)
    node = _judge_node_epochs(idx) if "node" in sources else None
    pgw = judge_pg_samples(idx.pg_samples) if "pg" in sources else None
    pgl = judge_pg_log(idx.pg_log) if "pglog" in sources else None
    used = [s for s, data in (("node", node is not None and (node.ok or node.bad or node.missing)),
                              ("pg", pgw is not None and pgw.samples + pgw.failures > 0),
                              ("pglog", pgl is not None and pgl.sessions + pgl.failures > 0)) if data]
    metrics: dict[str, Any] = {"evidence": used, "evidence_enabled": list(sources)}
    if pgw is not None:
        metrics.update(pg_samples=pgw.samples, pg_sample_failures=pgw.failures,
                       pg_writers_seen={n: sorted(r) for n, r in sorted(pgw.writers.items())})
    named = ", ".join(_SOURCE_NAMES[s] for s in used) or "none"
    failures: list[str] = []
    witnesses: list[dict[str, Any]] = []
    if node is not None and node.bad:
        failures.append(f"{node.bad} overlapping or unfenced write epoch(s) in the nodes' evidence")
        witnesses += node.witnesses
    if pgw is not None and pgw.violations:
        kinds = [f"{plural(pgw.concurrent_samples, 'sample')} with two replicas' write transactions open at "
                 f"once"] if pgw.concurrent_samples else []
        kinds += [f"{plural(pgw.coexisting_samples, 'sample')} with two replicas' write sessions alive "
                  f"together"] if pgw.coexisting_samples else []
        failures.append(f"{plural(pgw.violations, 'overlap')} of two replicas' writers on "
                        f"{', '.join(sorted(pgw.violating_nodes))} in {pgw.samples} PostgreSQL samples "
                        f"({'; '.join(kinds)})")
        witnesses += pgw.witnesses
    if pgl is not None and pgl.violations:
        failures.append(f"{plural(pgl.violations, 'overlap')} of two replicas' write sessions on "
                        f"{', '.join(sorted(pgl.violating_nodes))} in the PostgreSQL statement log "
                        f"({pgl.sessions} write sessions)")
        witnesses += pgl.witnesses
    if failures:
        return result("1", "fail", f"{'; '.join(failures)} [evidence: {named}]", witnesses, metrics)
    expected = set(node.ok | set(node.missing) if node is not None else set())
    expected |= pgw.watched if pgw is not None else set()
    expected |= set(pgl.writers) if pgl is not None else set()
    covered: dict[str, list[str]] = defaultdict(list)
    for n in node.ok if node is not None else ():
        covered[n].append("node")
    for n in pgw.judged if pgw is not None else ():
        covered[n].append("pg")
    for n in pgl.judged if pgl is not None else ():
        covered[n].append("pglog")
    off = [f"{_SOURCE_NAMES[s]} switched off" for s in EVIDENCE_SOURCES if s not in sources]
    if not expected:
        why = "; ".join([*off, *(f"no {_SOURCE_NAMES[s]} in the history" for s in sources)])
        return result("1", "unknown", f"no single-writer evidence: {why}", metrics=metrics)
    uncovered = sorted(expected - set(covered))
    if uncovered:
        reasons = []
        for n in uncovered:
            why = []
            if node is not None:
                miss = node.missing.get(n)
                why.append(f"node evidence {'not collected: ' + str(miss.value.get('error')) if miss else 'absent'}")
            if pgw is not None:
                why.append("no write seen in PostgreSQL samples" if n in pgw.watched else "not in PostgreSQL samples")
            reasons.append(f"{n} ({'; '.join(why + off)})")
        return result("1", "unknown", f"write evidence missing for {', '.join(reasons)} [evidence: {named}]",
                      [witness(e) for e in (node.missing.values() if node is not None else ())], metrics)
    parts = []
    if node is not None and node.ok:
        parts.append(f"write epochs disjoint on {', '.join(sorted(node.ok))}")
    if pgw is not None and pgw.judged:
        parts.append(f"no two replicas' writers overlapped in {pgw.samples} PostgreSQL samples on "
                     f"{', '.join(sorted(pgw.judged))} (sampled every ~250 ms: a shorter overlap can be missed)")
    if pgl is not None and pgl.judged:
        parts.append(f"write sessions of different replicas disjoint in the PostgreSQL statement log on "
                     f"{', '.join(sorted(pgl.judged))} ({pgl.sessions} sessions)")
    return result("1", "pass", f"{'; '.join(parts)} [evidence: {named}]", metrics=metrics)


def check_health(events: list[Event] | HistoryIndex, ctx: CheckContext | None = None) -> CheckResult:
    """9. At most one replica per pair is ready; at most one replica per pair serves the Ledger API (``api``
    True), ready or not; readiness equals the Ledger API accepting (per replica).

    ``api`` is True only when the replica's own Ledger API *answered* the probe's empty submission without a
    502/503/504 (``harness/workload/runner.py`` ``_api_accepts``); a refused connection is False and a timeout
    (a paused, partitioned or hung replica) is None, so an unreachable replica never counts as serving.

    Every rule needs ``health_consecutive`` samples in a row. The probe asks all replicas concurrently but not
    atomically (each answer lands at its own instant, up to its 1 s timeout), so a correct handover - the old
    active closing its listener as the new one opens its own - can show two serving (or two ready) replicas in
    one sample; it lasts less than a probe interval, while a passive replica that really serves stays visible
    in every following sample."""
    idx = as_index(events)
    r = resolve(ctx, idx)
    need = r.health_consecutive
    witnesses: list[dict[str, Any]] = []
    multi_streak: dict[str, int] = defaultdict(int)
    serving_streak: dict[str, int] = defaultdict(int)
    mismatch_streak: dict[str, int] = defaultdict(int)
    judged = bad = 0
    for ev in idx.health:
        services = ev.value.get("services") or {}
        ready_by_node: dict[str, list[str]] = defaultdict(list)
        serving_by_node: dict[str, list[str]] = defaultdict(list)
        for rep, st in services.items():
            node = node_of(rep, idx)
            if isinstance(st, dict) and node is not None and st.get("ready") is True:
                ready_by_node[node].append(rep)
            if isinstance(st, dict) and node is not None and st.get("api") is True:
                serving_by_node[node].append(rep)
        for rep, st in services.items():
            node = node_of(rep, idx)
            if not isinstance(st, dict) or node is None:
                continue
            ready, api = st.get("ready"), st.get("api")
            if ready is not None:
                judged += 1
            # Serving while not ready is a violation only while another replica of the pair is ready (two replicas
            # serve: a passive answers). With no ready replica the active's storage is failing: the model makes it
            # not ready while it stays active (e.g. during a PostgreSQL failover), which is not a role mismatch.
            mismatch = isinstance(ready, bool) and isinstance(api, bool) and ready != api and (
                ready or any(r != rep for r in ready_by_node.get(node, [])))
            if mismatch:
                mismatch_streak[rep] += 1
                if mismatch_streak[rep] == need:
                    bad += 1
                    keep(witnesses, ev, f"{rep}: ready={ready} but api={api} for {need} samples")
            else:
                mismatch_streak[rep] = 0
        for node in {n for n in (node_of(x, idx) for x in services) if n}:
            if len(ready_by_node.get(node, [])) > 1:
                multi_streak[node] += 1
                if multi_streak[node] == need:
                    bad += 1
                    keep(witnesses, ev, f"{node}: {ready_by_node[node]} all ready for {need} samples")
            else:
                multi_streak[node] = 0
            if len(serving_by_node.get(node, [])) > 1:
                serving_streak[node] += 1
                if serving_streak[node] == need:
                    bad += 1
                    keep(witnesses, ev, f"{node}: {serving_by_node[node]} all accept Ledger API submissions "
                                        f"for {need} samples")
            else:
                serving_streak[node] = 0
    if bad:
        what = "anomaly" if bad == 1 else "anomalies"
        return result("9", "fail", f"{bad} health/role {what} in {len(idx.health)} samples", witnesses)
    if not judged:
        return result("9", "unknown", "no health sample with a known readiness of a paired replica")
    return result("9", "pass", f"{len(idx.health)} samples: never two ready or serving replicas, readiness "
                               f"matched the API")


#: How long after the probe last saw a replica ready the load balancer may still route to it (HAProxy checks every
#: 1..3 s, canton-ha-model.md "Health").
LB_LAG_S = 3.0

_Window = tuple[float, float, set[str], Event]


def _cut_windows(idx: HistoryIndex) -> list[_Window]:
    """(start, end, cut replicas, fault ok) per fault that cut a database. ``start`` is the fault's ``ok`` (the
    effect was verified), ``end`` the *invoke* of its heal: the executor undoes the fault before it logs the
    heal's ``ok``, so after the invoke the database may already be reachable again."""
    windows: list[_Window] = []
    for f in idx.effective_faults():
        assert f.outcome is not None
        cut = {str(x) for x in f.outcome.value.get("cuts_db") or []}
        if cut:
            began = f.heal_began
            windows.append((f.start or 0.0, began if began is not None else idx.t_end, cut, f.outcome))
    return windows


class _Readiness:
    """Per replica, the probe's readiness samples in time order: whether the balancer may have routed to it."""

    def __init__(self, idx: HistoryIndex) -> None:
        self._ts: dict[str, list[float]] = defaultdict(list)
        self._ready: dict[str, list[Any]] = defaultdict(list)
        for ev in idx.health:
            for rep, st in (ev.value.get("services") or {}).items():
                if isinstance(st, dict):
                    self._ts[rep].append(ev.t)
                    self._ready[rep].append(st.get("ready"))

    def maybe_routed(self, rep: str, t: float) -> bool:
        """False only if every sample of ``rep`` from ``LB_LAG_S`` before ``t`` up to ``t`` (and the last one
        before that span) showed it not ready: the balancer routes to ready replicas only. No sample: unknown,
        so it may have been."""
        ts = self._ts.get(rep, [])
        hi = bisect.bisect_right(ts, t)
        if hi == 0:
            return True
        lo = max(0, bisect.bisect_left(ts, t - LB_LAG_S) - 1)
        return any(x is not False for x in self._ready[rep][lo:hi])


def check_outage_honesty(events: list[Event] | HistoryIndex,
                         ctx: CheckContext | None = None) -> CheckResult:
    """11. No submit is acknowledged by a replica whose database a fault had cut for the whole operation, and no
    OK completion of a transaction sequenced during the cut is streamed by a cut replica while still cut.

    The cut lasts from the fault's ``ok`` to the *invoke* of its heal (see ``_cut_windows``): an ack right after
    the heal began may come from a replica whose link is already back.

    Which submits count (``attempted``): those invoked during a cut, to a participant with a cut replica, that
    could have reached a cut replica - answered by one (its outcome names it), sent to one directly (``via``),
    or sent through the balancer while the probe had not yet seen every cut replica not ready (``LB_LAG_S``).
    Cutting only the passive replica therefore tests nothing: unknown and not applicable (the plan did not
    exercise the invariant, as when only a sequencer's database is cut), not "N submits, none dishonest"; no
    submit at all to the node during the cut is a plain unknown (the workload missed it).
    An ``ok`` that could have come from a cut replica but names no ``replica`` cannot be judged; it is counted
    apart, and if no submit was judged the verdict is unknown, not pass."""
    idx = as_index(events)
    windows = _cut_windows(idx)
    if not windows:
        return result("11", "unknown", "no fault cut a database in this run: outage honesty not exercised",
                      metrics={"applicable": False})
    cut_nodes = {node_of(x, idx) or x for w in windows for x in w[2]}
    submitted_to = {str(op.invoke.value.get("participant")) for op in idx.submits}
    if submitted_to and not cut_nodes & submitted_to:
        return result("11", "unknown", f"only {', '.join(sorted(cut_nodes))} lost a database; no Ledger API "
                                       f"submit goes there: outage honesty not exercised",
                      metrics={"applicable": False})
    ready = _Readiness(idx)
    witnesses: list[dict[str, Any]] = []
    attempted = bad = unjudged = tried = 0
    for op in idx.submits:
        inv = op.invoke
        part = str(inv.value.get("participant"))
        out = op.outcome
        for start, end, cut, fev in windows:
            mine = {x for x in cut if (node_of(x, idx) or x) == part}
            if not mine or not start <= inv.t <= end:
                continue
            tried += 1
            replica = out.value.get("replica") if out is not None else None
            via = inv.value.get("via")
            if replica is not None:
                reached = str(replica) in mine
            elif via is not None and via != "lb":
                reached = str(via) in mine
            else:
                reached = any(ready.maybe_routed(x, inv.t) for x in mine)
            if not reached:
                continue
            acked_in_cut = out is not None and out.type == "ok" and out.t <= end
            if acked_in_cut and replica is None:
                unjudged += 1  # acknowledged during the cut by a replica we cannot name: maybe the cut one
                continue
            attempted += 1
            if acked_in_cut:
                assert out is not None
                bad += 1
                keep(witnesses, out, f"acknowledged by {replica} while its database was cut (fault step "
                                     f"{fev.value.get('step')})")
                keep(witnesses, fev, "the fault that cut the database")
    early = _completions_while_cut(idx, windows)
    for c, fev in early[:MAX_WITNESSES]:
        keep(witnesses, c, f"OK completion from {c.value.get('replica')}, of a transaction sequenced after its "
                           f"database was cut, streamed while still cut: it cannot be durable")
        keep(witnesses, fev, "the fault that cut the database")
    metrics = {"attempted": attempted, "not_judged": unjudged, "submits_during_cuts": tried}
    if bad or early:
        what = [f"{plural(bad, 'submit')} acknowledged"] if bad else []
        what += [f"{plural(len(early), 'OK completion')} reported"] if early else []
        return result("11", "fail", f"{' and '.join(what)} by a replica with its database unreachable", witnesses,
                      metrics)
    note = (f"; {plural(unjudged, 'ack')} during a cut named no replica (not judged)" if unjudged else "")
    if not attempted and tried and not unjudged:
        # the workload did submit to the node, but only replicas the balancer does not route to (passive ones)
        # lost their database: like a cut sequencer's database, the plan did not exercise this invariant
        cut_reps = sorted({x for w in windows for x in w[2]})
        return result("11", "unknown", f"{plural(tried, 'submit')} during DB cuts, none could have reached a cut "
                                       f"replica ({', '.join(cut_reps)}): none was answered by or sent to one, and "
                                       f"the balancer routes to ready replicas only: outage honesty not exercised",
                      metrics={**metrics, "applicable": False})
    if not attempted:
        return result("11", "unknown", f"no submit could have reached a cut replica of "
                                       f"{', '.join(sorted(cut_nodes))} while its database was cut{note}",
                      metrics=metrics)
    return result("11", "pass", f"{attempted} submits could have reached a replica with its database cut, none "
                                f"acknowledged by it{note}", metrics=metrics)


def _wall_offset(ev: Event) -> float | None:
    """wall-clock seconds minus history time, from one event (None without a wall time)."""
    if not ev.wall:
        return None
    try:
        return datetime.fromisoformat(ev.wall).timestamp() - ev.t
    except ValueError:
        return None


def _completions_while_cut(idx: HistoryIndex, windows: list[_Window]) -> list[tuple[Event, Event]]:
    """OK completions streamed by a cut replica, during the cut (up to its heal's invoke), for a transaction whose
    record time (sequencer time of its verdict) lies after the cut took effect: that replica could not have
    committed it, so the success it reports is not durable (e.g. published before the commit). One per
    completion."""
    found: list[tuple[Event, Event]] = []
    for start, end, cut, fev in windows:
        off = _wall_offset(fev)
        if off is None:
            continue
        for c in idx.completions:
            v = c.value
            rt = v.get("record_time")
            if (c.type != "ok" or v.get("status") != "OK" or str(v.get("replica")) not in cut
                    or not start < c.t <= end or not isinstance(rt, (int, float))):
                continue
            if rt / 1e6 - off > start:
                found.append((c, fev))
    return found
