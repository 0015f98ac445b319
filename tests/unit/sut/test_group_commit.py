"""GroupCommit: queued requests share a batch, a lone request is not delayed, one bad request fails alone."""

from __future__ import annotations

import asyncio

import pytest

from harness.sut.common.group import GroupCommit

pytestmark = pytest.mark.unit


class Passive(Exception):
    pass


def test_requests_queued_while_a_batch_runs_share_the_next_one() -> None:
    async def main() -> list[list[int]]:
        batches: list[list[int]] = []
        gate = asyncio.Event()

        async def run(items: list[int]) -> list[int]:
            batches.append(items)
            if len(batches) == 1:
                await gate.wait()
            return [i * 10 for i in items]

        g: GroupCommit[int, int] = GroupCommit(run, workers=1)
        first = asyncio.create_task(g.submit(0))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        rest = [asyncio.create_task(g.submit(i)) for i in range(1, 6)]
        await asyncio.sleep(0)
        gate.set()
        assert await first == 0
        assert await asyncio.gather(*rest) == [10, 20, 30, 40, 50]
        await g.close(Passive())
        return batches

    assert asyncio.run(main()) == [[0], [1, 2, 3, 4, 5]]


def test_a_failing_batch_is_retried_item_by_item() -> None:
    async def main() -> None:
        async def run(items: list[int]) -> list[int]:
            await asyncio.sleep(0.01)
            if 3 in items:
                raise ValueError("bad item 3")
            return items

        g: GroupCommit[int, int] = GroupCommit(run, workers=1)
        blocker = asyncio.create_task(g.submit(0))
        await asyncio.sleep(0)
        tasks = [asyncio.create_task(g.submit(i)) for i in (1, 2, 3, 4)]
        results = await asyncio.gather(blocker, *tasks, return_exceptions=True)
        assert results[:3] == [0, 1, 2] and results[4] == 4
        assert isinstance(results[3], ValueError)
        await g.close(Passive())

    asyncio.run(main())


def test_shared_errors_fail_the_batch_and_close_fails_the_queue() -> None:
    async def main() -> None:
        calls: list[list[int]] = []
        hold = asyncio.Event()

        async def run(items: list[int]) -> list[int]:
            calls.append(items)
            if items == [0]:
                await hold.wait()
            raise Passive()

        g: GroupCommit[int, int] = GroupCommit(run, workers=1, shared=(Passive,))
        t0 = asyncio.create_task(g.submit(0))
        await asyncio.sleep(0)
        t12 = [asyncio.create_task(g.submit(i)) for i in (1, 2)]
        await asyncio.sleep(0)
        hold.set()
        res = await asyncio.gather(t0, *t12, return_exceptions=True)
        assert all(isinstance(r, Passive) for r in res)
        assert calls == [[0], [1, 2]]          # not retried one by one
        waiting = asyncio.create_task(g.submit(7))
        await g.close(Passive())
        with pytest.raises(Passive):
            await waiting
        with pytest.raises(Passive):
            await g.submit(8)

    asyncio.run(main())


def test_close_ends_a_worker_whose_batch_swallowed_the_cancellation() -> None:
    """A DB driver may turn a cancellation into an ordinary error (seen live with asyncpg on a blackholed link):
    the batch then fails like any other and the worker must still stop, or ``close`` (the passive transition)
    waits forever."""
    async def main() -> None:
        entered = asyncio.Event()

        async def run(items: list[int]) -> list[int]:
            entered.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                raise Passive("cancelled inside the driver") from None   # swallowed, as the driver did
            return items

        g: GroupCommit[int, int] = GroupCommit(run, workers=2, shared=(Passive,))
        pending = asyncio.create_task(g.submit(1))
        await entered.wait()
        closing = asyncio.create_task(g.close(Passive("became passive")))
        done, _ = await asyncio.wait({closing}, timeout=5)    # not wait_for: its cancel would end the workers
        assert closing in done, "close() still waiting for a worker after 5 s"
        with pytest.raises(Passive):
            await pending
    asyncio.run(main())


def test_close_during_the_one_by_one_retry_of_a_failed_batch_resolves_every_item() -> None:
    async def main() -> None:
        calls: list[list[int]] = []
        retrying = asyncio.Event()

        async def run(items: list[int]) -> list[int]:
            calls.append(items)
            if len(items) > 1:
                raise ValueError("one of them is bad")      # not shared: each item is retried alone
            retrying.set()
            await asyncio.sleep(3600)
            return items

        g: GroupCommit[int, int] = GroupCommit(run, workers=1, shared=(Passive,))
        gate = asyncio.Event()

        async def blocked_first(items: list[int]) -> list[int]:
            await gate.wait()
            return await run(items)
        g._run_batch = blocked_first
        futs = [asyncio.create_task(g.submit(i)) for i in range(3)]
        await asyncio.sleep(0)
        gate.set()
        await retrying.wait()
        await asyncio.wait_for(g.close(Passive("became passive")), 5)
        done, pending = await asyncio.wait(futs, timeout=5)
        assert not pending, "submits left waiting after close"
        assert all(isinstance(f.exception(), Passive) for f in done)
    asyncio.run(main())


def test_an_exception_as_result_fails_its_item_alone_without_a_retry() -> None:
    """The participant's submit batch commits new change IDs first; if deciding the others then fails, those
    fail and the committed ones still succeed (no per-item re-run: it would re-decide a committed one)."""
    async def main() -> None:
        calls: list[list[int]] = []

        async def run(items: list[int]) -> list[int | BaseException]:
            calls.append(items)
            return [Passive(f"item {i}") if i % 2 else i for i in items]

        g: GroupCommit[int, int] = GroupCommit(run, workers=1)
        tasks = [asyncio.create_task(g.submit(i)) for i in range(5)]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert results[0] == 0 and results[2] == 2 and results[4] == 4
        assert [str(r) for r in results[1::2]] == ["item 1", "item 3"]
        assert all(isinstance(tasks[i].exception(), Passive) for i in (1, 3))   # raised, not returned
        assert calls == [[0, 1, 2, 3, 4]]     # one batch, every item ran once (no one-by-one retry)
        await g.close(Passive())
    asyncio.run(main())
