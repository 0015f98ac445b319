"""Which event loop runs the process: uvloop where it is installed (the container images), else asyncio's.

Why: every proxied byte and every node request passes through an event loop; on the 2-core machine the loop's own
Python overhead (selector, transports, handles) was a large share of the fault proxy's and the nodes' CPU.
``HA_CHAOS_EVENT_LOOP=asyncio`` forces the standard loop (``uvloop`` requires it; ``auto`` is the default).

Why two copies (this one and ``harness/faultproxy/evloop.py``, kept identical by tests/unit/test_layering.py): each
container package is self-contained, so each image copies exactly one directory of the project and a change to the
other container's code never changes this image's id.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_kind(env: dict[str, str] | None = None) -> str:
    choice = (env if env is not None else os.environ).get("HA_CHAOS_EVENT_LOOP", "auto")
    if choice not in ("auto", "asyncio", "uvloop"):
        raise ValueError(f"HA_CHAOS_EVENT_LOOP must be auto, asyncio or uvloop, not {choice!r}")
    if choice == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if choice == "uvloop":
            raise
        return "asyncio"
    return "uvloop"


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the chosen loop."""
    if loop_kind() == "uvloop":
        import uvloop
        return uvloop.run(coro)
    return asyncio.run(coro)


def new_event_loop() -> asyncio.AbstractEventLoop:
    if loop_kind() == "uvloop":
        import uvloop
        return uvloop.new_event_loop()
    return asyncio.new_event_loop()
