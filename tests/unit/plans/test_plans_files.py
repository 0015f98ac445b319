"""Plan files and directories: one loader rule for every command, the project's own paths (not the working
directory), and the schema command's bad paths as one error line with a fix."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from _plans_testkit import MINIMAL, REPO

from harness.cli import main
from harness.errors import InputError
from harness.plans.loader import FOUND_DIR, PLANS_DIR, plan_files, save_found

pytestmark = pytest.mark.unit


def _one_error(err: str) -> None:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[0].startswith("error: ") and lines[1].startswith("  fix: "), err


def _plans_dir(tmp_path: Path) -> Path:
    d = tmp_path / "plans"
    d.mkdir()
    for name in ("a.yaml", "b.yml", "c.json"):
        (d / name).write_text(MINIMAL.replace("name: minimal", f"name: {name.split('.')[0]}"))
    (d / "schema.json").write_text("{}")
    (d / "notes.txt").write_text("not a plan")
    (d / "nested").mkdir()
    (d / "nested" / "d.yaml").write_text(MINIMAL)
    return d


def test_a_directory_stands_for_its_yaml_yml_and_json_plans(tmp_path: Path) -> None:
    d = _plans_dir(tmp_path)
    assert [p.name for p in plan_files([d])] == ["a.yaml", "b.yml", "c.json"]


def test_run_reads_a_directory_like_plan_validate(tmp_path: Path) -> None:
    from harness.campaign_cli import _load

    assert [p.name for p in _load([str(_plans_dir(tmp_path))])] == ["a", "b", "c"]


def test_a_directory_without_plans_is_an_input_error(tmp_path: Path) -> None:
    empty = tmp_path / "found"
    empty.mkdir()
    (empty / ".gitkeep").write_text("")
    with pytest.raises(InputError, match=f"no plan files in {empty}"):
        plan_files([empty])


def test_plan_validate_on_a_directory_without_plans(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "found"
    empty.mkdir()
    (empty / ".gitkeep").write_text("")
    assert main(["plan", "validate", str(empty)]) == 4
    err = capsys.readouterr().err
    assert "Is a directory" not in err and "Traceback" not in err
    _one_error(err)
    assert f"no plan files in {empty}" in err


def test_plan_validate_still_checks_the_other_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["plan", "validate", str(empty), str(_plans_dir(tmp_path))]) == 4
    out = capsys.readouterr().out
    assert out.count("ok ") == 3


def test_project_paths_do_not_depend_on_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from harness.plans.cli import DEFAULT_SCHEMA_PATH

    assert PLANS_DIR == REPO / "fault_plans" and FOUND_DIR == REPO / "fault_plans" / "found"
    assert DEFAULT_SCHEMA_PATH == REPO / "fault_plans" / "schema.json"
    assert inspect.signature(save_found).parameters["directory"].default == FOUND_DIR
    monkeypatch.chdir(tmp_path)
    assert main(["plan", "schema", "--check"]) == 0
    assert "is current" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["write-missing-dir", "check-dir", "check-binary", "write-dir"])
def test_schema_write_and_check_on_bad_paths(tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    binary = tmp_path / "x.json"
    binary.write_bytes(b"\x7fELF\x02\x01\x01\x00\xff\xfe\x00")
    argv = {"write-missing-dir": ["--write", str(tmp_path / "no" / "such" / "x.json")],
            "check-dir": ["--check", str(tmp_path)],
            "check-binary": ["--check", str(binary)],
            "write-dir": ["--write", str(tmp_path)]}[case]
    assert main(["plan", "schema", *argv]) == 4
    _one_error(capsys.readouterr().err)
