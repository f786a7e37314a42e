"""The publications on a user's channel (`Keys.user_channel`): session, presence and port
label events.

Storage publishes them (the batch writer after a commit changed a session's counters, the
buffer when it created a port's first session, presence.lua when a port goes offline) and
the gateway publishes the lifecycle's and port labels; every gateway process decodes them
here and turns them into client frames (gateway/ws/frames.py). They are an internal format
between the two, not the client's: storage's own `Session` dataclass, user id included, so
the client-facing shape has one owner on the gateway side.

    {"event": "created" | "updated" | "archived" | "deleted", "session": {Session},
     "activated": bool}
    {"presence": {"port": P, "online": B}}     <- also written by hand in presence.lua
    {"port_label": {"port": P, "label": L}}    <- L null: the label was taken away

`activated` marks the events that made the session its port's active one (a first session,
a rotation, an unarchive): port subscriptions follow those, and only those.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import msgspec

from storage.sessions import Session

SessionEventKind = Literal["created", "updated", "archived", "deleted"]


@dataclass(frozen=True, slots=True)
class SessionEvent:
    event: SessionEventKind
    session: Session
    activated: bool = False


@dataclass(frozen=True, slots=True)
class PortPresence:
    port: int
    online: bool


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    presence: PortPresence


@dataclass(frozen=True, slots=True)
class PortLabel:
    port: int
    label: str | None  # None: the label was taken away


@dataclass(frozen=True, slots=True)
class PortLabelEvent:
    port_label: PortLabel


UserEvent = SessionEvent | PresenceEvent | PortLabelEvent



@dataclass(frozen=True, slots=True)
class _Publication:
    """Either kind, as decoded: msgspec decodes no untagged union of two object types."""

    event: SessionEventKind | None = None
    session: Session | None = None
    activated: bool = False
    presence: PortPresence | None = None
    port_label: PortLabel | None = None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(_Publication)


def session_event(event: SessionEventKind, session: Session, *, activated: bool = False) -> bytes:
    """A session event, encoded for publication on the session's user's channel."""
    return _encoder.encode(SessionEvent(event, session, activated))


def port_label_event(port: int, label: str | None) -> bytes:
    """A port's new label (None: taken away), encoded for publication on its user's channel."""
    return _encoder.encode(PortLabelEvent(PortLabel(port, label)))


def decode(data: bytes) -> UserEvent:
    """A user channel publication, whoever published it."""
    found = _decoder.decode(data)
    if found.presence is not None:
        return PresenceEvent(found.presence)
    if found.port_label is not None:
        return PortLabelEvent(found.port_label)
    if found.event is None or found.session is None:
        raise msgspec.ValidationError("a user event holds `presence`, or `event` and `session`")
    return SessionEvent(found.event, found.session, found.activated)
