"""Python and Lua agree on key names: the scripts touch exactly the keys `Keys` names."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import asyncpg
import redis.asyncio as aioredis

from gateway.ws.ingest import buffer_item
from gateway.ws.presence import Presence
from gateway.ws.protocol import MessageItem
from storage.buffer import IngestBuffer, Outcome
from storage.dedup import content_hash, dedup_key
from storage.keys import TEMPLATES, Keys, lua_prelude
from storage.messages import port_messages
from storage.rows import Flag
from storage.writer import BatchWriter

PORT = 9231


def _item(client_id: str, content: str) -> MessageItem:
    return MessageItem(
        client_id=client_id,
        role="user",
        content=content,
        content_type="text",
        source="ide_extraction",
        client_ts=None,
        metadata_json="{}",
        dedup_key=dedup_key(PORT, "user", content, None, client_id),
        content_hash=content_hash(content),
    )


async def _keys_under(redis: aioredis.Redis, keys: Keys) -> set[str]:
    return {k.decode() async for k in redis.scan_iter(match=f"{keys.prefix}*")}


@asynccontextmanager
async def _published(redis: aioredis.Redis, keys: Keys) -> AsyncIterator[Callable[[], set[str]]]:
    """Record the channels published under the prefix while the block runs.

    A sentinel published last marks the end: Redis delivers one subscriber's messages in the
    order they were published, so every earlier publication has arrived when it does."""
    pubsub = redis.pubsub()
    await pubsub.psubscribe(f"{keys.prefix}*")
    seen: set[str] = set()
    try:
        yield lambda: seen
        sentinel = f"{keys.prefix}sentinel:{uuid.uuid4().hex}"
        await redis.publish(sentinel, b"")
        async with asyncio.timeout(10):
            while True:
                # None also for a skipped subscribe confirmation: keep reading.
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=10)
                if message is None:
                    continue
                channel = message["channel"].decode()
                if channel == sentinel:
                    break
                seen.add(channel)
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # unannotated in redis-py


async def test_every_template_builds_the_same_name_in_lua_and_python(
    redis: aioredis.Redis,
) -> None:
    """Each function of the Lua prelude returns what the `Keys` member of the same name does."""
    keys = Keys(f"k{uuid.uuid4().hex[:8]}:")
    samples: dict[str, str | int] = {
        "user": "u-1",
        "port": 9222,
        "session": str(uuid.uuid4()),
        "process": "p-1",
        "consumer": "c-1",
    }
    for name, template in TEMPLATES.items():
        holes = [h for h in samples if "{" + h + "}" in template]
        holes.sort(key=lambda h: template.index("{" + h + "}"))
        values = [samples[h] for h in holes]
        member = getattr(keys, name)
        expected = member(*values) if callable(member) else member
        call = f"{name}({', '.join(f'ARGV[{i + 2}]' for i in range(len(values)))})"
        source = f"{lua_prelude()} return key_names(ARGV[1]).{call}"
        lua_name = await redis.eval(source, 0, keys.prefix, *values)  # type: ignore[misc]  # redis-py 7 types sync|async
        assert lua_name.decode() == expected, name


async def test_ingest_and_settle_touch_exactly_the_keys_keys_names(
    redis: aioredis.Redis, db: asyncpg.Pool
) -> None:
    """An ingest (a new message and an edit) creates and publishes only names `Keys` gives,
    the port read finds its rows there, and the writer's settle removes them by those names.
    Rows are published only while the session's channel has a subscriber: the first message,
    sent before anyone listened, is not; the edit, sent after, is."""
    keys = Keys(f"k{uuid.uuid4().hex[:8]}:")
    user = f"u{uuid.uuid4().hex[:8]}"
    buffer = IngestBuffer(redis, db, keys, state_ttl_s=60, max_buffered_messages=100)
    listener = redis.pubsub()
    async with buffer.running(), _published(redis, keys) as channels:
        first: Outcome = await buffer.submit(
            user, PORT, "cursor", [buffer_item(user, PORT, _item("c-1", "v1"))]
        )
        sid = first.session_id
        await listener.subscribe(keys.session_channel(sid))
        edit: Outcome = await buffer.submit(
            user, PORT, "cursor", [buffer_item(user, PORT, _item("c-1", "v2"))]
        )
    try:
        published = None
        async with asyncio.timeout(10):
            while published is None:  # None also for the subscribe confirmation it skips
                published = await listener.get_message(ignore_subscribe_messages=True, timeout=1)
        assert b'"content":"v2"' in published["data"], published
        assert b'"content":"v1"' not in published["data"]
    finally:
        await listener.aclose()  # type: ignore[no-untyped-call]  # unannotated in redis-py
    assert [o.flag for o in first.items + edit.items] == [Flag.STORED, Flag.UPDATED]
    assert await _keys_under(redis, keys) == {
        keys.active(user, PORT),
        keys.session_state(sid),
        keys.pending(sid),
        keys.pending_edits(sid),
        keys.port_buffered(user, PORT),
        keys.buffered,
        keys.stream,
    }
    # The session's `created` event (from Python) and its rows (from ingest.lua).
    assert channels() == {keys.user_channel(user), keys.session_channel(sid)}
    async with db.acquire() as conn:
        [read] = await port_messages(conn, redis, keys, user, PORT, 10)  # from the buffer only
    assert (read.session_id, read.content) == (sid, "v2")

    writer = BatchWriter(db, redis, keys)
    await writer.ensure_group()
    while await writer.step():
        pass
    assert await _keys_under(redis, keys) == {
        keys.active(user, PORT),
        keys.session_state(sid),
        keys.buffered,
        keys.stream,  # emptied by XDEL; kept for its consumer group
        keys.index_stream,
    }
    assert await redis.get(keys.buffered) == b"0"


async def test_presence_touches_exactly_the_keys_keys_names(redis: aioredis.Redis) -> None:
    """presence.lua stores a connection under `Keys.presence` and `Keys.presence_port`,
    announces on `Keys.user_channel`, and leaves nothing behind once the connection is down."""
    keys = Keys(f"k{uuid.uuid4().hex[:8]}:")
    user = f"u{uuid.uuid4().hex[:8]}"
    presence = Presence(redis, keys)
    async with _published(redis, keys) as channels:
        await presence.up("conn-1", user, [PORT])
        assert await _keys_under(redis, keys) == {keys.presence(), keys.presence_port(user, PORT)}
        assert await presence.online(user, [PORT]) == {PORT}
        await presence.down("conn-1")
    assert channels() == {keys.user_channel(user)}
    assert await _keys_under(redis, keys) == set()
