"""The fault-plan schema, version 1: what a plan file may say, validated before anything runs.

Why pydantic with ``extra="forbid"`` everywhere: faults are data, and a typo in a plan ("duraton: 5") must
be an error naming the file, line and field, never a silently ignored key that turns a fault test into a no-op
pass. Targets and conditions are checked against a topology model passed as validation context
(``{"model": TopologyModel}``); without one, the reference topology is used.

Times are seconds. ``at`` counts from the start of the fault phase (after ``warmup_s``). A step fires at
``at``, or ``delay`` seconds after its ``after`` condition holds; an ``after`` step starts waiting when the
step before it has fired (so chains like "kill, wait for the failover, kill again" work), for at most
``max_wait`` seconds. A lasting fault ends after ``duration`` or when its ``until`` condition holds (at most
``max_wait`` seconds).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import Field, ValidationInfo, field_validator, model_validator

from harness.faults.kinds import registered
from harness.plans.stepbase import (
    MAX_SECONDS,
    SCHEMA_VERSION,
    SELECTOR_HELP,
    PosSeconds,
    Seconds,
    StepBase,
    TargetSpec,
    _check_target,
    _reference,
    model_from,
)
from harness.plans.targets import SelectorError, Sort, StepRef, check, parse, step_refs, union_sort
from harness.plans.toxics import TOXIC_TYPES, Fraction, Strict, ToxicParams
from harness.topology.model import TopologyModel

__all__ = ["KINDS", "MAX_SECONDS", "STEP_TYPES", "TOXIC_TYPES", "Plan", "Seconds", "Step", "StepBase",
           "ToxicParams"]


# --- other kinds' parameters -------------------------------------------------------------------------------
class NoParams(Strict):
    """Kinds without parameters still take ``params: {}`` so a stray parameter is an error, not ignored."""


class KillParams(Strict):
    signal: Literal["KILL", "TERM"] = "KILL"


class StopParams(Strict):
    timeout_s: Annotated[float, Field(ge=0, le=120)] = 10.0


class PartitionParams(Strict):
    groups: Annotated[list[Annotated[list[str], Field(min_length=1, max_length=32)]],
                      Field(min_length=2, max_length=8, description=f"services, each {SELECTOR_HELP}")]
    direction: Literal["two_way", "one_way"] = Field(
        "two_way", description="one_way: packets from the first group to the others are dropped")

    @field_validator("groups")
    @classmethod
    def _groups_are_services(cls, groups: list[list[str]], info: ValidationInfo) -> list[list[str]]:
        model = model_from(info)
        for group in groups:
            for text in group:
                sort = _check_target(text, model)
                if sort is not None and sort.what != "service":
                    raise ValueError(f"partition groups hold services, but {text!r} denotes links")
        return groups


class DbSettingParams(Strict):
    setting: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]{0,62}(\.[a-z_][a-z0-9_]{0,62})?$",
                                  description="a PostgreSQL parameter, e.g. search_path")]
    value: Annotated[str, Field(min_length=1, max_length=200)]
    reconnect: bool = Field(True, description="terminate the database's sessions so that they reconnect with the "
                                              "setting, as a restart would apply it (the revert never does)")


class DbFailoverParams(Strict):
    mode: Literal["kill_primary", "switchover", "pause_primary", "isolate_primary"]


class ToxicStep(StepBase):
    TARGET: ClassVar[Literal["link"]] = "link"
    kind: Literal["toxic"]
    target: TargetSpec
    params: ToxicParams


class LinkDownStep(StepBase):
    TARGET: ClassVar[Literal["link"]] = "link"
    kind: Literal["link_down"]
    target: TargetSpec
    params: NoParams = NoParams()


class PartitionStep(StepBase):
    TARGET: ClassVar[None] = None
    kind: Literal["partition"]
    params: PartitionParams

    @property
    def groups(self) -> list[list[str]] | None:
        return self.params.groups


class KillStep(StepBase):
    kind: Literal["kill"]
    target: TargetSpec
    params: KillParams = KillParams()


class StopStep(StepBase):
    kind: Literal["stop"]
    target: TargetSpec
    params: StopParams = StopParams()


class PauseStep(StepBase):
    kind: Literal["pause"]
    target: TargetSpec
    params: NoParams = NoParams()


class RestartStep(StepBase):
    INSTANT: ClassVar[bool] = True
    kind: Literal["restart"]
    target: TargetSpec
    params: KillParams = KillParams()


class DbFailoverStep(StepBase):
    TARGET_TAGS: ClassVar[frozenset[str]] = frozenset({"postgres"})
    kind: Literal["db_failover"]
    target: TargetSpec = "primary(postgres)"
    params: DbFailoverParams

    @property
    def is_instant(self) -> bool:
        return self.params.mode == "switchover"


class FormerPrimaryTrapStep(StepBase):
    """Route DB links straight to a PostgreSQL node that is not the primary (after a failover: the former)."""

    TARGET: ClassVar[Literal["link"]] = "link"
    TARGET_TAGS: ClassVar[frozenset[str]] = frozenset({"db"})
    kind: Literal["former_primary_trap"]
    target: TargetSpec
    params: NoParams = NoParams()


class SetPassiveStep(StepBase):
    TARGET_TAGS: ClassVar[frozenset[str]] = frozenset({"participant", "mediator"})
    INSTANT: ClassVar[bool] = True
    kind: Literal["set_passive"]
    target: TargetSpec
    params: NoParams = NoParams()


class DbSettingStep(StepBase):
    """A database-level setting (``ALTER DATABASE .. SET``) on the databases of the target nodes, reverted
    (``RESET``) at heal. Sessions opened meanwhile keep it: a node that retries errors instead of restarting
    keeps its poisoned sessions after the revert."""

    TARGET_TAGS: ClassVar[frozenset[str]] = frozenset({"participant", "mediator", "sequencer"})
    kind: Literal["db_setting"]
    target: TargetSpec
    params: DbSettingParams


#: the kinds written here, then every kind defined in a module of its own (``harness.faults.kinds``: adding a kind
#: is adding one module there; these older ones predate it)
STEP_TYPES: dict[str, type[StepBase]] = {
    "toxic": ToxicStep, "link_down": LinkDownStep, "partition": PartitionStep, "kill": KillStep,
    "stop": StopStep, "pause": PauseStep, "restart": RestartStep, "db_failover": DbFailoverStep,
    "former_primary_trap": FormerPrimaryTrapStep, "set_passive": SetPassiveStep, "db_setting": DbSettingStep,
    **{name: kind.step for name, kind in registered().items()},
}
KINDS = tuple(STEP_TYPES)

Step = Annotated[Union[tuple(STEP_TYPES.values())], Field(discriminator="kind")]  # noqa: UP007 (built at run time)


# --- the plan --------------------------------------------------------------------------------------------
class Workload(Strict):
    """What the clients do during the whole run (warmup, faults, quiet period)."""

    rate: Annotated[float, Field(gt=0, le=10_000, description="submissions per second, all clients")] = 10.0
    clients: Annotated[int, Field(ge=1, le=256, description="concurrent clients; with at least one per participant, "
                                                           "client i submits to participant i mod n")] = 4
    cross_participant_ratio: Fraction = 0.3
    resubmit_ratio: Fraction = 0.05
    duration_s: PosSeconds | None = Field(None, description="default: the whole run")
    participants: Annotated[list[str] | None, Field(min_length=1, description="logical participants the clients "
                                                    "submit to; default: every participant of the target")] = None
    via: Literal["lb", "direct"] = "lb"

    @field_validator("participants")
    @classmethod
    def _known_participants(cls, v: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if v is None:
            return v
        model = model_from(info)
        known = sorted(p for p, reps in model.pairs.items() if model.service(reps[0]).role == "participant")
        if not model.links:  # the postgres-only profile has no participants: nothing to check against
            return v
        for p in v:
            if p not in known:
                raise ValueError(f"unknown participant {p!r} (known: {', '.join(known)})")
        return v


class Expect(Strict):
    """Guards: if the expected event never happened, the run is UNKNOWN, not a pass.

    ``failover_within_s`` turns the failover guard into a requirement as well: each listed pair must serve again
    (a command submitted after the fault hit it completes OK) within that many seconds of the first fault on it,
    while the fault may still last; otherwise invariant 10 FAILS. That is what HA promises: the loss of one
    replica is masked within a bound, not only repaired after the heal.
    """

    failover: list[str] = Field(default_factory=list, description="pairs that must fail over at least once")
    primary_change: bool = False
    failover_within_s: PosSeconds | None = Field(
        None, description="each pair in 'failover' must serve again within this many seconds of the first fault "
                          "that hits it (invariant 10 fails otherwise)")

    @field_validator("failover")
    @classmethod
    def _known_pairs(cls, v: list[str], info: ValidationInfo) -> list[str]:
        pairs = model_from(info).pairs
        for p in v:
            if p not in pairs:
                raise ValueError(f"unknown pair {p!r} (pairs: {', '.join(sorted(pairs))})")
            if len(pairs[p]) < 2:
                raise ValueError(f"pair {p!r} has one replica ({pairs[p][0]}) in this topology: it cannot fail over")
        return v

    @model_validator(mode="after")
    def _within_needs_pairs(self) -> Expect:
        if self.failover_within_s is not None and not self.failover:
            raise ValueError("'failover_within_s' needs the pairs that must fail over in 'failover'")
        return self


class Plan(Strict):
    version: Literal[1]
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,79}$")]
    description: Annotated[str, Field(min_length=1)]
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0
    workload: Workload = Workload()
    warmup_s: Seconds = 5.0
    steps: Annotated[list[Step], Field(max_length=200)]
    quiet_period: PosSeconds = 20.0
    recovery_bound_s: PosSeconds = 15.0
    expect: Expect = Expect()

    @model_validator(mode="after")
    def _cross_references(self, info: ValidationInfo) -> Plan:
        ctx = info.context if isinstance(info.context, dict) else {}
        if ctx.get("skip_cross_references"):
            return self  # the YAML loader runs them itself, to point at the right line
        problems = cross_reference_problems(self, model_from(info))
        if problems:
            raise ValueError("; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in problems))
        return self


def cross_reference_problems(plan: Plan, model: TopologyModel) -> list[tuple[tuple[str | int, ...], str]]:
    """Checks that need the whole plan: step references, condition pairs, recovery bound vs quiet period."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for i, step in enumerate(plan.steps):
        for field, cond in (("after", step.after_condition()), ("until", step.until_condition())):
            if cond is None:
                continue
            if cond.name == "failover" and cond.arg not in model.pairs:
                problems.append((("steps", i, field), f"unknown pair {cond.arg!r} "
                                 f"(pairs: {', '.join(sorted(model.pairs))})"))
            elif cond.name == "failover" and len(model.pairs[str(cond.arg)]) < 2:
                problems.append((("steps", i, field), f"pair {cond.arg!r} has one replica in this topology: "
                                 "it cannot fail over"))
            if cond.name.startswith("step_"):
                n = int(cond.arg)  # type: ignore[arg-type]
                ok = n < i if field == "after" else (n != i and n < len(plan.steps))
                if not ok:
                    problems.append((("steps", i, field), f"{cond} must refer to "
                                     + ("an earlier step" if field == "after" else "another step")))
    problems += step_reference_problems(plan, model)
    if plan.recovery_bound_s > plan.quiet_period:
        problems.append((("recovery_bound_s",), f"{plan.recovery_bound_s:g} exceeds quiet_period "
                         f"({plan.quiet_period:g}): recovery could not be confirmed"))
    return problems


