"""Hand-written histories for the honest treatment of ``info`` (indeterminate) submits."""

from __future__ import annotations

from typing import Any

import pytest

from harness.checkers.submissions import check_acknowledged_completes, check_exactly_once
from harness.history import Event

pytestmark = pytest.mark.unit


def ev(t: float, process: str, type_: str, f: str, **value: Any) -> Event:
    return Event(t=t, process=process, type=type_, f=f, value=value)  # type: ignore[arg-type]


def submit(t: float, sid: str, outcome: str, cmd: str = "c1", dt: float = 0.1, **extra: Any) -> list[Event]:
    v = {"participant": "p1", "command_id": cmd, "user": "u", "act_as": ["u"], "submission_id": sid, **extra}
    return [ev(t, "client-1", "invoke", "submit", **v), ev(t + dt, "client-1", outcome, "submit", **v)]


def completion(t: float, sid: str, status: str, cmd: str = "c1", offset: int = 1, coff: int = 1,
               tx: str | None = "tx1") -> Event:
    return ev(t, "completions-p1", "ok", "completion", participant="p1", command_id=cmd, user="u", act_as=["u"],
              submission_id=sid, status=status, offset=offset, completion_offset=coff, tx_id=tx)


def end(t: float) -> Event:
    return ev(t, "harness", "info", "phase", phase="end")


def test_info_submit_without_completion_is_never_lost() -> None:
    h = [*submit(0, "s1", "info", dt=2.0), *submit(3, "s2", "ok"), completion(3.2, "s2", "OK"), end(100)]
    r = check_acknowledged_completes(h)
    assert r.verdict == "pass"
    assert not r.witnesses


def test_acknowledged_submit_without_completion_is_lost_after_quiet_period() -> None:
    # the completion stream was read (subscribed) and the completion never came; a stream never read at all is
    # a harness gap (unknown): test_edge_rules.py
    h = [ev(0, "completions-p1", "info", "subscribe", participant="p1", from_offset=0, reason="start"),
         *submit(0, "s1", "ok"), end(100)]
    r = check_acknowledged_completes(h)
    assert r.verdict == "fail"
    assert r.witnesses[0]["value"]["submission_id"] == "s1"


def test_info_submit_applied_then_retry_duplicate_is_not_a_duplicate() -> None:
    """The timed-out first try was in fact applied; the retry is answered DUPLICATE_COMMAND: exactly once."""
    h = [*submit(0, "s1", "info", dt=2.0), completion(0.5, "s1", "OK"),
         *submit(2.5, "s2", "ok"), completion(2.7, "s2", "DUPLICATE_COMMAND", coff=2, tx=None), end(100)]
    assert check_exactly_once(h).verdict == "pass"
    assert check_acknowledged_completes(h).verdict == "pass"


def test_two_accepted_transactions_of_one_change_is_a_duplicate_even_after_info() -> None:
    h = [*submit(0, "s1", "info", dt=2.0), completion(0.5, "s1", "OK", tx="tx1"),
         *submit(2.5, "s2", "ok"), completion(2.7, "s2", "OK", offset=2, coff=2, tx="tx2"), end(100)]
    r = check_exactly_once(h)
    assert r.verdict == "fail"
    assert {w["value"]["tx_id"] for w in r.witnesses} == {"tx1", "tx2"}


def test_duplicate_with_wrong_offset_fails() -> None:
    h = [*submit(0, "s1", "ok"), completion(0.5, "s1", "OK", offset=7),
         *submit(1, "s2", "ok"), completion(1.2, "s2", "DUPLICATE_COMMAND", offset=9, coff=2, tx=None), end(100)]
    r = check_acknowledged_completes(h)
    assert r.verdict == "fail"
    assert r.witnesses[0]["value"]["submission_id"] == "s2"


def test_dedup_period_lets_a_late_resubmit_be_accepted() -> None:
    from harness.checkers.model import CheckContext

    h = [*submit(0, "s1", "ok"), completion(0.5, "s1", "OK", tx="tx1"),
         *submit(50, "s2", "ok"), completion(50.5, "s2", "OK", offset=2, coff=2, tx="tx2"), end(100)]
    h[1].value["record_time"] = 0
    for e in h:
        if e.f == "completion":
            e.value["record_time"] = int(e.t * 1e6)
    assert check_exactly_once(h, CheckContext(dedup_period_s=10)).verdict == "pass"
    assert check_exactly_once(h, CheckContext(dedup_period_s=100)).verdict == "fail"


