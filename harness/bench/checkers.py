"""``ha-chaos bench checkers``: all checkers over a synthetic history of (by default) a million operations.

Why a benchmark and not a timed test: the target (<= 20 s, <= 2 GiB) depends on the machine; the figures are
printed (or emitted as JSON) so a person or CI can compare them with the target, never asserted.
Peak RSS is the process's ``ru_maxrss``: it includes the generated history itself, which a real ``check`` of a
stored run also holds in memory.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from harness.checkers import CHECKERS, check_all, run_verdict
from harness.checkers.index import build_index
from harness.checkers.synth import SynthConfig, count_ops, generate
from harness.history import write_history

TARGET_S = 20.0
TARGET_RSS_MIB = 2048.0


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _write_synthetic(path: str, ops: int, seed: int) -> None:
    """Runs in a child process, so the generator's memory does not count in the reader's peak RSS."""
    write_history(path, generate(SynthConfig(ops=ops, seed=seed)))


def run(ops: int, seed: int, via_jsonl: bool) -> dict[str, object]:
    figures: dict[str, object] = {}
    if via_jsonl:
        # what `ha-chaos check RUN_DIR` does: read a stored history with the run directory's loader
        from harness.report.rundir import load_history

        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "history.jsonl"
            t0 = time.perf_counter()
            child = multiprocessing.get_context("fork").Process(target=_write_synthetic, args=(str(path), ops, seed))
            child.start()
            child.join()
            if child.exitcode != 0:
                raise RuntimeError(f"generator process failed with exit code {child.exitcode}")
            figures["generate_s"] = round(time.perf_counter() - t0, 2)
            t0 = time.perf_counter()
            events = load_history(path)
            figures["read_jsonl_s"] = round(time.perf_counter() - t0, 2)
            figures["jsonl_mib"] = round(path.stat().st_size / 2**20, 1)
    else:
        t0 = time.perf_counter()
        events = generate(SynthConfig(ops=ops, seed=seed))
        figures["generate_s"] = round(time.perf_counter() - t0, 2)
    figures.update(ops=count_ops(events), events=len(events))
    rss_before = _rss_mib()
    t0, c0 = time.perf_counter(), time.process_time()
    idx = build_index(events)
    t_index = time.perf_counter() - t0
    results = check_all(idx)
    t_check, cpu_check = time.perf_counter() - t0, time.process_time() - c0
    per_checker: dict[str, float] = {}
    for inv, fn in CHECKERS.items():  # a second pass, only to show where the time goes
        t1 = time.perf_counter()
        fn(idx, None)
        per_checker[inv] = round(time.perf_counter() - t1, 2)
    figures.update(index_s=round(t_index, 2), check_s=round(t_check, 2), check_cpu_s=round(cpu_check, 2),
                   per_checker_s=per_checker, load_avg_1m=round(os.getloadavg()[0], 2),
                   peak_rss_mib=round(_rss_mib(), 1),
                   rss_before_check_mib=round(rss_before, 1),
                   verdict=run_verdict(results),
                   verdicts={r.invariant: r.verdict for r in results},
                   target_s=TARGET_S, target_rss_mib=TARGET_RSS_MIB,
                   within_target=t_check <= TARGET_S and _rss_mib() <= TARGET_RSS_MIB)
    return figures


def _main(args: argparse.Namespace) -> int:
    fig = run(args.ops, args.seed, args.via_jsonl)
    if args.json:
        json.dump(fig, sys.stdout, indent=2)
        print()
        return 0
    print(f"history: {fig['ops']:,} operations ({fig['events']:,} events), generated in {fig['generate_s']} s")
    if "read_jsonl_s" in fig:
        print(f"read history.jsonl ({fig['jsonl_mib']} MiB): {fig['read_jsonl_s']} s")
    print(f"check_all: {fig['check_s']} s wall, {fig['check_cpu_s']} s CPU (index {fig['index_s']} s)   "
          f"target <= {TARGET_S:g} s   [1-min load average {fig['load_avg_1m']} on {os.cpu_count()} CPUs]")
    print("per checker (s): " + "  ".join(f"{k}={v}" for k, v in fig["per_checker_s"].items()))  # type: ignore[union-attr]
    print(f"peak RSS: {fig['peak_rss_mib']} MiB (before checking {fig['rss_before_check_mib']} MiB)   "
          f"target <= {TARGET_RSS_MIB:g} MiB")
    print(f"verdict on the clean synthetic run: {fig['verdict']}  {fig['verdicts']}")
    print("within target" if fig["within_target"] else "OUTSIDE target")
    return 0


def register(bench_sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = bench_sub.add_parser("checkers", help="all invariant checkers over a synthetic 1,000,000-operation history")
    p.add_argument("--ops", type=int, default=1_000_000, help="operations in the synthetic history")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--via-jsonl", action="store_true",
                   help="generate into a JSONL file (child process) and read it back as `check` does; "
                        "times parsing, and peak RSS then excludes the generator")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=_main)
