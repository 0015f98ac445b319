"""The participant's shared-DB state: dedup + in-flight submissions, pending requests, the indexed ledger.

Why all in the shared DB: whichever replica is active must be able to finish what the other started (publish
``NOT_SEQUENCED_TIMEOUT`` for a submission the dead replica acknowledged, resume the sequencer subscription at the
last processed counter, continue offsets). Every function here runs inside the caller's fenced transaction.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from harness.sut.participant.dedup import DedupEntry

PARTICIPANT_DDL = """
create table if not exists p_state (
  id int primary key, last_counter bigint, last_ts bigint, last_hash text,
  tx_offset bigint not null default 0, completion_offset bigint not null default 0);
insert into p_state (id) values (1) on conflict do nothing;
create table if not exists p_dedup (
  change_key text primary key, state text not null, submission_id text not null, request_id text,
  tx_offset bigint, accepted_at bigint);
create table if not exists p_inflight (
  request_id text primary key, change_key text not null, submission_id text not null,
  max_sequencing_time bigint not null, sequenced_ts bigint, request jsonb not null);
create table if not exists p_requests (
  request_id text primary key, ts bigint not null, deadline bigint not null, submitter text not null,
  body jsonb not null);
create table if not exists p_transactions (
  tx_offset bigint primary key, tx_id text not null unique, record_time bigint not null, body jsonb not null);
create table if not exists p_completions (
  completion_offset bigint primary key, record_time bigint, body jsonb not null);
"""


@dataclass
class Effects:
    """What a committed transaction produced, for the stream hub (and the ``ack_before_durable`` bug)."""

    completions: list[dict[str, Any]] = field(default_factory=list)
    transactions: list[dict[str, Any]] = field(default_factory=list)


async def next_offset(conn: asyncpg.Connection, column: str) -> int:
    return await conn.fetchval(f"update p_state set {column} = {column} + 1 where id = 1 returning {column}")


async def add_completion(conn: asyncpg.Connection, fx: Effects, body: dict[str, Any],
                         record_time: int | None) -> dict[str, Any]:
    off = await next_offset(conn, "completion_offset")
    body = {**body, "completion_offset": off, "record_time": record_time}
    await conn.execute("insert into p_completions (completion_offset, record_time, body) values ($1, $2, $3)",
                       off, record_time, json.dumps(body))
    fx.completions.append(body)
    return body


async def add_transaction(conn: asyncpg.Connection, fx: Effects, body: dict[str, Any], record_time: int) -> int:
    off = await next_offset(conn, "tx_offset")
    body = {**body, "offset": off, "record_time": record_time}
    await conn.execute("insert into p_transactions (tx_offset, tx_id, record_time, body) values ($1, $2, $3, $4)",
                       off, body["tx_id"], record_time, json.dumps(body))
    fx.transactions.append(body)
    return off


async def read_back_processed(conn: asyncpg.Connection, fx: Effects, counter: int, tx_after: int,
                              completion_after: int) -> bool:
    """Whether the sequencer events up to ``counter`` are processed already (an earlier attempt of the caller's
    transaction committed; its reply was lost). If so, ``fx`` gets every transaction and completion committed
    after the offsets ``tx_after`` / ``completion_after`` (what was published before that attempt), so that they
    can be published now; publishing an element twice is harmless (the hub keys them by offset, streams move on
    by offset). ``p_state`` is locked first, as every writer of offsets does."""
    st = await conn.fetchrow("select last_counter from p_state where id = 1 for update")
    if st["last_counter"] is None or st["last_counter"] < counter:
        return False
    fx.transactions.extend(json.loads(r["body"]) for r in await conn.fetch(
        "select body from p_transactions where tx_offset > $1 order by tx_offset", tx_after))
    fx.completions.extend(json.loads(r["body"]) for r in await conn.fetch(
        "select body from p_completions where completion_offset > $1 order by completion_offset", completion_after))
    return True


async def completions_after(conn: asyncpg.Connection, after: int, request_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The completions of these requests committed after completion offset ``after``, by request id (a range of
    the primary key: only what was committed since then is read)."""
    rows = await conn.fetch("select body from p_completions where completion_offset > $1 "
                            "and body->>'request_id' = any($2::text[]) order by completion_offset", after, request_ids)
    return {b["request_id"]: b for b in (json.loads(r["body"]) for r in rows)}


async def load_dedup(conn: asyncpg.Connection, key: str) -> DedupEntry | None:
    r = await conn.fetchrow("select * from p_dedup where change_key = $1 for update", key)
    if r is None:
        return None
    return DedupEntry(r["state"], r["submission_id"], r["tx_offset"], r["accepted_at"], r["request_id"])


