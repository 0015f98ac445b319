"""Invariant 3's rule that a definitely rejected submission is never executed (issue 12, item 6).

A completion NOT_SEQUENCED_TIMEOUT, LOCAL_VERDICT_TIMEOUT or REJECTED tells the client "not executed"; a
transaction of that change ID that no OK completion accounts for means it was executed all the same (e.g. a send
sequenced after its max-sequencing-time). Hand-written histories: the violation fails naming the change ID, the
rejected submission, its completion, the transaction and its offset; legitimate neighbours (a retry accepted
after the rejection, an ``info`` submit that was in fact applied) pass; a transaction seen too late to judge is
not counted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.checkers import check_all
from harness.checkers.model import CheckContext
from harness.checkers.submissions import check_acknowledged_completes
from harness.checkers.synth import generate_run
from harness.history import Event, write_history

pytestmark = pytest.mark.unit

DEFINITE = ["NOT_SEQUENCED_TIMEOUT", "LOCAL_VERDICT_TIMEOUT", "REJECTED"]


def ev(t: float, process: str, type_: str, f: str, **value: Any) -> Event:
    return Event(t=t, process=process, type=type_, f=f, value=value)  # type: ignore[arg-type]


def submit(t: float, sid: str, outcome: str = "ok", cmd: str = "c1", dt: float = 0.1) -> list[Event]:
    v = {"participant": "p1", "command_id": cmd, "user": "u", "act_as": ["alice"], "submission_id": sid,
         "informees": ["p1", "p2"]}
    return [ev(t, "client-1", "invoke", "submit", **v), ev(t + dt, "client-1", outcome, "submit", **v)]


def completion(t: float, sid: str, status: str, coff: int, cmd: str = "c1", **extra: Any) -> Event:
    return ev(t, "completions-p1", "ok", "completion", participant="p1", command_id=cmd, user="u",
              act_as=["alice"], submission_id=sid, status=status, completion_offset=coff,
              record_time=int(t * 1e6), **extra)


def transaction(t: float, part: str, off: int, tx: str, cmd: str = "c1") -> Event:
    return ev(t, f"transactions-{part}", "ok", "transaction", participant=part, offset=off, tx_id=tx,
              command_id=cmd, user="u", act_as=["alice"], submitter="p1", informees=["p1", "p2"],
              record_time=int(t * 1e6), payload_hash="h")


def streams(t: float = 0.0) -> list[Event]:
    return [ev(t, "completions-p1", "info", "subscribe", participant="p1", from_offset=0, reason="start"),
            ev(t, "transactions-p1", "info", "subscribe", participant="p1", from_offset=0, reason="start"),
            ev(t, "transactions-p2", "info", "subscribe", participant="p2", from_offset=0, reason="start")]


def end(t: float) -> Event:
    return ev(t, "harness", "info", "phase", phase="end")


def violating(status: str = "NOT_SEQUENCED_TIMEOUT", t_tx: float = 11.0, t_end: float = 100.0) -> list[Event]:
    """s1 acknowledged, answered ``status``, then its request is sequenced late and executed on p1 and p2."""
    return [*streams(), *submit(0, "s1"), completion(10.0, "s1", status, 1),
            transaction(t_tx, "p1", 1, "r1"), transaction(t_tx + 0.01, "p2", 1, "r1"), end(t_end)]


@pytest.mark.parametrize("status", DEFINITE)
def test_a_rejected_submission_that_is_executed_fails_naming_the_witness(status: str) -> None:
    r = check_acknowledged_completes(violating(status))
    assert r.verdict == "fail", r.explanation
    assert "definitely rejected submission executed anyway" in r.explanation
    assert r.metrics["rejected_executed"] == 1 and r.metrics["definite_rejections"] == 1
    rej, tx = r.witnesses[0], r.witnesses[1]
    assert rej["f"] == "completion" and rej["value"]["status"] == status and rej["value"]["submission_id"] == "s1"
    assert rej["value"]["completion_offset"] == 1
    assert tx["f"] == "transaction" and tx["value"]["tx_id"] == "r1" and tx["value"]["offset"] == 1
    assert tx["value"]["participant"] == "p1"   # the submitter's own copy is shown
    change = "change (participant p1, user u, act_as ['alice'], command 'c1')"
    assert rej["note"].startswith(change) and "'s1'" in rej["note"] and status in rej["note"]
    assert tx["note"].startswith(change) and "'r1'" in tx["note"] and "offset 1" in tx["note"]


def test_the_same_history_without_the_late_transaction_passes() -> None:
    h = [e for e in violating() if e.f != "transaction"]
    r = check_acknowledged_completes(h)
    assert r.verdict == "pass", r.explanation
    assert "1 definite rejection, none executed" in r.explanation


def test_a_retry_accepted_after_the_rejection_is_not_the_rejected_one() -> None:
    """A definite rejection frees the change ID: the application retries it (new submission id) and it is
    accepted. Its transaction is accounted for by its own OK completion."""
    h = [*streams(), *submit(0, "s1"), completion(10.0, "s1", "NOT_SEQUENCED_TIMEOUT", 1),
         *submit(10.5, "s2"), completion(10.8, "s2", "OK", 2, offset=1, tx_id="r2"),
         transaction(10.8, "p1", 1, "r2"), transaction(10.81, "p2", 1, "r2"), end(100)]
    r = check_acknowledged_completes(h)
    assert r.verdict == "pass", r.explanation
    assert r.metrics["rejected_executed"] == 0


def test_an_info_submit_that_was_applied_is_not_counted_as_the_rejected_one() -> None:
    """The first try timed out (``info``) but was recorded and executed: its OK completion accounts for the
    transaction. The second try (acknowledged) is then rejected: nothing was executed for it."""
    h = [*streams(), *submit(0, "s1", "info", dt=2.0), completion(1.0, "s1", "OK", 1, offset=1, tx_id="r1"),
         transaction(1.0, "p1", 1, "r1"), *submit(2.5, "s2"), completion(2.7, "s2", "REJECTED", 2), end(100)]
    r = check_acknowledged_completes(h)
    assert r.verdict == "pass", r.explanation


def test_indeterminate_submits_alone_never_make_a_rejection_or_an_execution() -> None:
    """Only observed completions and transactions count: an ``info`` submit is neither a rejection nor an
    execution, so a transaction of its change with no completion at all is not this rule's business."""
    h = [*streams(), *submit(0, "s1", "info", dt=2.0), *submit(3, "s2", "info", dt=2.0),
         transaction(6.0, "p1", 1, "r1"), *submit(7, "s3", cmd="c2"),
         completion(7.2, "s3", "OK", 1, cmd="c2", offset=2, tx_id="r3"), transaction(7.2, "p1", 2, "r3", cmd="c2"),
         end(100)]
    r = check_acknowledged_completes(h)
    assert r.verdict == "pass", r.explanation
    assert r.metrics["definite_rejections"] == 0 and r.metrics["rejected_executed"] == 0


