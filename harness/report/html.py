"""``report.html``: one self-contained page that explains a run (inline CSS and SVG, no script, no URL).

Why no external resource at all: reports are attached to CI runs and bug tickets and opened offline, often much
later; a CDN link or web font would rot or leak. The page renders only what the checkers returned (plus plots
derived from the history): the report never judges.
"""

from __future__ import annotations

import bisect
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2

from harness.checkers.index import HistoryIndex
from harness.checkers.model import CheckResult, excerpt, run_verdict
from harness.errors import HarnessError
from harness.history import Event
from harness.report.data import build_data
from harness.report.rundir import RunDir, wall_offset
from harness.report.svg import COLORS, line_plot, timeline

_TEMPLATES = Path(__file__).parent / "templates"
_CONTAINER_KEYS = ("replica", "sequencer", "participant", "member", "node", "resolved", "cuts_db")
AROUND_S = 1.0
AROUND_MAX = 24
LOG_WINDOW_S = 3.0


def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(_TEMPLATES), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _involved(witnesses: list[dict[str, Any]], available: list[str],
              target: dict[str, Any] | None = None) -> list[str]:
    """Containers named by the witnesses (replicas, sequencers, link ends, pairs), mapped to stored log files.
    The run's ``target`` record says which container a fault-proxy link serves and which replicas a pair has."""
    links: dict[str, str] = dict((target or {}).get("links") or {})
    pairs: dict[str, list[str]] = dict((target or {}).get("pairs") or {})
    names: set[str] = set()
    for w in witnesses:
        v = w.get("value") or {}
        for k in _CONTAINER_KEYS:
            x = v.get(k)
            for item in x if isinstance(x, list) else [x]:
                if isinstance(item, str) and item:
                    names.add(item)
                    if item in links:
                        names.add(links[item])      # link "p1a-db" -> container p1a
        names.update(re.findall(r"[A-Za-z][\w.-]*", str(w.get("note", ""))))  # "p1: ['p1a', 'p1b'] ready"
        if isinstance(v.get("epochs"), list):
            names.update(str(e.get("replica")) for e in v["epochs"] if isinstance(e, dict))
    for node, reps in pairs.items():            # a pair named ("p1") stands for its replicas
        if node in names:
            names.update(reps)
    out = [c for c in available if c in names]
    return out[:6]


class _Around:
    """Events near a time, found by bisection over the history's times (sorted once if not already)."""

    def __init__(self, events: list[Event]) -> None:
        order = list(range(len(events)))
        ts = [e.t for e in events]
        if any(ts[i] > ts[i + 1] for i in range(len(ts) - 1)):
            order.sort(key=ts.__getitem__)
        self.events = [events[i] for i in order]
        self.ts = [e.t for e in self.events]

    def near(self, t: float, marks: set[tuple[float, str, str]], seq: bool) -> list[dict[str, Any]]:
        """Probes are omitted; sequencer reads only when the violation is about them (they are the bulk)."""
        lo = bisect.bisect_left(self.ts, t - AROUND_S)
        hi = bisect.bisect_right(self.ts, t + AROUND_S)
        cand = [e for e in self.events[lo:hi] if (round(e.t, 6), e.process, e.f) in marks
                or (e.process != "probe" and (seq or not e.process.startswith("seqreader")))]
        cand.sort(key=lambda e: abs(e.t - t))
        rows = sorted(cand[:AROUND_MAX], key=lambda e: e.t)
        return [{"t": round(e.t, 4), "process": e.process, "type": e.type, "f": e.f,
                 "value": json.dumps(excerpt(e.value), default=str, sort_keys=True),
                 "mark": (round(e.t, 6), e.process, e.f) in marks} for e in rows]


def render_html(rd: RunDir, events: list[Event] | HistoryIndex, results: list[CheckResult],
                doc: dict[str, Any]) -> str:
    idx = events if isinstance(events, HistoryIndex) else HistoryIndex(events=[])
    if not isinstance(events, HistoryIndex):
        from harness.checkers.index import build_index

        idx = build_index(events)
    d = build_data(idx)
    verdict = run_verdict(results)
    vmarks = [(w["t"], f"inv\u00a0{r.invariant} {r.name}: {w.get('note', '')}")
              for r in results if r.verdict == "fail" for w in r.witnesses[:3]]
    shaded = d.fault_periods
    svg_timeline = timeline(d, vmarks)
    svg_tput = line_plot("Throughput (operations per second, by completion time)", dict(d.per_second),
                         {"submit ok": COLORS["ok"], "submit fail": COLORS["fail"], "submit info": COLORS["info"],
                          "completion OK": "#1565c0"}, d.t_end, shaded, "ops/s")
    svg_lat = line_plot("Command latency, submit to completion (per second)", dict(d.latency_ms),
                        {"p50": "#1565c0", "p99": "#6a1b9a"}, d.t_end, shaded, "ms")
    around = _Around(idx.events)
    offset = wall_offset(idx.events)
    available = rd.containers_with_logs()
    findings: list[dict[str, Any]] = []
    for r in results:
        if r.verdict == "pass" or not r.witnesses:
            continue
        marks = {(w["t"], w["process"], w["f"]) for w in r.witnesses}
        t0 = r.witnesses[0]["t"]
        logs: dict[str, list[str]] = {}
        if offset is not None:
            for c in _involved(r.witnesses, available, idx.target):
                logs[c] = rd.log_excerpt(c, offset + t0 - LOG_WINDOW_S, offset + t0 + LOG_WINDOW_S)
        findings.append({"r": r, "witnesses": [{**w, "value_json": json.dumps(w.get("value"), default=str,
                                                                                sort_keys=True)}
                                               for w in r.witnesses],
                         "around": around.near(t0, marks, any(w["f"].startswith("seq") for w in r.witnesses)),
                         "t0": t0, "logs": logs, "seq": any(w["f"].startswith("seq") for w in r.witnesses),
                         "logs_note": "" if offset is not None else "history has no wall clock: cannot align logs",
                         "no_logs": not available})
    recovery = {"faults": [], "recovery_bound_s": None,
                **(next((r.metrics for r in results if r.invariant == "10"), {}) or {})}
    topo = rd.read_json(rd.topology_path) if rd.topology_path.exists() else None
    return _env().get_template("report.html.j2").render(
        rd=rd, verdict=verdict, results=results, doc=doc, findings=findings, recovery=recovery,
        svg_timeline=svg_timeline, svg_tput=svg_tput, svg_lat=svg_lat, counts=d.counts, t_end=d.t_end,
        plan=rd.read_plan_text(), topology=json.dumps(topo, indent=2, sort_keys=True) if topo else None,
        replay=rd.replay_command(), replication=rd.replication(), colors=COLORS,
        generated=datetime.now(UTC).isoformat(timespec="seconds"))


def write_html(rd: RunDir, events: list[Event] | HistoryIndex, results: list[CheckResult],
               doc: dict[str, Any]) -> Path:
    """Render and write; a rendering bug becomes a harness error (exit 3) that names what still got written."""
    try:
        html = render_html(rd, events, results, doc)
    except (jinja2.TemplateError, ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        raise HarnessError(f"report.html could not be rendered ({type(exc).__name__}: {exc}); results.json and "
                           f"junit.xml in {rd.path} are complete",
                           "report this as a harness bug, with the run directory") from exc
    rd.report_path.write_text(html, encoding="utf-8")
    return rd.report_path
