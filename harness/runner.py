"""One run of one plan against a live topology: workload + executor -> history -> checkers -> report.

Data flows one way (ARCHITECTURE.md): the executor never judges and the checkers never touch Docker. This module
only wires them: it creates the run directory, starts the workload, lets the executor fire and heal the faults,
stops the workload after the quiet period, collects the nodes' single-writer evidence (``HA_CHAOS_EVIDENCE``: which
evidence, the workload samples PostgreSQL for the rest) and the container logs, then has
``harness.report.check_run`` judge and render. Between runs on a shared topology, ``settle`` brings it back to a
clean state (every container running, no toxic, a PG leader and one active replica per pair) or says why not.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from harness.checkers import CheckContext, CheckResult
from harness.checkers.roles import DEFAULT_SOURCES, EVIDENCE_ENV, EVIDENCE_SOURCES, parse_evidence
from harness.client.api import check_protocols, health_client
from harness.client.json_api import Indeterminate
from harness.errors import HarnessError
from harness.faults.live import LiveInjector, LiveView
from harness.history import HistoryWriter
from harness.plans.executor import ExecutionResult, Executor
from harness.plans.loader import dump_plan
from harness.plans.schema import Plan
from harness.report import RunDir, check_run
from harness.topology import pg
from harness.topology.compose import Topology
from harness.topology.endpoints import Endpoints
from harness.workload import Workload, WorkloadConfig
from harness.workload.pglog import sessions_from_logs

log = logging.getLogger("ha-chaos.runner")
EXIT = {"pass": 0, "fail": 1, "unknown": 2, "error": 3}


def evidence_sources(env: dict[str, str] | None = None) -> list[str]:
    """Which single-writer evidence a run gathers: ``HA_CHAOS_EVIDENCE`` (comma list of ``node``, ``pg``,
    ``pglog``; default ``node,pg``). ``pg`` or ``pglog`` alone judges the reference topology as a black-box target:
    no ``/admin/evidence`` is read, PostgreSQL decides. Checked before anything starts."""
    try:
        chosen = parse_evidence((os.environ if env is None else env).get(EVIDENCE_ENV, ""))
    except ValueError as exc:
        raise HarnessError(str(exc), f"use a comma list of {', '.join(EVIDENCE_SOURCES)}, e.g. "
                                     f"{EVIDENCE_ENV}=pg") from None
    return list(DEFAULT_SOURCES) if chosen is None else chosen


@dataclass
class RunOutcome:
    plan: str
    verdict: str  # pass / fail / unknown / error
    run_dir: Path
    results: list[CheckResult]
    execution: ExecutionResult | None
    duration_s: float
    error: str | None = None

    @property
    def exit_code(self) -> int:
        return EXIT[self.verdict]

    @property
    def failed_invariants(self) -> list[str]:
        return [r.invariant for r in self.results if r.verdict == "fail"]


def settle(topo: Topology, timeout: float = 120) -> None:
    """Bring a shared topology back to a clean state between runs, or raise naming what did not recover."""
    inj = LiveInjector(topo)
    for svc in topo.model.service_names:
        inj.ensure_running(svc)
    inj.proxy.reset()  # Toxiproxy semantics: every proxy enabled, every toxic removed
    for lk in topo.model.links:  # undo any re-pointed upstream (former-primary trap)
        if inj.proxy.proxy(lk.name).upstream != lk.upstream:
            inj.proxy.update_proxy(lk.name, upstream=lk.upstream)
    topo.wait_healthy(timeout, services=topo.model.service_names)
    view = LiveView(topo)
    pg.await_condition("a PostgreSQL leader", view.pg_primary, timeout)
    # a rejoining former leader must stream again, or the next plan's switchover/failover has no candidate
    for member in topo.model.replicas("postgres"):
        pg.await_condition(f"{member} running in the Patroni cluster",
                           lambda m=member: pg.members(topo).get(m, {}).get("state") in ("running", "streaming"),
                           timeout, interval=0.5)
    for member in pg.ensure_streaming(topo, timeout):
        log.warning("settle: %s did not stream from the PostgreSQL leader; reinitialized it from the leader", member)
    for pair in topo.model.pairs:
        pg.await_condition(f"one active replica of {pair}", lambda p=pair: view.active(p), timeout, interval=0.5)


def _collect_evidence(ep: Endpoints, history: HistoryWriter, nodes: tuple[str, ...]) -> None:
    async def one(node: str) -> None:
        errors = []
        async with aiohttp.ClientSession() as session:
            for replica in ep.topo.model.replicas(node):
                url = ep.health(replica)
                if url is None:
                    errors.append(f"{replica}: not reachable")
                    continue
                try:
                    proto = ep.topo.target.endpoints[ep.topo.model.service(replica).role]["health"].protocol
                    data = await health_client(proto, url, session, timeout=5).evidence()
                    history.ok("harness", "evidence", {"node": node, "epochs": data.get("epochs", [])})
                    return
                except Indeterminate as exc:
                    errors.append(f"{replica}: {exc}")
        history.fail("harness", "evidence", {"node": node, "error": "; ".join(errors)})

    async def all_nodes() -> None:
        await asyncio.gather(*(one(n) for n in nodes))

    ep.refresh(force=True)
    asyncio.run(all_nodes())


def _collect_pg_log(topo: Topology, history: HistoryWriter, t_start: float) -> None:
    """The pairs' write sessions from every PostgreSQL member's statement log of this run (``pglog`` evidence)."""
    logs: dict[str, str] = {}
    for svc in topo.model.replicas("postgres"):
        try:
            logs[svc] = topo.container(svc).logs(since=int(t_start) - 1).decode(errors="replace")
        except Exception as exc:
            history.fail("harness", "pg_log", {"server": svc, "error": str(exc)[:200]})
    pairs = {node: list(reps) for node, reps in topo.model.pairs.items()}
    for value in sessions_from_logs(logs, pairs, since_ms=int(t_start * 1000)):
        history.ok("harness", "pg_log_session", value)
    history.info("harness", "pg_log", {"servers": sorted(logs)})


def _collect_logs(topo: Topology, rd: RunDir, since: float) -> None:
    for svc, c in topo.containers().items():
        try:
            rd.log_path(svc).write_bytes(c.logs(since=int(since), timestamps=True))
        except Exception as exc:  # a container that vanished must not cost the whole report
            log.warning("logs of %s not collected: %s", svc, exc)


def run_target(topo: Topology) -> dict[str, Any]:
    """What a run records of its target: its summary (roles, pairs, parties, replication, evidence), the file it
    came from, and which service each fault-proxy link serves."""
    return {**topo.target.summary(), "path": str(topo.target_path),
            "links": {lk.name: lk.client for lk in topo.model.links}}


def topology_info(topo: Topology, seed: int, bugs: str) -> dict[str, Any]:
    digest = hashlib.sha256()
    for f in topo.compose_files:
        digest.update((topo.compose_dir / f).read_bytes())
    images = {svc: c.attrs.get("Image", "") for svc, c in topo.containers().items()}
    return {"run_id": topo.run_id, "profile": topo.profile, "compose_sha256": digest.hexdigest(), "seed": seed,
            "bugs": bugs, "replication": topo.replication, "images": images, "target": run_target(topo)}


def run_plan(plan: Plan, topo: Topology, runs_dir: Path | str, *, bugs: str = "",
             plan_path: str | None = None, generated: bool = False) -> RunOutcome:
    """Run ``plan`` once on ``topo`` (which must be settled) and judge it. Never leaves a fault behind.
    ``generated``: a drawn plan, whose steps may find nothing to aim at because of its own earlier faults: such a
    step is skipped (recorded), not a harness error."""
    t_start = time.time()
    t0 = time.monotonic()
    sources = evidence_sources()
    unspoken = check_protocols(topo.target.endpoints)
    if unspoken:
        raise HarnessError(f"target {topo.target.name!r} names protocols no ha-chaos client speaks: "
                           f"{', '.join(unspoken)}", "see harness/client/api.py for the protocols spoken")
    rd = RunDir.create(runs_dir, plan.name)
    rd.write_plan(dump_plan(plan))
    history = HistoryWriter(rd.history_path)
    # the deployment as the checkers must see it (pairs, links, parties): `ha-chaos check` re-judges from this
    # record, with no target file at hand
    history.info("harness", "target", run_target(topo))
    lacking = [s for s in sources if s not in topo.target.evidence]
    if lacking:  # the target has no such source (e.g. a real Canton has no /admin/evidence)
        sources = [s for s in sources if s in topo.target.evidence]
        history.info("harness", "evidence_sources", {"sources": sources, "reason": f"target {topo.target.name!r} "
                                                     f"has no {', '.join(lacking)} evidence"})
    elif sources != list(EVIDENCE_SOURCES):
        # recorded, so that an offline `ha-chaos check` judges the run on the evidence it was made with
        history.info("harness", "evidence_sources", {"sources": sources, "reason": f"{EVIDENCE_ENV} set"
                     if os.environ.get(EVIDENCE_ENV, "").strip() else "the default sources"})
    ep = Endpoints(topo)
    nonce = rd.timestamp.replace(".", "")[-10:] + "-"
    wcfg = WorkloadConfig.from_plan(plan.workload, plan.seed, nonce)
    wcfg.pg_sampling = "pg" in sources
    workload = Workload(ep, history, wcfg).start()
    execution: ExecutionResult | None = None
    error: str | None = None
    try:
        executor = Executor(plan, LiveInjector(topo), LiveView(topo), history, rd.path, run_id=topo.run_id,
                            settled=workload.settled, skip_unresolvable=generated)
        execution = executor.run()
    except HarnessError as exc:
        error = exc.what
    finally:
        workload.stop(drain_s=3.0)
    if workload.crashes and error is None:
        error = f"the workload failed: {workload.crashes[0]}"
    try:
        if "node" in sources:
            _collect_evidence(ep, history, tuple(topo.model.pairs))
        if "pglog" in sources:
            _collect_pg_log(topo, history, t_start)
    finally:
        history.close()
    _collect_logs(topo, rd, t_start - 1)
    rd.write_topology(topology_info(topo, plan.seed, bugs))
    ctx = CheckContext(recovery_bound_s=plan.recovery_bound_s, expect=plan.expect.model_dump(mode="json"))
    verdict, results = check_run(rd, ctx=ctx)
    if execution is not None and execution.harness_error:
        failed = [f"step {s.index} ({s.kind}): {s.state}" for s in execution.steps if s.state == "failed"]
        error = error or "; ".join(failed + execution.heal_errors) or "the plan was aborted"
    if error and verdict != "fail":
        verdict = "error"
    return RunOutcome(plan.name, verdict, rd.path, results, execution, time.monotonic() - t0, error)
