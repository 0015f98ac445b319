"""Schema: round-trips, per-kind rules, the exported JSON Schema is current."""

from __future__ import annotations

import json

import pytest
from _plans_testkit import PLANS_DIR, curated_plans
from pydantic import ValidationError

from harness.plans.cli import schema_text
from harness.plans.loader import dump_plan, load_plan, parse_plan
from harness.plans.schema import KINDS, validate_plan
from harness.plans.timeline import nominal_timeline

pytestmark = pytest.mark.unit


def _plan(**step: object) -> dict:
    return {"version": 1, "name": "t", "description": "d", "steps": [step]}


def test_at_least_13_curated_plans_each_described() -> None:
    plans = curated_plans()
    assert len(plans) >= 13
    for path in plans:
        plan = load_plan(path)
        assert plan.description.strip(), path
        assert plan.name == path.stem, f"{path}: name should match the file name"


@pytest.mark.parametrize("path", curated_plans(), ids=lambda p: p.stem)
def test_curated_plan_round_trips_and_is_short(path) -> None:
    plan = load_plan(path)
    again = parse_plan(dump_plan(plan), "roundtrip")
    assert again == plan
    assert nominal_timeline(plan).total < 90, "curated plans must stay short enough for CI"


def test_curated_plans_cover_every_fault_family() -> None:
    kinds = {s.kind_name for p in curated_plans() for s in load_plan(p).steps}
    modes = {s.params.mode for p in curated_plans() for s in load_plan(p).steps if s.kind_name == "db_failover"}
    assert {"toxic", "link_down", "kill", "pause", "db_failover", "former_primary_trap"} <= kinds
    assert {"kill_primary", "switchover", "isolate_primary"} <= modes


def test_schema_json_is_current() -> None:
    on_disk = (PLANS_DIR / "schema.json").read_text(encoding="utf-8")
    assert on_disk == schema_text(), "run: ha-chaos plan schema --write"
    schema = json.loads(on_disk)
    assert schema["properties"]["version"]["const"] == 1
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize("step, needle", [
    ({"kind": "kill", "target": "p1a", "duration": 1}, "exactly one of 'at'"),
    ({"kind": "kill", "at": 1, "after": "primary_changed", "target": "p1a", "duration": 1}, "exactly one of 'at'"),
    ({"kind": "kill", "at": 1, "target": "p1a"}, "exactly one of 'duration'"),
    ({"kind": "kill", "at": 1, "target": "p1a", "duration": 1, "until": "primary_changed"}, "exactly one"),
    ({"kind": "restart", "at": 1, "target": "p1a", "duration": 1}, "happens once"),
    ({"kind": "kill", "at": 1, "delay": 2, "target": "p1a", "duration": 1}, "only applies with 'after'"),
    ({"kind": "kill", "at": 1, "target": "p1a-db", "duration": 1}, "needs services"),
    ({"kind": "toxic", "at": 1, "target": "p1a", "duration": 1,
      "params": {"type": "latency", "attributes": {"latency": 1}}}, "needs links"),
    ({"kind": "former_primary_trap", "at": 1, "target": "p1a-seq1", "duration": 1}, "needs db"),
    ({"kind": "db_failover", "at": 1, "target": "p1a", "params": {"mode": "kill_primary"}, "duration": 1},
     "needs postgres"),
    ({"kind": "db_failover", "at": 1, "params": {"mode": "switchover"}, "duration": 3}, "happens once"),
    ({"kind": "set_passive", "at": 1, "target": "seq1"}, "needs mediator or participant"),
    ({"kind": "partition", "at": 1, "target": "p1a", "duration": 1,
      "params": {"groups": [["p1a"], ["seq1"]]}}, "takes no target"),
    ({"kind": "partition", "at": 1, "duration": 1, "params": {"groups": [["p1a"], ["p1a-db"]]}}, "denotes links"),
    ({"kind": "toxic", "at": 1, "target": "p1a-db", "duration": 1,
      "params": {"type": "slicer", "attributes": {"average_size": 4, "size_variation": 4}}}, "smaller than"),
    ({"kind": "toxic", "at": 1, "target": "p1a-db", "duration": 1,
      "params": {"type": "latency", "attributes": {"latency": 1}, "toxicity": 1.5}}, "less than or equal"),
    ({"kind": "kill", "at": float("inf"), "target": "p1a", "duration": 1}, "finite"),
    ({"kind": "stop", "at": 1, "target": "p1a", "duration": 1, "params": {"timeout_s": -1}}, "greater than"),
    ({"kind": "db_setting", "at": 1, "target": "pg1", "duration": 1,
      "params": {"setting": "search_path", "value": "x"}}, "needs mediator or participant or sequencer"),
    ({"kind": "db_setting", "at": 1, "target": "p1a", "duration": 1,
      "params": {"setting": "search_path; drop table x", "value": "x"}}, "should match pattern"),
    ({"kind": "db_setting", "at": 1, "target": "p1a", "duration": 1, "params": {"setting": "search_path"}},
     "Field required"),
])
def test_step_rules(step: dict, needle: str) -> None:
    with pytest.raises(ValidationError) as err:
        validate_plan(_plan(**step))
    assert needle in str(err.value)


