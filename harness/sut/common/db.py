"""PostgreSQL access: SQLSTATE classification and retry-forever of transient errors.

Why: the model says every DB-backed component tolerates temporary outages (processing halts and resumes without a
restart) while any other error is fatal. Classification is a pure function so it is unit-tested; ``retry`` is the
single place where the backoff lives. The ``retry_non_transient`` bug switch makes every error transient.
"""

from __future__ import annotations

import asyncio
import random
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import asyncpg

from harness.sut.common.log import log

T = TypeVar("T")
Kind = Literal["transient", "fatal"]

TRANSIENT_CODES = frozenset({"40001", "40P01", "25006"})

#: Microseconds on the DB server's clock (evidence timestamps must all come from one clock).
DB_NOW_US = "(extract(epoch from clock_timestamp()) * 1000000)::bigint"


class PassiveInstance(Exception):
    """A write was attempted by a replica that is not (or no longer) the active one: never silently applied.

    ``maybe_committed``: an earlier attempt of the same write lost its connection after the statement went out, so
    it may have committed before the replica turned passive: its outcome is unknown, not a refusal."""

    def __init__(self, *args: object, maybe_committed: bool = False) -> None:
        super().__init__(*args)
        self.maybe_committed = maybe_committed


class FatalDbError(Exception):
    """A non-transient DB error: the node must stop (the supervisor restarts it)."""


def sqlstate_kind(code: str | None) -> Kind | None:
    """Classify a SQLSTATE per the model: 08*, 40001, 40P01, 25006, 57P* except 57P04, 53* are transient."""
    if not code:
        return None
    if code in TRANSIENT_CODES or code.startswith(("08", "53")):
        return "transient"
    if code.startswith("57P"):
        return "fatal" if code == "57P04" else "transient"
    return "fatal"


def classify(exc: BaseException, *, retry_non_transient: bool = False) -> Kind:
    """Transient or fatal, from the SQLSTATE if there is one, else from the exception type."""
    if retry_non_transient:
        return "transient"
    kind = sqlstate_kind(getattr(exc, "sqlstate", None))
    if kind is not None:
        return kind
    if isinstance(exc, (OSError, asyncio.TimeoutError, TimeoutError, ConnectionError,
                        asyncpg.exceptions.ConnectionDoesNotExistError,
                        asyncpg.exceptions.ConnectionFailureError)):
        return "transient"
    if isinstance(exc, asyncpg.exceptions.InternalClientError):
        return "transient"   # a connection left mid-protocol (e.g. by a server restart): drop it and retry
    if isinstance(exc, asyncpg.exceptions.InterfaceError) and (
            "connection is closed" in str(exc) or "connection was closed" in str(exc)
            or "another operation is in progress" in str(exc) or "pool is closing" in str(exc)
            or "pool is closed" in str(exc)):
        return "transient"
    return "fatal"


@dataclass
class Backoff:
    """Capped exponential backoff with jitter."""

    low: float
    high: float
    current: float = 0.0

    def next(self) -> float:
        self.current = self.low if self.current == 0 else min(self.high, self.current * 2)
        return self.current * (0.8 + 0.4 * random.random())

    def reset(self) -> None:
        self.current = 0.0


class StorageHealth:
    """Tracks whether storage works, so readiness/liveness can reflect a failing DB (``failed-to-fatal``)."""

    def __init__(self) -> None:
        self.failing_since: float | None = None
        self.last_error: str | None = None

    def ok(self) -> None:
        self.failing_since = None

    def failed(self, exc: BaseException) -> None:
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        self.last_error = f"{type(exc).__name__}: {exc}"

    def failing_for(self) -> float:
        return 0.0 if self.failing_since is None else time.monotonic() - self.failing_since


async def retry(op: Callable[[], Awaitable[T]], *, what: str, low: float, high: float,
                retry_non_transient: bool = False, health: StorageHealth | None = None,
                keep_going: Callable[[], bool] | None = None) -> T:
    """Run ``op`` until it succeeds; transient errors are retried forever, fatal ones raise ``FatalDbError``.

    ``keep_going`` lets a caller abort (e.g. a replica that turned passive raises ``PassiveInstance``).
    """
    backoff = Backoff(low, high)
    attempt = 0
    while True:
        if keep_going is not None and not keep_going():
            raise PassiveInstance(what)
        try:
            result = await op()
        except (PassiveInstance, asyncio.CancelledError):
            raise
        except Exception as exc:
            kind = classify(exc, retry_non_transient=retry_non_transient)
            if health is not None:
                health.failed(exc)
            if kind == "fatal":
                log("db_fatal", level="error", what=what, error=repr(exc),
                    sqlstate=getattr(exc, "sqlstate", None))
                raise FatalDbError(f"{what}: {exc!r}") from exc
            attempt += 1
            delay = backoff.next()
            if attempt == 1 or attempt % 20 == 0:
                log("db_retry", level="warning", what=what, attempt=attempt, error=repr(exc),
                    sqlstate=getattr(exc, "sqlstate", None), delay=round(delay, 3))
            await asyncio.sleep(delay)
            continue
        if health is not None:
            health.ok()
        return result


def lock_id(db_name: str, purpose: int) -> int:
    """Advisory lock id from the database name plus a per-purpose counter, so nodes sharing a server don't clash.

    Kept below 2**31 so that ``pg_locks`` shows it as ``classid=0, objid=<id>``.
    """
    return (zlib.crc32(db_name.encode()) % (1 << 24)) * 128 + purpose


LOCK_MAIN = 0
LOCK_WRITERS = 1
LOCK_SCHEMA = 2
LOCK_SEQ_INDEX_BASE = 16    # + instance index


async def ensure_schema(conn: asyncpg.Connection, db_name: str, ddl: str) -> None:
    """Create tables idempotently under an advisory lock (several replicas start at once)."""
    async with conn.transaction():
        await conn.execute("select pg_advisory_xact_lock($1)", lock_id(db_name, LOCK_SCHEMA))
        await conn.execute(ddl)


def db_name_of(dsn: str) -> str:
    """The database name of a DSN (URL or key=value form), used to derive lock ids."""
    if "://" in dsn:
        tail = dsn.split("://", 1)[1].split("?", 1)[0]
        return tail.rsplit("/", 1)[1] if "/" in tail else ""
    for part in dsn.split():
        k, _, v = part.partition("=")
        if k == "dbname":
            return v
    return ""
