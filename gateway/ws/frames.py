"""The server's WebSocket frames, declared once as msgspec Structs, and encoded as `Frame`s.

Every frame the gateway sends is one of these Structs, tagged by its `type`; encoding gives a
`Frame`: the text to send plus its kind (and an error's code), so the connection counts frames
and errors in metrics without parsing back what it just encoded. An event is encoded once per
process and the same `Frame` goes to every subscriber (STYLE.md, rule 4).

Fields a frame only has sometimes (`details`, a subscription's `session`, a session event's
`activated`) are `UNSET` when absent, which msgspec leaves out of the text, as docs/protocol.md
describes; everything else is always present, null included. The shapes they embed (a message,
a session) are gateway/wire.py's, the same as the HTTP API's. `server_frame_schema()` is their
JSON Schema, which tests hold to docs/protocol.md's frame list.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from gateway import wire
from gateway.errors import ErrorCode, GatewayError
from gateway.wire import MAX_CLIENT_ID_CHARS, MAX_REF_CHARS
from gateway.ws.protocol import (
    ByPort,
    BySession,
    Limits,
    SessionList,
    Target,
)
from storage import events
from storage.messages import Message
from storage.sessions import Session

Ref = Annotated[str, msgspec.Meta(max_length=MAX_REF_CHARS)] | None


class _Frame(msgspec.Struct, tag_field="type", forbid_unknown_fields=True):
    """Base of every server frame: `type` comes first, from the subclass's tag."""


class ItemResult(msgspec.Struct, forbid_unknown_fields=True):
    """The ack's answer for one item of the frame, in the frame's order."""

    id: wire.UuidText
    client_id: str | None
    seq: wire.Seq
    duplicate: bool
    updated: bool


class Ack(_Frame, tag="ack"):
    ref: Ref
    session_id: wire.UuidText
    port: wire.PortNumber
    durability: Literal["buffered", "persisted"]
    results: list[ItemResult]


class Error(_Frame, tag="error"):
    ref: Ref
    code: ErrorCode
    message: str
    details: dict[str, Any] | UnsetType = UNSET


