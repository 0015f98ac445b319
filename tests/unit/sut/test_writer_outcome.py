"""A write whose outcome is unknown stays unknown when the replica then turns passive (seen live, slow-nodes on
correct nodes: p1a answered NODE_IS_PASSIVE_REPLICA - "not accepted" - for submissions whose claim had committed
before its connection was lost; the new active completed them OK: a refusal that was not one)."""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest

from harness.sut.common.db import PassiveInstance
from harness.sut.common.election import Writer

pytestmark = pytest.mark.unit


class _Pool:
    def __init__(self, writer: dict[str, Any]) -> None:
        self.state = writer

    @contextlib.asynccontextmanager
    async def acquire(self):  # type: ignore[no-untyped-def]
        yield object()

    async def expire_connections(self) -> None:
        pass


def _writer(active: dict[str, bool]) -> Writer:
    w = object.__new__(Writer)
    timers = SimpleNamespace(db_retry_min=0.001, db_retry_max=0.002)
    election = SimpleNamespace(cfg=SimpleNamespace(timers=timers, bugs=frozenset()), storage=None)
    w._election = election  # type: ignore[attr-defined]
    w.pool = _Pool({})  # type: ignore[assignment]
    w._guard = SimpleNamespace(closed=False)  # type: ignore[attr-defined]
    w.usable = lambda: active["yes"]  # type: ignore[method-assign]
    return w


def test_passive_before_anything_was_sent_is_a_plain_refusal() -> None:
    w = _writer({"yes": False})

    async def run(conn: Any) -> None:
        raise AssertionError("nothing may be sent")

    with pytest.raises(PassiveInstance) as err:
        asyncio.run(w._retried(run, "submit"))
    assert not getattr(err.value, "maybe_committed", False)


@pytest.mark.parametrize("lost", [ConnectionResetError("connection lost"), TimeoutError(),
                                  asyncpg.exceptions.ConnectionDoesNotExistError("closed in the middle of operation")],
                         ids=["reset", "timeout", "closed-mid-operation"])
def test_passive_after_a_write_whose_reply_was_lost_says_it_may_have_committed(lost: Exception) -> None:
    """Also asyncpg's ConnectionDoesNotExistError (a PostgresError, not an InterfaceError): what an in-flight query
    gets when the pool is terminated under it - seen live after the first fix (slow-nodes, correct nodes)."""
    active = {"yes": True}
    w = _writer(active)

    async def run(conn: Any) -> None:
        active["yes"] = False          # the statement went out; the connection dies before its reply
        raise lost

    with pytest.raises(PassiveInstance) as err:
        asyncio.run(w._retried(run, "submit"))
    assert getattr(err.value, "maybe_committed", False)
