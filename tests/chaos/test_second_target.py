"""A deployment of another shape, described only by its target file (issue 13): targets/small.yaml (one
participant pair, two sequencers, one mediator replica) starts from its own compose file, and a curated plan that
applies to it passes on correct nodes; its run records that target, so the checkers judged its pairs."""

from __future__ import annotations

import json

import pytest

from harness.pytest_plugin import describe
from harness.topology.target import TARGETS_DIR

pytestmark = pytest.mark.chaos


def test_a_curated_plan_passes_on_the_small_target(topology_factory, chaos_run) -> None:
    topo = topology_factory("full", target=str(TARGETS_DIR / "small.yaml"))
    assert topo.target.name == "small" and sorted(topo.containers()) == sorted(
        [*topo.model.service_names, "faultproxy-init"])
    outcome = chaos_run("kill-active-participant", topology=topo)
    assert outcome.verdict == "pass", describe(outcome)
    recorded = json.loads((outcome.run_dir / "topology.json").read_text())["target"]
    assert recorded["name"] == "small" and recorded["pairs"] == {"med1": ["med1a"], "p1": ["p1a", "p1b"]}
