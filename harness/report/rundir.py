"""The run directory (the store): ``runs/<name>/<timestamp>/`` and the ``runs/latest`` link.

Layout (ARCHITECTURE.md): ``plan.yaml``, ``history.jsonl``, ``results.json``, ``report.html``, ``junit.xml``,
``logs/<container>.log``, ``topology.json``. Why one class owns the paths: the executor writes, ``check`` and
``report`` re-read years later; every reader must agree on names, and a missing or garbled file must become one
clear ``HarnessError`` line, never a traceback.

Container logs are expected as ``docker logs --timestamps`` writes them: each line starts with an RFC 3339 wall
clock timestamp. That is what lets the report cut an excerpt "around the violation" out of them.
"""

from __future__ import annotations

import gc
import json
import math
import os
import re
import sys
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.history import Event

PLAN = "plan.yaml"
HISTORY = "history.jsonl"
RESULTS = "results.json"
REPORT = "report.html"
JUNIT = "junit.xml"
TOPOLOGY = "topology.json"
LOGS = "logs"
LATEST = "latest"

_TS_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?)\s?")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def _parse_wall(text: str) -> float | None:
    """ISO 8601 -> epoch seconds; Docker's nanosecond fractions are cut to microseconds."""
    text = text.strip().replace("Z", "+00:00")
    m = re.match(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)$", text)
    if not m:
        return None
    frac = (m.group(2) or "")[:7]
    try:
        dt = datetime.fromisoformat(m.group(1) + frac + (m.group(3) or ""))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


