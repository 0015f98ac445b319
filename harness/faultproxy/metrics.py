"""Prometheus text metrics: connections, bytes per proxy and direction, toxics applied.

Why counters are summed at scrape time: the hot path only bumps two integers on its own ``Pipe``; finished
connections fold their counts into per-proxy totals here, and ``/metrics`` adds the live ones. No locks, no
dictionary lookups per chunk. Byte counters keep upstream's names (``toxiproxy_proxy_received_bytes_total``,
``toxiproxy_proxy_sent_bytes_total``); the others are ours and say so with a ``faultproxy_`` prefix.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from harness.faultproxy.toxics import DIRECTIONS, ToxicSpec

if TYPE_CHECKING:
    from harness.faultproxy.link import Connection
    from harness.faultproxy.proxy import Proxy, ProxyCollection


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in sorted(labels.items())) + "}"


class Metrics:
    def __init__(self) -> None:
        self.received: dict[tuple[str, str], int] = defaultdict(int)
        self.sent: dict[tuple[str, str], int] = defaultdict(int)
        self.connections_total: dict[str, int] = defaultdict(int)
        self.applied: dict[tuple[str, str, str], int] = defaultdict(int)

    def connection_opened(self, proxy: Proxy) -> None:
        self.connections_total[proxy.name] += 1

    def connection_closed(self, proxy: Proxy, conn: Connection) -> None:
        for direction, pipe in conn.pipes.items():
            self.received[(proxy.name, direction)] += pipe.received
            self.sent[(proxy.name, direction)] += pipe.sent

    def toxic_applied(self, proxy: Proxy, spec: ToxicSpec) -> None:
        self.applied[(proxy.name, spec.name, spec.type)] += 1

    def render(self, collection: ProxyCollection) -> str:
        received = dict(self.received)
        sent = dict(self.sent)
        for proxy in collection.proxies.values():
            for conn in proxy.connections:
                for direction, pipe in conn.pipes.items():
                    received[(proxy.name, direction)] = received.get((proxy.name, direction), 0) + pipe.received
                    sent[(proxy.name, direction)] = sent.get((proxy.name, direction), 0) + pipe.sent
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")

        family("toxiproxy_proxy_received_bytes_total", "counter", "Bytes read from the source of a direction")
        for (name, direction), value in sorted(received.items()):
            lines.append(f"toxiproxy_proxy_received_bytes_total{self._proxy_labels(collection, name, direction)}"
                         f" {value}")
        family("toxiproxy_proxy_sent_bytes_total", "counter", "Bytes written to the destination of a direction")
        for (name, direction), value in sorted(sent.items()):
            lines.append(f"toxiproxy_proxy_sent_bytes_total{self._proxy_labels(collection, name, direction)}"
                         f" {value}")
        family("faultproxy_connections_total", "counter", "Client connections accepted")
        for name, value in sorted(self.connections_total.items()):
            lines.append(f"faultproxy_connections_total{_labels(proxy=name)} {value}")
        family("faultproxy_connections_active", "gauge", "Client connections open now")
        for name, proxy in sorted(collection.proxies.items()):
            lines.append(f"faultproxy_connections_active{_labels(proxy=name)} {len(proxy.connections)}")
        family("faultproxy_toxics_applied_total", "counter",
               "Times a toxic started acting on a connection direction (after its toxicity draw)")
        for (name, toxic, kind), value in sorted(self.applied.items()):
            lines.append(f"faultproxy_toxics_applied_total{_labels(proxy=name, toxic=toxic, type=kind)} {value}")
        family("faultproxy_toxics_active", "gauge", "Toxics configured now")
        for name, proxy in sorted(collection.proxies.items()):
            for direction in DIRECTIONS:
                lines.append(f"faultproxy_toxics_active{_labels(proxy=name, direction=direction)} "
                             f"{len(proxy.toxics[direction])}")
        return "\n".join(lines) + "\n"

    @staticmethod
    def _proxy_labels(collection: ProxyCollection, name: str, direction: str) -> str:
        proxy = collection.proxies.get(name)
        return _labels(direction=direction, proxy=name,
                       listener=proxy.listen if proxy else "", upstream=proxy.upstream if proxy else "")
