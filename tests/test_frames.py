"""gateway/ws/frames.py: every server frame is a declared Struct, and docs/protocol.md lists them.

Pure: storage dataclasses in, frames out; each frame is decoded back strictly against the
union of declared frames, so a frame that drifted from its declaration (a stray field, a
bound broken) fails here, not in a client.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

import msgspec
import orjson

from gateway.errors import BadRequest, Overloaded
from gateway.ws import frames
from gateway.ws.protocol import ByPort, BySession, Limits, SessionList
from storage import events
from storage.messages import Message
from storage.sessions import Session

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
PROTOCOL_MD = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
_strict = msgspec.json.Decoder(frames.ServerFrame)


def _session() -> Session:
    return Session(uuid.uuid4(), "u", 9222, "cursor", None, "active", False, 3, NOW, NOW, NOW)


def _message(**changes: Any) -> Message:
    fields: dict[str, Any] = {
        "session_id": str(uuid.uuid4()),
        "id": str(uuid.uuid4()),
        "seq": 7,
        "client_id": None,
        "role": "assistant",
        "content": "</script>\u2028",
        "content_type": "markdown",
        "source": "ide_extraction",
        "timestamp": None,
        "created_at": NOW,
        "edited_at": None,
        "metadata": {"k": [1, None]},
    }
    return Message(**{**fields, **changes})


def _every_frame() -> list[frames.Frame]:
    session = _session()
    limits = Limits(1 << 20, 256 << 10, 16 << 10, 500)
    result = frames.ItemResult(str(uuid.uuid4()), "c", 1, duplicate=False, updated=True)
    return [
        frames.ack("r", str(session.id), 9222, [result], "persisted"),
        frames.error(BadRequest("port is bad", details={"field": "port"}), "r"),
        frames.error(Overloaded("busy", retry_after_ms=50), None),
        frames.welcome(None, "me", "1.2.3", limits),
        frames.pong("p"),
        frames.session_reply("n1", session),
        frames.user_event(events.SessionEvent("updated", session)),
        frames.user_event(events.SessionEvent("created", session, activated=True)),
        frames.user_event(events.PresenceEvent(events.PortPresence(9222, online=True))),
        frames.user_event(events.PortLabelEvent(events.PortLabel(9222, "billing-api"))),
        frames.subscribed("s", BySession(session.id), session, 3),
        frames.subscribed("s", ByPort(9222), None, 0),
        frames.subscribed(None, SessionList(), None, None),
        frames.unsubscribed("u", ByPort(9222)),
        frames.resync(SessionList()),
        frames.resync(ByPort(9222)),
        frames.message_event(_message(), 9222, edited=False),
        frames.message_event(_message(edited_at=NOW, client_id="c-1"), 9222, edited=True),
    ]


def test_every_frame_decodes_strictly_as_its_declaration_and_kind() -> None:
    """Each builder's text is a declared frame (closed, bounds held) whose `type` is the
    `Frame.kind` metrics count; an error frame also carries its code."""
    for frame in _every_frame():
        decoded = _strict.decode(frame.text)
        assert decoded.__struct_config__.tag == frame.kind
        assert orjson.loads(frame.text)["type"] == frame.kind
        if isinstance(decoded, frames.Error):
            assert frame.error_code == str(decoded.code)
        else:
            assert frame.error_code is None


def test_optional_fields_are_absent_not_null() -> None:
    """Fields a frame has only sometimes are left out, as docs/protocol.md shows them."""
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for frame in _every_frame():
        by_kind.setdefault(frame.kind, []).append(orjson.loads(frame.text))
    bad, busy = by_kind["error"]
    assert bad["details"] == {"field": "port"} and busy["details"] == {"retry_after_ms": 50}
    reply, updated, created = by_kind["session"]
    assert reply["ref"] == "n1" and "activated" not in reply
    assert "ref" not in updated and "activated" not in updated
    assert created["activated"] is True
    assert orjson.loads(frames.error(BadRequest("x"), None).text) == {
        "type": "error",
        "ref": None,
        "code": "bad_request",
        "message": "x",
    }
    by_session, by_port, session_list = by_kind["subscribed"]
    assert by_session["last_seq"] == 3 and by_session["session"]["message_count"] == 3
    assert (by_port["port"], by_port["session"], by_port["last_seq"]) == (9222, None, 0)
    assert session_list == {"type": "subscribed", "sessions": True, "ref": None}
    assert by_kind["resync"] == [
        {"type": "resync", "sessions": True},
        {"type": "resync", "port": 9222},
    ]


def test_docs_name_every_server_frame() -> None:
    """docs/protocol.md shows or names every frame type the gateway sends, and no other."""
    text = PROTOCOL_MD.read_text()
    server_part = text[text.index("### Client frames") : text.index("## HTTP API")]
    shown = set(re.findall(r'\{"type": "([a-z.]+)"', server_part))
    table = server_part[: server_part.index("Field rules")]
    rows = [row.split("|") for row in table.splitlines() if row.startswith("| `")]
    answers = {name for row in rows for name in re.findall(r"`([a-z.]+)`", row[3])}
    declared = {frame.__struct_config__.tag for frame in get_args(frames.ServerFrame)}
    assert shown | (answers & declared) == declared
    assert shown <= declared


def test_schema_declares_every_frame() -> None:
    """The published JSON Schema has one component per frame, each with its `type` tag."""
    schema = frames.server_frame_schema()
    tags = {
        component["properties"]["type"]["enum"][0]
        for component in schema["$defs"].values()
        if "type" in component.get("properties", {})
    }
    assert tags == {frame.kind for frame in _every_frame()}
