"""A retried submit whose first attempt committed (its reply lost) and which outlasted the max-sequencing time.

The retry looks for completions of its request since before the first attempt and took any it found as "the
duplicate already answered" (202 ``duplicate: true``, which a client takes as success). But the committed attempt
recorded the submission *in flight*; if max-sequencing passed before the retry, ``expire()`` wrote its
NOT_SEQUENCED_TIMEOUT, and that is what the retry finds. The submission was never executed: the answer must not
say duplicate (API.md: 202 = recorded in flight, exactly one completion follows - here the timeout, already out).

Mechanism-level, over the real writer and PostgreSQL: the submit's write runs its first attempt to the commit,
then the expiry of that in-flight record is committed, then the write retries (what the writer does after a lost
COMMIT reply). The change ID has an accepted dedup row outside the (zero) dedup period, so the submission is
decided by the transaction that re-opens it (the path that looks for earlier completions).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from sut_support import PgServer, node_config, wait_until

from harness.sut.participant import store
from harness.sut.participant.dedup import change_key
from harness.sut.participant.node import ParticipantNode
from harness.sut.participant.protocol import expire

pytestmark = pytest.mark.integration

NO_SEQ = ("127.0.0.1:1",)   # no sequencer: the submission is never sequenced


def test_a_retried_submit_that_finds_its_own_timeout_is_not_answered_as_a_duplicate(
        pg: PgServer, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        db = await pg.create_db("p1")
        p1 = ParticipantNode(node_config("participant", "p1a", "p1", pg.dsn(db), endpoints=NO_SEQ))
        try:
            await p1.start()
            await wait_until(lambda: p1.election.role == "active" and p1._group is not None, 10, "p1a active")
            writer = p1.writer
            assert writer is not None
            key = change_key("u", ["alice"], "cmd")
            await pg.query(db, "insert into p_dedup (change_key, state, submission_id, request_id, tx_offset, "
                           "accepted_at) values ($1, 'accepted', 's0', 'r0', 1, 1)", key)
            real = writer.write
            lost: list[str] = []

            async def write(fn: Callable[[asyncpg.Connection], Awaitable[Any]], what: str = "write") -> Any:
                if what != "submit" or lost:
                    return await real(fn, what=what)
                await real(fn, what=what)        # committed; the reply is lost
                lost.append("committed")
                rows = await pg.query(db, "select max_sequencing_time from p_inflight where submission_id = 's1'")
                assert rows, "the first attempt recorded nothing in flight: nothing was tested"
                mst = rows[0]["max_sequencing_time"]
                p1.ctx.deadline = mst            # meanwhile max-sequencing passes: an event times it out
                await real(lambda c: expire(c, p1.ctx, store.Effects(), mst + 1), what="process_events")
                lost.append("expired")
                return await real(fn, what=what)  # the writer's retry
            monkeypatch.setattr(writer, "write", write)

            status, body = await asyncio.wait_for(p1.submit(
                {"user": "u", "act_as": ["alice"], "command_id": "cmd", "submission_id": "s1",
                 "deduplication_period_s": 0}), 30)
            assert lost == ["committed", "expired"], lost
            comps = await pg.query(db, "select body->>'status' as status from p_completions "
                                   "where body->>'submission_id' = 's1' order by completion_offset")
            assert [c["status"] for c in comps] == ["NOT_SEQUENCED_TIMEOUT"], comps
            assert body.get("duplicate") is not True, \
                f"answered as a duplicate (taken as success) although it timed out unsequenced: {status} {body}"
            assert status == 202 and body["submission_id"] == "s1", (status, body)
            assert not await pg.query(db, "select 1 from p_inflight"), "an in-flight record is left behind"
        finally:
            monkeypatch.undo()
            await p1.stop()
    asyncio.run(main())