# --- step(N): what an earlier step hit -------------------------------------------------------------------------
Loc = tuple[str | int, ...]


class _Unknown(Exception):
    """A reference to a step whose own targets are broken: that step's error is reported, not this one."""


def step_reference_problems(plan: Plan, model: TopologyModel) -> list[tuple[Loc, str]]:
    """Check every target that holds ``step(N)``: N names an earlier step with a service target (a group that
    exists, for ``step(N, G)``), and what that step hit fits where the reference stands (``db_link(step(0))``
    needs nodes with DB links; a kill's target must be services)."""
    return _References(plan, model).check_all()


@dataclass
class _References:
    plan: Plan
    model: TopologyModel
    problems: list[tuple[Loc, str]] = dataclass_field(default_factory=list)
    #: per step checked so far: the sort of each target (a partition: of each group); None if one did not check
    known: list[list[Sort] | None] = dataclass_field(default_factory=list)

    def check_all(self) -> list[tuple[Loc, str]]:
        for i, step in enumerate(self.plan.steps):
            sorts: list[Sort] | None = []
            if step.groups is not None:
                for gi, group in enumerate(step.groups):
                    members = [self._checked(i, t, ("steps", i, "params", "groups", gi, ti), _group_fit)
                               for ti, t in enumerate(group)]
                    good = [m for m in members if m is not None]
                    sorts = [*sorts, union_sort(good)] if sorts is not None and len(good) == len(members) else None
            else:
                for ti, text in enumerate(step.targets):
                    loc: Loc = ("steps", i, "target") if isinstance(step.target, str) else ("steps", i, "target", ti)
                    sort = self._checked(i, text, loc, step.target_problem)
                    sorts = [*sorts, sort] if sorts is not None and sort is not None else None
            self.known.append(sorts)
        return self.problems

    def _checked(self, i: int, text: str, loc: Loc, fits: Callable[[str, Sort], str | None]) -> Sort | None:
        """The sort of one target of step ``i`` (None, with a problem recorded, if it does not check)."""
        try:
            sel = parse(text)
            sort = check(sel, self.model, steps=lambda ref: self._sort_of(i, ref))
        except _Unknown:
            return None
        except SelectorError as exc:
            self.problems.append((loc, str(exc)))
            return None
        problem = fits(text, sort) if step_refs(sel) else None  # the others were checked field by field
        if problem:
            self.problems.append((loc, problem))
            return None
        return sort

    def _service_sort(self, n: int, group: int | None) -> Sort | None:
        """What step ``n`` hit (its group ``group``), if it hits services."""
        sorts = self.known[n]
        if sorts is None:
            return None
        if self.plan.steps[n].groups is not None and group is not None:
            return sorts[group]
        services = [s for s in sorts if s.what == "service"]
        return union_sort(services) if services else None

    def _nearest(self, i: int) -> str:
        earlier = [n for n in range(i - 1, -1, -1) if self._service_sort(n, None) is not None]
        return f"; did you mean step({earlier[0]})?" if earlier else " (no earlier step hits services)"

    def _sort_of(self, i: int, ref: StepRef) -> Sort:
        n, steps = ref.index, self.plan.steps
        if n == i:
            raise SelectorError(f"{ref} refers to this step itself: name an earlier step{self._nearest(i)}")
        if n >= len(steps):
            raise SelectorError(f"{ref}: there is no step {n} (the plan has {len(steps)}){self._nearest(i)}")
        if n > i:
            raise SelectorError(f"{ref} refers to a later step: step(N) must refer to an earlier step"
                                f"{self._nearest(i)}")
        if self.known[n] is None:
            raise _Unknown
        ref_step, groups = steps[n], steps[n].groups
        if groups is None and ref.group is not None:
            raise SelectorError(f"{ref}: step {n} is a {ref_step.kind_name}, not a partition: write step({n})")
        if groups is not None and ref.group is not None and ref.group >= len(groups):
            raise SelectorError(f"{ref}: step {n} has {len(groups)} groups; write one of "
                                + ", ".join(f"step({n}, {g})" for g in range(len(groups))))
        sort = self._service_sort(n, ref.group)
        if sort is None:
            raise SelectorError(f"{ref}: step {n} ({ref_step.kind_name}) has no service target (its target is "
                                f"links){self._nearest(i)}")
        if ref_step.at is not None and steps[i].at is not None and ref_step.at > steps[i].at:  # type: ignore[operator]
            raise SelectorError(f"{ref}: step {n} fires at {ref_step.at:g} s, after this step ({steps[i].at:g} s): "
                                "fire this one no earlier")
        return sort


