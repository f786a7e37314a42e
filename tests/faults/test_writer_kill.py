"""Scenario a: the batch writer SIGKILLed mid-batch under load, then restarted."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from storage.keys import WRITER_GROUP, Keys
from tests.faults.harness import (
    Deployment,
    LoadClient,
    collect_report,
    gateway_process,
    wait_until,
    writer_process,
)

# A restarted writer takes over a dead writer's entries once the dead one's liveness key has
# expired (3 s by default, looked at every second): the backlog must drain within this.
TAKEOVER_BOUND_S = 5.0


@pytest.mark.timeout(180)
async def test_writer_sigkilled_mid_batch_then_restarted_loses_nothing(
    shared_deployment: Deployment, tmp_path: Path
) -> None:
    """A writer SIGKILLed while it holds delivered, unacknowledged entries loses none of them:
    acks go on meanwhile, and a restarted writer stores every acked message once, within 5 s."""
    deployment = shared_deployment
    started = time.monotonic()
    redis = aioredis.Redis.from_url(deployment.redis_url)
    stream = Keys(deployment.key_prefix).stream

    async def mid_batch() -> bool:
        summary = await redis.xpending(stream, WRITER_GROUP)
        return int(summary["pending"]) > 0

    async def backlog_written(last_id: bytes) -> bool:
        # Written entries are deleted right after their XACK: none left up to `last_id`.
        return not await redis.xrange(stream, "-", last_id, count=1)

    async def all_written() -> bool:
        return int(await redis.xlen(stream)) == 0

    try:
        async with (
            gateway_process(deployment, tmp_path, "--no-writer") as serve,
            LoadClient([serve.ws_url], connections=6, rate=60) as load,
        ):
            async with writer_process(deployment, tmp_path) as first:
                await load.wait_acked(300, timeout=30)
                # Hold the sessions' row locks: the writer's next batch is copied and then
                # waits on them before its commit, so it is surely mid-batch when killed (a
                # batch takes milliseconds: a kill timed by polling alone missed it now and
                # then). Its server backend, still waiting, aborts once the lock is released
                # and it finds its client gone: nothing of the batch is committed.
                blocker = await asyncpg.connect(deployment.database_url)
                try:
                    locking = blocker.transaction()
                    await locking.start()
                    await blocker.execute(
                        "SELECT 1 FROM sessions WHERE user_id = $1 FOR UPDATE", deployment.user
                    )
                    # Entries delivered to the writer and not acknowledged: a batch in flight.
                    await wait_until(mid_batch, 15, "a writer batch in flight", interval=0.01)
                    first.kill()
                    await first.proc.wait()
                    await locking.rollback()
                finally:
                    await blocker.close()
            pending_at_kill = int((await redis.xpending(stream, WRITER_GROUP))["pending"])
            acked_at_kill = len(load.acked)
            await load.wait_acked(acked_at_kill + 300, timeout=30)  # acks go on, no writer
            backlog_at_restart = int(await redis.xlen(stream))
            newest_entries: Any = await redis.xrevrange(stream, "+", "-", count=1)
            newest: bytes = newest_entries[0][0]
            async with writer_process(deployment, tmp_path) as second:
                recovery_s = await wait_until(
                    lambda: backlog_written(newest),
                    30,
                    "the restarted writer wrote the backlog",
                )
                await load.finish(timeout=30)
                await wait_until(all_written, 30, "every entry written")
                replayed = second.count("partly written")
                claimed = second.count("took over") + second.count("claimed")
                assert await second.stop(signal.SIGINT) == 0, second.log[-3000:]
        report = await collect_report(
            "a. writer SIGKILLed mid-batch, restarted",
            deployment,
            load,
            started=started,
            recovery_s=recovery_s,
            notes={
                "entries pending on the killed writer": pending_at_kill,
                "acked after the kill": len(load.acked) - acked_at_kill,
                "backlog at restart (entries)": backlog_at_restart,
                "restarted writer log lines: claimed/took over": claimed,
                "restarted writer log lines: replayed batch": replayed,
            },
        )
    finally:
        await redis.aclose()
    report.check(min_acked=600)
    assert pending_at_kill > 0, "the writer was not killed mid-batch"
    assert recovery_s <= TAKEOVER_BOUND_S, report.render()
