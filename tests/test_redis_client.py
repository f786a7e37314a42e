"""The Redis client library keeps asyncio's contract: cancelling a task cancels it.

redis-py 8.0.1 and 8.1.0 broke that (pyproject.toml pins below 8): a cancel that lands while
a command is in flight was silently dropped about one time in four, and the task went on, so a
gateway's shutdown hung on background tasks that never ended.
"""

from __future__ import annotations

import asyncio
import random

import redis.asyncio as aioredis


async def test_a_task_cancelled_mid_command_ends(redis: aioredis.Redis) -> None:
    """300 tasks looping on Redis commands, each cancelled at a random moment, all end with
    CancelledError within a second."""
    rng = random.Random(12)

    async def loop() -> None:
        while True:
            await redis.get("cancel-probe")

    survivors = 0
    for _ in range(300):
        task = asyncio.create_task(loop())
        await asyncio.sleep(rng.random() * 0.005)  # lands anywhere in a command's round trip
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=1.0)
        if not done:
            survivors += 1
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
        else:
            assert task.cancelled()
    assert survivors == 0
