"""Sending over HTTP, for scripts and hooks that hold no socket:
`POST /api/ports/{port}/messages` and `POST /api/sessions/{id}/messages`.

The body is what a WebSocket `message` frame holds, less `type` and `port` (the URL names the
port): `{"content": "…", "role": "user", "id": "client-1", "durable": true, …}`; or a batch,
`{"messages": [...]}`, as an `extracted` frame holds them. It goes through everything a frame
goes through, so nothing differs but the transport: the frame parser (gateway/ws/protocol.py:
the same validation, limits and errors), the rate limits (the user's, and one bucket at the
per-connection rate for all the user's HTTP sends), and the ingest (dedup by client id or
fingerprint, edits, `durable` answering once PostgreSQL has the messages). The answer is the
`ack`'s body, `{session_id, port, durability, results}`, 200 whether the messages were new or
duplicates (a resend is never stored twice); refusals are the frame errors' HTTP statuses, a
"try again later" with `Retry-After`.

A session's endpoint sends to that session only while it is its port's active one (messages
always go to a port's active session): an archived one is a 400 saying so. Should the port
rotate between the check and the send, the ack's `session_id` names where the messages went.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.context import Gateway
from gateway.errors import BadRequest, NotFound
from gateway.http.api import _gateway, _json_object, _path_port, _session_id, _user
from gateway.ws.protocol import Ingest, parse_frame
from storage import sessions


async def send_to_port(request: Request) -> Response:
    """Messages to the port's active session (made if the port has none)."""
    gateway = _gateway(request)
    user_id = await _user(request)
    return await _send(request, gateway, user_id, _path_port(request))


async def send_to_session(request: Request) -> Response:
    """Messages to this session, while it is its port's active one."""
    gateway = _gateway(request)
    user_id = await _user(request)
    async with gateway.pool.acquire() as conn:
        session = await sessions.get_session(conn, user_id, _session_id(request))
    if session is None:
        raise NotFound("no such session")
    if session.status != "active":
        raise BadRequest(
            f"session {session.id} is {session.status}: messages go to a port's active"
            f" session; unarchive it first (PATCH status active), or send to"
            f" /api/ports/{session.port}/messages"
        )
    return await _send(request, gateway, user_id, session.port)


async def _send(request: Request, gateway: Gateway, user_id: str, port: int) -> Response:
    body = await _json_object(request, limit=gateway.limits.max_frame_bytes)
    for field in ("type", "port"):
        if field in body:
            raise BadRequest(f"the body holds no {field}: the URL says where messages go")
    kind = "extracted" if "messages" in body else "message"
    command = parse_frame(
        orjson.dumps({"type": kind, "port": port, **body}).decode(), gateway.limits
    )
    assert isinstance(command, Ingest)  # the frame's type was set above
    gateway.connection_parts.rate_limits.check_http_messages(user_id, len(command.items))
    ack = orjson.loads((await gateway.ingestor.start_ingest(user_id, command)).text)
    return Response(
        orjson.dumps({k: v for k, v in ack.items() if k not in ("type", "ref")}),
        media_type="application/json",
    )


routes = [
    Route("/api/ports/{port}/messages", send_to_port, methods=["POST"]),
    Route("/api/sessions/{session_id}/messages", send_to_session, methods=["POST"]),
]
