"""Reading a session's messages with read-your-writes across the buffer and PostgreSQL.

An acked message is either still in the session's pending set in Redis or, once committed,
in PostgreSQL (the writer removes it from the pending set only after the commit); likewise an
acked edit is in the pending-edits hash until committed. Reading Redis first and PostgreSQL
second therefore never misses one: a message that leaves Redis between the two reads is
already committed when PostgreSQL is read. Buffered edits replace what the other two say.
A port's reads find its sessions with buffered rows through the port's buffered set, which
holds a session from the ingest call that buffers its row until the settle that leaves it
none (both atomic scripts): the same argument holds across all of the port's sessions.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson
import redis.asyncio as aioredis

from storage import rows
from storage.db import Connection
from storage.keys import Keys, script
from storage.rows import BufferedRow

_SELECT = (
    "SELECT id, seq, client_id, role, content, content_type, source, client_ts, created_at,"
    " edited_at, metadata FROM messages WHERE session_id = $1"
)


# Not frozen, like BufferedRow: a page builds up to a few hundred. Treat it as read-only.
@dataclass(slots=True)
class Message:
    """A message as stored, committed or still buffered; gateway/wire.py shapes it for
    clients. `metadata` is the decoded JSON object the client sent."""

    session_id: str
    id: str
    seq: int
    client_id: str | None
    role: str
    content: str
    content_type: str
    source: str
    timestamp: datetime | None  # the client's own, if it sent one
    created_at: datetime
    edited_at: datetime | None
    metadata: Any


@dataclass(frozen=True, slots=True)
class Page:
    messages: list[Message]
    has_more: bool


async def last_seq(conn: Connection, redis: aioredis.Redis, keys: Keys, session_id: str) -> int:
    """The session's newest seq: the allocation counter in Redis, else PostgreSQL's max."""
    counter = await redis.hget(keys.session_state(session_id), "#")  # type: ignore[misc]  # redis-py 7 types sync|async
    if counter is not None:
        return int(counter)
    found = await conn.fetchval(
        "SELECT max(seq) FROM messages WHERE session_id = $1", uuid.UUID(session_id)
    )
    return int(found or 0)


_SEQ_MAX = 2**63 - 1  # messages.seq is a bigint


async def session_messages(
    conn: Connection,
    redis: aioredis.Redis,
    keys: Keys,
    session_id: uuid.UUID,
    *,
    after_seq: int | None = None,
    before_seq: int | None = None,
    limit: int = 100,
) -> Page:
    """Messages with after_seq < seq < before_seq, in seq order, at most `limit`.

    With only `before_seq`, the page is the `limit` messages just before it (scrolling back);
    otherwise the `limit` messages just after `after_seq` (default: from the start).
    """
    backwards = before_seq is not None and after_seq is None
    low = after_seq if after_seq is not None else 0
    high = before_seq if before_seq is not None else None
    sid = str(session_id)
    # Redis first, then PostgreSQL: see the module docstring. One MULTI, so the new rows and
    # the edits are read at the same instant.
    pipe = redis.pipeline(transaction=True)
    if backwards:
        pipe.zrevrangebyscore(keys.pending(sid), f"({high}", f"({low}", start=0, num=limit + 1)
    else:
        upper = f"({high}" if high is not None else "+inf"
        pipe.zrangebyscore(keys.pending(sid), f"({low}", upper, start=0, num=limit + 1)
    pipe.hgetall(keys.pending_edits(sid))
    raw, raw_edits = await pipe.execute()
    buffered = {m.seq: m for m in map(_buffered_message, raw)}
    edits = [_buffered_message(row) for row in raw_edits.values()]
    # Always both bounds: PostgreSQL's generic plan (asyncpg prepares every statement, and the
    # server switches to the generic plan after five runs) estimates `seq > $2` alone at a
    # third of a session and reads every row past it through a bitmap scan plus a sort; a
    # range `seq > $2 AND seq < $3` it estimates small and walks the primary key in order.
    order = " ORDER BY seq DESC" if backwards else " ORDER BY seq"
    records = await conn.fetch(
        _SELECT + " AND seq > $2 AND seq < $3" + order + f" LIMIT {limit + 1}",
        session_id,
        low,
        high if high is not None else _SEQ_MAX,
    )
    merged = {r["seq"]: _stored_message(sid, r) for r in records}
    merged.update(buffered)
    for edit in edits:  # the newest version of a message still being written
        if edit.seq in merged:
            merged[edit.seq] = edit
    seqs = sorted(merged, reverse=backwards)
    page = [merged[s] for s in seqs[:limit]]
    if backwards:
        page.reverse()
    return Page(page, has_more=len(seqs) > limit)


async def session_pages(
    pool: asyncpg.Pool, redis: aioredis.Redis, keys: Keys, session_id: uuid.UUID, page: int
) -> AsyncIterator[list[Message]]:
    """Every message of the session in seq order, `page` at a time (keyset on seq, each page
    as `session_messages` reads it), a pooled connection held for the read of a page only:
    the export and the import's --verify walk sessions of any length with one page in
    memory. Pages are separate snapshots: a message edited meanwhile may come in either
    version."""
    after = 0
    while True:
        async with pool.acquire() as conn:
            found = await session_messages(
                conn, redis, keys, session_id, after_seq=after, limit=page
            )
        if found.messages:
            yield found.messages
        if not found.has_more or not found.messages:
            return
        after = found.messages[-1].seq


_PORT_PENDING = script("port_pending.lua")


async def port_messages(
    conn: Connection, redis: aioredis.Redis, keys: Keys, user_id: str, port: int, limit: int
) -> list[Message]:
    """The newest `limit` messages of the port across its (not deleted) sessions, newest
    first; buffered messages included (read your writes).

    The buffered rows come from every session in the port's buffered set (Keys.port_buffered),
    however many rotations ago it was active, so none is missed; a port whose rows are all
    committed costs one small script call and the one PostgreSQL query.
    """
    # Redis first, then PostgreSQL: see the module docstring. One script, so every session's
    # new rows and edits are read at the same instant.
    script = redis.register_script(_PORT_PENDING)
    reply = await script(keys=[keys.port_buffered(user_id, port)], args=[keys.prefix, limit])
    buffered = {
        sid.decode(): (rows, edits)
        for sid, rows, edits in zip(reply[::3], reply[1::3], reply[2::3], strict=True)
        if rows or edits
    }
    records = await conn.fetch(
        "SELECT m.session_id, m.id, m.seq, m.client_id, m.role, m.content, m.content_type,"
        " m.source, m.client_ts, m.created_at, m.edited_at, m.metadata"
        " FROM messages m JOIN sessions s ON s.id = m.session_id"
        " WHERE m.user_id = $1 AND m.port = $2 AND s.status <> 'deleted'"
        " ORDER BY m.created_at DESC, m.seq DESC LIMIT $3",
        user_id,
        port,
        limit,
    )
    if buffered:  # deleted sessions vanish from every read, buffered rows included
        deleted = await conn.fetch(
            "SELECT id FROM sessions WHERE id = ANY($1::uuid[]) AND status = 'deleted'",
            list(buffered),
        )
        for record in deleted:
            del buffered[str(record["id"])]
    merged: dict[tuple[str, int], Message] = {}
    for record in records:
        message = _stored_message(str(record["session_id"]), record)
        merged[(message.session_id, message.seq)] = message
    for sid, (new_rows, edits) in buffered.items():
        for raw in new_rows:
            message = _buffered_message(raw)
            merged[(sid, message.seq)] = message
        for raw in edits[1::2]:  # newest versions, of messages on this page only
            message = _buffered_message(raw)
            if (sid, message.seq) in merged:
                merged[(sid, message.seq)] = message
    newest = sorted(merged.values(), key=lambda m: (m.created_at, m.seq), reverse=True)
    return newest[:limit]


def _buffered_message(raw: Any) -> Message:
    return message_from_row(rows.decode(raw))


def message_from_row(row: BufferedRow) -> Message:
    """A buffered row as a message (live feeds decode rows from publications)."""
    return Message(
        row.session_id,
        row.id,
        row.seq,
        row.client_id,
        row.role,
        row.content,
        row.content_type,
        row.source,
        row.timestamp,
        row.created_at,
        row.edited_at,
        row.metadata,
    )


def _stored_message(session_id: str, record: Any) -> Message:
    return Message(
        session_id,
        str(record["id"]),
        record["seq"],
        record["client_id"],
        record["role"],
        record["content"],
        record["content_type"],
        record["source"],
        record["client_ts"],
        record["created_at"],
        record["edited_at"],
        orjson.loads(record["metadata"]),
    )
