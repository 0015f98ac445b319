"""Campaigns: several plans on one topology (``ha-chaos run``), replay (``replay``), minimisation (``shrink``),
and healing from fault journals (``heal``).

Why one topology per campaign: starting the reference topology costs ~30 s; ``runner.settle`` between plans
restores a clean state (containers running, proxies reset, a PG leader, one active per pair) and a plan whose
topology cannot be settled fails loudly as a harness error instead of judging the next plan on a broken system.

A campaign runs fixed plans (kept failures, curated or given ones) and then generated ones (``harness.swarm``),
optionally within a time budget (``harness.budget``: a plan starts only if it can finish), on one shard of a
campaign split over CI runners (``harness.shard``). Every run gets a ``coverage.json`` (``harness.coverage``) that
steers the next generated plans; a failing generated plan is kept in ``fault_plans/found/`` and, within a share
of the budget, shrunk. The campaign's summary (how many ran, verdicts, coverage) is printed and written to
``<runs dir>/campaigns/<id>/campaign.json`` with an ``index.html`` (``harness.merge`` renders it).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from harness.budget import Budget, CostModel, format_duration
from harness.coverage import Tally, render_table, write_run_coverage
from harness.errors import HarnessError, InputError
from harness.faults.live import LiveInjector
from harness.plans.journal import JOURNAL_NAME, heal_from_journal, open_faults
from harness.plans.loader import PLANS_DIR, found_plan_files, plans_in, save_found
from harness.plans.schema import Plan
from harness.plans.shrink import DidNotReproduce, shrink
from harness.runner import RunOutcome, run_plan, settle
from harness.shard import UNSHARDED, Shard
from harness.topology import registry
from harness.topology.compose import Topology
from harness.topology.model import reference_model
from harness.topology.signals import terminate_gracefully

log = logging.getLogger("ha-chaos.campaign")
#: not a terminal (CI logs, a pipe): Rich would fold every line at 80 columns, cutting the summary's report paths
console = Console(stderr=False, highlight=False, width=None if sys.stdout.isatty() or os.environ.get("COLUMNS")
                  else 400)   # tables are as wide as their content, at most this
CURATED_DIR = PLANS_DIR
CAMPAIGNS = "campaigns"
CAMPAIGN_FILE = "campaign.json"
#: a failure's shrinking may use at most this share of the budget left when it was found
SHRINK_SHARE = 0.25
SHRINK_K = 2          # runs per candidate: a candidate fails if it fails the invariant in one of them
SHRINK_MAX_RUNS = 60
#: generated plans drawn in a row that did not fit in the budget left before the campaign stops drawing
FIT_ATTEMPTS = 3


def monotonic() -> float:
    """The campaign's clock (budget, run durations); unit tests replace it with a virtual one."""
    return time.monotonic()


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
    """``n`` plans drawn by the plain Hypothesis strategy, reproducibly from ``seed`` (same seed, same plans).
    ``ha-chaos run`` draws swarm plans instead (``harness.swarm.SwarmSource``); this stays for scripts."""
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
    shard: Shard = UNSHARDED
    budget: Budget | None = None
    #: coverage of every run so far, earlier campaigns in the runs dir included (None: loaded on first use)
    tally: Tally | None = None
    cost: CostModel = field(default_factory=CostModel)
    #: run directory -> where its plan came from: found, curated, given, generated (shrink runs are apart)
    sources: dict[Path, str] = field(default_factory=dict)
    shrink_outcomes: list[RunOutcome] = field(default_factory=list)
    not_started: list[dict[str, Any]] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)     # fault_plans/found/ files written by this campaign
    swarms: dict[Path, dict[str, Any]] = field(default_factory=dict)   # run directory -> number, seed, swarm
    estimates: dict[Path, float] = field(default_factory=dict)         # run directory -> estimated seconds
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    exitfirst: bool = False
    planned: int = 0   # plans the campaign will run, when known up front (no budget, no generation)
    #: the deployment's target file (None: targets/reference.yaml)
    target: str | None = None

    def __post_init__(self) -> None:
        self.bugs = check_bugs(self.bugs)

    @property
    def coverage(self) -> Tally:
        if self.tally is None:
            self.tally = Tally.load([self.runs_dir]) if self.runs_dir.is_dir() else Tally()
        return self.tally

    @contextmanager
    def topology(self) -> Iterator[Topology]:
        with terminate_gracefully():
            topo = Topology("full", bugs=self.bugs, seed=self.seed, synchronous_mode=self.synchronous_mode,
                            target=self.target)
            console.print(f"topology {topo.run_id}: target {topo.target.name}, {topo.replication} PostgreSQL "
                          f"replication")
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

    def run_one(self, topo: Topology, plan: Plan, label: str = "", *, record: bool = True,
                generated: bool = False) -> RunOutcome:
        """Settle, run and judge one plan; its coverage is written and counted. ``record=False``: a shrink run,
        kept apart from the campaign's own outcomes; ``generated``: a drawn plan or a shrink candidate (a step
        left nothing to aim at by the plan's own faults is skipped)."""
        t0 = monotonic()
        try:
            settle(topo)
        except HarnessError as exc:
            raise HarnessError(f"topology {topo.run_id} did not settle before {plan.name}: {exc.what}",
                               "see the containers' logs; the previous run may have broken it") from None
        outcome = run_plan(plan, topo, self.runs_dir, bugs=self.bugs, generated=generated)
        self.cost.observe(plan, monotonic() - t0)
        (self.outcomes if record else self.shrink_outcomes).append(outcome)
        self._cover(outcome)
        colour = {"pass": "green", "fail": "red", "unknown": "yellow", "error": "magenta"}[outcome.verdict]
        failed = ", ".join(outcome.failed_invariants)
        console.print(f"{label}[{colour}]{outcome.verdict.upper():7}[/] {plan.name} ({outcome.duration_s:.0f} s)"
                      + (f" failed: {failed}" if failed else "") + (f" error: {outcome.error}" if outcome.error else "")
                      + f"\n    report: {outcome.run_dir / 'report.html'}")
        return outcome

    def _cover(self, outcome: RunOutcome) -> None:
        """Write the run's coverage.json and count it. Never fatal: a run whose history cannot be read for coverage
        is still judged and reported (its checks said what they could), it only does not steer generation."""
        if not (outcome.run_dir / "history.jsonl").exists():
            return
        try:
            self.coverage.add(write_run_coverage(outcome.run_dir))
        except Exception as exc:  # any failure here must not cost the campaign; it is logged and shown
            console.print(f"    coverage of {outcome.run_dir} not computed: {type(exc).__name__}: {exc}")

    def run_all(self, plans: list[Plan]) -> int:
        return self.run_campaign([("given", p) for p in plans])

    # --- the campaign loop -------------------------------------------------------------------------------------
    def _may_start(self, plan: Plan, source: str) -> bool:
        """Whether the plan can finish within the budget left (always without a budget); a plan that cannot is
        recorded as not started, never started."""
        estimate = self.cost.estimate(plan)
        if self.budget is None or self.budget.fits(estimate):
            return True
        self.not_started.append({"plan": plan.name, "source": source, "estimate_s": round(estimate, 1),
                                 "remaining_s": round(self.budget.remaining_s, 1)})
        console.print(f"not started: {plan.name} (~{estimate:.0f} s) does not fit in the "
                      f"{format_duration(self.budget.remaining_s)} left ({self.budget.line()})")
        return False

    def _start(self, topo: Topology, plan: Plan, source: str, swarm: dict[str, Any] | None = None) -> RunOutcome:
        estimate = self.cost.estimate(plan)
        budget = f"; {self.budget.line()}" if self.budget is not None else ""
        total = f"/{self.planned}" if self.planned else ""
        console.print(f"[{len(self.outcomes) + 1}{total}] {plan.name} ({source}, ~{estimate:.0f} s{budget})")
        outcome = self.run_one(topo, plan, "    ", generated=source == "generated")
        self.sources[outcome.run_dir] = source
        self.estimates[outcome.run_dir] = estimate
        if swarm is not None:
            self.swarms[outcome.run_dir] = swarm
        return outcome

    def run_campaign(self, fixed: Sequence[tuple[str, Plan]], generated: Iterable[Any] | None = None) -> int:
        """Fixed plans (``(source, plan)``: found, curated, given) first, then generated ones (``harness.swarm.
        Generated``) until the budget is spent or the source ends. A failing generated plan is kept in
        fault_plans/found/ and, with a budget, shrunk; with ``exitfirst`` nothing starts after the first failure."""
        self.started_at = datetime.now(UTC)
        self.planned = len(fixed) if generated is None and self.budget is None else 0
        try:
            with self.topology() as topo:
                if self.run_fixed(topo, fixed) and generated is not None:
                    self.run_generated(topo, generated)
        finally:
            if self.outcomes or self.not_started:
                try:
                    self.summary()
                    self.write_summary()
                except Exception as exc:  # never hide the campaign's own outcome (or its exception) behind this
                    console.print(f"campaign summary not written: {type(exc).__name__}: {exc}")
        return self.exit_code()

    def run_fixed(self, topo: Topology, fixed: Sequence[tuple[str, Plan]]) -> bool:
        """Each plan that fits in the budget left; False when ``exitfirst`` stopped at a failure."""
        for source, plan in fixed:
            if self._may_start(plan, source):
                outcome = self._start(topo, plan, source)
                if self.exitfirst and outcome.verdict == "fail":
                    return False
        return True

    def run_generated(self, topo: Topology, generated: Iterable[Any]) -> bool:
        """Generated plans until the source ends or the budget is spent (``FIT_ATTEMPTS`` plans in a row that did not
        fit); a failing one is kept and shrunk. False when ``exitfirst`` stopped at a failure."""
        misses = 0
        for g in generated:
            if not self._may_start(g.plan, "generated"):
                misses += 1
                if misses >= FIT_ATTEMPTS:
                    console.print(f"budget spent: {FIT_ATTEMPTS} generated plans in a row did not fit "
                                  f"({self.budget.line() if self.budget else ''})")
                    break
                continue
            misses = 0
            outcome = self._start(topo, g.plan, "generated", {"number": g.number, "seed": g.seed, **g.swarm.to_dict()})
            if outcome.verdict == "fail":
                self.keep_failure(topo, g.plan, outcome)
                if self.exitfirst:
                    return False
        return True

    def keep_failure(self, topo: Topology, plan: Plan, outcome: RunOutcome) -> None:
        """Keep a failing generated plan in fault_plans/found/ as it ran, then (with a budget) shrink it within
        ``SHRINK_SHARE`` of the budget left, flake-tolerantly (a candidate fails if it fails the same invariant in
        one of ``SHRINK_K`` runs), and keep the minimal plan too."""
        path = save_found(plan)
        self.kept.append(str(path))
        console.print(f"failing generated plan saved to {path}")
        if self.budget is None or not outcome.failed_invariants:
            return
        budget = self.budget
        deadline = budget.elapsed_s + SHRINK_SHARE * budget.remaining_s
        spent = False

        def runner(candidate: Plan) -> set[str]:
            nonlocal spent
            cost = self.cost.estimate(candidate)
            if budget.elapsed_s + cost > deadline or not budget.fits(cost):
                spent = True  # out of its share: "did not fail" can only leave the result larger, never wrong
                return set()
            return set(self.run_one(topo, candidate, "    shrink: ", record=False, generated=True).failed_invariants)

        invariant = sorted(outcome.failed_invariants)[0]
        console.print(f"shrinking {plan.name} for invariant {invariant} within "
                      f"{format_duration(deadline - budget.elapsed_s)} ({budget.line()})")
        try:
            result = shrink(plan, runner, invariant, k=SHRINK_K, max_runs=SHRINK_MAX_RUNS, model=reference_model())
        except DidNotReproduce as exc:
            console.print(f"not shrunk: {'its share of the budget is spent' if spent else exc.what}")
            return
        if result.minimal.steps == plan.steps and result.minimal.workload == plan.workload:
            console.print(f"not shrunk: no smaller plan failed {invariant} in {result.runs} runs")
            return
        path = save_found(result.minimal)
        self.kept.append(str(path))
        console.print(f"shrunk {plan.name} in {result.runs} runs: {len(plan.steps)} -> {len(result.minimal.steps)} "
                      f"steps; minimal plan saved to {path}")

    # --- summary ------------------------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        out = {"total": len(self.outcomes)}
        for o in self.outcomes:
            src = self.sources.get(o.run_dir, "given")
            out[src] = out.get(src, 0) + 1
        out["shrink_runs"] = len(self.shrink_outcomes)
        return out

    def ran_line(self) -> str:
        c = self.counts()
        parts = ", ".join(f"{c[k]} {k}" for k in ("found", "curated", "given", "generated") if c.get(k))
        line = f"ran {c['total']} plan(s)" + (f" ({parts})" if parts else "")
        if c["shrink_runs"]:
            line += f" + {c['shrink_runs']} shrink run(s)"
        if self.budget is not None:
            line += f" in {format_duration(self.budget.elapsed_s)} of a {format_duration(self.budget.total_s)} budget"
        if self.not_started:
            line += f"; {len(self.not_started)} not started (did not fit in the budget left)"
        if self.shard.sharded:
            line += f"; shard {self.shard}"
        return line

    def summary(self) -> None:
        table = Table(title="ha-chaos campaign")
        for col in ("plan", "source", "verdict", "failed invariants", "seconds", "report"):
            table.add_column(col)
        for o in self.outcomes:
            table.add_row(o.plan, self.sources.get(o.run_dir, "given"), o.verdict, ", ".join(o.failed_invariants)
                          or "-", f"{o.duration_s:.0f}", str(o.run_dir / "report.html"))
        console.print(table)
        if self.tally is not None and self.tally.runs:
            console.print(render_table(self.tally, title="fault coverage (this runs dir, every campaign in it)"))
        console.print(self.ran_line())

    def campaign_id(self) -> str:
        shard = f"-shard{self.shard.index}of{self.shard.count}" if self.shard.sharded else ""
        return f"{self.started_at.strftime('%Y%m%dT%H%M%SZ')}-seed{self.seed}{shard}"

    def summary_document(self, campaign_dir: Path) -> dict[str, Any]:
        def entry(o: RunOutcome, source: str) -> dict[str, Any]:
            return {"plan": o.plan, "source": source, "verdict": o.verdict, "failed": o.failed_invariants,
                    "error": o.error, "duration_s": round(o.duration_s, 1),
                    "estimate_s": round(self.estimates[o.run_dir], 1) if o.run_dir in self.estimates else None,
                    "run_dir": os.path.relpath(o.run_dir, campaign_dir), "swarm": self.swarms.get(o.run_dir)}

        return {
            "version": 1, "campaign": self.campaign_id(), "seed": self.seed, "shard": str(self.shard),
            "bugs": self.bugs, "replication": "synchronous" if self.synchronous_mode else "asynchronous",
            "started": self.started_at.isoformat(timespec="seconds"),
            "budget_s": self.budget.total_s if self.budget else None,
            "elapsed_s": round(self.budget.elapsed_s, 1) if self.budget else None,
            "ran": self.counts(), "summary": self.ran_line(), "exit_code": self.exit_code(),
            "not_started": self.not_started, "kept": self.kept,
            "runs": [entry(o, self.sources.get(o.run_dir, "given")) for o in self.outcomes]
                    + [entry(o, "shrink") for o in self.shrink_outcomes],
            "coverage": self.tally.summary() if self.tally is not None else "",
        }

    def write_summary(self) -> Path:
        """``<runs dir>/campaigns/<id>/campaign.json`` and its ``index.html`` (every run with its verdict and a link
        to its report, and the coverage table)."""
        from harness.merge import write_index

        d = self.runs_dir / CAMPAIGNS / self.campaign_id()
        d.mkdir(parents=True, exist_ok=True)
        doc = self.summary_document(d)
        (d / CAMPAIGN_FILE).write_text(json.dumps(doc, indent=2, default=str), encoding="utf-8")
        write_index([self.runs_dir], d, title=f"ha-chaos campaign {doc['campaign']}", campaigns=[d / CAMPAIGN_FILE],
                    coverage=self.tally)
        console.print(f"campaign summary: {d / CAMPAIGN_FILE} and {d / 'index.html'}")
        return d / CAMPAIGN_FILE

    def exit_code(self) -> int:
        """1 an invariant failed, 3 a harness error, 2 unknown - or nothing ran because no plan fitted in the
        budget (nothing was tested: not a pass), 0 all passed."""
        if not self.outcomes and self.not_started:
            return 2
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
