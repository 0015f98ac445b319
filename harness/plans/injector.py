"""The seam between the plan executor and the fault primitives: what an injector must offer.

Why a protocol here and not in ``harness/faults``: the executor (timeline, journal, guaranteed heal) must be
testable without Docker, and the live primitives (proxy toxics, iptables, docker kill/pause, Patroni) are built
separately. Anything that implements ``FaultInjector`` plugs in; ``harness.plans.fakes`` has an in-memory one.

Contract for implementers:
- ``apply`` makes the fault happen and returns an ``Applied`` at once; it may raise (the executor records a
  ``fail``). It must name everything it creates after ``Resolution.fault_id`` (toxic names, iptables comments),
  so that an undo from the journal alone, after a crash of the harness, finds what to remove.
- ``Applied.verify`` returns True only when the effect was *observed* (the toxic is listed, the container is
  paused, the primary changed); it may poll with its own timeout. False or an exception is a harness error.
- ``Applied.undo`` and ``FaultInjector.heal`` are idempotent: healing what is not in effect is a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from harness.plans.stepbase import StepBase
from harness.topology.model import TopologyModel


class Infeasible(Exception):
    """``apply`` found the fault impossible in the current state, which the plan's own faults may have made (a
    switchover Patroni refuses because the only standby is cut off): nothing was applied. A generated plan's step
    is then skipped with this reason; for a curated plan it is a failed step like any other."""


@dataclass(frozen=True)
class Resolution:
    """What a step means at the moment it fires: concrete names, plus a stable id for what it creates."""

    index: int
    fault_id: str  # e.g. "hc-<run>-s3": prefix of toxic names / iptables comments
    targets: list[str]  # services or links (partition: every member of every group)
    groups: list[list[str]] | None = None  # partition only


@dataclass(frozen=True)
class Effects:
    """What the fault does to which replicas while it lasts, as recorded in the history for the checkers."""

    cuts_db: list[str] = field(default_factory=list)
    cuts_sequencer: list[str] = field(default_factory=list)
    stops: list[str] = field(default_factory=list)


class Applied(Protocol):
    """A fault that has been applied (maybe not yet taken effect)."""

    effects: Effects
    #: JSON-able data the injector needs to undo this fault from the journal alone (written after apply)
    record: dict[str, Any]

    def verify(self) -> bool: ...

    def undo(self) -> None: ...


class FaultInjector(Protocol):
    def apply(self, step: StepBase, resolved: Resolution) -> Applied: ...

    def heal(self, entry: dict[str, Any]) -> None:
        """Undo a fault from its journal entry (keys of ``JournalEntry``); idempotent."""
        ...


# --- a default effect model, so injectors and fakes agree on what a fault cuts --------------------------------
CUTTING_TOXICS = {"timeout", "reset_peer"}


def _toxic_cuts(step: StepBase) -> bool:
    params = getattr(step, "params", None)
    typ = getattr(params, "type", "")
    attrs = getattr(params, "attributes", None)
    full = getattr(params, "toxicity", 1.0) >= 1.0
    if typ in CUTTING_TOXICS:
        return full
    if typ == "bandwidth":
        return full and getattr(attrs, "rate", 1) == 0
    if typ == "limit_data":
        return full and getattr(attrs, "bytes", 1) == 0
    return False


def default_effects(step: StepBase, resolved: Resolution, model: TopologyModel,
                    primary: str | None = None) -> Effects:
    """The effects implied by the kind and the resolved targets, from the static model.

    Partitions: a group holding the fault proxy cuts the other groups' nodes from both the database and the
    sequencers (all their traffic goes through it); a group holding a PostgreSQL member or pg-lb cuts the other
    groups' nodes from the database, one holding a sequencer cuts them from that sequencer (the live injector
    cuts those paths through the proxies).
    """
    kind = step.kind_name
    from harness.faults.kinds import kind as module_kind  # here: the kinds' modules build on this module

    defined = module_kind(kind)
    if defined is not None:
        return defined.effects(step, resolved, model)
    links = {lk.name: lk for lk in model.links}
    cuts_db: list[str] = []
    cuts_seq: list[str] = []
    stops: list[str] = []
    if kind in ("toxic", "link_down", "former_primary_trap"):
        if kind != "toxic" or _toxic_cuts(step):
            for t in resolved.targets:
                lk = links.get(t)
                if lk is None:
                    continue
                (cuts_db if lk.kind == "db" else cuts_seq).append(lk.client)
    elif kind in ("kill", "stop", "pause", "restart"):
        stops = list(resolved.targets)
    elif kind == "db_failover":
        mode = getattr(getattr(step, "params", None), "mode", "")
        if mode in ("kill_primary", "pause_primary"):
            stops = list(resolved.targets)
    elif kind == "partition" and resolved.groups:
        clients = {lk.client for lk in model.links}
        roles = {s.name: s.role for s in model.services}
        for gi, group in enumerate(resolved.groups):
            others = [s for gj, g in enumerate(resolved.groups) if gj != gi for s in g if s in clients]
            if "faultproxy" in group:
                cuts_db += others
                cuts_seq += [s for s in others if model.links_of(s, "sequencer")]
                continue
            if any(roles.get(s) in ("postgres", "pg-lb") for s in group):
                cuts_db += [s for s in others if model.links_of(s, "db")]
            cuts_seq += [s for s in others for lk in model.links_of(s, "sequencer") if lk.upstream_service in group]
    return Effects(sorted(set(cuts_db)), sorted(set(cuts_seq)), sorted(set(stops)))