def _fault(step: int, t_on: float, t_heal: float) -> list[Event]:
    v = {"step": step, "kind": "kill", "target": "p1a"}
    return [ev(t_on - 0.1, "nemesis", "invoke", "kill", **v), ev(t_on, "nemesis", "ok", "kill", **v, verified=True),
            ev(t_heal, "nemesis", "ok", "heal", step=step, kind="kill")]


def test_recovery_judged_after_an_intermediate_quiet_heal() -> None:
    """Step 0 heals at 10 s, the next fault starts at 100 s: nothing completed in between -> fail, even though
    the system recovered quickly after the last heal."""
    from harness.checkers.liveness import check_recovery

    ok_after_last = [*submit(130.5, "s9", "ok"), completion(130.8, "s9", "OK")]
    tried = submit(12, "s0", "fail")  # a command was tried after the first heal, and failed
    h = sorted([*_fault(0, 5, 10), *_fault(1, 100, 130), *tried, *ok_after_last, end(200)], key=lambda e: e.t)
    r = check_recovery(h)
    assert r.verdict == "fail"
    assert "step 0" in r.explanation
    early = [*submit(13, "s1", "ok"), completion(13.5, "s1", "OK", coff=2)]
    assert check_recovery(sorted(h + early, key=lambda e: e.t)).verdict == "pass"
    # the next fault comes 5 s after the first heal: no quiet window, step 0 not judged
    h2 = sorted([*_fault(0, 5, 10), *_fault(1, 15, 130), *tried, *ok_after_last, end(200)], key=lambda e: e.t)
    assert check_recovery(h2).verdict == "pass"
    # no command at all between the heal and the next fault: step 0 is not judged either
    h3 = sorted([*_fault(0, 5, 10), *_fault(1, 100, 130), *ok_after_last, end(200)], key=lambda e: e.t)
    assert check_recovery(h3).verdict == "pass"


def test_executor_guard_shape_and_skipped_steps() -> None:
    """The plan executor always writes ``{"failover": [], "primary_change": false, ...}`` and an ``info`` for a
    skipped conditional step: empty guards expect nothing; a skipped step is a fault that never took effect."""
    from harness.checkers.liveness import check_expected_failover, check_faults_took_effect

    marker = ev(0, "harness", "info", "expect", failover=[], primary_change=False, recovery_bound_s=15)
    assert check_expected_failover([marker]) is None
    want = ev(0, "harness", "info", "expect", failover=[], primary_change=True, recovery_bound_s=15)
    prims = [ev(i, "probe", "ok", "pg_primary", primary="pg1") for i in range(3)]
    assert check_expected_failover([want, *prims]).verdict == "unknown"
    changed = [*prims, ev(4, "probe", "ok", "pg_primary", primary="pg2")]
    assert check_expected_failover([want, *changed]).verdict == "pass"
    skipped = ev(5, "nemesis", "info", "kill", step=2, kind="kill", target="p1a",
                 skipped="condition failover(p1) not met within 30 s")
    g1 = check_faults_took_effect([*_fault(0, 1, 2), skipped])
    assert g1.verdict == "unknown"
    assert "skipped" in g1.explanation and g1.witnesses[0]["t"] == 5


def test_recovery_without_any_command_after_the_heal_is_unknown() -> None:
    from harness.checkers.liveness import check_recovery

    h = [*_fault(0, 5, 10), end(100)]
    r = check_recovery(h)
    assert r.verdict == "unknown" and "no command was submitted" in r.explanation
    tried = sorted([*h, *submit(20, "s1", "fail")], key=lambda e: e.t)
    assert check_recovery(tried).verdict == "fail"


def test_a_settled_early_end_is_judgeable() -> None:
    """A quiet period that ended early because the workload settled (end marker ``settled``) is judged like one
    that waited the whole bound; without the marker the same short history is unknown for what is pending."""
    h = [*_fault(0, 5, 10), *submit(11, "s1", "ok"), completion(11.5, "s1", "OK"),
         *submit(20, "s2", "ok")]   # s2: acknowledged in the last moments, no completion yet
    plain = sorted([*h, end(21)], key=lambda e: e.t)
    settled = sorted([*h, ev(21, "harness", "info", "phase", phase="end", settled=True)], key=lambda e: e.t)
    assert check_acknowledged_completes(plain).verdict == "unknown"
    r = check_acknowledged_completes(settled)
    assert r.verdict == "pass" and "not judged" in r.explanation
