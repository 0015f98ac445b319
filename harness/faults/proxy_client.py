"""Harness-side client for a Toxiproxy-compatible API (ours or the official server).

Why not toxiproxy-python: its host/port are class globals (one server per process), it has no HTTP timeouts,
server errors surface as ``KeyError`` and it cannot update a toxic. The nemesis needs one client per proxy
instance, bounded waits and errors it can tell apart: ``ProxyNotFound`` (404), ``ProxyConflict`` (409), and
``FaultProxyError`` for everything else, all ``HarnessError`` so the CLI renders them as "error / fix" lines.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests

from harness.errors import HarnessError


def _q(name: str) -> str:
    return quote(name, safe="")


class FaultProxyError(HarnessError):
    """The fault proxy refused a request or could not be reached."""

    def __init__(self, what: str, fix: str | None = None, *, status: int | None = None) -> None:
        super().__init__(what, fix)
        self.status = status


class ProxyNotFound(FaultProxyError):
    """404: no such proxy or toxic."""


class ToxicNotFound(ProxyNotFound):
    """404 ``toxic not found`` (the proxy exists). A ``ProxyNotFound`` too, so one except clause covers both."""


class ProxyConflict(FaultProxyError):
    """409: a proxy or toxic of that name exists already, or the listen port is taken."""


class BadRequest(FaultProxyError):
    """400: the server rejected the request body."""


@dataclass(frozen=True)
class Toxic:
    name: str
    type: str
    stream: str
    toxicity: float
    attributes: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Toxic:
        return cls(name=data["name"], type=data["type"], stream=data.get("stream", "downstream"),
                   toxicity=float(data.get("toxicity", 1.0)), attributes=dict(data.get("attributes") or {}))


@dataclass(frozen=True)
class ProxyInfo:
    name: str
    listen: str
    upstream: str
    enabled: bool
    toxics: tuple[Toxic, ...] = ()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProxyInfo:
        return cls(name=data["name"], listen=data["listen"], upstream=data["upstream"],
                   enabled=bool(data["enabled"]),
                   toxics=tuple(Toxic.from_json(t) for t in data.get("toxics") or ()))


class FaultProxyClient:
    """Sync client for one fault-proxy server, e.g. ``FaultProxyClient("http://127.0.0.1:8474")``."""

    def __init__(self, base_url: str, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()
        self._session.headers["User-Agent"] = "ha-chaos-faultproxy-client"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> FaultProxyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport -----------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: Any = None) -> Any:
        url = self.base_url + path
        try:
            resp = self._session.request(method, url, json=body, timeout=self.timeout)
        except requests.RequestException as exc:
            raise FaultProxyError(f"fault proxy at {self.base_url} did not answer {method} {path}: {exc}",
                                  "check that the fault proxy container is running and its API port is "
                                  "published") from exc
        if resp.status_code == 204:
            return None
        try:
            data = resp.json()
        except ValueError:
            data = None
        if resp.status_code >= 400:
            message = data.get("error") if isinstance(data, dict) else resp.text.strip()
            what = f"{method} {path} -> {resp.status_code}: {message}"
            kind: type[FaultProxyError] = {404: ProxyNotFound, 409: ProxyConflict,
                                           400: BadRequest}.get(resp.status_code, FaultProxyError)
            if resp.status_code == 404 and message == "toxic not found":
                kind = ToxicNotFound
            raise kind(what, status=resp.status_code)
        if data is None:
            raise FaultProxyError(f"{method} {path}: the fault proxy answered with non-JSON: {resp.text[:200]!r}")
        return data

    # -- server ----------------------------------------------------------------------------------------------
    def version(self) -> str:
        data = self._request("GET", "/version")
        return str(data.get("version")) if isinstance(data, dict) else str(data)

    def wait_until_ready(self, timeout_s: float = 30.0) -> str:
        """Poll ``/version`` until the server answers (a container may still be starting); returns the version."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self.version()
            except FaultProxyError as exc:
                if time.monotonic() >= deadline:
                    raise FaultProxyError(f"fault proxy at {self.base_url} not ready after {timeout_s:.0f} s: "
                                          f"{exc.what}", exc.fix) from exc
            time.sleep(0.1)

    def reset(self) -> None:
        """Enable every proxy and remove every toxic."""
        self._request("POST", "/reset")

    # -- proxies -----------------------------------------------------------------------------------------------
    def proxies(self) -> dict[str, ProxyInfo]:
        return {name: ProxyInfo.from_json(p) for name, p in self._request("GET", "/proxies").items()}

    def proxy(self, name: str) -> ProxyInfo:
        return ProxyInfo.from_json(self._request("GET", f"/proxies/{_q(name)}"))

    def create_proxy(self, name: str, listen: str, upstream: str, enabled: bool = True) -> ProxyInfo:
        body = {"name": name, "listen": listen, "upstream": upstream, "enabled": enabled}
        return ProxyInfo.from_json(self._request("POST", "/proxies", body))

    def populate(self, proxies: list[dict[str, Any]]) -> list[ProxyInfo]:
        """Idempotent bulk create: identical proxies are kept, changed ones are replaced."""
        data = self._request("POST", "/populate", proxies)
        return [ProxyInfo.from_json(p) for p in data.get("proxies") or []]

    def update_proxy(self, name: str, *, enabled: bool | None = None, upstream: str | None = None,
                     listen: str | None = None) -> ProxyInfo:
        """Change a proxy; a new ``upstream`` or ``listen`` drops its live connections (as upstream does)."""
        body: dict[str, Any] = {}
        if enabled is not None:
            body["enabled"] = enabled
        if upstream is not None:
            body["upstream"] = upstream
        if listen is not None:
            body["listen"] = listen
        return ProxyInfo.from_json(self._request("PATCH", f"/proxies/{_q(name)}", body))

    def delete_proxy(self, name: str) -> None:
        self._request("DELETE", f"/proxies/{_q(name)}")

    # -- toxics --------------------------------------------------------------------------------------------------
    def toxics(self, proxy: str) -> list[Toxic]:
        return [Toxic.from_json(t) for t in self._request("GET", f"/proxies/{_q(proxy)}/toxics")]

    def add_toxic(self, proxy: str, type: str, *, name: str | None = None, stream: str = "downstream",
                  toxicity: float = 1.0, attributes: dict[str, int] | None = None) -> Toxic:
        body: dict[str, Any] = {"type": type, "stream": stream, "toxicity": toxicity,
                                "attributes": attributes or {}}
        if name is not None:
            body["name"] = name
        return Toxic.from_json(self._request("POST", f"/proxies/{_q(proxy)}/toxics", body))

    def update_toxic(self, proxy: str, name: str, *, attributes: dict[str, int] | None = None,
                     toxicity: float | None = None) -> Toxic:
        body: dict[str, Any] = {}
        if attributes is not None:
            body["attributes"] = attributes
        if toxicity is not None:
            body["toxicity"] = toxicity
        return Toxic.from_json(self._request("PATCH", f"/proxies/{_q(proxy)}/toxics/{_q(name)}", body))

    def remove_toxic(self, proxy: str, name: str) -> None:
        self._request("DELETE", f"/proxies/{_q(proxy)}/toxics/{_q(name)}")
