"""The documentation says what the code does: every CLI and pytest option is in the README, the history
contract lists the fields and values the checkers read, and API.md's timer values are compose's."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import yaml

from harness.cli import build_parser

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]


def _section(text: str, title: str) -> str:
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def _subcommands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    out: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out[f"{prefix}{name}"] = sub
                out.update(_subcommands(sub, f"{prefix}{name} "))
    return out


def test_every_cli_option_is_in_the_readme_commands_table() -> None:
    commands = _section((REPO / "README.md").read_text(encoding="utf-8"), "Commands")
    missing = []
    for name, sub in _subcommands(build_parser()).items():
        if name.startswith("bench "):
            if name.split()[1] not in commands:
                missing.append(name)
            continue  # benchmark options are in each benchmark's --help
        for action in sub._actions:
            for opt in action.option_strings:
                if opt.startswith("--") and opt != "--help" and opt not in commands:
                    missing.append(f"{name} {opt}")
    assert not missing, f"README 'Commands' does not mention: {missing}"


def test_every_pytest_option_is_in_the_readme_tests_section() -> None:
    tests = _section((REPO / "README.md").read_text(encoding="utf-8"), "Tests and CI")
    plugin = (REPO / "harness" / "pytest_plugin.py").read_text(encoding="utf-8")
    options = set(re.findall(r'addoption\("(--chaos-[a-z-]+)"', plugin))
    assert options and not {o for o in options if o not in tests}


def test_the_history_contract_lists_what_the_checkers_and_the_executor_rely_on() -> None:
    doc = (REPO / "docs" / "history.md").read_text(encoding="utf-8")
    workload = (REPO / "harness" / "workload" / "runner.py").read_text(encoding="utf-8")
    executor = (REPO / "harness" / "plans" / "executor.py").read_text(encoding="utf-8")
    subscribe_reasons = set(re.findall(r'reason(?: =|, reason =) "([a-z_]+)"', workload)) | {"start"}
    heal_reasons = set(re.findall(r'self\._heal\(run, step, "([a-z ]+)"\)', executor))
    heal_reasons |= set(re.findall(r'"(interrupted|aborted|end)"', executor))
    assert {"ended", "failover", "error"} <= subscribe_reasons
    subscribe_row = next(line for line in doc.splitlines() if "`subscribe` (info)" in line)
    assert all(f"`{r}`" in subscribe_row for r in subscribe_reasons), subscribe_reasons
    heal_row = next(line for line in doc.splitlines() if line.startswith("| `heal` |"))
    assert all(f"`{r}`" in heal_row for r in heal_reasons), heal_reasons
    for field in ("`settled`", "`skipped`", "`aborted`", "`failover_within_s`", "`primary_change`", "`early: true`"):
        assert field in doc, field


def _api_timer_text() -> str:
    api = (REPO / "harness" / "sut" / "API.md").read_text(encoding="utf-8")
    start = api.index("Timers (seconds")
    return api[start:api.index("## Bug switches")]


def _segment(text: str, var: str) -> str:
    """The API.md text about one timer: from its name to the next timer name."""
    names = [f"`{var}`"]
    if var.endswith(("_MIN", "_MAX")):
        names.append(f"`{var[:-4]}_MIN`/`MAX`")
    for n in names:
        i = text.find(n)
        if i != -1:
            j = text.find("`HA_", i + len(n))
            return text[i:j if j != -1 else None]
    raise AssertionError(f"{var} is not in harness/sut/API.md")


def test_api_md_timer_values_are_the_models_defaults_and_composes_settings() -> None:
    from harness.sut.common.config import Timers

    text = _api_timer_text()
    env = yaml.safe_load((REPO / "compose" / "reference.yml").read_text(encoding="utf-8"))["x-env"]
    wrong = []
    for field, default in Timers().__dict__.items():
        var = "HA_" + field.upper()
        seg = _segment(text, var)
        nums = re.findall(r"(?<![\w.])(\d+(?:\.\d+)?)(?![\w.])", seg.split("[")[0])
        if not any(float(n) == default for n in nums):
            wrong.append(f"{var}: default {default:g} not in {seg!r}")
        brackets = [float(b) for b in re.findall(r"\[(\d+(?:\.\d+)?)\]", seg)]
        if var in env and float(env[var]) != default and float(env[var]) not in brackets:
            wrong.append(f"{var}: compose sets {env[var]}, API.md says {seg!r}")
        if var not in env and brackets and not var.endswith("_MIN"):
            wrong.append(f"{var}: compose does not set it, API.md brackets {brackets}")
    assert not wrong, wrong
