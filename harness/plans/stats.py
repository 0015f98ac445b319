"""Figures the plan layer can compute from a history: time from a step's scheduled moment to its verified effect.

Why from the history and not from the executor's memory: the figure must be recomputable offline from a stored
run directory, like every other result (the history is the contract).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from harness.history import Event


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation: with few samples, report a value that was observed)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def effect_latencies(events: Iterable[Event]) -> dict[str, dict[str, Any]]:
    """Per fault kind: n, p50, p99 and max of ``effect_s`` (scheduled moment -> verified effect), in seconds."""
    by_kind: dict[str, list[float]] = defaultdict(list)
    for ev in events:
        if ev.process == "nemesis" and ev.type == "ok" and ev.f != "heal":
            eff = ev.value.get("effect_s")
            if isinstance(eff, int | float):
                by_kind[ev.f].append(float(eff))
    return {kind: {"n": len(v), "p50": percentile(v, 50), "p99": percentile(v, 99), "max": max(v)}
            for kind, v in sorted(by_kind.items())}
