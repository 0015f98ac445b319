"""The ``pglog`` evidence: PostgreSQL's statement log parsed into write sessions, and invariant 1 judged on it."""

from __future__ import annotations

import pytest

from harness.checkers import CheckContext
from harness.checkers.roles import check_single_writer
from harness.history import Event
from harness.workload.pglog import is_write, sessions_from_logs

pytestmark = pytest.mark.unit

LOG = ("""\
1764600000.100|p1a|6760b2a0.1f4|LOG:  execute <unnamed>: insert into p_requests (id) values ($1)
1764600000.150|p1a|6760b2a0.1f4|LOG:  statement: update ha_epochs set writes = writes + 1 where epoch = 3; COMMIT
1764600000.160|p1b|6760b2a1.1f5|LOG:  statement: create table if not exists p_requests (id bigint)
1764600000.170|p1b|6760b2a1.1f5|LOG:  execute s1: select pg_try_advisory_lock(1)
2026-12-01 19:00:00 Patroni INFO: no action. I am (pg1), the leader with the lock
1764600000.180|seq1|6760b2a2.1f6|LOG:  execute <unnamed>: insert into seq_events values (1)
""" + "1764600000.300|p1b|6760b2a1.1f5|LOG:  execute <unnamed>: with e as (update ha_epochs set writes = 1) "
       "insert into p_requests (id) values (2)\n")


def test_log_lines_become_write_sessions_of_the_watched_replicas() -> None:
    sessions = sessions_from_logs({"pg1": LOG}, {"p1": ["p1a", "p1b"]})
    assert [(s["replica"], s["first_ms"], s["last_ms"], s["writes"]) for s in sessions] == [
        ("p1a", 1764600000100, 1764600000150, 2), ("p1b", 1764600000300, 1764600000300, 1)]
    assert all(s["node"] == "p1" and s["server"] == "pg1" for s in sessions)
    assert sessions_from_logs({"pg1": LOG}, {"p1": ["p1a", "p1b"]}, since_ms=1764600000200)[0]["replica"] == "p1b"


@pytest.mark.parametrize("sql,write", [("insert into t values (1)", True), ("UPDATE t SET a = 1", True),
                                       ("delete from t", True), ("create table if not exists t (a int)", False),
                                       ("select 1", False), ("with x as (select 1) select * from x", False),
                                       ("with e as (update t set a = 1) select 1", True)])
def test_what_counts_as_a_write(sql: str, write: bool) -> None:
    assert is_write(sql) is write


def _events(spans: list[tuple[str, str, int, int]]) -> list[Event]:
    return [Event(t=float(i), process="harness", type="ok", f="pg_log_session",  # type: ignore[arg-type]
                  value={"node": "p1", "replica": r, "session": s, "server": "pg1", "first_ms": a, "last_ms": b,
                         "writes": 3}) for i, (r, s, a, b) in enumerate(spans)]


def test_disjoint_write_sessions_pass_and_an_overlap_fails() -> None:
    ok = _events([("p1a", "a1", 100, 200), ("p1a", "a2", 150, 400), ("p1b", "b1", 400, 900), ("p1a", "a3", 950, 990)])
    r = check_single_writer(ok, CheckContext(evidence=["pglog"]))
    assert r.verdict == "pass" and "statement log" in r.explanation, r.explanation
    bad = _events([("p1a", "a1", 100, 200), ("p1a", "a2", 150, 600), ("p1b", "b1", 400, 900)])
    r = check_single_writer(bad, CheckContext(evidence=["pglog"]))
    assert r.verdict == "fail" and "statement log" in r.explanation, r.explanation
    assert "p1b session b1 wrote from 400 ms while p1a session a2 wrote until 600 ms" in r.witnesses[0]["note"]


def test_no_logged_write_is_unknown_never_pass() -> None:
    r = check_single_writer([], CheckContext(evidence=["pglog"]))
    assert r.verdict == "unknown"


def test_a_write_the_server_refused_is_not_a_write() -> None:
    """log_statement logs a statement before it runs: one a read-only former primary refuses (seen live on the
    small target's former-primary-trap: a false FAIL of invariant 1) is followed by an ERROR of its session."""
    refused = """\
1764600000.100|p1a|6760b2a0.1f4|LOG:  execute <unnamed>: insert into p_requests (id) values ($1)
1764600000.100|p1a|6760b2a0.1f4|DETAIL:  parameters: $1 = '1'
1764600000.101|p1b|6760b2a1.1f5|LOG:  execute <unnamed>: insert into p_requests (id) values ($1)
1764600000.101|p1a|6760b2a0.1f4|ERROR:  cannot execute INSERT in a read-only transaction
1764600000.101|p1a|6760b2a0.1f4|STATEMENT:  insert into p_requests (id) values ($1)
1764600000.200|p1a|6760b2a0.1f4|LOG:  execute <unnamed>: insert into p_requests (id) values ($1)
1764600000.300|p1a|6760b2a0.1f4|LOG:  statement: select 1
1764600000.400|p1a|6760b2a0.1f4|LOG:  execute <unnamed>: update ha_epochs set writes = 1
1764600000.401|p1a|6760b2a0.1f4|FATAL:  terminating connection due to administrator command
"""
    sessions = sessions_from_logs({"pg1": refused}, {"p1": ["p1a", "p1b"]})
    assert [(s["replica"], s["first_ms"], s["last_ms"], s["writes"]) for s in sessions] == [
        ("p1b", 1764600000101, 1764600000101, 1), ("p1a", 1764600000200, 1764600000200, 1)]
