"""docs/ci/nightly.yml stays runnable: one job per shard with every shard named, the options it passes exist, and the
merge job joins what the shards upload."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from harness import pytest_plugin as plugin
from harness.cli import build_parser

pytestmark = pytest.mark.unit

WORKFLOW = Path(__file__).resolve().parents[3] / "docs" / "ci" / "nightly.yml"


def test_the_nightly_workflow_shards_the_chaos_tier_and_merges_it() -> None:
    wf = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    shards = int(wf["env"]["SHARDS"])
    chaos, merge = wf["jobs"]["chaos"], wf["jobs"]["merge"]
    assert chaos["strategy"]["matrix"]["shard"] == list(range(1, shards + 1))
    assert chaos["strategy"]["fail-fast"] is False and merge["needs"] == "chaos" and merge["if"] == "always()"
    run = next(s["run"] for s in chaos["steps"] if "pytest -m chaos" in s.get("run", ""))
    assert '--chaos-shard "${{ matrix.shard }}/$SHARDS"' in run and "--chaos-seed" in run
    parser = pytest.Parser(_ispytest=True)
    plugin.pytest_addoption(parser)
    known = {o for opt in parser._anonymous.options + [o for g in parser._groups for o in g.options]
             for o in opt.names()}
    assert set(re.findall(r"--chaos-[a-z-]+", run)) <= known
    assert plugin.budget_option(wf["env"]["BUDGET"]) == wf["env"]["BUDGET"]
    uploaded = next(s for s in chaos["steps"] if s.get("uses", "").startswith("actions/upload-artifact"))
    assert "runs/" in uploaded["with"]["path"]
    merging = next(s["run"] for s in merge["steps"] if "ha-chaos merge" in s.get("run", ""))
    argv = merging.split("ha-chaos ", 1)[1].split(" ||")[0].split()
    args = build_parser().parse_args(argv)
    assert args.command == "merge" and args.out == "merged"
