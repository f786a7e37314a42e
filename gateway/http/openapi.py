"""The HTTP API's OpenAPI 3.1 document, served at `GET /openapi.json`.

The response bodies' schemas are generated from their Structs in gateway/wire.py, the same
types the handlers encode them with, so they cannot drift apart. The paths, the parameters and
the request bodies are written here: the handlers validate those by hand, and a document that
states their bounds, enums and nullable fields explicitly is one a fuzzer
(`tests/test_openapi.py`) can hold the API to. Limits come from the handlers' constants where
they have them; the test fails when the app serves a route this document does not describe,
or answers with a status or body it does not allow.

The WebSocket endpoint `/ws` is not here (OpenAPI cannot describe it): `docs/protocol.md` is
its reference. Neither are the UI's static files under `/ui/`.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway import VERSION, wire
from gateway.chat_export import FORMATS as EXPORT_FORMATS
from gateway.chat_format import Chat, OpenAIMessage
from gateway.http.api import MAX_PAGE, MAX_SEQ
from gateway.http.export_api import DEFAULT_FORMAT as DEFAULT_EXPORT_FORMAT
from gateway.http.search_api import DEFAULT_RESULTS as DEFAULT_SEARCH_RESULTS
from gateway.http.search_api import MAX_QUERY_CHARS as MAX_SEARCH_QUERY_CHARS
from gateway.http.search_api import MAX_SEARCH_RESULTS
from gateway.wire import MAX_TITLE_CHARS
from gateway.ws.client_frames import ExtractedFrame, MessageFrame

JSON = "application/json"
MAX_PORT = wire.MAX_PORT
# Bounds the handlers write inline (there are no constants to import for them yet).
MAX_SESSIONS_PAGE = 200
DEFAULT_SESSIONS_PAGE = 50
DEFAULT_MESSAGES_PAGE = 100

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_body(schema: Schema, description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _query(name: str, schema: Schema, description: str, *, required: bool = False) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    }


def _page_limit(maximum: int, default: int | None) -> Schema:
    schema: Schema = {"type": "integer", "minimum": 1, "maximum": maximum}
    if default is not None:
        schema["default"] = default
    return _query("limit", schema, f"At most this many, 1 to {maximum}.")


PORT: Schema = {"type": "integer", "minimum": 1, "maximum": MAX_PORT}
UUID: Schema = {"type": "string", "format": "uuid"}


def _generated() -> dict[str, Schema]:
    """The bodies' components, from gateway/wire.py's Structs (and what they nest)."""
    _, components = msgspec.json.schema_components(
        wire.BODIES + wire.REQUESTS, ref_template="#/components/schemas/{name}"
    )
    return components


# Every body comes from its Struct: the request bodies are decoded by theirs too.
def _exported() -> dict[str, Schema]:
    """The export's JSON bodies: the chat format (gateway/chat_format.py, which the import
    reads too) and the LLM message list's item."""
    _, components = msgspec.json.schema_components(
        (Chat, OpenAIMessage), ref_template="#/components/schemas/{name}"
    )
    return components


def _sent() -> dict[str, Schema]:
    """The bodies of the HTTP sends (gateway/http/send_api.py): a `message` frame and an
    `extracted` frame less `type` and `port`, from the frames' own Structs."""
    _, components = msgspec.json.schema_components(
        (MessageFrame, ExtractedFrame), ref_template="#/components/schemas/{name}"
    )
    for frame, name in (("MessageFrame", "SendMessage"), ("ExtractedFrame", "SendBatch")):
        schema = components.pop(frame)
        for field in ("type", "port"):
            schema["properties"].pop(field)
        schema["required"] = [f for f in schema["required"] if f not in ("type", "port")]
        schema["title"] = name
        components[name] = schema
    return components


SCHEMAS: dict[str, Schema] = {
    **_generated(),
    **_exported(),
    **_sent(),
}


