"""A write loop through pg-lb that records which writes were acknowledged, and when.

Used by ``bench db-failover`` and the DB failover integration test: after a failover, every acknowledged id must
still be in the table (with ``synchronous_mode``), and the gap between the kill and the first acknowledged write
after it is the failover time as a client sees it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import psycopg


@dataclass
class Ack:
    id: int
    t: float


@dataclass
class WriteLoop:
    conninfo: str
    table: str = "failover_writes"
    acks: list[Ack] = field(default_factory=list)
    errors: int = 0
    #: commits answered after their wait for synchronous replication was cancelled (not counted as acknowledged)
    unsafe_acks: int = 0
    _unsafe: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _next_id: int = 0

    def prepare(self) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(f"create table if not exists {self.table} "
                         "(id bigint primary key, at timestamptz default now())")
            row = conn.execute(f"select coalesce(max(id), 0) from {self.table}").fetchone()
            self._next_id = int(row[0]) + 1

    def start(self) -> WriteLoop:
        self.prepare()
        self._thread = threading.Thread(target=self._run, name="write-loop", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        conn: psycopg.Connection | None = None
        while not self._stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.conninfo, autocommit=True,
                                           options="-c statement_timeout=10000")
                    conn.add_notice_handler(self._notice)
                i = self._next_id
                self._unsafe = False
                conn.execute(f"insert into {self.table}(id) values (%s)", (i,))
                if self._unsafe:
                    # PostgreSQL answered the commit, but only after a cancel (here: statement_timeout) ended
                    # its wait for the synchronous standby: "committed locally, but might not have been
                    # replicated". An honest client does not count that as acknowledged.
                    self.unsafe_acks += 1
                else:
                    self.acks.append(Ack(i, time.monotonic()))
                self._next_id += 1
                time.sleep(0.01)
            except psycopg.Error:
                self.errors += 1
                self._next_id += 1  # an unacknowledged id is never reused: it may or may not have landed
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.05)
        if conn is not None:
            conn.close()

    def _notice(self, diag: psycopg.errors.Diagnostic) -> None:
        if "synchronous replication" in (diag.message_primary or ""):
            self._unsafe = True

    def first_ack_after(self, t: float) -> float | None:
        for a in self.acks:
            if a.t > t:
                return a.t
        return None

    def await_ack_after(self, t: float, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.first_ack_after(t)
            if got is not None:
                return got
            time.sleep(0.05)
        return None

    def lost(self) -> list[int]:
        """Acknowledged ids missing from the table now (read through pg-lb, from the current primary).

        Only acks recorded before the read began count: the loop keeps writing meanwhile, and a write acknowledged
        while the select runs is not in its snapshot without being lost (seen: 1 "lost" write that was there)."""
        acked = list(self.acks)
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            try:
                present = {r[0] for r in conn.execute(f"select id from {self.table}")}
            except psycopg.errors.UndefinedTable:
                # the table's creation itself was lost (seen: async replication, a standby promoted that never
                # received it): every acknowledged write went with it
                present = set()
        return [a.id for a in acked if a.id not in present]
