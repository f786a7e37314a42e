"""The hub: one pub/sub connection per process, channels refcounted, decoded once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis

from gateway.ws.hub import Hub


async def _numsub(redis: aioredis.Redis, channel: str) -> int:
    counts = await redis.pubsub_numsub(channel)
    return int(counts[0][1])


async def test_channel_is_subscribed_while_it_has_listeners(redis: aioredis.Redis) -> None:
    """Redis sees one subscription for a channel however many local listeners it has, from
    the first listener's arrival until the last one leaves."""
    channel = f"test:{uuid.uuid4().hex}"
    hub = Hub(redis)
    async with hub.running():
        first: list[object] = []
        second: list[object] = []
        assert await _numsub(redis, channel) == 0
        await hub.listen(channel, first.append, bytes)
        await hub.listen(channel, second.append, bytes)
        assert await _numsub(redis, channel) == 1 and hub.channels == 1
        await hub.unlisten(channel, first.append)
        assert await _numsub(redis, channel) == 1
        await hub.unlisten(channel, second.append)
        assert await _numsub(redis, channel) == 0 and hub.channels == 0


async def test_each_publication_is_decoded_once_for_all_listeners(
    redis: aioredis.Redis,
) -> None:
    """Ten listeners on a channel get the very same decoded object; the decoder ran once."""
    channel = f"test:{uuid.uuid4().hex}"
    decoded: list[object] = []

    def decode(data: bytes) -> object:
        value = object()
        decoded.append(value)
        return value

    received: list[list[object]] = [[] for _ in range(10)]
    all_in = asyncio.Event()

    def listener_for(inbox: list[object]) -> Callable[[object], None]:
        def listener(value: object) -> None:
            inbox.append(value)
            if all(received):
                all_in.set()

        return listener

    hub = Hub(redis)
    async with hub.running():
        listeners = [listener_for(inbox) for inbox in received]
        for listener in listeners:
            await hub.listen(channel, listener, decode)
        await redis.publish(channel, b"payload")
        await asyncio.wait_for(all_in.wait(), 10)
    assert len(decoded) == 1
    assert all(inbox == [decoded[0]] for inbox in received)


async def test_a_second_listener_with_another_decoder_is_refused(redis: aioredis.Redis) -> None:
    """A listener passing another decoder than the channel's raises ValueError and is not
    added; the first listener keeps getting the values its decoder made."""
    channel = f"test:{uuid.uuid4().hex}"
    first: list[object] = []
    other: list[object] = []
    got_one = asyncio.Event()

    def listener(value: object) -> None:
        first.append(value)
        got_one.set()

    hub = Hub(redis)
    async with hub.running():
        await hub.listen(channel, listener, bytes)
        with pytest.raises(ValueError, match="decoded by"):
            await hub.listen(channel, other.append, bytearray)
        await hub.listen(channel, first.append, bytes)  # the same decoder is still welcome
        await hub.unlisten(channel, first.append)
        await redis.publish(channel, b"payload")
        await asyncio.wait_for(got_one.wait(), 10)
    assert first == [b"payload"] and type(first[0]) is bytes
    assert other == []
