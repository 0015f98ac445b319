"""Dedup decision for a submission that finds its own record (an earlier attempt committed, the reply was lost)."""

from __future__ import annotations

import pytest

from harness.sut.participant.dedup import DedupEntry, decide

pytestmark = pytest.mark.unit

DAY = 86_400_000_000


def test_a_submission_finding_its_own_record_is_recorded_not_in_flight() -> None:
    own = DedupEntry("inflight", "s1", request_id="r1")
    assert decide(own, 5, DAY, "r1") == "recorded"
    # the same submission id under another request (a client reusing it) is somebody else's record
    assert decide(own, 5, DAY, "r2") == "in_flight"
    assert decide(own, 5, DAY) == "in_flight"      # no request id given: the decision as before
    accepted = DedupEntry("accepted", "s1", tx_offset=7, accepted_at_us=1_000, request_id="r1")
    assert decide(accepted, 1_000 + DAY, DAY, "r2") == "duplicate"
    assert decide(accepted, 1_000 + DAY, DAY, "r1") == "recorded"
