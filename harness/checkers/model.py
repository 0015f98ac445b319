"""Result and context types of the checkers.

Why plain dataclasses: results cross into the report, ``results.json`` and JUnit; they must serialise to JSON
with nothing but ``asdict`` and be rebuilt from a stored ``results.json`` when a report is re-rendered.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from harness.history import Event

Verdict = Literal["pass", "fail", "unknown"]
VERDICT_RANK: dict[str, int] = {"pass": 0, "unknown": 1, "fail": 2}

#: Invariant ids and short names, numbered as in canton-ha-model.md; G* are vacuity guards.
INVARIANTS: dict[str, str] = {
    "1": "single-writer",
    "2": "exactly-once",
    "3": "acknowledged-submit-completes",
    "4": "no-lost-success",
    "5": "offsets-monotonic",
    "6": "per-domain-order",
    "7": "sequencer-stream",
    "8": "watermark-safety",
    "9": "health-matches-role",
    "10": "bounded-recovery",
    "11": "outage-honesty",
    "G1": "faults-took-effect",
    "G2": "expected-failover-happened",
}

#: At most this many witnesses are kept per result; the explanation always carries the full count.
MAX_WITNESSES = 20

#: Value keys worth showing in a witness, in display order; others are dropped to keep excerpts short.
_EXCERPT_KEYS = (
    "participant", "member", "node", "command_id", "submission_id", "status", "offset", "tx_id", "counter",
    "ts", "prev_ts", "safe_watermark", "sequencer", "replica", "via", "error", "attempt", "from_offset",
    "from_counter", "completion_offset", "record_time", "payload_hash", "informees", "kind", "step", "target",
    "resolved", "cuts_db", "verified", "reason", "expect", "phase", "primary", "epochs",
)


def overall_verdict(verdicts: list[str]) -> Verdict:
    """fail > unknown > pass: a definite violation outranks missing evidence; an empty run is unknown."""
    if not verdicts:
        return "unknown"
    worst = max(verdicts, key=lambda v: VERDICT_RANK[v])
    return worst  # type: ignore[return-value]


def run_verdict(results: list[CheckResult]) -> Verdict:
    """The verdict of a run: like ``overall_verdict``, but an invariant the plan never exercised (its checker
    marked it ``metrics["applicable"] = False``, e.g. outage honesty in a run that cut no database) stays
    ``unknown`` in its own row without making the whole run unknown. Vacuity guards (G1, G2) still do."""
    return overall_verdict([r.verdict for r in results
                            if not (r.verdict == "unknown" and r.metrics.get("applicable") is False)])


def excerpt(value: dict[str, Any], limit: int = 240) -> dict[str, Any]:
    """The fields of ``value`` a reader needs to find the operation, without bulky payloads."""
    out: dict[str, Any] = {}
    for k in _EXCERPT_KEYS:
        if k in value:
            v = value[k]
            if isinstance(v, str) and len(v) > limit:
                v = v[:limit] + "..."
            out[k] = v
    services = value.get("services")
    if isinstance(services, dict):  # a health sample: who was ready, not the whole matrix
        out["ready"] = sorted(k for k, s in services.items() if isinstance(s, dict) and s.get("ready") is True)
        out["api"] = sorted(k for k, s in services.items() if isinstance(s, dict) and s.get("api") is True)
    if not out:  # unknown shape: keep it whole if small, else a truncated JSON text rather than nothing
        text = json.dumps(value, default=str, sort_keys=True)
        if len(text) <= limit:
            return dict(value)
        out["raw"] = text[:limit] + "..."
    return out


def witness(ev: Event, note: str = "") -> dict[str, Any]:
    """A pointer at one history event: enough to find it in history.jsonl and the timeline."""
    w: dict[str, Any] = {"t": round(ev.t, 6), "process": ev.process, "type": ev.type, "f": ev.f,
                         "value": excerpt(ev.value)}
    if note:
        w["note"] = note
    return w


def keep(witnesses: list[dict[str, Any]], ev: Event, note: str = "") -> None:
    """Append ``witness(ev, note)`` unless ``MAX_WITNESSES`` are kept already. ``result`` keeps only the first
    ones anyway; checkers count violations themselves, so a history with a million violations holds twenty
    witnesses in memory, not a million."""
    if len(witnesses) < MAX_WITNESSES:
        witnesses.append(witness(ev, note))


@dataclass
class CheckResult:
    """The verdict of one invariant (or vacuity guard) with the evidence for it."""

    invariant: str
    name: str
    verdict: Verdict
    explanation: str
    witnesses: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CheckResult:
        return cls(invariant=str(d["invariant"]), name=str(d["name"]), verdict=d["verdict"],
                   explanation=str(d.get("explanation", "")), witnesses=list(d.get("witnesses") or []),
                   metrics=dict(d.get("metrics") or {}))


def result(inv: str, verdict: Verdict, explanation: str, witnesses: list[dict[str, Any]] | None = None,
           metrics: dict[str, Any] | None = None) -> CheckResult:
    ws = list(witnesses or [])[:MAX_WITNESSES]
    return CheckResult(inv, INVARIANTS[inv], verdict, explanation, ws, dict(metrics or {}))


@dataclass
class CheckContext:
    """What the checkers need besides the history. ``None`` fields fall back to the history's ``expect`` marker,
    then to the defaults below, so an offline re-check of a stored run judges it by the plan it ran.

    - ``recovery_bound_s``: liveness bound after the last heal (invariant 10), also the quiet period after which
      a missing completion or transaction counts as lost (3, 4).
    - ``expect``: the plan's guards, e.g. ``{"failover": ["p1"], "pg_failover": true}``.
    - ``completion_grace_s``: submits acknowledged less than this before the end of the history are not judged
      (the run simply ended before their completion could arrive). Keep it above the nodes' max-sequencing
      time (20 s by default): a NOT_SEQUENCED_TIMEOUT rejection legitimately arrives that long after the ack.
    - ``health_consecutive``: a health anomaly must persist this many consecutive samples; the probe reads
      replicas one after another, so a single sample can straddle a legitimate role swap.
    - ``dedup_period_s``: the deduplication period; ``None`` = longer than any run (Canton's default is 7 days).
    - ``evidence``: the sources invariant 1 may use, ``node`` (the nodes' own write epochs) and/or ``pg``
      (PostgreSQL session samples); ``None`` = the history's ``evidence_sources`` marker, else every source.
      ``["pg"]`` judges a reference run as a black-box target (no evidence endpoint) would be judged.
    """

    recovery_bound_s: float | None = None
    expect: dict[str, Any] | None = None
    completion_grace_s: float = 30.0
    health_consecutive: int = 2
    dedup_period_s: float | None = None
    evidence: list[str] | None = None

    DEFAULT_RECOVERY_BOUND_S = 30.0
