"""The ASGI application: routes, and the lifespan that opens and closes every resource.

Resources open in dependency order and close in reverse. Open: the PostgreSQL pool and Redis,
then the writer, the indexer, the hub, the durable waiter, the ingest flusher and presence.
Close: presence, the flusher (its last call pushes every queued ingest into the Redis
buffer), the durable waiter, the hub, the indexer, and the writer last of all, which drains
the stream on the way out; then Redis and the pool. The writer closing after the flusher is
what lets a clean shutdown leave nothing buffered that it could have written: closing the
writer first would drain the stream before the final ingests reach it. See `open_gateway`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from gateway.auth import TokenVerifier, authenticate
from gateway.context import Gateway
from gateway.errors import CloseCode, GatewayError, Unauthorized
from gateway.guard import Allowed, Guard
from gateway.http import (
    api,
    export_api,
    health_api,
    openapi,
    search_api,
    seed_aliases,
    send_api,
    ui_routes,
)
from gateway.lifecycle import SessionLifecycle
from gateway.local_token import AUTO, COOKIE_NAME, load_or_create_local_token
from gateway.logs import configure_logging
from gateway.metrics import Metrics, Sources
from gateway.metrics_listener import metrics_listener, parse_address
from gateway.persistence import running_persistence
from gateway.rate_limits import RateLimits
from gateway.server import install_log_filters, tune_gc
from gateway.settings import Settings
from gateway.ws.connection import ConnectionParts, ConnectionRegistry, serve_connection
from gateway.ws.durable import PersistWaiter
from gateway.ws.hub import Hub
from gateway.ws.ingest import Ingestor
from gateway.ws.live import LiveContext
from gateway.ws.presence import Presence
from gateway.ws.protocol import Limits
from storage.buffer import IngestBuffer
from storage.db import create_pool
from storage.keys import Keys

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> Starlette:
    """The gateway app for these settings; nothing connects until the lifespan starts."""
    if settings.local_token == AUTO:  # not resolved by the CLI: never take "auto" as the token
        settings = dataclasses.replace(
            settings, local_token=load_or_create_local_token(settings.data_dir)[1]
        )
    allowed = Allowed.for_address(settings.host, settings.allowed_hosts, settings.allowed_origins)
    verifier = TokenVerifier.from_settings(settings)  # a bad public key fails here, at once
    metrics_at = parse_address(settings.metrics_address)
    if metrics_at is not None and settings.workers > 1:
        raise ValueError(
            "GATEWAY_METRICS_ADDRESS serves one process's metrics: use --workers 1 with it,"
            " or leave it empty"
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        install_log_filters()
        tune_gc(settings.gc_young_collection_threshold, settings.gc_full_collection_threshold)
        async with open_gateway(settings) as gateway, contextlib.AsyncExitStack() as stack:
            app.state.gateway = gateway
            app.state.verifier = verifier
            if metrics_at is not None:
                app.state.metrics_port = await stack.enter_async_context(
                    metrics_listener(metrics_at, gateway.metrics.render)
                )
            yield

    return Starlette(
        routes=[
            *seed_aliases.routes,  # first: `/api/sessions/search` is no session id
            *api.routes,
            *search_api.routes,
            *export_api.routes,
            *health_api.routes,
            *send_api.routes,
            *openapi.routes,
            WebSocketRoute("/ws", websocket_endpoint),
            *ui_routes.routes,
        ],
        lifespan=lifespan,
        middleware=[Middleware(Guard, allowed=allowed)],
        exception_handlers={
            GatewayError: api.gateway_error,
            HTTPException: api.http_error,
        },
    )


def create_app_from_env() -> Starlette:
    """Factory for uvicorn workers: settings from the environment the CLI exported."""
    settings = Settings.from_env()
    configure_logging(settings)  # a worker is a fresh process (spawned, not forked)
    return create_app(settings)


@contextlib.asynccontextmanager
async def open_gateway(settings: Settings) -> AsyncIterator[Gateway]:
    """Open every resource of one gateway process; close them in reverse order."""
    keys = Keys(settings.key_prefix)
    limits = Limits(
        max_frame_bytes=settings.max_frame_bytes,
        max_content_bytes=settings.max_content_bytes,
        max_metadata_bytes=settings.max_metadata_bytes,
        max_batch_items=settings.max_batch_items,
        max_ports_per_hello=settings.max_ports_per_hello,
    )
    metrics = Metrics(settings.slow_query_s, settings.very_slow_query_s)
    pool = await create_pool(
        settings.database_url,
        settings.pool_settings(),
        on_query=metrics.observe_query,
        on_acquire=metrics.observe_acquire,
    )
    redis = aioredis.Redis.from_url(settings.redis_url)
    try:
        hub = Hub(redis)
        buffer = IngestBuffer(
            redis,
            pool,
            keys,
            state_ttl_s=settings.session_state_ttl_s,
            max_queued_ingests=settings.max_queued_ingests,
            max_buffered_messages=settings.max_buffered_messages,
        )
        waiter = PersistWaiter(hub, pool, keys.persisted_channel(uuid.uuid4().hex))
        ingestor = Ingestor(buffer, waiter, settings.durable_timeout_s, metrics.acks)
        lifecycle = SessionLifecycle(pool, redis, keys, buffer)
        presence = Presence(
            redis, keys, ttl_s=settings.presence_ttl_s, heartbeat_s=settings.presence_ttl_s / 3
        )
        # The stack closes its contexts in the reverse of the order they are entered here, so
        # each line below is read twice: on the way in top to bottom, on the way out bottom to
        # top. Each step's comment says why it closes where it does.
        async with contextlib.AsyncExitStack() as stack:
            # Closes last: the writer's exit drains the stream into PostgreSQL, after the
            # flusher (below) pushed the final ingests into it. Entered first for exactly
            # that. Inside, the indexer closes before the writer: it finishes its batch and
            # stops; the index entries of the writer's final drain stay in the index stream
            # for the next start (nothing is lost).
            persistence = (
                await stack.enter_async_context(
                    running_persistence(settings, pool, redis, keys, metrics)
                )
                if settings.run_writer
                else None
            )
            # Closes after the waiter, which unlistens its channel through the hub.
            await stack.enter_async_context(hub.running())
            # Opened before the flusher, whose durable ingests wait on it for their commit, and
            # closed after it for the same reason; its exit unlistens through the hub.
            await stack.enter_async_context(waiter.running())
            # Closes second: its final flush pushes every queued ingest into the Redis buffer
            # before the writer (still running) drains it.
            await stack.enter_async_context(buffer.running())
            # Closes first: this process's ports go offline while Redis and the hub are up.
            await stack.enter_async_context(presence.running())
            connections = ConnectionRegistry()
            metrics.watch(
                Sources(
                    connections=connections.__len__,
                    hub_resets=lambda: hub.resets,
                    pool=pool,
                    redis=redis,
                    keys=keys,
                )
            )
            live = LiveContext(hub, pool, redis, keys)
            yield Gateway(
                settings,
                pool,
                redis,
                keys,
                limits,
                ingestor,
                persistence.writer if persistence else None,
                connections,
                hub,
                live,
                presence,
                metrics,
                persistence.indexer if persistence else None,
                lifecycle,
                ConnectionParts(
                    ingestor,
                    lifecycle,
                    live,
                    presence,
                    limits,
                    metrics,
                    connections,
                    RateLimits.from_settings(settings),
                    max_inflight_frames=settings.max_inflight_frames,
                    max_outbox_bytes=settings.max_outbox_bytes,
                ),
            )
    finally:
        # After every part above stopped using them: the writer's drain needs both.
        await redis.aclose()
        await pool.close()


async def websocket_endpoint(websocket: WebSocket) -> None:
    gateway: Gateway = websocket.app.state.gateway
    try:
        user_id = await authenticate(
            gateway.settings,
            websocket.app.state.verifier,
            websocket.headers.get("authorization"),
            websocket.query_params.get("token"),
            websocket.cookies.get(COOKIE_NAME),
        )
    except Unauthorized as exc:
        await refuse_handshake(websocket, exc)
        return
    await websocket.accept()
    await serve_connection(websocket, gateway.connection_parts, user_id)


async def refuse_handshake(websocket: WebSocket, error: Unauthorized) -> None:
    """HTTP 401 instead of the upgrade; servers without the denial-response extension can
    only accept and close, with 4401."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        body = api.error_body(error.code, error.message)
        await websocket.send_denial_response(api.WireResponse(body, status_code=401))
    else:
        await websocket.accept()
        await websocket.close(int(CloseCode.UNAUTHORIZED), error.message)
