"""``step(N)``: aim a later step at what an earlier step hit (issue 12 item 5).

The case behind it: pause-active-participant partitioned ``active(p1)`` from PostgreSQL, the partition took 4.5 s,
and its second step (``pause active(p1)``) then re-resolved the role mid-failover and found no active replica for
10 s: a harness error. ``step(0, 0)`` pauses the replica step 0 partitioned, whatever the roles did meanwhile.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from _plans_testkit import PLANS_DIR
from pydantic import ValidationError

from harness.cli import main
from harness.history import HistoryWriter, read_history
from harness.plans.executor import Executor
from harness.plans.fakes import FakeClock, FakeInjector
from harness.plans.loader import PlanError, load_plan, parse_plan
from harness.plans.schema import validate_plan
from harness.plans.shrink import candidates
from harness.plans.targets import (
    FakeView,
    ResolutionError,
    SelectorError,
    StepRef,
    check,
    parse,
    resolve,
    step_refs,
    substitute_steps,
)
from harness.plans.timeline import nominal_timeline
from harness.topology.model import TopologyModel

pytestmark = pytest.mark.unit

HEAD = "version: 1\nname: t\ndescription: d\nwarmup_s: 2\nquiet_period: 10\nrecovery_bound_s: 5\nsteps:\n"
CUT_P1 = """\
  - kind: partition
    at: 1
    params: {groups: [[active(p1)], [primary(postgres)]]}
    duration: 6
"""


def _problems(steps: str) -> list[str]:
    with pytest.raises(PlanError) as err:
        parse_plan(HEAD + steps, "plan.yaml")
    return [str(p) for p in err.value.problems]


def _run(tmp_path: Path, model: TopologyModel, steps: str):  # type: ignore[no-untyped-def]
    plan = parse_plan(HEAD + steps)
    view = FakeView.initial(model)
    inj = FakeInjector(view)
    with HistoryWriter(tmp_path / "history.jsonl") as hist:
        result = Executor(plan, inj, view, hist, tmp_path, clock=FakeClock(), run_id="r").run()
    events = read_history(tmp_path / "history.jsonl")
    fired = {e.value["step"]: e for e in events if e.process == "nemesis" and e.type == "ok" and e.f != "heal"}
    return result, fired, events


# --- grammar ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, refs", [
    ("step(0)", [StepRef(0)]),
    ("step(2, 1)", [StepRef(2, 1)]),
    ("db_link(step(0))", [StepRef(0)]),
    ("any(step(1))", [StepRef(1)]),
    ("k_of(step(1, 0), 2)", [StepRef(1, 0)]),
    ("seq_link(step(0), step(1))", [StepRef(0), StepRef(1)]),
])
def test_step_references_parse_and_print_back(text: str, refs: list[StepRef]) -> None:
    sel = parse(text)
    assert str(sel) == text
    assert step_refs(sel) == refs


@pytest.mark.parametrize("text, needle", [
    ("step(p1)", "step(N) takes the index of an earlier step"),
    ("step()", "step(N) takes the index of an earlier step"),
    ("step(0, p1)", "a group index as its second argument"),
    ("step(0, 1, 2)", "expected ')'"),
    ("step(0", "found end of target; inside a YAML [...] or {...}, quote a target that holds a comma"),
    ("stpe(0)", "did you mean 'step'"),
])
def test_malformed_step_references(text: str, needle: str) -> None:
    with pytest.raises(SelectorError) as err:
        parse(text)
    assert needle in str(err.value)


def test_a_step_reference_needs_the_plan_to_check_and_the_record_to_resolve(model: TopologyModel) -> None:
    with pytest.raises(SelectorError, match="check it with the whole plan"):
        check(parse("step(0)"), model)
    with pytest.raises(ResolutionError, match="no record of the plan's earlier steps"):
        resolve("step(0)", FakeView.initial(model), random.Random(0))
    hit = {StepRef(0): ["p1a"], StepRef(1): ["p1a", "pg1"], StepRef(1, 1): ["pg1"]}
    view = FakeView.initial(model)
    view.actives["p1"] = "p1b"  # the role moved; the reference does not
    assert resolve("step(0)", view, random.Random(0), steps=hit.__getitem__) == ["p1a"]
    assert resolve("db_link(step(0))", view, random.Random(0), steps=hit.__getitem__) == ["p1a-db"]
    assert resolve("step(1, 1)", view, random.Random(0), steps=hit.__getitem__) == ["pg1"]
    assert resolve("any(step(1))", view, random.Random(0), steps=hit.__getitem__)[0] in {"p1a", "pg1"}


# --- validation -------------------------------------------------------------------------------------------
def test_valid_references_as_targets_and_in_partition_groups() -> None:
    plan = parse_plan(HEAD + CUT_P1 + """\
  - kind: pause
    at: 1
    target: step(0, 0)
    duration: 6
  - kind: link_down
    at: 2
    target: db_link(step(1))
    duration: 1
  - kind: partition
    at: 3
    params: {groups: [[step(1)], [any(sequencer)]]}
    duration: 1
  - kind: db_failover
    at: 4
    params: {mode: kill_primary}
    duration: 2
  - kind: stop
    at: 5
    target: [step(4), 'step(0, 1)']
    duration: 1
