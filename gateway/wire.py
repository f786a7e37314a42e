"""The HTTP API's response bodies, declared once as msgspec Structs.

Each Struct is both the encoder of a body and, through `msgspec.json.schema_components`, its
component in the OpenAPI document (gateway/http/openapi.py), so the document cannot drift from
what the handlers send; tests/test_openapi.py holds both to the running app. Bounds are
`msgspec.Meta` annotations: msgspec only checks them when decoding, so here they document
what the handlers guarantee (and the fuzz test checks it).

Storage returns its own dataclasses; the functions here shape them for clients, for the HTTP
bodies here and for the WebSocket frames (gateway/ws/frames.py embeds `Message` and `Session`).
Encoding is msgspec's:
uuids (asyncpg's too) as their text, datetimes as RFC 3339 with `Z` for UTC, `None` as null:
the same bytes orjson wrote before with `OPT_UTC_Z`. Every field is required, so null never
turns into an absent key.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

import msgspec
from msgspec import UNSET, UnsetType

from gateway.errors import ErrorCode

if TYPE_CHECKING:  # only converted from: this module needs no storage code to load
    from storage import health, messages, search, sessions, stats

# ---- the vocabulary both directions and both paths share ---------------------------------

Role = Literal["assistant", "system", "tool", "user"]
ContentType = Literal["code", "json", "markdown", "text"]
Source = Literal["ide_extraction", "user_input"]
ClientKind = Literal["ide", "tool", "ui"]
ROLES: frozenset[str] = frozenset(get_args(Role))
CONTENT_TYPES: frozenset[str] = frozenset(get_args(ContentType))
SOURCES: frozenset[str] = frozenset(get_args(Source))
CLIENT_KINDS: frozenset[str] = frozenset(get_args(ClientKind))
MAX_REF_CHARS = 64
MAX_CLIENT_ID_CHARS = 128
MAX_TITLE_CHARS = 200
MAX_PORT_LABEL_CHARS = 80
MAX_PORT = 65535
MAX_SEQ = 2**63 - 1  # seq is a PostgreSQL bigint: a larger one cannot name a message

# (first port, last port, IDE type): the debug-port ranges the IDE extensions use.
IDE_PORT_RANGES = ((9222, 9231, "cursor"), (9232, 9241, "vscode"), (9242, 9251, "windsurf"))


def ide_type_for_port(port: int) -> str:
    """The IDE type a port implies when the client does not say."""
    for first, last, name in IDE_PORT_RANGES:
        if first <= port <= last:
            return name
    return "unknown"


# ---- the shapes clients are sent ---------------------------------------------------------
# Storage hands over plain `str` for these: the type stays str, the schema names the values.
RoleText = Annotated[str, msgspec.Meta(extra_json_schema={"enum": sorted(ROLES)})]
ContentTypeText = Annotated[str, msgspec.Meta(extra_json_schema={"enum": sorted(CONTENT_TYPES)})]
# What a stored message's `source` may be: what clients send, and `import` for the messages
# `chat-gateway import` wrote (storage/transfer.py: never sent by a client).
STORED_SOURCES: frozenset[str] = SOURCES | {"import"}
SourceText = Annotated[str, msgspec.Meta(extra_json_schema={"enum": sorted(STORED_SOURCES)})]

PortNumber = Annotated[int, msgspec.Meta(ge=1, le=MAX_PORT)]
Count = Annotated[int, msgspec.Meta(ge=0)]
Seq = Annotated[int, msgspec.Meta(ge=1)]
Time = Annotated[datetime, msgspec.Meta(tz=True)]
# Message and session ids that storage hands over as text.
UuidText = Annotated[str, msgspec.Meta(extra_json_schema={"format": "uuid"})]
IdeType = Annotated[str, msgspec.Meta(min_length=1)]
SessionStatusName = Literal["active", "archived"]
SessionStatus = Annotated[str, msgspec.Meta(extra_json_schema={"enum": ["active", "archived"]})]


class _Body(msgspec.Struct, forbid_unknown_fields=True):
    """Base of every body: `forbid_unknown_fields` makes each schema closed
    (`additionalProperties: false`), which is what lets the fuzz test catch a stray field."""


class ErrorDetail(_Body):
    code: ErrorCode
    message: str
    details: Annotated[
        dict[str, Any] | UnsetType,
        msgspec.Meta(description="More, for some codes: `retry_after_ms` for a try-again-later."),
    ] = UNSET


class Error(_Body):
    """Every error answer: the contract's code and a message for people."""

    error: ErrorDetail


