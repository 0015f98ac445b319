"""Each checker fails on a synthetic history with its violation (witnesses at the injected operation), passes on
the clean run, and says ``unknown`` when the run cannot decide (indeterminate ops, vacuous runs)."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest

from harness.checkers import CHECKERS, check_all, overall_verdict
from harness.checkers.model import CheckContext, CheckResult
from harness.checkers.synth import BUGS, SynthRun, generate_run

pytestmark = pytest.mark.unit

BUG_INVARIANT = {
    "overlap_writers": "1", "duplicate": "2", "lost_ack": "3", "lost_tx": "4", "offset_dup": "5", "order": "6",
    "seq_gap": "7", "watermark": "8", "two_ready": "9", "slow_recovery": "10", "ack_while_cut": "11",
    "p1_stuck": "10", "stale_read": "4", "rejected_executed": "3",
}


@cache
def run_with(*bugs: str, seed: int = 3) -> SynthRun:
    return generate_run(ops=4000, seed=seed, bugs=frozenset(bugs))


def by_id(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.invariant: r for r in results}


def test_every_bug_maps_to_an_invariant() -> None:
    assert set(BUG_INVARIANT) == set(BUGS)
    assert set(BUG_INVARIANT.values()) == set(CHECKERS)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_clean_run_passes_every_invariant(seed: int) -> None:
    results = check_all(run_with(seed=seed).events)
    bad = [(r.invariant, r.verdict, r.explanation) for r in results if r.verdict != "pass"]
    assert not bad
    assert overall_verdict([r.verdict for r in results]) == "pass"


def test_clean_run_exercises_indeterminate_submits() -> None:
    """The clean run must really contain info submits, some applied (completion seen), some not: otherwise the
    pass above would not show that they are handled honestly."""
    run = run_with()
    infos = [e for e in run.events if e.f == "submit" and e.type == "info"]
    completed = {e.value["submission_id"] for e in run.events if e.f == "completion"}
    applied = [e for e in infos if e.value["submission_id"] in completed]
    assert infos and applied and len(applied) < len(infos)


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_bug_fails_its_invariant_only(bug: str) -> None:
    run = run_with(bug)
    assert bug in run.truth, "the generator did not inject the bug"
    results = by_id(check_all(run.events))
    inv = BUG_INVARIANT[bug]
    assert results[inv].verdict == "fail", results[inv].explanation
    assert results[inv].witnesses
    others = {k: r.verdict for k, r in results.items() if k != inv and r.verdict == "fail"}
    assert not others
    assert overall_verdict([r.verdict for r in results.values()]) == "fail"


def _values(result: CheckResult) -> list[dict[str, Any]]:
    return [w["value"] for w in result.witnesses]


def test_witnesses_point_at_the_injected_operation() -> None:
    checks = {
        "lost_ack": lambda vs, tr: any(v.get("submission_id") == tr["submission_id"] for v in vs),
        "ack_while_cut": lambda vs, tr: any(v.get("submission_id") == tr["submission_id"] for v in vs),
        "duplicate": lambda vs, tr: all(v.get("command_id") == tr["command_id"] for v in vs),
        "lost_tx": lambda vs, tr: any(v.get("tx_id") == tr["tx_id"] for v in vs),
        "offset_dup": lambda vs, tr: any(v.get("offset") == tr["offset"] for v in vs),
        "order": lambda vs, tr: bool({v.get("tx_id") for v in vs} & tr["tx_ids"]),
        "seq_gap": lambda vs, tr: any(v.get("counter") == tr["counter"] for v in vs),
        "watermark": lambda vs, tr: any(v.get("counter") == tr["counter"] and v.get("member") == tr["member"]
                                        for v in vs),
        "overlap_writers": lambda vs, tr: all(v.get("node") == tr["node"] for v in vs),
        "two_ready": lambda vs, tr: any({"p1a", "p1b"} <= set(v.get("ready", [])) for v in vs),
        "stale_read": lambda vs, tr: any(v.get("offset") == tr["offset"] - 1 for v in vs)
        and any(v.get("offset") == tr["offset"] and v.get("status") == "OK" for v in vs),
        "p1_stuck": lambda vs, tr: not any(v.get("participant") == "p1" for v in vs),
        "rejected_executed": lambda vs, tr: any(v.get("submission_id") == tr["submission_id"]
                                                and v.get("status") == "NOT_SEQUENCED_TIMEOUT" for v in vs)
        and any(v.get("tx_id") == tr["tx_id"] and v.get("offset") is not None for v in vs),
    }
    for bug, ok in checks.items():
        run = run_with(bug)
        res = by_id(check_all(run.events))[BUG_INVARIANT[bug]]
        assert ok(_values(res), run.truth[bug]), (bug, res.witnesses)
    run = run_with("slow_recovery")
    res = by_id(check_all(run.events))["10"]
    assert any(w["f"] == "heal" and w["t"] == pytest.approx(run.truth["slow_recovery"]["heal_t"])
               for w in res.witnesses)
    assert res.metrics["ttr_s"] > res.metrics["recovery_bound_s"]


def test_one_participant_stuck_after_the_heal_fails_recovery_naming_it() -> None:
    """Recovery is per participant: p2 serving again does not hide that p1 never does."""
    res = by_id(check_all(run_with("p1_stuck").events))["10"]
    assert "p1" in res.explanation and "p2" not in res.explanation.split("bound")[0].replace("p1", "")
    assert res.metrics["ttr_s"] is None
    clean = by_id(check_all(run_with().events))["10"]
    assert set(clean.metrics["faults"][-1]["per_participant"]) == {"p1", "p2"}


def test_failover_within_bound_is_required_when_the_plan_asks() -> None:
    """``expect.failover_within_s``: p1 must serve again within that many seconds of the fault that hit it.
    The synthetic failover takes FAILOVER_S (3 s) plus the first command's round trip."""
    run = run_with()
    ok = by_id(check_all(run.events, CheckContext(expect={"failover": ["p1"], "failover_within_s": 10})))
    assert ok["10"].verdict == "pass" and ok["G2"].verdict == "pass"
    assert 3.0 <= ok["10"].metrics["failover_s"]["p1"] < 10
    tight = by_id(check_all(run.events, CheckContext(expect={"failover": ["p1"], "failover_within_s": 2})))
    assert tight["10"].verdict == "fail", tight["10"].explanation
    assert "p1 did not serve again within 2s of step 0" in tight["10"].explanation
    assert tight["10"].witnesses[0]["f"] == "link-timeout"
    # without the guard's pair the bound has nothing to measure: the ordinary recovery rule applies
    other = by_id(check_all(run.events, CheckContext(expect={"failover": ["p2"], "failover_within_s": 2})))
    assert other["10"].verdict == "pass"


