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
