"""pytest plugin of ha-chaos (registered through the ``pytest11`` entry point in pyproject.toml).

Installed, it is loaded by every pytest session on the machine, so it touches only its own tests: it registers
its markers, puts the Hypothesis profile of ``--chaos-budget`` in effect only while this project's chaos modules
(``tests/chaos/``) are imported and their tests run (see ``pytest_make_collect_report``), and moves only chaos
tests and tests of the shared ``topology`` fixture to the end of the run. Another project's tests keep Hypothesis's
settings and their order.

Options (group ``ha-chaos``): ``--chaos-plan``, ``--chaos-seed``, ``--chaos-runs-dir``, ``--chaos-keep``,
``--chaos-budget`` (``ci`` | ``nightly``: the Hypothesis profile and how many curated plans run; a duration such as
``2h``: the kept and curated plans that fit, then generated swarm plans until it is spent),
``--chaos-shard`` (``i/N``: this runner's share of the chaos tier), ``--chaos-profile``, ``--chaos-no-setup``,
``--chaos-replication`` (``sync`` | ``async``: the PostgreSQL replication of every topology the fixtures start;
``--async-replication`` is ``--chaos-replication async``).

A duration budget (``harness.budget``) starts with the first chaos test: a plan ``chaos_run`` would start is skipped
when it cannot finish in what is left, Hypothesis-driven chaos tests are skipped (the generated campaign replaces
them), and the test that uses ``chaos_campaign`` (tests/chaos/test_budgeted.py) runs last and spends the rest on
generated plans (``harness.swarm``: swarm subsets steered by coverage), shrinking a failure within a share of it.
``--chaos-shard i/N`` keeps this shard's curated plans (round-robin by sorted file name), its share of the other
chaos tests (round-robin by node id) and its generated plan numbers; ``ha-chaos merge`` joins the shards' runs.
Every ``chaos_run`` writes the run's ``coverage.json`` (``harness.coverage``).

The seed of the generated plans (``--chaos-seed``; under ``nightly`` without it a fresh one, under ``ci`` none:
derandomized) is printed in the header and the summary, and handed to test modules as ``plan_seed()``.

Fixtures:
- ``machine`` (session): runs ``ha-chaos setup`` once (Docker daemon, compose v2 plugin, images), so ``pytest``
  alone prepares a fresh machine. Every Docker-using fixture depends on it.
- ``topology`` (session): the reference topology (profile from ``--chaos-profile``), torn down at the end
  (``--chaos-keep`` leaves it up if a test failed and prints how to remove it).
- ``topology_factory`` (function): ``topology_factory(profile="full", bugs="no_fencing")`` starts a dedicated
  topology for one test and removes it after the test.
- ``chaos_run`` (function): ``chaos_run(plan, topology=None) -> RunOutcome`` runs a plan (a Plan, a path or a
  curated plan name) on a settled topology and writes its run directory; verdict, report path and replay command
  (with ``--bugs`` when the run had bug switches), and for a failed run ``chaos_failed`` (the failed invariant
  ids) and ``chaos_witness`` (the first witness), are JUnit properties; the summary line is printed at the end.
  Bug switches given to it or to ``topology_factory`` are checked before anything starts.
- ``curated_plans`` (session): the plans the budget selects (``budget_plan_files``): ``ci`` a few curated ones,
  ``nightly`` (and a duration) the kept failing plans of ``fault_plans/found/`` first, then every curated plan.
- ``chaos_campaign`` (function): ``chaos_campaign() -> Campaign`` runs generated plans on the session topology
  until the duration budget is spent (skips the test under ``ci``/``nightly``); its summary and coverage table are
  printed at the end of the session and written to ``<runs dir>/campaigns/<id>/``.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.budget import Budget, CostModel
    from harness.campaign import Campaign
    from harness.coverage import Tally
    from harness.plans.schema import Plan
    from harness.runner import RunOutcome
    from harness.topology.compose import Topology
    from harness.topology.model import TopologyModel

_failed_key = pytest.StashKey[bool]()
_reports_key = pytest.StashKey[list[str]]()
_seed_key = pytest.StashKey["int | None"]()
_budget_key = pytest.StashKey["Budget | None"]()
_cost_key = pytest.StashKey["CostModel"]()
_tally_key = pytest.StashKey["Tally"]()
_campaigns_key = pytest.StashKey[list["Campaign"]]()
#: curated plans the ``ci`` budget runs (short, and together they cross DB, process and proxy faults)
CI_PLANS = ("kill-active-participant", "active-db-blackhole", "sequencer-killed")
#: where pytest_configure leaves the generated-plan seed for test modules (their decorators run at import)
SEED_ENV = "HA_CHAOS_PLAN_SEED"
#: pyproject's per-test ``timeout``, and the most one live generated example may take: settle (each wait up to
#: 120 s; ~10 s usually), the plan (warmup <= 5 s, two steps at <= 10 s or after a condition of <= 60 s, each
#: lasting <= 10 s, quiet period <= 30 s), then logs, evidence and checks
TEST_TIMEOUT_S = 900.0
EXAMPLE_BOUND_S = 300.0
#: on top of the examples: the session topology may start inside the test (~30 s), plus Hypothesis's own work
MARGIN_S = 300.0
#: this project's chaos tests: the Hypothesis profile of the budget applies to them alone
CHAOS_TESTS_DIR = Path(__file__).resolve().parents[1] / "tests" / "chaos"
#: ``--chaos-replication``: Patroni synchronous_mode on (the default) or off (asynchronous, known-unsafe)
REPLICATION_MODES = ("sync", "async")
#: the markers of ha-chaos's test tiers, as pyproject.toml lists them (a unit test keeps the two equal)
MARKERS = (
    "unit: pure tests, no Docker, seconds",
    "integration: needs a Docker daemon and the project images",
    "chaos: Docker + Hypothesis-generated fault plans, longer",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ha-chaos", "ha-chaos chaos testing")
    group.addoption("--chaos-plan", action="append", default=[], metavar="PATH",
                    help="run these plan files in the chaos tests instead of the budget's curated selection")
    group.addoption("--chaos-seed", type=int, default=None, help="seed for generated plans (default: random)")
    group.addoption("--chaos-runs-dir", default="runs", help="where run directories go (default: runs/)")
    group.addoption("--chaos-keep", action="store_true", default=False,
                    help="leave the topology up when a test fails, for inspection (remove with `ha-chaos down --all`)")
    group.addoption("--chaos-budget", type=budget_option, default=os.environ.get("HA_CHAOS_BUDGET", "ci"),
                    help="ci: a few curated + generated plans; nightly: every curated plan and a large "
                         "Hypothesis budget; a duration (90s, 30m, 2h): the kept and curated plans that fit, then "
                         "generated swarm plans until it is spent (also HA_CHAOS_BUDGET)")
    group.addoption("--chaos-shard", type=shard_option, default=None, metavar="I/N",
                    help="run shard I of N of the chaos tier: curated plans round-robin by sorted name, the other "
                         "chaos tests by node id, generated plans by number (pass the same --chaos-seed to all)")
    group.addoption("--chaos-profile", default="full", choices=["postgres", "faultproxy", "full"],
                    help="profile of the session `topology` fixture (default: full)")
    group.addoption("--chaos-target", default=None, metavar="FILE",
                    help="target file of the deployment the fixtures start and the chaos tests run against "
                         "(default: targets/reference.yaml); curated plans that do not apply to it are skipped")
    group.addoption("--chaos-no-setup", action="store_true", default=False,
                    help="do not run `ha-chaos setup` before Docker tests")
    group.addoption("--chaos-replication", dest="chaos_replication", choices=REPLICATION_MODES, default="sync",
                    help="PostgreSQL replication of the topologies the fixtures start: sync (Patroni synchronous_mode, "
                         "the default) or async (the known-unsafe mode: a failover may lose acknowledged commits)")
    group.addoption("--async-replication", dest="chaos_replication", action="store_const", const="async",
                    help="the same as --chaos-replication async")


def budget_option(value: str) -> str:
    """``--chaos-budget``: ``ci``, ``nightly`` or a duration (``harness.budget.parse_duration``)."""
    import argparse

    from harness.budget import NAMED_BUDGETS, is_duration

    text = str(value).strip()
    if text in NAMED_BUDGETS or is_duration(text):
        return text
    raise argparse.ArgumentTypeError(f"{value!r}: not ci, nightly or a duration such as 90s, 30m, 2h")


def shard_option(value: str) -> str:
    import argparse

    from harness.shard import Shard

    try:
        return str(Shard.parse(value, "--chaos-shard"))
    except HarnessError as exc:
        raise argparse.ArgumentTypeError(exc.what) from None


def budget_seconds(config: Any) -> float | None:
    """The duration of a ``--chaos-budget`` duration, None for the named budgets."""
    from harness.budget import NAMED_BUDGETS, parse_duration

    budget = str(config.getoption("--chaos-budget"))
    return None if budget in NAMED_BUDGETS else parse_duration(budget, "--chaos-budget")


def shard_of(config: Any) -> Any:
    from harness.shard import Shard

    return Shard.parse(config.getoption("--chaos-shard"), "--chaos-shard")


def pytest_configure(config: pytest.Config) -> None:
    registered = {line.split(":")[0].strip() for line in config.getini("markers")}
    for line in MARKERS:  # pyproject.toml lists the same lines: do not show them twice in `pytest --markers`
        if line.split(":")[0] not in registered:
            config.addinivalue_line("markers", line)
    budget = config.getoption("--chaos-budget")
    os.environ["HA_CHAOS_BUDGET"] = budget  # read by tests whose decorators are evaluated at import
    config.stash[_reports_key] = []
    seed = _resolve_seed(config.getoption("--chaos-seed"), budget)
    config.stash[_seed_key] = seed
    if seed is None:
        os.environ.pop(SEED_ENV, None)
    else:
        os.environ[SEED_ENV] = str(seed)


def _resolve_seed(given: int | None, budget: str) -> int | None:
    """``--chaos-seed`` wins; ``nightly`` or a duration without it draws a fresh seed (printed, so a failure
    reproduces with ``--chaos-seed``); ``ci`` without it has none: its generated plans are derandomized (the same
    every run)."""
    if given is not None:
        return given
    return random.SystemRandom().randrange(2**32) if budget != "ci" else None


def plan_seed() -> int | None:
    """The seed of this session's generated plans (None: derandomized), for test modules at import."""
    value = os.environ.get(SEED_ENV)
    return int(value) if value else None


