"""Fault coverage: which (fault kind x target role x phase) cells a run exercised, and the table across runs.

A *cell* is a fault kind (``kill``, ``toxic``, ...), the role of what it hit when it fired, and the phase the system
was in at that moment. Computed from the run's history alone (docs/history.md is the contract): nemesis events give
each fault's kind, its resolved targets (services, fault-proxy links, partition groups), when it fired and when it
was healed; the 250 ms ``health`` probes give each pair's ready replica, the ``pg_primary`` probes the PostgreSQL
primary.

Target roles (``participant.active``, ``participant.passive/db``, ``postgres.standby``, ...): a replica of a pair is
``active`` if it was the pair's ready replica at the last probe that showed one before the fault fired, else
``passive``; a PostgreSQL member is ``primary`` or ``standby`` the same way from ``pg_primary``. A fault-proxy link
takes its client's role plus ``/db`` or ``/seq``. A partition hits the role of every member of its groups (the fault
proxy as a group stands for the links of the other side, so it adds no role of its own).

Phases, when the fault fired (its nemesis ``invoke``), several may hold at once:
- ``failover``: a pair had no single ready replica or its ready replica changed between two probes, or the
  PostgreSQL primary was unknown or changed (a pair or the primary changing);
- ``recovery``: within ``RECOVERY_WINDOW_S`` (or the plan's recovery bound, if smaller) after another fault's heal;
- ``overlap``: another fault was in effect (from its nemesis ``ok`` to its heal);
- ``steady``: none of these.

Each run directory gets a ``coverage.json`` (``write_run_coverage``); ``Tally`` adds them up across runs, campaigns
and nights, keyed by run so a file read twice (a merged copy next to the runs) counts once.
``ha-chaos coverage RUNS_DIR...`` prints the table; cells never covered are marked.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.faults.kinds import kind as module_kind
from harness.history import Event
from harness.plans.strategies import GENERATED_KINDS, LINK_KINDS
from harness.topology.model import TopologyModel, model_for_profile, reference_model

log = logging.getLogger("ha-chaos.coverage")

COVERAGE = "coverage.json"
VERSION = 1
PHASES = ("steady", "failover", "recovery", "overlap")
#: after a heal the nodes reconnect, re-elect and catch up: about one failover time on this system (participant
#: failover 1.4-2 s, Patroni leader kill to writes again ~11 s: README "Benchmarks")
RECOVERY_WINDOW_S = 10.0
NEVER = "—"

Cell = tuple[str, str, str]  # kind, role, phase
Row = tuple[str, str]        # kind, role


# --- roles ---------------------------------------------------------------------------------------------------
def coarse_role(role: str) -> str:
    """``participant.active/db`` -> ``participant`` (the roles ``fault_plans(roles=...)`` takes)."""
    return role.split("/")[0].split(".")[0]


def service_roles(model: TopologyModel) -> list[str]:
    """Fine roles of the services generated faults hit (``harness.plans.strategies.TARGET_ROLES``)."""
    out: list[str] = []
    for role in ("participant", "mediator"):
        if model.by_role(role):
            out += [f"{role}.active", f"{role}.passive"]
    if model.by_role("sequencer"):
        out.append("sequencer")
    if model.by_role("postgres"):
        out += ["postgres.primary"] + (["postgres.standby"] if len(model.by_role("postgres")) > 1 else [])
    if model.by_role("etcd"):
        out.append("etcd")
    return out


def link_roles(model: TopologyModel, kinds: Iterable[str] = ("db", "sequencer")) -> list[str]:
    out: list[str] = []
    for lk in model.links:
        if lk.kind not in kinds:
            continue
        role = model.service(lk.client).role
        suffix = "/db" if lk.kind == "db" else "/seq"
        variants = [f"{role}.active", f"{role}.passive"] if role in ("participant", "mediator") else [role]
        out += [v + suffix for v in variants if v + suffix not in out]
    return out


def universe(model: TopologyModel | None = None, kinds: Sequence[str] = GENERATED_KINDS) -> list[Row]:
    """The (kind, role) rows generated plans can reach on ``model``: what the table lists even when never covered."""
    model = model or reference_model()
    services = service_roles(model)
    pair_actives = [r for r in services if r.endswith(".active")]
    rows: list[Row] = []
    for kind in kinds:
        defined = module_kind(kind)
        if defined is not None:
            roles = defined.coverage_roles(model, services) if defined.applicable(model) else []
        elif kind in ("toxic", "link_down"):
            roles = link_roles(model)
        elif kind == "former_primary_trap":
            roles = link_roles(model, ("db",))
        elif kind in ("set_passive", "db_setting"):
            roles = pair_actives
        elif kind == "db_failover":
            roles = ["postgres.primary"] if len(model.by_role("postgres")) > 1 else []
        else:
            roles = services
        if kind in LINK_KINDS and not model.links:
            roles = []
        rows += [(kind, r) for r in roles]
    return rows


# --- one history -----------------------------------------------------------------------------------------------
@dataclass
class _Track:
    """The stable value of one pair (its ready replica) or of the PostgreSQL primary over the probes."""

    changes: list[tuple[float, str]] = field(default_factory=list)  # (t, stable value from then on)
    windows: list[tuple[float, float]] = field(default_factory=list)  # transitions: no single value, or a change
    _open: float | None = None
    _last_t: float | None = None

    def see(self, t: float, value: str | None) -> None:
        stable = self.changes[-1][1] if self.changes else None
        if value is not None:
            if self._open is not None:
                self.windows.append((self._open, t))
                self._open = None
            elif stable is not None and value != stable and self._last_t is not None:
                self.windows.append((self._last_t, t))
            if value != stable:
                self.changes.append((t, value))
        elif stable is not None and self._open is None:
            self._open = t
        self._last_t = t

    def close(self, t_end: float) -> None:
        if self._open is not None:
            self.windows.append((self._open, max(t_end, self._open)))
            self._open = None

    def at(self, t: float) -> str | None:
        """The stable value last seen at or before ``t`` (None before the first)."""
        value = None
        for ct, v in self.changes:
            if ct > t:
                break
            value = v
        return value


@dataclass
class _Fault:
    step: int
    kind: str
    t: float          # fired: its nemesis invoke
    t_ok: float       # in effect from here
    value: dict[str, Any]
    healed: float | None = None


def _target_text(value: dict[str, Any]) -> str:
    target = value.get("target")
    return " ".join(map(str, target)) if isinstance(target, list) else str(target or "")


class _Roles:
    def __init__(self, model: TopologyModel, pairs: dict[str, _Track], primary: _Track) -> None:
        self.model, self.pairs, self.primary = model, pairs, primary
        self.services = {s.name: s for s in model.services}
        self.links = {lk.name: lk for lk in model.links}

    def service(self, name: str, t: float, text: str) -> str:
        svc = self.services.get(name)
        if svc is None:
            return "other"
        if svc.role in ("participant", "mediator") and svc.node:
            track = self.pairs.get(svc.node)
            active = track.at(t) if track is not None else None
            if active is None:  # no probe told: the selector as written does
                return f"{svc.role}.{'passive' if 'passive(' in text else 'active'}"
            return f"{svc.role}.{'active' if active == name else 'passive'}"
        if svc.role == "postgres":
            primary = self.primary.at(t)
            if primary is None:
                return "postgres.standby" if "replica(" in text else "postgres.primary"
            return "postgres.primary" if primary == name else "postgres.standby"
        return svc.role

    def of(self, fault: _Fault) -> list[str]:
        v, text = fault.value, _target_text(fault.value)
        groups = v.get("groups")
        resolved = [str(n) for n in v.get("resolved") or []]
        if isinstance(groups, list) and groups:
            members = [str(n) for g in groups if isinstance(g, list) for n in g]
            names = [n for n in members if n != "faultproxy"] or members
        else:
            names = resolved
        roles: list[str] = []
        for n in names:
            if n in self.links:
                lk = self.links[n]
                role = self.service(lk.client, fault.t, text) + ("/db" if lk.kind == "db" else "/seq")
            else:
                role = self.service(n, fault.t, text)
            if role not in roles:
                roles.append(role)
        if not roles and fault.kind == "db_failover":
            roles.append("postgres.primary")
        return roles or ["other"]


def _recovery_window(events: list[Event]) -> float:
    for ev in events:
        if ev.process == "harness" and ev.f == "expect":
            bound = (ev.value or {}).get("recovery_bound_s")
            if isinstance(bound, int | float) and not isinstance(bound, bool) and bound > 0:
                return min(RECOVERY_WINDOW_S, float(bound))
            break
    return RECOVERY_WINDOW_S


def faults_of(events: list[Event], model: TopologyModel | None = None) -> list[dict[str, Any]]:
    """Every fault that took effect in the history: its step, kind, when it fired, target roles and phases."""
    model = model or reference_model()
    evs = sorted(events, key=lambda e: e.t)
    t_end = evs[-1].t if evs else 0.0
    pairs = {p: _Track() for p in model.pairs}
    primary = _Track()
    invoked: dict[int, float] = {}
    faults: list[_Fault] = []
    by_step: dict[int, _Fault] = {}
    for ev in evs:
        v = ev.value or {}
        if ev.process == "probe" and ev.type == "ok":
            if ev.f == "health" and isinstance(v.get("services"), dict):
                for pair, reps in model.pairs.items():
                    states = [v["services"].get(r) for r in reps]
                    ready = [r for r, s in zip(reps, states, strict=True) if isinstance(s, dict) and s.get("ready")]
                    if not ready and not all(isinstance(s, dict) and s.get("ready") is not None for s in states):
                        continue  # a probe that failed tells nothing (neither an outage nor a change)
                    pairs[pair].see(ev.t, ready[0] if len(ready) == 1 else None)
            elif ev.f == "pg_primary" and "primary" in v:
                p = v.get("primary")
                primary.see(ev.t, str(p) if p else None)
        elif ev.process == "nemesis" and isinstance(v.get("step"), int):
            step = int(v["step"])
            if ev.f == "heal":
                if ev.type == "ok" and step in by_step and by_step[step].healed is None:
                    by_step[step].healed = ev.t
            elif ev.type == "invoke":
                invoked[step] = ev.t
            elif ev.type == "ok":
                fault = _Fault(step, str(v.get("kind") or ev.f), invoked.get(step, ev.t), ev.t, v)
                faults.append(fault)
                by_step[step] = fault
    for track in [*pairs.values(), primary]:
        track.close(t_end)
    windows = [w for track in [*pairs.values(), primary] for w in track.windows]
    recovery = _recovery_window(evs)
    roles = _Roles(model, pairs, primary)
    out = []
    for f in faults:
        phases = []
        if any(s <= f.t < e for s, e in windows):
            phases.append("failover")
        if any(g is not f and g.healed is not None and g.healed <= f.t < g.healed + recovery for g in faults):
            phases.append("recovery")
        if any(g is not f and g.t_ok <= f.t < (g.healed if g.healed is not None else t_end + 1) for g in faults):
            phases.append("overlap")
        out.append({"step": f.step, "kind": f.kind, "t": round(f.t, 3), "roles": roles.of(f),
                    "phases": phases or ["steady"]})
    return out


def run_coverage(events: list[Event], model: TopologyModel | None = None, *, run: str = "",
                 plan: str = "") -> dict[str, Any]:
    """The ``coverage.json`` document of one run."""
    faults = faults_of(events, model)
    cells: Counter[Cell] = Counter()
    for f in faults:
        for role in f["roles"]:
            for phase in f["phases"]:
                cells[(f["kind"], role, phase)] += 1
    return {"version": VERSION, "run": run, "plan": plan, "recovery_window_s": _recovery_window(events),
            "faults": faults, "cells": [{"kind": k, "role": r, "phase": p, "count": n}
                                        for (k, r, p), n in sorted(cells.items())]}


def _model_of(run_dir: Path) -> TopologyModel:
    try:
        profile = json.loads((run_dir / "topology.json").read_text(encoding="utf-8")).get("profile") or "full"
        return model_for_profile(profile)
    except (OSError, ValueError, AttributeError):
        return reference_model()


def run_id(run_dir: Path) -> str:
    """``<plan>/<timestamp>``: how a run is known across runs dirs, shards and merged copies."""
    return f"{run_dir.parent.name}/{run_dir.name}"


def compute_run_coverage(run_dir: Path) -> dict[str, Any]:
    from harness.report.rundir import RunDir

    rd = RunDir.open(run_dir)
    return run_coverage(rd.read_history(), _model_of(rd.path), run=run_id(rd.path), plan=rd.name)


def write_run_coverage(run_dir: Path) -> dict[str, Any]:
    """Compute the run's coverage from its history and write ``coverage.json`` into its directory."""
    doc = compute_run_coverage(run_dir)
    (Path(run_dir) / COVERAGE).write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return doc


