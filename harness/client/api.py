"""The one client interface between the harness and a deployment's nodes (issue 13 item 2; Jepsen's client).

What the harness asks of a node, whatever protocol it speaks:

- ``LedgerApi`` (a participant's Ledger API, or its balancer): submit a command, the completion stream, the
  update (transaction) stream, the ledger end, and whether it takes submissions right now (the readiness probe
  that invariant 9 needs). A submission's answer carries its ``outcome``: ok, retryable, definite or
  indeterminate - classified by the implementation, in one table, never by its callers.
- ``NodeHealth`` (any node's health/admin server): ready, live, status, evidence, manual set-passive; and
  ``NodeAdmin``, its synchronous role read and set-passive for the fault injector and the live-state reader.

The workload, the probes, the faults and the benchmarks reach nodes only through these. ``ha-chaos-json`` (the
reference nodes' HTTP/JSON, ``harness/client/json_api.py``) is today's one implementation; a target names the
protocol of each endpoint and ``ledger_client``/``health_client`` pick the implementation by it, so Canton's gRPC
Ledger API v2 (issue 14) is one more entry in ``LEDGER_PROTOCOLS``, not a change to the workload.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import aiohttp

from harness.client import json_api
from harness.errors import InputError


class SubmitAnswer(Protocol):
    @property
    def ok(self) -> bool: ...
    @property
    def outcome(self) -> str: ...          # ok | retryable | definite | indeterminate
    @property
    def error(self) -> str | None: ...
    @property
    def replica(self) -> str | None: ...


class LedgerApi(Protocol):
    async def submit(self, *, user: str, act_as: list[str], command_id: str, submission_id: str | None = None,
                     informees: list[str] | tuple[str, ...] = (), payload: Any = None,
                     deduplication_period_s: float | None = None) -> SubmitAnswer: ...

    def completions(self, from_offset: int = 0, idle_timeout: float = 5.0) -> AsyncIterator[dict[str, Any]]: ...

    def transactions(self, from_offset: int = 0, idle_timeout: float = 5.0) -> AsyncIterator[dict[str, Any]]: ...

    async def read_ledger_end(self) -> json_api.LedgerEnd: ...

    async def accepts_submissions(self) -> bool | None: ...


class NodeAdmin(Protocol):
    """The synchronous admin calls of the fault injector and the live-state reader."""

    def role(self) -> str | None: ...

    def set_passive(self) -> tuple[int, str]: ...

    def clock_s(self) -> float | None:
        """The node's own wall clock, in unix seconds (None: it does not answer or does not say)."""
        ...


class NodeHealth(Protocol):
    async def ready(self) -> bool | None: ...

    async def live(self) -> bool | None: ...

    async def status(self) -> dict[str, Any]: ...

    async def evidence(self) -> dict[str, Any]: ...

    async def set_passive(self) -> dict[str, Any]: ...


#: endpoint protocol (as a target names it) -> the implementation of the interface
LEDGER_PROTOCOLS: dict[str, Callable[..., LedgerApi]] = {"ha-chaos-json": json_api.LedgerClient}
HEALTH_PROTOCOLS: dict[str, Callable[..., NodeHealth]] = {"ha-chaos-health": json_api.HealthClient}
ADMIN_PROTOCOLS: dict[str, Callable[..., NodeAdmin]] = {"ha-chaos-health": json_api.NodeAdminSync}


def _pick(table: dict[str, Callable[..., Any]], protocol: str, what: str) -> Callable[..., Any]:
    try:
        return table[protocol]
    except KeyError:
        raise InputError(f"no client speaks the {what} protocol {protocol!r}",
                         f"protocols this ha-chaos speaks: {', '.join(sorted(table))}") from None


def ledger_client(protocol: str, url: str, session: aiohttp.ClientSession | None = None,
                  timeout: float = 5.0) -> LedgerApi:
    return _pick(LEDGER_PROTOCOLS, protocol, "Ledger API")(url, session, timeout=timeout)


def health_client(protocol: str, url: str, session: aiohttp.ClientSession | None = None,
                  timeout: float = 5.0) -> NodeHealth:
    return _pick(HEALTH_PROTOCOLS, protocol, "health")(url, session, timeout=timeout)


def admin_client(protocol: str, url: str, timeout: float = 2.0) -> NodeAdmin:
    return _pick(ADMIN_PROTOCOLS, protocol, "admin")(url, timeout=timeout)


def check_protocols(endpoints: dict[str, dict[str, Any]]) -> list[str]:
    """The Ledger API and health endpoint protocols of a target that no client speaks (empty: all spoken)."""
    bad = []
    for role, named in endpoints.items():
        for name, ep in named.items():
            proto = getattr(ep, "protocol", None) or (ep.get("protocol") if isinstance(ep, dict) else None)
            table = LEDGER_PROTOCOLS if (name == "ledger" or role == "ledger-lb") else (
                HEALTH_PROTOCOLS if name == "health" else None)
            if table is not None and proto not in table:
                bad.append(f"{role}.{name}: {proto}")
    return bad
