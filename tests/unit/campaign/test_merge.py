"""``ha-chaos merge``: the runs of several shards joined into one HTML index (verdicts, links to each report), one
merged coverage table and one JUnit XML."""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from _campaign_testkit import FakeRuns, install

from harness import campaign
from harness.cli import main
from harness.coverage import COVERAGE, Tally
from harness.merge import Collected, Entry, collect, junit_xml, merge
from harness.shard import Shard
from harness.swarm import SwarmSource

pytestmark = pytest.mark.unit


@pytest.fixture
def shards(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Path]:
    """Two shards of one campaign (seed 4, 6 generated plans), each in its own runs dir; a kill fails invariant 2."""
    fake = install(monkeypatch, FakeRuns(), tmp_path / "found")
    fake.fails = lambda plan: {"2"} if any(s.kind_name == "kill" for s in plan.steps) else set()
    dirs = []
    for i in (1, 2):
        runs = tmp_path / f"shard-{i}" / "runs"
        c = campaign.Campaign(runs, seed=4, shard=Shard(i, 2))
        c.run_campaign([], SwarmSource(4, shard=Shard(i, 2), limit=6, tally=c.coverage))
        dirs.append(runs)
    return dirs


def _runs(dirs: list[Path]) -> list[Path]:
    return sorted(p.parent for d in dirs for p in d.rglob("results.json"))


def test_merge_writes_an_index_a_coverage_table_and_one_junit(shards: list[Path], tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "merged"
    runs = _runs(shards)
    assert len(runs) >= 6  # the 6 generated plans (and the runs of shrinking none: no budget)
    failing = [r for r in runs if json.loads((r / "results.json").read_text())["verdict"] == "fail"]
    code = main(["merge", *map(str, shards), "--out", str(out)])
    assert code == (1 if failing else 0)
    text = capsys.readouterr().out
    assert f"merged {len(runs)} run(s) of 2 campaign(s)" in text and "merged fault coverage" in text

    index = (out / "index.html").read_text()
    links = re.findall(r'href="([^"]+/report\.html)"', index)
    assert len(links) == len(runs)
    assert {(out / link).resolve() for link in links} == {(r / "report.html").resolve() for r in runs}
    assert all(not os.path.isabs(link) for link in links)
    assert index.count('<tr class="fail">') == len(failing) and "Fault coverage" in index
    assert "1/2" in index and "2/2" in index and "<script" not in index and "http" not in index

    suite = ET.parse(out / "junit.xml").getroot()
    assert suite.tag == "testsuites" and int(suite.get("tests")) == len(runs)
    assert int(suite.get("failures")) == len(failing)
    assert len(suite.findall("testsuite")) == 2
    cases = suite.findall("testsuite/testcase")
    assert len(cases) == len(runs) and all(c.get("classname") == "ha-chaos.generated" for c in cases)
    failures = [c for c in cases if c.find("failure") is not None]
    assert len(failures) == len(failing)
    for c in failures:
        assert c.find("failure").get("message") == "invariant(s) 2 failed"
        assert "report: " in c.find("failure").text and "replay: ha-chaos replay" in c.find("failure").text

    merged = json.loads((out / COVERAGE).read_text())
    assert len(merged["runs"]) == len(runs)
    whole = Tally.load(shards)
    assert Tally.load([out / COVERAGE]).counts == whole.counts
    assert Tally.load([*shards, out]).counts == whole.counts  # merged copy next to its runs: nothing twice


def test_a_run_listed_by_its_campaign_takes_its_source_shard_and_harness_error(shards: list[Path]) -> None:
    cf = next(shards[0].rglob(campaign.CAMPAIGN_FILE))
    doc = json.loads(cf.read_text())
    doc["runs"][0]["verdict"], doc["runs"][0]["error"] = "error", "step 0 (kill): failed"
    cf.write_text(json.dumps(doc))
    collected = collect(shards)
    first = next(e for e in collected.entries if e.run_dir == (cf.parent / doc["runs"][0]["run_dir"]).resolve())
    assert first.verdict == "error" and first.shard == "1/2" and first.source == "generated"
    assert collected.exit_code() in (1, 3)
    only = collect([], campaign_files=[cf])
    assert {e.shard for e in only.entries} == {"1/2"}


def test_junit_maps_verdicts_to_failure_error_skipped(tmp_path: Path) -> None:
    entries = [Entry(tmp_path / "a" / "1", "a", "1", "pass"), Entry(tmp_path / "b" / "2", "b", "2", "fail", ["4"]),
               Entry(tmp_path / "c" / "3", "c", "3", "unknown"), Entry(tmp_path / "d" / "4", "d", "4", "error",
                                                                     error="did not settle")]
    root = ET.fromstring(junit_xml(Collected(entries, []), tmp_path).split("\n", 1)[1])
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) == ("4", "1", "1", "1")
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert cases["b [2]"].find("failure") is not None and cases["d [4]"].find("error").get("message") == \
        "did not settle"
    assert cases["c [3]"].find("skipped") is not None and cases["a [1]"].find("system-out") is not None
    assert Collected(entries, []).exit_code() == 1


def test_merging_nothing_is_an_input_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["merge", str(tmp_path / "empty"), "--out", str(tmp_path / "m")]) == 4
    assert "no run found" in capsys.readouterr().err
    assert main(["merge", str(tmp_path / "missing")]) == 4
    assert merge([tmp_path / "empty"], tmp_path / "m2")[0].entries == []
