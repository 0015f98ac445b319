"""Fixture ``make_run``: a stored run directory from a synthetic history, with timestamped container logs like
Docker's (``docker logs --timestamps``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from harness.checkers.synth import SynthConfig, generate_run
from harness.history import write_history
from harness.report.rundir import RunDir

WALL0 = datetime(2026, 11, 22, 2, 0, 0, tzinfo=UTC).timestamp()
PLAN = """version: 1
name: db-blackhole-p1
seed: 42
expect: {failover: [p1]}
steps:
  - {at: 18s, kind: link-timeout, target: "db link of the active replica of p1", params: {timeout: 0}, for: 8s}
  - {at: 27s, kind: kill, target: seq2, for: 5s}
"""


def make_run(runs_dir: Path, name: str, *, ops: int = 3000, seed: int = 3, **cfg: object) -> RunDir:
    run = generate_run(SynthConfig(ops=ops, seed=seed, wall_start=WALL0, **cfg))  # type: ignore[arg-type]
    rd = RunDir.create(runs_dir, name)
    write_history(rd.history_path, run.events)
    rd.write_plan(PLAN)
    rd.write_topology({"profile": "full", "seed": 42, "compose_hash": "sha256:0f3a", "images": {"p1a": "sha256:ab"}})
    for c in ("p1a", "p1b", "p2a", "seq1", "seq2", "med1a"):
        lines = []
        for i in range(0, int(run.events[-1].t) + 1):
            wall = datetime.fromtimestamp(WALL0 + i + 0.123456789 % 1, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
            lines.append(f"{wall}123Z {c} INFO tick {i}: role check ok")
        rd.log_path(c).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return rd


@pytest.fixture(name="make_run")
def make_run_fixture() -> Callable[..., RunDir]:
    """``make_run(runs_dir, name, bugs=frozenset({...}), **SynthConfig fields) -> RunDir`` (history not checked)."""
    return make_run
