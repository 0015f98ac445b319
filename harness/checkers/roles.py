"""Invariants 1, 9 and 11: who may write and who claims to serve.

Single writer (1) is judged on evidence collected from each node's database after the run (write epochs on the
DB clock), because a client cannot see which replica committed a write; health (9) on the probe's samples;
outage honesty (11) on submits acknowledged by a replica while a fault had cut its database.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from harness.checkers.common import as_index, node_of, plural, resolve
from harness.checkers.index import HistoryIndex
from harness.checkers.model import CheckContext, CheckResult, result, witness
from harness.history import Event


def check_single_writer(events: list[Event] | HistoryIndex, ctx: CheckContext | None = None) -> CheckResult:
    """1. Per logical node, the write intervals of different epochs (replicas) never overlap; no unfenced write."""
    idx = as_index(events)
    witnesses: list[dict[str, Any]] = []
    nodes_ok: list[str] = []
    missing: list[str] = []
    bad = 0
    for ev in idx.evidence:
        node = str(ev.value.get("node"))
        if ev.type != "ok":
            missing.append(node)
            continue
        epochs = [e for e in ev.value.get("epochs") or [] if isinstance(e, dict)]
        node_bad = 0
        for e in epochs:
            if int(e.get("unfenced_writes") or 0) > 0:
                node_bad += 1
                witnesses.append(witness(ev, f"{node}: {e.get('unfenced_writes')} writes without the writers "
                                             f"lock by {e.get('replica')} (epoch {e.get('epoch')})"))
        spans = sorted((e for e in epochs if e.get("first_write") is not None),
                       key=lambda e: e["first_write"])
        open_: dict[str, Any] | None = None
        for e in spans:
            last = e.get("last_write") if e.get("last_write") is not None else e["first_write"]
            if open_ is not None and e["first_write"] <= open_["_last"]:
                node_bad += 1
                witnesses.append(witness(ev, f"{node}: {e.get('replica')} epoch {e.get('epoch')} wrote from "
                                             f"{e['first_write']} while {open_.get('replica')} epoch "
                                             f"{open_.get('epoch')} wrote until {open_['_last']}"))
            if open_ is None or last > open_["_last"]:
                open_ = {**e, "_last": last}
        bad += node_bad
        if not node_bad:
            nodes_ok.append(node)
    if bad:
        return result("1", "fail", f"{bad} overlapping or unfenced write epoch(s)", witnesses)
    if missing:
        return result("1", "unknown", f"write evidence missing for {', '.join(sorted(set(missing)))}",
                      [witness(e) for e in idx.evidence if e.type != "ok"])
    if not nodes_ok:
        return result("1", "unknown", "no write evidence collected from any node's database")
    return result("1", "pass", f"write epochs disjoint on {', '.join(sorted(nodes_ok))}")


def check_health(events: list[Event] | HistoryIndex, ctx: CheckContext | None = None) -> CheckResult:
    """9. At most one replica per pair is ready; readiness equals the Ledger API accepting (per replica)."""
    idx = as_index(events)
    r = resolve(ctx, idx)
    need = r.health_consecutive
    witnesses: list[dict[str, Any]] = []
    multi_streak: dict[str, int] = defaultdict(int)
    mismatch_streak: dict[str, int] = defaultdict(int)
    judged = bad = 0
    for ev in idx.health:
        services = ev.value.get("services") or {}
        ready_by_node: dict[str, list[str]] = defaultdict(list)
        for rep, st in services.items():
            node = node_of(rep)
            if isinstance(st, dict) and node is not None and st.get("ready") is True:
                ready_by_node[node].append(rep)
        for rep, st in services.items():
            node = node_of(rep)
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
                    witnesses.append(witness(ev, f"{rep}: ready={ready} but api={api} for {need} samples"))
            else:
                mismatch_streak[rep] = 0
        for node in {n for n in (node_of(x) for x in services) if n}:
            if len(ready_by_node.get(node, [])) > 1:
                multi_streak[node] += 1
                if multi_streak[node] == need:
                    bad += 1
                    witnesses.append(witness(ev, f"{node}: {ready_by_node[node]} all ready for {need} samples"))
            else:
                multi_streak[node] = 0
    if bad:
        what = "anomaly" if bad == 1 else "anomalies"
        return result("9", "fail", f"{bad} health/role {what} in {len(idx.health)} samples", witnesses)
    if not judged:
        return result("9", "unknown", "no health sample with a known readiness of a paired replica")
    return result("9", "pass", f"{len(idx.health)} samples: never two ready replicas, readiness matched the API")


def check_outage_honesty(events: list[Event] | HistoryIndex,
                         ctx: CheckContext | None = None) -> CheckResult:
    """11. No submit is acknowledged by a replica whose database a fault had cut for the whole operation."""
    idx = as_index(events)
    windows: list[tuple[float, float, set[str], Event]] = []
    for f in idx.effective_faults():
        assert f.outcome is not None
        cut = {str(x) for x in f.outcome.value.get("cuts_db") or []}
        if cut:
            windows.append((f.start or 0.0, f.end if f.end is not None else idx.t_end, cut, f.outcome))
    if not windows:
        return result("11", "unknown", "no fault cut a database in this run: outage honesty not exercised",
                      metrics={"applicable": False})
    cut_nodes = {node_of(x) or x for w in windows for x in w[2]}
    submitted_to = {str(op.invoke.value.get("participant")) for op in idx.submits}
    if submitted_to and not cut_nodes & submitted_to:
        return result("11", "unknown", f"only {', '.join(sorted(cut_nodes))} lost a database; no Ledger API "
                                       f"submit goes there: outage honesty not exercised",
                      metrics={"applicable": False})
    witnesses: list[dict[str, Any]] = []
    attempted = bad = 0
    for op in idx.submits:
        inv = op.invoke
        for start, end, cut, fev in windows:
            if not start <= inv.t <= end:
                continue
            if str(inv.value.get("participant")) in cut_nodes:
                attempted += 1
            out = op.outcome
            if out is not None and out.type == "ok" and out.t <= end and str(out.value.get("replica")) in cut:
                bad += 1
                witnesses.append(witness(out, f"acknowledged by {out.value.get('replica')} while its database "
                                              f"was cut (fault step {fev.value.get('step')})"))
                witnesses.append(witness(fev, "the fault that cut the database"))
    early = _completions_while_cut(idx, windows)
    for c, fev in early:
        witnesses.append(witness(c, f"OK completion from {c.value.get('replica')}, of a transaction sequenced after "
                                    f"its database was cut, streamed while still cut: it cannot be durable"))
        witnesses.append(witness(fev, "the fault that cut the database"))
    if bad or early:
        what = [f"{plural(bad, 'submit')} acknowledged"] if bad else []
        what += [f"{plural(len(early), 'OK completion')} reported"] if early else []
        return result("11", "fail", f"{' and '.join(what)} by a replica with its database unreachable", witnesses)
    if not attempted:
        return result("11", "unknown", f"no submit reached {', '.join(sorted(cut_nodes))} while its database "
                                       f"was cut")
    return result("11", "pass", f"{attempted} submits during DB cuts, none acknowledged by a cut replica")


def _wall_offset(ev: Event) -> float | None:
    """wall-clock seconds minus history time, from one event (None without a wall time)."""
    if not ev.wall:
        return None
    try:
        return datetime.fromisoformat(ev.wall).timestamp() - ev.t
    except ValueError:
        return None


def _completions_while_cut(idx: HistoryIndex,
                           windows: list[tuple[float, float, set[str], Event]]) -> list[tuple[Event, Event]]:
    """OK completions streamed by a cut replica, during the cut, for a transaction whose record time (sequencer
    time of its verdict) lies after the cut took effect: that replica could not have committed it, so the success
    it reports is not durable (e.g. published before the commit). One per completion."""
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
