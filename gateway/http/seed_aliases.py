"""The seed documents' REST shapes, kept as aliases of this API's own where they do not
conflict with it (docs/protocol.md lists them):

* `POST /api/sessions/{id}/archive` is `PATCH /api/sessions/{id}` with `{"status": "archived"}`;
* `POST /api/sessions/{id}/pin` is `{"pinned": true}`, and `DELETE` of it `{"pinned": false}`;
* `GET /api/sessions/search` is `GET /api/search`, same parameters and answer.

Each answers what its original answers (the changed session; the search results). They take
no body: what they do is in their path.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.http.api import _gateway, _session_id, _user, change_session
from gateway.http.search_api import search
from storage import sessions


async def _change(request: Request, change: sessions.Change) -> Response:
    user_id = await _user(request)
    return await change_session(_gateway(request), user_id, _session_id(request), change)


async def archive(request: Request) -> Response:
    """Archive the session (the seed's shape of `PATCH {"status": "archived"}`)."""
    return await _change(request, sessions.Change(status="archived"))


async def pin(request: Request) -> Response:
    """Pin the session (the seed's shape of `PATCH {"pinned": true}`)."""
    return await _change(request, sessions.Change(pinned=True))


async def unpin(request: Request) -> Response:
    """Unpin the session (`PATCH {"pinned": false}`)."""
    return await _change(request, sessions.Change(pinned=False))


# Before the API's `/api/sessions/{session_id}` routes, which would read "search" as an id.
routes = [
    Route("/api/sessions/search", search, methods=["GET"]),
    Route("/api/sessions/{session_id}/archive", archive, methods=["POST"]),
    Route("/api/sessions/{session_id}/pin", pin, methods=["POST"]),
    Route("/api/sessions/{session_id}/pin", unpin, methods=["DELETE"]),
]
