"""The write-connection fence must name the main lock session by more than its server pid.

A pid is unique on one PostgreSQL server only. After a Patroni failover the old active's lock session lived on
pg1 and its reconnecting write pool lands on pg2, where the other replica's lock session may carry the same pid
(containers number their processes from a low start). A fence that checks "is the main lock granted to pid P"
then passes and both replicas write (invariant 1).

The test reproduces that on one server: p1b is active; passive p1a opens a writer (as its reconnecting write
pool of an earlier active period would) with its recorded lock-session pid made equal to p1b's lock pid. Its
backend start is p1a's own session's, so the session is another one: the fence must refuse it.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from typing import Any

import asyncpg
import pytest
from sut_support import TEST_TIMERS, PgServer, node_config, wait_until

from harness.sut.common.db import PassiveInstance
from harness.sut.participant.node import ParticipantNode

pytestmark = pytest.mark.integration

NO_SEQ = ("127.0.0.1:1",)   # no sequencer needed; the feed just keeps retrying
#: p1a tries the main lock once, then not again during the test: its election loop must not use the lock
#: connection while the test opens the writer on it (asyncpg allows one operation at a time per connection)
QUIET = replace(TEST_TIMERS, passive_check=120.0)


def test_a_write_connection_is_refused_when_only_the_lock_sessions_pid_matches(
        pg: PgServer, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        db = await pg.create_db("p1")
        act = ParticipantNode(node_config("participant", "p1b", "p1", pg.dsn(db), endpoints=NO_SEQ))
        old = ParticipantNode(node_config("participant", "p1a", "p1", pg.dsn(db), endpoints=NO_SEQ, timers=QUIET))
        try:
            await act.start()
            await wait_until(lambda: act.election.role == "active" and act.writer is not None, 10, "p1b active")
            await old.start()
            await wait_until(lambda: old.election.main is not None, 10, "p1a connected (passive)")
            assert act.election.main is not None and old.election.main is not None
            old_main = old.election.main
            await asyncio.sleep(1.0)   # p1a's one lock attempt (milliseconds) is over
            assert old.election.role == "passive"
            other_pid = act.election.main.get_server_pid()
            real = asyncpg.Connection.get_server_pid

            def pid(self: Any) -> int:   # p1a's lock session "has" p1b's lock pid (another server's numbering)
                return other_pid if self is old_main else real(self)
            monkeypatch.setattr(asyncpg.Connection, "get_server_pid", pid)
            writer = None
            with contextlib.suppress(PassiveInstance):
                writer = await asyncio.wait_for(old.election._open_writer(), 20)
            if writer is not None:
                await writer.close()
            rows = await pg.query(db, "select replica from ha_epochs order by epoch")
            assert [r["replica"] for r in rows] == ["p1b"], \
                "p1a's write connection passed the fence on a pid match alone and wrote next to p1b"
            assert writer is None, "p1a opened a writer while p1b holds the main lock"
        finally:
            monkeypatch.undo()
            await old.stop()
            await act.stop()
    asyncio.run(main())
