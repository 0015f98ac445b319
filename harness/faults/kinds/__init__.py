"""Fault kinds defined one module each (issue 15 item 4): adding a kind is adding one module to this package.

A module here defines one subclass of ``FaultKind`` and binds an instance of it to ``KIND``. That one class holds
everything the harness needs to know about the kind:

- ``step``: its pydantic step model (a ``harness.plans.stepbase.StepBase`` with ``kind: Literal[<name>]`` and its
  parameter model): the plan schema collects it into the plan's step union, so plan files, ``ha-chaos plan
  validate``, the JSON Schema and the Hypothesis-generated plans know the kind;
- ``applicable`` / ``target`` / ``params``: where and how Hypothesis draws it (the swarm's kinds include it);
- ``coverage_roles``: the rows it adds to the coverage table;
- ``effects``: what it cuts or stops while it lasts, as recorded for the checkers;
- ``weaker``: simpler variants of its parameters, for the shrinker;
- ``apply``: makes the fault happen on a live topology and returns ``(verify, record)``: ``verify`` observes the
  effect, ``record`` is what the journal keeps;
- ``heal``: undoes it from that record alone. The executor's own undo and ``ha-chaos heal`` after a crash are this
  same method.

``apply`` and ``heal`` get the live injector (``harness.faults.live.LiveInjector``) for its plumbing: ``topo`` (the
topology and its target), ``container(service)`` (a freshly inspected Docker container) and ``wait``; a kind module
imports no Docker client of its own. The kinds written before this package (toxic, partition, kill, ...) still
live in ``harness.plans.schema`` / ``strategies`` / ``injector`` and ``harness.faults.live``.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

    from harness.plans.injector import Effects, Resolution
    from harness.plans.stepbase import StepBase
    from harness.topology.model import TopologyModel

#: the target roles generated faults aim at (``harness.plans.strategies.TARGET_ROLES``)
NODE_ROLES = ("participant", "mediator", "sequencer")


class FaultKind:
    """One fault kind; see the package docstring. Subclasses set ``name`` and ``step`` and write ``apply``,
    ``heal``, ``target`` and ``params``; the rest has defaults."""

    name: ClassVar[str]
    step: ClassVar[type[StepBase]]
    #: drawn by Hypothesis (swarm and ``--generate``); False for kinds that only make sense as deliberate scenarios
    generated: ClassVar[bool] = True

    # --- generation and coverage ------------------------------------------------------------------------------
    def applicable(self, model: TopologyModel) -> bool:
        """Whether the kind can hit anything on ``model`` (restricted to a swarm's roles)."""
        return True

    def target(self, model: TopologyModel) -> SearchStrategy[str | None]:
        """Where Hypothesis aims the kind (default: the services the older container kinds aim at)."""
        from harness.plans.strategies import service_targets

        return service_targets(model)

    def params(self, model: TopologyModel) -> SearchStrategy[dict[str, Any] | None]:
        from hypothesis import strategies as st

        return st.none()

    def coverage_roles(self, model: TopologyModel, service_roles: list[str]) -> list[str]:
        """The fine target roles (``harness.coverage.service_roles``) this kind can hit on ``model``."""
        return service_roles

    def weaker(self, params: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        """Simpler parameter variants, each with a short description (for the shrinker)."""
        return iter(())

    # --- meaning ---------------------------------------------------------------------------------------------
    def effects(self, step: StepBase, resolved: Resolution, model: TopologyModel) -> Effects:
        """What the fault cuts or stops while it lasts (default: nothing a checker must excuse)."""
        from harness.plans.injector import Effects

        return Effects()

    # --- live ---------------------------------------------------------------------------------------------------
    def apply(self, live: Any, step: Any, res: Resolution) -> tuple[Callable[[], bool], dict[str, Any]]:
        raise NotImplementedError

    def heal(self, live: Any, record: dict[str, Any], targets: list[str], fault_id: str) -> None:
        raise NotImplementedError


@functools.cache
def registered() -> dict[str, FaultKind]:
    """Every kind defined in this package, by name (modules in name order; a module without ``KIND`` is plumbing)."""
    out: dict[str, FaultKind] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        kind = getattr(importlib.import_module(f"{__name__}.{info.name}"), "KIND", None)
        if kind is None:
            continue
        if not isinstance(kind, FaultKind):
            raise TypeError(f"{__name__}.{info.name}.KIND is not a FaultKind")
        if kind.name in out:
            raise TypeError(f"fault kind {kind.name!r} is defined twice")
        out[kind.name] = kind
    return out


def kind(name: str) -> FaultKind | None:
    """The module-defined kind called ``name`` (None for the older kinds and unknown names)."""
    return registered().get(name)
