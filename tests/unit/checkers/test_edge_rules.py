"""Hand-written minimal histories for edge rules a reviewer found wrong: the end of a DB cut (11), what counts as a
submit that reached a cut replica (11), completions of unknown submits (10), consecutive acceptances and the dedup
period (2), duplicates that point at nothing (3), streams never read (3, 4), two serving replicas (9) and bounded
witness lists."""

from __future__ import annotations

from typing import Any

import pytest

from harness.checkers import sequencer
from harness.checkers.liveness import check_recovery
from harness.checkers.model import MAX_WITNESSES, CheckContext
from harness.checkers.roles import check_health, check_outage_honesty
from harness.checkers.submissions import check_acknowledged_completes, check_exactly_once, check_no_lost_success
from harness.history import Event

pytestmark = pytest.mark.unit


def ev(t: float, process: str, type_: str, f: str, **value: Any) -> Event:
    return Event(t=t, process=process, type=type_, f=f, value=value)  # type: ignore[arg-type]


def submit(t: float, sid: str, outcome: str, cmd: str = "c1", dt: float = 0.1, part: str = "p1",
           replica: str | None = None, **extra: Any) -> list[Event]:
    v = {"participant": part, "command_id": cmd, "user": "u", "act_as": ["u"], "submission_id": sid, **extra}
    out = {**v, "replica": replica} if replica is not None else v
    return [ev(t, f"client-{sid}", "invoke", "submit", **v), ev(t + dt, f"client-{sid}", outcome, "submit", **out)]


def completion(t: float, sid: str, status: str, cmd: str = "c1", offset: Any = 1, coff: int = 1,
               tx: str | None = "tx1", part: str = "p1", **extra: Any) -> Event:
    return ev(t, f"completions-{part}", "ok", "completion", participant=part, command_id=cmd, user="u",
              act_as=["u"], submission_id=sid, status=status, offset=offset, completion_offset=coff, tx_id=tx,
              **extra)


def transaction(t: float, off: int, cmd: str, tx: str, part: str = "p1", submitter: str = "p1",
                informees: list[str] | None = None) -> Event:
    return ev(t, f"transactions-{part}", "ok", "transaction", participant=part, offset=off, tx_id=tx,
              command_id=cmd, user="u", act_as=["u"], submitter=submitter, informees=informees or [part],
              payload_hash=f"h-{tx}", record_time=int(t * 1e6))


def subscribe(t: float, kind: str, part: str = "p1", from_offset: int = 0, reason: str = "start") -> Event:
    return ev(t, f"{kind}-{part}", "info", "subscribe", participant=part, from_offset=from_offset, reason=reason)


def end(t: float) -> Event:
    return ev(t, "harness", "info", "phase", phase="end")


def by_t(h: list[Event]) -> list[Event]:
    return sorted(h, key=lambda e: e.t)


# --- 11: outage honesty ----------------------------------------------------------------------------------------

def cut(replica: str, t_on: float, t_heal_invoke: float, t_heal_ok: float, step: int = 0) -> list[Event]:
    v = {"step": step, "kind": "toxic", "target": f"db_link({replica})"}
    return [ev(t_on - 0.1, "nemesis", "invoke", "toxic", **v),
            ev(t_on, "nemesis", "ok", "toxic", **v, resolved=[f"{replica}-db"], verified=True, cuts_db=[replica]),
            ev(t_heal_invoke, "nemesis", "invoke", "heal", step=step, kind="toxic", resolved=[f"{replica}-db"]),
            ev(t_heal_ok, "nemesis", "ok", "heal", step=step, kind="toxic", resolved=[f"{replica}-db"])]


def probes(t0: float, t1: float, ready: dict[str, bool]) -> list[Event]:
    n = int((t1 - t0) / 0.25)
    return [ev(t0 + i * 0.25, "probe", "ok", "health",
               services={r: {"ready": x, "live": True, "api": x} for r, x in ready.items()}) for i in range(n + 1)]


