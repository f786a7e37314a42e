"""What the stream consumers (the batch writer and the search indexer) share: naming a
consumer, creating a group that survives a lost stream, and reading XREADGROUP replies."""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

# An entry id and its fields; the fields are None for a pending entry deleted since it was
# delivered (XREADGROUP of pending entries reports those).
Entry = tuple[bytes, dict[bytes, bytes]]


def consumer_name() -> str:
    """A consumer name unique across hosts, processes and restarts."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


async def create_group(redis: aioredis.Redis, stream: str, group: str) -> bool:
    """Create `group` at the start of `stream` (`0`, creating the stream if needed), so
    entries appended before any consumer existed are read too; False if it existed."""
    try:
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
        return False
    return True


def group_missing(exc: BaseException) -> bool:
    """The error says the stream key or its consumer group does not exist (any more): Redis
    lost its data, or the key was deleted. The remedy is `create_group` again."""
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
