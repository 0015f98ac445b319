"""Bug switches: named, deliberately broken behaviours that re-create classic HA bugs.

Why: a checker that cannot fail is a defect. Each switch breaks one invariant of the model so that the harness's
checkers can be shown to catch it (see API.md for the invariant each one breaks).
"""

from __future__ import annotations

import os

KNOWN_BUGS = frozenset({
    "no_fencing",            # active writes without the writers lock; new active does not wait for old writers
    "dedup_in_memory",       # dedup/in-flight state in the replica's memory, not the shared DB
    "ack_before_durable",    # OK completion published before the commit is durable
    "no_watermark_wait",     # sequencer readers serve events beyond the safe watermark
    "passive_serves_api",    # passive replica runs the Ledger API and acknowledges submissions
    "no_lock_keepalive",     # lock connection uses OS-default TCP keepalives (dead peers held for hours)
    "retry_non_transient",   # every DB error is retried forever, including ones that should be fatal
    "inflight_per_replica",  # a new active does not take over the old one's in-flight submissions
    "stream_resume_inclusive",  # a stream resumed from offset X starts AT X (off by one: X is delivered twice)
    "unordered_indexing",    # a processed batch's transactions get offsets in reverse event order
    "no_resubscribe",        # the sequencer client treats a lost subscription as final and never re-subscribes
    "write_behind_submit",   # a submission is acknowledged before its in-flight record is written (write-behind)
    "sequence_late_sends",   # sequencers sequence a send that reaches them after its max-sequencing-time
    "wall_clock_timestamps",  # a sequencer trusts its wall clock to never go back: no max(now, last + n) guard
    "refuse_on_timeout",     # a submission whose write takes over 1 s is answered UNAVAILABLE; the write goes on
})


def parse_bugs(value: str | None) -> frozenset[str]:
    """Parse ``HA_CHAOS_SUT_BUGS``; an unknown name is an error (a typo must not silently test nothing)."""
    names = {b.strip() for b in (value or "").split(",") if b.strip()}
    unknown = names - KNOWN_BUGS
    if unknown:
        raise ValueError(f"unknown bug switch(es) {sorted(unknown)}; known: {sorted(KNOWN_BUGS)}")
    return frozenset(names)


def bugs_from_env() -> frozenset[str]:
    return parse_bugs(os.environ.get("HA_CHAOS_SUT_BUGS"))
