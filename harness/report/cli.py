"""``ha-chaos check RUN_DIR`` and ``ha-chaos report RUN_DIR``: offline re-analysis and re-rendering.

Exit codes follow the verdict (0 pass, 1 fail, 2 unknown); a missing or garbled run directory is a
``HarnessError`` (3+), reported on one line by the front door.
"""

from __future__ import annotations

import argparse

from harness.checkers import CheckContext, CheckResult
from harness.errors import InputError
from harness.report import EXIT_CODES, check_run, render_run
from harness.report.rundir import RunDir


def _summary(rd: RunDir, verdict: str, results: list[CheckResult]) -> None:
    for r in results:
        print(f"  {r.verdict:<7} {r.invariant:>3} {r.name:<30} {r.explanation}")
    print(f"verdict: {verdict}")
    print(f"report:  {rd.report_path}")
    print(f"junit:   {rd.junit_path}")
    print(f"replay:  {rd.replay_command()}")


def _check(args: argparse.Namespace) -> int:
    if args.recovery_bound is not None and args.recovery_bound <= 0:
        raise InputError(f"--recovery-bound must be positive, got {args.recovery_bound}")
    rd = RunDir.open(args.run_dir)
    if args.completion_grace < 0:
        raise InputError(f"--completion-grace must not be negative, got {args.completion_grace}")
    ctx = CheckContext(recovery_bound_s=args.recovery_bound, completion_grace_s=args.completion_grace)
    verdict, results = check_run(rd, ctx=ctx)
    _summary(rd, verdict, results)
    return EXIT_CODES[verdict]


def _report(args: argparse.Namespace) -> int:
    rd = RunDir.open(args.run_dir)
    verdict, results = render_run(rd)
    _summary(rd, verdict, results)
    return EXIT_CODES[verdict]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("check", help="re-check a stored run's history offline; rewrites results, JUnit, report")
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
