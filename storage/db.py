"""The PostgreSQL pool and the connection type every query function accepts."""

from __future__ import annotations

from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

# Query functions take either a plain connection or one borrowed from the pool.
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"


async def create_pool(dsn: str, *, size: int) -> asyncpg.Pool:
    """A pool sized for the gateway; `min_size` 1 so an idle gateway holds one connection."""
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=size, command_timeout=60)
    assert pool is not None
    return pool