class ServerInfo(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    version: str


class WelcomeLimits(msgspec.Struct, forbid_unknown_fields=True):
    max_frame_bytes: int
    max_content_bytes: int
    max_metadata_bytes: int
    max_batch_items: int
    max_ports_per_hello: int
    max_client_id_chars: int
    max_ref_chars: int


class Welcome(_Frame, tag="welcome"):
    ref: Ref
    user_id: str
    server: ServerInfo
    limits: WelcomeLimits


class Pong(_Frame, tag="pong"):
    ref: Ref


class SessionFrame(_Frame, tag="session"):
    """A session event, or (with `ref`) the answer to `session.new`."""

    event: events.SessionEventKind
    session: wire.Session
    ref: Ref | UnsetType = UNSET
    activated: Literal[True] | UnsetType = UNSET


class Presence(_Frame, tag="presence"):
    port: wire.PortNumber
    online: bool


class PortLabelFrame(_Frame, tag="port"):
    """A port's label changed (null: taken away)."""

    port: wire.PortNumber
    label: str | None


class _Subscription(_Frame):
    """Names the subscription, by exactly one of these (as the client's frame did)."""

    session_id: uuid.UUID | UnsetType = UNSET
    port: wire.PortNumber | UnsetType = UNSET
    sessions: Literal[True] | UnsetType = UNSET


class Subscribed(_Subscription, tag="subscribed"):
    ref: Ref = None
    # Session and port subscriptions only: the session followed and its newest seq.
    session: wire.Session | UnsetType | None = UNSET
    last_seq: int | UnsetType | None = UNSET


class Unsubscribed(_Subscription, tag="unsubscribed"):
    ref: Ref = None


class Resync(_Subscription, tag="resync"):
    """Events of this subscription may have been lost: re-fetch (docs/protocol.md)."""


class MessageEvent(_Frame, tag="message"):
    session_id: wire.UuidText
    port: wire.PortNumber
    edited: bool
    message: wire.Message


ServerFrame = (
    Ack
    | Error
    | Welcome
    | Pong
    | SessionFrame
    | Presence
    | PortLabelFrame
    | Subscribed
    | Unsubscribed
    | Resync
    | MessageEvent
)


class Frame(msgspec.Struct, frozen=True, gc=False):
    """An encoded server frame: what is sent, and what metrics count it as. A Struct (built
    in C) rather than a frozen dataclass: one is made for every ack."""

    kind: str  # the frame's `type`
    text: str
    error_code: str | None = None  # an `error` frame's code


_encoder = msgspec.json.Encoder()


def encode(frame: ServerFrame) -> Frame:
    text = _encoder.encode(frame).decode()
    code = str(frame.code) if isinstance(frame, Error) else None
    return Frame(frame.__struct_config__.tag, text, code)  # type: ignore[arg-type]  # tags are str


def server_frame_schema() -> dict[str, Any]:
    """The JSON Schema of every server frame (components under `$defs`)."""
    return msgspec.json.schema(ServerFrame)


# ---- building frames --------------------------------------------------------------------


def ack(
    ref: str | None, session_id: str, port: int, results: list[ItemResult], durability: str
) -> Frame:
    return encode(Ack(ref, session_id, port, durability, results))  # type: ignore[arg-type]  # buffered|persisted


def error(exc: GatewayError, ref: str | None) -> Frame:
    details = exc.details if exc.details else UNSET
    return encode(Error(ref, exc.code, exc.message, details))


def welcome(ref: str | None, user_id: str, server_version: str, limits: Limits) -> Frame:
    return encode(
        Welcome(
            ref,
            user_id,
            ServerInfo("chat-gateway", server_version),
            WelcomeLimits(
                limits.max_frame_bytes,
                limits.max_content_bytes,
                limits.max_metadata_bytes,
                limits.max_batch_items,
                limits.max_ports_per_hello,
                MAX_CLIENT_ID_CHARS,
                MAX_REF_CHARS,
            ),
        )
    )


def pong(ref: str | None) -> Frame:
    return encode(Pong(ref))


def session_reply(ref: str | None, session: Session) -> Frame:
    """The answer to `session.new`: the new active session."""
    return encode(SessionFrame("created", wire.session(session), ref=ref))


def user_event(event: events.UserEvent) -> Frame:
    """A user channel publication as the `session`, `presence` or `port` frame it announces."""
    if isinstance(event, events.PresenceEvent):
        return encode(Presence(event.presence.port, event.presence.online))
    if isinstance(event, events.PortLabelEvent):
        return encode(PortLabelFrame(event.port_label.port, event.port_label.label))
    activated: Literal[True] | UnsetType = True if event.activated else UNSET
    return encode(SessionFrame(event.event, wire.session(event.session), activated=activated))


def _naming(target: Target) -> dict[str, Any]:
    """The fields that name a subscription in `subscribed`, `unsubscribed` and `resync`."""
    if isinstance(target, BySession):
        return {"session_id": target.session_id}
    if isinstance(target, ByPort):
        return {"port": target.port}
    return {"sessions": True}


def subscribed(
    ref: str | None, target: Target, session: Session | None, last_seq: int | None
) -> Frame:
    if isinstance(target, SessionList):
        return encode(Subscribed(sessions=True, ref=ref))
    shaped = wire.session(session) if session is not None else None
    return encode(Subscribed(**_naming(target), ref=ref, session=shaped, last_seq=last_seq))


def unsubscribed(ref: str | None, target: Target) -> Frame:
    return encode(Unsubscribed(**_naming(target), ref=ref))


def resync(target: Target) -> Frame:
    return encode(Resync(**_naming(target)))


def message_event(message: Message, port: int, *, edited: bool) -> Frame:
    return encode(MessageEvent(message.session_id, port, edited, wire.message(message)))
