"""gateway/wire.py: the client-facing shapes encode to the JSON the contract gives them.

Pure: storage dataclasses in, bytes out. Sessions and messages are pinned field by field,
since the HTTP bodies and the WebSocket frames (gateway/ws/frames.py) both embed them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson
from asyncpg.pgproto.pgproto import UUID as PgUUID

from gateway import wire
from gateway.errors import ErrorCode
from storage import rows, search, sessions, stats
from storage.messages import message_from_row

CREATED = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
WHOLE_SECOND = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _orjson(value: Any) -> bytes:
    """How gateway/http/api.py encoded every body before gateway/wire.py."""
    return orjson.dumps(value, default=str, option=orjson.OPT_UTC_Z)


def _session(**changes: Any) -> sessions.Session:
    fields: dict[str, Any] = {
        "id": PgUUID(str(uuid.uuid4())),  # asyncpg's own uuid type, as the queries return
        "user_id": "u",
        "port": 9222,
        "ide_type": "cursor",
        "title": None,
        "status": "active",
        "pinned": False,
        "message_count": 0,
        "last_message_at": None,
        "created_at": CREATED,
        "updated_at": WHOLE_SECOND,
    }
    return sessions.Session(**{**fields, **changes})


def _row(**changes: Any) -> rows.BufferedRow:
    fields: dict[str, Any] = {
        "session_id": str(uuid.uuid4()),
        "seq": 3,
        "id": str(uuid.uuid4()),
        "created_ms": 1767323045678,
        "edited_ms": None,
        "user_id": "u",
        "port": 9222,
        "client_id": None,
        "dedup_key": str(uuid.uuid4()),
        "role": "user",
        "content": "caf\u00e9 \u2028 \x01 </script>",
        "content_type": "markdown",
        "source": "user_input",
        "client_ts": None,
        "metadata": {"a": [1, 2.5, None, True], "\u00fc": "x"},
    }
    return rows.BufferedRow(**{**fields, **changes})


def _session_json(session: sessions.Session) -> dict[str, Any]:
    """The contract's session object, written out field by field (docs/protocol.md)."""
    return {
        "id": str(session.id),
        "port": session.port,
        "ide_type": session.ide_type,
        "title": session.title,
        "status": session.status,
        "pinned": session.pinned,
        "message_count": session.message_count,
        "last_message_at": _utc_text(session.last_message_at),
        "created_at": _utc_text(session.created_at),
        "updated_at": _utc_text(session.updated_at),
        "auto_title": session.auto_title,
        "preview": session.preview,
        "preview_role": session.preview_role,
    }


