"""The HTTP API: JSON endpoints over the same storage the WebSocket path writes.

Every error is `{"error": {"code", "message"}}` with the matching status. Another user's
session answers exactly like a missing one (404), so its existence never leaks.
"""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.auth import authenticate
from gateway.context import Gateway
from gateway.errors import BadRequest, GatewayError, NotFound
from gateway.ingest import session_id_or_none
from storage import sessions
from storage.messages import session_messages

MAX_PAGE = 1000


class OrjsonResponse(JSONResponse):
    """JSON via orjson: fast, and it encodes uuids and datetimes (RFC 3339, `Z`) natively."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=str, option=orjson.OPT_UTC_Z)


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


async def gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
    return OrjsonResponse(
        error_body(exc.code, exc.message), status_code=exc.http_status, headers=headers
    )


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "bad_request"}.get(exc.status_code, "bad_request")
    return OrjsonResponse(error_body(code, str(exc.detail)), status_code=exc.status_code)


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def _user(request: Request) -> str:
    return authenticate(
        _gateway(request).settings,
        request.headers.get("authorization"),
        request.query_params.get("token"),
    )


def _int_param(request: Request, name: str, *, low: int, high: int | None = None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None
    if value < low or (high is not None and value > high):
        bound = f" and at most {high}" if high is not None else ""
        raise BadRequest(f"{name} must be at least {low}{bound}")
    return value


async def healthz(request: Request) -> Response:
    """Liveness: the process answers. Readiness (dependencies) is `/readyz`."""
    return OrjsonResponse({"status": "ok"})


async def list_messages(request: Request) -> Response:
    """A session's messages in seq order, keyset-paginated by seq."""
    gateway = _gateway(request)
    user_id = _user(request)
    session_id = session_id_or_none(request.path_params["session_id"])
    after_seq = _int_param(request, "after_seq", low=0)
    before_seq = _int_param(request, "before_seq", low=1)
    limit = _int_param(request, "limit", low=1, high=MAX_PAGE) or 100
    async with gateway.pool.acquire() as conn:
        session = (
            await sessions.get_session(conn, user_id, session_id) if session_id else None
        )
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
    return OrjsonResponse(
        {"session_id": session.id, "messages": page.messages, "has_more": page.has_more}
    )


async def list_ports(request: Request) -> Response:
    """The ports the user has used: IDE type, active session, online (an IDE serves it)."""
    gateway = _gateway(request)
    user_id = _user(request)
    async with gateway.pool.acquire() as conn:
        ports = await sessions.user_ports(conn, user_id)
    online = await gateway.presence.online(user_id, [p.port for p in ports])
    return OrjsonResponse(
        {
            "ports": [
                {
                    "port": p.port,
                    "ide_type": p.ide_type,
                    "online": p.port in online,
                    "active_session": p.active.to_json() if p.active else None,
                    "last_activity_at": p.last_activity_at,
                }
                for p in ports
            ]
        }
    )


async def list_session_page(request: Request) -> Response:
    """The user's sessions, newest activity first, keyset-paginated (`next_cursor`)."""
    gateway = _gateway(request)
    user_id = _user(request)
    port = _int_param(request, "port", low=1, high=65535)
    status = request.query_params.get("status") or None
    if status not in (None, "active", "archived"):
        raise BadRequest("status must be active or archived")
    limit = _int_param(request, "limit", low=1, high=200) or 50
    after = _decode_cursor(request.query_params.get("cursor"))
    async with gateway.pool.acquire() as conn:
        page, next_key = await sessions.list_sessions(
            conn, user_id, port=port, status=status, after=after, limit=limit
        )
    return OrjsonResponse(
        {
            "sessions": [s.to_json() for s in page],
            "next_cursor": _encode_cursor(next_key) if next_key else None,
        }
    )


def _encode_cursor(key: tuple[datetime, uuid.UUID]) -> str:
    raw = f"{key[0].isoformat()}|{key[1]}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, _, session_id = raw.partition("|")
        return datetime.fromisoformat(stamp), uuid.UUID(session_id)
    except ValueError:
        raise BadRequest("cursor is not one this API gave out") from None


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/api/ports", list_ports, methods=["GET"]),
    Route("/api/sessions", list_session_page, methods=["GET"]),
    Route("/api/sessions/{session_id}/messages", list_messages, methods=["GET"]),
]