class Session(_Body):
    """A session (no user id: clients only ever see their own)."""

    id: uuid.UUID
    port: PortNumber
    ide_type: IdeType
    title: Annotated[str, msgspec.Meta(max_length=MAX_TITLE_CHARS)] | None
    status: SessionStatus
    pinned: bool
    message_count: Count
    last_message_at: Time | None
    created_at: Time
    updated_at: Time
    auto_title: Annotated[
        str | None,
        msgspec.Meta(
            description="The first line of the session's first user message (at most 80"
            " characters), set once it is stored; null before. Clients show `title`, else this."
        ),
    ] = None
    preview: Annotated[
        str | None,
        msgspec.Meta(
            description="The first words of the session's last stored message (markdown's code,"
            " bold, strike, heading and quote marks dropped, white space collapsed, at most 120"
            " characters); null while it has none."
        ),
    ] = None
    preview_role: Annotated[
        RoleText | None, msgspec.Meta(description="The role of that last message.")
    ] = None


class SessionPage(_Body):
    sessions: list[Session]
    next_cursor: Annotated[
        Annotated[str, msgspec.Meta(min_length=1)] | None,
        msgspec.Meta(description="Pass back as `cursor` for the next page; null on the last page."),
    ]


class Message(_Body):
    """A message of a session, committed or still buffered (read your writes)."""

    id: Annotated[UuidText, msgspec.Meta(description="The server's id of the message (a UUIDv7).")]
    seq: Annotated[Seq, msgspec.Meta(description="Position in the session: 1, 2, …")]
    client_id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_CLIENT_ID_CHARS)] | None
    role: RoleText
    content: str
    content_type: ContentTypeText
    source: SourceText
    timestamp: Annotated[Time | None, msgspec.Meta(description="The client's timestamp, in UTC.")]
    created_at: Time
    edited_at: Time | None
    # Decoded JSON, not msgspec.Raw: a stored message's metadata is jsonb text, whose spacing
    # differs from the compact form clients have always been sent.
    metadata: Annotated[
        Any,
        msgspec.Meta(
            description="As the client sent it; `{}` if none.", extra_json_schema={"type": "object"}
        ),
    ]


class PortMessage(Message):
    """A message of one of the port's sessions, with that session's id."""

    session_id: UuidText


class MessagePage(_Body):
    session_id: uuid.UUID
    messages: list[Message]
    has_more: Annotated[bool, msgspec.Meta(description="The page was cut at `limit`.")]


class PortMessages(_Body):
    port: PortNumber
    messages: list[PortMessage]


class Port(_Body):
    port: PortNumber
    ide_type: IdeType
    online: Annotated[bool, msgspec.Meta(description="An IDE connection serves the port.")]
    active_session: Session | None
    last_activity_at: Time
    label: Annotated[
        str | None, msgspec.Meta(description="The user's name for the port; null: none given.")
    ] = None


class PortList(_Body):
    ports: list[Port]


class SearchResult(_Body):
    session_id: uuid.UUID
    port: PortNumber
    seq: Seq
    message_id: uuid.UUID
    role: RoleText
    created_at: Time
    snippet: Annotated[str, msgspec.Meta(description="Plain text around the best matches.")]
    highlights: Annotated[
        list[tuple[Count, Count]],
        msgspec.Meta(description="[start, end) code-point offsets of the matches in `snippet`."),
    ]
    rank: Annotated[float, msgspec.Meta(ge=0)]
    session_title: Annotated[
        str | None, msgspec.Meta(description="The session's title; null when it has none.")
    ] = None
    session_created_at: Time | None = None
    session_auto_title: Annotated[
        str | None, msgspec.Meta(description="The session's automatic title (see Session).")
    ] = None


class SessionMatch(_Body):
    """A session whose name matches the query."""

    session: Session
    name: Annotated[str, msgspec.Meta(description="The name matched: `title`, else `auto_title`.")]
    highlights: Annotated[
        list[tuple[Count, Count]],
        msgspec.Meta(description="[start, end) code-point offsets of the matches in `name`."),
    ]


class SearchResults(_Body):
    results: list[SearchResult]
    sessions: Annotated[
        list[SessionMatch],
        msgspec.Meta(description="Sessions whose name matches, most recently active first."),
    ] = []


