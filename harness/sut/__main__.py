"""``python -m harness.sut``: run one node, configured by env (``NODE_ROLE`` = sequencer | mediator | participant).

Why exit on fatal: the model says a failed transition or a non-transient DB error exits the process and the
supervisor (Docker's restart policy) restarts it. SIGTERM stops gracefully (a sequencer marks itself offline).
SIGUSR1 logs every asyncio task's stack (``docker kill -s USR1 <container>``): the way to see where a node that
stopped making progress waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys

from harness.sut.common import evloop
from harness.sut.common.config import config_from_env
from harness.sut.common.log import log, set_context


def _await_chain(coro: object, limit: int = 30) -> list[str]:
    """Where a suspended coroutine waits: its frame, then what it awaits (``cr_await``/``ag_await``), inward,
    down to the future at the bottom."""
    out: list[str] = []
    while coro is not None and len(out) < limit:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            out.append(f"awaits {type(coro).__name__}")
            break
        out.append(f"{frame.f_code.co_filename.rsplit('/', 3)[-1]}:{frame.f_lineno} {frame.f_code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None) or getattr(coro, "gi_yieldfrom", None)
    return out


def dump_tasks() -> None:
    """SIGUSR1: log every asyncio task with the chain of awaits it is suspended in (where a stuck transition or
    loop waits)."""
    for task in asyncio.all_tasks():
        coro = task.get_coro()
        log("task_dump", task=task.get_name(), coro=getattr(coro, "__qualname__", repr(coro)),
            stack=_await_chain(coro))


def build_node(cfg):  # type: ignore[no-untyped-def]
    if cfg.role == "sequencer":
        from harness.sut.sequencer.node import SequencerNode
        return SequencerNode(cfg)
    if cfg.role == "mediator":
        from harness.sut.mediator.node import MediatorNode
        return MediatorNode(cfg)
    from harness.sut.participant.node import ParticipantNode
    return ParticipantNode(cfg)


async def amain() -> int:
    cfg = config_from_env()
    set_context(node=cfg.node, replica=cfg.replica, role=cfg.role)
    log("starting", bugs=sorted(cfg.bugs), timers=cfg.timers.__dict__, event_loop=evloop.loop_kind())
    node = build_node(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, dump_tasks)
    try:
        await node.start()
    except Exception as exc:
        log("startup_failed", level="error", error=repr(exc))
        return 1
    while not stop.is_set() and node.fatal is None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
    code = 0 if node.fatal is None else 1
    try:
        await asyncio.wait_for(node.stop(), 1.5)
    except Exception as exc:
        log("stop_failed", level="warning", error=repr(exc))
    log("exiting", code=code)
    if code:
        # A fatal error or failed transition: leave now. A task stuck in a swallowed cancellation (the reason
        # transitions are bounded) would otherwise hang the interpreter's shutdown, which waits for every task,
        # and the supervisor would never restart the process.
        sys.stdout.flush()
        os._exit(code)
    return code


def main() -> None:
    sys.exit(evloop.run(amain()))


if __name__ == "__main__":
    main()
