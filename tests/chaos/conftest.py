"""Chaos tier: live plans on the reference topology. Which curated plans run depends on --chaos-budget."""

from __future__ import annotations

import pytest

from harness.pytest_plugin import CI_PLANS


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "curated_plan" not in metafunc.fixturenames:
        return
    from harness.campaign import CURATED_DIR

    given = metafunc.config.getoption("--chaos-plan")
    if given:
        paths = given
    elif metafunc.config.getoption("--chaos-budget") == "nightly":
        paths = [str(p) for p in sorted(CURATED_DIR.glob("*.yaml"))]
    else:
        paths = [str(CURATED_DIR / f"{name}.yaml") for name in CI_PLANS]
    metafunc.parametrize("curated_plan", paths, ids=[p.rsplit("/", 1)[-1].removesuffix(".yaml") for p in paths])