def test_a_rejection_of_an_info_submit_still_counts_when_its_request_is_executed() -> None:
    """The node said "definitely rejected" about a submission whose submit timed out: the completion is an
    observation like any other, and its execution afterwards is a violation."""
    h = [*streams(), *submit(0, "s1", "info", dt=2.0), *submit(2.5, "s2", "fail"),
         completion(10.0, "s1", "NOT_SEQUENCED_TIMEOUT", 1), transaction(11.0, "p1", 1, "r1"), end(100)]
    r = check_acknowledged_completes(h)
    assert r.verdict == "fail", r.explanation
    assert r.witnesses[0]["value"]["submission_id"] == "s1"


def test_only_the_other_informees_stream_shows_the_execution() -> None:
    h = [e for e in violating() if not (e.f == "transaction" and e.value["participant"] == "p1")]
    r = check_acknowledged_completes(h)
    assert r.verdict == "fail", r.explanation
    assert r.witnesses[1]["value"]["participant"] == "p2"


def test_a_duplicate_answer_is_not_a_definite_rejection() -> None:
    h = [*streams(), *submit(0, "s1"), completion(0.5, "s1", "OK", 1, offset=1, tx_id="r1"),
         transaction(0.5, "p1", 1, "r1"), *submit(1, "s2"),
         completion(1.2, "s2", "DUPLICATE_COMMAND", 2, offset=1, existing_submission_id="s1"), end(100)]
    r = check_acknowledged_completes(h)
    assert r.verdict == "pass", r.explanation
    assert r.metrics["definite_rejections"] == 0


def test_a_transaction_seen_at_the_very_end_is_not_judged() -> None:
    """Its OK completion (committed with it) may simply not have been read yet: within the grace before the end
    the transaction is not judged, and the run passes saying so."""
    r = check_acknowledged_completes(violating(t_tx=95.0))
    assert r.verdict == "pass", r.explanation
    assert r.metrics["rejected_executed_not_judged"] == 1 and "not judged" in r.explanation
    assert check_acknowledged_completes(violating(t_tx=95.0), CheckContext(completion_grace_s=1.0)).verdict == "fail"


