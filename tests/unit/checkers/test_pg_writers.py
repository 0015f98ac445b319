"""Invariant 1 on PostgreSQL samples (``pg_sample``): the rules of harness/checkers/pgwriters.py, the choice of
evidence (``CheckContext.evidence``, the ``evidence_sources`` marker), and unknown without evidence."""

from __future__ import annotations

from typing import Any

import pytest

from harness.checkers import CheckContext, check_all
from harness.checkers.pgwriters import judge_pg_samples
from harness.checkers.roles import check_single_writer
from harness.checkers.synth import generate, generate_run
from harness.history import Event
from harness.workload.pgsampler import sample_value

pytestmark = pytest.mark.unit

PG = CheckContext(evidence=["pg"])


# --- whole synthetic runs -----------------------------------------------------------------------------------
def test_a_clean_run_passes_on_postgres_samples_alone() -> None:
    events = generate(ops=3000, node_evidence=False)
    r = check_single_writer(events)
    assert r.verdict == "pass", r.explanation
    assert "PostgreSQL samples" in r.explanation and "/admin/evidence" not in r.explanation
    assert r.metrics["evidence"] == ["pg"] and r.metrics["pg_writers_seen"] == {"p1": ["p1a", "p1b"], "p2": ["p2a"]}


def test_overlapping_writers_fail_on_postgres_samples_alone_with_a_witness() -> None:
    """A no_fencing-like run (p1b writes while p1a still does) without any node evidence: the samples alone
    fail the invariant, and the witness names the sample and both replicas' sessions."""
    run = generate_run(ops=3000, bugs={"overlap_writers"}, node_evidence=False)
    r = check_single_writer(run.events)
    assert r.verdict == "fail", r.explanation
    assert "PostgreSQL samples" in r.explanation and r.metrics["evidence"] == ["pg"]
    w = r.witnesses[0]
    assert w["f"] == "pg_sample" and w["value"]["node"] == "p1"
    assert {s["replica"] for s in w["value"]["sessions"]} == {"p1a", "p1b"}
    t_cut = run.fault_window[0]
    assert t_cut - 1.0 <= w["t"] <= t_cut, "the overlap starts when p1b starts writing, before p1a's cut"
    assert check_all(run.events)[0].verdict == "fail"


def test_node_evidence_switched_off_judges_on_the_samples_only() -> None:
    """The same history judged with and without the node evidence: with ``evidence=["pg"]`` the node's epochs
    are not used (the explanation says so), the samples alone decide."""
    run = generate_run(ops=3000, bugs={"overlap_writers"})
    both = check_single_writer(run.events)
    assert both.verdict == "fail" and both.metrics["evidence"] == ["node", "pg"]
    pg_only = check_single_writer(run.events, PG)
    assert pg_only.verdict == "fail" and pg_only.metrics["evidence"] == ["pg"]
    assert "nodes' evidence" not in pg_only.explanation
    clean = generate(ops=3000, pg_samples=False)
    off = check_single_writer(clean, PG)
    assert off.verdict == "unknown"
    assert "switched off" in off.explanation and "no PostgreSQL samples" in off.explanation


def test_the_history_marker_chooses_the_evidence_and_the_context_wins() -> None:
    events = generate(ops=3000, pg_samples=False)
    marker = Event(t=0.0, process="harness", type="info", f="evidence_sources", value={"sources": ["pg"]})
    assert check_single_writer([marker, *events]).verdict == "unknown"
    assert check_single_writer([marker, *events], CheckContext(evidence=["node", "pg"])).verdict == "pass"


def test_no_evidence_at_all_is_unknown_with_the_reason() -> None:
    r = check_single_writer(generate(ops=3000, node_evidence=False, pg_samples=False))
    assert r.verdict == "unknown"
    assert "no node write epochs" in r.explanation and "no PostgreSQL samples" in r.explanation


def test_an_unknown_evidence_source_is_an_error_not_a_pass() -> None:
    res = check_all(generate(ops=3000), CheckContext(evidence=["logs"]))[0]
    assert res.verdict == "unknown" and "logs" in res.explanation