def test_cut_ends_when_the_heal_began_not_at_its_ok() -> None:
    """Heal invoked at 10.00, the retried write acknowledged by the (no longer cut) replica at 10.02, heal ok logged
    at 10.05: the executor undid the fault before logging ok, so this ack is honest."""
    h = by_t([*cut("p1a", 1.0, 10.0, 10.05), *submit(2.0, "s0", "ok", replica="p1b"),
              *submit(9.9, "s1", "ok", dt=0.12, replica="p1a", via="p1a")])
    res = check_outage_honesty(h)
    assert res.verdict == "pass", res.explanation
    # the same ack before the heal began is still a violation
    h2 = by_t([*cut("p1a", 1.0, 10.0, 10.05), *submit(9.9, "s1", "ok", dt=0.05, replica="p1a", via="p1a")])
    assert check_outage_honesty(h2).verdict == "fail"


def test_completion_streamed_after_the_heal_began_is_not_while_cut() -> None:
    wall = "2026-11-22T07:00:{:05.2f}+00:00"
    base_us = 1_795_330_800_000_000   # 2026-11-22T07:00:00 in microseconds
    h = [ev(0.0, "harness", "info", "start"), *cut("p1a", 1.0, 10.0, 10.05),
         *submit(2.0, "s0", "fail", via="p1a"),
         completion(10.02, "s9", "OK", replica="p1a", record_time=base_us + 10_010_000)]
    for e in h:
        e.wall = wall.format(e.t)
    res = check_outage_honesty(by_t(h))
    assert res.verdict == "pass", res.explanation
    h[-1].t = 9.98   # streamed before the heal began: a success of a transaction sequenced during the cut
    h[-1].wall = wall.format(9.98)
    h[-1].value["record_time"] = base_us + 9_970_000
    assert check_outage_honesty(by_t(h)).verdict == "fail"


def test_ack_during_the_cut_without_a_replica_is_not_judged() -> None:
    h = by_t([*cut("p1a", 1.0, 10.0, 10.05), *submit(2.0, "s1", "ok"), *submit(3.0, "s2", "ok")])
    res = check_outage_honesty(h)
    assert res.verdict == "unknown", res.explanation
    assert res.metrics["not_judged"] == 2 and "named no replica" in res.explanation
    # a judged submit besides them (it reached the cut replica, which refused it): pass, the others reported
    h2 = by_t([*h, *submit(4.0, "s3", "fail", via="p1a", error="UNAVAILABLE")])
    res2 = check_outage_honesty(h2)
    assert res2.verdict == "pass" and res2.metrics["not_judged"] == 2


def test_cutting_only_the_passive_replica_tests_nothing() -> None:
    """p1b (passive: never ready) loses its database; every submit goes through the balancer to p1a."""
    h = by_t([*probes(0, 12, {"p1a": True, "p1b": False}), *cut("p1b", 1.0, 10.0, 10.05),
              *(e for i in range(5) for e in submit(2.0 + i, f"s{i}", "ok", replica="p1a", via="lb")),
              *submit(8.0, "s9", "ok", via="lb")])   # no replica, but the balancer could not route to p1b
    res = check_outage_honesty(h)
    assert res.verdict == "unknown", res.explanation
    assert res.metrics["attempted"] == 0 and res.metrics["not_judged"] == 0
    # the plan did not exercise the invariant (as when only a sequencer's database is cut): the run verdict
    # does not become unknown for it
    assert res.metrics["applicable"] is False and "not exercised" in res.explanation
    # a submit sent to the passive itself reached the cut replica (and was refused): exercised
    direct = by_t([*h, *submit(9.0, "s8", "fail", via="p1b", error="NODE_IS_PASSIVE_REPLICA")])
    res2 = check_outage_honesty(direct)
    assert res2.verdict == "pass" and res2.metrics["attempted"] == 1


def test_cutting_the_active_counts_balancer_submits_until_it_is_seen_not_ready() -> None:
    ready = [*probes(0, 1.9, {"p1a": True, "p1b": False}), *probes(2.0, 20, {"p1a": False, "p1b": True})]
    h = by_t([*ready, *cut("p1a", 1.0, 15.0, 15.05),
              *submit(1.5, "s1", "fail", via="lb", error="UNAVAILABLE"),        # p1a still seen ready
              *submit(12.0, "s2", "ok", via="lb", replica="p1b")])              # long after p1a was not ready
    res = check_outage_honesty(h)
    assert res.verdict == "pass" and res.metrics["attempted"] == 1


# --- 10: recovery ----------------------------------------------------------------------------------------------