class PoolState(_Body):
    """This gateway process's PostgreSQL pool."""

    size: Count
    in_use: Count
    idle: Count
    waiting: Annotated[int, msgspec.Meta(ge=0, description="Tasks waiting for a connection.")]
    min_size: Count
    max_size: Count


class TableSize(_Body):
    name: str
    bytes: Annotated[int, msgspec.Meta(description="With its TOAST data and indexes.")]
    index_bytes: int
    rows_estimate: Annotated[int, msgspec.Meta(description="The planner's; -1: not analyzed.")]


class IndexUsage(_Body):
    name: str
    table: str
    bytes: int
    scans: Annotated[int, msgspec.Meta(description="Since the server's statistics reset.")]
    enforces: Annotated[
        bool, msgspec.Meta(description="A primary key, unique or exclusion constraint.")
    ]


class SlowStatement(_Body):
    query: Annotated[str, msgspec.Meta(description="Normalized: constants are $1, $2, ...")]
    calls: int
    total_ms: float
    mean_ms: float
    max_ms: float
    rows: int


class DatabaseHealth(_Body):
    database: str
    bytes: int
    cache_hit_ratio: Annotated[
        float | None, msgspec.Meta(description="Blocks read from shared buffers; null: none read.")
    ]
    tables: Annotated[list[TableSize], msgspec.Meta(description="The largest first.")]
    indexes: Annotated[list[IndexUsage], msgspec.Meta(description="The largest first.")]
    unused_indexes: Annotated[
        list[IndexUsage], msgspec.Meta(description="Never scanned and enforcing nothing.")
    ]
    connections: Annotated[
        dict[str, int], msgspec.Meta(description="The server's connections to this database.")
    ]
    pool: Annotated[
        PoolState | None, msgspec.Meta(description="This gateway process's; null from the CLI.")
    ]
    statements: Annotated[
        list[SlowStatement], msgspec.Meta(description="The slowest on average first.")
    ]
    statements_unavailable: Annotated[
        str | None, msgspec.Meta(description="Why there are no statements, when so.")
    ]


class GlobalTotals(_Body):
    """Everyone's counters (operators only)."""

    users: Annotated[int, msgspec.Meta(ge=0, description="Users who have had a session.")]
    sessions: SessionCounts
    messages: Count


class StatementsReset(_Body):
    reset: bool
    reason: str | None


class SessionCounts(_Body):
    active: Count
    archived: Count
    total: Count


class Stats(_Body):
    sessions: SessionCounts
    messages: Count


# ---- the bodies clients send (decoded by msgspec; each description is the field's rule,
# gateway/validation.py) ----------------------------------------------------------------

BodyPort = Annotated[
    int, msgspec.Meta(ge=1, le=MAX_PORT, description=f"an integer from 1 to {MAX_PORT}")
]


def _text_rule(max_chars: int) -> msgspec.Meta:
    """A name a client gives (a title, a label): at most `max_chars` characters, no NUL
    (PostgreSQL text cannot hold one)."""
    return msgspec.Meta(
        max_length=max_chars,
        pattern="^[^\\x00]*$",
        description=f"a string of at most {max_chars} characters, without NUL",
    )


BodyTitle = Annotated[str, _text_rule(MAX_TITLE_CHARS)]


class NewSession(_Body):
    """A new active session for the port; the port's previous one is archived."""

    port: BodyPort
    title: BodyTitle | None = None


class SessionChange(_Body):
    """Any of: a new title (null clears it); pinned or not; `archived` (the port is left
    without an active session) or `active` (this becomes the port's active session and
    archives the one that was)."""

    title: BodyTitle | UnsetType | None = UNSET
    pinned: Annotated[bool, msgspec.Meta(description="true or false")] | UnsetType = UNSET
    status: (
        Annotated[SessionStatusName, msgspec.Meta(description="active or archived")] | UnsetType
    ) = UNSET


BodyLabel = Annotated[str, _text_rule(MAX_PORT_LABEL_CHARS)]


class PortChange(_Body):
    """A port's new label: a string names it, null or an empty string takes the label away."""

    label: BodyLabel | None


class PortLabel(_Body):
    port: PortNumber
    label: str | None


REQUESTS: tuple[type[msgspec.Struct], ...] = (NewSession, SessionChange, PortChange)


class Health(_Body):
    status: Literal["ok"]


DependencyState = Literal["ok", "down"]


