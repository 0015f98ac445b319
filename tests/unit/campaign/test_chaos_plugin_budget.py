"""The pytest plugin's duration budgets (``--chaos-budget 2h``) and shards (``--chaos-shard i/N``): options, which
chaos tests a shard keeps, plans skipped when they cannot finish, and the generated campaign test on a fake runner."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from _campaign_testkit import FakeRuns, install

from harness import campaign
from harness import pytest_plugin as plugin
from harness.budget import Budget
from harness.plans import loader

pytestmark = pytest.mark.unit


def _parse(*args: str) -> Any:
    parser = pytest.Parser(_ispytest=True)
    plugin.pytest_addoption(parser)
    return parser.parse_known_args(list(args))


@pytest.mark.parametrize("value", ["ci", "nightly", "2h", "90s", "30m", "1h30m"])
def test_the_budget_is_named_or_a_duration(value: str) -> None:
    assert _parse("--chaos-budget", value).chaos_budget == value


@pytest.mark.parametrize("args", [["--chaos-budget", "weekly"], ["--chaos-budget", "0s"], ["--chaos-shard", "3/2"],
                                  ["--chaos-shard", "x"]])
def test_bad_budgets_and_shards_are_usage_errors(args: list[str]) -> None:
    with pytest.raises(pytest.UsageError):
        _parse(*args)


def test_a_shard_is_parsed() -> None:
    assert _parse("--chaos-shard", " 2 / 3 ").chaos_shard == "2/3" and _parse().chaos_shard is None


class _Config:
    def __init__(self, budget: str = "ci", shard: str | None = None, runs: Path | None = None,
                 plans: list[str] | None = None) -> None:
        self.options = {"--chaos-budget": budget, "--chaos-shard": shard, "--chaos-plan": plans or [],
                        "--chaos-runs-dir": str(runs or "runs"), "--chaos-replication": "sync"}
        self.stash: dict[Any, Any] = {plugin._reports_key: [], plugin._seed_key: 5}
        self.deselected: list[Any] = []
        self.hook = SimpleNamespace(pytest_deselected=lambda items: self.deselected.extend(items))

    def getoption(self, name: str) -> Any:
        return self.options[name]


def test_a_duration_runs_found_and_curated_plans_and_shards_split_them(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    found = tmp_path / "found"
    found.mkdir()
    (found / "0123456789.yaml").write_text("version: 1\n")
    monkeypatch.setattr(loader, "FOUND_DIR", found)
    whole = plugin.budget_plan_files(_config := _Config("45m"))  # type: ignore[arg-type]
    assert whole[0] == found / "0123456789.yaml" and len(whole) > 10
    assert plugin.budget_plan_files(_Config("nightly")) == whole  # type: ignore[arg-type]
    one, two = (plugin.budget_plan_files(_Config("45m", f"{i}/2")) for i in (1, 2))  # type: ignore[arg-type]
    assert not set(one) & set(two) and sorted(one + two) == sorted(whole)
    names = sorted(p.name for p in whole)
    assert [p.name for p in one] == [n for n in [p.name for p in whole] if names.index(n) % 2 == 0]
    assert plugin.budget_seconds(_config) == 2700 and plugin.budget_seconds(_Config("ci")) is None


class _Item:
    def __init__(self, nodeid: str, chaos: bool = True, *, curated: str | None = None, campaign: bool = False,
                 hypothesis: bool = False) -> None:
        self.nodeid, self.chaos, self.marks = nodeid, chaos, []
        self.fixturenames = ("chaos_campaign",) if campaign else ("chaos_run",)
        self.callspec = SimpleNamespace(params={"curated_plan": curated}) if curated else None
        self.obj = SimpleNamespace(is_hypothesis_test=hypothesis)

    def get_closest_marker(self, name: str) -> object:
        return object() if name == "chaos" and self.chaos else None

    def add_marker(self, mark: Any) -> None:
        self.marks.append(mark)


def _items() -> list[_Item]:
    return [_Item("tests/unit/test_x.py::test_a", chaos=False),
            _Item("tests/chaos/test_curated.py::test[kill]", curated="kill.yaml"),
            _Item("tests/chaos/test_curated.py::test[cut]", curated="cut.yaml"),
            *(_Item(f"tests/chaos/test_bug.py::test[bug{i}]") for i in range(5)),
            _Item("tests/chaos/test_generated.py::test_generated", hypothesis=True),
            _Item("tests/chaos/test_budgeted.py::test_campaign", campaign=True)]


def test_shards_split_the_other_chaos_tests_and_all_run_the_campaign() -> None:
    kept = []
    for i in (1, 2, 3):
        items = _items()
        config = _Config("ci", f"{i}/3")
        plugin.pytest_collection_modifyitems(None, config, items)  # type: ignore[arg-type]
        ids = [it.nodeid for it in items]
        assert ids[-1] == "tests/chaos/test_budgeted.py::test_campaign"  # last: it spends what is left
        assert "tests/unit/test_x.py::test_a" in ids and "tests/chaos/test_curated.py::test[kill]" in ids
        assert {it.nodeid for it in config.deselected}.isdisjoint(ids)
        kept.append({n for n in ids if "bug" in n or "generated" in n})
    assert all(kept) and set().union(*kept) == {it.nodeid for it in _items() if "bug" in it.nodeid
                                                 or "generated" in it.nodeid}
    assert sum(map(len, kept)) == 6  # each in exactly one shard
    items = _items()
    plugin.pytest_collection_modifyitems(None, _Config("ci"), items)  # type: ignore[arg-type]
    assert len(items) == len(_items())  # unsharded: nothing deselected


def test_a_duration_skips_hypothesis_chaos_tests_and_times_the_campaign_by_its_budget() -> None:
    items = _items()
    plugin.pytest_collection_modifyitems(None, _Config("2h"), items)  # type: ignore[arg-type]
    marks = {it.nodeid: it.marks for it in items}
    assert [m.name for m in marks["tests/chaos/test_generated.py::test_generated"]] == ["skip"]
    timeout = marks["tests/chaos/test_budgeted.py::test_campaign"]
    assert timeout[0].name == "timeout" and timeout[0].args[0] == 7200 + plugin.MARGIN_S
    assert not marks["tests/chaos/test_bug.py::test[bug0]"]
    ci = _items()
    plugin.pytest_collection_modifyitems(None, _Config("nightly"), ci)  # type: ignore[arg-type]
    assert not any(it.marks for it in ci)


def test_the_session_budget_starts_once_and_only_for_a_duration(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(campaign, "monotonic", lambda: now[0])
    config = _Config("10m")
    budget = plugin.session_budget(config)  # type: ignore[arg-type]
    assert isinstance(budget, Budget) and plugin.session_budget(config) is budget  # type: ignore[arg-type]
    now[0] = 160.0
    assert budget.elapsed_s == 60
    assert plugin.session_budget(_Config("nightly")) is None  # type: ignore[arg-type]


def _request(config: _Config, topology: Any = None) -> Any:
    def getfixturevalue(name: str) -> Any:
        assert name == "topology" and topology is not None, "the topology was requested"
        return topology

    return SimpleNamespace(config=config, node=SimpleNamespace(nodeid="tests/chaos/x.py::t", user_properties=[]),
                           getfixturevalue=getfixturevalue)


def test_a_plan_that_cannot_finish_in_the_budget_left_is_skipped_before_anything_starts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr(campaign, "monotonic", lambda: now[0])
    config = _Config("5m")
    plugin.session_budget(config)  # type: ignore[arg-type]
    now[0] = 250.0  # 50 s left: no curated plan fits
    run = plugin.chaos_run.__wrapped__(_request(config), lambda *_: None)
    with pytest.raises(pytest.skip.Exception, match=r"kill-active-participant .* does not fit"):
        run("kill-active-participant")


def test_the_campaign_test_is_skipped_under_named_budgets() -> None:
    start = plugin.chaos_campaign.__wrapped__(_request(_Config("nightly")), lambda *_: None)
    with pytest.raises(pytest.skip.Exception, match="--chaos-budget duration"):
        start()


def test_the_campaign_test_runs_generated_plans_until_the_budget_is_spent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = install(monkeypatch, FakeRuns(), tmp_path / "found")
    config = _Config("12m", "2/2", runs=tmp_path / "runs")
    plugin.session_budget(config)  # type: ignore[arg-type]
    props: dict[str, Any] = {}
    start = plugin.chaos_campaign.__wrapped__(_request(config, SimpleNamespace(run_id="hc-fake")),
                                              props.__setitem__)
    c = start()
    assert c.outcomes and all(end <= 720 for *_, end in fake.log)
    numbers = [int(o.plan.rsplit("-", 1)[1]) for o in c.outcomes]
    assert all(n % 2 == 1 for n in numbers)  # shard 2 of 2: the odd plan numbers
    assert all(o.plan.startswith("generated-5-") for o in c.outcomes)  # the session's seed
    assert props["chaos_seed"] == 5 and props["chaos_shard"] == "2/2" and "generated" in props["chaos_ran"]
    doc = json.loads(next((tmp_path / "runs" / campaign.CAMPAIGNS).glob("*/campaign.json")).read_text())
    assert doc["shard"] == "2/2" and doc["ran"]["generated"] == len(c.outcomes)
    assert len(config.stash[plugin._reports_key]) == len(c.outcomes)
    assert config.stash[plugin._campaigns_key] == [c]
    assert len(plugin.session_tally(config).runs) == len(c.outcomes)  # type: ignore[arg-type]
