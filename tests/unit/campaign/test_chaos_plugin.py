"""The pytest plugin's pure parts: JUnit properties and replay command of a chaos run, the generated-plan seed
and timeout, the plan selection per budget (found/ first at nightly), bug switches checked before a start."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from hypothesis import settings

from harness import pytest_plugin as plugin
from harness.checkers.model import CheckResult
from harness.plans import loader
from harness.report.rundir import RunDir
from harness.runner import RunOutcome

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
GENERATED = REPO / "tests" / "chaos" / "test_generated.py"


def _outcome(tmp_path: Path, bugs: str, failed: bool) -> RunOutcome:
    rd = RunDir.create(tmp_path / "runs", "kill-active-participant")
    rd.write_topology({"bugs": bugs, "seed": 0})
    results = [CheckResult("1", "single-writer", "pass", "fine")]
    if failed:
        w = {"t": 12.5, "process": "client-1", "type": "ok", "f": "submit", "value": {}, "note": "accepted twice"}
        results.append(CheckResult("2", "exactly-once", "fail", "1 change ID accepted twice", [w]))
    return RunOutcome("kill-active-participant", "fail" if failed else "pass", rd.path, results, None, 1.0)


def test_a_failed_run_records_failed_invariants_a_witness_and_the_replay_with_bugs(tmp_path: Path) -> None:
    props: dict[str, object] = {}
    outcome = _outcome(tmp_path, "dedup_in_memory", failed=True)
    line = plugin.record_outcome(outcome, props.__setitem__)
    replay = f"ha-chaos replay {outcome.run_dir / 'plan.yaml'} --bugs dedup_in_memory"
    assert props["chaos_replay"] == replay and replay in line
    assert props["chaos_failed"] == "2"
    assert props["chaos_witness"] == "invariant 2: t=12.5 client-1 ok submit <- accepted twice"
    assert props["chaos_verdict"] == "fail"
    assert f"replay: {replay}" in plugin.describe(outcome)


def test_a_passing_run_records_no_failure_properties(tmp_path: Path) -> None:
    props: dict[str, object] = {}
    plugin.record_outcome(_outcome(tmp_path, "", failed=False), props.__setitem__)
    assert set(props) == {"chaos_verdict", "chaos_report", "chaos_replay"}
    assert "--bugs" not in str(props["chaos_replay"])


def test_unknown_bug_switches_fail_the_test_before_a_topology_starts() -> None:
    with pytest.raises(pytest.fail.Exception, match="unknown bug switch"):
        plugin._checked_bugs("no_fencing,typo")
    assert plugin._checked_bugs("no_fencing") == "no_fencing"


def test_seed_resolution_and_the_line_that_reports_it() -> None:
    assert plugin._resolve_seed(7, "ci") == 7 and plugin._resolve_seed(7, "nightly") == 7
    assert plugin._resolve_seed(None, "ci") is None
    assert isinstance(plugin._resolve_seed(None, "nightly"), int)
    assert "--chaos-seed 42" in plugin.seed_line(42)
    assert "derandomized" in plugin.seed_line(None)


def _import_generated(monkeypatch: pytest.MonkeyPatch, budget: str, seed: int | None) -> ModuleType:
    monkeypatch.setenv("HA_CHAOS_BUDGET", budget)
    if seed is None:
        monkeypatch.delenv(plugin.SEED_ENV, raising=False)
    else:
        monkeypatch.setenv(plugin.SEED_ENV, str(seed))
    previous = settings.get_current_profile_name()
    from harness.plans.profiles import load_profile

    load_profile(budget)
    try:
        spec = importlib.util.spec_from_file_location(f"_generated_{budget}_{seed}_{os.getpid()}", GENERATED)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        settings.load_profile(previous)
    sys.modules.pop(module.__name__, None)
    return module


def _drawn(module: ModuleType) -> list[str]:
    plans: list[Any] = []

    def chaos_run(plan: Any, generated: bool = False) -> Any:
        plans.append(loader.dump_plan(plan))
        return SimpleNamespace(verdict="pass")

    request = SimpleNamespace(node=SimpleNamespace(user_properties=[]))
    module.test_generated_plans_hold_every_invariant(chaos_run=chaos_run, request=request)
    assert request.node.user_properties == [("chaos_seed", module.SEED)]
    return plans


def test_chaos_seed_seeds_the_generated_plans(monkeypatch: pytest.MonkeyPatch) -> None:
    one = _drawn(_import_generated(monkeypatch, "ci", 1))
    again = _drawn(_import_generated(monkeypatch, "ci", 1))
    other = _drawn(_import_generated(monkeypatch, "ci", 2))
    assert len(one) == 2 and one == again
    assert other != one


def test_the_generated_test_timeout_follows_its_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    def timeout(module: ModuleType) -> float:
        marks = [m for m in module.test_generated_plans_hold_every_invariant.pytestmark if m.name == "timeout"]
        assert marks, "no pytest-timeout marker"
        return float(marks[0].args[0])

    nightly = _import_generated(monkeypatch, "nightly", 5)
    assert nightly.EXAMPLES >= 100
    assert timeout(nightly) >= nightly.EXAMPLES * plugin.EXAMPLE_BOUND_S > plugin.TEST_TIMEOUT_S
    assert timeout(_import_generated(monkeypatch, "ci", None)) == plugin.TEST_TIMEOUT_S


def _config(budget: str, plans: list[str] | None = None) -> Any:
    options = {"--chaos-plan": plans or [], "--chaos-budget": budget, "--chaos-shard": None}
    return SimpleNamespace(getoption=options.__getitem__)


def test_nightly_runs_found_plans_first_and_ci_leaves_them_out(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    found = tmp_path / "found"
    found.mkdir()
    (found / "0123456789.yaml").write_text("version: 1\n")
    monkeypatch.setattr(loader, "FOUND_DIR", found)
    nightly = plugin.budget_plan_files(_config("nightly"))
    assert nightly[0] == found / "0123456789.yaml" and len(nightly) > 10
    ci = plugin.budget_plan_files(_config("ci"))
    assert found / "0123456789.yaml" not in ci and [p.stem for p in ci] == list(plugin.CI_PLANS)
    given = plugin.budget_plan_files(_config("ci", [str(found)]))
    assert given == [found / "0123456789.yaml"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(pytest.UsageError, match="no plan files"):
        plugin.budget_plan_files(_config("ci", [str(empty)]))


class _Item:
    def __init__(self, name: str, marker: str | None, plan: str | None = None, topology: str | None = None) -> None:
        self.name, self.marker = name, marker
        self.fixturenames = ("chaos_run",) if topology is None else ("topology",)
        self.callspec = SimpleNamespace(params={"curated_plan": plan}) if plan else None
        if topology is not None:  # the module that defines the `topology` fixture this item gets
            fixturedef = SimpleNamespace(func=SimpleNamespace(__module__=topology))
            self._fixtureinfo = SimpleNamespace(name2fixturedefs={"topology": (fixturedef,)})

    def get_closest_marker(self, name: str) -> object:
        return object() if name == self.marker else None


def test_chaos_items_of_found_plans_run_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    found = tmp_path / "found"
    monkeypatch.setattr(loader, "FOUND_DIR", found)
    items = [_Item("bug", "chaos"), _Item("curated", "chaos", str(tmp_path / "x.yaml")),
             _Item("kept", "chaos", str(found / "abc.yaml")), _Item("unit", "unit")]
    plugin.pytest_collection_modifyitems(None, None, items)  # type: ignore[arg-type]
    assert [i.name for i in items] == ["unit", "kept", "bug", "curated"]


def test_only_chaos_tests_and_shared_topology_tests_are_moved() -> None:
    """Everything else keeps its order (unit-first is this project's tests/conftest.py, not the plugin's); a
    fixture that is merely called `topology` is not the plugin's session topology."""
    items = [_Item("a", None), _Item("shared", "integration", topology=plugin.__name__), _Item("chaos", "chaos"),
             _Item("unit", "unit"), _Item("own-topology", None, topology="conftest"), _Item("z", "integration")]
    plugin.pytest_collection_modifyitems(None, None, items)  # type: ignore[arg-type]
    assert [i.name for i in items] == ["a", "unit", "own-topology", "z", "shared", "chaos"]


