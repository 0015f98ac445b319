"""Checkers: pure functions from a history to verdicts with witnesses (no Docker, no I/O).

``check_all(events, ctx)`` runs the 11 invariants of canton-ha-model.md plus the vacuity guards over one shared
index of the history; ``overall_verdict`` folds them (fail > unknown > pass).
"""

from __future__ import annotations

from collections.abc import Callable

from harness.checkers.index import HistoryIndex, build_index
from harness.checkers.liveness import check_expected_failover, check_faults_took_effect, check_recovery
from harness.checkers.model import INVARIANTS, CheckContext, CheckResult, overall_verdict, result, run_verdict
from harness.checkers.roles import check_health, check_outage_honesty, check_single_writer
from harness.checkers.sequencer import check_sequencer_stream, check_watermark
from harness.checkers.streams import check_offsets, check_order
from harness.checkers.submissions import check_acknowledged_completes, check_exactly_once, check_no_lost_success
from harness.history import Event

Checker = Callable[[list[Event] | HistoryIndex, CheckContext | None], CheckResult]

#: Invariant id -> checker, in the order of canton-ha-model.md.
CHECKERS: dict[str, Checker] = {
    "1": check_single_writer,
    "2": check_exactly_once,
    "3": check_acknowledged_completes,
    "4": check_no_lost_success,
    "5": check_offsets,
    "6": check_order,
    "7": check_sequencer_stream,
    "8": check_watermark,
    "9": check_health,
    "10": check_recovery,
    "11": check_outage_honesty,
}


def check_all(events: list[Event] | HistoryIndex, ctx: CheckContext | None = None) -> list[CheckResult]:
    """Every invariant, then the guards that apply. A checker that crashes on odd input yields ``unknown``
    with the reason rather than aborting the run: one malformed event must not hide the other verdicts."""
    idx = events if isinstance(events, HistoryIndex) else build_index(list(events))
    out: list[CheckResult] = []
    for inv, fn in CHECKERS.items():
        try:
            out.append(fn(idx, ctx))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            out.append(result(inv, "unknown", f"checker could not read the history: {type(exc).__name__}: {exc}"))
    for guard in (check_faults_took_effect, check_expected_failover):
        g = guard(idx, ctx)
        if g is not None:
            out.append(g)
    return out


__all__ = ["CHECKERS", "INVARIANTS", "CheckContext", "CheckResult", "build_index", "check_all",
           "overall_verdict", "run_verdict"]
