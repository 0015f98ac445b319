"""The ``ha-chaos-json`` client: the reference nodes' Ledger API, sequencer API and health/admin endpoints
(aiohttp; a small synchronous admin client for the fault injector and the live-state reader).

This module implements the one client interface of ``harness/workload/api.py`` (Jepsen's client protocol) for the
protocol the reference target names ``ha-chaos-json``: it is the one place that knows the wire format of these
nodes (harness/sut/API.md) and the one table that classifies their answers (``SUBMIT_OUTCOMES``: retryable,
definite, indeterminate). The workload, the probes, the faults, the benchmarks and the tests use it instead of
hand-written HTTP. No node imports it, so it is not part of the node image (issue 13 item 5). It records nothing
itself: callers turn its results into history events. Every call has a timeout; a timeout or a lost connection
raises ``Indeterminate`` (the operation may or may not have happened, history type ``info``), a definite refusal
is returned as data.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import requests

#: How a submission's answer counts, by error code (one table; ``classify`` reads it):
#: - ``retryable``: definitely not accepted, and another attempt (same command id, new submission id) may succeed;
#: - ``indeterminate``: the request reached a server that may have processed it (a load balancer's 502/504 for a
#:   server that took the request and gave no answer): the outcome is unknown, never a failure;
#: - anything else that is not an acknowledgement is ``definite``: refused, and retrying will not change that.
SUBMIT_OUTCOMES: dict[str, Literal["retryable", "indeterminate"]] = {
    "NODE_IS_PASSIVE_REPLICA": "retryable",
    "SYNC_SERVICE_BECAME_PASSIVE": "retryable",
    "UNAVAILABLE": "retryable",
    "HTTP_503": "retryable",
    "HTTP_502": "indeterminate",
    "HTTP_504": "indeterminate",
}
#: HTTP statuses of a gateway that took the request and gave no answer (classified indeterminate whatever the body)
GATEWAY_INDETERMINATE = (502, 504)
Outcome = Literal["ok", "retryable", "definite", "indeterminate"]


class Indeterminate(Exception):
    """Timed out or connection lost: unknown whether the operation took effect."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind   # "timeout" | "connection"


class StreamEnded(Exception):
    """The server ended a stream (e.g. ``SYNC_SERVICE_BECAME_PASSIVE``); resume elsewhere from the last offset."""

    def __init__(self, error: str | None, replica: str | None) -> None:
        super().__init__(error or "stream ended")
        self.error = error
        self.replica = replica


