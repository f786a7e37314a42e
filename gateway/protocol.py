"""The WebSocket wire protocol: client frames parsed into typed commands, server frames encoded.

Pure functions, no I/O: the connection loop in `gateway/connection.py` only moves bytes. A frame
is validated whole before anything acts on it, so a bad item in an `extracted` batch rejects the
batch and stores nothing.

Client frames are declared once, as msgspec Structs with their bounds as `msgspec.Meta`: the
decoder checks them, `CLIENT_FRAME_SCHEMA` publishes them, and each field's `description` is the
rule an error message states ("port must be an integer from 1 to 65535"), so the three cannot
drift apart. `parse_frame` then checks only what a schema cannot say (blank content, NUL, the
configured size limits, real dates, a subscription's one target) and returns the commands the
rest of the gateway uses. Unknown fields are ignored: clients send extras.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

import msgspec
import orjson

from gateway.errors import BadRequest, GatewayError, TooLarge
from storage.dedup import content_hash, dedup_key

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
MAX_PORTS_PER_HELLO = 64
MAX_PORT = 65535
MAX_SEQ = 2**63 - 1  # seq is a PostgreSQL bigint: a larger since_seq cannot name a message
# `$(?!\n)`, not `$`: msgspec matches with Python's re.search, where `$` also matches before a
# final newline ("cursor\n"); the lookahead means the same in the JSON Schema (ECMA) dialect.
IDE_TYPE_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,31}$(?!\n)"
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)

# (first port, last port, IDE type): the debug-port ranges the IDE extensions use.
IDE_PORT_RANGES = ((9222, 9231, "cursor"), (9232, 9241, "vscode"), (9242, 9251, "windsurf"))


def ide_type_for_port(port: int) -> str:
    """The IDE type a port implies when the client does not say."""
    for first, last, name in IDE_PORT_RANGES:
        if first <= port <= last:
            return name
    return "unknown"


# ---- client frames, as declared --------------------------------------------------------
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
Ports = Annotated[
    list[Port],
    msgspec.Meta(
        max_length=MAX_PORTS_PER_HELLO,
        description=f"a list of at most {MAX_PORTS_PER_HELLO} ports",
    ),
]
SessionId = Annotated[uuid.UUID, msgspec.Meta(description="a session's uuid")]
SinceSeq = Annotated[
    int, msgspec.Meta(ge=0, le=MAX_SEQ, description=f"an integer from 0 to {MAX_SEQ}")
]
SessionsFlag = Annotated[Literal[True], msgspec.Meta(description="true")]


# gc=False: decoded frames hold no reference cycles, and untracked Structs decode faster (a
# batch is hundreds of them). kw_only: fields with defaults may precede required ones.
class _ItemFields(msgspec.Struct, kw_only=True, gc=False):
    """The fields of one message: a `message` frame, or an item of an `extracted` batch."""

    content: Content
    id: ClientId | None = None
    role: Annotated[Role, _one_of(ROLES)] = "user"
    content_type: Annotated[ContentType, _one_of(CONTENT_TYPES)] = "text"
    timestamp: Timestamp | None = None
    metadata: Metadata | msgspec.UnsetType = msgspec.UNSET


class MessageFrame(_ItemFields, tag_field="type", tag="message", kw_only=True):
    """One message to store, answered by an `ack`."""

    # Declared here as well as on _ClientFrame: a Struct cannot have two bases with fields.
    ref: Ref | None = None
    port: Port
    source: Annotated[Source, _one_of(SOURCES)] = "user_input"
    durable: Durable = False


class ExtractedItem(_ItemFields, kw_only=True):
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
_DECODER = msgspec.json.Decoder(ClientFrame)


def _schema() -> dict[str, Any]:
    (union,), components = msgspec.json.schema_components(
        (ClientFrame,), ref_template="#/$defs/{name}"
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "ClientFrame",
        "description": "A frame a client sends on /ws (docs/protocol.md).",
        **union,
        "$defs": components,
    }


# The JSON Schema (2020-12) of every client frame: a document for clients and tests; do not
# mutate it (the error messages' rules are read from it).
CLIENT_FRAME_SCHEMA: dict[str, Any] = _schema()


@dataclass(frozen=True, slots=True)
class _Rule:
    text: str  # follows "<field> must be"
    is_object: bool  # a Struct: an error inside names the item ("messages[0]")


def _rules(schema: dict[str, Any]) -> dict[str, _Rule]:
    """Every field path of every frame ("port", "messages[].role", "ports[]") with its rule,
    read from the schema's descriptions.

    A path means one thing in every frame type (a field name is one alias everywhere), so one
    table serves them all; a field without a description, or a path with two rules, fails at
    import rather than giving a client a vague message.
    """
    defs: dict[str, Any] = schema["$defs"]
    rules: dict[str, _Rule] = {}
    tags: set[str] = set()

    def add(path: str, rule: _Rule) -> None:
        if rules.setdefault(path, rule) != rule:
            raise TypeError(f"client frame field {path} has two rules: {rules[path]}, {rule}")

    def visit(node: dict[str, Any], path: str) -> None:
        description = node.get("description")
        while "anyOf" in node:  # `X | None`: the rule is X's
            members = [member for member in node["anyOf"] if member != {"type": "null"}]
            if len(members) != 1:
                break
            [node] = members
            description = description or node.get("description")
        if "$ref" in node:
            struct = defs[node["$ref"].rsplit("/", 1)[1]]
            if path:
                add(path, _Rule("an object", is_object=True))
            for name, prop in struct["properties"].items():
                if not path and name == "type":  # the tag: {"enum": ["message"]}
                    tags.update(prop["enum"])
                else:
                    visit(prop, f"{path}.{name}" if path else name)
            return
        if description is None:
            raise TypeError(f"client frame field {path} has no description (its rule)")
        add(path, _Rule(description, is_object=False))
        if node.get("type") == "array":
            visit(node["items"], path + "[]")

    for member in schema["anyOf"]:
        visit(member, "")
    add("type", _Rule(f"one of {', '.join(sorted(tags))}", is_object=False))
    return rules


_RULES = _rules(CLIENT_FRAME_SCHEMA)
_INDEX = re.compile(r"\[\d+\]")


def _rule(path: str) -> str:
    """The rule of a field, by its path in a frame ("messages[3].metadata")."""
    return _RULES[_INDEX.sub("[]", path)].text


# ---- client frames, as parsed ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits in force, sent to clients in `welcome`."""

    max_frame_bytes: int
    max_content_bytes: int
    max_metadata_bytes: int
    max_batch_items: int


