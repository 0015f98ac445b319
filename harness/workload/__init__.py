"""The client side of a run: submitters, stream readers and probes that write the history (see docs/history.md)."""

from harness.workload.endpoints import Endpoints
from harness.workload.runner import Workload, WorkloadConfig

__all__ = ["Endpoints", "Workload", "WorkloadConfig"]
