"""Bad input to ``check``/``report`` and the replay command: one ``error:`` line and a ``fix:`` line, exit 3+,
never a traceback; the replay command re-creates the run's bug switches."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.cli import main
from harness.report import check_run
from harness.report.rundir import RunDir

pytestmark = pytest.mark.unit


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    return tmp_path / "runs"


def _one_error(err: str) -> None:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("  fix: "), err


def _with_topology(rd: RunDir, bugs: object) -> RunDir:
    info = json.loads(rd.topology_path.read_text())
    rd.write_topology({**info, "bugs": bugs})
    return rd


@pytest.mark.parametrize("bugs", ["no_fencing,dedup_in_memory", ["no_fencing", "dedup_in_memory"]])
def test_replay_command_carries_the_runs_bug_switches(make_run: Callable[..., RunDir], runs: Path,
                                                      bugs: object) -> None:
    rd = _with_topology(make_run(runs, "buggy"), bugs)
    check_run(rd)
    expected = f"ha-chaos replay {rd.plan_path} --bugs no_fencing,dedup_in_memory"
    assert rd.replay_command() == expected
    assert json.loads(rd.results_path.read_text())["replay"] == expected
    props = {p.get("name"): p.get("value") for p in ET.parse(rd.junit_path).getroot().iter("property")}
    assert props["replay"] == expected
    assert expected in rd.report_path.read_text()


def test_replay_command_of_a_run_without_bugs_has_no_bugs_option(make_run: Callable[..., RunDir],
                                                                 runs: Path) -> None:
    rd = _with_topology(make_run(runs, "clean"), "")
    assert rd.replay_command() == f"ha-chaos replay {rd.plan_path}"


@pytest.mark.parametrize("where", ["row", "top"])
def test_report_on_an_unknown_verdict_is_one_error_line(make_run: Callable[..., RunDir], runs: Path, where: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    rd = make_run(runs, f"maybe-{where}")
    check_run(rd)
    doc = json.loads(rd.results_path.read_text())
    if where == "row":
        doc["results"][0]["verdict"] = "maybe"
    else:
        doc["verdict"] = "maybe"
    rd.results_path.write_text(json.dumps(doc))
    capsys.readouterr()
    assert main(["report", str(rd.path)]) == 3
    err = capsys.readouterr().err
    _one_error(err)
    assert "'maybe'" in err and f"ha-chaos check {rd.path}" in err


def test_results_json_that_is_not_an_object_gets_a_fix(make_run: Callable[..., RunDir], runs: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    rd = make_run(runs, "list")
    check_run(rd)
    rd.results_path.write_text("[1, 2]")
    capsys.readouterr()
    assert main(["report", str(rd.path)]) == 3
    err = capsys.readouterr().err
    _one_error(err)
    assert "not hold a JSON object" in err


@pytest.mark.parametrize("argv", [["--recovery-bound", "nan"], ["--recovery-bound", "inf"],
                                  ["--recovery-bound", "0"], ["--recovery-bound", "-3"],
                                  ["--completion-grace", "-1"], ["--completion-grace", "nan"]])
def test_check_options_are_validated_first(tmp_path: Path, argv: list[str],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(tmp_path / "no-such-run"), *argv]) == 4  # the option, not the missing directory
    err = capsys.readouterr().err
    _one_error(err)
    assert argv[0] in err


def _append(rd: RunDir, *events: dict) -> None:
    with rd.history_path.open("a", encoding="utf-8") as fh:
        for ev in events:
            fh.write(json.dumps({"wall": "", **ev}) + "\n")


def _expect(value: dict) -> dict:
    return {"t": 0.0, "process": "harness", "type": "info", "f": "expect", "value": value}


@pytest.mark.parametrize("marker", [{"recovery_bound_s": "x"}, {"failover": 5}])
def test_check_on_a_garbled_expect_marker_names_the_run(make_run: Callable[..., RunDir], runs: Path, marker: dict,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    rd = make_run(runs, "garbled-expect")
    _append(rd, _expect(marker), {"t": 1.0, "process": "probe", "type": "ok", "f": "pg_primary",
                                  "value": {"primary": "pg1"}})
    capsys.readouterr()
    code = main(["check", str(rd.path)])  # no exception may escape
    err = capsys.readouterr().err
    if code >= 3:  # the checkers raised: one line naming the run, nothing half-written
        _one_error(err)
        assert f"the history of {rd.path} is malformed" in err
        assert not rd.results_path.exists()
    else:  # the checkers judged it themselves (an unknown verdict, say)
        assert "Traceback" not in err and code in (1, 2)


def test_any_checker_exception_becomes_one_line_naming_the_run(make_run: Callable[..., RunDir], runs: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    import harness.report

    def broken(*_a: object, **_k: object) -> None:
        raise TypeError("'int' object is not iterable")

    monkeypatch.setattr(harness.report, "check_all", broken)
    rd = make_run(runs, "broken-guard")
    capsys.readouterr()
    assert main(["check", str(rd.path)]) == 3
    err = capsys.readouterr().err
    _one_error(err)
    assert f"the history of {rd.path} is malformed: TypeError: 'int' object is not iterable" in err


@pytest.mark.parametrize("t", ["1e308", "1e9", "Infinity", "NaN", "-1e9"])
def test_check_on_an_absurd_time_is_refused_quickly(make_run: Callable[..., RunDir], runs: Path, t: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    rd = make_run(runs, "far-future")
    with rd.history_path.open("a", encoding="utf-8") as fh:
        fh.write(f'{{"t": {t}, "wall": "", "process": "probe", "type": "ok", "f": "health", "value": {{}}}}\n')
        fh.write('{"t": 1.0, "wall": "", "process": "probe", "type": "ok", "f": "health", "value": {}}\n')
    capsys.readouterr()
    t0 = time.monotonic()
    assert main(["check", str(rd.path)]) == 3
    assert time.monotonic() - t0 < 30
    err = capsys.readouterr().err
    _one_error(err)
    assert "history" in err


def test_report_data_bounds_its_per_second_series() -> None:
    from harness.checkers.index import build_index
    from harness.errors import HarnessError
    from harness.history import Event
    from harness.report.data import build_data

    idx = build_index([Event(t=0.0, process="probe", type="ok", f="health", value={}, wall=""),
                       Event(t=1e9, process="probe", type="ok", f="health", value={}, wall="")])
    with pytest.raises(HarnessError, match="malformed history"):
        build_data(idx)


def test_check_with_evidence_pg_judges_single_writer_on_the_postgres_samples(
        make_run: Callable[..., RunDir], runs: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``HA_CHAOS_EVIDENCE=pg ha-chaos check``: the run's node evidence is left aside, the samples decide (and the
    result says so); a misspelt source is one error line before anything is read."""
    rd = make_run(runs, "overlap", bugs=frozenset({"overlap_writers"}))
    for sources, expect in (("pg", ["pg"]), ("node", ["node"]), ("", ["node", "pg"])):
        monkeypatch.setenv("HA_CHAOS_EVIDENCE", sources)
        assert main(["check", str(rd.path)]) == 1
        row = next(r for r in json.loads(rd.results_path.read_text())["results"] if r["invariant"] == "1")
        assert row["verdict"] == "fail" and row["metrics"]["evidence"] == expect
    monkeypatch.setenv("HA_CHAOS_EVIDENCE", "pg")
    main(["check", str(rd.path)])
    row = next(r for r in json.loads(rd.results_path.read_text())["results"] if r["invariant"] == "1")
    assert row["explanation"].endswith("[evidence: PostgreSQL samples (pg_stat_activity)]")
    capsys.readouterr()
    monkeypatch.setenv("HA_CHAOS_EVIDENCE", "pgg")
    assert main(["check", str(runs / "no-such-run")]) == 4
    err = capsys.readouterr().err
    _one_error(err)
    assert "pgg" in err and "HA_CHAOS_EVIDENCE=pg" in err