def _utc_text(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def test_session_encodes_every_field_in_order_nulls_and_all() -> None:
    """A session encodes to the contract's object, in order, with nulls kept and no user
    id; asyncpg's uuid type encodes as text; microseconds are kept, whole seconds short."""
    for session in (
        _session(),
        _session(title="t\u00eftle", pinned=True, message_count=7, last_message_at=CREATED),
        _session(auto_title="How do I sort?", preview="Use sorted()", preview_role="assistant"),
    ):
        encoded = wire.encode(wire.session(session))
        assert encoded == orjson.dumps(_session_json(session))
    assert b'"updated_at":"2026-01-02T03:04:05Z"' in wire.encode(wire.session(_session()))


def test_message_encodes_as_the_contract_says_edited_or_not() -> None:
    """Messages encode to the contract's object (timestamps in UTC with `Z`, metadata as
    sent, markup and line separators as plain JSON text); a port message adds its session."""
    plain = message_from_row(_row())
    edited = message_from_row(
        _row(
            client_id="c-1",
            edited_ms=1767323046000,
            client_ts="2026-01-02T03:04:05+00:00",
            metadata={},
        )
    )
    assert orjson.loads(wire.encode(wire.message(plain))) == {
        "id": plain.id,
        "seq": 3,
        "client_id": None,
        "role": "user",
        "content": "caf\u00e9 \u2028 \x01 </script>",
        "content_type": "markdown",
        "source": "user_input",
        "timestamp": None,
        "created_at": "2026-01-02T03:04:05.678000Z",
        "edited_at": None,
        "metadata": {"a": [1, 2.5, None, True], "\u00fc": "x"},
    }
    shaped = orjson.loads(wire.encode(wire.port_message(edited)))
    assert shaped["session_id"] == edited.session_id
    assert shaped["client_id"] == "c-1"
    assert shaped["timestamp"] == "2026-01-02T03:04:05Z"
    assert shaped["edited_at"] == "2026-01-02T03:04:06Z"
    assert shaped["metadata"] == {}
    assert list(shaped)[:-1] == list(orjson.loads(wire.encode(wire.message(edited))))


def test_pages_keep_null_and_nested_shapes() -> None:
    """Page bodies keep null fields present and nest sessions and messages as before."""
    session = _session()
    summary = sessions.PortSummary(9222, "cursor", None, CREATED)
    labelled = sessions.PortSummary(9223, "cursor", None, CREATED, "billing-api")
    ports = wire.PortList([wire.port(summary, online=True), wire.port(labelled, online=False)])
    assert orjson.loads(wire.encode(ports)) == {
        "ports": [
            {
                "port": 9222,
                "ide_type": "cursor",
                "online": True,
                "active_session": None,
                "last_activity_at": "2026-01-02T03:04:05.678000Z",
                "label": None,
            },
            {
                "port": 9223,
                "ide_type": "cursor",
                "online": False,
                "active_session": None,
                "last_activity_at": "2026-01-02T03:04:05.678000Z",
                "label": "billing-api",
            },
        ]
    }
    page = wire.SessionPage([wire.session(session)], None)
    expected = {"sessions": [_session_json(session)], "next_cursor": None}
    assert wire.encode(page) == orjson.dumps(expected)


def test_search_stats_and_error_bodies() -> None:
    """Search hits, stats and errors encode as the handlers' dicts did."""
    hit = search.Hit(
        PgUUID(str(uuid.uuid4())), 1, 2, uuid.uuid4(), "tool", CREATED, "s", [(0, 1)], 0.5,
        "Plan", CREATED, "Plan the move",
    )  # fmt: skip
    expected = {
        "session_id": hit.session_id,
        "port": 1,
        "seq": 2,
        "message_id": hit.message_id,
        "role": "tool",
        "created_at": CREATED,
        "snippet": "s",
        "highlights": [[0, 1]],
        "rank": 0.5,
        "session_title": "Plan",
        "session_created_at": CREATED,
        "session_auto_title": "Plan the move",
    }
    assert wire.encode(wire.search_result(hit)) == _orjson(expected)
    session = _session()
    named = search.SessionHit(session, "Plan", [(0, 4)])
    assert orjson.loads(wire.encode(wire.session_match(named))) == {
        "session": _session_json(session),
        "name": "Plan",
        "highlights": [[0, 4]],
    }
    counts = stats.Stats(sessions_active=2, sessions_archived=3, messages=9)
    assert orjson.loads(wire.encode(wire.stats_body(counts))) == {
        "sessions": {"active": 2, "archived": 3, "total": 5},
        "messages": 9,
    }
    error = wire.error(ErrorCode.NOT_FOUND, "no such session")
    assert wire.encode(error) == b'{"error":{"code":"not_found","message":"no such session"}}'


def test_bodies_are_closed_schemas() -> None:
    """Every body's schema forbids unknown fields, so the fuzz test catches a stray one;
    only the readiness checks stay open (a new check is an addition for monitoring)."""
    _, components = msgspec.json.schema_components(wire.BODIES)
    objects = {name: s for name, s in components.items() if s.get("type") == "object"}
    assert {name for name, s in objects.items() if "additionalProperties" not in s} == {
        "ReadyChecks"
    }
    assert all(
        s["additionalProperties"] is False for name, s in objects.items() if name != "ReadyChecks"
    )
