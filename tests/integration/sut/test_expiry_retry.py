"""A batch transaction that expired a request and then rolled back must expire it again on its retry.

``expire()`` caches the earliest pending deadline in ``ctx.deadline``, read inside the transaction after the
expired rows are deleted. If that attempt then fails on a transient error (``Writer.write`` retries the
transaction), the rows come back but the cache keeps the later deadline D2: the retry, and every batch until an
event passes D2, skip expiry. The request whose deadline D1 passed stays pending, and a late verdict sequenced
between D1 and D2 is applied here while the other participants expired it (invariants 3/4/6).

Mechanism-level, over the real writer and PostgreSQL: the first attempt of the batch fails with a transient
error (SQLSTATE 40001) right after it processed the batch, i.e. after ``expire()`` ran.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest
from sut_support import PgServer, node_config, wait_until

from harness.sut.participant import node as node_mod
from harness.sut.participant import store
from harness.sut.participant.node import ParticipantNode

pytestmark = pytest.mark.integration

NO_SEQ = ("127.0.0.1:1",)   # no sequencer: the feed delivers nothing, the test hands the batch over itself

D1, D2 = 1_000_000, 9_000_000   # µs: deadlines of the two pending requests (another participant's submissions)
TS = 5_000_000                  # the batch's event: past D1, before D2


def test_a_retried_batch_expires_what_its_rolled_back_attempt_expired(
        pg: PgServer, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        db = await pg.create_db("p1")
        p1 = ParticipantNode(node_config("participant", "p1a", "p1", pg.dsn(db), endpoints=NO_SEQ))
        try:
            await p1.start()
            await wait_until(lambda: p1.election.role == "active" and p1.writer is not None, 10, "p1a active")
            writer = p1.writer
            assert writer is not None
            for rid, deadline in (("r1", D1), ("r2", D2)):
                body = {"type": "request", "request_id": rid, "submitter": "p2", "informee_participants": ["p1"]}
                await pg.query(db, "insert into p_requests (request_id, ts, deadline, submitter, body) "
                               "values ($1, $2, $3, 'p2', $4)", rid, deadline - 500_000, deadline, json.dumps(body))
            p1.ctx.deadline = D1     # as computed when the requests were recorded

            attempts = 0
            real = node_mod.process_batch

            async def failing_once(conn: asyncpg.Connection, *args: Any) -> None:
                nonlocal attempts
                attempts += 1
                await real(conn, *args)
                if attempts == 1:    # expire() ran and moved the cache; now the attempt rolls back
                    raise asyncpg.exceptions.SerializationError("injected: could not serialize access")
            monkeypatch.setattr(node_mod, "process_batch", failing_once)

            batch = [{"counter": 1, "ts": TS, "payload_hash": "h1", "payload": {"type": "tick"}}]
            fx = store.Effects()
            await asyncio.wait_for(writer.write(p1._batch_tx(batch, fx, (1, TS, "h1")), what="process_events"), 30)
            assert attempts == 2, f"the batch ran {attempts} time(s): the injected failure was not retried"
            rows = await pg.query(db, "select request_id from p_requests order by request_id")
            assert [r["request_id"] for r in rows] == ["r2"], \
                f"r1's deadline passed at ts {TS} but it is still pending after the retry (ctx.deadline " \
                f"{p1.ctx.deadline}): a late verdict would be applied here alone"
            assert p1.ctx.deadline is not None and p1.ctx.deadline <= D2
        finally:
            monkeypatch.undo()
            await p1.stop()
    asyncio.run(main())
