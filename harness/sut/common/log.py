"""Structured JSON logs to stdout: one object per line, so ``docker logs`` can be parsed into the run report."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

_context: dict[str, Any] = {}


def set_context(**fields: Any) -> None:
    """Fields added to every line (node, replica, role): set once at start-up."""
    _context.update(fields)


def log(event: str, level: str = "info", **fields: Any) -> None:
    line = {"ts": time.time(), "level": level, "event": event, **_context, **fields}
    sys.stdout.write(json.dumps(line, default=str) + "\n")
    sys.stdout.flush()
