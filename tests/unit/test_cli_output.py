"""``ha-chaos`` output is line-buffered when stdout is not a terminal (issue 15 item 8): on a fresh machine
``ha-chaos run | cat`` printed nothing for 5.5 minutes, then every set-up line at once at the end."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from harness import cli

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


class _Pipe(io.BufferedWriter):
    def isatty(self) -> bool:
        return False


def test_a_piped_stdout_and_stderr_are_line_buffered(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = {name: io.BytesIO() for name in ("out", "err")}
    streams = {name: io.TextIOWrapper(_Pipe(raw[name]), encoding="utf-8") for name in raw}
    monkeypatch.setattr(sys, "stdout", streams["out"])
    monkeypatch.setattr(sys, "stderr", streams["err"])
    cli.line_buffered()
    print("set-up: starting dockerd")
    print("fix: something", file=sys.stderr)
    assert raw["out"].getvalue() == b"set-up: starting dockerd\n"  # there without a flush
    assert raw["err"].getvalue() == b"fix: something\n"


def test_a_closed_stream_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    closed = io.TextIOWrapper(io.BytesIO())
    closed.close()
    monkeypatch.setattr(sys, "stdout", closed)
    monkeypatch.setattr(sys, "stderr", None)
    cli.line_buffered()


def test_the_entry_point_prints_each_line_as_it_happens_into_a_pipe() -> None:
    """The first line of a command arrives through a pipe while the process still runs (here: sleeps)."""
    plan = REPO / "fault_plans" / "kill-active-participant.yaml"
    code = (f"import time\nfrom harness.cli import main\nmain(['plan', 'validate', {str(plan)!r}])\n"
            "time.sleep(60)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # CI sets it; users do not
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            cwd=REPO, env=env)
    lines: list[bytes] = []
    reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        reader.join(timeout=30)
        assert lines and lines[0].startswith(b"ok "), "the line stayed in the buffer while the command ran"
        assert proc.poll() is None  # still sleeping: the line did not come from the flush at exit
    finally:
        proc.kill()
        proc.wait()
