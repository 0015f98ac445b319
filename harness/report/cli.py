"""``ha-chaos check RUN_DIR`` and ``ha-chaos report RUN_DIR``: offline re-analysis and re-rendering.

Exit codes follow the verdict (0 pass, 1 fail, 2 unknown); a missing or garbled run directory is a
``HarnessError`` (3+), reported on one line by the front door. Why the checkers' exceptions are caught here: a
stored history can be edited or damaged by hand (an ``expect`` marker with a string bound, a ``failover`` that
is not a list); the checkers treat their input as the harness wrote it, so odd values surface as Python
exceptions, which this command turns into one line naming the run directory.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable

from harness.checkers import CheckContext, CheckResult
from harness.checkers.model import VERDICT_RANK
from harness.checkers.roles import EVIDENCE_ENV, EVIDENCE_SOURCES, parse_evidence
from harness.errors import HarnessError, InputError
from harness.report import EXIT_CODES, check_run, render_run
from harness.report.rundir import RunDir

#: what a checker raises on values the history contract does not allow
MALFORMED = (KeyError, TypeError, ValueError, AttributeError, IndexError, ArithmeticError)
Judged = tuple[str, list[CheckResult]]


def _summary(rd: RunDir, verdict: str, results: list[CheckResult]) -> None:
    for r in results:
        print(f"  {r.verdict:<7} {r.invariant:>3} {r.name:<30} {r.explanation}")
    print(f"verdict: {verdict}")
    print(f"report:  {rd.report_path}")
    print(f"junit:   {rd.junit_path}")
    print(f"replay:  {rd.replay_command()}")


def _seconds_option(name: str, value: float | None, *, allow_zero: bool) -> None:
    if value is None:
        return
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        need = "a finite number of seconds, 0 or more" if allow_zero else "a finite number of seconds above 0"
        example = "0" if allow_zero else "25"
        raise InputError(f"{name} must be {need}, got {value:g}", f"pass e.g. {name} {example}")


def _judge(rd: RunDir, what: Callable[[], Judged]) -> Judged:
    """Run the checkers (or the re-rendering); an exception of theirs means the history breaks its contract."""
    try:
        return what()
    except MALFORMED as exc:
        raise HarnessError(f"the history of {rd.path} is malformed: {type(exc).__name__}: {exc}",
                           "fix the offending event against docs/history.md (expect marker, phases, nemesis "
                           "events), or re-run the plan") from exc


def _check_results_file(rd: RunDir) -> None:
    """``report`` re-renders from results.json: every verdict in it must be one the harness writes."""
    doc = rd.read_json(rd.results_path)
    if doc is None:
        return  # render_run says it is missing, with its fix
    rows = doc.get("results")
    verdicts = [doc["verdict"]] if "verdict" in doc else []
    verdicts += [r.get("verdict") for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []
    known = set(VERDICT_RANK)
    bad = sorted({repr(v) for v in verdicts if v not in known})
    if bad:
        raise HarnessError(f"{rd.results_path} has unknown verdict(s) {', '.join(bad)} (known: "
                           f"{', '.join(sorted(known))})", f"run `ha-chaos check {rd.path}` to rewrite it")


def _check(args: argparse.Namespace) -> int:
    _seconds_option("--recovery-bound", args.recovery_bound, allow_zero=False)
    _seconds_option("--completion-grace", args.completion_grace, allow_zero=True)
    try:  # HA_CHAOS_EVIDENCE=pg: judge single writer on the PostgreSQL samples alone (default: as the run did)
        evidence = parse_evidence(os.environ.get(EVIDENCE_ENV, ""))
    except ValueError as exc:
        raise InputError(str(exc), f"set {EVIDENCE_ENV} to a comma list of {', '.join(EVIDENCE_SOURCES)}, e.g. "
                                   f"{EVIDENCE_ENV}=pg, or unset it") from None
    rd = RunDir.open(args.run_dir)
    ctx = CheckContext(recovery_bound_s=args.recovery_bound, completion_grace_s=args.completion_grace,
                       evidence=evidence)
    verdict, results = _judge(rd, lambda: check_run(rd, ctx=ctx))
    _summary(rd, verdict, results)
    return EXIT_CODES[verdict]


def _report(args: argparse.Namespace) -> int:
    rd = RunDir.open(args.run_dir)
    _check_results_file(rd)
    verdict, results = _judge(rd, lambda: render_run(rd))
    _summary(rd, verdict, results)
    return EXIT_CODES[verdict]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("check", help="re-check a stored run's history offline; rewrites results, JUnit, report",
                       epilog=f"{EVIDENCE_ENV}=pg (or node, or node,pg) judges single writer (invariant 1) on that "
                              "evidence only: pg = PostgreSQL session samples, node = the nodes' /admin/evidence. "
                              "Default: the evidence the run gathered.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory, e.g. runs/latest")
    p.add_argument("--recovery-bound", type=float, default=None, metavar="S",
                   help="liveness bound in seconds (default: the plan's, from the history's expect marker)")
    p.add_argument("--completion-grace", type=float, default=CheckContext.completion_grace_s, metavar="S",
                   help="submits acknowledged in the last S seconds of the history are not judged "
                        "(default %(default)s; keep above the nodes' max-sequencing time)")
    p.set_defaults(func=_check)
    p = sub.add_parser("report", help="re-render report.html and junit.xml of a run from its results.json")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory, e.g. runs/latest")
    p.set_defaults(func=_report)
