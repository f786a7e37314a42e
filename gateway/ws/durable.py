"""Waiting for `durable: true` frames to be committed in PostgreSQL.

A durable frame's stream entry carries `<channel>|<token>`; the writer that commits the entry
publishes the token on this process's channel, which the process's hub listens to.
Duplicates whose originals are still buffered have no entry of their own; for those the
waiter checks PostgreSQL, backing off, until they are there.

A notification published while the hub's pub/sub connection was down is lost. After a hub
reset, waiters of new messages therefore check PostgreSQL themselves (their rows are there
or not: a row is never half-committed). Waiters of edits keep waiting for their notification
(a row count cannot tell an edit's commit from its original's) and, if it was lost, end in
the durable timeout, which tells the client to resend: the resend is answered at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from gateway.ws.hub import Hub
from storage.outages import is_outage

log = logging.getLogger(__name__)


class PersistWaiter:
    """Futures keyed by token, resolved by the writers' notifications."""

    def __init__(self, hub: Hub, pool: asyncpg.Pool, channel: str) -> None:
        self._hub = hub
        self._pool = pool
        self.channel = channel
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self._reset = asyncio.Event()  # replaced by a new one after each hub reset

    def expect(self) -> tuple[str, asyncio.Future[None]]:
        """A new token (to put in the stream entry) and the future its commit resolves."""
        token = uuid.uuid4().hex
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        future.add_done_callback(lambda _: self._waiting.pop(token, None))
        return f"{self.channel}|{token}", future

    async def committed(self, session_id: uuid.UUID, seqs: list[int]) -> None:
        """Return once every (session, seq) is in PostgreSQL; the caller bounds the wait.

        Polls with backoff: only used for duplicates of still-buffered messages, which is rare.
        """
        delay = 0.005
        while True:
            try:
                async with self._pool.acquire() as conn:
                    found = await conn.fetchval(
                        "SELECT count(*) FROM messages WHERE session_id = $1 AND seq = ANY($2)",
                        session_id,
                        seqs,
                    )
            except Exception as exc:
                if not is_outage(exc):
                    raise
                found = None  # PostgreSQL is down: not committed yet, as far as we can tell
            if found == len(set(seqs)):
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)

    async def stored(
        self, persisted: asyncio.Future[None], session_id: uuid.UUID, seqs: list[int]
    ) -> None:
        """Return once the entry holding the new rows `seqs` is committed: on its writer's
        notification, or, if the hub was reset meanwhile (the notification may be lost),
        once PostgreSQL has the rows. The caller bounds the wait."""
        reset: asyncio.Future[Any] = asyncio.ensure_future(self._reset.wait())
        waiting: set[asyncio.Future[Any]] = {persisted, reset}
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            reset.cancel()
        if not persisted.done():
            await self.committed(session_id, seqs)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[PersistWaiter]:
        await self._hub.listen(self.channel, self._on_token, _token)
        self._hub.on_reset(self._on_reset)
        try:
            yield self
        finally:
            self._hub.off_reset(self._on_reset)
            await self._hub.unlisten(self.channel, self._on_token)

    def _on_reset(self) -> None:
        self._reset.set()
        self._reset = asyncio.Event()

    def _on_token(self, token: str) -> None:
        future = self._waiting.get(token)
        if future is not None and not future.done():
            future.set_result(None)


def _token(data: bytes) -> str:
    return data.decode()