# --- --chaos-replication ----------------------------------------------------------------------------------
@pytest.mark.parametrize("args, mode", [
    ([], "sync"), (["--chaos-replication", "async"], "async"), (["--async-replication"], "async"),
    (["--chaos-replication", "sync"], "sync"),
])
def test_replication_option_defaults_to_sync_and_async_replication_is_its_alias(args: list[str], mode: str) -> None:
    parser = pytest.Parser(_ispytest=True)
    plugin.pytest_addoption(parser)
    assert parser.parse_known_args(args).chaos_replication == mode
    with pytest.raises(pytest.UsageError, match="invalid choice"):
        parser.parse_known_args(["--chaos-replication", "semi-sync"])


class _Config:
    def __init__(self, replication: str) -> None:
        self.options = {"--chaos-replication": replication, "--chaos-budget": "ci", "--chaos-profile": "full",
                        "--chaos-keep": False, "--chaos-shard": None}
        self.stash: dict[object, object] = {}

    def getoption(self, name: str) -> object:
        return self.options[name]


class _FakeTopology:
    made: list[_FakeTopology] = []

    def __init__(self, profile: str, **kw: Any) -> None:
        self.profile, self.kw, self.stopped = profile, kw, False
        self.synchronous_mode = kw["synchronous_mode"]
        _FakeTopology.made.append(self)

    def stop(self) -> None:
        self.stopped = True


