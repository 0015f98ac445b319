"""The workload's settling condition, which lets a quiet period end early (no Docker)."""

from __future__ import annotations

import pytest

from harness.workload.runner import Progress

pytestmark = pytest.mark.unit


def ok(sid: str, part: str, tx: str | None = None, status: str = "OK") -> dict:
    return {"submission_id": sid, "participant": part, "status": status, "tx_id": tx}


def test_settles_only_with_fresh_oks_everywhere_no_outstanding_ack_and_every_tx_delivered() -> None:
    pr = Progress()
    parts = ["p1", "p2"]
    heal = 10.0
    pr.acknowledged("old", 5.0, "p1")                 # acknowledged before the heal, still outstanding
    pr.acknowledged("f1", 11.0, "p1")
    pr.completed(ok("f1", "p1", "tx1"), ["p1", "p2"])
    assert not pr.settled(heal, parts)                 # p2 has no fresh OK, "old" outstanding, tx1 not streamed
    pr.acknowledged("f2", 12.0, "p2")
    pr.completed(ok("f2", "p2", "tx2"), ["p2"])
    pr.transaction("p1", "tx1")
    pr.transaction("p2", "tx2")
    assert not pr.settled(heal, parts)                 # tx1 still missing from p2's stream; "old" outstanding
    pr.transaction("p2", "tx1")
    assert not pr.settled(heal, parts)                 # "old" outstanding
    pr.completed(ok("old", "p1", status="NOT_SEQUENCED_TIMEOUT"), ["p1"])
    assert pr.settled(heal, parts)
    pr.acknowledged("new", 13.0, "p1")                 # acknowledged after the heal: in flight is fine
    assert pr.settled(heal, parts)
    assert not pr.settled(12.5, parts)                 # no OK of a command invoked at/after 12.5 on p1


def test_a_completion_that_overtakes_its_ack_and_a_tx_seen_before_its_completion() -> None:
    pr = Progress()
    pr.transaction("p1", "tx1")                        # the stream was faster than the completion
    pr.completed(ok("s1", "p1", "tx1"), ["p1"])        # ...and than the submit's answer
    pr.acknowledged("s1", 20.0, "p1")
    assert not pr.settled(19.0, ["p1"])                # the OK arrived before the ack: not counted as fresh
    pr.acknowledged("s2", 21.0, "p1")
    pr.completed(ok("s2", "p1", "tx2"), ["p1"])
    pr.transaction("p1", "tx2")
    assert pr.settled(19.0, ["p1"])