def seed_line(seed: int | None) -> str:
    if seed is None:
        return "ha-chaos generated plans: derandomized (the same plans every run; --chaos-seed S draws others)"
    return f"ha-chaos generated plans: seed {seed} (reproduce with --chaos-seed {seed})"


def generated_timeout_s(examples: int) -> float:
    """pytest-timeout bound for one test that runs ``examples`` live Hypothesis examples (pyproject's 900 s
    is per test, and the nightly budget runs hundreds of examples in one test)."""
    return max(TEST_TIMEOUT_S, examples * EXAMPLE_BOUND_S + MARGIN_S)


def replication(config: pytest.Config) -> str:
    """``sync`` or ``async``: the PostgreSQL replication of the topologies this session's fixtures start."""
    return str(config.getoption("--chaos-replication"))


def replication_label(synchronous: bool) -> str:
    return "sync" if synchronous else "async"


def topology_kwargs(config: pytest.Config, **kw: Any) -> dict[str, Any]:
    """Keyword arguments of a ``Topology`` a fixture starts: the session's replication mode, unless the test
    asks for one itself (``topology_factory("postgres", synchronous_mode=True)``)."""
    target = chaos_target(config)
    return {"synchronous_mode": replication(config) == "sync", **({"target": target} if target else {}), **kw}


