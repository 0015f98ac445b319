"""Installing ha-chaos must not change another project's tests (issue 15 item 6).

Before, a scratch project's single Hypothesis test ran 5 examples (the plugin loaded its ``ci`` profile for every
session) instead of Hypothesis's 100, and the plugin put its ``unit``-marked tests first and tests using a fixture
that happened to be called ``topology`` last. Here a scratch project runs in a subprocess, with ha-chaos installed
(editable) and so its plugin loaded, and must see Hypothesis's defaults and its own order.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from harness import pytest_plugin as plugin

pytestmark = pytest.mark.unit

SCRATCH = '''
import os
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

EXAMPLES = []


@pytest.fixture
def topology():  # the project's own fixture of that name, nothing to do with ha-chaos
    return "mine"


@given(st.integers(), st.integers())
def test_a_counts_its_examples(x, y):
    EXAMPLES.append((x, y))


def test_b_uses_its_own_topology(topology):
    assert topology == "mine"


@pytest.mark.unit
def test_c_marked_unit():
    pass


def test_d_reports():
    Path(os.environ["SCRATCH_COUNT"]).write_text(str(len(EXAMPLES)))
'''


def _ran(output: str) -> list[str]:
    return re.findall(r"::(test_\w+) PASSED", output)


def test_a_scratch_project_keeps_hypothesis_defaults_and_its_order(tmp_path: Path) -> None:
    assert any(ep.value == "harness.pytest_plugin" for ep in entry_points(group="pytest11")), \
        "ha-chaos is not installed (pip install -e .): its plugin would not load"
    project = tmp_path / "scratch"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "test_scratch.py").write_text(SCRATCH)
    count = tmp_path / "count"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HYPOTHESIS", "HA_CHAOS", "PYTEST_"))}
    env["SCRATCH_COUNT"] = str(count)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-p", "no:randomly"],
                          cwd=project, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "ha-chaos generated plans" in out, "the ha-chaos plugin was not loaded:\n" + out
    assert _ran(out) == ["test_a_counts_its_examples", "test_b_uses_its_own_topology", "test_c_marked_unit",
                         "test_d_reports"], out
    assert int(count.read_text()) == 100, "Hypothesis's default of 100 examples, not the ci profile's"
    assert "PytestUnknownMarkWarning" not in out  # the plugin registers its markers


def test_pyproject_lists_the_markers_the_plugin_registers() -> None:
    import tomllib

    pyproject = tomllib.loads((Path(plugin.__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert tuple(pyproject["tool"]["pytest"]["ini_options"]["markers"]) == plugin.MARKERS


def test_the_chaos_profile_binds_only_this_projects_chaos_modules() -> None:
    """The collection wrapper: the budget's profile while a tests/chaos module is imported, restored after."""
    from hypothesis import settings
    from hypothesis.errors import InvalidArgument

    config = type("Config", (), {"getoption": staticmethod(lambda name: "ci")})()

    def collect(path: Path) -> list[str]:
        seen: list[str] = []
        collector = type("Collector", (), {"path": path, "config": config})()
        gen = plugin.pytest_make_collect_report(collector)  # type: ignore[arg-type]
        next(gen)
        seen.append(settings.get_current_profile_name())
        with pytest.raises(StopIteration) as done:
            gen.send("report")
        assert done.value.value == "report"
        return seen

    before = settings.get_current_profile_name()
    assert collect(plugin.CHAOS_TESTS_DIR / "test_generated.py") == ["ci"]
    assert settings.get_current_profile_name() == before
    assert collect(Path(__file__)) == [before]
    assert not plugin.is_own_chaos_path(plugin.CHAOS_TESTS_DIR.parent / "unit" / "test_x.py")
    with pytest.raises(InvalidArgument), plugin.chaos_profile("ci"):  # restored when the block raises, too
        settings.load_profile("no-such-profile")
    assert settings.get_current_profile_name() == before
