"""What every fault step has, whatever its kind: timing (``at``/``after``/``delay``), a target, a duration or an
``until`` condition, and the checks of those against a topology model. Apart from ``harness.plans.schema`` so that
the fault kinds defined one module each (``harness.faults.kinds``) can build their step models on it while the
schema collects them into the plan's step union.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from harness.plans.conditions import Condition, parse_condition
from harness.plans.targets import Selector, SelectorError, Sort, StepRef, check, parse, step_refs
from harness.plans.toxics import Strict
from harness.topology.model import TopologyModel, reference_model

SCHEMA_VERSION = 1
MAX_SECONDS = 3600.0

Seconds = Annotated[float, Field(ge=0, le=MAX_SECONDS)]
PosSeconds = Annotated[float, Field(gt=0, le=MAX_SECONDS)]
SELECTOR_HELP = ("a service or link name (p1a, p1a-db) or a selector resolved when the step fires: active(P) "
                 "passive(P) primary(postgres) replica(postgres) any(G) all(G) k_of(G, K) db_link(S) seq_links(S) "
                 "seq_link(S, SEQ) links(S); step(N) is what earlier step N hit when it fired, step(N, G) group G "
                 "of partition step N")
TargetSpec = Annotated[str | Annotated[list[str], Field(min_length=1, max_length=32)],
                       Field(description=f"{SELECTOR_HELP}; or a list of them")]




def model_from(info: ValidationInfo) -> TopologyModel:
    ctx = info.context if isinstance(info.context, dict) else {}
    model = ctx.get("model")
    return model if isinstance(model, TopologyModel) else _reference()


_REFERENCE: list[TopologyModel] = []


def _reference() -> TopologyModel:
    if not _REFERENCE:
        _REFERENCE.append(reference_model())
    return _REFERENCE[0]



# --- steps -----------------------------------------------------------------------------------------------
def _check_target(text: str, model: TopologyModel) -> Sort | None:
    """The sort of one target text; None for one that holds ``step(N)``: that needs the whole plan, and
    ``cross_reference_problems`` checks it (its syntax is checked here)."""
    try:
        sel = parse(text)
        return None if step_refs(sel) else check(sel, model)
    except SelectorError as exc:
        raise ValueError(str(exc)) from None


class StepBase(Strict):
    """Timing and target shared by every kind. Subclasses say what their target must denote."""

    #: "service" / "link" / None (no target); roles or link kinds the target may have (empty = any)
    TARGET: ClassVar[Literal["service", "link"] | None] = "service"
    TARGET_TAGS: ClassVar[frozenset[str]] = frozenset()
    #: instant kinds happen once (restart, switchover): no duration, nothing lasting to heal
    INSTANT: ClassVar[bool] = False

    at: Seconds | None = None
    after: str | None = Field(
        None, description="primary_changed | failover(PAIR) | step_applied(N) | step_healed(N)")
    delay: Seconds = 0.0
    max_wait: PosSeconds = Field(60.0, description="upper bound for any condition this step waits on")
    target: TargetSpec | None = None
    duration: PosSeconds | None = None
    until: str | None = None
    note: str | None = None

    @field_validator("after", "until")
    @classmethod
    def _condition_syntax(cls, v: str | None) -> str | None:
        if v is not None:
            parse_condition(v)
        return v

    @field_validator("target")
    @classmethod
    def _target_fits(cls, v: TargetSpec | None, info: ValidationInfo) -> TargetSpec | None:
        if v is None:
            return v
        if cls.TARGET is None:
            raise ValueError("this kind takes no target (see params)")
        model = model_from(info)
        for text in [v] if isinstance(v, str) else v:
            sort = _check_target(text, model)
            problem = cls.target_problem(text, sort) if sort is not None else None
            if problem:
                raise ValueError(problem)
        return v

    @classmethod
    def target_problem(cls, text: str, sort: Sort) -> str | None:
        """Why a target of this sort does not fit this kind (None: it fits)."""
        if sort.what != cls.TARGET:
            return f"{text!r} denotes {sort.what}s, but this kind needs {cls.TARGET}s"
        if cls.TARGET_TAGS and not sort.tags <= cls.TARGET_TAGS:
            return (f"{text!r} may be a {'/'.join(sorted(sort.tags))}; this kind needs "
                    f"{' or '.join(sorted(cls.TARGET_TAGS))}")
        return None

    @model_validator(mode="after")
    def _timing(self) -> StepBase:
        if (self.at is None) == (self.after is None):
            raise ValueError("give exactly one of 'at' (seconds) or 'after' (a condition)")
        if self.at is not None and self.delay:
            raise ValueError("'delay' only applies with 'after'; add it to 'at' instead")
        if self.is_instant:
            if self.duration is not None or self.until is not None:
                raise ValueError(f"{self.kind_name} happens once: remove 'duration'/'until'")
        elif (self.duration is None) == (self.until is None):
            raise ValueError("a lasting fault needs exactly one of 'duration' (seconds) "
                             "or 'until' (a condition)")
        if self.TARGET is not None and self.target is None:
            raise ValueError("'target' is required for this kind")
        return self

    # --- helpers used by the executor, the timeline and the shrinker -----------------------------------
    @property
    def kind_name(self) -> str:
        return str(getattr(self, "kind", "?"))

    @property
    def is_instant(self) -> bool:
        return self.INSTANT

    @property
    def targets(self) -> list[str]:
        if self.target is None:
            return []
        return [self.target] if isinstance(self.target, str) else list(self.target)

    def selectors(self) -> list[Selector]:
        return [parse(t) for t in self.targets]

    @property
    def groups(self) -> list[list[str]] | None:
        """A partition's groups as written; None for the other kinds."""
        return None

    def step_references(self) -> list[StepRef]:
        """Every ``step(N)`` in this step's targets and partition groups."""
        texts = self.targets + [t for g in self.groups or [] for t in g]
        return [r for t in texts for r in step_refs(parse(t))]

    def after_condition(self) -> Condition | None:
        return parse_condition(self.after) if self.after else None

    def until_condition(self) -> Condition | None:
        return parse_condition(self.until) if self.until else None
