"""YAML I/O: every error names file, line and field; suggestions for near misses; CLI exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest
from _plans_testkit import MINIMAL, curated_plans

from harness.cli import main
from harness.errors import InputError
from harness.plans.loader import PlanError, load_plan, parse_plan

pytestmark = pytest.mark.unit

BROKEN = """\
version: 1
name: broken
description: several mistakes, one per line we expect to be named
steps:
  - kind: kil
    at: 1
    target: p1a
    duration: 3
  - kind: toxic
    at: 2
    target: db_link(active(p1))
    params:
      type: latency
      attributes:
        latncy: 100
    duraton: 3
  - kind: kill
    at: 1
    target: any(sequencr)
    duration: 2
"""


def _problems(text: str) -> list[str]:
    with pytest.raises(PlanError) as err:
        parse_plan(text, "plan.yaml")
    return [str(p) for p in err.value.problems]


def test_every_problem_is_listed_with_its_line_and_field() -> None:
    probs = _problems(BROKEN)
    assert "plan.yaml:5: steps[0].kind: unknown kind 'kil'; did you mean 'kill'?" in probs[0]
    assert any(p.startswith("plan.yaml:15: steps[1].params.attributes.latncy: unknown field; did you mean "
                            "'latency'?") for p in probs)
    assert any(p.startswith("plan.yaml:16: steps[1].duraton: unknown field; did you mean 'duration'?")
               for p in probs)
    assert any(p.startswith("plan.yaml:19: steps[2].target:") and "did you mean 'sequencer'" in p for p in probs)


def test_cross_reference_errors_point_at_their_line() -> None:
    text = MINIMAL + "  - kind: kill\n    after: step_healed(7)\n    target: p1b\n    duration: 1\n"
    (prob,) = _problems(text)
    assert prob.startswith("plan.yaml:10: steps[1].after: step_healed(7) must refer to an earlier step")


@pytest.mark.parametrize("text, line, needle", [
    ("version: 1\nname: [\n", 3, "YAML"),
    ("version: 1\nversion: 1\n", 2, "duplicate key (first at line 1)"),
    ("- a\n- b\n", 1, "a plan is a mapping"),
    ("", 1, "empty file"),
    ("a: &a [*a]\n", 1, "recursive"),
    ("a: 2024-13-45\n", 1, "cannot be read"),
    ("---\na: 1\n---\nb: 2\n", 3, "YAML"),
    (MINIMAL.replace("version: 1", "version: 2"), 1, "version: Input should be 1"),
    (MINIMAL.replace("at: 1", "at: -1"), 6, "steps[0].at: Input should be greater than or equal to 0"),
    (MINIMAL.replace("description: one kill\n", ""), 1, "description: required field is missing"),
    (MINIMAL.replace("kind: kill", "kinde: kill"), 5, "missing 'kind'"),
])
def test_malformed_inputs(text: str, line: int, needle: str) -> None:
    (prob, *_) = _problems(text)
    assert prob.startswith(f"plan.yaml:{line}:"), prob
    assert needle in prob


def test_alias_bomb_is_refused_quickly() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}]"
              for i in range(1, 9)]
    assert "more than" in _problems("\n".join(lines) + "\n")[0]


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read plan"):
        load_plan(tmp_path / "missing.yaml")
    bad = tmp_path / "bin.yaml"
    bad.write_bytes(b"version: 1\nname: \xff\xfe\n")
    with pytest.raises(PlanError, match=r"bin.yaml:2: not UTF-8"):
        load_plan(bad)


def test_cli_validate_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = [str(p) for p in curated_plans()]
    assert main(["plan", "validate", *good]) == 0
    assert capsys.readouterr().out.count("\nok ") + 1 >= len(good)
    bad = tmp_path / "bad.yaml"
    bad.write_text(BROKEN, encoding="utf-8")
    other = tmp_path / "other.yaml"
    other.write_text("name: [", encoding="utf-8")
    assert main(["plan", "validate", good[0], str(bad), str(other)]) == 4
    err = capsys.readouterr().err
    assert f"{bad}:5: steps[0].kind" in err and f"{other}:1:" in err
    assert "2 of 3 plan(s) invalid" in err


def test_cli_show_draws_one_row_per_step(capsys: pytest.CaptureFixture[str]) -> None:
    path = next(p for p in curated_plans() if p.stem == "former-primary-trap")
    assert main(["plan", "show", str(path), "--width", "140"]) == 0
    out = capsys.readouterr().out
    assert "db_failover" in out and "former_primary_trap" in out and "quiet" in out
    assert "~" in out  # the 'after: primary_changed' step is drawn as approximate


def test_union_branches_are_reported_as_one_problem() -> None:
    text = MINIMAL.replace("target: active(p1)", "target: 5")
    (prob,) = _problems(text)
    assert prob == "plan.yaml:7: steps[0].target: Input should be a valid string; or Input should be a valid list"


def test_json_plans_directories_and_profiles(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from harness.plans.schema import plan_to_data

    plan = parse_plan(MINIMAL)
    (tmp_path / "p.json").write_text(json.dumps(plan_to_data(plan), indent=2), encoding="utf-8")
    assert load_plan(tmp_path / "p.json") == plan
    (tmp_path / "schema.json").write_text("{}", encoding="utf-8")  # a schema next to plans is not a plan
    assert main(["plan", "validate", str(tmp_path)]) == 0
    assert "ok " in capsys.readouterr().out
    # the postgres-only profile has no participant pairs: active(p1) cannot be resolved there
    assert main(["plan", "validate", "--profile", "postgres", str(tmp_path / "p.json")]) == 4
    assert "unknown pair 'p1'" in capsys.readouterr().err