def test_a_late_transaction_is_judged_once_the_submitters_completions_were_read_past_it() -> None:
    """Seen live (bug switch sequence_late_sends, plan sequencer-link-squeeze): the late requests were executed
    right after the last heal and the quiet period ended 10 s later, so all 5 transactions fell within the 30 s
    grace and the bug passed as "not judged". The grace waits for an OK completion that may not have been read
    yet; once the submitter's completion stream has been read past the transaction's record time, the OK
    completion committed with it (same record time) would have been read: the transaction is judged."""
    h = violating(t_tx=95.0)
    h.insert(-1, completion(96.0, "s9", "OK", 2, cmd="c9", offset=2, tx_id="r9"))
    r = check_acknowledged_completes(h)
    assert r.verdict == "fail", r.explanation
    assert r.metrics["rejected_executed"] == 1
    # not read that far: still not judged
    r = check_acknowledged_completes(violating(t_tx=95.0))
    assert r.verdict == "pass" and r.metrics["rejected_executed_not_judged"] == 1


def test_an_unhealed_fault_makes_an_unaccounted_transaction_unknown() -> None:
    fault = [ev(5.0, "nemesis", "invoke", "kill", step=0, kind="kill", target="seq1"),
             ev(5.1, "nemesis", "ok", "kill", step=0, kind="kill", target="seq1", resolved=["seq1"])]
    r = check_acknowledged_completes(sorted([*violating(), *fault], key=lambda e: e.t))
    assert r.verdict == "unknown", r.explanation
    assert "never healed" in r.explanation


def test_the_rule_runs_in_check_all_and_in_offline_check(tmp_path: Path) -> None:
    """``check_all`` (what ``ha-chaos check`` re-judges a stored run with) applies the rule: a stored history
    with the violation exits 1 with invariant 3 failed."""
    from harness.cli import main
    from harness.report.rundir import RunDir

    run = generate_run(ops=3000, seed=5, bugs=frozenset({"rejected_executed"}))
    results = {r.invariant: r for r in check_all(run.events)}
    assert results["3"].verdict == "fail" and results["3"].metrics["rejected_executed"] == 1
    rd = RunDir.create(tmp_path / "runs", "rejected-executed")
    write_history(rd.history_path, run.events)
    assert main(["check", str(rd.path)]) == 1
    doc = rd.results_path.read_text()
    assert run.truth["rejected_executed"]["tx_id"] in doc and "executed anyway" in doc


def test_clean_synthetic_runs_contain_rejections_and_retries_after_them() -> None:
    """The clean run must really contain definite rejections, some retried with the same command id and then
    accepted: otherwise the clean pass would not show that the rule leaves them alone."""
    run = generate_run(ops=4000, seed=3)
    comps = [e.value for e in run.events if e.f == "completion"]
    rejected = {(c["participant"], c["command_id"]) for c in comps if c["status"] in DEFINITE}
    accepted = {(c["participant"], c["command_id"]) for c in comps if c["status"] == "OK"}
    assert {c["status"] for c in comps if c["status"] in DEFINITE} == set(DEFINITE)
    assert rejected & accepted and rejected - accepted
    r = check_acknowledged_completes(run.events)
    assert r.verdict == "pass" and r.metrics["definite_rejections"] == sum(c["status"] in DEFINITE for c in comps)


def test_a_submit_refused_at_once_that_is_executed_anyway_fails() -> None:
    """A ``fail`` submit is a promise: not accepted (retryable UNAVAILABLE, or a definite refusal). A node that
    times out its own write and answers a refusal while the write goes on and commits breaks it: the submission's
    OK completion and transaction follow. Issue 15: a realistic bug class no bug switch covered."""
    h = [*streams(), *submit(0, "s1", "fail"), completion(1.0, "s1", "OK", 1, offset=1, tx_id="r1"),
         transaction(1.0, "p1", 1, "r1"), transaction(1.01, "p2", 1, "r1"), end(100)]
    r = check_acknowledged_completes(h)
    assert r.verdict == "fail", r.explanation
    assert "refused" in r.explanation and r.metrics["refused_executed"] == 1
    assert {w["f"] for w in r.witnesses} == {"submit", "completion"}


def test_a_refused_submit_that_gets_a_rejection_completion_was_processed_all_the_same() -> None:
    h = [*streams(), *submit(0, "s1", "fail"), completion(5.0, "s1", "LOCAL_VERDICT_TIMEOUT", 1), end(100)]
    r = check_acknowledged_completes(h)
    assert r.verdict == "fail" and r.metrics["refused_executed"] == 1, r.explanation


def test_a_refused_submit_whose_retry_is_executed_passes() -> None:
    h = [*streams(), *submit(0, "s1", "fail"), *submit(0.5, "s2"),
         completion(1.0, "s2", "OK", 1, offset=1, tx_id="r2"), transaction(1.0, "p1", 1, "r2"),
         transaction(1.01, "p2", 1, "r2"), end(100)]
    r = check_acknowledged_completes(h)
    assert r.verdict == "pass", r.explanation
    assert r.metrics["refused_executed"] == 0
