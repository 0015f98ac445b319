"""The proof that the harness can fail: for each bug switch of the reference nodes, a curated plan run on a
topology with that bug makes the matching invariant FAIL. The same plans PASS on the correct nodes
(tests/chaos/test_curated.py runs them on the session topology, which has no bug switch).

Switches without a case here, and why:
- ``no_lock_keepalive``: every DB connection passes the fault proxy and pg-lb, whose sockets answer keepalives for
  a dead or frozen node, so PostgreSQL never sees the peer die whatever the keepalive settings (as in Canton's
  own proxied tests); the switch's effect is shown against a direct PostgreSQL in tests/integration/sut.
- ``retry_non_transient``: no fault kind produces a non-transient SQL error (the former-primary trap gives
  25006, which the model retries on purpose); shown in tests/integration/sut.
- ``ack_before_durable``: its first live run (active-db-blackhole) PASSED. The early OK is published inside the
  processing transaction, after its first statements got answers; a blackholed link stalls those first, and the
  stream itself reads through the same link, so nothing early reaches a client. And when the transaction is lost
  after the early OK (replica killed), the next active replays the same sequenced events to the same outcome and
  offsets. Outage honesty now also flags OK completions of transactions sequenced after the replica's DB was cut
  (unit-tested), but no plan yet opens the window between the early OK and the commit (a fault that blocks
  writes while reads go on would); the behaviour itself is shown in tests/integration/sut.
"""

from __future__ import annotations

import os

import pytest

from harness.pytest_plugin import describe

pytestmark = pytest.mark.chaos

#: bug switch -> (curated plan, invariants of which at least one must fail)
CASES = {
    "dedup_in_memory": ("kill-active-participant", {"2"}),
    "passive_serves_api": ("kill-active-participant", {"9"}),
    "no_watermark_wait": ("sequencer-killed", {"7", "8"}),
    "no_fencing": ("flaky-db-link", {"1"}),
    "inflight_per_replica": ("repeated-kills", {"3"}),
    "stream_resume_inclusive": ("kill-active-participant", {"5"}),
    "unordered_indexing": ("kill-active-participant", {"6"}),
    "no_resubscribe": ("sequencers-restarted", {"10"}),
}
#: the ci budget runs these; nightly runs every case
CI_CASES = ("dedup_in_memory", "passive_serves_api")


def _cases() -> list[str]:
    return list(CASES) if os.environ.get("HA_CHAOS_BUDGET") == "nightly" else list(CI_CASES)


@pytest.mark.parametrize("bug", _cases())
def test_bug_switch_makes_its_invariant_fail(bug: str, topology_factory, chaos_run) -> None:
    plan, invariants = CASES[bug]
    topo = topology_factory("full", bugs=bug)
    outcome = chaos_run(plan, topology=topo, bugs=bug)
    failed = set(outcome.failed_invariants)
    assert failed & invariants, f"bug {bug} was not caught by invariant(s) {sorted(invariants)}:\n{describe(outcome)}"
