"""Presence: a port is online while an `ide` connection that said `hello` with it is open.

State lives in Redis (see `storage/lua/presence.lua`) so every gateway process sees the same
answer. Each process re-announces its own connections every `heartbeat_s`, and each entry
expires `ttl_s` after its last announcement, so the ports of a process that died without
saying goodbye go offline within `ttl_s + heartbeat_s` (the sweep announces it). A clean or
abrupt client disconnect that the process sees goes offline at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable

import orjson
import redis.asyncio as aioredis

from storage.background import background
from storage.keys import Keys, script
from storage.outages import log_failure

log = logging.getLogger(__name__)


class Presence:
    def __init__(
        self, redis: aioredis.Redis, keys: Keys, *, ttl_s: float = 15.0, heartbeat_s: float = 5.0
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_ms = int(ttl_s * 1000)
        self._heartbeat_s = heartbeat_s
        self._script = redis.register_script(script("presence.lua"))
        self._local: dict[str, tuple[str, tuple[int, ...]]] = {}  # connection -> (user, ports)

    async def up(self, connection_id: str, user_id: str, ports: Iterable[int]) -> None:
        """The connection serves these ports (replacing what it said before)."""
        ports = tuple(sorted(set(ports)))
        previous = self._local.get(connection_id)
        if previous is not None:
            stale = [p for p in previous[1] if p not in ports]
            await self._call("down", [(previous[0], p, connection_id) for p in stale])
        self._local[connection_id] = (user_id, ports)
        await self._call("up", [(user_id, p, connection_id) for p in ports])

    async def down(self, connection_id: str) -> None:
        """The connection is gone."""
        known = self._local.pop(connection_id, None)
        if known is not None:
            await self._call("down", [(known[0], p, connection_id) for p in known[1]])

    async def online(self, user_id: str, ports: Iterable[int]) -> set[int]:
        """Which of the user's ports have a live IDE connection now."""
        ports = list(ports)
        now = time.time_ns() // 1_000_000
        pipe = self._redis.pipeline(transaction=False)
        for port in ports:
            pipe.zcount(self._keys.presence_port(user_id, port), f"({now}", "+inf")
        counts = await pipe.execute()
        return {port for port, count in zip(ports, counts, strict=True) if count}

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Presence]:
        try:
            async with background(self._heartbeat(), "presence-heartbeat"):
                yield self
        finally:
            # This process is going away: its connections' ports go offline now.
            for connection_id in list(self._local):
                with contextlib.suppress(Exception):
                    await self.down(connection_id)

    async def sweep(self) -> None:
        """Drop expired connections of dead processes, announcing ports that went offline."""
        await self._call("sweep", [])

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            try:
                entries = [
                    (user, port, conn)
                    for conn, (user, ports) in self._local.items()
                    for port in ports
                ]
                if entries:
                    await self._call("up", entries)
                await self.sweep()
            except Exception as exc:
                log_failure(log, "presence heartbeat failed; retrying", exc)

    async def _call(self, op: str, entries: list[tuple[str, int, str]]) -> None:
        if not entries and op != "sweep":
            return
        now = time.time_ns() // 1_000_000
        payload = orjson.dumps([op, self._keys.prefix, now, self._ttl_ms, entries])
        await self._script(args=[payload])
