"""`GET /api/search?q=&port=&limit=`: full-text search over the user's messages.

Answers `{"results": [...]}` best match first, each result with `session_id`, `port`, `seq`,
`message_id`, `role`, `created_at`, `snippet` (plain text) with `highlights` (`[start, end)`
code-point offsets of the matches in it) and `rank`, and `{"sessions": [...]}`: up to
`SESSION_RESULTS` sessions whose name (title, else automatic title) matches, most recently
active first, each with the name and its matches' offsets. Search reads the index the indexer fills
after the writer's commit, so a message acked a moment ago may not be found yet.

Input rules (docs/search.md): a missing or blank `q`, one over `MAX_QUERY_CHARS` characters
or with a NUL character is a 400 `bad_request`; any other text is a valid query in websearch
syntax, and one without a single searchable word (`&|!():*`) simply matches nothing.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import wire
from gateway.errors import BadRequest
from gateway.http.api import WireResponse, _gateway, _int_param, _user
from storage.search import search as search_messages

MAX_QUERY_CHARS = 1000
DEFAULT_RESULTS = 20
MAX_SEARCH_RESULTS = 100
SESSION_RESULTS = 5  # sessions named by the query, listed above the messages


async def search(request: Request) -> Response:
    """The user's messages best matching `q`, optionally on one port."""
    gateway = _gateway(request)
    user_id = await _user(request)
    q = request.query_params.get("q", "")
    if not q.strip():
        raise BadRequest("q must contain something to search for")
    if len(q) > MAX_QUERY_CHARS:
        raise BadRequest(f"q must be at most {MAX_QUERY_CHARS} characters")
    if "\0" in q:
        raise BadRequest("q must not contain NUL characters")
    port = _int_param(request, "port", low=1, high=65535)
    limit = _int_param(request, "limit", low=1, high=MAX_SEARCH_RESULTS) or DEFAULT_RESULTS
    async with gateway.pool.acquire() as conn:
        found = await search_messages(
            conn, user_id, q, port=port, limit=limit, session_limit=SESSION_RESULTS
        )
    return WireResponse(
        wire.SearchResults(
            [wire.search_result(hit) for hit in found.messages],
            [wire.session_match(hit) for hit in found.sessions],
        )
    )


routes = [Route("/api/search", search, methods=["GET"])]
