"""Errors the harness reports to a person: one line of cause, one line of fix, never a traceback.

Why a dedicated type: the CLI and the pytest plugin must tell a broken environment (exit 3+) apart from an
invariant that failed (exit 1). Anything raised as a ``HarnessError`` is shown as ``error: <what>`` plus
``fix: <how>`` and the process exits with ``exit_code``.
"""

from __future__ import annotations


class HarnessError(Exception):
    """A problem of the environment, the input or the harness itself (not of the system under test)."""

    exit_code = 3

    def __init__(self, what: str, fix: str | None = None, *, exit_code: int | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.fix = fix
        if exit_code is not None:
            self.exit_code = exit_code

    def render(self) -> str:
        line = f"error: {self.what}"
        if self.fix:
            line += f"\n  fix: {self.fix}"
        return line


class DockerUnavailable(HarnessError):
    """No Docker daemon answers."""


class InputError(HarnessError):
    """Bad user input: a malformed plan file, an unknown fault kind, a bad option."""

    exit_code = 4