def chaos_target(config: pytest.Config) -> str | None:
    """``--chaos-target``: the deployment's target file (None: the reference)."""
    try:
        return config.getoption("--chaos-target") or None
    except (ValueError, KeyError):  # a config without the option (a fake in unit tests)
        return None


def target_model(target: str | None) -> TopologyModel | None:
    """The full model of a target file (None: the reference, the loader's default)."""
    if not target:
        return None
    from harness.topology.target import load_target

    return load_target(target).model("full")


def pytest_report_header(config: pytest.Config) -> str:
    mode = replication(config)
    unsafe = " (known-unsafe: a failover may lose acknowledged commits)" if mode == "async" else ""
    shard = config.getoption("--chaos-shard")
    return (f"{seed_line(config.stash.get(_seed_key, None))}; budget {config.getoption('--chaos-budget')}; "
            + (f"shard {shard}; " if shard else "") + f"PostgreSQL replication {mode}{unsafe}")


def is_own_chaos_path(path: Path | None) -> bool:
    """Whether ``path`` is a test module of this project's chaos tier (``tests/chaos/``)."""
    return path is not None and path.suffix == ".py" and CHAOS_TESTS_DIR in path.resolve().parents


@contextlib.contextmanager
def chaos_profile(budget: str) -> Iterator[str]:
    """The Hypothesis profile of ``budget`` in effect inside the block, the previous one restored after it."""
    from hypothesis import settings

    from harness.budget import NAMED_BUDGETS
    from harness.plans.profiles import load_profile

    # get_current_profile_name() is recent (not in 6.100, which pyproject allows): fall back to the attribute
    # older releases keep the name in
    current = getattr(settings, "get_current_profile_name", None)
    previous = current() if current else settings._current_profile
    name = load_profile(budget if budget in NAMED_BUDGETS else "ci")  # a duration: its campaign draws the plans
    try:
        yield name
    finally:
        settings.load_profile(previous)


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Any:
    """Import this project's chaos modules under the budget's Hypothesis profile.

    Why at import: ``@given``/``@settings`` bind their settings when the module is imported (tests/chaos/
    test_generated.py reads ``settings().max_examples`` then). Why only there, restored after: loaded for the whole
    session, the profile (5 live examples, no shrinking) would also bind every other Hypothesis test collected
    after it, in this project and in any other project where ha-chaos is installed.
    """
    if not is_own_chaos_path(getattr(collector, "path", None)):
        return (yield)
    with chaos_profile(collector.config.getoption("--chaos-budget")):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """The budget's profile while this project's chaos tests run, for settings created inside a test."""
    if not is_own_chaos_path(getattr(item, "path", None)):
        return (yield)
    with chaos_profile(item.config.getoption("--chaos-budget")):
        return (yield)


