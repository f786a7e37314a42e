"""`GET /api/sessions/{id}/export?format=markdown|json|openai`: one session as a file.

A download (`Content-Disposition: attachment` with a name made from the session's name),
streamed a page of messages at a time (gateway/chat_export.py), so a long session is never
built in memory. `format` defaults to `markdown`; another value is a 400 naming the three.
Another user's session is a 404 like a missing one. The status and headers go out before
the first page is read: a failure after that (PostgreSQL gone mid-way) can only cut the
download short, which the client sees as a truncated body, and is logged.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway.chat_export import FORMATS, MEDIA_TYPES, Format, export, file_name
from gateway.errors import BadRequest, NotFound
from gateway.http.api import _gateway, _session_id, _user
from storage import sessions

log = logging.getLogger(__name__)

DEFAULT_FORMAT: Format = "markdown"


async def export_session(request: Request) -> Response:
    """The session in the format asked for, as an attachment."""
    gateway = _gateway(request)
    user_id = await _user(request)
    fmt = request.query_params.get("format") or DEFAULT_FORMAT
    if fmt not in FORMATS:
        raise BadRequest(f"format must be one of {', '.join(FORMATS)}")
    session_id = _session_id(request)
    async with gateway.pool.acquire() as conn:
        session = await sessions.get_session(conn, user_id, session_id)
    if session is None:
        raise NotFound("no such session")
    chosen: Format = fmt  # type: ignore[assignment]  # checked against FORMATS above
    pieces = export(gateway.pool, gateway.redis, gateway.keys, [session], chosen)
    return StreamingResponse(
        _logged(pieces, str(session.id)),
        media_type=MEDIA_TYPES[chosen],
        headers={
            "Content-Disposition": f'attachment; filename="{file_name(session, chosen)}"',
            "Cache-Control": "no-store",
        },
    )


async def _logged(pieces: AsyncIterator[bytes], session_id: str) -> AsyncIterator[bytes]:
    try:
        async for piece in pieces:
            if piece:
                yield piece
    except Exception:
        log.exception(
            "export of session %s failed after it started; the download is cut", session_id
        )
        raise


routes = [Route("/api/sessions/{session_id}/export", export_session, methods=["GET"])]
