"""``ha-chaos bench fault-effects``: time from each step's scheduled moment to its verified effect, per fault kind,
over the histories of stored live runs (the executor records ``effect_s`` on every nemesis ``ok``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from harness.errors import HarnessError
from harness.history import Event
from harness.plans.stats import effect_latencies
from harness.report.rundir import load_history


def collect(runs_dir: Path) -> tuple[int, dict[str, dict[str, float]]]:
    events: list[Event] = []
    histories = sorted(runs_dir.glob("*/*/history.jsonl"))
    for h in histories:
        events += [e for e in load_history(h) if e.process == "nemesis"]
    return len(histories), effect_latencies(events)


def _run(args: argparse.Namespace) -> int:
    runs_dir = Path(args.runs_dir)
    if not runs_dir.is_dir():
        raise HarnessError(f"{runs_dir} is not a directory", "pass --runs-dir with the runs of `ha-chaos run`")
    n, figures = collect(runs_dir)
    if args.json:
        print(json.dumps({"runs": n, "per_kind": figures}, indent=2))
        return 0
    print(f"{n} stored runs under {runs_dir}; scheduled moment -> verified effect, seconds")
    for kind, f in figures.items():
        print(f"  {kind:20} n={f['n']:<4} p50={f['p50']:.3f}  p99={f['p99']:.3f}  max={f['max']:.3f}")
    if not figures:
        print("  no verified fault in these runs")
    return 0


def register(bench: argparse._SubParsersAction) -> None:
    p = bench.add_parser("fault-effects", help="scheduled moment -> verified effect per fault kind, from stored runs")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run)
