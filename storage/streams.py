"""What the stream consumers (the batch writer and the search indexer) share: naming a
consumer, reading and claiming through a consumer group, telling a lost stream.

Taking over a dead consumer's entries: each consumer keeps a liveness key (`Keys.writer_alive`)
with a short TTL, refreshed by a heartbeat task of its own. A consumer whose key is gone (killed,
stopped, or cut from Redis for longer than the TTL) has its pending entries claimed by the next
live consumer that looks (`take_over_every_s`), within its TTL plus a sixth of it, and is then
removed from the group. Claiming by idle time (`claimed`) stays as the fallback for a consumer
that keeps no key. Claiming from a consumer that was in fact alive only gets its entries written
twice; both the writer and the indexer write idempotently and acknowledge only after their
commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from storage.background import background

log = logging.getLogger(__name__)

# An entry id and its fields; the fields are None for a pending entry deleted since it was
# delivered (XREADGROUP of pending entries reports those).
Entry = tuple[bytes, dict[bytes, bytes]]

# Claims for ARGV[3] up to ARGV[4] of the entries consumer ARGV[2] holds, only while ARGV[2]'s
# liveness key KEYS[2] is absent, and removes ARGV[2] from the group once that was all it held.
# One script, so it is atomic: two claimers never take the same entries from each other, and the
# consumer cannot read (and so hold) anything between the check and its removal. Returns false
# when the consumer is alive, else {ids it held, claimed entries}; XCLAIM drops deleted entries
# from the pending list without returning them (Redis 7+), so the ids tell which were deleted.
_TAKE_OVER = """
if redis.call('EXISTS', KEYS[2]) == 1 then return false end
local count = tonumber(ARGV[4])
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', count, ARGV[2])
local ids = {}
for i, entry in ipairs(pending) do ids[i] = entry[1] end
local claimed = {}
if #ids > 0 then
  claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, unpack(ids))
end
if #ids < count then
  redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return {ids, claimed}
