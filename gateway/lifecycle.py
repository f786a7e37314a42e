"""The session lifecycle: rotate, rename, pin, archive, unarchive and delete, each with its
announcements, for the WebSocket (`session.new`), the HTTP API and `chat-gateway archive`;
and the ports' labels, announced the same way.

Every change is made in PostgreSQL first (it decides: one active session per user and port),
then in Redis (the ingest script's cached active session and the new session's dedup state),
then announced on the user's channel, in order, in one MULTI: session-list subscribers see
the events of one change together, and port subscribers follow the ones marked `activated`.
The ingest path announces the other two events there are: a port's first session (the
buffer's session lookup) and message counts (the writer, after each batch).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import redis.asyncio as aioredis

from gateway.wire import ide_type_for_port
from storage import events as user_events
from storage import sessions
from storage.buffer import IngestBuffer
from storage.keys import Keys

Event = tuple[user_events.SessionEventKind, sessions.Session | None]


@dataclass(frozen=True, slots=True)
class SessionLifecycle:
    pool: asyncpg.Pool
    redis: aioredis.Redis
    keys: Keys
    buffer: IngestBuffer  # a new session's empty dedup state, the cached active session

    async def rotate(
        self, user_id: str, port: int, title: str | None, ide_type: str | None = None
    ) -> tuple[sessions.Session | None, sessions.Session]:
        """Archive the port's active session and open a new one, in PostgreSQL then Redis."""
        async with self.pool.acquire() as conn:
            old, new = await sessions.rotate(
                conn, user_id, port, ide_type or ide_type_for_port(port), title
            )
        await self.buffer.init_state(new.id)
        await self.buffer.set_active(user_id, port, new.id)
        await self.announce(user_id, [("archived", old), ("created", new)], activated=new)
        return old, new

    async def change(
        self, user_id: str, session_id: uuid.UUID, change: sessions.Change
    ) -> sessions.Session | None:
        """Rename, pin, archive or unarchive; None if the session is not the user's."""
        async with self.pool.acquire() as conn:
            result = await sessions.update(conn, user_id, session_id, change)
        if result is None:
            return None
        session, displaced = result
        if change.status == "archived":
            await self.buffer.forget_active(user_id, session.port, session.id)
        elif change.status == "active":
            await self.buffer.set_active(user_id, session.port, session.id)
        event: user_events.SessionEventKind = (
            "archived" if change.status == "archived" else "updated"
        )
        activated = session if change.status == "active" else None
        await self.announce(
            user_id, [("archived", displaced), (event, session)], activated=activated
        )
        return session

    async def delete(self, user_id: str, session_id: uuid.UUID) -> bool:
        """Soft-delete; False if the session is not the user's."""
        async with self.pool.acquire() as conn:
            session = await sessions.soft_delete(conn, user_id, session_id)
        if session is None:
            return False
        await self.buffer.forget_active(user_id, session.port, session.id)
        await self.announce(user_id, [("deleted", session)])
        return True

    async def label_port(self, user_id: str, port: int, label: str | None) -> None:
        """Give the user's port a label (None takes it away), and announce it."""
        async with self.pool.acquire() as conn:
            await sessions.set_port_label(conn, user_id, port, label)
        await self.redis.publish(
            self.keys.user_channel(user_id), user_events.port_label_event(port, label)
        )

    async def archive_inactive(
        self, cutoff: datetime, batch: int, progress: Callable[[int], None] | None = None
    ) -> int:
        """Archive every active, unpinned session idle since `cutoff`, `batch` at a time (short
        transactions beside live traffic), announcing each; returns how many. `progress` gets
        the running count after each batch."""
        archived = 0
        while True:
            async with self.pool.acquire() as conn:
                page = await sessions.archive_inactive(conn, cutoff, batch)
            if not page:
                return archived
            for session in page:
                await self.buffer.forget_active(session.user_id, session.port, session.id)
                await self.announce(session.user_id, [("archived", session)])
            archived += len(page)
            if progress is not None:
                progress(archived)

    async def announce(
        self, user_id: str, events: list[Event], *, activated: sessions.Session | None = None
    ) -> None:
        """Publish session events, in order, to the user's session-list and port feeds;
        `activated` is the session these events made its port's active one, if any."""
        channel = self.keys.user_channel(user_id)
        pipe = self.redis.pipeline(transaction=True)
        for event, session in events:
            if session is not None:
                payload = user_events.session_event(event, session, activated=session is activated)
                pipe.publish(channel, payload)
        await pipe.execute()
