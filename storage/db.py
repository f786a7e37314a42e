"""The PostgreSQL pool and the connection type every query function accepts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

# Query functions take either a plain connection or one borrowed from the pool.
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"


async def create_pool(
    dsn: str, *, size: int, on_query: Callable[[Any], None] | None = None
) -> asyncpg.Pool:
    """A pool sized for the gateway; `min_size` 1 so an idle gateway holds one connection.
    `on_query` sees every query with its duration (asyncpg's query logger)."""

    async def init(conn: asyncpg.Connection) -> None:
        if on_query is not None:
            conn.add_query_logger(on_query)

    pool = await asyncpg.create_pool(
        dsn, min_size=1, max_size=size, command_timeout=60, init=init
    )
    assert pool is not None
    return pool
