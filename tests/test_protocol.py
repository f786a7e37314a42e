"""The wire protocol as pure functions: parsing and encoding, no sockets."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from gateway.errors import ErrorCode
from gateway.protocol import (
    FrameError,
    Hello,
    Ingest,
    Limits,
    Ping,
    SessionNew,
    encode_error,
    ide_type_for_port,
    parse_frame,
)
from storage.dedup import content_hash, dedup_key

LIMITS = Limits(
    max_frame_bytes=1 << 20, max_content_bytes=1000, max_metadata_bytes=100, max_batch_items=3
)


def parse(frame: dict[str, object]) -> object:
    return parse_frame(orjson.dumps(frame).decode(), LIMITS)


def test_message_defaults() -> None:
    """A bare message is a user text message from user input, not durable."""
    command = parse({"type": "message", "port": 9222, "content": "hi"})
    assert isinstance(command, Ingest)
    [item] = command.items
    assert (item.role, item.content_type, item.source) == ("user", "text", "user_input")
    assert item.client_id is None and item.client_ts is None and item.metadata_json == "{}"
    assert command.durable is False and command.ide_type is None


def test_extracted_items_default_to_ide_extraction() -> None:
    """Items of an `extracted` frame are `ide_extraction` and keep their order."""
    command = parse(
        {"type": "extracted", "port": 1, "ide_type": "cursor",
         "messages": [{"content": "a"}, {"content": "b", "role": "assistant"}]}
    )
    assert isinstance(command, Ingest)
    assert [i.content for i in command.items] == ["a", "b"]
    assert {i.source for i in command.items} == {"ide_extraction"}
    assert command.ide_type == "cursor"


def test_timestamps_are_normalised_to_utc() -> None:
    """RFC 3339 timestamps with any offset parse to the same UTC instant."""
    a = parse({"type": "message", "port": 1, "content": "x", "timestamp": "2026-01-01T12:00:00Z"})
    b = parse(
        {"type": "message", "port": 1, "content": "x", "timestamp": "2026-01-01T13:00:00+01:00"}
    )
    assert isinstance(a, Ingest) and isinstance(b, Ingest)
    assert a.items[0].client_ts == b.items[0].client_ts == datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert a.items[0].dedup_key == b.items[0].dedup_key


def test_other_commands() -> None:
    """hello, session.new and ping parse into their commands."""
    hello = parse({"type": "hello", "kind": "ide", "ports": [9222, 9223], "client": "ext/1"})
    assert hello == Hello(None, "ext/1", "ide", (9222, 9223))
    assert parse({"type": "session.new", "port": 5, "ref": "r"}) == SessionNew("r", 5, None)
    assert parse({"type": "ping"}) == Ping(None)


def test_errors_carry_code_ref_and_field() -> None:
    """A bad item names its field; the error keeps the frame's ref."""
    with pytest.raises(FrameError) as caught:
        parse({"type": "extracted", "port": 1, "ref": "x", "messages": [{"content": "a"}, {}]})
    assert caught.value.ref == "x" and caught.value.code == ErrorCode.BAD_REQUEST
    assert caught.value.details == {"field": "messages[1].content"}
    frame = orjson.loads(encode_error(caught.value, caught.value.ref))
    assert frame == {
        "type": "error",
        "ref": "x",
        "code": "bad_request",
        "message": "messages[1].content must be a string",
        "details": {"field": "messages[1].content"},
    }


def test_limits_come_from_the_limits_object() -> None:
    """Content, metadata and batch limits are the configured ones."""
    with pytest.raises(FrameError) as content:
        parse({"type": "message", "port": 1, "content": "é" * 501})  # 1002 bytes
    assert content.value.code == ErrorCode.TOO_LARGE
    with pytest.raises(FrameError) as metadata:
        parse({"type": "message", "port": 1, "content": "x", "metadata": {"k": "v" * 100}})
    assert metadata.value.code == ErrorCode.TOO_LARGE
    with pytest.raises(FrameError) as batch:
        parse({"type": "extracted", "port": 1, "messages": [{"content": "x"}] * 4})
    assert batch.value.code == ErrorCode.TOO_LARGE


def test_dedup_key_uses_client_id_else_fingerprint() -> None:
    """The client id alone decides when given; otherwise port, role, content and time do."""
    assert dedup_key(1, "user", "a", None, "id") == dedup_key(2, "assistant", "b", None, "id")
    base = dedup_key(1, "user", "a", None, None)
    assert base == dedup_key(1, "user", "a", None, None)
    assert len({
        base,
        dedup_key(2, "user", "a", None, None),
        dedup_key(1, "assistant", "a", None, None),
        dedup_key(1, "user", "b", None, None),
        dedup_key(1, "user", "a", datetime(2026, 1, 1, tzinfo=UTC), None),
    }) == 5
    assert content_hash("a") != content_hash("b")


@pytest.mark.parametrize(
    ("port", "ide"),
    [(9221, "unknown"), (9222, "cursor"), (9231, "cursor"), (9232, "vscode"),
     (9241, "vscode"), (9242, "windsurf"), (9251, "windsurf"), (9252, "unknown")],
)
def test_ide_type_for_port(port: int, ide: str) -> None:
    """The debug-port ranges map to IDE types; everything else is unknown."""
    assert ide_type_for_port(port) == ide
