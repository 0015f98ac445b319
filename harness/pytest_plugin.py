"""pytest plugin of ha-chaos (registered through the ``pytest11`` entry point in pyproject.toml).

Options (group ``ha-chaos``): ``--chaos-plan``, ``--chaos-seed``, ``--chaos-runs-dir``, ``--chaos-keep``,
``--chaos-budget`` (``ci`` | ``nightly``: the Hypothesis profile and how many curated plans run),
``--chaos-profile``, ``--chaos-no-setup``.

Fixtures:
- ``machine`` (session): runs ``ha-chaos setup`` once (Docker daemon, compose v2 plugin, images), so ``pytest``
  alone prepares a fresh machine. Every Docker-using fixture depends on it.
- ``topology`` (session): the reference topology (profile from ``--chaos-profile``), torn down at the end
  (``--chaos-keep`` leaves it up if a test failed and prints how to remove it).
- ``topology_factory`` (function): ``topology_factory(profile="full", bugs="no_fencing")`` starts a dedicated
  topology for one test and removes it after the test.
- ``chaos_run`` (function): ``chaos_run(plan, topology=None) -> RunOutcome`` runs a plan (a Plan, a path or a
  curated plan name) on a settled topology and writes its run directory; the report path and replay command
  are attached to the test's JUnit properties and printed in the terminal summary.
- ``curated_plans`` (session): the curated plans the budget selects.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.plans.schema import Plan
    from harness.runner import RunOutcome
    from harness.topology.compose import Topology

_failed_key = pytest.StashKey[bool]()
_reports_key = pytest.StashKey[list[str]]()
#: curated plans the ``ci`` budget runs (short, and together they cross DB, process and proxy faults)
CI_PLANS = ("kill-active-participant", "active-db-blackhole", "sequencer-killed")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ha-chaos", "ha-chaos chaos testing")
    group.addoption("--chaos-plan", action="append", default=[], metavar="PATH",
                    help="run these plan files in the chaos tests instead of the budget's curated selection")
    group.addoption("--chaos-seed", type=int, default=None, help="seed for generated plans (default: random)")
    group.addoption("--chaos-runs-dir", default="runs", help="where run directories go (default: runs/)")
    group.addoption("--chaos-keep", action="store_true", default=False,
                    help="leave the topology up when a test fails, for inspection (remove with `ha-chaos down --all`)")
    group.addoption("--chaos-budget", choices=["ci", "nightly"], default=os.environ.get("HA_CHAOS_BUDGET", "ci"),
                    help="ci: a few curated + generated plans; nightly: every curated plan and a large "
                         "Hypothesis budget (also HA_CHAOS_BUDGET)")
    group.addoption("--chaos-profile", default="full", choices=["postgres", "faultproxy", "full"],
                    help="profile of the session `topology` fixture (default: full)")
    group.addoption("--chaos-no-setup", action="store_true", default=False,
                    help="do not run `ha-chaos setup` before Docker tests")


def pytest_configure(config: pytest.Config) -> None:
    # testcontainers' Ryuk image cannot be pulled here; the harness reaps by label itself.
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")
    from harness.plans.profiles import load_profile

    budget = config.getoption("--chaos-budget")
    os.environ["HA_CHAOS_BUDGET"] = budget  # read by tests whose decorators are evaluated at import
    load_profile(budget)
    config.stash[_reports_key] = []


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run order: unit, then Docker tests that do not use the session topology, then those that do, then chaos.

    Why: fast feedback first, and the shared reference topology (15 containers) is started only once the tests
    that bring their own processes or topologies are done - on a 2-core machine its idle load alone made the
    timing-sensitive reference-node tests miss deadlines.
    """

    def rank(item: pytest.Item) -> int:
        if item.get_closest_marker("unit"):
            return 0
        if item.get_closest_marker("chaos"):
            return 3
        return 2 if "topology" in getattr(item, "fixturenames", ()) else 1

    items.sort(key=rank)


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
        for line in lines:
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
def topology(request: pytest.FixtureRequest, machine: None) -> Iterator[Topology]:
    """The reference topology (profile from --chaos-profile), shared by the whole session."""
    from harness.topology.compose import Topology
    from harness.topology.signals import terminate_gracefully

    with terminate_gracefully():
        topo = _start(Topology(request.config.getoption("--chaos-profile"),
                               seed=request.config.getoption("--chaos-seed") or 0))
        try:
            yield topo
        finally:
            _teardown(request, topo, request.session.stash.get(_failed_key, False))