@dataclass(frozen=True, slots=True)
class MessageItem:
    """One validated message, ready for the ingest buffer."""

    client_id: str | None
    role: str
    content: str
    content_type: str
    source: str
    client_ts: datetime | None
    metadata_json: str  # already encoded: the buffer and the writer pass it through as is
    dedup_key: str  # 32 hex digits (a uuid): digest of the client id, else of the fingerprint
    content_hash: str  # 16 hex digits: tells an edit (same client id, new content) from a resend


@dataclass(frozen=True, slots=True)
class Hello:
    ref: str | None
    client: str | None
    kind: str
    ports: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Ingest:
    """A `message` (one item) or an `extracted` batch: both answered by one `ack`."""

    ref: str | None
    port: int
    ide_type: str | None
    items: tuple[MessageItem, ...]
    durable: bool


@dataclass(frozen=True, slots=True)
class SessionNew:
    ref: str | None
    port: int
    title: str | None


@dataclass(frozen=True, slots=True)
class Ping:
    ref: str | None


@dataclass(frozen=True, slots=True)
class BySession:
    session_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class ByPort:
    """Whatever session is active on the port, following rotations."""

    port: int
    # The session the client's since_seq counts in (optional): if the port moved on to
    # another session meanwhile, the new one is caught up from its start instead.
    since_session_id: uuid.UUID | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class SessionList:
    """The user's session-list and presence events."""


Target = BySession | ByPort | SessionList


@dataclass(frozen=True, slots=True)
class Subscribe:
    ref: str | None
    target: Target
    since_seq: int | None  # None: live only


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    ref: str | None
    target: Target


Command = Hello | Ingest | SessionNew | Ping | Subscribe | Unsubscribe


class FrameError(GatewayError):
    """A bad frame; wraps the client-facing error with the frame's `ref` when it had one."""

    def __init__(self, error: GatewayError, ref: str | None) -> None:
        super().__init__(error.message, details=error.details)
        self.code = error.code
        self.http_status = error.http_status
        self.ref = ref


