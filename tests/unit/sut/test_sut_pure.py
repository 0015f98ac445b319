"""Pure parts of the reference nodes: timestamps, dedup decisions, error classification, event validation."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.sut.common.bugs import KNOWN_BUGS, parse_bugs
from harness.sut.common.config import config_from_env, parse_party_map
from harness.sut.common.db import FatalDbError, classify, db_name_of, lock_id, retry, sqlstate_kind
from harness.sut.participant.dedup import DedupEntry, change_key, decide, dedup_period_us
from harness.sut.sequencer.pure import EventValidator, ForkDetected, InvalidEvent, Seen, next_timestamp

pytestmark = pytest.mark.unit


# --- unique timestamps ------------------------------------------------------------------------------------
@given(st.integers(2, 32), st.data())
def test_timestamps_strictly_increase_and_never_collide(n: int, data: st.DataObject) -> None:
    writers = data.draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=n, unique=True))
    clocks = data.draw(st.lists(st.integers(0, 10_000), min_size=1, max_size=40))
    seen: set[int] = set()
    for i in writers:
        last = 0
        for now in clocks:   # clocks may go backwards: still strictly increasing
            ts = next_timestamp(now, last, n, i)
            assert ts > last and ts % n == i and ts >= now - n
            assert ts not in seen
            seen.add(ts)
            last = ts


def test_timestamp_formula_example() -> None:
    assert next_timestamp(1000, 0, 10, 3) == 1003
    assert next_timestamp(1000, 1003, 10, 3) == 1013   # same clock: last + n


# --- dedup decisions --------------------------------------------------------------------------------------
def test_dedup_decisions() -> None:
    day = 86_400_000_000
    assert decide(None, 5, day) == "new"
    assert decide(DedupEntry("inflight", "s1"), 5, day) == "in_flight"
    acc = DedupEntry("accepted", "s1", tx_offset=7, accepted_at_us=1_000)
    assert decide(acc, 1_000 + day, day) == "duplicate"
    assert decide(acc, 1_001 + day, day) == "new"      # outside the deduplication period
    assert dedup_period_us(None) == 7 * day
    assert dedup_period_us(10 * 86_400) == 7 * day     # capped at the maximum
    with pytest.raises(ValueError):
        dedup_period_us(-1)


def test_change_key_is_set_of_act_as() -> None:
    assert change_key("u", ["bob", "alice"], "c") == change_key("u", ["alice", "bob", "alice"], "c")
    assert change_key("u", ["alice"], "c") != change_key("v", ["alice"], "c")


# --- error classification ----------------------------------------------------------------------------------
@pytest.mark.parametrize("code,kind", [
    ("08006", "transient"), ("08001", "transient"), ("40001", "transient"), ("40P01", "transient"),
    ("25006", "transient"), ("57P01", "transient"), ("57P03", "transient"), ("57P04", "fatal"),
    ("53300", "transient"), ("23505", "fatal"), ("42P01", "fatal"), ("22012", "fatal"), ("42501", "fatal"),
])
def test_sqlstate_classification(code: str, kind: str) -> None:
    assert sqlstate_kind(code) == kind


def test_classify_exceptions() -> None:
    assert classify(ConnectionRefusedError()) == "transient"
    assert classify(TimeoutError()) == "transient"
    assert classify(asyncpg.exceptions.InterfaceError("connection is closed")) == "transient"
    assert classify(asyncpg.exceptions.UniqueViolationError("dup")) == "fatal"
    assert classify(asyncpg.exceptions.ReadOnlySQLTransactionError("ro")) == "transient"
    assert classify(ValueError("x")) == "fatal"
    assert classify(ValueError("x"), retry_non_transient=True) == "transient"


def test_retry_retries_transient_and_stops_on_fatal() -> None:
    calls = {"n": 0}

    async def flaky() -> str:
        calls["n"] += 1
        if calls["n"] < 3:
            raise ConnectionResetError("reset")
        return "ok"

    async def fatal() -> None:
        raise asyncpg.exceptions.DivisionByZeroError("division by zero")

    assert asyncio.run(retry(flaky, what="t", low=0.001, high=0.002)) == "ok" and calls["n"] == 3
    with pytest.raises(FatalDbError):
        asyncio.run(retry(fatal, what="t", low=0.001, high=0.002))


# --- sequencer stream validation --------------------------------------------------------------------------
def ev(counter: int, ts: int, prev: int | None, h: str = "h") -> dict:
    return {"counter": counter, "ts": ts, "prev_ts": prev, "payload_hash": h}


def test_validator_accepts_a_good_stream_and_replay() -> None:
    v = EventValidator()
    assert v.accept(ev(0, 10, None)) and v.accept(ev(1, 20, 10))
    v.resubscribed()
    assert v.next_from_counter == 1
    assert v.accept(ev(1, 20, 10)) is False      # the expected replay of the last event
    assert v.accept(ev(2, 30, 20))


@pytest.mark.parametrize("bad", [ev(2, 20, 10), ev(1, 10, 10), ev(1, 20, 5)])
def test_validator_rejects_gap_non_increasing_and_wrong_prev(bad: dict) -> None:
    v = EventValidator()
    v.accept(ev(0, 10, None))
    with pytest.raises(InvalidEvent):
        v.accept(bad)


def test_validator_detects_fork_after_resubscribe() -> None:
    v = EventValidator(Seen(4, 100, "a"))
    with pytest.raises(ForkDetected):
        v.accept(ev(4, 100, 90, h="b"))


# --- config -----------------------------------------------------------------------------------------------
def test_bug_switches_parse_and_reject_typos() -> None:
    assert parse_bugs("no_fencing, dedup_in_memory") == {"no_fencing", "dedup_in_memory"}
    assert len(KNOWN_BUGS) == 15
    with pytest.raises(ValueError):
        parse_bugs("no_fenicng")


def test_config_from_env() -> None:
    cfg = config_from_env({"NODE_ROLE": "participant", "NODE_REPLICA": "p1b", "DB_DSN": "postgresql://x@h:1/p1",
                           "HA_LOCK_CHECK": "1", "HA_CHAOS_SUT_BUGS": "no_fencing",
                           "SEQUENCER_ENDPOINTS": "faultproxy:20011, faultproxy:20012"})
    assert cfg.node == "p1" and cfg.timers.lock_check == 1.0 and cfg.timers.passive_check == 15.0
    assert cfg.sequencer_endpoints == ("faultproxy:20011", "faultproxy:20012")
    assert cfg.hosted_parties == {"alice", "bob"} and cfg.bugs == {"no_fencing"}
    assert parse_party_map("a:p1,b:p2") == {"a": "p1", "b": "p2"}
    assert db_name_of("postgresql://u@h:5432/p1?x=1") == "p1" and db_name_of("host=h dbname=med1") == "med1"
    assert lock_id("p1", 0) != lock_id("p2", 0) and lock_id("p1", 1) - lock_id("p1", 0) == 1
    with pytest.raises(ValueError):
        config_from_env({"NODE_ROLE": "bogus", "DB_DSN": "x"})


# --- bench ledger options -----------------------------------------------------------------------------------
def test_bench_ledger_levels_and_rates_are_checked() -> None:
    from harness.bench.ledger import _levels, _rates
    from harness.errors import HarnessError
    assert _levels("1,32") == [1, 32]
    assert _rates("50, 100") == [50.0, 100.0] and _rates("") == []
    for bad in ("0", "x", "-5", "1e9"):
        with pytest.raises(HarnessError, match="--rate"):
            _rates(bad)
    with pytest.raises(HarnessError, match="--concurrency"):
        _levels("0")


def test_bench_ledger_target_is_judged_per_level() -> None:
    from harness.bench.ledger import target

    def run(concurrency: int | None, rate: float | None, tput: float, p99: float, problems: int = 0) -> dict:
        return {"concurrency": concurrency, "offered_cmd_s": rate, "throughput_cmd_s": tput, "latency_p99_ms": p99,
                "problem_count": problems}
    runs = [run(1, None, 35, 60), run(32, None, 150, 340), run(48, None, 160, 520), run(None, 100, 99.4, 300),
            run(None, 120, 105, 450), run(64, None, 170, 400, problems=1)]
    t = target(runs)
    assert t["met"] and t["met_by"] == ["32 clients", "open loop at 100 cmd/s"]
    assert not target([run(1, None, 35, 60), run(32, None, 101, 577)])["met"]


# --- bounded transition steps -------------------------------------------------------------------------------
def test_finish_within_abandons_work_that_swallows_its_cancellation() -> None:
    from harness.sut.common.election import finish_within

    async def stubborn() -> None:
        while True:     # what asyncpg's release did when the cancel request could not cross a blackholed link
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(3600)

    async def quick() -> int:
        return 1

    async def broken() -> None:
        raise RuntimeError("boom")

    async def main() -> None:
        t0 = asyncio.get_running_loop().time()
        assert await finish_within(stubborn(), 0.2) is False
        assert asyncio.get_running_loop().time() - t0 < 2
        assert await finish_within(quick(), 1) is True
        with pytest.raises(RuntimeError):
            await finish_within(broken(), 1)
        for t in asyncio.all_tasks() - {asyncio.current_task()}:   # the abandoned task, stopped by force here
            t.get_coro().close()
    asyncio.run(main())