def _request(replication: str) -> Any:
    node = SimpleNamespace(user_properties=[], stash={})
    return SimpleNamespace(config=_Config(replication), node=node, session=SimpleNamespace(stash={}))


@pytest.mark.parametrize("replication, synchronous", [("sync", True), ("async", False)])
def test_every_topology_the_fixtures_start_gets_the_replication_mode(
        replication: str, synchronous: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.topology import compose

    monkeypatch.setattr(compose, "Topology", _FakeTopology)
    monkeypatch.setattr(plugin, "_start", lambda topo: topo)
    _FakeTopology.made = []
    suite: dict[str, object] = {}
    request = _request(replication)
    session = plugin.topology.__wrapped__(request, None, suite.__setitem__)
    shared = next(session)
    assert shared.kw["synchronous_mode"] is synchronous and shared.kw["seed"] == 0
    assert suite == {"chaos_replication": replication}
    factory = plugin.topology_factory.__wrapped__(request, None)
    make = next(factory)
    dedicated = make("postgres", bugs="no_fencing")
    explicit = make("postgres", synchronous_mode=True)  # a test that needs one mode says so; it wins
    assert dedicated.kw == {"synchronous_mode": synchronous, "bugs": "no_fencing"}
    assert explicit.kw == {"synchronous_mode": True}
    assert ("chaos_replication", replication) in request.node.user_properties
    assert ("chaos_replication", "sync") in request.node.user_properties
    for gen in (factory, session):
        with pytest.raises(StopIteration):
            next(gen)
    assert all(t.stopped for t in _FakeTopology.made)


def test_the_replication_mode_is_in_the_header_and_recorded_once_per_test() -> None:
    assert plugin.pytest_report_header(_Config("sync")).endswith("; budget ci; PostgreSQL replication sync")  # type: ignore[arg-type]
    header = plugin.pytest_report_header(_Config("async"))  # type: ignore[arg-type]
    assert "PostgreSQL replication async (known-unsafe" in header
    props: list[tuple[str, object]] = []
    plugin.record_replication(props, False)
    plugin.record_replication(props, False)
    assert props == [("chaos_replication", "async")]
    assert plugin.topology_kwargs(_Config("async")) == {"synchronous_mode": False}  # type: ignore[arg-type]