def _group_fit(text: str, sort: Sort) -> str | None:
    return None if sort.what == "service" else f"partition groups hold services, but {text!r} denotes links"


def validate_plan(data: Any, model: TopologyModel | None = None) -> Plan:
    """Validate plain data (from YAML/JSON) into a Plan; raises pydantic.ValidationError."""
    return Plan.model_validate(data, context={"model": model or _reference()})


def plan_to_data(plan: Plan) -> dict[str, Any]:
    """Plain data for YAML/JSON output, defaults left out so files stay short; keys in a readable order."""
    data = plan.model_dump(mode="json", exclude_defaults=True)
    data["version"] = SCHEMA_VERSION
    data.setdefault("steps", [])
    order = ["kind", "at", "after", "delay", "target", "params", "duration", "until", "max_wait", "note"]
    data["steps"] = [{k: s[k] for k in order if k in s} for s in data["steps"]]
    head = ["version", "name", "description", "seed", "workload", "warmup_s", "steps", "quiet_period",
            "recovery_bound_s", "expect"]
    return {k: data[k] for k in head if k in data}


def json_schema() -> dict[str, Any]:
    schema = Plan.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://ha-chaos.invalid/fault_plans/schema.json"
    schema["title"] = "ha-chaos fault plan, version 1"
    return schema