# --- across runs ---------------------------------------------------------------------------------------------
@dataclass
class Tally:
    """Cell counts over many runs; each run counted once (by ``run_id``)."""

    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    counts: Counter[Cell] = field(default_factory=Counter)

    def add(self, doc: dict[str, Any]) -> bool:
        key = str(doc.get("run") or f"anonymous-{len(self.runs)}")
        if key in self.runs:
            return False
        self.runs[key] = doc
        for c in doc.get("cells") or []:
            try:
                self.counts[(str(c["kind"]), str(c["role"]), str(c["phase"]))] += int(c.get("count", 1))
            except (KeyError, TypeError, ValueError):
                continue
        return True

    def covered(self, cell: Cell) -> int:
        return self.counts.get(cell, 0)

    def rows(self, model: TopologyModel | None = None) -> list[Row]:
        """The universe's rows, then any other (kind, role) seen (kept kinds, load balancers, old histories)."""
        rows = universe(model)
        seen = sorted({(k, r) for k, r, _ in self.counts} - set(rows))
        return rows + seen

    def cells(self, model: TopologyModel | None = None) -> list[Cell]:
        return [(k, r, p) for k, r in self.rows(model) for p in PHASES]

    def document(self) -> dict[str, Any]:
        """A merged ``coverage.json``: every run's document without its fault list (so merging merged files never
        counts a run twice, and a file kept night after night grows by a few hundred bytes per run)."""
        return {"version": VERSION, "runs": [{k: v for k, v in self.runs[key].items() if k != "faults"}
                                             for key in sorted(self.runs)]}

    def summary(self, model: TopologyModel | None = None) -> str:
        cells = [c for k, r in universe(model) for c in ((k, r, p) for p in PHASES)]
        hit = sum(1 for c in cells if self.covered(c))
        return f"{hit} of {len(cells)} cells covered ({len(self.runs)} run(s))"

    @classmethod
    def load(cls, paths: Iterable[Path | str], *, compute_missing: bool = False) -> Tally:
        """From ``coverage.json`` files (a run's or a merged one) and directories searched for them; with
        ``compute_missing``, run directories without one are computed from their history (not written)."""
        tally = cls()
        for p in map(Path, paths):
            files = [p] if p.is_file() else sorted(p.rglob(COVERAGE)) if p.is_dir() else []
            for f in files:
                for doc in _read_docs(f):
                    tally.add(doc)
            if compute_missing and p.is_dir():
                for history in sorted(p.rglob("history.jsonl")):
                    rd = history.parent
                    if (rd / COVERAGE).exists() or run_id(rd) in tally.runs:
                        continue
                    try:
                        tally.add(compute_run_coverage(rd))
                    except Exception as exc:  # a damaged old run must not hide the others' coverage
                        log.warning("coverage of %s not computed: %s", rd, exc)
        return tally