# --- the rules on hand-made samples -------------------------------------------------------------------------
def sample(t: float, p1a: list[dict[str, Any]], p1b: list[dict[str, Any]]) -> Event:
    return Event(t=t, process="pgsampler", type="ok", f="pg_sample",
                 value={"server": "10.0.0.5", "db_time": int(t * 1e6), "nodes": {"p1": {"p1a": p1a, "p1b": p1b}}})


def s(pid: int, xid: int | None = None, start: int = 1) -> dict[str, Any]:
    out: dict[str, Any] = {"pid": pid, "start": start, "state": "active" if xid else "idle"}
    if xid:
        out["xid"] = str(xid)
    return out


def test_a_correct_takeover_passes_while_the_old_write_sessions_linger() -> None:
    """The old active's write session, even idle in a write transaction, stays while the new active's lock
    session waits for the exclusive writers lock: the new active has no write session yet, no violation."""
    samples = [sample(0.0, [s(10, 100), s(11)], [s(20)]),
               sample(0.25, [s(10, 101), s(11)], [s(20)]),      # p1a's lock lost; its writers still there
               sample(0.5, [s(10, 101)], [s(20)]),
               sample(0.75, [], [s(20), s(21, 102)]),            # p1a's sessions gone: p1b writes
               sample(1.0, [s(30)], [s(20), s(21, 103), s(22)])]
    r = judge_pg_samples(samples)
    assert r.violations == 0 and r.writers["p1"] == {"p1a", "p1b"}
    assert check_single_writer(samples).verdict == "pass"


def test_two_write_transactions_in_one_sample_fail() -> None:
    samples = [sample(0.0, [s(10, 100)], [s(20)]), sample(0.25, [s(10, 101)], [s(21, 102)])]
    r = check_single_writer(samples)
    assert r.verdict == "fail"
    w = r.witnesses[0]
    assert w["t"] == 0.25 and {(x["replica"], x["pid"], x["xid"]) for x in w["value"]["sessions"]} == {
        ("p1a", 10, "101"), ("p1b", 21, "102")}
    assert "same instant" in w["note"]


def test_write_sessions_of_two_replicas_alive_in_two_samples_fail() -> None:
    """Never writing in the same sample, but p1a's write session outlives p1b's first writes: fencing forbids it."""
    samples = [sample(0.0, [s(10, 100)], []),
               sample(0.25, [s(10)], [s(21, 102)]),
               sample(0.5, [s(10, 103)], [s(21)])]
    r = judge_pg_samples(samples)
    assert r.concurrent_samples == 0 and r.coexisting_samples == 1 and r.violations == 1
    assert "both open in two samples" in r.witnesses[0]["note"] and r.witnesses[0]["t"] == 0.5


def test_writes_seen_by_the_fast_polls_make_a_write_session() -> None:
    """An xid the polls between samples saw (``writes``) marks the session as a writer like one in a sample."""
    def w(pid: int, writes: list[str]) -> dict[str, Any]:
        return {**s(pid), "writes": writes}
    samples = [sample(0.0, [w(10, ["100"])], []), sample(0.25, [s(10)], [w(21, ["102", "103"])]),
               sample(0.5, [s(10)], [s(21)])]
    r = judge_pg_samples(samples)
    assert r.writers["p1"] == {"p1a", "p1b"} and r.violations == 1 and r.concurrent_samples == 0
    assert "p1a pid 10 (wrote: xid 100, seen by t=0.000)" in r.witnesses[0]["note"]


def test_one_co_listing_alone_is_not_counted() -> None:
    """A session leaving (locks released at exit, still listed) as the new active's opens: seen once, never a
    violation; seen in two samples it would have to linger a whole interval."""
    samples = [sample(0.0, [s(10, 100)], []), sample(0.25, [s(10)], [s(21, 102)]), sample(0.5, [], [s(21, 103)])]
    assert judge_pg_samples(samples).violations == 0


