"""Group commit: requests that arrive while a DB transaction is running share the next one.

Why: every transaction of an active replica costs round trips through the fault proxy and pg-lb (one for a
single-statement write, ``Writer.write_one``; BEGIN, the work and the epoch update with COMMIT otherwise, see
``Writer.write``), so per-request transactions made the DB path the bottleneck of the whole topology under load.
A batch never waits for more requests to arrive: an idle worker takes what is queued at once, so a lone request
is not delayed; up to ``workers`` batches run at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Runs ``run_batch(items) -> results`` (one result per item, same order) for queued items.

    If ``run_batch`` raises for a batch of several items, each item is retried on its own, so one bad request
    cannot fail the others; the exception of a single-item batch (or one of ``shared``) goes to the callers. A
    result that is an exception instance fails its item alone (``run_batch`` knows the others succeeded).
    """

    def __init__(self, run_batch: Callable[[list[T]], Awaitable[list[R | BaseException]]], *,
                 workers: int = 2, max_batch: int = 200, shared: tuple[type[BaseException], ...] = ()) -> None:
        self._run_batch = run_batch
        self._shared = shared   # exceptions that concern every item alike (e.g. the replica turned passive)
        self._max = max_batch
        self._queue: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._wake = asyncio.Event()
        self._closed: BaseException | None = None
        self._workers = [asyncio.create_task(self._worker()) for _ in range(workers)]

    async def submit(self, item: T) -> R:
        if self._closed is not None:
            raise self._closed
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, fut))
        self._wake.set()
        return await asyncio.shield(fut)

    async def _worker(self) -> None:
        # The closed flag, not only the cancellation, ends a worker: a cancellation delivered while the batch is
        # inside the DB driver can be swallowed there (seen live: asyncpg turned it into a connection error, the
        # batch failed as "passive" and the worker went back to waiting), and ``close`` then waited forever.
        while self._closed is None:
            while not self._queue and self._closed is None:
                self._wake.clear()
                await self._wake.wait()
            if self._closed is not None:
                return
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), self._max))]
            await self._run(batch)

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._run_batch([item for item, _ in batch])
        except asyncio.CancelledError:
            self._fail(batch, self._closed or RuntimeError("group commit cancelled"))
            raise
        except Exception as exc:
            if len(batch) == 1 or isinstance(exc, self._shared):
                self._fail(batch, exc)
            else:
                try:
                    for one in batch:
                        await self._run([one])
                finally:   # cancelled (closed) midway: the items not retried yet must not wait forever
                    self._fail(batch, self._closed or RuntimeError("group commit cancelled"))
            return
        for (_, fut), res in zip(batch, results, strict=True):
            if fut.done():
                continue
            if isinstance(res, BaseException):   # this item alone failed (the others of the batch did not)
                fut.set_exception(res)
                fut.exception()
            else:
                fut.set_result(res)

    @staticmethod
    def _fail(batch: list[tuple[T, asyncio.Future[R]]], exc: BaseException) -> None:
        for _, fut in batch:
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()   # retrieved: a caller that went away must not make asyncio log it

    async def close(self, exc: BaseException) -> None:
        """Stop the workers; queued and running requests fail with ``exc``."""
        self._closed = exc
        self._wake.set()
        for w in self._workers:
            w.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._workers, return_exceptions=True)
        self._fail(list(self._queue), exc)
        self._queue.clear()
