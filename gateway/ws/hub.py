"""The fan-out hub: one Redis pub/sub connection per process, shared by every local subscriber.

A channel is subscribed in Redis when its first local listener arrives and dropped when the
last one leaves. Each Redis message is decoded once per process, by the channel's `decode`
function (which also encodes the client frames), and the result is handed to every listener:
the same frame text goes into each connection's outbox.

`listen` returns only after Redis confirmed the subscription: a caller that then reads
storage can rely on every later publication reaching it (the catch-up-then-live handshake in
`gateway/ws/live.py` depends on that).

**Resets.** Redis pub/sub is fire-and-forget: while the connection is down (a Redis restart
or failover, `CLIENT KILL`, Redis cutting a hub that fell behind its output-buffer limit),
publications are lost, and redis-py reconnects and resubscribes without a word. So the hub
watches its own connection: on every reconnect it sends a PING behind redis-py's SUBSCRIBE
commands, and when the PONG comes back (Redis answers in order, so every channel is
subscribed again by then) it calls each `on_reset` callback. A callback must assume it missed
anything published before that moment and recover it from storage, exactly like a catch-up:
publications after the PONG reach it.
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
ResetCallback = Callable[[], None]
_CONFIRM_TIMEOUT_S = 10.0
Decoder = Callable[[bytes], Any]
# Backoff between failed reads while Redis is unreachable: doubling, capped, so a long
# outage costs a retry every few seconds, not a busy loop, and recovery stays prompt.
_RETRY_FIRST_S = 0.1
_RETRY_MAX_S = 2.0


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
        self._on_reset: set[ResetCallback] = set()
        self._reconnected = False  # set by the connect callback, cleared by the reader
        self.resets = 0  # reconnects seen and announced (tests and metrics)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Hub]:
        # The pub/sub connection is opened by a first subscribe; a private channel keeps it
        # open even when no client listens, so the reader always has a connection to read.
        await self._pubsub.subscribe(f"__hub_keepalive__:{id(self)}")
        connection = self._pubsub.connection
        assert connection is not None  # subscribe() connected it
        # Runs after redis-py's own resubscribe callback (registered first), on every later
        # connect of this connection. redis-py keeps a weak reference: the hub owns it.
        connection.register_connect_callback(self._connected)
        try:
            async with background(self._read(), "hub-reader"):
                yield self
        finally:
            connection.deregister_connect_callback(self._connected)
            await self._pubsub.aclose()

    def on_reset(self, callback: ResetCallback) -> None:
        """Call `callback` after every reconnect of the pub/sub connection, once every channel
        is subscribed again (see the module docstring)."""
        self._on_reset.add(callback)

    def off_reset(self, callback: ResetCallback) -> None:
        self._on_reset.discard(callback)

    async def listen(self, channel: str, listener: Listener, decode: Decoder) -> None:
        """Deliver the channel's messages, decoded by `decode` (once for all listeners of the
        channel), to `listener`. Returns once Redis confirmed the subscription.

        Every listener of a channel must pass the same decoder: one decoded value is handed
        to all of them, so a listener with another decoder would get values it cannot read.
        Passing another one raises `ValueError` (and adds nothing)."""
        async with self._lock:
            entry = self._channels.get(channel)
            if entry is not None and entry.decode != decode:
                raise ValueError(
                    f"channel {channel!r} is decoded by {entry.decode!r}; "
                    f"a listener cannot ask for {decode!r}"
                )
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

    def _connected(self, _connection: object) -> None:
        """redis-py's connect callback: the connection was (re)established."""
        self._reconnected = True

    async def _read(self) -> None:
        failures = 0
        while True:
            try:
                if self._reconnected:
                    self._reconnected = False
                    # Answered after the SUBSCRIBEs redis-py just sent on this connection.
                    await self._pubsub.ping(_RESET_MARK)
                message = await self._pubsub.get_message(timeout=None)
            except Exception as exc:
                # The connection dropped or Redis is down: the next read reconnects (and
                # resubscribes); announced as a reset once it is back.
                delay = min(_RETRY_FIRST_S * 2**failures, _RETRY_MAX_S)
                if failures == 0:
                    log.warning("pub/sub connection lost (%s); reconnecting", exc)
                failures += 1
                await asyncio.sleep(delay)  # backoff before the next attempt, not a sync
                continue
            if failures:
                log.info("pub/sub connection back after %d failed reads", failures)
                failures = 0
            if message is None:
                continue
            kind = message["type"]
            if kind == "pong":
                if _text(message["data"] or b"") == _RESET_MARK:
                    self._reset()
                continue
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

    def _reset(self) -> None:
        self.resets += 1
        log.warning(
            "pub/sub connection was reset: %d subscribers recover from storage",
            len(self._on_reset),
        )
        for callback in list(self._on_reset):
            try:
                callback()
            except Exception:
                log.exception("a reset callback failed")

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


_RESET_MARK = "hub-reset"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