def _read_docs(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("%s skipped: %s", path, exc)
        return []
    if not isinstance(data, dict):
        return []
    if isinstance(data.get("runs"), list):
        return [d for d in data["runs"] if isinstance(d, dict)]
    return [data] if "cells" in data else []


# --- rendering ------------------------------------------------------------------------------------------------
def table_rows(tally: Tally, model: TopologyModel | None = None) -> list[tuple[str, str, list[int]]]:
    return [(k, r, [tally.covered((k, r, p)) for p in PHASES]) for k, r in tally.rows(model)]


def render_table(tally: Tally, model: TopologyModel | None = None, title: str = "fault coverage") -> Any:
    """A Rich table: one row per kind x role, a column per phase, counts; never covered: ``—``."""
    from rich.table import Table

    table = Table(title=f"{title}: {tally.summary(model)}; {NEVER} = never covered", title_justify="left")
    for col in ("kind", "target role", *PHASES):
        table.add_column(col, justify="right" if col in PHASES else "left", no_wrap=True)
    for kind, role, counts in table_rows(tally, model):
        table.add_row(kind, role, *(str(n) if n else f"[red]{NEVER}[/]" for n in counts))
    return table


def html_table(tally: Tally, model: TopologyModel | None = None) -> str:
    """The same table as an HTML fragment (for the campaign and merged index pages)."""
    head = "".join(f"<th>{p}</th>" for p in PHASES)
    rows = []
    for kind, role, counts in table_rows(tally, model):
        tds = "".join(f'<td class="n">{n}</td>' if n else f'<td class="never">{NEVER}</td>' for n in counts)
        rows.append(f"<tr><td>{html.escape(kind)}</td><td>{html.escape(role)}</td>{tds}</tr>")
    return (f'<p>{html.escape(tally.summary(model))}; {NEVER} = never covered</p>\n<table class="coverage">'
            f"<tr><th>kind</th><th>target role</th>{head}</tr>\n" + "\n".join(rows) + "\n</table>")


# --- CLI -----------------------------------------------------------------------------------------------------
def _coverage(args: argparse.Namespace) -> int:
    from harness.campaign import console
    from harness.errors import InputError

    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        raise InputError(f"no such file or directory: {', '.join(missing)}",
                         "pass runs directories (e.g. runs/), run directories or coverage.json files")
    tally = Tally.load(args.paths, compute_missing=True)
    console.print(render_table(tally, title=f"fault coverage over {', '.join(args.paths)}"))
    if args.json:
        Path(args.json).write_text(json.dumps(tally.document(), indent=1), encoding="utf-8")
        console.print(f"merged coverage written to {args.json}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("coverage", help="fault coverage (kind x target role x phase) across runs, campaigns, nights",
                       description="Prints one row per fault kind x target role and a column per phase (steady, "
                                   "failover, recovery, overlap) with how many faults covered each cell, over "
                                   "every run under the given directories; cells never covered are marked. Runs "
                                   "without coverage.json are computed from their history.")
    p.add_argument("paths", nargs="+", metavar="RUNS_DIR", help="runs directories, run directories or coverage.json")
    p.add_argument("--json", metavar="FILE", help="also write the merged coverage.json to FILE")
    p.set_defaults(func=_coverage)