def test_a_reused_pid_is_another_session() -> None:
    samples = [sample(0.0, [s(10, 100, start=1)], []), sample(0.25, [], [s(10, 101, start=2)]),
               sample(0.5, [], [s(10, 102, start=2)])]
    assert judge_pg_samples(samples).violations == 0


def test_consecutive_violating_samples_are_one_violation() -> None:
    samples = [sample(t / 4, [s(10, 100 + t)], [s(21, 200 + t)]) for t in range(8)]
    samples += [sample(2.0, [], [s(21, 300)])]
    samples += [sample(2.25 + t / 4, [s(11, 400 + t)], [s(21, 500 + t)]) for t in range(2)]
    r = judge_pg_samples(samples)
    assert r.violations == 2 and r.concurrent_samples == 10
    assert check_single_writer(samples).explanation.startswith("2 overlaps of two replicas' writers on p1")


def test_a_watched_node_never_seen_writing_is_unknown() -> None:
    samples = [sample(t / 4, [s(10)], [s(20)]) for t in range(4)]
    r = check_single_writer(samples)
    assert r.verdict == "unknown" and "no write seen in PostgreSQL samples" in r.explanation


def test_failed_samples_are_counted_not_judged() -> None:
    fail = Event(t=0.5, process="pgsampler", type="info", f="pg_sample", value={"error": "ConnectionError: x"})
    samples = [sample(0.0, [s(10, 100)], []), fail, sample(1.0, [s(10, 101)], [])]
    r = check_single_writer(samples)
    assert r.verdict == "pass" and r.metrics["pg_samples"] == 2 and r.metrics["pg_sample_failures"] == 1


# --- the sampler's record -----------------------------------------------------------------------------------
def test_sample_value_groups_sessions_by_node_and_replica_and_drops_nulls() -> None:
    raw = {"server": "10.0.0.5", "db_time": 5, "sessions": [
        {"replica": "p1a", "db": "p1", "pid": 10, "start": 1, "state": "idle", "xid": None, "xact_start": None,
         "locks": [[128, "ExclusiveLock", True]]},
        {"replica": "p1b", "db": "p1", "pid": 20, "start": 2, "state": "active", "xid": "700", "xact_start": 3,
         "locks": None},
        {"replica": "intruder", "pid": 30, "start": 3}]}
    v = sample_value(raw, {"p1": ["p1a", "p1b"], "med1": ["med1a", "med1b"]}, {("10.0.0.5", 10, 1): {"99", "100"}})
    assert v == {"server": "10.0.0.5", "db_time": 5, "nodes": {
        "p1": {"p1a": [{"pid": 10, "start": 1, "state": "idle", "db": "p1", "locks": [[128, "ExclusiveLock", True]],
                        "writes": ["99", "100"]}],
               "p1b": [{"pid": 20, "start": 2, "state": "active", "xid": "700", "xact_start": 3, "db": "p1"}]},
        "med1": {}}}
    assert judge_pg_samples([Event(0.0, "pgsampler", "ok", "pg_sample", v)]).watched == {"p1", "med1"}


# --- a run's choice of evidence -----------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "sources"), [("", ["node", "pg"]), ("pg", ["pg"]), (" pg , node ", ["node", "pg"]),
                                                ("node", ["node"])])
def test_the_run_reads_its_evidence_sources_from_the_environment(value: str, sources: list[str]) -> None:
    from harness.runner import evidence_sources

    assert evidence_sources({"HA_CHAOS_EVIDENCE": value}) == sources


@pytest.mark.parametrize("value", ["pgg", ",", "node,logs"])
def test_a_misspelt_evidence_source_stops_the_run_before_it_starts(value: str) -> None:
    from harness.errors import HarnessError
    from harness.runner import evidence_sources

    with pytest.raises(HarnessError) as exc:
        evidence_sources({"HA_CHAOS_EVIDENCE": value})
    assert "HA_CHAOS_EVIDENCE" in exc.value.what and "pg" in (exc.value.fix or "")
