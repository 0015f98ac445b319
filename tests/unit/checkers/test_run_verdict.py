"""The run verdict ignores invariants the plan never exercised, and nothing else."""

from __future__ import annotations

import pytest

from harness.checkers.model import result, run_verdict

pytestmark = pytest.mark.unit


def test_not_applicable_unknown_does_not_make_the_run_unknown() -> None:
    rs = [result("1", "pass", "ok"), result("11", "unknown", "no DB cut", metrics={"applicable": False})]
    assert run_verdict(rs) == "pass"


def test_a_real_unknown_still_counts() -> None:
    rs = [result("1", "pass", "ok"), result("3", "unknown", "indeterminate submits")]
    assert run_verdict(rs) == "unknown"


def test_fail_outranks_everything() -> None:
    rs = [result("2", "fail", "dup"), result("11", "unknown", "n/a", metrics={"applicable": False})]
    assert run_verdict(rs) == "fail"


def test_order_is_not_applicable_without_cross_participant_commands() -> None:
    """Invariant 6 needs transactions shared by two participants: a workload that submitted none cannot exercise
    it (not applicable); one that did but saw none shared stays a real unknown."""
    from harness.checkers.streams import check_order
    from harness.history import Event

    def submit(t: float, informees: list[str]) -> Event:
        return Event(t=t, process="client-0", type="invoke", f="submit",  # type: ignore[arg-type]
                     value={"participant": "p1", "submission_id": f"s{t}", "informees": informees})

    def tx(t: float, part: str, tx_id: str) -> Event:
        return Event(t=t, process=f"transactions-{part}", type="ok", f="transaction",  # type: ignore[arg-type]
                     value={"participant": part, "offset": int(t), "tx_id": tx_id, "record_time": int(t)})

    alone = check_order([submit(1, ["p1"]), tx(2, "p1", "a"), tx(3, "p2", "b")])
    assert alone.verdict == "unknown" and alone.metrics["applicable"] is False
    assert run_verdict([result("1", "pass", "ok"), alone]) == "pass"
    crossed = check_order([submit(1, ["p1", "p2"]), tx(2, "p1", "a"), tx(3, "p2", "b")])
    assert crossed.verdict == "unknown" and run_verdict([crossed]) == "unknown"
