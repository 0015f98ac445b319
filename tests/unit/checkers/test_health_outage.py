"""Invariant 9 during a database outage: the active is not ready but still serves; that is not a role mismatch.
A passive serving while its active is ready still is."""

from __future__ import annotations

import pytest

from harness.checkers.roles import check_health
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
