"""Active/passive election by PostgreSQL advisory locks, with writers-lock fencing and epoch evidence.

Why this shape (model, "Active/passive replicas"): the main lock lives exactly as long as one dedicated
connection, so a replica is active exactly while that connection is alive. Fencing: every write connection holds
the *writers* lock in shared mode; a replica becoming active first takes the writers lock exclusively, which only
succeeds once all write connections of the previous active are gone; a write connection that opens later (the old
active's pool reconnecting after a glitch it has not noticed yet) also checks that the main lock is still its own
replica's (``Election._open_writer``). Every committed write bumps its epoch's row in ``ha_epochs`` (DB clock),
which is the evidence the single-writer checker reads after a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

from harness.sut.common.config import NodeConfig
from harness.sut.common.db import (
    DB_NOW_US,
    LOCK_MAIN,
    LOCK_WRITERS,
    Backoff,
    PassiveInstance,
    StorageHealth,
    classify,
    db_name_of,
    ensure_schema,
    lock_id,
    retry,
)
from harness.sut.common.log import log

T = TypeVar("T")

EPOCH_DDL = """
create table if not exists ha_epochs (
  epoch bigserial primary key, replica text not null, start_us bigint not null, end_us bigint,
  first_write_us bigint, last_write_us bigint, writes bigint not null default 0,
  unfenced_writes bigint not null default 0);
