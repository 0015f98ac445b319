"""Turn SIGTERM (and SIGHUP) into an exception so every ``with``/``finally`` teardown runs, as on Ctrl-C."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM/SIGHUP.

    A KeyboardInterrupt so that whatever treats Ctrl-C as "stop now and clean up" treats SIGTERM the same: pytest in
    particular ends the session and runs every fixture's teardown on a KeyboardInterrupt, but takes any other
    exception raised inside a test for that test's failure and goes on with the next test."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"received signal {signal.Signals(signum).name}")
        self.signum = signum


def _raise(signum: int, _frame: FrameType | None) -> None:
    # Ignore further signals while tearing down: a second SIGTERM must not interrupt the cleanup itself.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated(signum)


@contextlib.contextmanager
def terminate_gracefully() -> Iterator[None]:
    """Within this block SIGTERM/SIGHUP raise ``Terminated`` in the main thread; handlers restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in SIGNALS}
    for s in old:
        signal.signal(s, _raise)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def install_if_default() -> list[signal.Signals]:
    """Make SIGTERM/SIGHUP raise ``Terminated`` where they would still kill the process outright (default action,
    main thread); returns the signals changed, for ``restore_default``. Handlers someone installed are kept."""
    if threading.current_thread() is not threading.main_thread():
        return []
    changed = [s for s in SIGNALS if signal.getsignal(s) == signal.SIG_DFL]
    for s in changed:
        signal.signal(s, _raise)
    return changed


def restore_default(changed: list[signal.Signals]) -> None:
    """Undo ``install_if_default`` (where the handler is still ours, or was set to ignore by ``_raise``)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for s in changed:
        if signal.getsignal(s) in (_raise, signal.SIG_IGN):
            signal.signal(s, signal.SIG_DFL)
