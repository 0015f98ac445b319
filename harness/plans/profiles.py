"""Hypothesis profiles for chaos tests: ``ci`` (a handful of examples) and ``nightly`` (many).

Why ``deadline=None`` and suppressed health checks: one example is a live run of a minute or more against real
containers; Hypothesis's timing checks assume microseconds and would fail every example. Why a separate
example database: failing plans found against live containers should be replayed first on the next run
(``fault_plans/found/`` keeps the readable copy, Hypothesis's database the exact choice sequence).

In this project's pytest runs the ha-chaos plugin picks the profile from ``--chaos-budget`` and applies it to the
chaos tests alone (``harness.pytest_plugin.chaos_profile``), never to the whole session. Elsewhere (a script, a
chaos test of another project) ``load_profile()`` applies ``HYPOTHESIS_PROFILE`` (default ``ci``) from then on.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings
from hypothesis.database import DirectoryBasedExampleDatabase

PROFILES = ("ci", "nightly", "unit")
#: no Phase.shrink against live containers: it is flaky there; harness.plans.shrink does it, tolerating flakes
LIVE_PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target)
_SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
         HealthCheck.function_scoped_fixture]


def register_profiles(db_dir: str = ".hypothesis/chaos") -> None:
    db = DirectoryBasedExampleDatabase(db_dir)
    for name, examples in (("ci", 5), ("nightly", 200)):
        settings.register_profile(name, max_examples=examples, deadline=None, suppress_health_check=_SLOW,
                                  database=db, print_blob=True, phases=LIVE_PHASES)
    # for the generator's own unit tests: no containers, so many examples are cheap
    settings.register_profile("unit", max_examples=200, deadline=None)


def load_profile(name: str | None = None) -> str:
    register_profiles()
    chosen = name or os.environ.get("HYPOTHESIS_PROFILE", "ci")
    if chosen not in PROFILES:
        raise ValueError(f"unknown Hypothesis profile {chosen!r} (one of {', '.join(PROFILES)})")
    settings.load_profile(chosen)
    return chosen
