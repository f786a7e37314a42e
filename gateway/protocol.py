"""The WebSocket wire protocol: client frames parsed into typed commands, server frames encoded.

Pure functions, no I/O: the connection loop in `gateway/connection.py` only moves bytes. A frame
is validated whole before anything acts on it, so a bad item in an `extracted` batch rejects the
batch and stores nothing.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.errors import BadRequest, GatewayError, TooLarge
from storage.dedup import content_hash, dedup_key

ROLES = frozenset({"user", "assistant", "system", "tool"})
CONTENT_TYPES = frozenset({"text", "markdown", "code", "json"})
SOURCES = frozenset({"user_input", "ide_extraction"})
CLIENT_KINDS = frozenset({"ide", "ui", "tool"})
MAX_REF_CHARS = 64
MAX_CLIENT_ID_CHARS = 128
MAX_TITLE_CHARS = 200
MAX_PORTS_PER_HELLO = 64
MAX_SEQ = 2**63 - 1  # seq is a PostgreSQL bigint: a larger since_seq cannot name a message
_IDE_TYPE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")
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
        frame = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise FrameError(BadRequest(f"frame is not valid JSON: {exc}"), None) from None
    if not isinstance(frame, dict):
        raise FrameError(BadRequest("frame must be a JSON object"), None)
    ref = frame.get("ref")
    if ref is not None and (not isinstance(ref, str) or len(ref) > MAX_REF_CHARS):
        raise FrameError(
            BadRequest(f"ref must be a string of at most {MAX_REF_CHARS} characters"), None
        )
    try:
        return _parse_command(frame, ref, limits)
    except GatewayError as exc:
        raise FrameError(exc, ref) from None


def _parse_command(frame: dict[str, Any], ref: str | None, limits: Limits) -> Command:
    kind = frame.get("type")
    if not isinstance(kind, str):
        raise BadRequest("frame must have a string field 'type'", details={"field": "type"})
    if kind == "message":
        item = _parse_item(frame, "", _port(frame), limits, default_source="user_input")
        return Ingest(ref, _port(frame), None, (item,), _bool(frame, "durable"))
    if kind == "extracted":
        return _parse_extracted(frame, ref, limits)
    if kind == "session.new":
        title = _optional_str(frame, "title", MAX_TITLE_CHARS)
        if title is not None:
            _no_nul(title, "title")
        return SessionNew(ref, _port(frame), title)
    if kind == "hello":
        return _parse_hello(frame, ref)
    if kind == "ping":
        return Ping(ref)
    if kind == "subscribe":
        target = _target(frame)
        since = frame.get("since_seq")
        if since is not None and (type(since) is not int or not 0 <= since <= MAX_SEQ):
            raise BadRequest(
                f"since_seq must be an integer from 0 to {MAX_SEQ}",
                details={"field": "since_seq"},
            )
        if since is not None and isinstance(target, SessionList):
            raise BadRequest(
                "since_seq applies to session and port subscriptions",
                details={"field": "since_seq"},
            )
        return Subscribe(ref, target, since)
    if kind == "unsubscribe":
        return Unsubscribe(ref, _target(frame))
    raise BadRequest(f"unknown frame type {kind!r}", details={"field": "type"})


def _parse_extracted(frame: dict[str, Any], ref: str | None, limits: Limits) -> Ingest:
    port = _port(frame)
    ide_type = frame.get("ide_type")
    if ide_type is not None and (
        not isinstance(ide_type, str) or not _IDE_TYPE.fullmatch(ide_type)
    ):
        raise BadRequest(
            "ide_type must be a short lowercase name like 'cursor'", details={"field": "ide_type"}
        )
    messages = frame.get("messages")
    if not isinstance(messages, list):
        raise BadRequest("'messages' must be a list", details={"field": "messages"})
    if not messages:
        raise BadRequest("'messages' must not be empty", details={"field": "messages"})
    if len(messages) > limits.max_batch_items:
        raise TooLarge(
            f"an extracted batch holds at most {limits.max_batch_items} messages,"
            f" got {len(messages)}",
            details={"field": "messages", "limit": limits.max_batch_items},
        )
    items = []
    for index, raw in enumerate(messages):
        where = f"messages[{index}]."
        if not isinstance(raw, dict):
            raise BadRequest(f"{where[:-1]} must be an object", details={"field": where[:-1]})
        items.append(_parse_item(raw, where, port, limits, default_source="ide_extraction"))
    return Ingest(ref, port, ide_type, tuple(items), _bool(frame, "durable"))


def _parse_item(
    raw: dict[str, Any], where: str, port: int, limits: Limits, *, default_source: str
) -> MessageItem:
    content = raw.get("content")
    if not isinstance(content, str):
        raise BadRequest(f"{where}content must be a string", details={"field": where + "content"})
    if not content.strip():
        raise BadRequest(f"{where}content must not be empty", details={"field": where + "content"})
    _no_nul(content, where + "content")
    size = len(content.encode())
    if size > limits.max_content_bytes:
        raise TooLarge(
            f"{where}content is {size} bytes; the limit is {limits.max_content_bytes}",
            details={"field": where + "content", "limit": limits.max_content_bytes},
        )
    client_id = _optional_str(raw, "id", MAX_CLIENT_ID_CHARS, where)
    if client_id == "":
        raise BadRequest(f"{where}id must not be empty", details={"field": where + "id"})
    if client_id is not None:
        _no_nul(client_id, where + "id")
    role = _enum(raw, "role", ROLES, "user", where)
    content_type = _enum(raw, "content_type", CONTENT_TYPES, "text", where)
    source = _enum(raw, "source", SOURCES, default_source, where)
    client_ts = _timestamp(raw, where)
    metadata = raw.get("metadata", {})
    if not isinstance(metadata, dict):
        raise BadRequest(
            f"{where}metadata must be an object", details={"field": where + "metadata"}
        )
    metadata_json = _encode_object(metadata, where + "metadata")
    if "\\u0000" in metadata_json and _holds_nul(metadata):
        raise BadRequest(
            f"{where}metadata must not contain the NUL character",
            details={"field": where + "metadata"},
        )
    if len(metadata_json) > limits.max_metadata_bytes:
        raise TooLarge(
            f"{where}metadata is {len(metadata_json)} bytes encoded;"
            f" the limit is {limits.max_metadata_bytes}",
            details={"field": where + "metadata", "limit": limits.max_metadata_bytes},
        )
    return MessageItem(
        client_id=client_id,
        role=role,
        content=content,
        content_type=content_type,
        source=source,
        client_ts=client_ts,
        metadata_json=metadata_json,
        dedup_key=dedup_key(port, role, content, client_ts, client_id),
        content_hash=content_hash(content),
    )


def _parse_hello(frame: dict[str, Any], ref: str | None) -> Hello:
    client = frame.get("client")
    if client is not None and not isinstance(client, (str, dict)):
        raise BadRequest("client must be a string or an object", details={"field": "client"})
    client_name = _encode_object(client, "client") if isinstance(client, dict) else client
    kind = _enum(frame, "kind", CLIENT_KINDS, "tool", "")
    ports_raw = frame.get("ports", [])
    if not isinstance(ports_raw, list) or len(ports_raw) > MAX_PORTS_PER_HELLO:
        raise BadRequest(
            f"ports must be a list of at most {MAX_PORTS_PER_HELLO} ports",
            details={"field": "ports"},
        )
    ports = tuple(_check_port(p, "ports") for p in ports_raw)
    return Hello(ref, client_name, kind, ports)


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


def _target(frame: dict[str, Any]) -> Target:
    given = [key for key in ("session_id", "port", "sessions") if frame.get(key) is not None]
    if len(given) != 1:
        raise BadRequest(
            "give exactly one of session_id, port or sessions: true", details={"field": "type"}
        )
    if given[0] == "session_id":
        raw = frame["session_id"]
        try:
            if isinstance(raw, str):
                return BySession(uuid.UUID(raw))
        except ValueError:
            pass
        raise BadRequest("session_id must be a session's uuid", details={"field": "session_id"})
    if given[0] == "port":
        since_session = frame.get("since_session_id")
        if since_session is None:
            return ByPort(_port(frame))
        try:
            if isinstance(since_session, str):
                return ByPort(_port(frame), uuid.UUID(since_session))
        except ValueError:
            pass
        raise BadRequest(
            "since_session_id must be a session's uuid", details={"field": "since_session_id"}
        )
    if frame["sessions"] is not True:
        raise BadRequest("sessions must be true", details={"field": "sessions"})
    return SessionList()


def _port(frame: dict[str, Any]) -> int:
    return _check_port(frame.get("port"), "port")


def _check_port(value: Any, field: str) -> int:
    if type(value) is not int:
        raise BadRequest(f"{field} must be an integer from 1 to 65535", details={"field": field})
    if not 1 <= value <= 65535:
        raise BadRequest(f"{field} {value} is outside 1-65535", details={"field": field})
    return value


def _bool(frame: dict[str, Any], name: str) -> bool:
    value = frame.get(name, False)
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false", details={"field": name})
    return value


def _optional_str(frame: dict[str, Any], name: str, max_chars: int, where: str = "") -> str | None:
    value = frame.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > max_chars:
        raise BadRequest(
            f"{where}{name} must be a string of at most {max_chars} characters",
            details={"field": where + name},
        )
    return value


def _enum(
    frame: dict[str, Any], name: str, allowed: frozenset[str], default: str, where: str
) -> str:
    value = frame.get(name, default)
    # The type test comes first: a list or an object is unhashable and `in` would raise.
    if not isinstance(value, str) or value not in allowed:
        raise BadRequest(
            f"{where}{name} must be one of {', '.join(sorted(allowed))}",
            details={"field": where + name},
        )
    return value


def _timestamp(raw: dict[str, Any], where: str) -> datetime | None:
    value = raw.get("timestamp")
    if value is None:
        return None
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise BadRequest(
            f"{where}timestamp must be an RFC 3339 date-time with an offset,"
            " like 2026-01-31T12:00:00Z",
            details={"field": where + "timestamp"},
        )
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
