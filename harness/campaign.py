"""Campaigns: several plans on one topology (``ha-chaos run``), replay (``replay``), minimisation (``shrink``),
and healing from fault journals (``heal``).

Why one topology per campaign: starting the reference topology costs ~30 s; ``runner.settle`` between plans
restores a clean state (containers running, proxies reset, a PG leader, one active per pair) and a plan whose
topology cannot be settled fails loudly as a harness error instead of judging the next plan on a broken system.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from harness.errors import HarnessError, InputError
from harness.faults.live import LiveInjector
from harness.plans.journal import JOURNAL_NAME, heal_from_journal, open_faults
from harness.plans.loader import PLANS_DIR, found_plan_files, plans_in
from harness.plans.schema import Plan
from harness.runner import RunOutcome, run_plan, settle
from harness.topology import registry
from harness.topology.compose import Topology
from harness.topology.model import reference_model
from harness.topology.signals import terminate_gracefully

log = logging.getLogger("ha-chaos.campaign")
#: not a terminal (CI logs, a pipe): Rich would fold every line at 80 columns, cutting the summary's report paths
console = Console(stderr=False, highlight=False, width=None if sys.stdout.isatty() or os.environ.get("COLUMNS")
                  else 400)   # tables are as wide as their content, at most this
CURATED_DIR = PLANS_DIR


def check_bugs(value: str | None) -> str:
    """Validate a ``--bugs`` comma list before anything is set up; returns it normalised (sorted, no blanks).

    Why here and not only in the nodes: an unknown switch makes every node exit at start, which the harness
    would only see as a health timeout minutes later."""
    from harness.sut.common.bugs import KNOWN_BUGS, parse_bugs

    try:
        return ",".join(sorted(parse_bugs(value)))
    except ValueError:
        import difflib

        names = {b.strip() for b in (value or "").split(",") if b.strip()}
        unknown = []
        for name in sorted(names - KNOWN_BUGS):
            close = difflib.get_close_matches(name, sorted(KNOWN_BUGS), n=1, cutoff=0.6)
            unknown.append(f"{name} (did you mean {close[0]}?)" if close else name)
        raise InputError(f"unknown bug switch(es): {', '.join(unknown)}",
                         f"--bugs takes a comma list of: {', '.join(sorted(KNOWN_BUGS))}") from None


def default_plan_files() -> list[Path]:
    """What ``ha-chaos run`` runs without arguments: the kept failing plans of ``fault_plans/found/`` first
    (regressions, as FoundationDB and Jepsen users re-run failing seeds first), then the curated plans."""
    return [*found_plan_files(), *plans_in(CURATED_DIR)]


def generate_plans(n: int, seed: int, *, max_steps: int = 3) -> list[Plan]:
    """``n`` plans drawn by the Hypothesis strategies, reproducibly from ``seed`` (same seed, same plans)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    from harness.plans.strategies import fault_plans

    out: list[Plan] = []

    @hseed(seed)
    @settings(max_examples=max(n * 3, 10), database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(fault_plans(reference_model(), max_steps=max_steps))
    def collect(plan: Plan) -> None:
        if len(out) < n:
            out.append(plan)

    collect()
    return [p.model_copy(update={"name": f"generated-{seed}-{i}"}) for i, p in enumerate(out)]


@dataclass
class Campaign:
    runs_dir: Path
    bugs: str = ""
    seed: int = 0
    keep: bool = False
    #: PostgreSQL replication of the campaign's topology: synchronous (the default) or the unsafe asynchronous
    synchronous_mode: bool = True
    outcomes: list[RunOutcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.bugs = check_bugs(self.bugs)

    @contextmanager
    def topology(self) -> Iterator[Topology]:
        with terminate_gracefully():
            topo = Topology("full", bugs=self.bugs, seed=self.seed, synchronous_mode=self.synchronous_mode)
            console.print(f"topology {topo.run_id}: {topo.replication} PostgreSQL replication")
            topo.start()
            failed = False
            try:
                yield topo
            except BaseException:
                failed = True
                raise
            finally:
                failed = failed or any(o.verdict != "pass" for o in self.outcomes)
                if self.keep and failed:
                    registry.set_detached(topo.run_id, True)
                    console.print(f"--keep: topology {topo.run_id} left running; `ha-chaos down --run {topo.run_id}`")
                else:
                    topo.stop()

    def run_one(self, topo: Topology, plan: Plan, label: str = "") -> RunOutcome:
        try:
            settle(topo)
        except HarnessError as exc:
            raise HarnessError(f"topology {topo.run_id} did not settle before {plan.name}: {exc.what}",
                               "see the containers' logs; the previous run may have broken it") from None
        outcome = run_plan(plan, topo, self.runs_dir, bugs=self.bugs)
        self.outcomes.append(outcome)
        colour = {"pass": "green", "fail": "red", "unknown": "yellow", "error": "magenta"}[outcome.verdict]
        failed = ", ".join(outcome.failed_invariants)
        console.print(f"{label}[{colour}]{outcome.verdict.upper():7}[/] {plan.name} ({outcome.duration_s:.0f} s)"
                      + (f" failed: {failed}" if failed else "") + (f" error: {outcome.error}" if outcome.error else "")
                      + f"\n    report: {outcome.run_dir / 'report.html'}")
        return outcome

    def run_all(self, plans: list[Plan]) -> int:
        with self.topology() as topo:
            for i, plan in enumerate(plans, 1):
                self.run_one(topo, plan, f"[{i}/{len(plans)}] ")
        self.summary()
        return self.exit_code()

    def summary(self) -> None:
        table = Table(title="ha-chaos campaign")
        for col in ("plan", "verdict", "failed invariants", "seconds", "report"):
            table.add_column(col)
        for o in self.outcomes:
            table.add_row(o.plan, o.verdict, ", ".join(o.failed_invariants) or "-", f"{o.duration_s:.0f}",
                          str(o.run_dir / "report.html"))
        console.print(table)

    def exit_code(self) -> int:
        verdicts = {o.verdict for o in self.outcomes}
        for v, code in (("fail", 1), ("error", 3), ("unknown", 2)):
            if v in verdicts:
                return code
        return 0


def runner_for(campaign: Campaign, topo: Topology) -> Callable[[Plan], set[str]]:
    """A ``runner(plan) -> failed invariants`` for replay/shrink; a harness error counts as no reproduction."""

    def run(plan: Plan) -> set[str]:
        outcome = campaign.run_one(topo, plan)
        return set(outcome.failed_invariants)

    return run


def heal_runs(runs_dir: Path) -> list[str]:
    """Undo every fault left open in a journal under ``runs_dir`` whose topology still runs."""
    lines = []
    for journal in sorted(runs_dir.glob(f"*/*/{JOURNAL_NAME}")):
        entries = open_faults(journal)
        if not entries:
            continue
        info_path = journal.parent / "topology.json"
        run_id = json.loads(info_path.read_text()).get("run_id") if info_path.exists() else None
        if run_id is None:
            run_id = _run_id_from_entries(entries)
        if run_id is None or registry.lookup(run_id) is None or run_id not in registry.labelled_runs():
            # the topology is gone: its toxics, rules and paused containers went with it
            from harness.plans.journal import FaultJournal

            for e in entries:
                FaultJournal(journal).healed(str(e["id"]))
            lines.append(f"{journal.parent}: {len(entries)} open fault(s) closed (topology {run_id} is gone)")
            continue
        report = heal_from_journal(journal, LiveInjector(Topology.attach(run_id)))
        lines.append(f"{journal.parent}: {report}")
    return lines


def _run_id_from_entries(entries: list[dict]) -> str | None:
    fid = str(entries[0].get("id", ""))
    parts = fid.split("-")
    return "-".join(parts[:4]) if fid.startswith("hc-") and len(parts) >= 4 else None
