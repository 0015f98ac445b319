"""Coverage cells (fault kind x target role x phase) computed from histories, added up across runs and nights,
and printed by ``ha-chaos coverage``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.checkers.synth import generate_run
from harness.cli import main
from harness.coverage import (
    COVERAGE,
    NEVER,
    PHASES,
    RECOVERY_WINDOW_S,
    Tally,
    coarse_role,
    faults_of,
    html_table,
    run_coverage,
    universe,
    write_run_coverage,
)
from harness.history import Event, HistoryWriter
from harness.plans.strategies import GENERATED_KINDS
from harness.report.rundir import RunDir
from harness.topology.model import reference_model

pytestmark = pytest.mark.unit


class History:
    """A hand-made history: 250 ms probes from callables, nemesis steps with invoke/ok/heal."""

    def __init__(self, end: float = 100.0, recovery_bound: float | None = 20.0) -> None:
        self.events: list[Event] = []
        self.end = end
        if recovery_bound is not None:
            self.add(0.0, "harness", "info", "expect", {"failover": [], "recovery_bound_s": recovery_bound})

    def add(self, t: float, process: str, type_: str, f: str, value: dict[str, Any]) -> None:
        self.events.append(Event(t, process, type_, f, value))  # type: ignore[arg-type]

    def probes(self, ready: Any, primary: Any) -> History:
        """``ready(t) -> {pair: ready replica or None}``, ``primary(t) -> pg member or None``."""
        pairs = reference_model().pairs
        for i in range(int(self.end / 0.25) + 1):
            t = i * 0.25
            now = ready(t)
            services = {r: {"ready": now.get(p, reps[0]) == r, "live": True, "api": None}
                        for p, reps in pairs.items() for r in reps}
            self.add(t, "probe", "ok", "health", {"services": services})
            self.add(t + 0.001, "probe", "ok", "pg_primary", {"primary": primary(t), "members": {}})
        return self

    def fault(self, step: int, kind: str, t: float, resolved: list[str], heal: float | None, *,
              target: Any = None, groups: list[list[str]] | None = None, ok: bool = True) -> History:
        value = {"step": step, "kind": kind, "target": target, "params": {}}
        self.add(t, "nemesis", "invoke", kind, value)
        if not ok:
            self.add(t + 0.1, "nemesis", "fail", kind, {**value, "error": "effect not observed"})
            return self
        self.add(t + 0.2, "nemesis", "ok", kind, {**value, "resolved": resolved, "groups": groups, "verified": True})
        if heal is not None:
            self.add(heal - 0.01, "nemesis", "invoke", "heal", {"step": step, "kind": kind, "resolved": resolved})
            self.add(heal, "nemesis", "ok", "heal", {"step": step, "kind": kind, "resolved": resolved})
        return self


def _ready(t: float) -> dict[str, str | None]:
    """p1 fails over from p1a to p1b between 10.5 and 12; everything else stays."""
    return {"p1": "p1a" if t < 10.5 else None if t < 12 else "p1b"}


def _primary(t: float) -> str | None:
    """the PostgreSQL primary is lost at 70.5 and pg2 takes over at 80"""
    return "pg1" if t < 70.5 else None if t < 80 else "pg2"


def _scenario() -> list[Event]:
    h = History().probes(_ready, _primary)
    h.fault(0, "kill", 10.0, ["p1a"], 30.0, target="active(p1)")                    # steady
    h.fault(1, "toxic", 11.0, ["p1b-db"], 20.0, target="db_link(passive(p1))")     # failover + overlap
    h.fault(2, "partition", 35.0, ["pg1", "etcd1", "etcd2", "etcd3"], 40.0,
            groups=[["pg1"], ["etcd1", "etcd2", "etcd3"]])                         # recovery (heal at 30)
    h.fault(3, "kill", 52.0, ["seq2"], 57.0, target="any(sequencer)")              # steady (52 > last heal + 10)
    h.fault(4, "db_failover", 70.0, ["pg1"], 70.3, target="primary(postgres)")    # instant
    h.fault(5, "kill", 75.0, ["pg2"], 85.0, target="any(replica(postgres))")      # failover + recovery
    h.fault(6, "partition", 90.0, ["p2a", "faultproxy"], 95.0, groups=[["p2a"], ["faultproxy"]])
    h.fault(7, "pause", 91.0, ["med1a"], None, ok=False)                           # never took effect
    return sorted(h.events, key=lambda e: e.t)


def test_each_fault_gets_its_roles_and_phases() -> None:
    faults = {f["step"]: f for f in faults_of(_scenario())}
    assert 7 not in faults  # a fault that failed is not coverage
    assert faults[0] == {"step": 0, "kind": "kill", "t": 10.0, "roles": ["participant.active"], "phases": ["steady"]}
    assert faults[1]["roles"] == ["participant.passive/db"]  # p1b was not (yet) the stable active at 11 s
    assert faults[1]["phases"] == ["failover", "overlap"]
    assert faults[2]["roles"] == ["postgres.primary", "etcd"] and faults[2]["phases"] == ["recovery"]
    assert faults[3]["roles"] == ["sequencer"] and faults[3]["phases"] == ["steady"]
    assert faults[4]["roles"] == ["postgres.primary"] and faults[4]["phases"] == ["steady"]
    assert faults[5]["roles"] == ["postgres.standby"] and faults[5]["phases"] == ["failover", "recovery"]
    assert faults[6]["roles"] == ["participant.active"]  # the fault proxy side stands for p2a's links


def test_the_run_document_counts_cells() -> None:
    doc = run_coverage(_scenario(), run="plan/20261201T000000Z", plan="plan")
    cells = {(c["kind"], c["role"], c["phase"]): c["count"] for c in doc["cells"]}
    assert cells[("kill", "participant.active", "steady")] == 1
    assert cells[("toxic", "participant.passive/db", "failover")] == 1
    assert cells[("toxic", "participant.passive/db", "overlap")] == 1
    assert cells[("partition", "etcd", "recovery")] == 1 and cells[("partition", "postgres.primary", "recovery")] == 1
    assert ("pause", "mediator.active", "steady") not in cells
    assert doc["run"] == "plan/20261201T000000Z" and doc["recovery_window_s"] == RECOVERY_WINDOW_S
    assert json.loads(json.dumps(doc)) == doc


def test_the_recovery_window_is_the_plans_bound_when_smaller() -> None:
    h = History(end=40, recovery_bound=3.0).probes(lambda t: {}, lambda t: "pg1")
    h.fault(0, "kill", 5.0, ["seq1"], 10.0)
    h.fault(1, "kill", 12.0, ["seq2"], 20.0)   # 2 s after the heal: recovery
    h.fault(2, "kill", 14.0, ["seq3"], 22.0)   # 4 s after it: steady but overlapping step 1
    phases = {f["step"]: f["phases"] for f in faults_of(sorted(h.events, key=lambda e: e.t))}
    assert phases == {0: ["steady"], 1: ["recovery"], 2: ["overlap"]}


def test_without_probes_the_selector_as_written_decides_active_or_passive() -> None:
    h = History(end=30, recovery_bound=None)
    h.fault(0, "kill", 5.0, ["p1b"], 10.0, target="passive(p1)")
    h.fault(1, "stop", 12.0, ["p2a"], 15.0, target="active(p2)")
    h.fault(2, "kill", 17.0, ["pg3"], 20.0, target="any(replica(postgres))")
    h.fault(3, "link_down", 22.0, ["med1b-seq2"], 25.0, target="seq_link(passive(med1), any(sequencer))")
    roles = {f["step"]: f["roles"] for f in faults_of(h.events)}
    assert roles == {0: ["participant.passive"], 1: ["participant.active"], 2: ["postgres.standby"],
                     3: ["mediator.passive/seq"]}


def test_a_synthetic_run_of_the_checkers_is_covered() -> None:
    run = generate_run(ops=3000, seed=3)
    faults = faults_of(run.events)
    assert [(f["kind"], f["roles"]) for f in faults] == [("link-timeout", ["participant.active/db"]),
                                                         ("kill", ["sequencer"])]
    assert faults[0]["phases"] == ["steady"]
    tf, th = run.fault_window
    t_kill = faults[1]["t"]
    expected = (["recovery"] if th <= t_kill < th + RECOVERY_WINDOW_S else []) + \
               (["overlap"] if tf <= t_kill < th else [])
    assert faults[1]["phases"] == (expected or ["steady"])


def test_the_universe_lists_what_generated_plans_can_reach() -> None:
    rows = universe(reference_model())
    kinds = {k for k, _ in rows}
    assert kinds == set(GENERATED_KINDS)
    assert ("toxic", "participant.active/db") in rows and ("toxic", "mediator.passive/seq") in rows
    assert ("toxic", "sequencer/db") in rows and ("toxic", "etcd") not in rows
    assert ("former_primary_trap", "participant.active/seq") not in rows
    assert ("kill", "postgres.standby") in rows and ("db_failover", "postgres.primary") in rows
    assert ("set_passive", "participant.active") in rows and ("set_passive", "participant.passive") not in rows
    assert {coarse_role(r) for _, r in rows} == {"participant", "mediator", "sequencer", "postgres", "etcd"}


def _doc(run: str, *cells: tuple[str, str, str]) -> dict[str, Any]:
    return {"version": 1, "run": run, "cells": [{"kind": k, "role": r, "phase": p, "count": 1} for k, r, p in cells]}


def test_a_tally_counts_each_run_once_across_files_and_merged_copies(tmp_path: Path) -> None:
    a, b = _doc("x/1", ("kill", "sequencer", "steady")), _doc("y/2", ("kill", "sequencer", "steady"),
                                                                ("toxic", "participant.active/db", "overlap"))
    for doc in (a, b):
        d = tmp_path / "runs" / doc["run"]
        d.mkdir(parents=True)
        (d / COVERAGE).write_text(json.dumps(doc))
    merged = tmp_path / "runs" / "earlier-nights" / COVERAGE
    merged.parent.mkdir()
    merged.write_text(json.dumps({"version": 1, "runs": [a, _doc("z/3", ("pause", "etcd", "steady"))]}))
    (tmp_path / "runs" / "garbled").mkdir()
    (tmp_path / "runs" / "garbled" / COVERAGE).write_text("{not json")
    tally = Tally.load([tmp_path / "runs", merged])
    assert set(tally.runs) == {"x/1", "y/2", "z/3"}
    assert tally.covered(("kill", "sequencer", "steady")) == 2
    assert tally.covered(("pause", "etcd", "steady")) == 1
    assert not tally.add(a)
    again = Tally()
    for doc in tally.document()["runs"]:
        again.add(doc)
    assert again.counts == tally.counts


def test_rows_show_the_universe_and_what_else_was_seen() -> None:
    tally = Tally()
    tally.add(_doc("r/1", ("kill", "pg-lb", "steady"), ("kill", "sequencer", "failover")))
    rows = tally.rows()
    assert rows[:len(universe())] == universe() and rows[-1] == ("kill", "pg-lb")
    html = html_table(tally)
    assert html.count("<tr>") == len(rows) + 1 and NEVER in html and 'class="never"' in html
    cells = len(universe()) * len(PHASES)
    assert tally.summary() == f"1 of {cells} cells covered (1 run(s))"


def _stored_run(runs: Path, name: str, events: list[Event]) -> RunDir:
    rd = RunDir.create(runs, name)
    with HistoryWriter(rd.history_path) as hist:
        for e in events:
            hist.append(e.process, e.type, e.f, e.value, t=e.t)
    return rd


def test_write_run_coverage_and_the_coverage_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    first = _stored_run(runs, "scenario", _scenario())
    doc = write_run_coverage(first.path)
    assert json.loads((first.path / COVERAGE).read_text()) == doc
    assert doc["run"] == f"scenario/{first.timestamp}"
    _stored_run(runs, "older-run", generate_run(ops=2000, seed=1).events)  # no coverage.json: computed
    assert main(["coverage", str(runs), "--json", str(tmp_path / "all.json")]) == 0
    out = capsys.readouterr().out
    assert "kill" in out and "participant.active" in out and NEVER in out and "2 run(s)" in out
    assert "link-timeout" in out  # the synthetic run's own kind, shown although no generated plan has it
    assert len(json.loads((tmp_path / "all.json").read_text())["runs"]) == 2
    assert main(["coverage", str(tmp_path / "nowhere")]) == 4
    assert "no such file" in capsys.readouterr().err
