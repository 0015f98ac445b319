"""Sub-commands ``run`` (the main job), ``replay``, ``shrink`` and ``heal``."""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from harness import campaign as campaign_mod
from harness.budget import Budget, format_duration, parse_duration
from harness.campaign import Campaign, console, default_plan_files, heal_runs, runner_for
from harness.errors import InputError
from harness.plans.loader import FOUND_DIR, PlanError, found_plan_files, load_plan, plan_files, plans_in, save_found
from harness.plans.schema import Plan
from harness.plans.shrink import replay, shrink
from harness.shard import Shard
from harness.topology.cli import add_replication_flags, add_target_flag
from harness.topology.model import TopologyModel, reference_model
from harness.topology.target import load_target


def target_model(args: argparse.Namespace) -> TopologyModel:
    """The topology model plans are validated against: the --target file's, else the reference's."""
    return load_target(args.target).model("full") if getattr(args, "target", None) else reference_model()


def _load(paths: list[str], model: TopologyModel | None = None) -> list[Plan]:
    return [load_plan(f, model) for f in plan_files(paths)]


def _load_one(arg: str, command: str, model: TopologyModel | None = None) -> Plan:
    """``replay``/``shrink`` take exactly one plan: a file, or a directory holding exactly one plan file."""
    path = Path(arg)
    if path.is_dir():
        files = plans_in(path)
        if len(files) != 1:
            held = (f"holds {len(files)}: " + ", ".join(f.name for f in files[:5])) if files else "holds no plan file"
            raise InputError(f"{command} takes one plan; directory {path} {held}",
                             f"pass one plan file, e.g. `ha-chaos {command} {files[0] if files else 'PLAN.yaml'}`")
        return load_plan(files[0], model)
    return _load([arg], model)[0]


def _at_least_one(**options: int) -> None:
    for name, value in options.items():
        if value < 1:
            flag = "--" + name.replace("_", "-")
            raise InputError(f"{flag} must be at least 1, got {value}", f"pass {flag} 1 or more")


def _prepare(args: argparse.Namespace) -> None:
    if not args.no_setup:
        from harness.platform.setup import setup

        for line in setup(images=True):
            console.print(f"setup: {line}")


def fixed_plans(args: argparse.Namespace, shard: Shard) -> list[tuple[str, Plan]]:
    """The plan files of ``run`` (given ones, or the kept failures then the curated plans; none with
    --generate-only), this shard's share of them (round-robin by sorted file name), loaded, with their source."""
    if args.generate_only:
        return []
    model = target_model(args)
    if args.plans:  # plans a person named must fit the target: one that names a missing service is an error
        files = shard.select(plan_files(args.plans), name=lambda f: f.name)
        return [("given", load_plan(f, model)) for f in files]
    found = found_plan_files()
    files = shard.select(default_plan_files(), name=lambda f: f.name)
    kept = [f for f in files if f in found]
    if kept:
        console.print(f"{len(kept)} kept failing plan(s) from {FOUND_DIR} run first")
    out: list[tuple[str, Plan]] = []
    for f in files:
        try:
            out.append(("found" if f in found else "curated", load_plan(f, model)))
        except PlanError as exc:
            if not getattr(args, "target", None):
                raise
            # a curated plan written for the reference may name what another target lacks: it does not apply
            console.print(f"skipped {f.name}: it does not apply to target {args.target} "
                          f"({exc.problems[0].field or 'plan'}: {exc.problems[0].message})")
    return out


def _run(args: argparse.Namespace) -> int:
    from harness.swarm import SwarmSource

    if args.generate < 0:
        raise InputError(f"--generate must not be negative, got {args.generate}", "pass --generate 0 or more")
    budget_s = parse_duration(args.budget) if args.budget is not None else None
    shard = Shard.parse(args.shard)
    if args.generate_only and args.plans:
        raise InputError("--generate-only runs no plan file, but plan files were given",
                         "drop the PLAN arguments, or drop --generate-only")
    if args.generate_only and budget_s is None and not args.generate:
        raise InputError("--generate-only without --budget or --generate N runs nothing",
                         "add --budget 30m (generate until spent) or --generate N")
    fixed = fixed_plans(args, shard)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32) if budget_s else 0
    generate = budget_s is not None or args.generate > 0
    if not fixed and not generate:
        raise InputError("no plan to run", "pass plan files, a directory, --generate N or --budget 30m")
    _prepare(args)
    for line in heal_runs(Path(args.runs_dir)):  # faults a crashed earlier campaign left open in its journal
        console.print(f"heal: {line}")
    campaign = Campaign(Path(args.runs_dir), bugs=args.bugs or "", seed=seed, keep=args.keep,
                        synchronous_mode=args.synchronous_mode, shard=shard, exitfirst=args.exitfirst,
                        target=args.target)
    source = SwarmSource(seed, shard=shard, tally=campaign.coverage, limit=args.generate or None,
                         model=target_model(args)) if generate else None
    console.print(f"campaign seed {seed} (reproduce with --seed {seed})" + (f"; shard {shard}" if shard.sharded else "")
                  + (f"; {len(fixed)} plan file(s)" if fixed else "")
                  + (f"; generated plans {'until the budget is spent' if not args.generate else f'<= {args.generate}'}"
                     if generate else "")
                  + (f"; budget {format_duration(budget_s)} (a plan starts only if it can finish)" if budget_s else "")
                  + f"; coverage so far: {campaign.coverage.summary()}")
    if budget_s is not None:
        campaign.budget = Budget(budget_s, clock=lambda: campaign_mod.monotonic())
    return campaign.run_campaign(fixed, source)


