"""The proof that the harness can fail: for each bug switch of the reference nodes, a curated plan run on a
topology with that bug makes the matching invariant FAIL. The same plans PASS on the correct nodes
(tests/chaos/test_curated.py runs them on the session topology, which has no bug switch).

Every switch has a case. The ones that need a particular fault:
- ``no_lock_keepalive``: active-participant-cut-from-db partitions the active p1 replica from PostgreSQL; through
  the proxies the partition silences its sessions at the database server, so only the server's TCP keepalives
  (the node's settings) release its locks. Without them p1 does not fail over within the plan's
  ``failover_within_s`` (invariant 10).
- ``retry_non_transient``: bad-db-setting gives p1's sessions a fatal error (42P01 after a wrong search_path) that
  persists in the sessions opened meanwhile; the buggy node retries on them forever after the revert
  (invariant 10, recovery per participant).
- ``ack_before_durable``: slow-db-link delays the active p1 replica's DB responses, which opens the window
  between the early OK and its commit; the workload's read of the ledger end right after the OK misses it
  (invariant 4).
- ``write_behind_submit``: active-db-blackhole holds every byte of the active p1 replica's DB link; until the load
  balancer stops routing to it, the buggy replica acknowledges submissions it cannot record (invariant 11).
- ``sequence_late_sends``: sequencer-link-squeeze slows the active participants' sequencer links; a request that
  reaches a sequencer only after its max-sequencing-time (HA_MAX_SEQUENCING 10 s in compose) has been answered
  NOT_SEQUENCED_TIMEOUT by its participant, and the buggy sequencers sequence it anyway: it is executed
  (invariant 3, a definitely rejected submission executed). The bug shows only if some send is held past its
  max-sequencing-time: a step that cuts ``seq_links(active(p1))`` for longer than that (e.g. ``link_down`` for
  14 s) does it at every heal (p1's client re-sends until max-sequencing-time + 1 s, so about a second's worth of
  its requests reach a sequencer late); 300 ms of latency and the 16 KB/s squeeze alone may not.
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
    "no_lock_keepalive": ("active-participant-cut-from-db", {"10"}),
    "retry_non_transient": ("bad-db-setting", {"10"}),
    "ack_before_durable": ("slow-db-link", {"4"}),
    "write_behind_submit": ("active-db-blackhole", {"11"}),
    "sequence_late_sends": ("sequencer-link-squeeze", {"3"}),
    "wall_clock_timestamps": ("clock-steps", {"10", "7", "8"}),
    "refuse_on_timeout": ("slow-nodes", {"3"}),
}
#: the ci budget runs these; nightly runs every case
CI_CASES = ("dedup_in_memory",)   # one is the smoke (each case starts its own topology); nightly runs all


def _cases() -> list[str]:
    return list(CASES) if os.environ.get("HA_CHAOS_BUDGET") == "nightly" else list(CI_CASES)


@pytest.mark.parametrize("bug", _cases())
def test_bug_switch_makes_its_invariant_fail(bug: str, topology_factory, chaos_run) -> None:
    plan, invariants = CASES[bug]
    topo = topology_factory("full", bugs=bug)
    outcome = chaos_run(plan, topology=topo, bugs=bug)
    failed = set(outcome.failed_invariants)
    assert failed & invariants, f"bug {bug} was not caught by invariant(s) {sorted(invariants)}:\n{describe(outcome)}"