"""


def consumer_name() -> str:
    """A consumer name unique across hosts, processes and restarts."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class GroupReader:
    """One consumer's view of a stream's consumer group: creating the group, reading new or
    own pending entries, keeping this consumer's liveness key, taking over a dead consumer's
    entries. The writer and the indexer each use one; `count` sizes every read (they adapt it
    to their batches); `alive_key` names a consumer's liveness key (`Keys.writer_alive`)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        stream: str,
        group: str,
        consumer: str,
        count: Callable[[], int],
        *,
        alive_key: Callable[[str], str],
    ) -> None:
        self._redis = redis
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self._count = count
        self._alive_key = alive_key
        self._take_over = redis.register_script(_TAKE_OVER)
        self._refresh_failing = False  # log a heartbeat failure once, not every beat

    async def create(self) -> bool:
        """Create the group at the start of the stream (`0`, creating the stream if needed),
        so entries appended before any consumer existed are read too; False if it existed."""
        try:
            await self._redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            return False
        return True

    async def read(self, *, own_pending: bool = False, block_ms: int | None = None) -> list[Entry]:
        """New entries (waiting up to `block_ms` if given), or with `own_pending` those
        delivered to this consumer earlier and not acknowledged (a restart's or a failed
        batch's), which never block."""
        response = await self._redis.xreadgroup(
            self.group,
            self.consumer,
            {self.stream: "0" if own_pending else ">"},
            count=self._count(),
            block=None if own_pending else block_ms,
        )
        return entries(response)

    async def claimed(self, min_idle_ms: int) -> AsyncIterator[tuple[list[Entry], list[bytes]]]:
        """Take over the entries pending longer than `min_idle_ms` on any consumer (one that
        died), a batch at a time, until none is left: yields each batch's entries and the
        ids of pending entries found deleted meanwhile (their fields are gone)."""
        cursor = "0-0"
        while True:
            reply = await self._redis.xautoclaim(
                self.stream,
                self.group,
                self.consumer,
                min_idle_time=min_idle_ms,
                start_id=cursor,
                count=self._count(),
            )
            cursor = text(reply[0])
            deleted = list(reply[2]) if len(reply) > 2 else []
            found = [e for e in reply[1] if e[1] is not None]
            if found or deleted:
                yield found, deleted
            if cursor == "0-0":
                return

    @contextlib.asynccontextmanager
    async def alive(self, ttl_ms: int) -> AsyncIterator[None]:
        """Keep this consumer's liveness key for the body of the `async with`: set now,
        refreshed every third of `ttl_ms` by a task of its own (so a batch stuck on a slow
        PostgreSQL does not make a live consumer look dead), deleted on exit so that what a
        stopped consumer left is taken over at once. Redis errors are logged, never raised: a
        consumer cut from Redis cannot read either, and one whose key lapsed meanwhile only
        gets entries it holds written twice. `ttl_ms` 0: no key; other consumers then take its
        entries right away (`taken_over`), so give 0 to all consumers of a group or to none."""
        if ttl_ms <= 0:
            yield
            return
        key = self._alive_key(self.consumer)
        await self._refresh(key, ttl_ms)
        try:
            async with background(self._heartbeat(key, ttl_ms), f"alive-{self.consumer}"):
                yield
        finally:
            with contextlib.suppress(Exception):  # Redis down: the key expires by itself
                await self._redis.delete(key)

    async def _heartbeat(self, key: str, ttl_ms: int) -> None:
        while True:
            await asyncio.sleep(ttl_ms / 3000)  # a timer: three beats per TTL
            await self._refresh(key, ttl_ms)

    async def _refresh(self, key: str, ttl_ms: int) -> None:
        try:
            await self._redis.set(key, b"1", px=ttl_ms)
        except Exception as exc:  # whatever failed, the heartbeat must go on beating
            if not self._refresh_failing:
                log.warning(
                    "consumer %s cannot refresh its liveness key (%s); if it stays down, "
                    "other consumers take over its pending entries",
                    self.consumer,
                    exc,
                )
            self._refresh_failing = True
            return
        if self._refresh_failing:
            log.info("consumer %s refreshes its liveness key again", self.consumer)
        self._refresh_failing = False

    async def dead_consumers(self) -> list[str]:
        """The group's other consumers whose liveness key is gone: dead, stopped, cut from
        Redis for longer than their TTL, or keeping none (liveness off, an older version)."""
        consumers = await self._redis.xinfo_consumers(self.stream, self.group)
        names = [text(c["name"]) for c in consumers if text(c["name"]) != self.consumer]
        if not names:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            pipe.exists(self._alive_key(name))
        found = await pipe.execute()
        return [name for name, exists in zip(names, found, strict=True) if not exists]

    async def taken_over(self) -> AsyncIterator[tuple[list[Entry], list[bytes]]]:
        """Claim every entry pending on a dead consumer (see `dead_consumers`), whatever its
        idle time, a batch at a time, removing each such consumer from the group once it holds
        nothing: yields each batch's entries and the ids of pending entries found deleted
        meanwhile. A consumer whose key is back (it was only cut off) keeps what it holds."""
        for dead in await self.dead_consumers():
            while True:
                count = self._count()
                reply = await self._take_over(
                    keys=[self.stream, self._alive_key(dead)],
                    args=[self.group, dead, self.consumer, count],
                )
                if reply is None:  # alive again
                    break
                ids, claimed = reply
                found: list[Entry] = [(e[0], _pairs(e[1])) for e in claimed]
                kept = {entry_id for entry_id, _ in found}
                deleted = [entry_id for entry_id in ids if entry_id not in kept]
                if found or deleted:
                    log.warning(
                        "%s took over %d pending entries of %s on %s: its liveness key is gone",
                        self.consumer,
                        len(ids),
                        dead,
                        self.stream,
                    )
                    yield found, deleted
                if len(ids) < count:  # that was all: the script removed the consumer
                    break


def take_over_every_s(ttl_ms: int) -> float:
    """How often a consumer looks for dead ones (`GroupReader.taken_over`): twice per
    heartbeat, so a killed consumer's entries wait at most its TTL plus a sixth of it."""
    return ttl_ms / 6000


def group_missing(exc: BaseException) -> bool:
    """The error says the stream key or its consumer group does not exist (any more): Redis
    lost its data, or the key was deleted. The remedy is `GroupReader.create` again."""
    if not isinstance(exc, ResponseError):
        return False
    message = str(exc)  # NOGROUP, "no such key", or UNBLOCKED "... no longer exists"
    return any(s in message for s in ("NOGROUP", "no such key", "no longer exists"))


def entries(response: Any) -> list[Entry]:
    """The entries of an XREADGROUP reply on one stream (redis-py gives a list or a dict)."""
    if not response:
        return []
    if isinstance(response, dict):
        return list(next(iter(response.values()))[0])
    return list(response[0][1])


def id_ms(entry_id: bytes | str) -> int:
    """The Unix milliseconds of a stream entry id (`<ms>-<n>`)."""
    return int(text(entry_id).partition("-")[0])


def _pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    """A stream entry's fields from a script reply's flat [field, value, ...] list."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