def _uses_shared_topology(item: pytest.Item) -> bool:
    """Whether the item requests this plugin's session ``topology`` (not a fixture of the same name elsewhere)."""
    info = getattr(item, "_fixtureinfo", None)
    defs = info.name2fixturedefs.get("topology", ()) if info is not None else ()
    return bool(defs) and getattr(defs[-1].func, "__module__", None) == __name__


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Move chaos tests to the end (kept failing plans of fault_plans/found/ first among them), and before them
    the tests that use the shared session topology; every other test keeps its place relative to the others.

    Why: the shared reference topology (15 containers) is started only once the tests that bring their own
    processes or topologies are done - on a 2-core machine its idle load alone made the timing-sensitive
    reference-node tests miss deadlines. Tests that are none of these are not ha-chaos's to reorder (this
    project's unit-first order is its own tests/conftest.py's).
    """

    def rank(item: pytest.Item) -> tuple[int, int]:
        if item.get_closest_marker("chaos"):
            if _runs_campaign(item):
                return 2, 2  # the generated campaign spends what the others left of a duration budget
            return 2, 0 if _runs_found_plan(item) else 1  # kept failing plans first, as regressions
        return (1 if _uses_shared_topology(item) else 0), 0

    items.sort(key=rank)
    if config is not None:
        _shard_items(config, items)
        _budget_marks(config, items)


def _runs_campaign(item: pytest.Item) -> bool:
    return "chaos_campaign" in getattr(item, "fixturenames", ())


def _shard_items(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``--chaos-shard i/N``: deselect the other shards' chaos tests. Curated plans were split when they were
    parametrized (``budget_plan_files``); the campaign test runs in every shard (its generated plans are split by
    number); every other chaos test goes round-robin by sorted node id."""
    shard = shard_of(config)
    if not shard.sharded:
        return
    split = sorted(i.nodeid for i in items if i.get_closest_marker("chaos") and not _runs_campaign(i)
                   and not _is_curated(i))
    mine = set(shard.select(split, name=str))
    dropped = [i for i in items if i.nodeid in split and i.nodeid not in mine]
    if dropped:
        items[:] = [i for i in items if i not in dropped]
        config.hook.pytest_deselected(items=dropped)


