"""``slow_node``: a service squeezed to a small share of one CPU (Docker's CFS quota), then given it back.

What it finds: timing assumptions. A replica that keeps its lock and its health signal but answers late, a
sequencer whose keep-alives lag, a PostgreSQL primary that commits slowly: nothing is cut, everything takes longer,
and every timeout in the system is tested against it. A correct node may be slower, may even lose its active role
(a peer takes over), but must stay safe, and recover its speed once the quota is lifted.

Mechanism: ``docker update --cpu-quota`` through the Docker API on the target's container (cgroup ``cpu.cfs_quota_us``
over a 100 ms period). Verified by reading the container's applied quota back; undone by restoring the quota and
period it had before (none: unlimited), which works on a stopped container as well.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal

from pydantic import Field

from harness.errors import HarnessError
from harness.faults.kinds import FaultKind
from harness.plans.stepbase import StepBase, TargetSpec
from harness.plans.toxics import Strict

PERIOD_US = 100_000


class SlowNodeParams(Strict):
    cpus: Annotated[float, Field(ge=0.01, le=4.0, description="CPU time left to the container, in CPUs (0.1: a "
                                                              "tenth of one core)")] = 0.1


class SlowNodeStep(StepBase):
    kind: Literal["slow_node"]
    target: TargetSpec
    params: SlowNodeParams = SlowNodeParams()


class SlowNode(FaultKind):
    name = "slow_node"
    step = SlowNodeStep

    def params(self, model: Any) -> Any:
        from hypothesis import strategies as st

        return st.sampled_from([0.05, 0.1, 0.25]).map(lambda c: {"cpus": c})

    def weaker(self, params: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        if params.get("cpus", 0.1) < 0.5:
            yield "4x the CPU", {**params, "cpus": min(1.0, params.get("cpus", 0.1) * 4)}

    def apply(self, live: Any, step: Any, res: Any) -> tuple[Callable[[], bool], dict[str, Any]]:
        quota = max(1000, int(step.params.cpus * PERIOD_US))
        before: dict[str, list[int]] = {}
        for svc in res.targets:
            c = live.container(svc)
            hc = c.attrs["HostConfig"]
            before[svc] = [int(hc.get("CpuQuota") or 0), int(hc.get("CpuPeriod") or 0)]
            if int(hc.get("NanoCpus") or 0):
                raise HarnessError(f"slow_node: {svc} has a --cpus limit (NanoCpus), which a CFS quota cannot "
                                   "be combined with")
            c.update(cpu_period=PERIOD_US, cpu_quota=quota)

        def verify() -> bool:
            return all(int(live.container(s).attrs["HostConfig"].get("CpuQuota") or 0) == quota for s in res.targets)

        return verify, {"services": list(res.targets), "before": before, "quota": quota}

    def heal(self, live: Any, record: dict[str, Any], targets: list[str], fault_id: str) -> None:
        for svc in record.get("services") or targets:
            quota, period = (record.get("before") or {}).get(svc) or [0, 0]
            c = live.container_or_none(svc)
            if c is not None:
                c.update(cpu_period=period or PERIOD_US, cpu_quota=quota if quota > 0 else -1)


KIND = SlowNode()
