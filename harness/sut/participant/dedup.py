"""Command deduplication decisions (pure), model "Command submission and deduplication".

Why pure: the outcomes (new / already in flight / duplicate of an accepted change) are the core of invariant 2
and are unit-tested without a DB; the store applies the decision inside one DB transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

#: ``recorded``: the entry is this very submission's own record (see ``decide``)
Decision = Literal["new", "in_flight", "duplicate", "recorded"]

MAX_DEDUP_PERIOD_US = 7 * 24 * 3600 * 1_000_000


def change_key(user: str, act_as: list[str], command_id: str) -> str:
    """Change ID = (user, set of act_as parties, command id) as one canonical string key."""
    return json.dumps([user, sorted(set(act_as)), command_id], separators=(",", ":"))


@dataclass(frozen=True)
class DedupEntry:
    state: Literal["inflight", "accepted"]
    submission_id: str
    tx_offset: int | None = None
    accepted_at_us: int | None = None   # record time of the accepted transaction
    request_id: str | None = None       # the submission that recorded the entry (request ids are fresh per submission)


def decide(entry: DedupEntry | None, now_us: int, period_us: int, request_id: str | None = None) -> Decision:
    """What to do with a new submission (``request_id``) of a change ID, given what the store knows about it.

    ``recorded``: the entry was written by this very submission - an earlier attempt of its transaction committed
    and only the reply was lost. It is the submission's own successful record, not another one in flight (a 409
    says nothing was recorded)."""
    if entry is None:
        return "new"
    if request_id is not None and entry.request_id == request_id:
        return "recorded"
    if entry.state == "inflight":
        return "in_flight"
    if entry.accepted_at_us is not None and now_us - entry.accepted_at_us <= period_us:
        return "duplicate"
    return "new"


def dedup_period_us(seconds: float | None) -> int:
    """The requested period, capped at the maximum (7 days)."""
    if seconds is None:
        return MAX_DEDUP_PERIOD_US
    if seconds < 0:
        raise ValueError("deduplication_period_s must be >= 0")
    return min(int(seconds * 1_000_000), MAX_DEDUP_PERIOD_US)
