"""What operators may read of the whole deployment: the database health report
(`GET /api/health/database`, `POST /api/health/database/statements/reset`) and the global
totals (`GET /api/stats/global`: users, sessions and messages over everyone, in constant time).

An operator is the local user in local mode, else a user whose token has the `admin` claim
or who is named in `GATEWAY_ADMIN_USERS` (gateway/auth.py); anyone else gets 403. The report
(storage/health.py) adds this process's pool to what PostgreSQL says about itself.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import wire
from gateway.auth import require_operator
from gateway.http.api import WireResponse, _gateway, _identity
from storage import health, stats
from storage.db import MeteredPool


async def _operator(request: Request) -> str:
    return require_operator(await _identity(request))


def pool_state(pool: MeteredPool) -> wire.PoolState:
    state = pool.state()
    return wire.PoolState(
        state.size, state.in_use, state.idle, state.waiting, state.min_size, state.max_size
    )


async def database_health(request: Request) -> Response:
    """Size, largest tables and indexes, index use, cache hits, connections, pool, and the
    slowest statements."""
    await _operator(request)
    gateway = _gateway(request)
    async with gateway.pool.acquire() as conn:
        report = await health.database_health(conn)
    return WireResponse(wire.database_health(report, pool_state(gateway.pool)))


async def reset_statements(request: Request) -> Response:
    """Forget this database's statement statistics (pg_stat_statements)."""
    await _operator(request)
    async with _gateway(request).pool.acquire() as conn:
        problem = await health.reset_statements(conn)
    return WireResponse(wire.StatementsReset(problem is None, problem))


async def global_totals(request: Request) -> Response:
    """Users, sessions and messages over every user, from the global counters."""
    await _operator(request)
    async with _gateway(request).pool.acquire() as conn:
        totals = await stats.totals(conn)
    return WireResponse(wire.global_totals(totals))


routes = [
    Route("/api/stats/global", global_totals, methods=["GET"]),
    Route("/api/health/database", database_health, methods=["GET"]),
    Route("/api/health/database/statements/reset", reset_statements, methods=["POST"]),
]
