"""Invariant 9 during a database outage: the active is not ready but still serves; that is not a role mismatch.
A passive serving while its active is ready still is."""

from __future__ import annotations

import pytest

from harness.checkers.roles import check_health, check_outage_honesty
from harness.history import Event

pytestmark = pytest.mark.unit


def _samples(p1a: dict, p1b: dict, n: int = 4) -> list[Event]:
    return [Event(t=i * 0.25, process="probe", type="ok", f="health",
                  value={"services": {"p1a": p1a, "p1b": p1b}}) for i in range(n)]


def test_active_with_failing_storage_is_not_a_mismatch() -> None:
    evs = _samples({"ready": False, "live": True, "api": True}, {"ready": False, "live": True, "api": False})
    assert check_health(evs).verdict == "pass"


def test_passive_serving_while_the_active_is_ready_fails() -> None:
    evs = _samples({"ready": True, "live": True, "api": True}, {"ready": False, "live": True, "api": True})
    res = check_health(evs)
    assert res.verdict == "fail"
    assert "p1b" in res.witnesses[0]["note"]


def test_ready_but_not_serving_fails() -> None:
    evs = _samples({"ready": True, "live": True, "api": False}, {"ready": False, "live": True, "api": False})
    assert check_health(evs).verdict == "fail"


def _cut_run(cut: list[str], submit_to: str) -> list[Event]:
    step = {"step": 0, "kind": "toxic", "target": "db_link(any(sequencer))"}
    return [Event(t=1.0, process="nemesis", type="invoke", f="toxic", value=step),
            Event(t=1.1, process="nemesis", type="ok", f="toxic", value={**step, "resolved": [f"{c}-db" for c in cut],
                                                                         "cuts_db": cut}),
            Event(t=2.0, process="client-1", type="invoke", f="submit", value={"participant": submit_to}),
            Event(t=2.1, process="client-1", type="fail", f="submit", value={"participant": submit_to}),
            Event(t=5.0, process="nemesis", type="invoke", f="heal", value={"step": 0}),
            Event(t=5.1, process="nemesis", type="ok", f="heal", value={"step": 0})]


def test_outage_honesty_is_not_applicable_when_only_a_sequencer_lost_its_db() -> None:
    res = check_outage_honesty(_cut_run(["seq1"], "p1"))
    assert res.verdict == "unknown" and res.metrics.get("applicable") is False


def test_outage_honesty_stays_unknown_when_a_cut_participant_got_no_submit() -> None:
    late = [Event(t=6.0, process="client-2", type="invoke", f="submit", value={"participant": "p2"}),
            Event(t=6.1, process="client-2", type="ok", f="submit", value={"participant": "p2", "replica": "p2a"})]
    res = check_outage_honesty(_cut_run(["p2a"], "p1") + late)   # p2 takes submits, just none during the cut
    assert res.verdict == "unknown" and res.metrics.get("applicable") is not False


def _blackhole_with_completion(record_after_cut: bool) -> list[Event]:
    step = {"step": 0, "kind": "toxic", "target": "db_link(active(p1))"}
    wall0 = "2026-11-22T07:00:00+00:00"     # t = 0
    cut_wall_us = 1_795_330_800_000_000 + 1_100_000    # 2026-11-22T07:00:01.1 in microseconds
    rt = cut_wall_us + (500_000 if record_after_cut else -500_000)
    return [Event(t=0.0, process="harness", type="info", f="start", wall=wall0),
            Event(t=1.0, process="nemesis", type="invoke", f="toxic", value=step, wall="2026-11-22T07:00:01+00:00"),
            Event(t=1.1, process="nemesis", type="ok", f="toxic",
                  value={**step, "resolved": ["p1a-db"], "cuts_db": ["p1a"]}, wall="2026-11-22T07:00:01.1+00:00"),
            Event(t=2.0, process="client-1", type="invoke", f="submit", value={"participant": "p1"}),
            Event(t=2.1, process="client-1", type="info", f="submit", value={"participant": "p1"}),
            Event(t=2.5, process="completions-p1", type="ok", f="completion",
                  value={"participant": "p1", "replica": "p1a", "status": "OK", "command_id": "c1",
                         "record_time": rt, "completion_offset": 7}),
            Event(t=9.0, process="nemesis", type="invoke", f="heal", value={"step": 0}),
            Event(t=9.1, process="nemesis", type="ok", f="heal", value={"step": 0})]


def test_ok_completion_of_a_transaction_sequenced_after_the_cut_fails_outage_honesty() -> None:
    res = check_outage_honesty(_blackhole_with_completion(record_after_cut=True))
    assert res.verdict == "fail" and "OK completion" in res.explanation
    assert any("cannot be durable" in w["note"] for w in res.witnesses)


def test_ok_completion_committed_before_the_cut_and_streamed_late_is_fine() -> None:
    assert check_outage_honesty(_blackhole_with_completion(record_after_cut=False)).verdict == "pass"
