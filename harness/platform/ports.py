"""Host ports the topology publishes on 127.0.0.1.

With a *port base* B the well-known entry points get fixed ports (so a person can type them): fault-proxy API
B+74, PostgreSQL primary (pg-lb) B+32, Ledger API of p1 B+1, of p2 B+2. Everything else is published on an
ephemeral port (``127.0.0.1::PORT``). Port base 0 makes everything ephemeral (what tests use: parallel runs
never collide).
"""

from __future__ import annotations

import socket
from collections.abc import Collection

from harness.errors import HarnessError, InputError

#: compose variable -> (offset from the base, what it is)
FIXED_PORTS: dict[str, tuple[int, str]] = {
    "HA_CHAOS_PORT_LEDGER_P1": (1, "Ledger API of p1 (ledger-lb)"),
    "HA_CHAOS_PORT_LEDGER_P2": (2, "Ledger API of p2 (ledger-lb)"),
    "HA_CHAOS_PORT_PG": (32, "PostgreSQL primary (pg-lb)"),
    "HA_CHAOS_PORT_FAULTPROXY": (74, "fault-proxy API"),
}


MAX_OFFSET = max(off for off, _ in FIXED_PORTS.values())


def validate_base(port_base: int) -> None:
    """0 (every port ephemeral) or a base whose fixed ports all are valid TCP ports."""
    if port_base != 0 and not 1 <= port_base <= 65535 - MAX_OFFSET:
        raise InputError(f"port base {port_base} is out of range: its fixed ports {port_base}+1..{port_base}+"
                         f"{MAX_OFFSET} must be TCP ports (1-65535)",
                         f"use a --port-base from 1 to {65535 - MAX_OFFSET}, or 0 for ephemeral ports")


def port_env(port_base: int) -> dict[str, str]:
    """Compose variables for the fixed ports; empty strings (ephemeral) with port base 0."""
    return {var: (str(port_base + off) if port_base else "") for var, (off, _) in FIXED_PORTS.items()}


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def busy_ports(port_base: int, only: Collection[str] | None = None) -> list[tuple[int, str]]:
    """The fixed ports of ``port_base`` that are taken; ``only``: the compose variables a profile publishes."""
    validate_base(port_base)
    if not port_base:
        return []
    return [(port_base + off, what) for var, (off, what) in FIXED_PORTS.items()
            if (only is None or var in only) and not port_free(port_base + off)]


def check_ports(port_base: int, only: Collection[str] | None = None) -> None:
    busy = busy_ports(port_base, only)
    if busy:
        listing = ", ".join(f"127.0.0.1:{p} ({what})" for p, what in busy)
        raise HarnessError(f"port already in use: {listing}",
                           f"free it, or pick another base with --port-base (now {port_base}; 0 = ephemeral ports)")
