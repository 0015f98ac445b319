"""Chaos tier: live plans on the reference topology. Which plans run depends on --chaos-budget (see
``harness.pytest_plugin.budget_plan_files``): ``ci`` a few curated plans; ``nightly`` the kept failing plans of
fault_plans/found/ first (ids ``found-<hash>``), then every curated plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.pytest_plugin import budget_plan_files


def _plan_id(path: Path) -> str:
    from harness.plans.loader import FOUND_DIR

    return ("found-" if path.resolve().parent == FOUND_DIR else "") + path.stem


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "curated_plan" not in metafunc.fixturenames:
        return
    paths = budget_plan_files(metafunc.config)
    metafunc.parametrize("curated_plan", [str(p) for p in paths], ids=[_plan_id(p) for p in paths])
