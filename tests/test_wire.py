"""gateway/wire.py: the HTTP bodies encode to the JSON clients were sent before (orjson, `Z`).

Pure: Structs in, bytes out. The WebSocket path still shapes sessions and messages as dicts
(`Session.to_json`, storage/messages.py) that orjson encodes, so these tests pin the HTTP
bodies to those bytes: the two paths cannot drift apart while both exist.
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
    """How gateway/api.py encoded every body before gateway/wire.py."""
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


def test_session_bytes_match_the_websocket_shape() -> None:
    """A session encodes to the bytes its `to_json` dict did, nulls and all."""
    for session in (
        _session(),
        _session(title="t\u00eftle", pinned=True, message_count=7, last_message_at=CREATED),
    ):
        assert wire.encode(wire.session(session)) == _orjson(session.to_json())


def test_message_bytes_match_the_websocket_shape() -> None:
    """Messages encode to the bytes of storage/messages.py's dicts, edited or not."""
    shaped = [
        message_from_row(_row()),
        message_from_row(
            _row(
                client_id="c-1",
                edited_ms=1767323046000,
                client_ts="2026-01-02T03:04:05+00:00",
                metadata={},
            )
        ),
    ]
    for body, message in zip(wire.messages(shaped), shaped, strict=True):
        assert wire.encode(body) == _orjson(message)
    sid = str(uuid.uuid4())
    port_shaped = [{"session_id": sid, **message} for message in shaped]
    for port_body, port_message in zip(wire.port_messages(port_shaped), port_shaped, strict=True):
        assert orjson.loads(wire.encode(port_body)) == orjson.loads(_orjson(port_message))


def test_pages_keep_null_and_nested_shapes() -> None:
    """Page bodies keep null fields present and nest sessions and messages as before."""
    session = _session()
    summary = sessions.PortSummary(9222, "cursor", None, CREATED)
    ports = wire.PortList([wire.port(summary, online=True)])
    assert orjson.loads(wire.encode(ports)) == {
        "ports": [
            {
                "port": 9222,
                "ide_type": "cursor",
                "online": True,
                "active_session": None,
                "last_activity_at": "2026-01-02T03:04:05.678000Z",
            }
        ]
    }
    page = wire.SessionPage([wire.session(session)], None)
    assert wire.encode(page) == _orjson({"sessions": [session.to_json()], "next_cursor": None})


def test_search_stats_and_error_bodies() -> None:
    """Search hits, stats and errors encode as the handlers' dicts did."""
    hit = search.Hit(
        PgUUID(str(uuid.uuid4())), 1, 2, uuid.uuid4(), "tool", CREATED, "s", [(0, 1)], 0.5
    )
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
    }
    assert wire.encode(wire.search_result(hit)) == _orjson(expected)
    counts = stats.Stats(sessions_active=2, sessions_archived=3, messages=9)
    assert orjson.loads(wire.encode(wire.stats_body(counts))) == {
        "sessions": {"active": 2, "archived": 3, "total": 5},
        "messages": 9,
    }
    error = wire.error(ErrorCode.NOT_FOUND, "no such session")
    assert wire.encode(error) == b'{"error":{"code":"not_found","message":"no such session"}}'


def test_bodies_are_closed_schemas() -> None:
    """Every body's schema forbids unknown fields, so the fuzz test catches a stray one."""
    _, components = msgspec.json.schema_components(wire.BODIES)
    objects = [schema for schema in components.values() if schema.get("type") == "object"]
    assert objects
    assert all(schema.get("additionalProperties") is False for schema in objects)