"""

#: Keepalive settings on every connection that holds a lock (the main lock connection, and the write
#: connections that hold the writers lock shared) so that PostgreSQL notices a dead or partitioned replica in
#: ~15 s, not hours: only then are its locks released and can the other replica take over.
LOCK_KEEPALIVE = {"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "1", "tcp_keepalives_count": "5",
                  "client_connection_check_interval": "5s"}

CHECK_SQL = ("select count(*) > 0 from pg_locks where locktype = 'advisory' and classid = 0 "
             "and objid::bigint = $1 and objsubid = 1 and granted and pid = pg_backend_pid()")
#: the same check from another session: is the main lock ($1) granted to the lock session (pid $2, backend
#: start $3)? A pid alone names a session on one server only (see ``Election._open_writer``).
MAIN_HELD_SQL = ("select count(*) > 0 from pg_locks l join pg_stat_activity a on a.pid = l.pid "
                 "where l.locktype = 'advisory' and l.classid = 0 and l.objid::bigint = $1 and l.objsubid = 1 "
                 "and l.granted and l.pid = $2 and a.backend_start = $3")
#: the lock session's identity, read on the lock (main) connection itself
SESSION_START_SQL = "select backend_start from pg_stat_activity where pid = pg_backend_pid()"


@dataclass
class RoleHooks:
    """What the node does on transitions. Called serialized; an exception in one is a failed transition."""

    to_active: Callable[[Writer], Awaitable[None]]
    to_passive: Callable[[], Awaitable[None]]


async def finish_within(coro: Awaitable[Any], timeout: float) -> bool:
    """Run ``coro`` for at most ``timeout`` s; False if it had to be abandoned (cancelled, not awaited).

    Not ``asyncio.wait_for``: after its timeout that waits for the cancelled work to end, and work that swallows
    the cancellation - asyncpg releasing a connection whose cancel request cannot cross a blackholed link waits
    for it without a bound - would hang the caller there for good. Here the caller goes on; the abandoned task
    ends whenever its connection does (the writer's pool is terminated right after)."""
    task = asyncio.ensure_future(coro)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        _abandon(task)
        raise
    if task not in done:
        _abandon(task)
        return False
    task.result()
    return True


def _abandon(task: asyncio.Future[Any]) -> None:
    task.cancel()
    task.add_done_callback(lambda t: t.cancelled() or t.exception())   # its end is nobody's business


class TransitionFailed(Exception):
    """A role transition that did not complete: the model's answer is to exit and let the supervisor restart."""


class _PoolGuard:
    """Every connection a writer pool opened, and whether the writer is closed.

    Why: ``Pool.terminate`` drops the connections the pool holds, but a connection being opened at that moment
    (an acquire or the pool's min-size upkeep, stalled on a blackholed link) completes afterwards, runs ``init``
    (taking the writers lock shared) and is never closed: seen live, such an orphan blocked every later
    activation of the pair in "waiting for old writers". ``init`` refuses to lock on a closed writer's pool and
    ``close`` terminates whatever the pool ever handed out."""

    def __init__(self) -> None:
        self.closed = False
        self.conns: weakref.WeakSet[asyncpg.Connection] = weakref.WeakSet()

    def close(self) -> None:
        self.closed = True
        for conn in list(self.conns):
            if not conn.is_closed():
                conn.terminate()


def _needs_rollback(conn: asyncpg.Connection) -> bool:
    """Whether a failed transaction's connection is still open and inside the transaction.

    A lost connection (dropped mid-transaction, or right after COMMIT before the reply came) is handed back to its
    pool by asyncpg at once, and the pool's proxy then refuses every call with "released back to the pool": an
    InterfaceError that is not transient. Raised here it replaced the transient error of the lost connection, so
    the write was not retried but fatal (the process exited)."""
    try:
        return not conn.is_closed() and conn.is_in_transaction()
    except asyncpg.exceptions.InterfaceError:
        return False


class Writer:
    """The active replica's fenced write path: a pool whose connections each hold the writers lock (shared)."""

    def __init__(self, election: Election, pool: asyncpg.Pool, epoch: int, guard: _PoolGuard) -> None:
        self._election = election
        self.pool = pool
        self.epoch = epoch
        self.fenced = "no_fencing" not in election.cfg.bugs
        self._guard = guard     # closed with the writer; it knows every connection the pool opened
        # The epoch evidence update, literal (two integers, fixed for this writer): it can then share a
        # simple-query round trip with COMMIT, or become a CTE of a single-statement write without renumbering
        # that statement's parameters.
        self._epoch_update = (
            f"update ha_epochs set writes = writes + 1, unfenced_writes = unfenced_writes + "
            f"{0 if self.fenced else 1}, first_write_us = coalesce(first_write_us, {DB_NOW_US}), "
            f"last_write_us = {DB_NOW_US} where epoch = {int(epoch)}")

    @property
    def closed(self) -> bool:
        return self._guard.closed

    def usable(self) -> bool:
        return not self.closed and self._election.writer is self

    async def write(self, fn: Callable[[asyncpg.Connection], Awaitable[T]], what: str = "write") -> T:
        """Run ``fn`` in one transaction tagged with this epoch; transient errors retried while still active.

        Round trips: BEGIN, ``fn``'s statements, then the epoch update and COMMIT together (one simple query);
        every round trip crosses the fault proxy and pg-lb, so each saved one is CPU saved in three processes."""
        async def run(conn: asyncpg.Connection) -> T:
            await conn.execute("BEGIN")
            try:
                result = await fn(conn)
                await conn.execute(self._epoch_update + "; COMMIT")
            except BaseException:
                if _needs_rollback(conn):
                    try:
                        await conn.execute("ROLLBACK")
                    except (OSError, asyncpg.PostgresError, asyncpg.exceptions.InterfaceError):
                        # unusable: the pool opens a new one (which re-takes the lock); already released if lost
                        with contextlib.suppress(asyncpg.exceptions.InterfaceError):
                            conn.terminate()
                raise
            return result

        return await self._retried(run, what)

    async def write_one(self, sql: str, *args: Any, what: str = "write", fetch: str = "execute") -> Any:
        """One statement as its own transaction, with the epoch evidence update as a CTE of it: ONE round trip
        instead of four (BEGIN, statement, epoch update, COMMIT). Data-modifying CTEs always run to completion,
        so the epoch row is bumped in the same atomic commit as the write. ``fetch``: the connection method
        (``execute``, ``fetch``, ``fetchrow``, ``fetchval``)."""
        head = sql.lstrip()
        if head[:5].lower() == "with ":
            sql = f"with ha_epoch_tag as ({self._epoch_update}), {head[5:]}"
        else:
            sql = f"with ha_epoch_tag as ({self._epoch_update}) {head}"

        async def run(conn: asyncpg.Connection) -> Any:
            return await getattr(conn, fetch)(sql, *args)

        return await self._retried(run, what)

    async def _retried(self, run: Callable[[asyncpg.Connection], Awaitable[T]], what: str) -> T:
        cfg = self._election.cfg
        lost = (OSError, asyncpg.exceptions.InterfaceError, asyncpg.exceptions.InternalClientError)
        #: what a statement gets when its connection goes away under it: it may have committed (a server's ERROR
        #: reply is definite - rolled back - and is not among these)
        cut = (*lost, TimeoutError, asyncpg.exceptions.PostgresConnectionError)
        unknown = False   # an attempt lost its connection while running: it may have committed

        async def once() -> T:
            nonlocal unknown
            if not self.usable():
                raise PassiveInstance(what, maybe_committed=unknown)
            try:
                async with self.pool.acquire() as conn:
                    try:
                        return await run(conn)
                    except cut:
                        unknown = True
                        raise
            except lost:
                if not self.usable():      # the pool was terminated under this write: the replica is passive
                    raise PassiveInstance(what, maybe_committed=unknown) from None
                await self.pool.expire_connections()   # reconnect (and re-take the shared lock) next time
                raise

        try:
            return await retry(once, what=what, low=cfg.timers.db_retry_min, high=cfg.timers.db_retry_max,
                               retry_non_transient="retry_non_transient" in cfg.bugs,
                               health=self._election.storage, keep_going=self.usable)
        except PassiveInstance as exc:
            if unknown and not exc.maybe_committed:   # raised by retry's own keep_going check
                raise PassiveInstance(*exc.args, maybe_committed=True) from exc
            raise

    async def close(self) -> None:
        self._guard.close()     # first: a connection the pool is still opening no longer takes the lock
        self.pool.terminate()   # drop every write connection now: this is what releases the shared locks


class Election:
    """Runs the election loop and the serialized role state machine of one replica."""

    def __init__(self, cfg: NodeConfig, hooks: RoleHooks, *, extra_ddl: str = "") -> None:
        self.cfg = cfg
        self.hooks = hooks
        self.extra_ddl = extra_ddl
        self.db = db_name_of(cfg.db_dsn)
        self.main_id = lock_id(self.db, LOCK_MAIN)
        self.writers_id = lock_id(self.db, LOCK_WRITERS)
        self.role = "passive"
        self.writer: Writer | None = None
        self.main: asyncpg.Connection | None = None
        self.storage = StorageHealth()
        self.transitions = 0
        self._transition = asyncio.Lock()
        self._manual_passive_until = 0.0
        self._passive_requested = asyncio.Event()   # manual set_passive on the active: leave the active loop now
        # The active loop's next check is due now: set_passive, the lock connection dropped, or a write
        # connection found the main lock gone (``_open_writer``).
        self._wake = asyncio.Event()

    # --- connections -------------------------------------------------------------------------------------
    async def _connect(self, *, keepalive: bool) -> asyncpg.Connection:
        settings = dict(LOCK_KEEPALIVE) if keepalive else {}
        return await asyncpg.connect(self.cfg.db_dsn, timeout=self.cfg.timers.db_connect_timeout,
                                     command_timeout=self.cfg.timers.db_command_timeout,
                                     server_settings=settings)

    async def _close_main(self) -> None:
        conn, self.main = self.main, None
        if conn is not None:
            conn.terminate()

    async def lock_connection_settings(self) -> dict[str, str] | None:
        """The server-side keepalive settings of the lock connection (shows the ``no_lock_keepalive`` bug)."""
        if self.main is None:
            return None
        try:
            return {k: await asyncio.wait_for(self.main.fetchval(f"show {k}"), 2) for k in LOCK_KEEPALIVE}
        except Exception:
            return None

    async def init_schema(self) -> None:
        """Create the evidence table and the node's own tables (wait or fail fast per ``DB_STARTUP``)."""
        async def once() -> None:
            conn = await self._connect(keepalive=False)
            try:
                await ensure_schema(conn, self.db, EPOCH_DDL + self.extra_ddl)
            finally:
                await conn.close()
        if self.cfg.db_startup == "fail":
            await once()
        else:
            t = self.cfg.timers
            await retry(once, what="init_schema", low=t.db_retry_min, high=t.db_retry_max, health=self.storage)

    # --- the loop ---------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Forever: try to become active; while active, re-check the lock; on loss go passive and reconnect."""
        t = self.cfg.timers
        backoff = Backoff(t.reconnect_min, t.reconnect_max)
        grace = False
        while True:
            try:
                if self.main is None:
                    self.main = await self._connect(keepalive="no_lock_keepalive" not in self.cfg.bugs)
                    self.main.add_termination_listener(self._main_dropped)
                    backoff.reset()
                    self.storage.ok()
                if asyncio.get_running_loop().time() >= self._manual_passive_until and \
                        await self.main.fetchval("select pg_try_advisory_lock($1)", self.main_id):
                    reason = "lock lost"
                    if await self._acquire_writers():
                        await self._become_active()
                        reason = await self._active_loop()
                    # The lock goes first: the other replica may take the main lock at once (it then still
                    # waits for this replica's write connections, which the passive transition closes).
                    await self._close_main()
                    await self._become_passive(reason)
                    if self._passive_requested.is_set():
                        # the model's set_passive: the others get 2 x passive check period from the release on
                        self._passive_requested.clear()
                        self._manual_passive_until = (asyncio.get_running_loop().time()
                                                      + 2 * self.cfg.timers.passive_check)
                    grace = True          # the old active retries at once after reconnecting (grace)
                    continue
                grace = False
                await asyncio.sleep(t.passive_check * (1 + random.random() * t.lock_check_jitter))
            except asyncio.CancelledError:
                raise
            except PassiveInstance:
                await self._close_main()
                await self._become_passive("passive during transition")
            except TransitionFailed:
                raise
            except Exception as exc:
                if classify(exc, retry_non_transient="retry_non_transient" in self.cfg.bugs) == "fatal":
                    raise
                self.storage.failed(exc)
                await self._close_main()
                await self._become_passive(f"db error: {exc!r}")
                delay = backoff.next()
                log("lock_connection_failed", level="warning", error=repr(exc), retry_in=round(delay, 3),
                    grace=grace)
                await asyncio.sleep(delay)

    def _main_dropped(self, conn: asyncpg.Connection) -> None:
        """The lock connection closed under this replica (its link was cut, the server ended the session): the
        main lock went with it. The active checks now rather than at its next check, which may come after the
        other replica took over and opened its Ledger API: seen live in ``db-glitch-1s``, both replicas served
        for two probe samples (invariant 9). The connections that this replica closes itself are no longer
        ``self.main`` when this runs."""
        if conn is self.main:
            log("lock_connection_dropped", level="warning", role=self.role)
            self._wake.set()

    async def _check(self) -> bool:
        assert self.main is not None
        try:
            return bool(await asyncio.wait_for(self.main.fetchval(CHECK_SQL, self.main_id),
                                               self.cfg.timers.lock_check_timeout))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.storage.failed(exc)
            log("lock_check_failed", level="warning", error=repr(exc))
            return False

    async def _acquire_writers(self) -> bool:
        """Take the writers lock exclusively (old active's write connections gone), then release it."""
        if "no_fencing" in self.cfg.bugs:
            return True
        assert self.main is not None
        waited = 0
        while True:
            if await self.main.fetchval("select pg_try_advisory_lock($1)", self.writers_id):
                await self.main.execute("select pg_advisory_unlock($1)", self.writers_id)
                if waited:
                    log("writers_lock_acquired", attempts=waited)
                return True
            waited += 1
            if waited == 1:
                log("waiting_for_old_writers")
            await asyncio.sleep(self.cfg.timers.writers_retry)
            if not await self._check():
                return False

    async def _active_loop(self) -> str:
        """Re-check the lock periodically; returns why the replica stops being active."""
        t = self.cfg.timers
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), t.lock_check * (1 + random.random() * t.lock_check_jitter))
            self._wake.clear()
            if self._passive_requested.is_set():
                return "set_passive"
            if self.writer is not None and self.writer.closed:
                # Closed by its own fence (``_open_writer``): the main lock is granted to no session of this
                # replica any more - proof enough, and the check itself may hang until its timeout on a lock
                # connection whose session the server already ended.
                log("lock_lost", level="warning", how="a write connection found the main lock gone")
                return "lock lost"
            if not await self._check():
                log("lock_lost", level="warning")
                return "lock lost"
            self.storage.ok()

    async def _open_writer(self) -> Writer:
        """The fenced writer of this active period: a pool whose every connection, when it opens, takes the
        writers lock shared and then checks that the main lock is still granted to this replica's lock session.

        Why the check: the shared lock alone fences only while the old active's write connections *exist*. After
        a short DB glitch they are gone, so the other replica's exclusive take succeeds and it becomes active;
        but this replica notices its lost main lock only at its next check, and meanwhile its pool reconnects.
        The new connection's shared take is compatible with the new active's own shared holders, so without
        the check it committed (seen live: 138 ms after the new active's first write, invariant 1).

        Why it suffices: a new active takes the main lock *before* it takes the writers lock exclusively, and
        this connection takes the writers lock *before* it checks. If the check ran after the other replica
        took the main lock, it sees the lock granted to another session and the connection is refused (closed,
        PassiveInstance). If it ran before, the main lock was still held by this replica's session, so the
        other replica gets the main lock only later and its exclusive take then waits until this connection,
        which already holds the shared lock, is gone. A connection that passed the check is fenced as before.
        The lock session is named by its server pid *and* its backend start (both read on the lock connection when
        the writer opens). A pid alone names a session on one server only: after a DB failover (Patroni) this
        replica's lock session lived on the old primary while its reconnecting write pool lands on the new one,
        where the other replica's lock session may well have the same pid (containers number their processes
        from a low start) - the check would pass and both replicas write. A session on another server (or a
        later one on the same server that reuses the pid) has another backend start.

        Not chosen: checking on every write that this epoch is still the newest. The new active inserts its
        epoch row only after its exclusive take, so an old write in between would pass; and it would cost every
        write a round trip (or a CTE) where this costs one query per connection opened."""
        fenced = "no_fencing" not in self.cfg.bugs
        writers_id, main_id = self.writers_id, self.main_id
        assert self.main is not None
        main = self.main
        main_pid = main.get_server_pid()
        main_start = await main.fetchval(SESSION_START_SQL) if fenced else None
        guard = _PoolGuard()

        async def init(conn: asyncpg.Connection) -> None:
            if guard.closed:
                raise PassiveInstance("writer closed")
            guard.conns.add(conn)
            if fenced and not await conn.fetchval("select pg_try_advisory_lock_shared($1)", writers_id):
                raise PassiveInstance("writers lock held exclusively by another replica")
            if fenced and not await conn.fetchval(MAIN_HELD_SQL, main_id, main_pid, main_start):
                # This replica is no longer the active one: none of its write connections may write again
                # (closing the guard terminates them and makes the writer unusable), and the replica turns
                # passive now instead of at its next lock check.
                guard.close()
                self._wake.set()   # the active loop sees the writer closed and turns passive
                log("write_connection_fenced", level="warning", lock_session=main_pid,
                    lock_session_start=str(main_start))
                raise PassiveInstance("the main lock is no longer held by this replica's lock connection")
            if guard.closed:     # closed while the lock was being taken: close() may have missed this one
                conn.terminate()
                raise PassiveInstance("writer closed")

        async def keep_locks(conn: asyncpg.Connection) -> None:
            """asyncpg's default reset runs pg_advisory_unlock_all() on release: that would drop the fence."""

        keepalive = dict(LOCK_KEEPALIVE) if "no_lock_keepalive" not in self.cfg.bugs else {}
        t = self.cfg.timers
        pool = await asyncpg.create_pool(self.cfg.db_dsn, min_size=1, max_size=4, init=init, reset=keep_locks,
                                         timeout=t.db_connect_timeout, command_timeout=t.db_command_timeout,
                                         server_settings=keepalive)

        async def start_epoch() -> int:
            return int(await pool.fetchval(
                f"insert into ha_epochs(replica, start_us) values ($1, {DB_NOW_US}) returning epoch",
                self.cfg.replica))

        try:
            # a write like any other: transient errors are retried while the lock connection lives, fatal ones
            # end the transition (and the process)
            epoch = await retry(start_epoch, what="start_epoch", low=t.db_retry_min, high=t.db_retry_max,
                                retry_non_transient="retry_non_transient" in self.cfg.bugs, health=self.storage,
                                keep_going=lambda: main is not None and self.main is main and not main.is_closed())
        except BaseException:
            pool.terminate()
            guard.close()
            raise
        return Writer(self, pool, epoch, guard)

    async def _become_active(self) -> None:
        async with self._transition:
            writer = await self._open_writer()
            # The epoch start retries through outages while the lock connection only *looks* open; the server
            # may have dropped it meanwhile and let the other replica in. Serve only if the lock is still ours.
            if not await self._check():
                await writer.close()
                raise PassiveInstance("lost the main lock while becoming active")
            self.writer = writer
            self.role = "active"
            self.transitions += 1
            log("became_active", epoch=writer.epoch)
            try:
                await self.hooks.to_active(writer)
            except PassiveInstance:
                raise
            except Exception as exc:
                if classify(exc) == "transient":
                    raise PassiveInstance(f"transition failed: {exc!r}") from exc
                raise

    async def _become_passive(self, reason: str) -> None:
        async with self._transition:
            if self.role == "passive" and self.writer is None:
                return
            writer, self.writer = self.writer, None
            self.role = "passive"
            self.transitions += 1
            log("became_passive", reason=reason, epoch=writer.epoch if writer else None)
            if writer is not None:
                # The write connections go before the node's services stop: nothing may write any more
                # (``usable`` is already false), and asyncpg's release of a connection whose cancel request
                # cannot cross a blackholed link waits without a bound until its pool is terminated - every
                # service task stuck there would otherwise hold the transition up to its timeout.
                try:
                    await self._end_epoch(writer)
                finally:
                    await writer.close()
            await self._bounded(self.hooks.to_passive(), "to passive")

    async def _bounded(self, coro: Awaitable[None], what: str) -> None:
        """Run a transition step for at most ``transition_timeout``; past it the transition failed."""
        timeout = self.cfg.timers.transition_timeout
        if not await finish_within(coro, timeout):
            log("transition_failed", level="error", what=what, timeout=timeout)
            raise TransitionFailed(f"{what} did not finish within {timeout} s")

    async def _end_epoch(self, writer: Writer) -> None:
        """Best effort: record the epoch's end (it stays null if the DB is unreachable; last_write bounds it)."""
        with contextlib.suppress(Exception):
            await finish_within(writer.pool.execute(
                f"update ha_epochs set end_us = {DB_NOW_US} where epoch = $1", writer.epoch), 1.0)

    async def set_passive(self) -> None:
        """Manual ``set_passive``: give up the lock and don't re-take it for 2 x passive check period.

        The period counts from the release (an active replica leaves its active loop at once), so the other
        replica always gets two full passive check periods to take over.
        """
        self._manual_passive_until = asyncio.get_running_loop().time() + 2 * self.cfg.timers.passive_check
        if self.role == "active":
            self._passive_requested.set()
            self._wake.set()

    async def stop(self) -> None:
        await self._become_passive("stopping")
        await self._close_main()

    def status(self) -> dict[str, Any]:
        return {"role": self.role, "node": self.cfg.node, "replica": self.cfg.replica,
                "epoch": self.writer.epoch if self.writer else None, "transitions": self.transitions,
                "bugs": sorted(self.cfg.bugs)}


async def read_evidence(dsn: str, node: str, timeout: float = 5.0) -> dict[str, Any]:
    """The single-writer evidence of one logical node, read from its DB (works on any replica)."""
    conn = await asyncpg.connect(dsn, timeout=timeout)
    try:
        rows = await conn.fetch("select * from ha_epochs order by epoch")
    finally:
        await conn.close()
    return {"node": node, "epochs": [
        {"replica": r["replica"], "epoch": r["epoch"], "start": r["start_us"], "end": r["end_us"],
         "first_write": r["first_write_us"], "last_write": r["last_write_us"], "writes": r["writes"],
         "unfenced_writes": r["unfenced_writes"]} for r in rows]}