def parse_frame(text: str, limits: Limits) -> Command:
    """Parse one text frame into a command, or raise `FrameError` carrying the frame's ref."""
    try:
        frame = _DECODER.decode(text)
    # ValidationError is a DecodeError. RecursionError: nesting deeper than msgspec decodes.
    # UnicodeEncodeError: a str holding a lone surrogate (no WebSocket text frame can).
    except (msgspec.DecodeError, RecursionError, UnicodeEncodeError) as exc:
        raise _explain(text, exc) from None
    try:
        return _command(frame, limits)
    except GatewayError as exc:
        raise FrameError(exc, frame.ref) from None
    except orjson.JSONDecodeError as exc:  # metadata orjson refuses (1e400): a bad frame
        raise _explain(text, exc) from None


def _explain(text: str, exc: Exception) -> FrameError:
    """The error for a frame the decoder refused, judged in the order the parser always has:
    not JSON (orjson's verdict, as before) or not an object, then a bad ref (not echoed, since
    it cannot be trusted), then the field msgspec named. Only bad frames pay for this."""
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError as invalid:
        return FrameError(BadRequest(f"frame is not valid JSON: {invalid}"), None)
    if not isinstance(frame, dict):
        return FrameError(BadRequest("frame must be a JSON object"), None)
    try:
        ref = msgspec.convert(frame.get("ref"), Ref | None)
    except msgspec.ValidationError:
        return FrameError(BadRequest(f"ref must be {_rule('ref')}"), None)
    if isinstance(exc, msgspec.ValidationError):
        return FrameError(_schema_error(str(exc), frame), ref)
    # JSON orjson reads but msgspec does not: nested past the depth msgspec decodes (it counts
    # against Python's recursion limit, orjson allows 1024 levels).
    return FrameError(BadRequest(f"frame cannot be decoded: {exc}"), ref)


# msgspec's messages: "Expected `int` >= 1 - at `$.port`", "Invalid enum value 'robot' - at
# `$.messages[3].role`", "Object missing required field `content` - at `$.messages[1]`".
_VALIDATION = re.compile(r"(?P<problem>.*?)(?: - at `\$\.?(?P<path>[^`]*)`)?", re.DOTALL)
_MISSING = re.compile(r"Object missing required field `(?P<name>[^`]+)`")


def _schema_error(message: str, frame: dict[str, Any]) -> BadRequest:
    """A msgspec ValidationError as the client-facing error: the field's path and its rule."""
    found = _VALIDATION.fullmatch(message)
    assert found is not None  # every part of the pattern is optional
    where = found["path"] or ""
    if missing := _MISSING.fullmatch(found["problem"]):
        where = f"{where}.{missing['name']}" if where else missing["name"]
    rule = _RULES.get(_INDEX.sub("[]", where))
    if rule is None:  # not a field of the schema (a msgspec message this does not know)
        return BadRequest(f"invalid frame: {message}", details={"field": where} if where else None)
    # An item of a list of numbers is reported as the list ("ports"), as it always was; an
    # item of a list of objects by its index ("messages[0]").
    field = where
    if where.endswith("]") and not rule.is_object:
        field = where[: where.rindex("[")]
    text = f"{where} must be {rule.text}"
    if where == "type" and isinstance(frame.get("type"), str):
        text += f", not {frame['type']!r}"
    return BadRequest(text, details={"field": field})


def _command(frame: ClientFrame, limits: Limits) -> Command:
    """The checks a schema cannot express, and the typed command."""
    if isinstance(frame, MessageFrame):
        item = _item(frame, "", frame.port, frame.source, limits)
        return Ingest(frame.ref, frame.port, None, (item,), frame.durable)
    if isinstance(frame, ExtractedFrame):
        return _extracted(frame, limits)
    if isinstance(frame, SessionNewFrame):
        if frame.title is not None:
            _no_nul(frame.title, "title")
        return SessionNew(frame.ref, frame.port, frame.title)
    if isinstance(frame, HelloFrame):
        return _hello(frame)
    if isinstance(frame, PingFrame):
        return Ping(frame.ref)
    if isinstance(frame, SubscribeFrame):
        target = _target(frame)
        if frame.since_seq is not None and isinstance(target, SessionList):
            raise BadRequest(
                "since_seq applies to session and port subscriptions",
                details={"field": "since_seq"},
            )
        return Subscribe(frame.ref, target, frame.since_seq)
    return Unsubscribe(frame.ref, _target(frame))