def test_every_kind_has_a_valid_minimal_step() -> None:
    examples = {
        "toxic": {"target": "p1a-db", "params": {"type": "timeout", "attributes": {"timeout": 0}}},
        "link_down": {"target": "p1a-db"},
        "partition": {"params": {"groups": [["primary(postgres)"], ["all(etcd)", "replica(postgres)"]]}},
        "kill": {"target": "active(p1)"}, "stop": {"target": "any(sequencer)"}, "pause": {"target": "med1a"},
        "restart": {"target": "p2b"}, "db_failover": {"params": {"mode": "pause_primary"}},
        "former_primary_trap": {"target": "db_link(active(p2))"}, "set_passive": {"target": "active(med1)"},
        "db_setting": {"target": "active(p1)", "params": {"setting": "search_path", "value": "nowhere"}},
        "slow_node": {"target": "primary(postgres)", "params": {"cpus": 0.1}},
        "clock": {"target": "any(sequencer)", "params": {"offset_s": -3}},
        "packet_loss": {"target": "active(p1)", "params": {"probability": 0.2}},
    }
    assert set(examples) == set(KINDS)
    for kind, extra in examples.items():
        step = {"kind": kind, "at": 1, **extra}
        if kind in ("restart", "set_passive"):
            assert validate_plan(_plan(**step)).steps[0].is_instant
        else:
            assert not validate_plan(_plan(**step, duration=2)).steps[0].is_instant
            with pytest.raises(ValidationError, match="lasting fault"):
                validate_plan(_plan(**step))


def test_cross_references() -> None:
    base = {"version": 1, "name": "t", "description": "d"}
    kill = {"kind": "kill", "target": "p1a", "duration": 1}
    with pytest.raises(ValidationError, match="earlier step"):
        validate_plan({**base, "steps": [{**kill, "after": "step_applied(0)"}]})
    with pytest.raises(ValidationError, match="unknown pair 'p9'"):
        validate_plan({**base, "steps": [{**kill, "after": "failover(p9)"}]})
    with pytest.raises(ValidationError, match="exceeds quiet_period"):
        validate_plan({**base, "steps": [{**kill, "at": 1}], "quiet_period": 5, "recovery_bound_s": 10})
    with pytest.raises(ValidationError, match="unknown pair"):
        validate_plan({**base, "steps": [{**kill, "at": 1}], "expect": {"failover": ["p7"]}})
    with pytest.raises(ValidationError, match="needs the pairs that must fail over"):
        validate_plan({**base, "steps": [{**kill, "at": 1}], "expect": {"failover_within_s": 10}})
    within = validate_plan({**base, "steps": [{**kill, "at": 1}],
                            "expect": {"failover": ["p1"], "failover_within_s": 10}})
    assert within.expect.failover_within_s == 10
    ok = validate_plan({**base, "steps": [{**kill, "at": 1}, {**kill, "after": "step_healed(0)"}]})
    assert ok.steps[1].after_condition().arg == 0


def test_timeline_follows_chains_of_until_to_their_end() -> None:
    from harness.plans.loader import parse_plan

    plan = parse_plan("""\
version: 1
name: chain
description: step 0 lasts until 1 heals, 1 until 2 heals, 2 lasts 8 s after waiting for 1
warmup_s: 2
steps:
  - {kind: pause, at: 3.5, target: med1a, until: step_healed(1), max_wait: 15}
  - {kind: pause, at: 4.5, target: p1b, until: step_healed(2), max_wait: 15}
  - {kind: pause, after: step_applied(1), target: p2b, duration: 8}
""")
    rows = nominal_timeline(plan).rows
    assert [(r.start, r.end) for r in rows] == [(5.5, 14.5), (6.5, 14.5), (6.5, 14.5)]
    assert not any(r.approximate for r in rows)
