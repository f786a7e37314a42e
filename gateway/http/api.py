"""The HTTP API: JSON endpoints over the same storage the WebSocket path writes.

Every error is `{"error": {"code", "message"}}` with the matching status. Another user's
session answers exactly like a missing one (404), so its existence never leaks.
"""

from __future__ import annotations

import asyncio
import base64
import math
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson
from msgspec import UNSET, UnsetType
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import wire
from gateway.auth import Identity, authenticate_identity
from gateway.context import Gateway
from gateway.errors import BadRequest, ErrorCode, GatewayError, NotFound, TooLarge
from gateway.local_token import COOKIE_NAME
from gateway.validation import Rules, convert
from gateway.wire import MAX_SEQ as MAX_SEQ  # re-exported: gateway/http/openapi.py uses it
from gateway.wire import MAX_TITLE_CHARS
from gateway.ws.ingest import session_id_or_none
from storage import sessions, stats
from storage.messages import port_messages, session_messages

MAX_PAGE = 1000
_INTEGER = re.compile(r"-?[0-9]+")
_READY_TIMEOUT_S = 2.0


class WireResponse(Response):
    """A body declared in gateway/wire.py, encoded by msgspec (its shape is the document's)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        assert isinstance(content, msgspec.Struct)
        return wire.encode(content)


def error_body(code: ErrorCode, message: str) -> wire.Error:
    return wire.error(code, message)


async def gateway_error(request: Request, exc: Exception) -> Response:
    """The error's body (with its details: `retry_after_ms` for a try-again-later, also as
    `Retry-After` in whole seconds) and status."""
    assert isinstance(exc, GatewayError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else {}
    retry_ms = (exc.details or {}).get("retry_after_ms")
    if isinstance(retry_ms, int):
        headers["Retry-After"] = str(max(1, math.ceil(retry_ms / 1000)))
    return WireResponse(
        wire.error(exc.code, exc.message, exc.details),
        status_code=exc.http_status,
        headers=headers or None,
    )


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = ErrorCode.NOT_FOUND if exc.status_code == 404 else ErrorCode.BAD_REQUEST
    return WireResponse(error_body(code, str(exc.detail)), status_code=exc.status_code)


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


async def _user(request: Request) -> str:
    return (await _identity(request)).user_id


async def _identity(request: Request) -> Identity:
    return await authenticate_identity(
        _gateway(request).settings,
        request.app.state.verifier,
        request.headers.get("authorization"),
        request.query_params.get("token"),
        request.cookies.get(COOKIE_NAME),
    )


def _int_param(request: Request, name: str, *, low: int, high: int | None = None) -> int | None:
    """The query parameter as an integer: ASCII digits with an optional minus, nothing else
    (`int()` would also take " 1", "1_0" and other scripts' digits)."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if not _INTEGER.fullmatch(raw):
        raise BadRequest(f"{name} must be an integer")
    # int() refuses strings of over 4300 digits (leading zeros count): convert only the
    # significant digits, and only up to 19 of them; a longer number is out of every range.
    digits = raw.lstrip("-").lstrip("0") or "0"
    value = None if len(digits) > 19 else -int(digits) if raw.startswith("-") else int(digits)
    if value is None or value < low or (high is not None and value > high):
        bound = f" and at most {high}" if high is not None else ""
        raise BadRequest(f"{name} must be at least {low}{bound}")
    return value


async def healthz(request: Request) -> Response:
    """Liveness: the process answers. Readiness (dependencies) is `/readyz`."""
    return WireResponse(wire.Health("ok"))


async def readyz(request: Request) -> Response:
    """Readiness: PostgreSQL and Redis answer, and the writers keep up (the oldest unwritten
    ingest entry is younger than `ready_max_writer_lag_s`); else 503 with the reason."""
    gateway = _gateway(request)
    postgres: wire.DependencyState = "down"
    redis: wire.DependencyState = "down"
    writer_lag_s: float | UnsetType = UNSET
    reasons: list[str] = []
    try:
        async with asyncio.timeout(_READY_TIMEOUT_S):
            async with gateway.pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
        postgres = "ok"
    except Exception as exc:
        reasons.append(f"PostgreSQL: {exc or type(exc).__name__}")
    try:
        async with asyncio.timeout(_READY_TIMEOUT_S):
            await gateway.redis.ping()  # type: ignore[misc]  # redis-py 7 types sync|async
            oldest: Any = await gateway.redis.xrange(gateway.keys.stream, count=1)
        redis = "ok"
        lag = 0.0
        if oldest:
            entry_ms = int(oldest[0][0].split(b"-")[0])
            lag = max(0.0, time.time() - entry_ms / 1000)
        writer_lag_s = round(lag, 3)
        bound = gateway.settings.ready_max_writer_lag_s
        if lag > bound:
            reasons.append(f"writer lag {lag:.1f} s is over {bound:g} s")
    except Exception as exc:
        redis = "down"
        reasons.append(f"Redis: {exc or type(exc).__name__}")
    checks = wire.ReadyChecks(postgres, redis, writer_lag_s)
    if reasons:
        return WireResponse(wire.Unready("unready", checks, "; ".join(reasons)), status_code=503)
    return WireResponse(wire.Ready("ready", checks))


async def metrics(request: Request) -> Response:
    """Prometheus exposition of this process's metrics, unless they are served elsewhere or
    nowhere (GATEWAY_METRICS_ADDRESS)."""
    gateway = _gateway(request)
    if gateway.settings.metrics_address:
        raise NotFound("metrics are not served on this listener")
    body, content_type = await gateway.metrics.render()
    return Response(body, media_type=content_type)


async def list_messages(request: Request) -> Response:
    """A session's messages in seq order, keyset-paginated by seq."""
    gateway = _gateway(request)
    user_id = await _user(request)
    session_id = session_id_or_none(request.path_params["session_id"])
    after_seq = _int_param(request, "after_seq", low=0, high=MAX_SEQ)
    before_seq = _int_param(request, "before_seq", low=1, high=MAX_SEQ)
    limit = _int_param(request, "limit", low=1, high=MAX_PAGE) or 100
    async with gateway.pool.acquire() as conn:
        session = await sessions.get_session(conn, user_id, session_id) if session_id else None
        if session is None:
            raise NotFound("no such session")
        page = await session_messages(
            conn,
            gateway.redis,
            gateway.keys,
            session.id,
            after_seq=after_seq,
            before_seq=before_seq,
            limit=limit,
        )
    return WireResponse(wire.MessagePage(
            session.id, [wire.message(m) for m in page.messages], page.has_more
        ))


async def list_ports(request: Request) -> Response:
    """The ports the user has used: IDE type, active session, online (an IDE serves it)."""
    gateway = _gateway(request)
    user_id = await _user(request)
    async with gateway.pool.acquire() as conn:
        ports = await sessions.user_ports(conn, user_id)
    online = await gateway.presence.online(user_id, [p.port for p in ports])
    return WireResponse(wire.PortList([wire.port(p, online=p.port in online) for p in ports]))


async def list_port_messages(request: Request) -> Response:
    """The port's newest messages across its sessions, newest first."""
    gateway = _gateway(request)
    user_id = await _user(request)
    port = _path_port(request)
    limit = _int_param(request, "limit", low=1, high=MAX_PAGE) or 100
    async with gateway.pool.acquire() as conn:
        messages = await port_messages(conn, gateway.redis, gateway.keys, user_id, port, limit)
    return WireResponse(wire.PortMessages(port, [wire.port_message(m) for m in messages]))


async def patch_port(request: Request) -> Response:
    """Label the port (`label`; null or "" takes the label away), announced to every tab."""
    gateway = _gateway(request)
    user_id = await _user(request)
    port = _path_port(request)
    body = convert(await _json_object(request), wire.PortChange, _PORT_CHANGE)
    label = body.label.strip() if body.label else None
    await gateway.lifecycle.label_port(user_id, port, label or None)
    return WireResponse(wire.PortLabel(port, label or None))


def _path_port(request: Request) -> int:
    raw = request.path_params["port"]
    # At most 5 significant digits before int(), which refuses strings of over 4300 digits.
    digits = raw.lstrip("0") or "0"
    if not (len(digits) <= 5 and raw.isascii() and raw.isdigit()) or not 1 <= int(digits) <= 65535:
        raise BadRequest("port must be an integer from 1 to 65535")
    return int(digits)


async def list_session_page(request: Request) -> Response:
    """The user's sessions, newest activity first, keyset-paginated (`next_cursor`)."""
    gateway = _gateway(request)
    user_id = await _user(request)
    port = _int_param(request, "port", low=1, high=65535)
    status = request.query_params.get("status") or None
    if status not in (None, "active", "archived"):
        raise BadRequest("status must be active or archived")
    limit = _int_param(request, "limit", low=1, high=200) or 50
    after = _decode_cursor(request.query_params.get("cursor"))
    pinned_raw = request.query_params.get("pinned") or None
    if pinned_raw not in (None, "true", "false"):
        raise BadRequest("pinned must be true or false")
    pinned = None if pinned_raw is None else pinned_raw == "true"
    title_contains = request.query_params.get("q") or None
    if title_contains is not None and (
        len(title_contains) > MAX_TITLE_CHARS or "\0" in title_contains
    ):
        raise BadRequest(f"q must be at most {MAX_TITLE_CHARS} characters, without NUL")
    async with gateway.pool.acquire() as conn:
        page, next_key = await sessions.list_sessions(
            conn,
            user_id,
            port=port,
            status=status,
            after=after,
            limit=limit,
            pinned=pinned,
            title_contains=title_contains,
        )
    cursor = _encode_cursor(next_key) if next_key else None
    return WireResponse(wire.SessionPage([wire.session(s) for s in page], cursor))


async def create_session(request: Request) -> Response:
    """A new active session for the port; the port's previous one is archived (rotation)."""
    gateway = _gateway(request)
    user_id = await _user(request)
    body = convert(await _json_object(request), wire.NewSession, _NEW_SESSION)
    _, session = await gateway.lifecycle.rotate(user_id, body.port, body.title)
    return WireResponse(wire.session(session), status_code=201)


async def get_session(request: Request) -> Response:
    gateway = _gateway(request)
    user_id = await _user(request)
    session_id = _session_id(request)
    async with gateway.pool.acquire() as conn:
        session = await sessions.get_session(conn, user_id, session_id)
    if session is None:
        raise NotFound("no such session")
    return WireResponse(wire.session(session))


async def patch_session(request: Request) -> Response:
    """Rename (`title`, null clears it), pin (`pinned`), archive or unarchive (`status`)."""
    gateway = _gateway(request)
    user_id = await _user(request)
    session_id = _session_id(request)
    body = convert(await _json_object(request), wire.SessionChange, _SESSION_CHANGE)
    change = sessions.Change(
        title=body.title if isinstance(body.title, str) else None,
        clear_title=body.title is None,
        pinned=None if isinstance(body.pinned, UnsetType) else body.pinned,
        status=None if isinstance(body.status, UnsetType) else body.status,
    )
    return await change_session(gateway, user_id, session_id, change)


async def change_session(
    gateway: Gateway, user_id: str, session_id: uuid.UUID, change: sessions.Change
) -> Response:
    """Make `change` to the user's session and answer it; 404 if it is not the user's."""
    session = await gateway.lifecycle.change(user_id, session_id, change)
    if session is None:
        raise NotFound("no such session")
    return WireResponse(wire.session(session))


async def delete_session(request: Request) -> Response:
    """Soft delete: the session and its messages disappear from every read."""
    gateway = _gateway(request)
    if not await gateway.lifecycle.delete(await _user(request), _session_id(request)):
        raise NotFound("no such session")
    return Response(status_code=204)


def _session_id(request: Request) -> uuid.UUID:
    session_id = session_id_or_none(request.path_params["session_id"])
    if session_id is None:
        raise NotFound("no such session")
    return session_id


# The request bodies' rules (gateway/validation.py): one table per body.
_NEW_SESSION = Rules.of(wire.NewSession)
_SESSION_CHANGE = Rules.of(wire.SessionChange)
_PORT_CHANGE = Rules.of(wire.PortChange)


async def _json_object(request: Request, *, limit: int | None = None) -> dict[str, Any]:
    """The body as a JSON object (400 otherwise); with `limit`, read up to that many bytes
    and refused past it (413, naming GATEWAY_MAX_FRAME_BYTES: the limit the sends use)."""
    try:
        body = orjson.loads(await (_bounded_body(request, limit) if limit else request.body()))
    except orjson.JSONDecodeError:
        raise BadRequest("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


async def _bounded_body(request: Request, limit: int) -> bytes:
    too_large = TooLarge(f"the body is over {limit} bytes (GATEWAY_MAX_FRAME_BYTES)")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def get_stats(request: Request) -> Response:
    """Counts of the user's sessions and messages, from counters: constant time."""
    gateway = _gateway(request)
    user_id = await _user(request)
    async with gateway.pool.acquire() as conn:
        counts = await stats.read(conn, user_id)
    return WireResponse(wire.stats_body(counts))


def _encode_cursor(key: tuple[datetime, uuid.UUID]) -> str:
    raw = f"{key[0].isoformat()}|{key[1]}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, _, session_id = raw.partition("|")
        when = datetime.fromisoformat(stamp)
        if when.tzinfo is None:
            raise ValueError("no time zone")
        return when.astimezone(UTC), uuid.UUID(session_id)
    except (ValueError, OverflowError):
        raise BadRequest("cursor is not one this API gave out") from None


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/api/stats", get_stats, methods=["GET"]),
    Route("/api/ports", list_ports, methods=["GET"]),
    Route("/api/ports/{port}", patch_port, methods=["PATCH"]),
    Route("/api/ports/{port}/messages", list_port_messages, methods=["GET"]),
    Route("/api/sessions", list_session_page, methods=["GET"]),
    Route("/api/sessions", create_session, methods=["POST"]),
    Route("/api/sessions/{session_id}", get_session, methods=["GET"]),
    Route("/api/sessions/{session_id}", patch_session, methods=["PATCH"]),
    Route("/api/sessions/{session_id}", delete_session, methods=["DELETE"]),
    Route("/api/sessions/{session_id}/messages", list_messages, methods=["GET"]),
]