@dataclass(frozen=True)
class RunDir:
    path: Path

    # --- creation / opening ------------------------------------------------------------------------------
    @classmethod
    def create(cls, runs_dir: Path | str, name: str, *, timestamp: datetime | None = None) -> RunDir:
        """Make ``<runs_dir>/<name>/<timestamp>/logs`` and point ``<runs_dir>/latest`` at it."""
        safe = _SAFE_NAME.sub("-", name).strip("-") or "run"
        ts = (timestamp or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S.%fZ")
        path = Path(runs_dir) / safe / ts
        try:
            (path / LOGS).mkdir(parents=True, exist_ok=False)
        except OSError as exc:
            raise HarnessError(f"cannot create run directory {path}: {exc.strerror or exc}",
                               "check that --runs-dir is writable") from exc
        rd = cls(path)
        rd.link_latest()
        return rd

    @classmethod
    def open(cls, path: Path | str) -> RunDir:
        """An existing run directory (``runs/latest`` works too); it must at least hold a history."""
        p = Path(path)
        if not p.exists():
            raise HarnessError(f"run directory {p} does not exist", "pass a directory under runs/, e.g. runs/latest")
        if not p.is_dir():
            raise HarnessError(f"{p} is not a directory", "pass the run directory, not a file in it")
        rd = cls(p.resolve())
        if not rd.history_path.is_file():
            raise HarnessError(f"{p} has no {HISTORY}: not a run directory (or the run never started)",
                               "pass a directory written by `ha-chaos run`")
        return rd

    def link_latest(self) -> None:
        """Atomically repoint ``<runs_dir>/latest`` (a relative symlink, so the tree can be moved)."""
        runs_dir = self.path.parent.parent
        link = runs_dir / LATEST
        tmp = runs_dir / f".{LATEST}.{os.getpid()}"
        try:
            if tmp.is_symlink() or tmp.exists():
                tmp.unlink()
            tmp.symlink_to(self.path.relative_to(runs_dir))
            os.replace(tmp, link)
        except OSError as exc:
            raise HarnessError(f"cannot update {link}: {exc.strerror or exc}") from exc

    # --- paths -------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.parent.name

    @property
    def timestamp(self) -> str:
        return self.path.name

    @property
    def plan_path(self) -> Path:
        return self.path / PLAN

    @property
    def history_path(self) -> Path:
        return self.path / HISTORY

    @property
    def results_path(self) -> Path:
        return self.path / RESULTS

    @property
    def report_path(self) -> Path:
        return self.path / REPORT

    @property
    def junit_path(self) -> Path:
        return self.path / JUNIT

    @property
    def topology_path(self) -> Path:
        return self.path / TOPOLOGY

    @property
    def logs_dir(self) -> Path:
        return self.path / LOGS

    def log_path(self, container: str) -> Path:
        return self.logs_dir / f"{_SAFE_NAME.sub('-', container)}.log"

    def bugs(self) -> str:
        """The bug switches the run's topology had (``topology.json`` "bugs"), as a comma list; "" if none."""
        info = self.read_json(self.topology_path) if self.topology_path.exists() else None
        value = (info or {}).get("bugs") or ""
        if isinstance(value, list) and all(isinstance(b, str) for b in value):
            value = ",".join(value)
        if not isinstance(value, str):
            raise HarnessError(f"{self.topology_path}: \"bugs\" is a {type(value).__name__}, not a comma list",
                               "fix or remove the \"bugs\" field (the switches the run's nodes had)")
        return ",".join(b.strip() for b in value.split(",") if b.strip())

    def replication(self) -> str:
        """The run's PostgreSQL replication mode (``topology.json`` "replication"): "synchronous",
        "asynchronous", or "" when not recorded (runs stored before the field existed)."""
        info = self.read_json(self.topology_path) if self.topology_path.exists() else None
        value = (info or {}).get("replication") or ""
        return value if value in ("synchronous", "asynchronous") else ""

    def replay_command(self) -> str:
        """The command that re-runs this plan, on nodes with the same bug switches and the same PostgreSQL
        replication mode as the run's (results.json, junit.xml, report.html and the pytest plugin all print it)."""
        import shlex

        bugs = self.bugs()
        return (f"ha-chaos replay {shlex.quote(str(self.plan_path))}" + (f" --bugs {shlex.quote(bugs)}" if bugs else "")
                + (" --async-replication" if self.replication() == "asynchronous" else ""))

    # --- writing -----------------------------------------------------------------------------------------
    def write_plan(self, text: str) -> None:
        self.plan_path.write_text(text, encoding="utf-8")

    def write_topology(self, info: dict[str, Any]) -> None:
        self.topology_path.write_text(json.dumps(info, indent=2, sort_keys=True, default=str), encoding="utf-8")

    # --- reading -----------------------------------------------------------------------------------------
    def read_history(self) -> list[Event]:
        try:
            events = load_history(self.history_path)
        except (ValueError, TypeError) as exc:
            raise HarnessError(f"garbled history: {exc}", "the run directory is damaged; re-run the plan") from exc
        except OSError as exc:
            raise HarnessError(f"cannot read {self.history_path}: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise HarnessError(f"{self.history_path} is not UTF-8 text: {exc.reason}") from exc
        check_span(events, self.history_path)
        return events

    def read_plan_text(self) -> str | None:
        try:
            return self.plan_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return None

    def read_json(self, path: Path) -> dict[str, Any] | None:
        """A JSON object file of the run, None if absent; a garbled one is a harness error."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise HarnessError(f"{path} is not valid JSON: {exc}", self._json_fix(path)) from exc
        if not isinstance(data, dict):
            raise HarnessError(f"{path} does not hold a JSON object (it holds a {type(data).__name__})",
                               self._json_fix(path))
        return data

    def _json_fix(self, path: Path) -> str:
        if path.name == RESULTS:
            return f"run `ha-chaos check {self.path}` to rewrite it"
        return f"restore {path.name} from the original run, or remove it"

    def containers_with_logs(self) -> list[str]:
        if not self.logs_dir.is_dir():
            return []
        return sorted(p.stem for p in self.logs_dir.glob("*.log"))

    def log_excerpt(self, container: str, wall_from: float, wall_to: float, max_lines: int = 40,
                    before: int = 3) -> list[str]:
        """Lines of ``logs/<container>.log`` stamped within [wall_from, wall_to] (epoch seconds). When none is,
        the last ``before`` lines stamped earlier, after a marker line: the reference nodes log transitions,
        not every request, so the node's last transition is what tells its state at that time."""
        path = self.log_path(container)
        out: list[str] = []
        earlier: deque[str] = deque(maxlen=before)
        try:
            with path.open(encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    m = _TS_RE.match(line)
                    if not m:
                        continue
                    w = _parse_wall(m.group(1))
                    if w is None:
                        continue
                    if w < wall_from:
                        earlier.append(line.rstrip("\n"))
                        continue
                    if w > wall_to:
                        break
                    out.append(line.rstrip("\n"))
                    if len(out) >= max_lines:
                        break
        except FileNotFoundError:
            return []
        if not out and earlier:
            return [f"(no lines within the window; the last {len(earlier)} before it:)", *earlier]
        return out


def wall_offset(events: list[Event]) -> float | None:
    """Epoch seconds minus history ``t``, from the first event that carries a wall clock (maps t -> log time)."""
    for ev in events[:1000]:
        if ev.wall:
            w = _parse_wall(ev.wall)
            if w is not None:
                return w - ev.t
    return None


_CHUNK_BYTES = 8_000_000
#: no run of this harness lasts a week: a history whose ``t`` goes beyond is garbled (the report's per-second
#: series would need an element per second of it)
MAX_SPAN_S = 7 * 24 * 3600.0


def check_span(events: list[Event], source: Path | str = HISTORY) -> None:
    """Refuse a history whose times reach beyond ``MAX_SPAN_S`` either side of 0 (``t`` counts from the run's
    start); a HarnessError naming the event."""
    if not events:
        return
    lo = min(events, key=lambda e: e.t)
    hi = max(events, key=lambda e: e.t)
    for ev in (hi, lo):
        if abs(ev.t) > MAX_SPAN_S:
            raise HarnessError(f"{source}: malformed history: event {ev.process} {ev.type} {ev.f} at t={ev.t:g} s, "
                               f"beyond the {MAX_SPAN_S / 86400:g}-day limit of a run",
                               "the history is damaged: fix or remove that line, or re-run the plan")


def _event(d: Any) -> Event:
    intern = sys.intern  # a few distinct process/type/f names repeated a million times: share them
    value = d.get("value") or {}
    if not isinstance(value, dict):
        raise TypeError(f"value is a {type(value).__name__}, not an object")
    if d["type"] not in ("invoke", "ok", "fail", "info"):
        raise ValueError(f"unknown event type {d['type']!r}")
    t = float(d["t"])
    if not math.isfinite(t):
        raise ValueError(f"t is {d['t']!r}, not a finite number")
    return Event(t=t, process=intern(str(d["process"])), type=intern(str(d["type"])),  # type: ignore[arg-type]
                 f=intern(str(d["f"])), value=value, wall=d.get("wall", ""))


def load_history(path: Path) -> list[Event]:
    """Read history.jsonl fast and compactly; same rules as ``harness.history.iter_history`` (a torn final line
    from a crash is skipped, any other bad line is an error naming it).

    Why not ``iter_history``: a million-operation history took 19 s and 2.4 GiB that way. Parsing chunks of
    lines as one JSON array lets the decoder share dict keys across events (half the memory), and keeping the
    garbage collector out of the way while a million long-lived objects are allocated halves the time.
    ``gc.freeze()`` then keeps later collections from rescanning them.
    """
    out: list[Event] = []
    lineno = 0
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        with path.open(encoding="utf-8") as fh:
            chunk = fh.readlines(_CHUNK_BYTES)
            while chunk:
                nxt = fh.readlines(_CHUNK_BYTES)
                lines = [ln for ln in chunk if ln.strip()]
                try:
                    out.extend(_event(d) for d in json.loads("[" + ",".join(lines) + "]"))
                except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                    _slow_chunk(path, chunk, lineno, last_chunk=not nxt, out=out)
                lineno += len(chunk)
                chunk = nxt
    finally:
        if was_enabled:
            gc.enable()
    gc.freeze()
    return out


def _slow_chunk(path: Path, chunk: list[str], lineno: int, *, last_chunk: bool, out: list[Event]) -> None:
    """Line by line, to name the bad line (or skip a torn final one)."""
    for i, line in enumerate(chunk):
        if not line.strip():
            continue
        try:
            out.append(_event(json.loads(line)))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            if last_chunk and i == len(chunk) - 1:
                return  # torn final line from a crash
            raise ValueError(f"{path}:{lineno + i + 1}: malformed history line: {exc}") from exc
