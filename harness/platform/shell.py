"""Small helpers to run external commands with timeouts and clear errors."""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Sequence

from harness.errors import HarnessError

log = logging.getLogger("ha-chaos.shell")


def run(cmd: Sequence[str], *, timeout: float = 120, check: bool = True, capture: bool = True,
        env: dict[str, str] | None = None, cwd: str | None = None,
        input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``cmd``; on failure raise a HarnessError quoting the command and the tail of its output."""
    log.info("$ %s", " ".join(cmd))
    if shutil.which(cmd[0]) is None:
        raise HarnessError(f"command not found: {cmd[0]}", f"install {cmd[0]} (ha-chaos setup does it where it can)")
    try:
        proc = subprocess.run(list(cmd), capture_output=capture, text=True, timeout=timeout, env=env, cwd=cwd,
                              input=input.decode() if input is not None else None)
    except subprocess.TimeoutExpired as exc:
        raise HarnessError(f"`{' '.join(cmd)}` did not finish within {timeout:.0f} s") from exc
    if check and proc.returncode != 0:
        tail = ((proc.stderr or "") + (proc.stdout or "")).strip().splitlines()[-8:]
        raise HarnessError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}): " + " | ".join(tail))
    return proc


def ok(cmd: Sequence[str], *, timeout: float = 20) -> bool:
    """True when ``cmd`` runs and exits 0 (never raises)."""
    if shutil.which(cmd[0]) is None:
        return False
    try:
        return subprocess.run(list(cmd), capture_output=True, timeout=timeout).returncode == 0
    except (subprocess.TimeoutExpired, OSError):
        return False