@dataclass
class SubmitResult:
    http_status: int
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Acknowledged (in flight, or a duplicate whose completion will follow)."""
        return self.http_status == 202

    @property
    def error(self) -> str | None:
        return None if self.ok else self.body.get("error", f"HTTP_{self.http_status}")

    @property
    def replica(self) -> str | None:
        return self.body.get("replica")

    @property
    def outcome(self) -> Outcome:
        """ok, retryable, definite or indeterminate (``SUBMIT_OUTCOMES``)."""
        if self.ok:
            return "ok"
        if self.http_status in GATEWAY_INDETERMINATE:
            return "indeterminate"
        return SUBMIT_OUTCOMES.get(str(self.error), "definite")


@dataclass
class LedgerEnd:
    """A ledger-end read: ``ok`` with the offsets, or the refusal (``http_status``, ``error``)."""

    http_status: int
    offset: int | None = None
    completion_offset: int | None = None
    replica: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.http_status == 200


class _Base:
    def __init__(self, base_url: str, session: aiohttp.ClientSession | None = None, timeout: float = 5.0) -> None:
        self.base = base_url.rstrip("/") if base_url.startswith("http") else f"http://{base_url}"
        self._session = session
        self._own = session is None
        self.timeout = timeout

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def close(self) -> None:
        if self._own and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> _Base:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _json(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        try:
            async with self.session().request(method, self.base + path, json=body,
                                              timeout=aiohttp.ClientTimeout(total=self.timeout)) as r:
                try:
                    data = await r.json(content_type=None)
                except ValueError:
                    data = {"error": f"HTTP_{r.status}", "text": await r.text()}
                return r.status, data if isinstance(data, dict) else {"value": data}
        except TimeoutError as exc:
            raise Indeterminate("timeout", f"{method} {path}") from exc
        except aiohttp.ClientError as exc:
            raise Indeterminate("connection", f"{method} {path}: {exc!r}") from exc

    async def _lines(self, path: str, params: dict[str, str], idle_timeout: float) -> AsyncIterator[dict[str, Any]]:
        """NDJSON lines of a stream (heartbeats included); ``idle_timeout`` without a line raises Indeterminate."""
        timeout = aiohttp.ClientTimeout(total=None, connect=self.timeout, sock_read=idle_timeout)
        try:
            async with self.session().get(self.base + path, params=params, timeout=timeout) as r:
                if r.status != 200:
                    body = await r.text()
                    try:
                        err = json.loads(body).get("error")
                    except ValueError:
                        err = body[:200]
                    raise StreamEnded(err or f"HTTP_{r.status}", None)
                async for raw in r.content:
                    if raw.strip():
                        yield json.loads(raw)
        except TimeoutError as exc:
            raise Indeterminate("timeout", path) from exc
        except aiohttp.ClientError as exc:
            raise Indeterminate("connection", f"{path}: {exc!r}") from exc
        raise StreamEnded("connection closed", None)


class LedgerClient(_Base):
    """The participant Ledger API (the target's `ledger` endpoint of the active replica, or a ledger-lb frontend)."""

    async def submit(self, *, user: str, act_as: list[str], command_id: str, submission_id: str | None = None,
                     informees: list[str] | tuple[str, ...] = (), payload: Any = None,
                     deduplication_period_s: float | None = None) -> SubmitResult:
        body: dict[str, Any] = {"user": user, "act_as": act_as, "command_id": command_id,
                                "informees": list(informees), "payload": payload}
        if submission_id is not None:
            body["submission_id"] = submission_id
        if deduplication_period_s is not None:
            body["deduplication_period_s"] = deduplication_period_s
        status, data = await self._json("POST", "/v1/commands/submit", body)
        return SubmitResult(status, data)

    async def _stream(self, path: str, from_offset: int, idle_timeout: float) -> AsyncIterator[dict[str, Any]]:
        async for line in self._lines(path, {"from_offset": str(from_offset)}, idle_timeout):
            if line.get("heartbeat"):
                continue
            if "error" in line:
                raise StreamEnded(line["error"], line.get("replica"))
            yield line

    def completions(self, from_offset: int = 0, idle_timeout: float = 5.0) -> AsyncIterator[dict[str, Any]]:
        """Completions with ``completion_offset > from_offset``, forever (until the stream ends or stalls)."""
        return self._stream("/v1/completions", from_offset, idle_timeout)

    def transactions(self, from_offset: int = 0, idle_timeout: float = 5.0) -> AsyncIterator[dict[str, Any]]:
        """Transactions with ``offset > from_offset``, forever."""
        return self._stream("/v1/transactions", from_offset, idle_timeout)

    async def ledger_end(self) -> dict[str, Any]:
        return (await self._json("GET", "/v1/ledger_end"))[1]

    async def read_ledger_end(self) -> LedgerEnd:
        """The ledger end as data (a refusal too); Indeterminate when it could not be read."""
        status, body = await self._json("GET", "/v1/ledger_end")
        if status != 200:
            return LedgerEnd(status, error=str(body.get("error") or f"HTTP_{status}"))
        return LedgerEnd(status, int(body.get("offset") or 0), int(body.get("completion_offset") or 0),
                         body.get("replica"))

    async def accepts_submissions(self) -> bool | None:
        """Whether this Ledger API takes submissions right now: True, False (no listener, or refused as passive /
        by a gateway), None (the probe timed out: unknown).

        The probe is a submission with an empty body: a serving API rejects it as INVALID_ARGUMENT (400) before
        touching any state, a passive replica refuses the connection or answers 503, and a replica that wrongly
        serves while passive acknowledges it (202) - which is exactly what invariant 9 must see."""
        try:
            status, _ = await self._json("POST", "/v1/commands/submit", {})
        except Indeterminate as exc:
            return False if exc.kind == "connection" else None
        return status not in (502, 503, 504)


class HealthClient(_Base):
    """The health/admin server of any node (the target's `health` endpoint)."""

    async def _probe(self, path: str) -> bool | None:
        try:
            status, _ = await self._json("GET", path)
        except Indeterminate:
            return None
        return {200: True, 503: False}.get(status)

    async def ready(self) -> bool | None:
        """True = SERVING, False = NOT_SERVING, None = the probe itself failed (unknown)."""
        return await self._probe("/health")

    async def live(self) -> bool | None:
        return await self._probe("/health/live")

    async def status(self) -> dict[str, Any]:
        return (await self._json("GET", "/admin/status"))[1]

    async def evidence(self) -> dict[str, Any]:
        """``{"node", "epochs": [...]}`` as in docs/history.md; raises Indeterminate if it cannot be read."""
        status, data = await self._json("GET", "/admin/evidence")
        if status != 200:
            raise Indeterminate("connection", data.get("error", f"HTTP_{status}"))
        return data

    async def set_passive(self) -> dict[str, Any]:
        return (await self._json("POST", "/admin/set_passive"))[1]


class SequencerApiClient(_Base):
    """The sequencer API (the target's sequencer `api` endpoint): the harness subscribes as any member, e.g.
    ``harness-observer`` (receives every broadcast, i.e. all verdicts) or as a participant to read its stream."""

    async def send(self, sender: str, recipients: list[str], payload: Any, message_id: str,
                   max_sequencing_time: int | None = None) -> tuple[int, dict[str, Any]]:
        return await self._json("POST", "/v1/send", {"sender": sender, "recipients": recipients,
                                                     "payload": payload, "message_id": message_id,
                                                     "max_sequencing_time": max_sequencing_time})

    async def subscribe(self, member: str, from_counter: int = 0, idle_timeout: float = 5.0,
                        heartbeats: bool = False) -> AsyncIterator[dict[str, Any]]:
        """Events ``{counter, ts, prev_ts, safe_watermark, payload_hash, sequencer, sender, recipients,
        message_id, payload}`` from ``from_counter`` (inclusive), forever."""
        async for line in self._lines("/v1/subscribe", {"member": member, "from_counter": str(from_counter)},
                                      idle_timeout):
            if line.get("heartbeat") and not heartbeats:
                continue
            yield line


class NodeAdminSync:
    """The nodes' admin endpoints for synchronous callers (the fault injector, the live-state reader): the same
    wire format as ``HealthClient``, without an event loop."""

    def __init__(self, base_url: str, timeout: float = 2.0) -> None:
        self.base = base_url.rstrip("/")
        self.timeout = timeout

    def _status(self) -> dict[str, Any] | None:
        try:
            data = requests.get(self.base + "/admin/status", timeout=self.timeout).json()
        except (requests.RequestException, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def role(self) -> str | None:
        """The replica's own view of its role (``active``, ``passive``, ...); None when it does not answer."""
        data = self._status()
        return None if data is None else str(data.get("role"))

    def clock_s(self) -> float | None:
        """The node's wall clock (``clock_us`` of its status: the clock its protocol uses), in unix seconds."""
        data = self._status()
        value = None if data is None else data.get("clock_us")
        return value / 1e6 if isinstance(value, int | float) else None

    def set_passive(self) -> tuple[int, str]:
        """Ask the replica to step down (manual switchover); (HTTP status, body text). Raises
        ``Indeterminate`` when it could not be asked."""
        try:
            r = requests.post(self.base + "/admin/set_passive", timeout=self.timeout)
        except requests.RequestException as exc:
            raise Indeterminate("connection", f"set_passive: {exc!r}") from exc
        return r.status_code, r.text
