"""From parsed commands to stored messages: `Ingest` frames into the buffer, answered by `ack`.

The session lifecycle (rotate, rename, pin, archive, delete) is `gateway/lifecycle.py`.

`start_ingest` submits synchronously (so a connection's frames keep their order) and returns a
coroutine that produces the `ack` frame once the buffer, and for durable frames PostgreSQL,
has the messages. A buffer at one of its caps refuses the frame with `overloaded` and
`retry_after_ms`; nothing of it is stored, and the client resends it later (same ids).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine, Generator
from dataclasses import dataclass
from typing import Any

from gateway.errors import Overloaded
from gateway.metrics import CounterByLabel
from gateway.wire import ide_type_for_port
from gateway.ws import frames
from gateway.ws.durable import PersistWaiter
from gateway.ws.frames import Frame, ItemResult
from gateway.ws.protocol import Ingest, MessageItem
from storage import rows
from storage.buffer import BufferFull, BufferItem, BufferUnavailable, IngestBuffer, Outcome
from storage.ids import new_id_text
from storage.rows import Flag

# How long a client refused at a buffer cap should wait before resending: about what the
# writers need to commit a few batches, so a resend usually finds room.
FULL_RETRY_AFTER_MS = 1000


@dataclass(frozen=True, slots=True)
class Ingestor:
    buffer: IngestBuffer
    waiter: PersistWaiter
    durable_timeout_s: float
    acks: CounterByLabel  # the acks metric, by durability

    def start_ingest(self, user_id: str, command: Ingest) -> Coroutine[Any, Any, Frame]:
        """Submit the frame's items now; the returned coroutine yields its `ack` frame.

        Closing the coroutine unawaited (the client left) cancels what it would have waited
        for, so the buffer skips the frame if it has not sent it yet.
        """
        items = [buffer_item(user_id, command.port, item) for item in command.items]
        notify, persisted = self.waiter.expect() if command.durable else ("", None)
        ide_type = command.ide_type or ide_type_for_port(command.port)
        try:
            submitted = self.buffer.submit(user_id, command.port, ide_type, items, notify)
        except BufferFull as exc:
            if persisted is not None:
                persisted.cancel()
            return _refuse(exc)
        futures = (submitted,) if persisted is None else (submitted, persisted)
        return _PendingAck(self._ack(command, submitted, persisted), futures)

    async def _ack(
        self,
        command: Ingest,
        submitted: asyncio.Future[Outcome],
        persisted: asyncio.Future[None] | None,
    ) -> Frame:
        try:
            try:
                outcome = await submitted
            except BufferFull as exc:
                raise _overloaded(exc) from None
            except BufferUnavailable:
                raise Overloaded(
                    "storage is unavailable; the frame may not have been stored:"
                    " send it again (a resend is never stored twice)",
                    retry_after_ms=1000,
                ) from None
            if persisted is not None:
                await self._wait_persisted(outcome, persisted)
        finally:
            if persisted is not None:
                persisted.cancel()  # drops the waiter's entry if it never fired
        results = [
            ItemResult(
                id=o.id,
                client_id=item.client_id,
                seq=o.seq,
                duplicate=o.flag in (Flag.DUPLICATE, Flag.DUPLICATE_BUFFERED),
                updated=o.flag == Flag.UPDATED,
            )
            for item, o in zip(command.items, outcome.items, strict=True)
        ]
        durability = "persisted" if persisted is not None else "buffered"
        self.acks.inc(durability)
        return frames.ack(command.ref, outcome.session_id, command.port, results, durability)

    async def _wait_persisted(self, outcome: Outcome, persisted: asyncio.Future[None]) -> None:
        try:
            async with asyncio.timeout(self.durable_timeout_s):
                if outcome.entry_id is not None:
                    stored = [o.seq for o in outcome.items if o.flag == Flag.STORED]
                    if stored:  # its commit can be checked in PostgreSQL after a hub reset
                        await self.waiter.stored(persisted, uuid.UUID(outcome.session_id), stored)
                    else:  # edits only: the writer's notification alone says so
                        await persisted
                buffered = [o.seq for o in outcome.items if o.flag == Flag.DUPLICATE_BUFFERED]
                if buffered:
                    await self.waiter.committed(uuid.UUID(outcome.session_id), buffered)
        except TimeoutError:
            raise Overloaded(
                f"the messages are buffered but were not committed to PostgreSQL within"
                f" {self.durable_timeout_s:g} s (is a writer running?); they will be written"
                f" when the writer catches up",
                retry_after_ms=1000,
            ) from None


class _PendingAck(Coroutine[Any, Any, Frame]):
    """An `_ack` coroutine that owns the futures it awaits.

    A connection whose client left closes the reply coroutines it will never send, most of
    them never started, and closing a coroutine that never started runs none of its code. So
    closing this one cancels its futures itself. Without that, a buffer failure (a Redis
    outage) set an exception on futures nobody would await, and each one logged "Future
    exception was never retrieved" when collected, and a durable frame's waiter stayed
    registered until a commit that might never come.
    """

    __slots__ = ("_coroutine", "_futures")

    def __init__(
        self, coroutine: Coroutine[Any, Any, Frame], futures: tuple[asyncio.Future[Any], ...]
    ) -> None:
        self._coroutine = coroutine
        self._futures = futures

    def __await__(self) -> Generator[Any, None, Frame]:
        return self._coroutine.__await__()

    def send(self, value: Any) -> Any:
        return self._coroutine.send(value)

    def throw(self, *args: Any) -> Any:
        return self._coroutine.throw(*args)

    def close(self) -> None:
        for future in self._futures:
            future.cancel()  # no effect on a future already done
        self._coroutine.close()


def _overloaded(exc: BufferFull) -> Overloaded:
    return Overloaded(
        f"the gateway is overloaded ({exc}); nothing of this frame was stored: send it again later",
        retry_after_ms=FULL_RETRY_AFTER_MS,
    )


async def _refuse(exc: BufferFull) -> Frame:
    """The reply of a frame refused before it was queued."""
    raise _overloaded(exc)


def buffer_item(user_id: str, port: int, item: MessageItem) -> BufferItem:
    """The item as the ingest buffer takes it, with a fresh id and its row encoded once."""
    row_tail = rows.encode(
        user_id,
        port,
        client_id=item.client_id,
        dedup_key=item.dedup_key,
        role=item.role,
        content=item.content,
        content_type=item.content_type,
        source=item.source,
        client_ts=item.client_ts,
        metadata_json=item.metadata_json,
    )
    return BufferItem(item.dedup_key, item.content_hash, new_id_text(), row_tail)


def session_id_or_none(raw: str) -> uuid.UUID | None:
    """Parse a session id from a URL; None when it is not a uuid (answered as 404)."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        return None
