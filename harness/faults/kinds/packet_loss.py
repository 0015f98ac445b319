"""``packet_loss``: a service loses a share of the packets it exchanges with the other services, at random.

What it finds: behaviour under a bad network rather than a cut one. TCP hides single losses behind
retransmissions, so what the nodes see is irregular latency: a keep-alive late now and then, a connect that takes
seconds, a stream that stalls and resumes, a lock connection that may or may not be declared dead. With the fault
proxy's toxics (which act on whole streams at the proxy) this covers the packet level the proxy cannot reach: also
between services that talk directly (PostgreSQL replication, Patroni and etcd, the load balancers).

Mechanism: iptables ``statistic`` match (``--mode random --probability P``) DROP rules in the target's network
namespace, one per peer address of the project network (so the harness's own probes, which come from the host
through Docker's gateway, are not dropped), in one ``iptables-restore`` (netem is not in this kernel). Verified by
the rules being listed; undone by removing the rules carrying the fault id (the journal's heal does the same).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal

from pydantic import Field

from harness.errors import HarnessError
from harness.faults.kinds import FaultKind
from harness.plans.injector import Effects
from harness.plans.stepbase import StepBase, TargetSpec
from harness.plans.toxics import Strict


class PacketLossParams(Strict):
    probability: Annotated[float, Field(gt=0, le=1, description="share of packets dropped (1: all: a partition of "
                                                                "the target from every other service)")] = 0.2
    direction: Literal["both", "in", "out"] = Field("both", description="packets the target receives (in), sends "
                                                                         "(out), or both")


class PacketLossStep(StepBase):
    kind: Literal["packet_loss"]
    target: TargetSpec
    params: PacketLossParams = PacketLossParams()


class PacketLoss(FaultKind):
    name = "packet_loss"
    step = PacketLossStep

    def params(self, model: Any) -> Any:
        from hypothesis import strategies as st

        return st.builds(lambda p, d: {"probability": p, "direction": d}, st.sampled_from([0.05, 0.2, 0.5]),
                         st.sampled_from(["both", "both", "in", "out"]))

    def weaker(self, params: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
        if params.get("probability", 0.2) > 0.05:
            yield "a quarter of the loss", {**params, "probability": max(0.01, params.get("probability", 0.2) / 4)}
        if params.get("direction", "both") == "both":
            yield "incoming only", {**params, "direction": "in"}

    def effects(self, step: Any, resolved: Any, model: Any) -> Effects:
        if step.params.probability < 1:
            return Effects()   # a lossy network slows, it does not cut
        nodes = [s for s in resolved.targets if model.links_of(s)]
        return Effects(cuts_db=sorted(s for s in nodes if model.links_of(s, "db")),
                       cuts_sequencer=sorted(s for s in nodes if model.links_of(s, "sequencer")))

    def apply(self, live: Any, step: Any, res: Any) -> tuple[Callable[[], bool], dict[str, Any]]:
        p = step.params
        names = [s.name for s in live.topo.model.services]
        addresses = live.addresses()   # one listing, not one inspect per peer
        for svc in res.targets:
            peers = [n for n in names if n != svc and n in addresses]
            if not peers:
                raise HarnessError(f"packet_loss: {svc} has no peer to lose packets with")
            match = ["-m", "statistic", "--mode", "random", "--probability", f"{p.probability:.4f}"]
            rules: list[list[str]] = []
            for peer in peers:
                ip = addresses[peer]
                tail = [*match, "-j", "DROP", "-m", "comment", "--comment", res.fault_id]
                if p.direction in ("both", "in"):
                    rules.append(["INPUT", "-s", ip, *tail])
                if p.direction in ("both", "out"):
                    rules.append(["OUTPUT", "-d", ip, *tail])
            live.insert_rules(svc, rules)

        def verify() -> bool:
            return all(live.rules_with(s, res.fault_id) for s in res.targets)

        return verify, {"services": list(res.targets)}

    def heal(self, live: Any, record: dict[str, Any], targets: list[str], fault_id: str) -> None:
        live.remove_rules(record.get("services") or targets, fault_id)


KIND = PacketLoss()