""")
    assert [str(r) for s in plan.steps for r in s.step_references()] == [
        "step(0, 0)", "step(1)", "step(1)", "step(4)", "step(0, 1)"]


@pytest.mark.parametrize("steps, line, field, needle", [
    ("  - {kind: kill, at: 1, target: step(0), duration: 1}\n", 8, "steps[0].target",
     "step(0) refers to this step itself: name an earlier step (no earlier step hits services)"),
    (CUT_P1 + "  - {kind: kill, at: 1, target: step(1), duration: 1}\n", 12, "steps[1].target",
     "step(1) refers to this step itself: name an earlier step; did you mean step(0)?"),
    (CUT_P1 + "  - {kind: kill, at: 1, target: step(2), duration: 1}\n"
              "  - {kind: kill, at: 1, target: p1b, duration: 1}\n", 12, "steps[1].target",
     "step(2) refers to a later step: step(N) must refer to an earlier step; did you mean step(0)?"),
    (CUT_P1 + "  - {kind: kill, at: 1, target: step(9), duration: 1}\n", 12, "steps[1].target",
     "step(9): there is no step 9 (the plan has 2); did you mean step(0)?"),
    ("  - {kind: link_down, at: 1, target: p1a-db, duration: 1}\n"
     "  - {kind: kill, at: 1, target: step(0), duration: 1}\n", 9, "steps[1].target",
     "step(0): step 0 (link_down) has no service target (its target is links) (no earlier step hits services)"),
    ("  - {kind: kill, at: 1, target: p1a, duration: 1}\n"
     "  - {kind: kill, at: 1, target: 'step(0, 0)', duration: 1}\n", 9, "steps[1].target",
     "step(0, 0): step 0 is a kill, not a partition: write step(0)"),
    (CUT_P1 + "  - {kind: kill, at: 1, target: 'step(0, 2)', duration: 1}\n", 12, "steps[1].target",
     "step(0, 2): step 0 has 2 groups; write one of step(0, 0), step(0, 1)"),
    ("  - {kind: kill, at: 1, target: active(p1), duration: 1}\n"
     "  - {kind: db_failover, at: 1, target: step(0), params: {mode: kill_primary}, duration: 1}\n",
     9, "steps[1].target", "'step(0)' may be a participant; this kind needs postgres"),
    ("  - {kind: kill, at: 1, target: primary(postgres), duration: 1}\n"
     "  - {kind: link_down, at: 1, target: db_link(step(0)), duration: 1}\n", 9, "steps[1].target",
     "db_link(): step(0) (postgres) has no such links"),
    ("  - {kind: kill, at: 1, target: p1a, duration: 1}\n"
     "  - {kind: link_down, at: 1, target: step(0), duration: 1}\n", 9, "steps[1].target",
     "'step(0)' denotes services, but this kind needs links"),
    ("  - {kind: kill, at: 1, target: [p2a, p1a], duration: 1}\n"
     "  - {kind: stop, at: 1, target: [p1b, step(3)], duration: 1}\n", 9, "steps[1].target[1]",
     "step(3): there is no step 3 (the plan has 2); did you mean step(0)?"),
    ("  - {kind: kill, at: 10, target: p1a, duration: 1}\n"
     "  - {kind: pause, at: 5, target: step(0), duration: 1}\n", 9, "steps[1].target",
     "step(0): step 0 fires at 10 s, after this step (5 s): fire this one no earlier"),
    (CUT_P1 + "  - kind: partition\n    at: 2\n    params:\n      groups:\n        - ['step(0, 0)']\n"
              "        - [any(sequencer), step(5)]\n    duration: 1\n", 17, "steps[1].params.groups[1][1]",
     "step(5): there is no step 5 (the plan has 2); did you mean step(0)?"),
])
def test_bad_references_name_file_line_and_field(steps: str, line: int, field: str, needle: str) -> None:
    (prob,) = _problems(steps)
    assert prob == f"plan.yaml:{line}: {field}: {needle}", prob


def test_validation_without_the_loader_rejects_them_too() -> None:
    data = {"version": 1, "name": "t", "description": "d", "steps": [
        {"kind": "kill", "at": 1, "target": "step(1)", "duration": 1},
        {"kind": "kill", "at": 1, "target": "p1a", "duration": 1}]}
    with pytest.raises(ValidationError, match=r"steps\.0\.target: step\(1\) refers to a later step"):
        validate_plan(data)


# --- execution --------------------------------------------------------------------------------------------
def test_the_curated_plan_pauses_the_replica_it_partitioned(tmp_path: Path, model: TopologyModel) -> None:
    """The fake fails p1 over the moment p1a is cut from PostgreSQL: active(p1) would now be p1b."""
    plan = load_plan(PLANS_DIR / "pause-active-participant.yaml")
    view = FakeView.initial(model)
    with HistoryWriter(tmp_path / "history.jsonl") as hist:
        result = Executor(plan, FakeInjector(view), view, hist, tmp_path, clock=FakeClock(), run_id="r").run()
    assert not result.harness_error
    ok = {e.value["step"]: e.value for e in read_history(tmp_path / "history.jsonl")
          if e.process == "nemesis" and e.type == "ok" and e.f != "heal"}
    assert ok[0]["groups"] == [["p1a"], ["pg1"]]
    assert ok[1]["target"] == "step(0, 0)" and ok[1]["resolved"] == ["p1a"]
    assert view.active("p1") == "p1b"


def test_a_reference_resolves_to_what_the_step_hit_not_the_role_now(tmp_path: Path, model: TopologyModel) -> None:
    result, fired, _ = _run(tmp_path, model, """\
  - {kind: kill, at: 1, target: active(p1), duration: 5}
  - {kind: link_down, at: 2, target: db_link(step(0)), duration: 1}
  - {kind: kill, at: 3, target: active(p1), duration: 1}
