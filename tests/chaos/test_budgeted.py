"""Generated plans until a ``--chaos-budget`` duration is spent (``pytest -m chaos --chaos-budget 2h``).

Runs last among the chaos tests and spends what the kept and curated plans left of the budget on swarm plans
(``harness.swarm``: each plan a random subset of fault kinds and target roles, steered toward the coverage cells
not yet reached in the runs dir), each started only if it can finish. A failing plan is kept in
fault_plans/found/ and shrunk within a share of the budget. With ``--chaos-shard i/N`` every shard runs this test
with its own plan numbers; ``ha-chaos merge`` joins the shards' runs. Under ``ci`` and ``nightly`` it is skipped
(Hypothesis generates their plans: tests/chaos/test_generated.py).
"""

from __future__ import annotations

import pytest

from harness.pytest_plugin import describe

pytestmark = pytest.mark.chaos


def test_generated_plans_until_the_budget_is_spent(chaos_campaign) -> None:
    campaign = chaos_campaign()
    bad = [o for o in campaign.outcomes if o.verdict in ("fail", "error")]
    assert not bad, "\n".join([campaign.ran_line(), *(describe(o) for o in bad)])