@pytest.fixture
def topology_factory(request: pytest.FixtureRequest, machine: None) -> Iterator[Callable[..., Topology]]:
    """Start dedicated topologies for one test; all are torn down after it (kept with --chaos-keep on failure)."""
    from harness.topology.compose import Topology

    started: list[Topology] = []

    def make(profile: str = "full", **kw: Any) -> Topology:
        topo = Topology(profile, **kw)
        started.append(topo)
        return _start(topo)

    try:
        yield make
    finally:
        for topo in started:
            _teardown(request, topo, request.node.stash.get(_failed_key, False))


def resolve_plan(plan: Plan | str | Path) -> Plan:
    from harness.campaign import CURATED_DIR
    from harness.plans.loader import load_plan
    from harness.plans.schema import Plan

    if isinstance(plan, Plan):
        return plan
    path = Path(plan)
    if not path.exists() and not path.suffix:
        path = CURATED_DIR / f"{plan}.yaml"
    return load_plan(path)


@pytest.fixture
def chaos_run(request: pytest.FixtureRequest, record_property: Callable[[str, object], None]
              ) -> Callable[..., RunOutcome]:
    """Run a plan on a settled topology (the session one unless given) and return its outcome."""
    from harness.runner import run_plan, settle

    def run(plan: Plan | str | Path, topology: Topology | None = None, bugs: str = "") -> RunOutcome:
        topo = topology or request.getfixturevalue("topology")
        p = resolve_plan(plan)
        try:
            settle(topo)
        except HarnessError as exc:
            pytest.fail(f"topology did not settle before {p.name}: {exc.render()}", pytrace=False)
        outcome = run_plan(p, topo, request.config.getoption("--chaos-runs-dir"), bugs=bugs)
        report = outcome.run_dir / "report.html"
        replay = f"ha-chaos replay {outcome.run_dir / 'plan.yaml'}" + (f" --bugs {bugs}" if bugs else "")
        record_property("chaos_verdict", outcome.verdict)
        record_property("chaos_report", str(report))
        record_property("chaos_replay", replay)
        request.config.stash[_reports_key].append(
            f"{request.node.nodeid}: {p.name} -> {outcome.verdict} "
            f"(failed: {', '.join(outcome.failed_invariants) or '-'}) report: {report} replay: {replay}")
        return outcome

    return run


def describe(outcome: RunOutcome) -> str:
    """A failure message: verdict, failed invariants with their explanation and first witness, report, replay."""
    lines = [f"plan {outcome.plan}: {outcome.verdict}" + (f" ({outcome.error})" if outcome.error else "")]
    for r in outcome.results:
        if r.verdict != "pass":
            lines.append(f"  [{r.verdict}] {r.invariant} {r.name}: {r.explanation}")
            if r.witnesses:
                lines.append(f"      witness: {r.witnesses[0]}")
    lines.append(f"  report: {outcome.run_dir / 'report.html'}")
    lines.append(f"  replay: ha-chaos replay {outcome.run_dir / 'plan.yaml'}")
    return "\n".join(lines)


@pytest.fixture(scope="session")
def curated_plans(request: pytest.FixtureRequest) -> list[Path]:
    from harness.campaign import CURATED_DIR

    given = request.config.getoption("--chaos-plan")
    if given:
        return [Path(p) for p in given]
    if request.config.getoption("--chaos-budget") == "nightly":
        return sorted(CURATED_DIR.glob("*.yaml"))
    return [CURATED_DIR / f"{name}.yaml" for name in CI_PLANS]
