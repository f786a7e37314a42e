"""What the stream consumers (the batch writer and the search indexer) share: naming a
consumer, reading and claiming through a consumer group, telling a lost stream."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

# An entry id and its fields; the fields are None for a pending entry deleted since it was
# delivered (XREADGROUP of pending entries reports those).
Entry = tuple[bytes, dict[bytes, bytes]]


def consumer_name() -> str:
    """A consumer name unique across hosts, processes and restarts."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class GroupReader:
    """One consumer's view of a stream's consumer group: creating the group, reading new or
    own pending entries, claiming a dead consumer's. The writer and the indexer each use one;
    `count` sizes every read (they adapt it to their batches)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        stream: str,
        group: str,
        consumer: str,
        count: Callable[[], int],
    ) -> None:
        self._redis = redis
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self._count = count

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


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
