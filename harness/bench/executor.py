"""How late does the executor itself fire a step? Scheduled moment -> verified effect with an instant injector.

Why measure it: the issue asks for p50/p99 of "scheduled moment -> verified effect" per fault kind on the live
topology; this is the executor's own share of that figure (clock, polling, journal fsync, history write),
measured on the real monotonic clock with the in-memory fakes. Run: ``python -m harness.bench.executor``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from harness.history import HistoryWriter, read_history
from harness.plans.executor import Executor
from harness.plans.fakes import FakeInjector
from harness.plans.schema import validate_plan
from harness.plans.stats import effect_latencies
from harness.plans.targets import FakeView
from harness.topology.model import reference_model


def bench(steps: int, spacing: float) -> dict[str, dict[str, float]]:
    model = reference_model()
    participant = model.replicas("participant")[-1]
    kinds = [("kill", participant), ("pause", model.replicas("sequencer")[-1]),
             ("link_down", model.links_of(participant, "db")[0].name)]
    data = {"version": 1, "name": "bench", "description": "executor timing", "warmup_s": 0, "quiet_period": 0.1,
            "recovery_bound_s": 0.1,
            "steps": [{"kind": kinds[i % 3][0], "at": round(i * spacing, 3), "target": kinds[i % 3][1],
                       "duration": spacing / 2} for i in range(steps)]}
    plan = validate_plan(data)
    view = FakeView.initial(model)
    with tempfile.TemporaryDirectory() as d:
        with HistoryWriter(Path(d) / "history.jsonl") as hist:
            Executor(plan, FakeInjector(view), view, hist, d).run()
        return effect_latencies(read_history(Path(d) / "history.jsonl"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=90)
    ap.add_argument("--spacing", type=float, default=0.1, help="seconds between steps")
    args = ap.parse_args()
    stats = bench(args.steps, args.spacing)
    print(json.dumps({k: {m: round(v * 1000, 2) if m != "n" else v for m, v in s.items()} | {"unit": "ms"}
                      for k, s in stats.items()}, indent=1))


if __name__ == "__main__":
    main()
