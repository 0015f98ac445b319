"""Single-writer evidence from PostgreSQL's own statement log (evidence source ``pglog``).

Why a third source beside the nodes' ``/admin/evidence`` and the sampled session table (``pgsampler.py``): the
samples see a write only while its transaction is open (a millisecond or two, four snapshots a second), so a
short overlap of two writers slips between them. PostgreSQL can log *every* write statement with the session
that sent it: ``log_statement = 'mod'`` on the pairs' databases and a ``log_line_prefix`` naming the session.
Any PostgreSQL a deployment runs can be configured so (the reference image does it:
compose/images/postgres/entrypoint.sh and post-bootstrap.sh); it needs nothing from the nodes but their
``application_name``, which the reference DSNs set per replica as Canton's JDBC ``ApplicationName`` would.

Each logged write gives: the server's time (``%n``, epoch seconds with milliseconds; one host clock for every
PostgreSQL container), the replica (``%a``), the session (``%c``, unique per backend process). After a run the
harness reads the log lines of its window from every PostgreSQL member and records one ``pg_log_session`` event
per write session: replica, database, session, first and last write time, write count. The checker
(``harness.checkers.pglog``) then needs no sampling assumption: with correct fencing every write session of the
old active ends before the new active's first write.

What counts as a write: a logged statement that the server did not refuse (no ERROR of its session follows it)
whose text starts with INSERT, UPDATE, DELETE, MERGE or COPY, or a
WITH query that contains one of them. DDL (``CREATE TABLE IF NOT EXISTS`` at a node's start-up, which every
replica runs, active or not) is logged by ``mod`` too and is left out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

#: the ``log_line_prefix`` the reference PostgreSQL image sets (compose/images/postgres/entrypoint.sh)
LOG_LINE_PREFIX = "%n|%a|%c|"
_PREFIXED = re.compile(r"(?P<t>\d{9,}\.\d{3})\|(?P<app>[^|\s]*)\|(?P<session>[0-9a-f]+\.[0-9a-f]+)\|"
                       r"(?P<level>[A-Z]+):\s+(?P<rest>.*)$")
_STATEMENT = re.compile(r"^(?:statement|execute [^:]*):\s*(?P<sql>.*)$")
_WRITE = re.compile(r"^\s*(insert|update|delete|merge|copy)\b", re.IGNORECASE)
_CTE_WRITE = re.compile(r"^\s*with\b.*\b(insert\s+into|update\s+\S+\s+set|delete\s+from)\b", re.IGNORECASE)
#: a statement that ends in one of these did not write (``log_statement`` logs a statement before it runs: a
#: read-only standby refuses the write after it was logged)
_FAILED = {"ERROR", "FATAL", "PANIC"}


@dataclass
class WriteSession:
    replica: str
    session: str
    server: str
    first_ms: int
    last_ms: int
    writes: int

    def as_value(self, node: str) -> dict[str, Any]:
        return {"node": node, "replica": self.replica, "session": self.session, "server": self.server,
                "first_ms": self.first_ms, "last_ms": self.last_ms, "writes": self.writes}


def is_write(sql: str) -> bool:
    return bool(_WRITE.match(sql) or _CTE_WRITE.match(sql))


def parse(lines: Iterable[str], replicas: set[str], server: str,
          since_ms: int | None = None) -> dict[tuple[str, str], WriteSession]:
    """Write sessions of ``replicas`` in one server's log lines (from ``since_ms`` on), by (replica, session).

    A logged write counts once its session logs its next statement, or nothing more: if an ERROR (or FATAL)
    line of the session comes first, the server refused it and it is dropped."""
    out: dict[tuple[str, str], WriteSession] = {}
    pending: dict[tuple[str, str], int] = {}   # (replica, session) -> time of its logged, not yet settled write

    def settle(key: tuple[str, str]) -> None:
        t_ms = pending.pop(key, None)
        if t_ms is None:
            return
        ws = out.get(key)
        if ws is None:
            out[key] = WriteSession(key[0], key[1], server, t_ms, t_ms, 1)
        else:
            ws.first_ms, ws.last_ms = min(ws.first_ms, t_ms), max(ws.last_ms, t_ms)
            ws.writes += 1

    for line in lines:
        m = _PREFIXED.search(line)
        if m is None or m.group("app") not in replicas:
            continue
        key = (m.group("app"), m.group("session"))
        if m.group("level") in _FAILED:
            pending.pop(key, None)
            continue
        stmt = _STATEMENT.match(m.group("rest")) if m.group("level") == "LOG" else None
        if stmt is None:
            continue  # DETAIL, STATEMENT, HINT ... lines of the statement before
        settle(key)
        sec, ms = m.group("t").split(".")
        t_ms = int(sec) * 1000 + int(ms)
        if is_write(stmt.group("sql")) and (since_ms is None or t_ms >= since_ms):
            pending[key] = t_ms
    for key in list(pending):
        settle(key)
    return out


def sessions_from_logs(logs: dict[str, str], pairs: dict[str, list[str]],
                       since_ms: int | None = None) -> list[dict[str, Any]]:
    """``pg_log_session`` values from the log text of each PostgreSQL member (service -> text)."""
    node_of = {rep: node for node, reps in pairs.items() for rep in reps}
    found: dict[tuple[str, str, str], WriteSession] = {}
    for server, text in sorted(logs.items()):
        for key, ws in parse(text.splitlines(), set(node_of), server, since_ms).items():
            # a session lives on one server; the same key on two servers would be two sessions
            found[(server, *key)] = ws
    return [ws.as_value(node_of[ws.replica]) for ws in sorted(found.values(), key=lambda w: (w.first_ms, w.session))]
