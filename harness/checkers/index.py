"""One pass over the history that every checker shares.

Why an index: the checkers answer eleven questions over the same events; grouping them once (submits paired
invoke->outcome, completions, transaction streams per participant, sequencer streams per member, health samples,
fault intervals, markers) keeps ``check_all`` linear in the history even at a million operations.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from harness.history import Event

ChangeKey = tuple[str, str, tuple[str, ...], str]  # (participant, user, act_as, command_id)


def change_key(v: dict[str, Any]) -> ChangeKey:
    """The change ID of an operation, qualified by participant (dedup does not hold across participants)."""
    act_as = v.get("act_as") or ()
    if isinstance(act_as, str):
        act_as = (act_as,)
    return (str(v.get("participant", "")), str(v.get("user", "")), tuple(sorted(map(str, act_as))),
            str(v.get("command_id", "")))


def offset_key(o: Any) -> tuple[int, Any]:
    """Order offsets: integers numerically, strings (Canton's fixed-width hex) lexicographically."""
    if isinstance(o, bool):
        return (0, int(o))
    if isinstance(o, int | float):
        return (0, o)
    return (1, str(o))


@dataclass(slots=True)
class Op:
    """A performed operation: its invoke and its outcome (None if the history ended first)."""

    invoke: Event
    outcome: Event | None = None

    @property
    def type(self) -> str:
        return self.outcome.type if self.outcome is not None else "info"


@dataclass(slots=True)
class Fault:
    """One fault of the plan: invoke, the ok that put it in effect (or fail), and the heal."""

    step: Any
    kind: str
    invoke: Event
    outcome: Event | None = None
    heal: Event | None = None  # the heal's ok
    heal_invoke: Event | None = None  # the invoke of the heal that succeeded (the latest before ``heal``)

    @property
    def start(self) -> float | None:
        return self.outcome.t if self.outcome is not None and self.outcome.type == "ok" else None

    @property
    def end(self) -> float | None:
        return self.heal.t if self.heal is not None else None

    @property
    def heal_began(self) -> float | None:
        """When the successful heal was invoked (None if never healed). The executor undoes the fault *before*
        it logs the heal's ``ok``, so the effect may already be gone anywhere in [heal_began, end]: a rule that
        needs the fault to be certainly in effect must stop here, not at ``end``."""
        if self.heal is None:
            return None
        if self.heal_invoke is not None and self.heal_invoke.t <= self.heal.t:
            return self.heal_invoke.t
        return self.heal.t

    @property
    def target(self) -> str:
        v = self.invoke.value
        return str(v.get("target") or v.get("resolved") or "")


@dataclass
class HistoryIndex:
    events: list[Event]
    submits: list[Op] = field(default_factory=list)
    #: ``ledger_end`` reads the workload makes right after it saw OK completions (read-after-ack, invariant 4)
    ledger_ends: list[Op] = field(default_factory=list)
    completions: list[Event] = field(default_factory=list)
    transactions: dict[str, list[Event]] = field(default_factory=lambda: defaultdict(list))
    tx_subscribes: dict[str, list[Event]] = field(default_factory=lambda: defaultdict(list))
    #: per participant: the completion and transaction stream, subscribe markers interleaved, in history order
    completion_streams: dict[str, list[Event]] = field(default_factory=lambda: defaultdict(list))
    seq_streams: dict[str, list[Event]] = field(default_factory=lambda: defaultdict(list))
    health: list[Event] = field(default_factory=list)
    pg_primary: list[Event] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    evidence: list[Event] = field(default_factory=list)
    #: PostgreSQL session samples (``pg_sample``, ok and info), single-writer evidence from outside the nodes
    pg_samples: list[Event] = field(default_factory=list)
    #: PostgreSQL statement-log write sessions (``pg_log_session``) and log read failures (``pg_log``)
    pg_log: list[Event] = field(default_factory=list)
    #: the ``evidence_sources`` marker: the sources a run was made with (None: no marker, every source)
    evidence_sources: list[str] | None = None
    #: the ``target`` record: the deployment's roles, pairs, parties and links (None: a history from before targets)
    target: dict[str, Any] | None = None
    phases: list[Event] = field(default_factory=list)
    expect: dict[str, Any] = field(default_factory=dict)
    t_end: float = 0.0
    t_start: float = 0.0

    @property
    def last_heal(self) -> float | None:
        ends = [f.end for f in self.faults if f.start is not None and f.end is not None]
        return max(ends) if ends else None

    @property
    def settled(self) -> bool:
        """The run's quiet period ended early because the workload had shown recovery and completeness (the
        executor's ``end`` marker says so): the history is as judgeable as one that waited the full bound."""
        return any(ev.value.get("phase") == "end" and ev.value.get("settled") is True for ev in self.phases)

    def phase_start(self, name: str) -> float | None:
        for ev in self.phases:
            if ev.value.get("phase") == name:
                return ev.t
        return None

    def effective_faults(self) -> list[Fault]:
        return [f for f in self.faults if f.start is not None]


def build_index(events: list[Event]) -> HistoryIndex:
    idx = HistoryIndex(events=events)
    if events:
        idx.t_start = events[0].t
        idx.t_end = max(events[-1].t, events[0].t)
    open_ops: dict[tuple[str, str], Op] = {}
    faults_by_step: dict[Any, Fault] = {}
    open_faults: dict[Any, Fault] = {}
    for ev in events:
        if ev.t > idx.t_end:
            idx.t_end = ev.t
        f = ev.f
        p = ev.process
        if p == "nemesis":
            _index_nemesis(ev, faults_by_step, open_faults, idx)
            continue
        if f in ("submit", "ledger_end"):
            if ev.type == "invoke":
                op = Op(ev)
                open_ops[(p, f)] = op
                (idx.submits if f == "submit" else idx.ledger_ends).append(op)
            else:
                op = open_ops.pop((p, f), None)
                if op is not None:
                    op.outcome = ev
            continue
        if f == "completion":
            idx.completions.append(ev)
            idx.completion_streams[str(ev.value.get("participant", p))].append(ev)
        elif f == "transaction":
            idx.transactions[str(ev.value.get("participant", p))].append(ev)
        elif f == "subscribe":
            part = str(ev.value.get("participant", ""))
            if p.startswith("transactions"):
                idx.transactions[part].append(ev)
                idx.tx_subscribes[part].append(ev)
            else:
                idx.completion_streams[part].append(ev)
        elif f in ("seq_event", "seq_subscribe"):
            idx.seq_streams[str(ev.value.get("member", p))].append(ev)
        elif f == "health":
            idx.health.append(ev)
        elif f == "pg_primary":
            idx.pg_primary.append(ev)
        elif f == "evidence":
            idx.evidence.append(ev)
        elif f == "pg_sample":
            idx.pg_samples.append(ev)
        elif f in ("pg_log_session", "pg_log"):
            idx.pg_log.append(ev)
        elif f == "evidence_sources":
            idx.evidence_sources = [str(s) for s in ev.value.get("sources") or []]
        elif f == "target" and isinstance(ev.value, dict):
            idx.target = ev.value
        elif f == "phase":
            idx.phases.append(ev)
        elif f == "expect":
            idx.expect.update(ev.value)
    return idx


def _index_nemesis(ev: Event, by_step: dict[Any, Fault], open_faults: dict[Any, Fault],
                   idx: HistoryIndex) -> None:
    v = ev.value
    step = v.get("step")
    key = _hashable(step)
    if ev.f == "heal":
        fault = by_step.get(key)
        if fault is not None and fault.heal is None:
            if ev.type == "invoke":
                fault.heal_invoke = ev  # a failed heal is retried: keep the invoke of the last attempt
            elif ev.type == "ok":
                fault.heal = ev
        return
    if ev.type == "invoke":
        fault = Fault(step=step, kind=str(v.get("kind", ev.f)), invoke=ev)
        by_step[key] = fault
        open_faults[key] = fault
        idx.faults.append(fault)
    else:
        fault = open_faults.pop(key, None)
        if fault is not None:
            fault.outcome = ev
        elif ev.type == "info" and key not in by_step:
            # a conditional step the executor skipped (its condition never held): planned, never applied
            fault = Fault(step=step, kind=str(v.get("kind", ev.f)), invoke=ev, outcome=ev)
            by_step[key] = fault
            idx.faults.append(fault)


def _hashable(x: Any) -> Any:
    try:
        hash(x)
        return x
    except TypeError:
        return repr(x)
