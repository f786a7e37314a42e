"""Scenario f: SIGTERM to `serve` under load."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake

from storage.keys import Keys
from tests.faults.harness import (
    IO_TIMEOUT,
    Deployment,
    LoadClient,
    collect_report,
    gateway_process,
    stream_empty,
    wait_until,
)

# uvicorn waits up to 10 s for connections to close (timeout_graceful_shutdown), then the
# lifespan drains the buffer and the writer: the whole exit must fit in this.
EXIT_BOUND_S = 15.0
GOING_AWAY, SERVICE_RESTART = 1001, 1012


@pytest.mark.timeout(180)
async def test_sigterm_under_load_drains_and_exits_0(
    shared_deployment: Deployment, tmp_path: Path
) -> None:
    """SIGTERM under load: serve stops accepting, closes every socket with 1001 or 1012,
    writes everything acked to PostgreSQL, and exits 0 within 15 s; the clients then resend
    what was unacked to a new serve and nothing is lost or stored twice."""
    deployment = shared_deployment
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        serve = await stack.enter_async_context(gateway_process(deployment, tmp_path))
        load = await stack.enter_async_context(LoadClient([serve.ws_url], connections=6, rate=200))
        await load.wait_acked(1000, timeout=30)
        serve.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        await wait_until(_closed(load), 10, "the clients' sockets closed")
        # The listener is closed before the sockets are: a new client is refused.
        with pytest.raises((OSError, InvalidHandshake)):
            async with connect(serve.ws_url, open_timeout=IO_TIMEOUT):
                pass
        code = await asyncio.wait_for(serve.proc.wait(), EXIT_BOUND_S)
        exit_s = time.monotonic() - signalled
        # No gateway and no writer runs now: whatever is in PostgreSQL, the drain wrote.
        at_exit = await collect_report(
            "f. SIGTERM to serve under load (at its exit)",
            deployment,
            load,
            started=started,
            notes={"exit code": code, "s from SIGTERM to exit": round(exit_s, 2)},
        )
        close_codes = set(load.closes)
        unacked_at_exit = load.unacked
        again = await stack.enter_async_context(gateway_process(deployment, tmp_path))
        restarted = time.monotonic()
        load.urls = [again.ws_url]
        await load.finish(timeout=30)
        redis = aioredis.Redis.from_url(deployment.redis_url)
        try:
            stream = Keys(deployment.key_prefix).stream
            await wait_until(lambda: stream_empty(redis, stream), 30, "the new serve drained")
        finally:
            await redis.aclose()
        recovery_s = time.monotonic() - restarted
    final = await collect_report(
        "f. SIGTERM to serve under load (after the clients resent to a new serve)",
        deployment,
        load,
        started=started,
        recovery_s=recovery_s,
        notes={"unacked at the exit, resent": unacked_at_exit},
    )
    at_exit.check(min_acked=1000)
    final.check(min_acked=1000)
    assert code == 0, serve.log[-3000:]
    assert exit_s <= EXIT_BOUND_S
    assert close_codes and close_codes <= {GOING_AWAY, SERVICE_RESTART}, load.summary()
    assert "Traceback" not in serve.log, serve.log[-3000:]


def _closed(load: LoadClient) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return sum(load.closes.values()) >= load.connections

    return check
