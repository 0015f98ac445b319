"""Invariant 1 (single writer) judged on PostgreSQL's statement log (``pg_log_session`` events, evidence ``pglog``).

Each event is one write session of a paired replica: its first and last logged write (server time, ms) and how
many writes it sent (``harness/workload/pglog.py``). With correct fencing, a replica becomes active only after
every write connection of the previous active is gone, so per logical node the write sessions of two different
replicas never overlap: each one's last write comes before the other's first. A violation is a session of one
replica that wrote (its last write) *after* a session of another replica had started writing (its first write),
strictly: the log has millisecond resolution, and a handover within one millisecond is not an overlap.

Unlike the samples (``pgwriters.py``) this misses no write the log has; it depends on the server logging every
write statement of the pairs' databases (``log_statement = 'mod'``): a node with no logged write is not judged.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from harness.checkers.model import keep
from harness.history import Event


@dataclass
class PgLogWriters:
    sessions: int = 0
    failures: int = 0                      # the logs could not be read (``pg_log`` fail events)
    writers: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    violations: int = 0
    violating_nodes: set[str] = field(default_factory=set)
    witnesses: list[dict[str, Any]] = field(default_factory=list)

    @property
    def judged(self) -> set[str]:
        return {n for n, reps in self.writers.items() if reps}


def judge_pg_log(events: list[Event]) -> PgLogWriters:
    out = PgLogWriters()
    by_node: dict[str, list[tuple[int, int, str, Event]]] = defaultdict(list)
    for ev in events:
        if ev.f == "pg_log" and ev.type == "fail":
            out.failures += 1
            continue
        if ev.f != "pg_log_session" or ev.type != "ok":
            continue
        v = ev.value
        try:
            first, last = int(v["first_ms"]), int(v["last_ms"])
        except (KeyError, TypeError, ValueError):
            continue
        node, replica = str(v.get("node")), str(v.get("replica"))
        out.sessions += 1
        out.writers[node].add(replica)
        by_node[node].append((first, last, replica, ev))
    for node, spans in sorted(by_node.items()):
        spans.sort(key=lambda s: (s[0], s[1]))
        # the latest-ending session so far, per replica: a later-starting session of another replica must not
        # start before it ended
        latest: dict[str, tuple[int, int, str, Event]] = {}
        for span in spans:
            first, last, replica, ev = span
            for other, o in latest.items():
                if other != replica and o[1] > first:
                    out.violations += 1
                    out.violating_nodes.add(node)
                    keep(out.witnesses, ev, f"{node}: {replica} session {ev.value.get('session')} wrote from "
                                            f"{first} ms while {other} session {o[3].value.get('session')} wrote "
                                            f"until {o[1]} ms (PostgreSQL statement log)")
            if replica not in latest or last > latest[replica][1]:
                latest[replica] = span
    return out