def _is_curated(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    return callspec is not None and "curated_plan" in callspec.params


def _budget_marks(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under a duration budget: Hypothesis-driven chaos tests are skipped (the campaign test generates plans
    instead, steered by coverage and split by shard), and the campaign test's pytest-timeout is the budget plus
    ``MARGIN_S`` (pyproject's 900 s is per test)."""
    seconds = budget_seconds(config)
    if seconds is None:
        return
    for item in items:
        if not item.get_closest_marker("chaos"):
            continue
        if _runs_campaign(item):
            item.add_marker(pytest.mark.timeout(max(TEST_TIMEOUT_S, seconds + MARGIN_S)))
        elif getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
            item.add_marker(pytest.mark.skip(reason="a --chaos-budget duration generates plans in the campaign test "
                                                    "(tests/chaos/test_budgeted.py) instead"))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A duration budget starts with the first chaos test (before its fixtures start the topology)."""
    if item.get_closest_marker("chaos"):
        session_budget(item.config)


def session_budget(config: pytest.Config) -> Budget | None:
    """The session's duration budget (None under ``ci``/``nightly``), started on first use."""
    if _budget_key not in config.stash:
        from harness import campaign
        from harness.budget import Budget

        seconds = budget_seconds(config)
        config.stash[_budget_key] = None if seconds is None else Budget(seconds, clock=lambda: campaign.monotonic())
    return config.stash[_budget_key]


def session_cost(config: pytest.Config) -> CostModel:
    if _cost_key not in config.stash:
        from harness.budget import CostModel

        config.stash[_cost_key] = CostModel()
    return config.stash[_cost_key]


def session_tally(config: pytest.Config) -> Tally:
    """Coverage of every run in ``--chaos-runs-dir`` (earlier sessions and nights too), grown by each run."""
    if _tally_key not in config.stash:
        from harness.coverage import Tally

        runs = Path(config.getoption("--chaos-runs-dir"))
        config.stash[_tally_key] = Tally.load([runs]) if runs.is_dir() else Tally()
    return config.stash[_tally_key]


def _runs_found_plan(item: pytest.Item) -> bool:
    from harness.plans.loader import FOUND_DIR

    callspec = getattr(item, "callspec", None)
    plan = callspec.params.get("curated_plan") if callspec is not None else None
    return plan is not None and Path(plan).resolve().parent == FOUND_DIR


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    report = yield
    if report.failed:
        item.session.stash[_failed_key] = True
        item.stash[_failed_key] = True
    return report


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    lines = config.stash.get(_reports_key, [])
    if lines:
        terminalreporter.section("ha-chaos runs")
        terminalreporter.write_line(seed_line(config.stash.get(_seed_key, None)))
        for line in lines:
            terminalreporter.write_line(line)
    for campaign in config.stash.get(_campaigns_key, []):
        import io

        from rich.console import Console

        from harness.coverage import render_table

        terminalreporter.section("ha-chaos generated campaign")
        terminalreporter.write_line(campaign.ran_line())
        text = io.StringIO()
        Console(file=text, width=400, highlight=False, color_system=None).print(
            render_table(campaign.coverage, title="fault coverage (this runs dir, every campaign in it)"))
        for line in text.getvalue().splitlines():
            terminalreporter.write_line(line)


def _teardown(request: pytest.FixtureRequest, topo: Topology, failed: bool) -> None:
    if failed and request.config.getoption("--chaos-keep"):
        from harness.topology import registry

        registry.set_detached(topo.run_id, True)
        print(f"\n[ha-chaos] --chaos-keep: topology {topo.run_id} left running; remove it with "
              f"`ha-chaos down --run {topo.run_id}`")
        return
    topo.stop()


@pytest.fixture(scope="session")
def machine(request: pytest.FixtureRequest) -> None:
    """The machine is ready for Docker tests: daemon, compose v2 plugin, project images (idempotent)."""
    # testcontainers' Ryuk image cannot be pulled here; the harness reaps by label itself. Set here, where this
    # project's Docker tests begin, not for every pytest session on the machine.
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")
    if request.config.getoption("--chaos-no-setup"):
        return
    from harness.platform.setup import setup

    try:
        setup(images=True)
    except HarnessError as exc:
        pytest.fail(exc.render(), pytrace=False)


def _start(topo: Topology) -> Topology:
    try:
        return topo.start()
    except HarnessError as exc:
        pytest.fail(exc.render(), pytrace=False)


@pytest.fixture(scope="session")
def topology(request: pytest.FixtureRequest, machine: None,
             record_testsuite_property: Callable[[str, object], None]) -> Iterator[Topology]:
    """The reference topology (profile from --chaos-profile, replication from --chaos-replication), shared by the
    whole session; its replication mode is the JUnit test-suite property ``chaos_replication``."""
    from harness.topology.compose import Topology
    from harness.topology.signals import terminate_gracefully

    with terminate_gracefully():
        kw = topology_kwargs(request.config, seed=request.config.stash.get(_seed_key, None) or 0)
        record_testsuite_property("chaos_replication", replication_label(kw["synchronous_mode"]))
        topo = _start(Topology(request.config.getoption("--chaos-profile"), **kw))
        try:
            yield topo
        finally:
            _teardown(request, topo, request.session.stash.get(_failed_key, False))


@pytest.fixture
def topology_factory(request: pytest.FixtureRequest, machine: None) -> Iterator[Callable[..., Topology]]:
    """Start dedicated topologies for one test (replication from --chaos-replication unless ``synchronous_mode`` is
    given; the test's JUnit property ``chaos_replication``); all are torn down after it (kept with --chaos-keep on
    failure)."""
    from harness.topology.compose import Topology

    started: list[Topology] = []

    def make(profile: str = "full", **kw: Any) -> Topology:
        if kw.get("bugs"):
            kw["bugs"] = _checked_bugs(kw["bugs"])
        kw = topology_kwargs(request.config, **kw)
        record_replication(request.node.user_properties, kw["synchronous_mode"])
        topo = Topology(profile, **kw)
        started.append(topo)
        return _start(topo)

    try:
        yield make
    finally:
        for topo in started:
            _teardown(request, topo, request.node.stash.get(_failed_key, False))


def record_replication(properties: list[tuple[str, object]], synchronous: bool) -> None:
    """The JUnit property ``chaos_replication`` of a test (once per mode it used)."""
    prop = ("chaos_replication", replication_label(synchronous))
    if prop not in properties:
        properties.append(prop)


def _checked_bugs(bugs: str) -> str:
    """Bug switches validated before a topology starts (an unknown one would crash-loop every node)."""
    from harness.campaign import check_bugs

    try:
        return check_bugs(bugs)
    except HarnessError as exc:
        pytest.fail(exc.render(), pytrace=False)


def resolve_plan(plan: Plan | str | Path, model: TopologyModel | None = None) -> Plan:
    """A plan object, or a plan file (a bare name: a curated plan) validated against ``model`` (the topology's;
    default the reference)."""
    from harness.campaign import CURATED_DIR
    from harness.plans.loader import load_plan
    from harness.plans.schema import Plan

    if isinstance(plan, Plan):
        return plan
    path = Path(plan)
    if not path.exists() and not path.suffix:
        path = CURATED_DIR / f"{plan}.yaml"
    return load_plan(path, model)


@pytest.fixture
def chaos_run(request: pytest.FixtureRequest, record_property: Callable[[str, object], None]
              ) -> Callable[..., RunOutcome]:
    """Run a plan on a settled topology (the session one unless given) and return its outcome."""
    from harness.runner import run_plan, settle

    def run(plan: Plan | str | Path, topology: Topology | None = None, bugs: str = "",
            generated: bool = False) -> RunOutcome:
        """``generated``: a drawn plan (a step its own faults left nothing to aim at is skipped, not an error)."""
        from harness import campaign
        from harness.plans.loader import PlanError

        bugs = _checked_bugs(bugs) if bugs else ""
        target = chaos_target(request.config)
        try:
            p = resolve_plan(plan, topology.model if topology is not None else target_model(target))
        except PlanError as exc:
            if not target:
                raise
            pytest.skip(f"{plan} does not apply to --chaos-target {target}: {exc.problems[0]}")
        budget, cost = session_budget(request.config), session_cost(request.config)
        if budget is not None and not budget.fits(cost.estimate(p)):
            pytest.skip(f"--chaos-budget: {p.name} (~{cost.estimate(p):.0f} s) does not fit ({budget.line()})")
        topo = topology or request.getfixturevalue("topology")
        t0 = campaign.monotonic()
        try:
            settle(topo)
        except HarnessError as exc:
            pytest.fail(f"topology did not settle before {p.name}: {exc.render()}", pytrace=False)
        outcome = run_plan(p, topo, request.config.getoption("--chaos-runs-dir"), bugs=bugs, generated=generated)
        cost.observe(p, campaign.monotonic() - t0)
        record_coverage(outcome, session_tally(request.config))
        record_replication(request.node.user_properties, getattr(topo, "synchronous_mode", True))
        request.config.stash[_reports_key].append(f"{request.node.nodeid}: {record_outcome(outcome, record_property)}")
        return outcome

    return run


def record_coverage(outcome: RunOutcome, tally: Tally) -> None:
    """Write the run's coverage.json and count it (never fatal: coverage only steers, it does not judge)."""
    from harness.coverage import write_run_coverage

    if not (outcome.run_dir / "history.jsonl").exists():
        return
    try:
        tally.add(write_run_coverage(outcome.run_dir))
    except Exception as exc:  # a history the coverage cannot read was still judged by the checkers
        print(f"\n[ha-chaos] coverage of {outcome.run_dir} not computed: {type(exc).__name__}: {exc}")


@pytest.fixture
def chaos_campaign(request: pytest.FixtureRequest, record_property: Callable[[str, object], None]
                   ) -> Callable[[], Campaign]:
    """``chaos_campaign()``: generated swarm plans on the session topology until the ``--chaos-budget`` duration is
    spent (this shard's plan numbers, the session's seed), each started only if it can finish; a failing one is
    kept in fault_plans/found/ and shrunk within a share of the budget. Skips the test under ``ci``/``nightly``."""

    def run() -> Campaign:
        from harness.campaign import Campaign
        from harness.swarm import SwarmSource

        config = request.config
        budget = session_budget(config)
        if budget is None:
            pytest.skip("the generated campaign runs with a --chaos-budget duration (e.g. 2h); ci and nightly "
                        "generate plans with Hypothesis (tests/chaos/test_generated.py)")
        seed = config.stash.get(_seed_key, None) or 0
        shard = shard_of(config)
        topo = request.getfixturevalue("topology")
        campaign = Campaign(Path(config.getoption("--chaos-runs-dir")), seed=seed, shard=shard, budget=budget,
                            cost=session_cost(config), tally=session_tally(config),
                            synchronous_mode=getattr(topo, "synchronous_mode", True))
        config.stash.setdefault(_campaigns_key, []).append(campaign)
        for prop in (("chaos_seed", seed), ("chaos_shard", str(shard))):
            record_property(*prop)
        try:
            campaign.run_generated(topo, SwarmSource(seed, shard=shard, tally=campaign.coverage))
        finally:
            if campaign.outcomes or campaign.not_started:
                campaign.write_summary()
            record_property("chaos_ran", campaign.ran_line())
            for o in campaign.outcomes:
                line = record_outcome(o, lambda *_: None)
                config.stash[_reports_key].append(f"{request.node.nodeid}: {line}")
        return campaign

    return run


def replay_command(outcome: RunOutcome) -> str:
    """The run directory's own replay command (with ``--bugs`` when the run had bug switches)."""
    from harness.report.rundir import RunDir

    return RunDir(outcome.run_dir).replay_command()


def witness_line(outcome: RunOutcome) -> str:
    """The first witness of the first failed invariant, on one line ("" if none)."""
    for r in outcome.results:
        if r.verdict == "fail" and r.witnesses:
            w = r.witnesses[0]
            note = f" <- {w['note']}" if w.get("note") else ""
            return f"invariant {r.invariant}: t={w.get('t')} {w.get('process')} {w.get('type')} {w.get('f')}{note}"
    return ""


def record_outcome(outcome: RunOutcome, record_property: Callable[[str, object], None]) -> str:
    """JUnit properties of a chaos run (verdict, report, replay; failed invariants and a witness when it failed);
    returns the terminal-summary line."""
    report = outcome.run_dir / "report.html"
    replay = replay_command(outcome)
    record_property("chaos_verdict", outcome.verdict)
    record_property("chaos_report", str(report))
    record_property("chaos_replay", replay)
    failed = ",".join(outcome.failed_invariants)
    if failed:
        record_property("chaos_failed", failed)
        record_property("chaos_witness", witness_line(outcome))
    return f"{outcome.plan} -> {outcome.verdict} (failed: {failed or '-'}) report: {report} replay: {replay}"


def describe(outcome: RunOutcome) -> str:
    """A failure message: verdict, failed invariants with their explanation and first witness, report, replay."""
    lines = [f"plan {outcome.plan}: {outcome.verdict}" + (f" ({outcome.error})" if outcome.error else "")]
    for r in outcome.results:
        if r.verdict != "pass":
            lines.append(f"  [{r.verdict}] {r.invariant} {r.name}: {r.explanation}")
            if r.witnesses:
                lines.append(f"      witness: {r.witnesses[0]}")
    lines.append(f"  report: {outcome.run_dir / 'report.html'}")
    lines.append(f"  replay: {replay_command(outcome)}")
    return "\n".join(lines)


def budget_plan_files(config: pytest.Config) -> list[Path]:
    """The plans the chaos tier runs: ``--chaos-plan`` files/directories; else ``nightly`` or a duration: the kept
    failing plans of fault_plans/found/ first, then every curated plan; ``ci``: a few curated plans (no found/
    ones). With ``--chaos-shard i/N``, this shard's share: round-robin by sorted file name."""
    from harness.campaign import CURATED_DIR, default_plan_files
    from harness.plans.loader import plan_files

    given = config.getoption("--chaos-plan")
    try:
        if given:
            files = plan_files(given)
        elif config.getoption("--chaos-budget") == "ci":
            files = [CURATED_DIR / f"{name}.yaml" for name in CI_PLANS]
        else:
            files = default_plan_files()
    except HarnessError as exc:
        raise pytest.UsageError(f"--chaos-plan: {exc.render()}") from None
    return shard_of(config).select(files, name=lambda f: f.name)


@pytest.fixture(scope="session")
def curated_plans(request: pytest.FixtureRequest) -> list[Path]:
    return budget_plan_files(request.config)
