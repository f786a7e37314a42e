"""The fan-out hub: one Redis pub/sub connection per process, shared by every local subscriber.

A channel is subscribed in Redis when its first local listener arrives and dropped when the
last one leaves. Each Redis message is decoded once per process, by the channel's `decode`
function (which also encodes the client frames), and the result is handed to every listener:
the same frame text goes into each connection's outbox.

`listen` returns only after Redis confirmed the subscription: a caller that then reads
storage can rely on every later publication reaching it (the catch-up-then-live handshake in
`gateway/live.py` depends on that).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from storage.background import background

log = logging.getLogger(__name__)

Listener = Callable[[Any], None]
_CONFIRM_TIMEOUT_S = 10.0
Decoder = Callable[[bytes], Any]


@dataclass(slots=True)
class _Channel:
    decode: Decoder
    listeners: set[Listener] = field(default_factory=set)


class Hub:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._pubsub = redis.pubsub()
        self._channels: dict[str, _Channel] = {}
        # Confirmations of (un)subscribe calls, in the order Redis answers them.
        self._confirmations: dict[str, list[asyncio.Future[None]]] = {}
        self._lock = asyncio.Lock()  # one (un)subscribe at a time: refcounts stay exact

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Hub]:
        # The pub/sub connection is opened by a first subscribe; a private channel keeps it
        # open even when no client listens, so the reader always has a connection to read.
        await self._pubsub.subscribe(f"__hub_keepalive__:{id(self)}")
        try:
            async with background(self._read(), "hub-reader"):
                yield self
        finally:
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    async def listen(self, channel: str, listener: Listener, decode: Decoder) -> None:
        """Deliver the channel's messages, decoded by `decode` (once for all listeners of the
        channel; every listener of a channel must pass the same decoder), to `listener`.
        Returns once Redis confirmed the subscription."""
        async with self._lock:
            entry = self._channels.get(channel)
            if entry is None:
                entry = self._channels[channel] = _Channel(decode)
                entry.listeners.add(listener)
                try:
                    await self._command("subscribe", channel)
                except BaseException:
                    del self._channels[channel]
                    raise
            else:
                entry.listeners.add(listener)

    async def unlisten(self, channel: str, listener: Listener) -> None:
        async with self._lock:
            entry = self._channels.get(channel)
            if entry is None or listener not in entry.listeners:
                return
            entry.listeners.discard(listener)
            if not entry.listeners:
                del self._channels[channel]
                await self._command("unsubscribe", channel)

    @property
    def channels(self) -> int:
        """Channels this process is subscribed to for its clients."""
        return len(self._channels)

    async def _command(self, kind: str, channel: str) -> None:
        confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._confirmations.setdefault(f"{kind}:{channel}", []).append(confirmed)
        if kind == "subscribe":
            await self._pubsub.subscribe(channel)
        else:
            await self._pubsub.unsubscribe(channel)
        # Bounded: a connection lost before Redis answered must not hold the lock forever.
        await asyncio.wait_for(confirmed, _CONFIRM_TIMEOUT_S)

    async def _read(self) -> None:
        while True:
            try:
                message = await self._pubsub.get_message(timeout=None)
            except Exception:
                # The connection dropped: redis-py reconnects and resubscribes on the next
                # read. Messages published meanwhile are lost to live feeds; clients recover
                # them with since_seq on their next subscribe.
                log.exception("pub/sub read failed; reconnecting")
                await asyncio.sleep(0.5)
                continue
            if message is None:
                continue
            kind = message["type"]
            channel = _text(message["channel"])
            if kind == "message":
                self._deliver(channel, message["data"])
            elif kind in ("subscribe", "unsubscribe"):
                waiting = self._confirmations.get(f"{kind}:{channel}")
                if waiting:
                    future = waiting.pop(0)
                    if not waiting:
                        del self._confirmations[f"{kind}:{channel}"]
                    if not future.done():
                        future.set_result(None)


    def _deliver(self, channel: str, data: bytes) -> None:
        entry = self._channels.get(channel)
        if entry is None:
            return
        try:
            decoded = entry.decode(data)
        except Exception:
            log.exception("could not decode a message on %s", channel)
            return
        for listener in list(entry.listeners):
            try:
                listener(decoded)
            except Exception:
                log.exception("a listener of %s failed", channel)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