# Open (unknown fields allowed): a new check is an addition, not a change, for monitoring
# that reads this.
class ReadyChecks(msgspec.Struct):
    postgres: DependencyState
    redis: DependencyState
    writer_lag_s: (
        Annotated[
            float,
            msgspec.Meta(
                ge=0,
                description="Age of the oldest unwritten ingest entry (absent if Redis is down).",
            ),
        ]
        | UnsetType
    ) = UNSET


class Ready(_Body):
    status: Literal["ready"]
    checks: ReadyChecks


class Unready(_Body):
    status: Literal["unready"]
    checks: ReadyChecks
    reason: Annotated[str, msgspec.Meta(description="What is wrong, for people.")]


# The bodies the OpenAPI document describes (their nested Structs come along).
BODIES: tuple[type[msgspec.Struct], ...] = (
    Health,
    Ready,
    Unready,
    Error,
    SessionPage,
    MessagePage,
    PortMessages,
    PortList,
    PortLabel,
    SearchResults,
    Stats,
    DatabaseHealth,
    StatementsReset,
    GlobalTotals,
)

_encoder = msgspec.json.Encoder()


def encode(body: msgspec.Struct) -> bytes:
    return _encoder.encode(body)


def error(code: ErrorCode, message: str, details: dict[str, Any] | None = None) -> Error:
    return Error(ErrorDetail(code, message, UNSET if details is None else details))


def session(s: sessions.Session) -> Session:
    return Session(
        s.id,
        s.port,
        s.ide_type,
        s.title,
        s.status,
        s.pinned,
        s.message_count,
        s.last_message_at,
        s.created_at,
        s.updated_at,
        s.auto_title,
        s.preview,
        s.preview_role,
    )


def message(m: messages.Message) -> Message:
    return Message(*_message_fields(m))


def port_message(m: messages.Message) -> PortMessage:
    """A message with its session's id (a port's messages span its sessions)."""
    return PortMessage(*_message_fields(m), m.session_id)


# Typed field by field, so that mypy checks the two constructors above.
_MessageFields = tuple[
    str, int, str | None, str, str, str, str, datetime | None, datetime, datetime | None, Any
]


def _message_fields(m: messages.Message) -> _MessageFields:
    """`Message`'s fields, in its order (positional: the live path builds one per row)."""
    return (
        m.id,
        m.seq,
        m.client_id,
        m.role,
        m.content,
        m.content_type,
        m.source,
        m.timestamp,
        m.created_at,
        m.edited_at,
        m.metadata,
    )


def port(summary: sessions.PortSummary, *, online: bool) -> Port:
    active = session(summary.active) if summary.active else None
    return Port(
        summary.port, summary.ide_type, online, active, summary.last_activity_at, summary.label
    )


def search_result(hit: search.Hit) -> SearchResult:
    return SearchResult(
        hit.session_id,
        hit.port,
        hit.seq,
        hit.message_id,
        hit.role,
        hit.created_at,
        hit.snippet,
        hit.highlights,
        hit.rank,
        hit.session_title,
        hit.session_created_at,
        hit.session_auto_title,
    )


def session_match(hit: search.SessionHit) -> SessionMatch:
    return SessionMatch(session(hit.session), hit.name, hit.highlights)


def database_health(report: health.DatabaseHealth, pool: PoolState | None) -> DatabaseHealth:
    def index(i: health.Index) -> IndexUsage:
        return IndexUsage(i.name, i.table, i.bytes, i.scans, i.enforces)

    return DatabaseHealth(
        report.database,
        report.bytes,
        report.cache_hit_ratio,
        [TableSize(t.name, t.bytes, t.index_bytes, t.rows_estimate) for t in report.tables],
        [index(i) for i in report.indexes],
        [index(i) for i in report.unused_indexes],
        report.connections,
        pool,
        [
            SlowStatement(s.query, s.calls, s.total_ms, s.mean_ms, s.max_ms, s.rows)
            for s in report.statements
        ],
        report.statements_unavailable,
    )


def global_totals(totals: stats.Totals) -> GlobalTotals:
    active, archived = totals.sessions_active, totals.sessions_archived
    sessions = SessionCounts(active, archived, active + archived)
    return GlobalTotals(totals.users, sessions, totals.messages)


def stats_body(counts: stats.Stats) -> Stats:
    active, archived = counts.sessions_active, counts.sessions_archived
    return Stats(SessionCounts(active, archived, active + archived), counts.messages)
