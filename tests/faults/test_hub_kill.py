"""Scenario e: the gateway's pub/sub connection killed several times, 1 s apart, under load."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import connect

from storage.embedded import ServerProcess
from storage.keys import Keys
from tests.conftest import migrated_database
from tests.faults.harness import (
    IO_TIMEOUT,
    Deployment,
    LoadClient,
    Subscriber,
    caught_up,
    collect_report,
    gateway_process,
    stream_empty,
    wait_until,
)

PORTS = 3
PORT_BASE = 9600
KILLS = 5
KILL_EVERY_S = 1.0  # the fault's pace, as the issue gives it (not a synchronisation)


@pytest.fixture
async def deployment(
    server_database_url: str, own_valkey: ServerProcess
) -> AsyncIterator[Deployment]:
    """The session's PostgreSQL, and a Valkey of this test's own: CLIENT KILL there can only
    hit this scenario's gateway."""
    async with migrated_database(server_database_url, "cg_fault") as database_url:
        yield Deployment(database_url, own_valkey.url)


async def _pubsub_clients(redis: aioredis.Redis) -> int:
    clients = await redis.client_list(_type="pubsub")
    return len(clients)


@pytest.mark.timeout(180)
async def test_hub_killed_repeatedly_no_subscriber_misses_a_message(
    deployment: Deployment, tmp_path: Path
) -> None:
    """Five kills of a serve process's pub/sub connection, 1 s apart, while IDE clients send:
    port, session and session-list subscribers stay connected, the message feeds get every
    stored seq once and in order, the session list is told to re-fetch, and every acked
    message is stored once."""
    started = time.monotonic()
    redis = aioredis.Redis.from_url(deployment.redis_url)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(redis.aclose)
        serve = await stack.enter_async_context(gateway_process(deployment, tmp_path))
        urls = [serve.ws_url]
        port_feeds = [
            await stack.enter_async_context(Subscriber(urls, port=PORT_BASE + i))
            for i in range(PORTS)
        ]
        load = await stack.enter_async_context(
            LoadClient(urls, connections=PORTS, rate=60, port_base=PORT_BASE)
        )
        await load.wait_acked(60, timeout=30)
        sessions = sorted({ack.session_id for ack in load.acked.values()})
        session_feed = await stack.enter_async_context(Subscriber(urls, session_id=sessions[0]))
        session_list = await stack.enter_async_context(
            connect(serve.ws_url, open_timeout=IO_TIMEOUT)
        )
        await session_list.send(orjson.dumps({"type": "subscribe", "sessions": True}).decode())
        resyncs = 0

        async def count_resyncs() -> None:
            nonlocal resyncs
            async for raw in session_list:
                if orjson.loads(raw)["type"] == "resync":
                    resyncs += 1

        async def got_resync() -> bool:
            return resyncs > 0

        counter = asyncio.create_task(count_resyncs())
        stack.callback(counter.cancel)
        recoveries: list[float] = []
        killed = 0
        for _ in range(KILLS):
            killed += int(await redis.client_kill_filter(_type="pubsub"))
            recoveries.append(
                await wait_until(lambda: _has_pubsub(redis), 10, "the gateway's hub reconnected")
            )
            await asyncio.sleep(KILL_EVERY_S)
        await load.finish(timeout=30)
        await wait_until(got_resync, 10, "the session list got resync")
        feeds = [*port_feeds, session_feed]
        await caught_up(feeds, load.newest_seqs())
        # The feeds saw every message once it was buffered; the report reads PostgreSQL.
        stream = Keys(deployment.key_prefix).stream
        await wait_until(lambda: stream_empty(redis, stream), 30, "the writer drained")
        report = await collect_report(
            "e. the hub's pub/sub connection killed 5 times, 1 s apart",
            deployment,
            load,
            subscribers=feeds,
            started=started,
            recovery_s=max(recoveries),
            notes={
                "pub/sub connections killed": killed,
                "subscribers (port + session + list)": f"{PORTS} + 1 + 1",
                "resync events to the session list": resyncs,
                "subscriber reconnects": sum(f.resumes for f in feeds),
                "resync events to the port subscribers": sum(f.resyncs for f in port_feeds),
            },
        )
        exit_code = await serve.stop(signal.SIGINT)
    report.check(min_acked=200)
    assert killed >= KILLS
    assert resyncs >= 1
    assert all(feed.resumes == 0 for feed in feeds), "a feed had to reconnect"
    assert exit_code == 0, serve.log[-3000:]
    assert serve.count("Traceback") == 0, serve.log[-3000:]


async def _has_pubsub(redis: aioredis.Redis) -> bool:
    return await _pubsub_clients(redis) >= 1