def test_missing_completion_is_unknown_before_the_quiet_period() -> None:
    run = generate_run(ops=4000, seed=3, bugs=frozenset({"lost_ack"}), quiet_s=5.0)
    res = by_id(check_all(run.events))
    assert res["3"].verdict == "unknown"
    assert "quiet period" in res["3"].explanation


def test_missing_transaction_is_unknown_before_the_quiet_period() -> None:
    run = generate_run(ops=4000, seed=3, bugs=frozenset({"lost_tx"}), quiet_s=5.0)
    assert by_id(check_all(run.events))["4"].verdict == "unknown"


def test_truncated_after_heal_liveness_unknown() -> None:
    run = generate_run(ops=4000, seed=3, quiet_s=0.1)
    res = by_id(check_all(run.events))
    assert res["10"].verdict == "unknown"
    assert overall_verdict([r.verdict for r in res.values()]) == "unknown"


def test_fault_that_never_took_is_unknown_not_pass() -> None:
    run = generate_run(ops=4000, seed=3, fault_takes=False)
    res = by_id(check_all(run.events))
    assert res["G1"].verdict == "unknown"
    assert res["G1"].witnesses[0]["type"] == "fail"
    assert res["G2"].verdict == "unknown"  # the plan expected a failover of p1
    assert overall_verdict([r.verdict for r in res.values()]) == "unknown"


def test_expected_failover_missing_is_unknown() -> None:
    run = run_with()
    # same run, but the probe never saw p1b ready: the failover is not evidenced
    events = [e for e in run.events if not (e.f == "health" and e.value["services"]["p1b"]["ready"])]
    res = by_id(check_all(events))
    assert res["G2"].verdict == "unknown"
    assert "p1" in res["G2"].explanation


def test_unverifiable_guard_is_unknown() -> None:
    res = by_id(check_all(run_with().events, CheckContext(expect={"quorum_loss": True})))
    assert res["G2"].verdict == "unknown"


def test_no_sequencer_reads_is_unknown() -> None:
    run = generate_run(ops=4000, seed=3, seq_readers=False)
    res = by_id(check_all(run.events))
    assert res["7"].verdict == res["8"].verdict == "unknown"


def test_empty_history_is_unknown_everywhere() -> None:
    results = check_all([])
    assert {r.verdict for r in results} == {"unknown"}
    assert overall_verdict([r.verdict for r in results]) == "unknown"


def test_missing_evidence_is_unknown() -> None:
    """Neither the nodes' write epochs nor PostgreSQL samples: single writer cannot pass (tests/unit/checkers/
    test_pg_writers.py has the cases with one source)."""
    events = [e for e in run_with().events if e.f not in ("evidence", "pg_sample")]
    assert by_id(check_all(events))["1"].verdict == "unknown"


def test_context_overrides_the_expect_marker() -> None:
    run = run_with("slow_recovery")
    res = by_id(check_all(run.events, CheckContext(recovery_bound_s=3600.0)))
    assert res["10"].metrics["recovery_bound_s"] == 3600.0
    assert res["10"].verdict == "pass"


def test_recovery_metrics_per_fault() -> None:
    res = by_id(check_all(run_with().events))["10"]
    steps = [f["step"] for f in res.metrics["faults"]]
    assert steps == [0, 1]
    assert all(f["ttr_s"] is not None and f["ttr_s"] >= 0 for f in res.metrics["faults"])