def kill(step: int, t_on: float, t_heal: float) -> list[Event]:
    v = {"step": step, "kind": "kill", "target": "p1a"}
    return [ev(t_on - 0.1, "nemesis", "invoke", "kill", **v), ev(t_on, "nemesis", "ok", "kill", **v, verified=True),
            ev(t_heal - 0.01, "nemesis", "invoke", "heal", step=step, kind="kill"),
            ev(t_heal, "nemesis", "ok", "heal", step=step, kind="kill")]


def test_completion_of_an_unknown_submit_is_not_a_fresh_recovery() -> None:
    """After the heal only an OK of a submission the history has no submit for arrives (and the one command tried
    after the heal failed): nothing shows that a fresh command completes."""
    h = by_t([*kill(0, 5, 10), *submit(11, "s1", "fail"), completion(12, "s-unknown", "OK"), end(100)])
    res = check_recovery(h)
    assert res.verdict == "fail", res.explanation
    fresh = by_t([*h, *submit(13, "s2", "ok"), completion(13.5, "s2", "OK", coff=2)])
    assert check_recovery(fresh).verdict == "pass"


# --- 2: exactly once -------------------------------------------------------------------------------------------

def test_dedup_period_is_judged_between_consecutive_acceptances() -> None:
    """Acceptances at 0 s, 1 s and 91 s with a 10 s period: the first two are within one period."""
    h = [*submit(0, "s1", "ok"), completion(0.5, "s1", "OK", tx="tx1", record_time=0),
         *submit(0.6, "s2", "ok"), completion(1.0, "s2", "OK", offset=2, coff=2, tx="tx2", record_time=1_000_000),
         *submit(90, "s3", "ok"), completion(91, "s3", "OK", offset=3, coff=3, tx="tx3", record_time=91_000_000),
         end(100)]
    res = check_exactly_once(h, CheckContext(dedup_period_s=10))
    assert res.verdict == "fail", res.explanation
    assert {w["value"]["tx_id"] for w in res.witnesses[:2]} == {"tx1", "tx2"}
    spread = [e for e in h if e.value.get("submission_id") != "s2"]   # 0 s and 91 s: two periods apart
    assert check_exactly_once(spread, CheckContext(dedup_period_s=10)).verdict == "pass"


# --- 3: acknowledged submits complete --------------------------------------------------------------------------

def dup_history(txs: list[Event], dup_offset: int, from_offset: int = 0, t_end: float = 100) -> list[Event]:
    """A resubmit of c1 answered DUPLICATE_COMMAND at ``dup_offset``; no OK completion of c1 was seen."""
    return by_t([subscribe(0, "completions"), subscribe(0, "transactions", from_offset=from_offset), *txs,
                 *submit(5, "s2", "ok"),
                 completion(5.2, "s2", "DUPLICATE_COMMAND", offset=dup_offset, coff=9, tx=None), end(t_end)])


def test_duplicate_pointing_at_another_changes_transaction_fails() -> None:
    txs = [transaction(1, 1, "c7", "tx7"), transaction(2, 2, "c8", "tx8"), transaction(3, 3, "c9", "tx9")]
    res = check_acknowledged_completes(dup_history(txs, dup_offset=2))
    assert res.verdict == "fail", res.explanation
    assert res.witnesses[0]["value"]["submission_id"] == "s2" and "tx8" in res.witnesses[0]["note"]


def test_duplicate_pointing_at_an_offset_the_stream_passed_without_a_transaction_fails() -> None:
    txs = [transaction(1, 1, "c7", "tx7"), transaction(3, 3, "c9", "tx9")]
    res = check_acknowledged_completes(dup_history(txs, dup_offset=2))
    assert res.verdict == "fail" and "pointing at no transaction" in res.explanation


def test_duplicate_beyond_the_settled_stream_fails_and_before_the_quiet_period_is_not_judged() -> None:
    txs = [transaction(1, 1, "c7", "tx7")]
    assert check_acknowledged_completes(dup_history(txs, dup_offset=7)).verdict == "fail"
    h = [*kill(0, 1, 4.5), *dup_history(txs, dup_offset=7, t_end=9)]   # the history ends 4.5 s after the heal
    res = check_acknowledged_completes(by_t(h), CheckContext(completion_grace_s=0))
    assert res.verdict != "fail", res.explanation


