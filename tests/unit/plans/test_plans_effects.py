"""What a fault cuts (``default_effects``): the history's ``cuts_db`` / ``cuts_sequencer`` feed invariant 11."""

from __future__ import annotations

import pytest

from harness.plans.injector import Resolution, default_effects
from harness.plans.schema import validate_plan
from harness.topology.model import TopologyModel

pytestmark = pytest.mark.unit


def _partition(groups: list[list[str]], model: TopologyModel) -> object:
    plan = validate_plan({"version": 1, "name": "t", "description": "d", "steps": [
        {"kind": "partition", "at": 1, "duration": 1, "params": {"groups": groups}}]}, model)
    return plan.steps[0]


@pytest.mark.parametrize("groups, cuts_db, cuts_seq", [
    ([["p1a"], ["pg1"]], ["p1a"], []),                          # a node from a PostgreSQL member: its DB path
    ([["pg-lb"], ["p1a", "seq2"]], ["p1a", "seq2"], []),         # pg-lb stands for every member
    ([["p1a"], ["seq2"]], [], ["p1a"]),                         # a node from one sequencer: that link only
    ([["p1a"], ["faultproxy"]], ["p1a"], ["p1a"]),              # everything goes through the proxy
    ([["p1a"], ["p1b"]], [], []),                               # replicas do not talk to each other
    ([["etcd1", "pg2"], ["pg1"]], [], []),                      # no node in it
])
def test_partition_effects(groups: list[list[str]], cuts_db: list[str], cuts_seq: list[str],
                           model: TopologyModel) -> None:
    step = _partition(groups, model)
    res = Resolution(0, "hc-t-s0", [s for g in groups for s in g], groups)
    eff = default_effects(step, res, model)  # type: ignore[arg-type]
    assert (eff.cuts_db, eff.cuts_sequencer) == (cuts_db, cuts_seq)


def test_db_setting_cuts_nothing(model: TopologyModel) -> None:
    plan = validate_plan({"version": 1, "name": "t", "description": "d", "steps": [
        {"kind": "db_setting", "at": 1, "duration": 1, "target": "p1a",
         "params": {"setting": "search_path", "value": "nowhere"}}]}, model)
    eff = default_effects(plan.steps[0], Resolution(0, "hc-t-s0", ["p1a"]), model)
    assert (eff.cuts_db, eff.cuts_sequencer, eff.stops) == ([], [], [])
    assert model.database("p1a") == "p1" and model.database("seq3") == "sequencer" and model.database("med1b") == "med1"
