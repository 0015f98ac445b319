"""The client side of a run: submitters, stream readers and probes that write the history (see docs/history.md).

``client`` is the nodes' HTTP client (Ledger API, sequencer API, health); where services are reachable from the host
is the topology's business (``harness.topology.endpoints``).
"""

from harness.workload.runner import Workload, WorkloadConfig

__all__ = ["Workload", "WorkloadConfig"]