def _replay(args: argparse.Namespace) -> int:
    _at_least_one(times=args.times)
    plan = _load_one(args.plan, "replay", target_model(args))
    _prepare(args)
    campaign = Campaign(Path(args.runs_dir), bugs=args.bugs or "", keep=args.keep,
                        synchronous_mode=args.synchronous_mode, target=args.target)
    with campaign.topology() as topo:
        result = replay(plan, runner_for(campaign, topo), args.times)
    console.print(f"replayed {plan.name} {args.times} time(s)")
    for inv, n in sorted(result.failures.items()):
        console.print(f"  invariant {inv} failed in {n}/{result.runs} runs ({result.rate(inv):.0%} reproduction)")
    if not result.failures:
        console.print("  no invariant failed in any run")
    return campaign.exit_code()


def _shrink(args: argparse.Namespace) -> int:
    _at_least_one(times=args.times, max_runs=args.max_runs)
    plan = _load_one(args.plan, "shrink", target_model(args))
    _prepare(args)
    campaign = Campaign(Path(args.runs_dir), bugs=args.bugs or "", keep=args.keep,
                        synchronous_mode=args.synchronous_mode, target=args.target)
    with campaign.topology() as topo:
        result = shrink(plan, runner_for(campaign, topo), args.invariant, k=args.times, max_runs=args.max_runs)
    console.print(f"shrunk {plan.name} for invariant {result.invariant} in {result.runs} runs: "
                  f"{len(plan.steps)} -> {len(result.minimal.steps)} steps; "
                  f"accepted: {', '.join(result.accepted) or '-'}")
    console.print(f"minimal plan saved to {save_found(result.minimal)}")
    return 0


def _heal(args: argparse.Namespace) -> int:
    lines = heal_runs(Path(args.runs_dir))
    for line in lines:
        console.print(line)
    if not lines:
        console.print("no open fault in any journal")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs-dir", default="runs", help="where run directories go (default: runs/)")
    p.add_argument("--bugs", help="reference-node bug switches for this topology (comma list)")
    p.add_argument("--keep", action="store_true", help="leave the topology up if a run did not pass")
    p.add_argument("--no-setup", action="store_true", help="skip `ha-chaos setup` (daemon, compose, images)")
    add_replication_flags(p)
    add_target_flag(p)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="the main job: set up, start the topology, run the chaos campaign, report",
                       description="Runs the kept failing plans in fault_plans/found/ first, then the curated "
                                   "plans in fault_plans/ (or the given ones instead), plus N generated "
                                   "ones (or generated ones until --budget is spent) on one reference topology, "
                                   "prints a summary, the coverage table and the report paths. "
                                   "Exit 0 all passed, 1 an invariant failed, 2 unknown, 3+ harness error.")
    p.add_argument("plans", nargs="*",
                   help="plan files or directories (default: fault_plans/found/, then fault_plans/)")
    p.add_argument("--generate", type=int, default=0, metavar="N",
                   help="also run N generated plans (swarm: a subset of kinds and roles per plan, steered toward "
                        "uncovered cells); with --budget at most N")
    p.add_argument("--seed", type=int, default=None,
                   help="campaign seed: generated plans and the fault proxy (default 0; with --budget a fresh one)")
    p.add_argument("--budget", metavar="DURATION",
                   help="generate and run plans until DURATION (90s, 30m, 2h) is spent; a plan starts only if it "
                        "can finish; a failing generated plan is shrunk within a quarter of what is left")
    p.add_argument("--generate-only", action="store_true",
                   help="run generated plans only (no kept or curated plan); needs --budget or --generate")
    p.add_argument("-x", "--exitfirst", action="store_true", help="start no plan after the first failure")
    p.add_argument("--shard", metavar="I/N",
                   help="run shard I of N: plan files round-robin by sorted name, generated plans by number")
    _common(p)
    p.set_defaults(func=_run)

    p = sub.add_parser("replay", help="run one plan K times; how often each invariant failed")
    p.add_argument("plan")
    p.add_argument("--times", type=int, default=3)
    _common(p)
    p.set_defaults(func=_replay)

    p = sub.add_parser("shrink", help="minimise a failing plan (flake-tolerant: fails in >= 1 of K runs)")
    p.add_argument("plan")
    p.add_argument("--times", type=int, default=2, help="K: runs per candidate")
    p.add_argument("--invariant", help="the invariant that must keep failing (default: the first that fails)")
    p.add_argument("--max-runs", type=int, default=60)
    _common(p)
    p.set_defaults(func=_shrink)

    p = sub.add_parser("heal", help="undo faults left open in run journals (after a crash of the harness)")
    p.add_argument("--runs-dir", default="runs")
    p.set_defaults(func=_heal)
