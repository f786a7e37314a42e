"""The Redis ingest buffer: dedup, seq allocation and the stream append, one script per tick.

Frames from every connection are collected while the previous script call is in flight and
sent together as one `EVALSHA` of `ingest.lua` by a single flusher task. One call at a time
keeps the order in which frames were submitted (a connection's messages get seqs in the order
it sent them) and batches naturally under load: the busier the gateway, the larger each call.

A request whose (user, port) has no cached active session, or whose session state is not in
Redis, comes back unserved; the flusher resolves it in PostgreSQL and runs it again before it
takes the next batch, so order holds for that session. That path blocks ingest for one
PostgreSQL round trip, which is fine because it only happens on a session's first message and
after session state expired.

Two caps refuse new messages, rather than let memory grow, with `BufferFull` (the gateway
answers `overloaded` with `retry_after_ms`; nothing of a refused request is stored, and resending
it later is safe): `max_queued_ingests` bounds the requests waiting in this process for the
flusher, across all connections, and `max_buffered_messages` bounds the rows in Redis that no
writer has committed yet (PostgreSQL down or slow, no writer running). The second is counted
exactly in Redis itself (see ingest.lua and settle.lua), so service resumes by itself as soon
as the writers catch up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import msgspec
import redis.asyncio as aioredis

from storage import events, rows, sessions
from storage.background import background
from storage.dedup import content_hash
from storage.keys import Keys, script
from storage.outages import log_failure
from storage.rows import FLAGS, Flag, Reply
from storage.scripts import lua

log = logging.getLogger(__name__)

_HYDRATE_CHUNK = 1000
_COMPARE_AND_DELETE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_MAX_RESOLVE_ROUNDS = 3
# Most message text in one script call, counted in characters of the encoded rows (cheap to
# count; at most 4 bytes each in UTF-8, so a call stays under 16 MiB). The whole queue of a
# tick goes in one call, and a Lua script holds Redis for its whole run: thousands of
# connections each with frames in flight could otherwise send one call of gigabytes (past
# Redis's 512 MB argument limit) and stall every other client meanwhile. Calls are made one
# after another, in order.
MAX_CALL_BYTES = 4 * 1024 * 1024
_ARGUMENTS = msgspec.msgpack.Encoder()
_REPLIES = msgspec.msgpack.Decoder(list[list[Any]])


class BufferUnavailable(Exception):
    """Redis (or PostgreSQL, for a session lookup) failed. The request may or may not have
    been stored (a lost reply looks the same as a lost call); resending it is safe."""


class BufferFull(Exception):
    """Refused at a cap (see the module docstring): nothing of the request was stored."""


class BufferItem(msgspec.Struct, frozen=True, gc=False):
    """One message as the buffer needs it: already validated and encoded.

    This, `ItemOutcome` and `Outcome` are made for every message: msgspec Structs, built in C
    (about ten times faster than frozen dataclasses) and kept out of the cycle collector."""

    dedup_key: str
    content_hash: str
    id: str  # a fresh uuid, used only when the message is new
    row_tail: str  # rows.encode(...): the row minus what ingest.lua prepends


class ItemOutcome(msgspec.Struct, frozen=True, gc=False):
    id: str  # the message's id (the original one for duplicates and edits)
    seq: int
    flag: Flag


class Outcome(msgspec.Struct, frozen=True, gc=False):
    """What the script did with one request."""

    session_id: str
    entry_id: str | None  # the stream entry holding the stored rows; None if nothing stored
    items: list[ItemOutcome]


@dataclass(slots=True)
class _Request:
    user_id: str
    port: int
    ide_type: str
    notify: str
    items: Sequence[BufferItem]
    future: asyncio.Future[Outcome] = field(repr=False)


class IngestBuffer:
    """Submit messages from any coroutine; one flusher task talks to Redis."""

    def __init__(
        self,
        redis: aioredis.Redis,
        pool: asyncpg.Pool,
        keys: Keys,
        *,
        state_ttl_s: int,
        max_call_bytes: int = MAX_CALL_BYTES,
        max_queued_ingests: int = 0,
        max_buffered_messages: int = 0,
    ) -> None:
        """`max_queued_ingests` and `max_buffered_messages` are the two caps (see the module
        docstring); 0 means no cap, for tools and benchmarks that fill the buffer on purpose.
        The gateway always passes its settings' caps."""
        self._redis = redis
        self._pool = pool
        self._keys = keys
        self._state_ttl_s = state_ttl_s
        self._ingest = redis.register_script(script("ingest.lua"))
        self._hydrate = redis.register_script(lua("hydrate.lua"))
        # Bounded across all connections by `max_queued_ingests` (each connection also caps
        # its own frames in flight, Settings.max_inflight_frames). Overflow policy: `submit`
        # refuses the request at once with BufferFull, never blocking the caller (a
        # connection's reader) and never dropping a request already queued. The batch in
        # flight was taken from this queue, so at most twice the cap is held in memory.
        self._queue: list[_Request] = []
        self._max_queued = max_queued_ingests
        self._max_buffered = max_buffered_messages
        self._wake = asyncio.Event()
        self._max_call_bytes = max_call_bytes
        self.script_calls = 0  # ingest script calls made: for tests and benchmarks

    def submit(
        self,
        user_id: str,
        port: int,
        ide_type: str,
        items: Sequence[BufferItem],
        notify: str = "",
    ) -> asyncio.Future[Outcome]:
        """Queue the items; the future resolves once they are in Redis (or fails with
        BufferUnavailable, or BufferFull at the Redis buffer's cap).

        Synchronous on purpose: the order of `submit` calls is the order of seq allocation.
        Raises BufferFull at once when the queue is at its cap. A caller that loses interest
        cancels the future: a request not yet sent is then skipped, and its failure is never
        left unretrieved.
        """
        if self._max_queued and len(self._queue) >= self._max_queued:
            raise BufferFull(f"{len(self._queue)} ingest requests are already queued")
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queue.append(_Request(user_id, port, ide_type, notify, items, future))
        self._wake.set()
        return future

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[IngestBuffer]:
        """Run the flusher for the lifetime of the context; on exit, flush what is queued."""
        try:
            async with background(self._run(), "ingest-flusher"):
                yield self
        finally:
            if self._queue:
                await self._flush_safely(self._take())

    def _take(self) -> list[_Request]:
        batch, self._queue = self._queue, []
        self._wake.clear()
        return batch

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await self._flush_safely(self._take())

    async def _flush_safely(self, requests: list[_Request]) -> None:
        for batch in self._calls(requests):
            await self._flush_batch_safely(batch)

    def _calls(self, requests: list[_Request]) -> Iterator[list[_Request]]:
        """The requests cut, in order, into script calls of at most `max_call_bytes`
        characters of messages each (see MAX_CALL_BYTES; a larger request alone)."""
        batch: list[_Request] = []
        size = 0
        for request in requests:
            request_size = sum(len(i.row_tail) + len(i.dedup_key) for i in request.items)
            if batch and size + request_size > self._max_call_bytes:
                yield batch
                batch, size = [], 0
            batch.append(request)
            size += request_size
        if batch:
            yield batch

    async def _flush_batch_safely(self, batch: list[_Request]) -> None:
        try:
            await self._flush(batch)
        except Exception as exc:
            # Once per tick while Redis is down: one line then (see storage/outages.py).
            log_failure(log, f"ingest flush of {len(batch)} requests failed", exc)
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(BufferUnavailable(exc))

    async def _flush(self, batch: list[_Request]) -> None:
        todo = [r for r in batch if not r.future.cancelled()]
        for _ in range(_MAX_RESOLVE_ROUNDS):
            if not todo:
                return
            self.script_calls += 1
            replies = _REPLIES.decode(await self._ingest(args=[self._arguments(todo)]))
            retry: list[_Request] = []
            unresolved: dict[tuple[str, int], _Request] = {}
            unloaded: set[str] = set()
            for request, reply in zip(todo, replies, strict=True):
                status = reply[0]
                if status == Reply.OK:
                    if not request.future.done():
                        request.future.set_result(_outcome(reply))
                    continue
                if status == Reply.FULL:
                    if not request.future.done():
                        request.future.set_exception(
                            BufferFull(f"{reply[1]} messages are waiting for the writers")
                        )
                    continue
                retry.append(request)
                if status == Reply.NO_SESSION:
                    unresolved.setdefault((request.user_id, request.port), request)
                else:  # Reply.NOT_LOADED
                    unloaded.add(reply[1])
            # Distinct sessions resolve concurrently: one stall, not one per new session.
            await asyncio.gather(
                *(self._resolve_session(r) for r in unresolved.values()),
                *(self._load_state(uuid.UUID(sid)) for sid in unloaded),
            )
            todo = retry
        raise RuntimeError(f"session state for {len(todo)} requests could not be resolved")

    def _arguments(self, requests: list[_Request]) -> bytes:
        """The script's single MessagePack argument (see ingest.lua): one encoder call packs
        it all, where one Redis argument per field cost about 9 us per message to pack."""
        return _ARGUMENTS.encode(
            [
                self._keys.prefix,
                self._state_ttl_s,
                time.time_ns() // 1_000_000,
                [
                    [
                        r.user_id,
                        r.port,
                        r.notify,
                        [
                            value
                            for i in r.items
                            for value in (i.dedup_key, i.content_hash, i.id, i.row_tail)
                        ],
                    ]
                    for r in requests
                ],
                self._max_buffered,
            ]
        )

    async def _resolve_session(self, request: _Request) -> None:
        """Find or create the active session in PostgreSQL and cache it in Redis."""
        active_key = self._keys.active(request.user_id, request.port)
        async with self._pool.acquire() as conn:
            session, created = await sessions.find_or_create_active(
                conn, request.user_id, request.port, request.ide_type
            )
        if created:
            await self.init_state(session.id)
            await self._redis.publish(
                self._keys.user_channel(request.user_id),
                events.session_event("created", session, activated=True),
            )
        # NX: a rotation that already wrote a newer session id must win over this lookup.
        await self._redis.set(active_key, str(session.id), nx=True)

    async def forget_active(self, user_id: str, port: int, session_id: uuid.UUID) -> None:
        """The session is no longer active: drop the cached answer if it still names it (the
        port's next message then finds or creates its active session in PostgreSQL)."""
        await forget_active(self._redis, self._keys, user_id, port, session_id)

    async def set_active(self, user_id: str, port: int, session_id: uuid.UUID) -> None:
        """The session became the port's active one (a rotation or an unarchive)."""
        await self._redis.set(self._keys.active(user_id, port), str(session_id))

    async def init_state(self, session_id: uuid.UUID) -> None:
        """Give a brand-new session an empty dedup state (nothing to load from PostgreSQL)."""
        state = self._keys.session_state(str(session_id))
        await self._hydrate(keys=[state], args=[self._state_ttl_s, 0])

    async def _load_state(self, session_id: uuid.UUID) -> None:
        """Rebuild a session's dedup state from PostgreSQL plus rows still in the buffer."""
        sid = str(session_id)
        async with self._pool.acquire() as conn:
            stored = await sessions.stored_keys(conn, session_id)
        entries: dict[str, str] = {}
        last_seq = 0
        for key in stored:
            entries[key.dedup_key.hex] = _state_value(
                key.seq, key.id, key.content, int(key.created_at.timestamp() * 1000)
            )
            last_seq = max(last_seq, key.seq)
        buffered = await self._redis.zrange(self._keys.pending(sid), 0, -1)
        edited = await self._redis.hvals(self._keys.pending_edits(sid))  # type: ignore[misc]  # redis-py 7 types sync|async
        for raw in [*buffered, *edited]:  # edits last: their content hash wins
            row = rows.decode(raw)
            entries[row.dedup_key] = _state_value(
                row.seq, uuid.UUID(row.id), row.content, row.created_ms
            )
            last_seq = max(last_seq, row.seq)
        state = self._keys.session_state(sid)
        pairs = [value for pair in entries.items() for value in pair]
        for start in range(0, len(pairs), 2 * _HYDRATE_CHUNK):
            chunk = pairs[start : start + 2 * _HYDRATE_CHUNK]
            await self._hydrate(keys=[state], args=[self._state_ttl_s, "", *chunk])
        await self._hydrate(keys=[state], args=[self._state_ttl_s, last_seq])
        log.info("reloaded dedup state of session %s: %d messages", sid, len(entries))


async def forget_active(
    redis: aioredis.Redis, keys: Keys, user_id: str, port: int, session_id: uuid.UUID
) -> None:
    """Drop the cached active session of (user, port) if it still names `session_id`."""
    await redis.eval(_COMPARE_AND_DELETE, 1, keys.active(user_id, port), str(session_id))  # type: ignore[misc]  # redis-py 7 types sync|async


def _state_value(seq: int, message_id: uuid.UUID, content: str, created_ms: int) -> str:
    return f"{seq}|{message_id}|{content_hash(content)}|{created_ms}"


def _outcome(reply: list[Any]) -> Outcome:
    items = [
        ItemOutcome(reply[i + 1], reply[i], FLAGS[reply[i + 2]]) for i in range(3, len(reply), 3)
    ]
    return Outcome(reply[1], reply[2] or None, items)