def _extracted(frame: ExtractedFrame, limits: Limits) -> Ingest:
    messages = frame.messages
    if len(messages) > limits.max_batch_items:
        raise TooLarge(
            f"an extracted batch holds at most {limits.max_batch_items} messages,"
            f" got {len(messages)}",
            details={"field": "messages", "limit": limits.max_batch_items},
        )
    items = tuple(
        _item(raw, f"messages[{index}].", frame.port, raw.source, limits)
        for index, raw in enumerate(messages)
    )
    return Ingest(frame.ref, frame.port, frame.ide_type, items, frame.durable)


def _item(raw: _ItemFields, where: str, port: int, source: str, limits: Limits) -> MessageItem:
    content = raw.content
    if content.isspace():  # the schema already refused "" (min_length)
        raise BadRequest(f"{where}content must not be empty", details={"field": where + "content"})
    _no_nul(content, where + "content")
    # A character is 1 to 4 bytes of UTF-8: encode only when its length cannot tell.
    if len(content) * 4 > limits.max_content_bytes:
        size = len(content.encode())
        if size > limits.max_content_bytes:
            raise TooLarge(
                f"{where}content is {size} bytes; the limit is {limits.max_content_bytes}",
                details={"field": where + "content", "limit": limits.max_content_bytes},
            )
    client_id = raw.id
    if client_id is not None:
        _no_nul(client_id, where + "id")
    client_ts = None if raw.timestamp is None else _timestamp(raw.timestamp, where)
    return MessageItem(
        client_id=client_id,
        role=raw.role,
        content=content,
        content_type=raw.content_type,
        source=source,
        client_ts=client_ts,
        metadata_json=_metadata_json(raw.metadata, where + "metadata", limits),
        dedup_key=dedup_key(port, raw.role, content, client_ts, client_id),
        content_hash=content_hash(content),
    )


def _metadata_json(raw: msgspec.Raw | msgspec.UnsetType, name: str, limits: Limits) -> str:
    """An item's metadata as the compact JSON text the buffer stores, checked."""
    text = b"{}" if isinstance(raw, msgspec.UnsetType) else bytes(raw)
    if text == b"{}":  # absent, or what most clients send: nothing to parse
        metadata_json = "{}"
    else:
        # A JSONDecodeError (a number orjson refuses, like 1e400) propagates to parse_frame,
        # which reports the frame as invalid JSON, as it always has.
        metadata = orjson.loads(text)
        if not isinstance(metadata, dict):
            raise BadRequest(f"{name} must be {_rule(name)}", details={"field": name})
        metadata_json = _encode_object(metadata, name)
        if "\\u0000" in metadata_json and _holds_nul(metadata):
            raise BadRequest(f"{name} must not contain the NUL character", details={"field": name})
    if len(metadata_json) > limits.max_metadata_bytes:
        raise TooLarge(
            f"{name} is {len(metadata_json)} bytes encoded;"
            f" the limit is {limits.max_metadata_bytes}",
            details={"field": name, "limit": limits.max_metadata_bytes},
        )
    return metadata_json


def _hello(frame: HelloFrame) -> Hello:
    client: str | None = None
    if not isinstance(frame.client, msgspec.UnsetType):
        value = orjson.loads(bytes(frame.client))
        if isinstance(value, dict):
            client = _encode_object(value, "client")
        elif value is None or isinstance(value, str):
            client = value
        else:
            raise BadRequest(f"client must be {_rule('client')}", details={"field": "client"})
    return Hello(frame.ref, client, frame.kind, tuple(frame.ports))


def _encode_object(value: dict[str, Any], field: str) -> str:
    """Re-encode a parsed JSON object; refuse one orjson cannot encode back.

    Decoding allows 1024 levels of nesting but encoding only 254, so a deeply nested object
    is valid JSON that cannot be re-encoded: that is the client's error, not a crash.
    """
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        raise BadRequest(
            f"{field} is nested too deeply (at most 254 levels)", details={"field": field}
        ) from None


def _no_nul(text: str, field: str) -> None:
    """PostgreSQL text and jsonb cannot hold U+0000: refuse it here, not in the writer."""
    if "\0" in text:
        raise BadRequest(f"{field} must not contain the NUL character", details={"field": field})


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\0" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


