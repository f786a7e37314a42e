"""The PostgreSQL pool, its settings and meters, and the connection type every query
function accepts."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

# Query functions take either a plain connection or one borrowed from the pool.
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

# The client's own deadline for a statement, past the server's statement_timeout: the server
# cancels first and says so; this only ends waits on a server that stopped answering.
_CLIENT_GRACE_S = 5.0


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """How a process's pool connects and how big it grows (gateway/settings.py documents the
    `GATEWAY_DATABASE_*` variables that set these)."""

    max_size: int = 10
    min_size: int = 1  # kept open even when idle; 0: none
    connect_timeout_s: float = 10.0  # to open one connection
    statement_timeout_s: float = 60.0  # PostgreSQL cancels a statement after it; 0: never
    idle_lifetime_s: float = 300.0  # an idle connection above min_size closes; 0: never


@dataclass(frozen=True, slots=True)
class PoolState:
    """A pool at one moment: connections open, checked out and idle, tasks waiting for one,
    and its bounds."""

    size: int
    in_use: int
    idle: int
    waiting: int
    min_size: int
    max_size: int


class MeteredPool(asyncpg.Pool):
    """asyncpg's pool, with what it does not report: how many acquirers are waiting for a
    connection now, and how long each acquisition took (`on_acquire(seconds)`).

    It overrides `_acquire`, which every `acquire()` goes through (asyncpg 0.29 to 0.32; a
    test in tests/test_observability.py fails if a later asyncpg stops calling it)."""

    def __init__(
        self, *args: Any, on_acquire: Callable[[float], None] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.waiting = 0
        self._on_acquire = on_acquire

    def state(self) -> PoolState:
        """What /metrics and the database health report say of the pool."""
        size, idle = self.get_size(), self.get_idle_size()
        return PoolState(
            size, size - idle, idle, self.waiting, self.get_min_size(), self.get_max_size()
        )

    async def _acquire(self, timeout: float | None) -> Any:  # noqa: ASYNC109 - asyncpg's signature
        started = time.perf_counter()
        self.waiting += 1
        try:
            return await super()._acquire(timeout)  # type: ignore[misc]
        finally:
            self.waiting -= 1
            if self._on_acquire is not None:
                self._on_acquire(time.perf_counter() - started)


async def create_pool(
    dsn: str,
    settings: PoolSettings,
    *,
    on_query: Callable[[Any], None] | None = None,
    on_acquire: Callable[[float], None] | None = None,
) -> MeteredPool:
    """A pool as `settings` say. `on_query` sees every query with its duration (asyncpg's
    query logger); `on_acquire` every acquisition's wait, in seconds."""

    async def init(conn: asyncpg.Connection) -> None:
        if on_query is not None:
            conn.add_query_logger(on_query)

    statement_ms = round(settings.statement_timeout_s * 1000)
    pool = MeteredPool(
        dsn,
        on_acquire=on_acquire,
        min_size=min(settings.min_size, settings.max_size),
        max_size=settings.max_size,
        max_queries=50_000,
        max_inactive_connection_lifetime=settings.idle_lifetime_s,
        connect=None,
        setup=None,
        init=init,
        reset=None,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        timeout=settings.connect_timeout_s,
        command_timeout=settings.statement_timeout_s + _CLIENT_GRACE_S if statement_ms else None,
        server_settings={"statement_timeout": str(statement_ms)},
    )
    await pool
    return pool
