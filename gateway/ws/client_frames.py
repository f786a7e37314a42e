"""The client's WebSocket frames, declared once as msgspec Structs with their bounds.

The decoder checks them, `CLIENT_FRAME_SCHEMA` publishes them, and each field's
`description` is the rule an error message states ("port must be an integer from 1 to
65535", gateway/validation.py), so the three cannot drift apart. What a schema cannot say
(blank content, NUL, the configured size limits, real dates, a subscription's one target)
gateway/ws/protocol.py checks after decoding. Unknown fields are ignored: clients send
extras.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import msgspec

from gateway.validation import Rules, schema_of
from gateway.wire import (
    CLIENT_KINDS,
    CONTENT_TYPES,
    MAX_CLIENT_ID_CHARS,
    MAX_PORT,
    MAX_REF_CHARS,
    MAX_SEQ,
    MAX_TITLE_CHARS,
    ROLES,
    SOURCES,
    ClientKind,
    ContentType,
    Role,
    Source,
)

# `$(?!\n)`, not `$`: msgspec matches with Python's re.search, where `$` also matches before a
# final newline ("cursor\n"); the lookahead means the same in the JSON Schema (ECMA) dialect.
IDE_TYPE_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,31}$(?!\n)"

# Each `description` is written to follow "<field> must be": it is the error message's rule.

def _one_of(values: frozenset[str]) -> msgspec.Meta:
    return msgspec.Meta(description=f"one of {', '.join(sorted(values))}")


Ref = Annotated[
    str,
    msgspec.Meta(
        max_length=MAX_REF_CHARS, description=f"a string of at most {MAX_REF_CHARS} characters"
    ),
]
Port = Annotated[
    int, msgspec.Meta(ge=1, le=MAX_PORT, description=f"an integer from 1 to {MAX_PORT}")
]
Durable = Annotated[bool, msgspec.Meta(description="true or false")]
Content = Annotated[str, msgspec.Meta(min_length=1, description="a non-empty string")]
ClientId = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=MAX_CLIENT_ID_CHARS,
        description=f"a string of 1 to {MAX_CLIENT_ID_CHARS} characters",
    ),
]
Timestamp = Annotated[
    str,
    msgspec.Meta(
        description="an RFC 3339 date-time with an offset, like 2026-01-31T12:00:00Z",
        extra_json_schema={"format": "date-time"},
    ),
]
# JSON the gateway keeps as text is decoded raw, then parsed and re-encoded by orjson
# (`_metadata_json`, `_hello`), so it is stored exactly as before: integers past 64 bits as
# floats, at most 254 levels. msgspec cannot check a Raw value's type: the post-check does,
# with the rule below.
Metadata = Annotated[
    msgspec.Raw,
    msgspec.Meta(description="an object", extra_json_schema={"type": "object", "default": {}}),
]
ClientName = Annotated[
    msgspec.Raw,
    msgspec.Meta(
        description="a string or an object",
        extra_json_schema={"type": ["string", "object", "null"], "default": None},
    ),
]
IdeType = Annotated[
    str,
    msgspec.Meta(pattern=IDE_TYPE_PATTERN, description="a short lowercase name like 'cursor'"),
]
Title = Annotated[
    str,
    msgspec.Meta(
        max_length=MAX_TITLE_CHARS, description=f"a string of at most {MAX_TITLE_CHARS} characters"
    ),
]
# The list's length limit is the configured one (Limits), checked after decoding.
Ports = Annotated[list[Port], msgspec.Meta(description="a list of ports")]
SessionId = Annotated[uuid.UUID, msgspec.Meta(description="a session's uuid")]
SinceSeq = Annotated[
    int, msgspec.Meta(ge=0, le=MAX_SEQ, description=f"an integer from 0 to {MAX_SEQ}")
]
SessionsFlag = Annotated[Literal[True], msgspec.Meta(description="true")]


# gc=False: decoded frames hold no reference cycles, and untracked Structs decode faster (a
# batch is hundreds of them). kw_only: fields with defaults may precede required ones.
class ItemFields(msgspec.Struct, kw_only=True, gc=False):
    """The fields of one message: a `message` frame, or an item of an `extracted` batch."""

    content: Content
    id: ClientId | None = None
    role: Annotated[Role, _one_of(ROLES)] = "user"
    content_type: Annotated[ContentType, _one_of(CONTENT_TYPES)] = "text"
    timestamp: Timestamp | None = None
    metadata: Metadata | msgspec.UnsetType = msgspec.UNSET


class MessageFrame(ItemFields, tag_field="type", tag="message", kw_only=True):
    """One message to store, answered by an `ack`."""

    # Declared here as well as on _ClientFrame: a Struct cannot have two bases with fields.
    ref: Ref | None = None
    port: Port
    source: Annotated[Source, _one_of(SOURCES)] = "user_input"
    durable: Durable = False


class ExtractedItem(ItemFields, kw_only=True):
    """One message of an `extracted` batch."""

    source: Annotated[Source, _one_of(SOURCES)] = "ide_extraction"


class _ClientFrame(msgspec.Struct, tag_field="type", kw_only=True, gc=False):
    ref: Ref | None = None


class ExtractedFrame(_ClientFrame, tag="extracted", kw_only=True):
    """A batch of messages an IDE extension read from its chat, in order."""

    port: Port
    ide_type: IdeType | None = None
    # The batch's length limit is the configured one (Limits), checked after decoding.
    messages: Annotated[
        list[ExtractedItem], msgspec.Meta(min_length=1, description="a non-empty list of objects")
    ]
    durable: Durable = False


class SessionNewFrame(_ClientFrame, tag="session.new", kw_only=True):
    """Start a new session on a port (the old one is archived)."""

    port: Port
    title: Title | None = None


class HelloFrame(_ClientFrame, tag="hello", kw_only=True):
    """Who the client is and which ports it serves."""

    client: ClientName | msgspec.UnsetType = msgspec.UNSET
    kind: Annotated[ClientKind, _one_of(CLIENT_KINDS)] = "tool"
    ports: Ports = []


class PingFrame(_ClientFrame, tag="ping", kw_only=True):
    """Answered by `pong`."""


class _Targeted(_ClientFrame, kw_only=True):
    """What a subscription follows; `_target` checks that exactly one is given."""

    session_id: SessionId | None = None
    port: Port | None = None
    # The session the client's since_seq counts in, for a port subscription.
    since_session_id: SessionId | None = None
    sessions: SessionsFlag | None = None


class SubscribeFrame(_Targeted, tag="subscribe", kw_only=True):
    """Follow exactly one of: a session (`session_id`), a port, the session list (`sessions`).
    With `since_seq` (not for the session list), the messages after it come first."""

    since_seq: SinceSeq | None = None


class UnsubscribeFrame(_Targeted, tag="unsubscribe", kw_only=True):
    """Stop the subscription named as in `subscribe`."""


ClientFrame = (
    MessageFrame
    | ExtractedFrame
    | SessionNewFrame
    | HelloFrame
    | PingFrame
    | SubscribeFrame
    | UnsubscribeFrame
)
DECODER = msgspec.json.Decoder(ClientFrame)

# The JSON Schema (2020-12) of every client frame: a document for clients and tests; do not
# mutate it (the error messages' rules are read from it).
CLIENT_FRAME_SCHEMA: dict[str, Any] = schema_of(
    ClientFrame,
    title="ClientFrame",
    description="A frame a client sends on /ws (docs/protocol.md).",
)
RULES = Rules(CLIENT_FRAME_SCHEMA)
