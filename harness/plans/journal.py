"""The fault journal: a JSONL file in the run directory that outlives the harness process.

Why written *before* each apply and fsync'd: if the harness is SIGKILLed between "toxic created" and "toxic
recorded", the toxic would leak forever. Writing the intent first means the journal may name a fault that never
took - harmless, because heals are idempotent - but never misses one that did. ``heal_from_journal`` undoes every
entry without a ``healed`` line, newest first, and is what ``ha-chaos heal`` and the next start call.

Lines: ``{"op": "apply", "id", "step", "kind", "target", "resolved", "groups", "params", "wall"}``, then
optionally ``{"op": "applied", "id", "record"}`` (injector data), then ``{"op": "healed", "id"}``.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

JOURNAL_NAME = "faults.journal.jsonl"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class FaultJournal:
    """Append-only, one fsync per line (faults are rare; durability matters more than speed)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def _write(self, obj: dict[str, Any]) -> None:
        line = json.dumps(obj, separators=(",", ":"), default=str) + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def intent(self, fault_id: str, *, step: int, kind: str, target: Any, resolved: list[str],
               groups: list[list[str]] | None, params: dict[str, Any]) -> None:
        self._write({"op": "apply", "id": fault_id, "step": step, "kind": kind, "target": target,
                     "resolved": resolved, "groups": groups, "params": params, "wall": _now()})

    def applied(self, fault_id: str, record: dict[str, Any]) -> None:
        self._write({"op": "applied", "id": fault_id, "record": record, "wall": _now()})

    def healed(self, fault_id: str) -> None:
        self._write({"op": "healed", "id": fault_id, "wall": _now()})


def open_faults(path: str | Path) -> list[dict[str, Any]]:
    """Entries applied but not healed, in the order they were applied (a torn last line is ignored)."""
    p = Path(path)
    if not p.exists():
        return []
    entries: dict[str, dict[str, Any]] = {}
    for raw in p.read_text(encoding="utf-8").splitlines():
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError:
            continue  # torn line from a crash mid-write
        if not isinstance(obj, dict) or "id" not in obj:
            continue
        fid, op = str(obj["id"]), obj.get("op")
        if op == "apply":
            entries[fid] = {k: v for k, v in obj.items() if k != "op"}
            entries[fid].setdefault("record", {})
        elif op == "applied" and fid in entries:
            entries[fid]["record"] = obj.get("record") or {}
        elif op == "healed":
            entries.pop(fid, None)
    return list(entries.values())


class _Healer(Protocol):
    def heal(self, entry: dict[str, Any]) -> None: ...


@dataclass
class HealReport:
    healed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (fault id, error)

    @property
    def ok(self) -> bool:
        return not self.failed


def heal_from_journal(path: str | Path, injector: _Healer) -> HealReport:
    """Undo every open fault in ``path``, newest first; a failed heal stays open for the next attempt."""
    journal = FaultJournal(path)
    report = HealReport()
    for entry in reversed(open_faults(path)):
        try:
            injector.heal(entry)
        except Exception as exc:  # keep healing the others; report this one
            report.failed.append((entry["id"], f"{type(exc).__name__}: {exc}"))
            continue
        journal.healed(entry["id"])
        report.healed.append(entry["id"])
    return report
