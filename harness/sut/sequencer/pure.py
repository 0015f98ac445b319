"""Pure parts of the sequencer protocol: unique timestamps, payload hashes, subscriber-side event validation.

Why pure: these are the rules invariants 7 and 8 rest on; they are unit-tested without a database, and the
harness's own sequencer readers can reuse ``EventValidator``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any


def next_timestamp(now_us: int, last: int, n: int, i: int) -> int:
    """``m = max(now, last + n); ts = m - (m mod n) + i``: writers never collide and each is strictly increasing."""
    m = max(now_us, last + n)
    return m - (m % n) + i


def canonical_json(payload: Any) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def canonical_hash(text: str) -> str:
    """SHA-256 of an already canonical JSON text: ``payload_hash(p) == canonical_hash(canonical_json(p))``."""
    return hashlib.sha256(text.encode()).hexdigest()


def payload_hash(payload: Any) -> str:
    """SHA-256 of the canonical JSON of a payload (what subscribers compare to detect forks)."""
    return canonical_hash(canonical_json(payload))


class ForkDetected(Exception):
    """After a re-subscribe the first event differs from the last one seen: two sequencers disagree."""


class InvalidEvent(Exception):
    """An event breaks the per-member stream rules (gap, non-increasing ts, wrong previous ts)."""


@dataclass
class Seen:
    counter: int
    ts: int
    payload_hash: str


class EventValidator:
    """Checks every event of one member's stream: counters consecutive, ts strictly increasing, prev_ts matches,
    and after a re-subscribe the first event equals the last one seen (else fork)."""

    def __init__(self, last: Seen | None = None) -> None:
        self.last = last
        self.expect_replay = last is not None

    def resubscribed(self) -> None:
        """Called when a new subscription starts from ``last.counter``: its first event must equal ``last``."""
        self.expect_replay = self.last is not None

    @property
    def next_from_counter(self) -> int:
        return 0 if self.last is None else self.last.counter

    def accept(self, ev: dict[str, Any]) -> bool:
        """Validate ``ev``; True if it is new (deliver it), False if it is the expected replay of the last one."""
        counter, ts, h = ev["counter"], ev["ts"], ev["payload_hash"]
        last = self.last
        if self.expect_replay and last is not None:
            self.expect_replay = False
            if counter == last.counter:
                if ts != last.ts or h != last.payload_hash:
                    raise ForkDetected(f"counter {counter}: had ts={last.ts} hash={last.payload_hash[:12]}, "
                                       f"now ts={ts} hash={h[:12]} from {ev.get('sequencer')}")
                return False
        if last is None:
            if ev.get("prev_ts") is not None and counter == 0:
                raise InvalidEvent(f"counter 0 with prev_ts {ev.get('prev_ts')}")
        else:
            if counter != last.counter + 1:
                raise InvalidEvent(f"gap: expected counter {last.counter + 1}, got {counter}")
            if ts <= last.ts:
                raise InvalidEvent(f"ts not increasing: {ts} after {last.ts}")
            if ev.get("prev_ts") != last.ts:
                raise InvalidEvent(f"prev_ts {ev.get('prev_ts')} != last ts {last.ts}")
        self.last = Seen(counter, ts, h)
        return True
