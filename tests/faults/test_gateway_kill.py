"""Scenario d: a gateway process SIGKILLed with subscribers attached."""

from __future__ import annotations

import contextlib
import signal
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from storage.keys import Keys
from tests.faults.harness import (
    Deployment,
    LoadClient,
    Subscriber,
    caught_up,
    collect_report,
    gateway_process,
    stream_empty,
    wait_until,
)

PORTS = 4  # load clients, one port (and session) each
PORT_BASE = 9500


@pytest.mark.timeout(180)
async def test_gateway_sigkilled_subscribers_resume_elsewhere_without_gaps(
    shared_deployment: Deployment, tmp_path: Path
) -> None:
    """Two serve processes on the same servers; the one holding the subscribers (and half the
    load) is SIGKILLed: port and session subscribers reconnect to the other, resume with
    `since_seq` and miss nothing, and every acked message is stored once."""
    deployment = shared_deployment
    started = time.monotonic()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with contextlib.AsyncExitStack() as stack:
        a = await stack.enter_async_context(gateway_process(deployment, tmp_path / "a"))
        b = await stack.enter_async_context(gateway_process(deployment, tmp_path / "b"))
        urls = [a.ws_url, b.ws_url]  # first on A; after a drop, the next one: B
        port_feeds = [
            await stack.enter_async_context(Subscriber(urls, port=PORT_BASE + i))
            for i in range(PORTS)
        ]
        load = await stack.enter_async_context(
            LoadClient(urls, connections=PORTS, rate=40, port_base=PORT_BASE)
        )
        await load.wait_acked(200, timeout=30)
        sessions = sorted({ack.session_id for ack in load.acked.values()})
        session_feeds = [
            await stack.enter_async_context(Subscriber(urls, session_id=sid))
            for sid in sessions[:2]
        ]
        feeds = port_feeds + session_feeds
        for feed in session_feeds:  # caught up from storage before the kill
            assert feed.session is not None
            await feed.wait_for(feed.session, 1, timeout=10)
        newest = load.newest_seqs()
        a.kill()
        killed = time.monotonic()
        assert await a.proc.wait() == -signal.SIGKILL
        # Recovered: every feed resumed and got a message acked after the kill.
        await caught_up(feeds, {sid: seq + 1 for sid, seq in newest.items()})
        recovery_s = time.monotonic() - killed
        await load.wait_acked(len(load.acked) + 200, timeout=30)
        await load.finish(timeout=30)
        redis = aioredis.Redis.from_url(deployment.redis_url)
        try:
            stream = Keys(deployment.key_prefix).stream
            await wait_until(
                lambda: stream_empty(redis, stream), 30, "B's writer drained A's share"
            )
        finally:
            await redis.aclose()
        await caught_up(feeds, load.newest_seqs())
        assert all(feed.resumes >= 1 for feed in feeds), [f.resumes for f in feeds]
        report = await collect_report(
            "d. a gateway SIGKILLed with subscribers attached",
            deployment,
            load,
            subscribers=feeds,
            started=started,
            recovery_s=recovery_s,
            notes={
                "subscribers (port + session)": f"{len(port_feeds)} + {len(session_feeds)}",
                "subscriber resumes": sum(f.resumes for f in feeds),
            },
        )
        exit_code = await b.stop(signal.SIGINT)
    report.check(min_acked=400)
    assert exit_code == 0, b.log[-3000:]