""")
    assert not result.harness_error
    assert fired[0].value["resolved"] == ["p1a"]
    assert fired[1].value["resolved"] == ["p1a-db"]
    assert fired[2].value["resolved"] == ["p1b"]  # the role moved; only step(N) stays put


def test_a_step_waits_for_the_step_it_aims_at(tmp_path: Path, model: TopologyModel) -> None:
    result, fired, _ = _run(tmp_path, model, """\
  - {kind: db_failover, at: 1, params: {mode: switchover}}
  - {kind: kill, after: primary_changed, delay: 2, target: active(p2), duration: 3}
  - {kind: pause, at: 1, target: step(1), duration: 1}
""")
    assert not result.harness_error
    assert fired[2].value["resolved"] == fired[1].value["resolved"] == ["p2a"]
    assert fired[2].t >= fired[1].t > 1
    rows = nominal_timeline(parse_plan(HEAD + "  - {kind: db_failover, at: 1, params: {mode: switchover}}\n"
                                       "  - {kind: kill, after: primary_changed, target: p1a, duration: 3}\n"
                                       "  - {kind: pause, at: 1, target: step(1), duration: 1}\n")).rows
    assert rows[2].start == rows[1].start > rows[0].start and rows[2].approximate


def test_a_step_aiming_at_a_skipped_step_is_skipped(tmp_path: Path, model: TopologyModel) -> None:
    result, fired, events = _run(tmp_path, model, """\
  - {kind: kill, after: failover(p2), max_wait: 2, target: active(p2), duration: 1}
  - {kind: pause, at: 1, target: step(0), duration: 1}
""")
    assert not result.harness_error and result.skipped == [0, 1] and not fired
    skipped = [e.value["skipped"] for e in events if e.process == "nemesis" and e.type == "info"]
    assert skipped[1] == "step(0) skipped without hitting anything: nothing to aim at"


def test_dry_run_of_the_changed_plan(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "dry-run", str(PLANS_DIR / "pause-active-participant.yaml")]) == 0
    out = capsys.readouterr().out
    assert "faults left in effect on the fake: 0" in out
    pause = [line for line in out.splitlines() if " ok " in line and "pause" in line]
    assert pause and pause[0].rstrip().endswith("p1a"), out


# --- shrinking --------------------------------------------------------------------------------------------
def test_shrinking_renumbers_references_or_writes_out_what_a_removed_step_named() -> None:
    plan = parse_plan(HEAD + "  - {kind: kill, at: 1, target: p2a, duration: 1}\n" + CUT_P1.replace("at: 1", "at: 2")
                      + "  - {kind: pause, at: 2, target: 'step(1, 0)', duration: 1}\n"
                      + "  - {kind: link_down, at: 3, target: db_link(step(2)), duration: 1}\n")
    found = dict(candidates(plan))
    without_0 = found["remove step 0"]["steps"]
    assert [s.get("target") for s in without_0] == [None, "step(0, 0)", "db_link(step(1))"]
    without_1 = found["remove step 1"]["steps"]
    assert [s.get("target") for s in without_1] == ["p2a", "active(p1)", "db_link(step(1))"]
    both = found["remove steps 0..1"]["steps"]
    assert [s.get("target") for s in both] == ["active(p1)", "db_link(step(0))"]
    for label in ("remove step 0", "remove step 1", "remove steps 0..1"):
        validate_plan(found[label])


def test_a_reference_with_no_single_equivalent_keeps_its_step() -> None:
    plan = parse_plan(HEAD + "  - {kind: kill, at: 1, target: [p1a, p2a], duration: 1}\n"
                      "  - {kind: link_down, at: 2, target: db_link(step(0)), duration: 1}\n"
                      "  - {kind: pause, at: 2, target: step(0), duration: 1}\n")
    labels = [label for label, _ in candidates(plan)]
    assert "remove step 0" not in labels and "remove step 1" in labels
    assert substitute_steps(parse("step(0)"), lambda r: [parse("p1a"), parse("p2a")]) == [parse("p1a"), parse("p2a")]
    with pytest.raises(SelectorError, match="stands for 2 selectors inside db_link"):
        substitute_steps(parse("db_link(step(0))"), lambda r: [parse("p1a"), parse("p2a")])