async def claim_new(conn: asyncpg.Connection, key: str, submission_id: str, request_id: str) -> bool:
    """Insert an in-flight dedup row; False if a row for this change ID already exists (then decide)."""
    return bool(await conn.fetchval(
        "insert into p_dedup (change_key, state, submission_id, request_id) values ($1, 'inflight', $2, $3) "
        "on conflict do nothing returning true", key, submission_id, request_id))


async def claim_and_record(conn: asyncpg.Connection, request: dict[str, Any]) -> bool:
    """``claim_new`` + ``insert_inflight`` in one statement (one round trip): the in-flight row is written only if
    this change ID had no dedup row yet; False means a row exists (then the caller decides)."""
    return bool(await conn.fetchval(
        "with c as (insert into p_dedup (change_key, state, submission_id, request_id) "
        "values ($1, 'inflight', $2, $3) on conflict do nothing returning 1) "
        "insert into p_inflight (request_id, change_key, submission_id, max_sequencing_time, request) "
        "select $3, $1, $2, $4, $5 from c returning true",
        request["change_key"], request["submission_id"], request["request_id"], request["max_sequencing_time"],
        json.dumps(request)))


async def claim_and_record_many(fetch: Callable[..., Awaitable[list[asyncpg.Record]]],
                                requests: list[dict[str, Any]]) -> set[str]:
    """``claim_and_record`` for many submissions in one statement (group commit of the Ledger API): the request
    ids whose change ID had no dedup row yet, now claimed and in flight. Rows are claimed in list order, so of two
    submissions of one change ID in the same list the first wins and the second finds its row (then decide).
    ``fetch(sql, *args)`` runs the statement: ``conn.fetch`` inside a transaction, or a ``Writer.write_one`` that
    makes it its own fenced transaction.

    A request whose dedup row already carries its own request id counts as claimed too: an earlier run of this
    statement committed it and only the reply was lost (the writer retried on a new connection). Request ids are
    fresh per submission, so nobody else's row matches; the statement's snapshot predates the rows ``c`` inserts,
    so no request is returned twice. Without this the retry found its own row "in flight" and answered 409 with its
    own submission id, and the request was never sent."""
    rows = await fetch(
        "with u as (select * from unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[]) "
        "  with ordinality as u(k, s, r, m, q, n)), "
        "c as (insert into p_dedup (change_key, state, submission_id, request_id) "
        "  select k, 'inflight', s, r from u order by n on conflict do nothing returning request_id), "
        "i as (insert into p_inflight (request_id, change_key, submission_id, max_sequencing_time, request) "
        "  select u.r, u.k, u.s, u.m, u.q::jsonb from u join c on c.request_id = u.r returning request_id) "
        "select request_id from i "
        "union all select d.request_id from p_dedup d join u on d.change_key = u.k and d.request_id = u.r",
        [r["change_key"] for r in requests], [r["submission_id"] for r in requests],
        [r["request_id"] for r in requests], [r["max_sequencing_time"] for r in requests],
        [json.dumps(r) for r in requests])
    return {r["request_id"] for r in rows}


async def set_inflight(conn: asyncpg.Connection, key: str, submission_id: str, request_id: str) -> None:
    await conn.execute("update p_dedup set state = 'inflight', submission_id = $2, request_id = $3, "
                       "tx_offset = null, accepted_at = null where change_key = $1", key, submission_id, request_id)


async def set_accepted(conn: asyncpg.Connection, key: str, request_id: str, tx_offset: int, at: int) -> None:
    await conn.execute("update p_dedup set state = 'accepted', tx_offset = $3, accepted_at = $4 "
                       "where change_key = $1 and request_id = $2", key, request_id, tx_offset, at)


async def drop_inflight_dedup(conn: asyncpg.Connection, key: str, request_id: str) -> None:
    """A definite rejection frees the change ID (rejections don't deduplicate)."""
    await conn.execute("delete from p_dedup where change_key = $1 and request_id = $2 and state = 'inflight'",
                       key, request_id)


async def insert_inflight(conn: asyncpg.Connection, request: dict[str, Any]) -> None:
    await conn.execute(
        "insert into p_inflight (request_id, change_key, submission_id, max_sequencing_time, request) "
        "values ($1, $2, $3, $4, $5)", request["request_id"], request["change_key"], request["submission_id"],
        request["max_sequencing_time"], json.dumps(request))


async def next_deadline(conn: asyncpg.Connection | asyncpg.Pool) -> int | None:
    """Earliest sequencer time at which something may time out (request decision or max-sequencing-time)."""
    return await conn.fetchval(
        "select min(x) from (select min(deadline) as x from p_requests union all "
        "select min(max_sequencing_time) from p_inflight where sequenced_ts is null) s")
