"""The naive design: one awaited transaction per message before its ack.

    python -m bench.naive_server --port 8001 --database-url postgresql://...

Each connection reads a frame, and for each of its messages looks the dedup key up, takes the
next seq from its session's row and INSERTs the message, in one transaction on a pooled
connection, then acks. Correct (idempotent, gap-free seqs), and bound by PostgreSQL round
trips and the session row's lock: what the gateway's Redis buffer and batch writer are for.
"""

from __future__ import annotations

import argparse
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
from starlette.applications import Starlette

from bench.baseline_wire import USER, Item, ack, answering_each_frame, items_of, serve, session_id

POOL_SIZE = 20  # asyncpg's default ceiling is 10; 20 serves 200 connections no worse
_EXISTING = "SELECT seq FROM messages WHERE session_id = $1 AND dedup_key = $2"
_INSERT = """
WITH next AS (
    UPDATE sessions SET message_count = message_count + 1, last_message_at = $7
    WHERE id = $1 RETURNING message_count
)
INSERT INTO messages (session_id, seq, id, user_id, port, client_id, dedup_key, role, content,
                      content_type, source, created_at)
SELECT $1, message_count, $2, $3, $4, $5, $6, $8, $9, 'text', 'ide_extraction', $7 FROM next
RETURNING seq
"""
_SESSION = """
INSERT INTO sessions (id, user_id, port, ide_type) VALUES ($1, $2, $3, 'unknown')
ON CONFLICT DO NOTHING
"""


def create_app(args: argparse.Namespace) -> Starlette:
    pool: list[asyncpg.Pool] = []
    known_sessions: set[str] = set()

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        pool.append(await asyncpg.create_pool(args.database_url, max_size=POOL_SIZE))
        yield
        await pool[0].close()

    async def store(port: int, item: Item) -> int:
        """The message's seq; negative when it was stored before."""
        sid = session_id(port)
        if sid not in known_sessions:
            # In its own transaction, and known only once committed: a connection that took
            # the session as known while its insert was still uncommitted would find no row
            # to take a seq from.
            await pool[0].execute(_SESSION, sid, USER, port)
            known_sessions.add(sid)
        async with pool[0].acquire() as conn, conn.transaction():
            seq: int | None = await conn.fetchval(_EXISTING, sid, item.dedup_key)
            if seq is not None:
                return -seq
            now = datetime.now(UTC)
            new: int = await conn.fetchval(
                _INSERT, sid, uuid.uuid4(), USER, port, item.client_id, item.dedup_key, now,
                item.role, item.content,
            )  # fmt: skip
            return new

    async def answer(frame: dict[str, Any]) -> str:
        port = frame["port"]
        seqs = [await store(port, item) for item in items_of(frame)]
        return ack(frame.get("ref"), port, seqs)

    return Starlette(routes=[answering_each_frame(answer)], lifespan=lifespan)


if __name__ == "__main__":
    serve(create_app, __doc__.split("\n\n")[0])
