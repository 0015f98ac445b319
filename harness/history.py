"""The history: one append-only JSONL file per run, the contract between workload, nemesis and checkers.

Format (see docs/history.md for every ``f`` and its ``value`` fields)::

    {"t": <monotonic s since run start>, "wall": <iso8601>, "process": "client-3" | "nemesis" | ...,
     "type": "invoke" | "ok" | "fail" | "info", "f": "submit" | ..., "value": {...}}

``info`` means indeterminate (timed out: it may or may not have happened); checkers must treat it honestly.
Why JSONL and not a database: a run directory must be re-checkable offline with nothing but Python, and an
append-only text file survives a crash of the harness up to the last complete line.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

EventType = Literal["invoke", "ok", "fail", "info"]
EVENT_TYPES: frozenset[str] = frozenset({"invoke", "ok", "fail", "info"})


@dataclass(slots=True)
class Event:
    """One line of the history."""

    t: float
    process: str
    type: EventType
    f: str
    value: dict[str, Any] = field(default_factory=dict)
    wall: str = ""

    def to_json(self) -> str:
        return json.dumps(
            {"t": round(self.t, 6), "wall": self.wall, "process": self.process, "type": self.type,
             "f": self.f, "value": self.value},
            separators=(",", ":"), default=str,
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        return cls(t=float(d["t"]), process=str(d["process"]), type=d["type"], f=str(d["f"]),
                   value=d.get("value") or {}, wall=d.get("wall", ""))


class HistoryWriter:
    """Thread-safe appender. Every event is flushed as one complete line, so a crash loses at most one event.

    ``t`` comes from one monotonic clock started when the writer is created: all processes of a run (clients,
    probes, nemesis) share it, which is what lets checkers order faults against operations.
    """

    def __init__(self, path: Path | str, *, t0: float | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("a", encoding="utf-8", buffering=1)
        self._lock = threading.Lock()
        self.t0 = time.monotonic() if t0 is None else t0

    def now(self) -> float:
        return time.monotonic() - self.t0

    def append(self, process: str, type_: EventType, f: str, value: dict[str, Any] | None = None,
               *, t: float | None = None) -> Event:
        if type_ not in EVENT_TYPES:
            raise ValueError(f"unknown event type {type_!r}")
        ev = Event(t=self.now() if t is None else t, process=process, type=type_, f=f, value=value or {},
                   wall=datetime.now(UTC).isoformat(timespec="milliseconds"))
        line = ev.to_json() + "\n"
        with self._lock:
            self._fh.write(line)
        return ev

    def invoke(self, process: str, f: str, value: dict[str, Any] | None = None) -> Event:
        return self.append(process, "invoke", f, value)

    def ok(self, process: str, f: str, value: dict[str, Any] | None = None) -> Event:
        return self.append(process, "ok", f, value)

    def fail(self, process: str, f: str, value: dict[str, Any] | None = None) -> Event:
        return self.append(process, "fail", f, value)

    def info(self, process: str, f: str, value: dict[str, Any] | None = None) -> Event:
        return self.append(process, "info", f, value)

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.close()

    def __enter__(self) -> HistoryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_history(path: Path | str) -> Iterator[Event]:
    """Yield events in file order. A truncated last line (crash mid-write) is skipped, anything else bad raises."""
    with Path(path).open(encoding="utf-8") as fh:
        lines = fh.readlines()
    for i, line in enumerate(lines):
        line = line.strip()
        if not line:
            continue
        try:
            yield Event.from_dict(json.loads(line))
        except (json.JSONDecodeError, KeyError) as exc:
            if i == len(lines) - 1:
                return  # torn final line from a crash
            raise ValueError(f"{path}:{i + 1}: malformed history line: {exc}") from exc


def read_history(path: Path | str) -> list[Event]:
    return list(iter_history(path))


def write_history(path: Path | str, events: Iterable[Event]) -> None:
    with Path(path).open("w", encoding="utf-8") as fh:
        for ev in events:
            fh.write(ev.to_json() + "\n")