RESPONSES: dict[str, Schema] = {
    "BadRequest": _json_body(_ref("Error"), "A parameter or the body is invalid."),
    "Unauthorized": {
        "description": "A token is required (or forged, or expired). Never in local mode.",
        "headers": {
            "WWW-Authenticate": {"required": True, "schema": {"const": "Bearer"}},
        },
        "content": {JSON: {"schema": _ref("Error")}},
    },
    "NotFound": _json_body(
        _ref("Error"), "No such session, or another user's: the two are indistinguishable."
    ),
    "Forbidden": _json_body(
        _ref("Error"),
        "Operators only: in token mode, a token with the `admin` claim or a user named in"
        " GATEWAY_ADMIN_USERS.",
    ),
}


def _answers(ok_status: str, ok: Schema, *errors: str) -> dict[str, Any]:
    """An operation's responses: the success one and the shared error responses named."""
    codes = {"BadRequest": "400", "Unauthorized": "401", "Forbidden": "403", "NotFound": "404"}
    answers: dict[str, Any] = {ok_status: ok}
    for name in errors:
        answers[codes[name]] = {"$ref": f"#/components/responses/{name}"}
    return answers


SESSION_ID: Schema = {
    "name": "session_id",
    "in": "path",
    "required": True,
    "description": "A session id; anything that is not a uuid answers 404 like a missing one.",
    "schema": UUID,
}
PUBLIC: list[Schema] = []  # operations anyone may call, in any mode

SEND_BODY: Schema = {
    "required": True,
    "content": {
        JSON: {"schema": {"oneOf": [_ref("SendMessage"), _ref("SendBatch")]}},
    },
}


def _send_answers() -> dict[str, Any]:
    """A send's answers: the ack's body, or the frame errors' statuses."""
    answers = _answers(
        "200",
        _json_body(
            {
                "type": "object",
                "properties": {
                    "session_id": UUID,
                    "port": PORT,
                    "durability": {"enum": ["buffered", "persisted"]},
                    "results": {"type": "array", "items": {"type": "object"}},
                },
                "required": ["session_id", "port", "durability", "results"],
            },
            "The `ack`'s body: each message's id, seq and whether it was a duplicate or an"
            " edit, and whether the messages are buffered or persisted.",
        ),
        "BadRequest",
        "Unauthorized",
    )
    for status, what in (
        ("413", "Over GATEWAY_MAX_FRAME_BYTES, or a content over GATEWAY_MAX_CONTENT_BYTES."),
        ("429", "Past a rate limit: `details.retry_after_ms`, and `Retry-After`."),
        ("503", "Overloaded or storage down: `details.retry_after_ms`, and `Retry-After`."),
    ):
        answers[status] = _json_body(_ref("Error"), what)
    return answers


_SEARCH_PARAMETERS: list[Schema] = [
    _query(
        "q",
        {
            "type": "string",
            "maxLength": MAX_SEARCH_QUERY_CHARS,
            # Something besides whitespace, and no NUL.
            "pattern": "^[^\\x00]*[^\\s\\x00][^\\x00]*$",
        },
        'Words in websearch syntax (`"a phrase"`, `or`, `-not`).',
        required=True,
    ),
    _query("port", PORT, "Only this port's messages."),
    _page_limit(MAX_SEARCH_RESULTS, DEFAULT_SEARCH_RESULTS),
]