def _target(frame: SubscribeFrame | UnsubscribeFrame) -> Target:
    named = (frame.session_id, frame.port, frame.sessions)
    if sum(value is not None for value in named) != 1:
        raise BadRequest(
            "give exactly one of session_id, port or sessions: true", details={"field": "type"}
        )
    if frame.session_id is not None:
        return BySession(frame.session_id)
    if frame.port is not None:
        return ByPort(frame.port, frame.since_session_id)
    return SessionList()


def _timestamp(value: str, where: str) -> datetime:
    if not _RFC3339.fullmatch(value):
        name = where + "timestamp"
        raise BadRequest(f"{name} must be {_rule(name)}", details={"field": name})
    try:
        # OverflowError: a real local time whose UTC instant falls outside years 1-9999
        # (0001-01-01T00:00:00+01:00).
        return datetime.fromisoformat(value.upper()).astimezone(UTC)
    except (ValueError, OverflowError):
        raise BadRequest(
            f"{where}timestamp {value!r} is not a real date-time",
            details={"field": where + "timestamp"},
        ) from None


# ---- server frames ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ItemResult:
    """The ack's answer for one item."""

    id: str
    client_id: str | None
    seq: int
    duplicate: bool
    updated: bool


def encode_ack(
    ref: str | None,
    session_id: str,
    port: int,
    results: list[ItemResult],
    durability: str,
) -> str:
    return _dumps(
        {
            "type": "ack",
            "ref": ref,
            "session_id": session_id,
            "port": port,
            "durability": durability,
            "results": [
                {
                    "id": r.id,
                    "client_id": r.client_id,
                    "seq": r.seq,
                    "duplicate": r.duplicate,
                    "updated": r.updated,
                }
                for r in results
            ],
        }
    )


def encode_error(error: GatewayError, ref: str | None) -> str:
    frame: dict[str, Any] = {
        "type": "error",
        "ref": ref,
        "code": str(error.code),
        "message": error.message,
    }
    if error.details:
        frame["details"] = error.details
    return _dumps(frame)


def encode_welcome(
    ref: str | None, user_id: str, server_version: str, limits: Limits
) -> str:
    return _dumps(
        {
            "type": "welcome",
            "ref": ref,
            "user_id": user_id,
            "server": {"name": "chat-gateway", "version": server_version},
            "limits": {
                "max_frame_bytes": limits.max_frame_bytes,
                "max_content_bytes": limits.max_content_bytes,
                "max_metadata_bytes": limits.max_metadata_bytes,
                "max_batch_items": limits.max_batch_items,
                "max_client_id_chars": MAX_CLIENT_ID_CHARS,
                "max_ref_chars": MAX_REF_CHARS,
            },
        }
    )


def encode_pong(ref: str | None) -> str:
    return _dumps({"type": "pong", "ref": ref})


def encode_session_reply(ref: str | None, session: dict[str, Any]) -> str:
    """The answer to `session.new`: the new active session."""
    return _dumps({"type": "session", "event": "created", "ref": ref, "session": session})


def target_fields(target: Target) -> dict[str, Any]:
    """The keys that name a subscription in `subscribed` and `unsubscribed` frames."""
    if isinstance(target, BySession):
        return {"session_id": target.session_id}
    if isinstance(target, ByPort):
        return {"port": target.port}
    return {"sessions": True}


def encode_subscribed(
    ref: str | None, target: Target, session: dict[str, Any] | None, last_seq: int | None
) -> str:
    frame: dict[str, Any] = {"type": "subscribed", "ref": ref, **target_fields(target)}
    if not isinstance(target, SessionList):
        frame["session"] = session
        frame["last_seq"] = last_seq
    return _dumps(frame)


def encode_unsubscribed(ref: str | None, target: Target) -> str:
    return _dumps({"type": "unsubscribed", "ref": ref, **target_fields(target)})


def encode_resync(target: Target) -> str:
    """Events of this subscription may have been lost (the gateway's pub/sub connection was
    reset): the client re-fetches what the feed keeps current (docs/protocol.md)."""
    return _dumps({"type": "resync", **target_fields(target)})


def encode_message_event(
    session_id: str, port: int, message: dict[str, Any], *, edited: bool
) -> str:
    return _dumps(
        {
            "type": "message",
            "session_id": session_id,
            "port": port,
            "edited": edited,
            "message": message,
        }
    )


def _dumps(frame: dict[str, Any]) -> str:
    # default=str: asyncpg returns its own UUID type, which orjson does not know.
    return orjson.dumps(frame, default=str, option=orjson.OPT_UTC_Z).decode()