def test_duplicate_of_the_changes_own_transaction_passes() -> None:
    txs = [transaction(1, 1, "c7", "tx7"), transaction(2, 2, "c1", "tx1"), transaction(3, 3, "c9", "tx9")]
    assert check_acknowledged_completes(dup_history(txs, dup_offset=2)).verdict == "pass"


def test_duplicate_below_where_the_stream_started_is_not_judged() -> None:
    """A stream subscribed from offset F delivers offsets above F only: offsets <= F were never read."""
    txs = [transaction(3, 3, "c9", "tx9")]
    for start in (2, 5):
        res = check_acknowledged_completes(dup_history(txs, dup_offset=2, from_offset=start))
        assert res.verdict == "pass" and "not judged" in res.explanation, (start, res.explanation)


def test_missing_completion_on_a_stream_never_read_is_unknown_not_lost() -> None:
    h = [*submit(0, "s1", "ok"), end(100)]
    res = check_acknowledged_completes(h)
    assert res.verdict == "unknown" and "never read" in res.explanation
    p2 = [subscribe(0, "completions", part="p2"), *h]   # another participant's stream does not count
    assert check_acknowledged_completes(p2).verdict == "unknown"


# --- 4: no lost success ----------------------------------------------------------------------------------------

def shared_ok(p2_read: bool) -> list[Event]:
    h = [subscribe(0, "transactions"), *submit(1, "s1", "ok", informees=["p1", "p2"]),
         completion(1.5, "s1", "OK"), transaction(1.5, 1, "c1", "tx1", informees=["p1", "p2"]), end(100)]
    return by_t([*h, subscribe(0, "transactions", part="p2")] if p2_read else h)


def test_informee_stream_never_read_is_unknown_not_pass() -> None:
    res = check_no_lost_success(shared_ok(p2_read=False))
    assert res.verdict == "unknown" and "p2" in res.explanation


def test_informee_stream_read_without_the_transaction_fails_after_the_quiet_period() -> None:
    res = check_no_lost_success(shared_ok(p2_read=True))
    assert res.verdict == "fail" and "missing from p2's stream" in res.witnesses[0]["note"]


# --- 9: health matches role ------------------------------------------------------------------------------------

def samples(rows: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[Event]:
    return [ev(i * 0.25, "probe", "ok", "health", services={"p1a": a, "p1b": b}) for i, (a, b) in enumerate(rows)]


def test_two_replicas_serving_fails_even_if_neither_is_ready() -> None:
    both = ({"ready": False, "live": True, "api": True}, {"ready": False, "live": True, "api": True})
    res = check_health(samples([both] * 4))
    assert res.verdict == "fail", res.explanation
    assert "p1a" in res.witnesses[0]["note"] and "p1b" in res.witnesses[0]["note"]


def test_one_sample_of_two_serving_replicas_is_a_handover_and_unreachable_is_not_serving() -> None:
    old = {"ready": False, "live": True, "api": True}
    new = {"ready": False, "live": True, "api": True}
    gone = {"ready": False, "live": True, "api": False}
    paused = {"ready": None, "live": None, "api": None}   # the probe timed out
    rows = [(old, gone), (old, new), (gone, new), (gone, new), (paused, new), (paused, new), (paused, new)]
    assert check_health(samples(rows)).verdict == "pass"


# --- bounded witnesses -----------------------------------------------------------------------------------------

def test_checkers_keep_only_the_first_witnesses_but_count_every_violation(monkeypatch: pytest.MonkeyPatch) -> None:
    kept: list[int] = []
    real = sequencer.result

    def spy(inv: str, verdict: Any, explanation: str, witnesses: Any = None, metrics: Any = None) -> Any:
        kept.append(len(witnesses or []))
        return real(inv, verdict, explanation, witnesses, metrics)

    monkeypatch.setattr(sequencer, "result", spy)
    # 100 counter gaps, each event also beyond its safe watermark
    h = [ev(i, "seqreader-p1", "ok", "seq_event", member="p1", sequencer="seq1", counter=2 * i, ts=100 * (i + 1),
            prev_ts=None, safe_watermark=0, payload_hash=f"h{i}") for i in range(101)]
    r7, r8 = sequencer.check_sequencer_stream(h), sequencer.check_watermark(h)
    assert r7.verdict == r8.verdict == "fail"
    assert r7.explanation.startswith("100 ") and r8.explanation.startswith("101 ")
    assert kept == [MAX_WITNESSES, MAX_WITNESSES]
