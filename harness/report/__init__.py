"""The store and the report: run directories, ``results.json``, ``junit.xml`` and ``report.html``.

Entry points for the rest of the harness:
- ``RunDir.create(runs_dir, name)`` before a run (plan.yaml, history.jsonl, logs/ are written into it);
- ``check_run(rd, events=None, ctx=None)`` after it: checks the history and writes results, JUnit and HTML;
- ``render_run(rd)``: re-renders the HTML and JUnit from a stored ``results.json``.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from harness.checkers import CheckContext, CheckResult, check_all, run_verdict
from harness.checkers.index import build_index
from harness.checkers.synth import count_ops
from harness.history import Event
from harness.report.html import write_html
from harness.report.results import EXIT_CODES, read_results, results_document, write_junit, write_results
from harness.report.rundir import RunDir


def check_run(rd: RunDir, events: list[Event] | None = None, ctx: CheckContext | None = None
              ) -> tuple[str, list[CheckResult]]:
    """Check a run's history (read from disk unless given) and (re)write results.json, junit.xml, report.html."""
    t0 = time.perf_counter()
    evs = rd.read_history() if events is None else events
    idx = build_index(evs)
    results = check_all(idx, ctx)
    verdict = run_verdict(results)
    context: dict[str, Any] = asdict(ctx) if ctx is not None else {}
    context["expect_marker"] = idx.expect
    history = {"events": len(evs), "ops": count_ops(evs), "t_end": round(idx.t_end, 3)}
    doc = results_document(rd, results, context=context, history=history)
    write_results(rd, doc)
    write_junit(rd, results, time.perf_counter() - t0)
    write_html(rd, idx, results, doc)
    return verdict, results


def render_run(rd: RunDir) -> tuple[str, list[CheckResult]]:
    """Re-render report.html and junit.xml from results.json, without re-judging."""
    doc, results = read_results(rd)
    write_junit(rd, results, 0.0)
    write_html(rd, build_index(rd.read_history()), results, doc)
    return run_verdict(results), results


__all__ = ["EXIT_CODES", "RunDir", "check_run", "render_run"]