def _paths() -> dict[str, Any]:
    session_ok = _json_body(_ref("Session"), "The session.")
    return {
        "/": {
            "get": {
                "summary": "The web UI",
                "operationId": "ui",
                "security": PUBLIC,
                "responses": {
                    "200": {
                        "description": "The single page (strict Content-Security-Policy).",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/ui/ide-ports.js": {
            "get": {
                "summary": "The IDE debug-port ranges, as an ES module for the web UI",
                "operationId": "ui_ide_ports",
                "security": PUBLIC,
                "responses": {
                    "200": {
                        "description": "`export const IDE_PORT_RANGES = [[first, last, ide], ...]`,"
                        " generated from the gateway's own table.",
                        "content": {"text/javascript": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness: the process answers",
                "operationId": "healthz",
                "security": PUBLIC,
                "responses": {"200": _json_body(_ref("Health"), "Alive.")},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: PostgreSQL, Redis and the writer's lag",
                "operationId": "readyz",
                "security": PUBLIC,
                "responses": {
                    "200": _json_body(_ref("Ready"), "Ready to serve."),
                    "503": _json_body(_ref("Unready"), "A dependency is down or lagging."),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "operationId": "metrics",
                "security": PUBLIC,
                "responses": {
                    "200": {
                        "description": "The Prometheus text exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "operationId": "openapi",
                "security": PUBLIC,
                "responses": {"200": _json_body({"type": "object"}, "OpenAPI 3.1.")},
            }
        },
        "/api/ports": {
            "get": {
                "summary": "The ports the user has sessions on",
                "operationId": "listPorts",
                "responses": _answers(
                    "200", _json_body(_ref("PortList"), "Ports by number."), "Unauthorized"
                ),
            }
        },
        "/api/ports/{port}": {
            "patch": {
                "summary": "Label the port (null or an empty string takes the label away)",
                "operationId": "labelPort",
                "parameters": [{"name": "port", "in": "path", "required": True, "schema": PORT}],
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": _ref("PortChange")}},
                },
                "responses": _answers(
                    "200",
                    _json_body(_ref("PortLabel"), "The port's label now."),
                    "BadRequest",
                    "Unauthorized",
                ),
            }
        },
        "/api/ports/{port}/messages": {
            "post": {
                "summary": "Send messages to the port's active session (made if it has none),"
                " as a WebSocket `message` or `extracted` frame would: same validation, dedup by"
                " client id, edits, limits and ack levels (`durable`)",
                "operationId": "sendToPort",
                "parameters": [{"name": "port", "in": "path", "required": True, "schema": PORT}],
                "requestBody": SEND_BODY,
                "responses": _send_answers(),
            },
            "get": {
                "summary": "A port's newest messages across its sessions, newest first",
                "operationId": "listPortMessages",
                "parameters": [
                    {"name": "port", "in": "path", "required": True, "schema": PORT},
                    _page_limit(MAX_PAGE, DEFAULT_MESSAGES_PAGE),
                ],
                "responses": _answers(
                    "200",
                    _json_body(_ref("PortMessages"), "Newest first."),
                    "BadRequest",
                    "Unauthorized",
                ),
            },
        },
        "/api/sessions": {
            "get": {
                "summary": "The user's sessions, newest activity first",
                "operationId": "listSessions",
                "parameters": [
                    _query("port", PORT, "Only this port's sessions."),
                    _query("status", {"enum": ["active", "archived"]}, "Only these."),
                    _query("pinned", {"type": "boolean"}, "Only pinned (true) or unpinned."),
                    _query(
                        "q",
                        {"type": "string", "maxLength": MAX_TITLE_CHARS},
                        "A case-insensitive title substring, taken literally.",
                    ),
                    _page_limit(MAX_SESSIONS_PAGE, DEFAULT_SESSIONS_PAGE),
                    _query("cursor", {"type": "string"}, "A `next_cursor` this API gave out."),
                ],
                "responses": _answers(
                    "200",
                    _json_body(_ref("SessionPage"), "One page."),
                    "BadRequest",
                    "Unauthorized",
                ),
            },
            "post": {
                "summary": "A new active session for the port (the old one is archived)",
                "operationId": "createSession",
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": _ref("NewSession")}},
                },
                "responses": _answers(
                    "201",
                    _json_body(_ref("Session"), "The new active session."),
                    "BadRequest",
                    "Unauthorized",
                ),
            },
        },
        "/api/sessions/{session_id}": {
            "parameters": [SESSION_ID],
            "get": {
                "summary": "One session",
                "operationId": "getSession",
                "responses": _answers("200", session_ok, "Unauthorized", "NotFound"),
            },
            "patch": {
                "summary": "Rename, pin, archive or unarchive",
                "operationId": "changeSession",
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": _ref("SessionChange")}},
                },
                "responses": _answers("200", session_ok, "BadRequest", "Unauthorized", "NotFound"),
            },
            "delete": {
                "summary": "Soft delete: the session and its messages vanish from every read",
                "operationId": "deleteSession",
                "responses": _answers(
                    "204", {"description": "Deleted."}, "Unauthorized", "NotFound"
                ),
            },
        },
        "/api/sessions/{session_id}/messages": {
            "parameters": [SESSION_ID],
            "post": {
                "summary": "Send messages to this session, while it is its port's active one"
                " (an archived one is a 400), as to its port",
                "operationId": "sendToSession",
                "requestBody": SEND_BODY,
                "responses": {
                    **_send_answers(),
                    "404": {"$ref": "#/components/responses/NotFound"},
                },
            },
            "get": {
                "summary": "A session's messages in seq order",
                "operationId": "listMessages",
                "parameters": [
                    _query(
                        "after_seq",
                        {"type": "integer", "minimum": 0, "maximum": MAX_SEQ},
                        "Messages after this seq (the default: from the start).",
                    ),
                    _query(
                        "before_seq",
                        {"type": "integer", "minimum": 1, "maximum": MAX_SEQ},
                        "Messages before this seq; alone, the page just before it.",
                    ),
                    _page_limit(MAX_PAGE, DEFAULT_MESSAGES_PAGE),
                ],
                "responses": _answers(
                    "200",
                    _json_body(_ref("MessagePage"), "Ascending seq order."),
                    "BadRequest",
                    "Unauthorized",
                    "NotFound",
                ),
            },
        },
        "/api/sessions/{session_id}/export": {
            "parameters": [SESSION_ID],
            "get": {
                "summary": "The session as a file to download, streamed: a Markdown transcript,"
                " the chat JSON `chat-gateway import` reads, or an LLM message list",
                "operationId": "exportSession",
                "parameters": [
                    _query(
                        "format",
                        {"enum": list(EXPORT_FORMATS), "default": DEFAULT_EXPORT_FORMAT},
                        "`markdown`, `json` (the chat format, docs/import-export.md) or"
                        " `openai` (`[{role, content}, ...]`).",
                    )
                ],
                "responses": _answers(
                    "200",
                    {
                        "description": "An attachment named after the session.",
                        "headers": {
                            "Content-Disposition": {
                                "required": True,
                                "schema": {"type": "string", "pattern": "^attachment; filename="},
                            }
                        },
                        "content": {
                            "text/markdown": {"schema": {"type": "string"}},
                            JSON: {
                                "schema": {
                                    "anyOf": [
                                        _ref("Chat"),
                                        {"type": "array", "items": _ref("OpenAIMessage")},
                                    ]
                                }
                            },
                        },
                    },
                    "BadRequest",
                    "Unauthorized",
                    "NotFound",
                ),
            },
        },
        "/api/search": {
            "get": {
                "summary": "Full-text search over the user's messages, ranked",
                "operationId": "search",
                "parameters": _SEARCH_PARAMETERS,
                "responses": _answers(
                    "200",
                    _json_body(_ref("SearchResults"), "Best match first."),
                    "BadRequest",
                    "Unauthorized",
                ),
            }
        },
        "/api/sessions/search": {
            "get": {
                "summary": "The seed's alias of /api/search: the same parameters and answer",
                "operationId": "searchAlias",
                "parameters": _SEARCH_PARAMETERS,
                "responses": _answers(
                    "200",
                    _json_body(_ref("SearchResults"), "Best match first."),
                    "BadRequest",
                    "Unauthorized",
                ),
            }
        },
        "/api/sessions/{session_id}/archive": {
            "parameters": [SESSION_ID],
            "post": {
                "summary": 'The seed\'s alias of PATCH {"status": "archived"}',
                "operationId": "archiveSession",
                "responses": _answers("200", session_ok, "Unauthorized", "NotFound"),
            },
        },
        "/api/sessions/{session_id}/pin": {
            "parameters": [SESSION_ID],
            "post": {
                "summary": 'The seed\'s alias of PATCH {"pinned": true}',
                "operationId": "pinSession",
                "responses": _answers("200", session_ok, "Unauthorized", "NotFound"),
            },
            "delete": {
                "summary": 'PATCH {"pinned": false}, as the pin\'s removal',
                "operationId": "unpinSession",
                "responses": _answers("200", session_ok, "Unauthorized", "NotFound"),
            },
        },
        "/api/stats/global": {
            "get": {
                "summary": "Users, sessions and messages over every user, for operators,"
                " read in constant time",
                "operationId": "globalTotals",
                "responses": _answers(
                    "200",
                    _json_body(_ref("GlobalTotals"), "The totals."),
                    "Unauthorized",
                    "Forbidden",
                ),
            }
        },
        "/api/health/database": {
            "get": {
                "summary": "The database's health, for operators: size, largest tables and"
                " indexes, index use, cache hit ratio, connections, this process's pool, and"
                " the slowest statements (pg_stat_statements)",
                "operationId": "databaseHealth",
                "responses": _answers(
                    "200",
                    _json_body(_ref("DatabaseHealth"), "The report."),
                    "Unauthorized",
                    "Forbidden",
                ),
            }
        },
        "/api/health/database/statements/reset": {
            "post": {
                "summary": "Forget this database's statement statistics, for operators",
                "operationId": "resetStatements",
                "responses": _answers(
                    "200",
                    _json_body(
                        _ref("StatementsReset"),
                        "Whether they were reset, and why not when they were not.",
                    ),
                    "Unauthorized",
                    "Forbidden",
                ),
            }
        },
        "/api/stats": {
            "get": {
                "summary": "Counts of sessions and messages, read in constant time",
                "operationId": "stats",
                "responses": _answers(
                    "200", _json_body(_ref("Stats"), "The user's counts."), "Unauthorized"
                ),
            }
        },
    }


def document() -> dict[str, Any]:
    """A fresh copy of the document (callers such as schemathesis may mutate it)."""
    doc: dict[str, Any] = orjson.loads(_encoded())
    return doc


@functools.cache
def _encoded() -> bytes:
    return orjson.dumps(
        {
            "openapi": "3.1.0",
            "info": {
                "title": "chat-gateway",
                "version": VERSION,
                "description": 'The HTTP API. Errors are `{"error": {"code", "message"}}`'
                " with the matching status; times are RFC 3339 in UTC. The WebSocket protocol"
                " at `/ws` is described in docs/protocol.md.",
            },
            "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
            # A bearer header or a `token` query parameter; neither in local single-user mode
            # (the empty requirement), where every request is the local user.
            "security": [{"bearer": []}, {"token": []}, {}],
            "paths": _paths(),
            "components": {
                "schemas": SCHEMAS,
                "responses": RESPONSES,
                "securitySchemes": {
                    "bearer": {
                        "type": "http",
                        "scheme": "bearer",
                        "description": "A token from `chat-gateway token --user U`.",
                    },
                    "token": {
                        "type": "apiKey",
                        "in": "query",
                        "name": "token",
                        "description": "The same token, for clients that cannot set headers.",
                    },
                },
            },
        }
    )


async def openapi_json(request: Request) -> Response:
    return Response(_encoded(), media_type=JSON)


routes: list[BaseRoute] = [Route("/openapi.json", openapi_json, methods=["GET"])]
