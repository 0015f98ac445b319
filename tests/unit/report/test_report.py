"""The run directory, results.json, junit.xml, report.html and the check/report commands."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.report import check_run, render_run
from harness.report.rundir import RunDir

pytestmark = pytest.mark.unit

EXTERNAL = re.compile(r"https?://|(?<![:\w])//[A-Za-z0-9.-]+\.[A-Za-z]{2,}|\bsrc\s*=|@import|url\(")


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    return tmp_path / "runs"


def test_create_layout_and_latest_link(runs: Path) -> None:
    a = RunDir.create(runs, "plan one")
    assert a.logs_dir.is_dir()
    assert (runs / "latest").resolve() == a.path.resolve()
    assert not Path((runs / "latest").readlink()).is_absolute()
    b = RunDir.create(runs, "plan one")
    assert (runs / "latest").resolve() == b.path.resolve()
    assert a.path.parent == b.path.parent and a.path != b.path


@pytest.mark.parametrize(("cfg", "verdict"), [
    ({}, "pass"),
    ({"bugs": frozenset({"lost_ack", "two_ready"})}, "fail"),
    ({"fault_takes": False}, "unknown"),
])
def test_check_writes_all_outputs(make_run: Callable[..., RunDir], runs: Path, cfg: dict, verdict: str) -> None:
    rd = make_run(runs, f"r-{verdict}", **cfg)
    got, results = check_run(rd)
    assert got == verdict
    doc = json.loads(rd.results_path.read_text())
    assert doc["verdict"] == verdict
    assert {r["invariant"] for r in doc["results"]} >= {str(i) for i in range(1, 12)}
    suite = ET.parse(rd.junit_path).getroot()
    cases = suite.findall("testcase")
    assert len(cases) == len(results)
    assert int(suite.get("failures")) == sum(r.verdict == "fail" for r in results)
    assert int(suite.get("skipped")) == sum(r.verdict == "unknown" for r in results)
    html = rd.report_path.read_text()
    assert f">{verdict.upper()}<" in html
    assert not EXTERNAL.search(html), EXTERNAL.search(html)
    assert "<script" not in html
    assert rd.replay_command() in html


def test_failing_report_shows_witnesses_context_and_logs(make_run: Callable[..., RunDir], runs: Path) -> None:
    rd = make_run(runs, "lost", bugs=frozenset({"lost_ack"}))
    _, results = check_run(rd)
    lost = next(r for r in results if r.invariant == "3")
    assert lost.verdict == "fail"
    sid = lost.witnesses[0]["value"]["submission_id"]
    html = rd.report_path.read_text()
    section = html[html.index('id="inv-3"'):]
    assert sid in section
    assert 'class="mark"' in section  # the witness highlighted among the operations around it
    assert "logs/p1a.log" in section  # the replica that acknowledged it
    assert re.search(r"p1a INFO tick \d+", section)
    junit = rd.junit_path.read_text()
    assert sid in junit and "InvariantViolated" in junit


def test_report_rerenders_from_results(make_run: Callable[..., RunDir], runs: Path) -> None:
    rd = make_run(runs, "rerender", bugs=frozenset({"seq_gap"}))
    check_run(rd)
    rd.report_path.unlink()
    rd.junit_path.unlink()
    verdict, _ = render_run(rd)
    assert verdict == "fail"
    assert rd.report_path.exists() and rd.junit_path.exists()


def test_cli_exit_codes(make_run: Callable[..., RunDir], runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok = make_run(runs, "ok")
    bad = make_run(runs, "bad", bugs=frozenset({"duplicate"}))
    unk = make_run(runs, "unk", seq_readers=False)
    assert main(["check", str(ok.path)]) == 0
    assert main(["check", str(bad.path)]) == 1
    assert main(["check", str(unk.path)]) == 2
    assert main(["report", str(runs / "latest")]) == 2
    out = capsys.readouterr().out
    assert "verdict: fail" in out and "replay:" in out


def test_cli_recovery_bound_overrides_plan(make_run: Callable[..., RunDir], runs: Path) -> None:
    rd = make_run(runs, "slow", bugs=frozenset({"slow_recovery"}))
    assert main(["check", str(rd.path)]) == 1
    assert main(["check", str(rd.path), "--recovery-bound", "3600"]) == 0


def test_missing_and_garbled_run_dirs_are_harness_errors(make_run: Callable[..., RunDir], runs: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(tmp_path / "nope")]) >= 3
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["check", str(empty)]) >= 3
    rd = make_run(runs, "garbled")
    lines = rd.history_path.read_text().splitlines()
    lines[5] = "{not json"
    rd.history_path.write_text("\n".join(lines) + "\n")
    assert main(["check", str(rd.path)]) >= 3
    assert main(["report", str(rd.path)]) >= 3  # no results.json yet
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert all(line.startswith(("error:", "  fix:")) for line in err.strip().splitlines())


def test_garbled_results_json_is_a_harness_error(make_run: Callable[..., RunDir], runs: Path) -> None:
    rd = make_run(runs, "badresults")
    check_run(rd)
    rd.results_path.write_text("[1, 2")
    with pytest.raises(HarnessError, match="not valid JSON"):
        render_run(rd)


def test_timeline_marks_failed_fault(make_run: Callable[..., RunDir], runs: Path) -> None:
    rd = make_run(runs, "nofault", fault_takes=False)
    check_run(rd)
    html = rd.report_path.read_text()
    assert "did not take effect" in html
    assert "toxic not observed on p1a-db" in html


def test_torn_final_line_is_skipped_but_a_bad_middle_line_names_its_line(
        make_run: Callable[..., RunDir], runs: Path) -> None:
    rd = make_run(runs, "torn")
    n = len(rd.read_history())
    with rd.history_path.open("a") as fh:
        fh.write('{"t": 99.0, "process": "client-1", "ty')
    assert len(RunDir.open(rd.path).read_history()) == n
    lines = rd.history_path.read_text().splitlines()
    lines[10] = '{"t": 1.0}'
    rd.history_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(HarnessError, match=r"history.jsonl:11:"):
        rd.read_history()


def test_empty_history_renders_and_is_unknown(tmp_path: Path) -> None:
    rd_path = tmp_path / "runs" / "empty" / "1"
    rd_path.mkdir(parents=True)
    (rd_path / "history.jsonl").write_text("")
    assert main(["check", str(rd_path)]) == 2
    html = (rd_path / "report.html").read_text()
    assert ">UNKNOWN<" in html and "No fault took effect" in html
    assert main(["report", str(rd_path)]) == 2


def test_log_excerpt_falls_back_to_the_last_lines_before_the_window(runs: Path) -> None:
    rd = RunDir.create(runs, "quiet-logs")
    rd.log_path("p1a").write_text("".join(f"2026-11-22T02:00:0{i}.000000000Z p1a event {i}\n" for i in range(6)),
                                  encoding="utf-8")
    t = datetime(2026, 11, 22, 2, 0, 0, tzinfo=UTC).timestamp()
    assert rd.log_excerpt("p1a", t + 2.5, t + 3.5) == ["2026-11-22T02:00:03.000000000Z p1a event 3"]
    quiet = rd.log_excerpt("p1a", t + 10, t + 16)
    assert quiet[0].startswith("(no lines within the window") and [q[-1] for q in quiet[1:]] == ["3", "4", "5"]
    assert rd.log_excerpt("p1a", t - 10, t - 5) == []      # nothing before either
    assert rd.log_excerpt("seq9", t, t + 1) == []          # no such log
