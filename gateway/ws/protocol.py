"""The WebSocket protocol's core: a client frame parsed into a typed command. Pure, no I/O.

The connection loop (gateway/ws/connection.py) only moves bytes. A frame is decoded against
its declaration (gateway/ws/client_frames.py) and then checked for what a schema cannot say:
blank content, NUL, the configured size limits, real dates, a subscription's one target. It
is validated whole before anything acts on it, so a bad item in an `extracted` batch rejects
the batch and stores nothing. The server's frames are gateway/ws/frames.py.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson

from gateway.errors import BadRequest, GatewayError, TooLarge
from gateway.ws.client_frames import (
    DECODER,
    RULES,
    ClientFrame,
    ExtractedFrame,
    HelloFrame,
    ItemFields,
    MessageFrame,
    PingFrame,
    Ref,
    SessionNewFrame,
    SubscribeFrame,
    UnsubscribeFrame,
)
from storage.dedup import content_hash, dedup_key

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits in force, sent to clients in `welcome`."""

    max_frame_bytes: int
    max_content_bytes: int
    max_metadata_bytes: int
    max_batch_items: int
    max_ports_per_hello: int = 64


class MessageItem(msgspec.Struct, frozen=True, gc=False):
    """One validated message, ready for the ingest buffer.

    This and `Ingest` are built for every message: a msgspec Struct is built in C, about ten
    times faster than a frozen dataclass, and `gc=False` keeps it out of the cycle collector
    (it holds no containers that could form a cycle)."""

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


class Ingest(msgspec.Struct, frozen=True, gc=False):
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
        frame = DECODER.decode(text)
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
        return FrameError(BadRequest(f"ref must be {RULES.rule('ref')}"), None)
    if isinstance(exc, msgspec.ValidationError):
        return FrameError(RULES.error(exc, frame), ref)
    # JSON orjson reads but msgspec does not: nested past the depth msgspec decodes (it counts
    # against Python's recursion limit, orjson allows 1024 levels).
    return FrameError(BadRequest(f"frame cannot be decoded: {exc}"), ref)


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
        return _hello(frame, limits)
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


def _item(raw: ItemFields, where: str, port: int, source: str, limits: Limits) -> MessageItem:
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
            raise BadRequest(f"{name} must be {RULES.rule(name)}", details={"field": name})
        metadata_json = _encode_object(metadata, name)
        if "\\u0000" in metadata_json and holds_nul(metadata):
            raise BadRequest(f"{name} must not contain the NUL character", details={"field": name})
    if len(metadata_json) > limits.max_metadata_bytes:
        raise TooLarge(
            f"{name} is {len(metadata_json)} bytes encoded;"
            f" the limit is {limits.max_metadata_bytes}",
            details={"field": name, "limit": limits.max_metadata_bytes},
        )
    return metadata_json


def _hello(frame: HelloFrame, limits: Limits) -> Hello:
    if len(frame.ports) > limits.max_ports_per_hello:
        raise TooLarge(
            f"a hello names at most {limits.max_ports_per_hello} ports"
            f" (GATEWAY_MAX_PORTS_PER_HELLO), got {len(frame.ports)}",
            details={"field": "ports", "limit": limits.max_ports_per_hello},
        )
    client: str | None = None
    if not isinstance(frame.client, msgspec.UnsetType):
        value = orjson.loads(bytes(frame.client))
        if isinstance(value, dict):
            client = _encode_object(value, "client")
        elif value is None or isinstance(value, str):
            client = value
        else:
            raise BadRequest(f"client must be {RULES.rule('client')}", details={"field": "client"})
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


def holds_nul(value: Any) -> bool:
    """Whether a decoded JSON value holds U+0000 anywhere (the import checks metadata too)."""
    if isinstance(value, str):
        return "\0" in value
    if isinstance(value, dict):
        return any(holds_nul(k) or holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(holds_nul(v) for v in value)
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
        raise BadRequest(f"{name} must be {RULES.rule(name)}", details={"field": name})
    try:
        # OverflowError: a real local time whose UTC instant falls outside years 1-9999
        # (0001-01-01T00:00:00+01:00).
        return datetime.fromisoformat(value.upper()).astimezone(UTC)
    except (ValueError, OverflowError):
        raise BadRequest(
            f"{where}timestamp {value!r} is not a real date-time",
            details={"field": where + "timestamp"},
        ) from None
