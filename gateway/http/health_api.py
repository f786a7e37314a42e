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
from gateway.auth import authenticate_operator
from gateway.http.api import WireResponse, _gateway
from gateway.local_token import COOKIE_NAME
from storage import health, stats
from storage.db import MeteredPool


async def _operator(request: Request) -> str:
    return await authenticate_operator(
        _gateway(request).settings,
        request.app.state.verifier,
        request.headers.get("authorization"),
        request.query_params.get("token"),
        request.cookies.get(COOKIE_NAME),
    )


def pool_state(pool: MeteredPool) -> wire.PoolState:
    size, idle = pool.get_size(), pool.get_idle_size()
    return wire.PoolState(
        size, size - idle, idle, pool.waiting, pool.get_min_size(), pool.get_max_size()
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
