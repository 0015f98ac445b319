"""The node's wall clock: the system clock plus a skew the harness can set while the node runs (clock faults).

Why in the node and not libfaketime: containers share the kernel's clock, so a per-process fake clock is the only
way to skew one node. Debian bookworm's libfaketime 0.9.10 was tried first (LD_PRELOAD with
``FAKETIME_TIMESTAMP_FILE`` and ``FAKETIME_DONT_FAKE_MONOTONIC=1``): under it Python's ``time.sleep`` fails with
EINVAL even at offset +0, and offset changes were applied late and inconsistently unless the file is re-read on
every call (``FAKETIME_NO_CACHE=1``: 84 us per ``time.time()``, 400 times the plain call). So the reference nodes
read wall time through this module, the way a JVM's time source could be swapped, and the monotonic clock (timers,
timeouts) stays untouched, as with a real clock step.

Control file (``HA_CHAOS_CLOCK_FILE``, default ``/tmp/ha-chaos-clock``): JSON ``{"offset_s": float, "drift":
float, "since": unix seconds}``: from ``since`` on, the node's clock reads ``real + offset_s + drift * (real -
since)`` (a jump, a clock running fast or slow, or both). No file, or ``offset_s`` and ``drift`` 0: the real clock.
The file is re-read at most every 100 ms, so a change is seen within 0.1 s.
"""

from __future__ import annotations

import json
import os
import time

CLOCK_FILE = os.environ.get("HA_CHAOS_CLOCK_FILE", "/tmp/ha-chaos-clock")
RECHECK_S = 0.1

_state: dict[str, object] = {"checked": -1.0, "text": None, "offset": 0.0, "drift": 0.0, "since": 0.0}


def _refresh() -> None:
    """Re-read the control file at most every ``RECHECK_S``: its text, not its mtime, tells a change (the harness
    writes it through a tar archive, whose mtimes are whole seconds: a step and its undo can share one)."""
    now = time.monotonic()
    if now - _state["checked"] < RECHECK_S:  # type: ignore[operator]
        return
    _state["checked"] = now
    try:
        with open(CLOCK_FILE) as f:
            text: str | None = f.read(4096)
    except OSError:
        text = None
    if text == _state["text"]:
        return
    _state["text"] = text
    spec: dict[str, float] = {}
    if text:
        try:
            spec = json.loads(text)
        except ValueError:
            spec = {}  # a half-written or broken file: the real clock, and read again at the next change
    _state.update(offset=float(spec.get("offset_s", 0.0)), drift=float(spec.get("drift", 0.0)),
                  since=float(spec.get("since", 0.0)))


def skew_s(real: float | None = None) -> float:
    """How far this node's clock is from the real one right now, in seconds."""
    _refresh()
    real = time.time() if real is None else real
    drift = float(_state["drift"])  # type: ignore[arg-type]
    return float(_state["offset"]) + (drift * max(0.0, real - float(_state["since"])) if drift else 0.0)  # type: ignore[arg-type]


def wall_s() -> float:
    real = time.time()
    return real + skew_s(real)


def wall_us() -> int:
    return int(wall_s() * 1_000_000)
