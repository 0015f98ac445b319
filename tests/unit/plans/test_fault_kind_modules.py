"""Fault kinds defined one module each (harness/faults/kinds): one module is all a kind needs to be known to the plan
schema, the generator, the coverage table, the effects model, the shrinker and the live injector's apply and heal."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings

from harness.coverage import universe
from harness.faults.kinds import FaultKind, registered
from harness.plans.injector import Effects, Resolution, default_effects
from harness.plans.schema import KINDS, STEP_TYPES, json_schema, validate_plan
from harness.plans.strategies import GENERATED_KINDS, fault_plans
from harness.topology.model import reference_model

pytestmark = pytest.mark.unit
MODEL = reference_model()
MODULE_KINDS = sorted(registered())


def test_every_module_kind_is_known_everywhere() -> None:
    assert MODULE_KINDS, "no kind is defined by a module of harness.faults.kinds"
    schema_kinds = {v["properties"]["kind"]["const"] for v in json_schema()["$defs"].values()
                    if "kind" in v.get("properties", {}) and "const" in v["properties"]["kind"]}
    for name in MODULE_KINDS:
        kind = registered()[name]
        assert isinstance(kind, FaultKind) and kind.name == name
        assert name in KINDS and STEP_TYPES[name] is kind.step
        assert name in schema_kinds
        assert (name in GENERATED_KINDS) is kind.generated
        assert any(k == name for k, _ in universe(MODEL)) or not kind.applicable(MODEL)


@pytest.mark.parametrize("name", MODULE_KINDS)
def test_a_module_kind_is_drawn_alone_and_validates(name: str) -> None:
    @settings(max_examples=15, deadline=None, database=None)
    @given(fault_plans(MODEL, kinds=[name], min_steps=2))
    def draw(plan: Any) -> None:
        assert {s.kind_name for s in plan.steps} == {name}
        for i, step in enumerate(plan.steps):
            res = Resolution(i, f"hc-t-s{i}", ["p1a"])
            assert isinstance(default_effects(step, res, MODEL), Effects)
        validate_plan(plan.model_dump(mode="json", exclude_none=True), MODEL)

    draw()


def test_the_live_injector_routes_apply_and_heal_of_a_module_kind_to_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.faults import kinds
    from harness.faults.live import LiveInjector

    calls: list[tuple[str, Any]] = []
    name = "slow_node"
    kind = registered()[name]
    monkeypatch.setattr(kind, "apply", lambda live, step, res: (calls.append(("apply", res.targets))
                                                                 or (lambda: True, {"services": res.targets})))
    monkeypatch.setattr(kind, "heal", lambda live, record, targets, fid: calls.append(("heal", record)))
    assert kinds.kind(name) is kind

    class Topo:
        model = MODEL

    inj = LiveInjector(Topo(), proxy=object())  # type: ignore[arg-type]
    step = STEP_TYPES[name].model_validate({"kind": name, "at": 0, "duration": 1, "target": "p1a"},
                                           context={"model": MODEL})
    applied = inj.apply(step, Resolution(0, "hc-t-s0", ["p1a"]))
    assert applied.verify() and applied.record["kind"] == name
    applied.undo()
    assert calls == [("apply", ["p1a"]), ("heal", applied.record)]
