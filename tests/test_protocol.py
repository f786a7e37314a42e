"""The wire protocol as pure functions: parsing and encoding, no sockets."""

from __future__ import annotations

import json
from dataclasses import replace
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
    # The standard library encodes nesting deeper than orjson's 254 levels (see _DEEP).
    return parse_frame(json.dumps(frame), LIMITS)


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


# ---- wrongly typed fields: every one is a bad_request naming the field ------------------

# JSON values of every type, and the edges of orjson's integers (64 bits, then floats).
_JUNK: list[object] = [
    [], ["user"], {}, {"k": "v"}, 1, 0, -1, 1.5, 1.0, True, False, 2**64 - 1, -(2**63),
]
_NOT_STRINGS = [v for v in _JUNK if not isinstance(v, str)]
_NOT_PORTS = [*_NOT_STRINGS, "9222", 0, 65536]  # the ints 1 and True-as-1 are excluded below
_NOT_BOOLS = [v for v in _JUNK if not isinstance(v, bool)] + ["true"]
_DEEP: dict[str, object] = {}
_node = _DEEP
for _ in range(300):  # valid JSON (orjson decodes 1024 levels) that orjson cannot re-encode
    _node["k"] = {}
    _node = _node["k"]  # type: ignore[assignment]

MESSAGE = {"type": "message", "port": 9222, "content": "hi"}
ITEM_FIELDS: list[tuple[str, list[object]]] = [
    ("content", [*_NOT_STRINGS, "", " \n"]),
    ("id", [*_NOT_STRINGS, "", "x" * 129]),
    ("role", [*_NOT_STRINGS, "robot", "USER"]),
    ("content_type", [*_NOT_STRINGS, "html"]),
    ("source", [*_NOT_STRINGS, "magic"]),
    ("timestamp", [
        *_NOT_STRINGS, "yesterday", "2026-01-01T00:00:00Z\n", "2026-02-30T00:00:00Z",
        "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-01-01T00:00:00+24:00",
    ]),
    ("metadata", [[], [1], "x", 1, 1.5, True, _DEEP]),
]


def _cases() -> list[tuple[dict[str, object], str]]:
    """(frame, the field its error must name) for a wrong value in every field."""
    cases: list[tuple[dict[str, object], str]] = []
    for name, values in ITEM_FIELDS:
        for value in values:
            cases.append(({**MESSAGE, name: value}, name))
            batch = {"type": "extracted", "port": 1, "messages": [{"content": "a", name: value}]}
            cases.append((batch, f"messages[0].{name}"))
    ports = [p for p in _NOT_PORTS if p != 1 and p is not True]
    for frame in (
        MESSAGE,
        {"type": "extracted", "messages": [{"content": "a"}]},
        {"type": "session.new"},
        {"type": "subscribe"},
        {"type": "unsubscribe"},
    ):
        cases += [({**frame, "port": value}, "port") for value in ports]
    cases += [({**MESSAGE, "durable": value}, "durable") for value in _NOT_BOOLS]
    extracted = {"type": "extracted", "port": 1, "messages": [{"content": "a"}]}
    cases += [({**extracted, "durable": value}, "durable") for value in _NOT_BOOLS]
    cases += [({**extracted, "ide_type": v}, "ide_type")
              for v in [*_NOT_STRINGS, "Cursor", "cursor\n", ""]]
    cases += [({**extracted, "messages": v}, "messages")
              for v in [{}, {"content": "a"}, "a", 1, 1.5, True, []]]
    cases += [({**extracted, "messages": [v]}, "messages[0]")
              for v in [[], ["a"], "a", 1, 1.5, True, None]]
    cases += [({"type": "session.new", "port": 1, "title": v}, "title")
              for v in [*_NOT_STRINGS, "x" * 201, "a\u0000"]]
    cases += [({"type": "hello", "client": v}, "client")
              for v in [[], ["a"], 1, 1.5, True, _DEEP]]
    cases += [({"type": "hello", "kind": v}, "kind") for v in [*_NOT_STRINGS, "robot", None]]
    cases += [({"type": "hello", "ports": v}, "ports")
              for v in [{}, "9222", 9222, True, [[]], [{}], ["9222"], [1.5], [True], [0],
                        [2**64 - 1], [9222] * 65]]  # fmt: skip
    for kind in ("subscribe", "unsubscribe"):
        cases += [({"type": kind, "session_id": v}, "session_id")
                  for v in [*_NOT_STRINGS, "not-a-uuid", ""]]
        cases += [({"type": kind, "sessions": v}, "sessions")
                  for v in [v for v in _JUNK if v is not True] + ["true"]]
        cases += [({"type": kind, "port": 1, "since_session_id": v}, "since_session_id")
                  for v in [*_NOT_STRINGS, "nope"]]
    cases += [({"type": "subscribe", "port": 1, "since_seq": v}, "since_seq")
              for v in [*[v for v in _JUNK if v not in (0, 1) or isinstance(v, bool)],
                        "1", 2**63, 2**64 - 1]]  # fmt: skip
    cases += [({"type": v}, "type") for v in [*_NOT_STRINGS, None]]
    cases += [({"type": "explode"}, "type"), ({"type": "subscribe"}, "type")]
    return cases


_CASES = _cases()


@pytest.mark.parametrize(
    ("frame", "field"), _CASES, ids=[f"{i}-{f}" for i, (_, f) in enumerate(_CASES)]
)
def test_every_wrongly_typed_field_is_a_bad_request_naming_it(
    frame: dict[str, object], field: str
) -> None:
    """A wrong type or value in any field of any frame is `bad_request` naming that field."""
    with pytest.raises(FrameError) as caught:
        parse({**frame, "ref": "r"})
    assert caught.value.code == ErrorCode.BAD_REQUEST, caught.value.message
    assert caught.value.details == {"field": field}, caught.value.message
    assert caught.value.ref == "r"


@pytest.mark.parametrize("ref", [*_NOT_STRINGS, "r" * 65])
def test_a_wrongly_typed_ref_is_a_bad_request_without_ref(ref: object) -> None:
    """A ref that is not a short string is refused and not echoed."""
    with pytest.raises(FrameError) as caught:
        parse({"type": "ping", "ref": ref})
    assert caught.value.code == ErrorCode.BAD_REQUEST and caught.value.ref is None


NOT_JSON_OBJECTS = [
    "", "{", "[]", "1", "null", '"ping"', '{"a": 1e400}', "[" * 2000 + "]" * 2000,
    '{"type": "ping", "ref": "\\ud800"}',
]


@pytest.mark.parametrize("text", NOT_JSON_OBJECTS)
def test_text_that_is_no_json_object_is_a_bad_request(text: str) -> None:
    """Invalid JSON, non-objects, infinities, nesting past the limit and lone surrogates are
    `bad_request`, never another exception."""
    with pytest.raises(FrameError) as caught:
        parse_frame(text, LIMITS)
    assert caught.value.code == ErrorCode.BAD_REQUEST


def test_the_edges_of_valid_values_still_parse() -> None:
    """The widest valid values parse: the last seq, far-off timestamps, 254-deep metadata."""
    deep: dict[str, object] = {}
    node = deep
    for _ in range(253):  # 254 levels in all: orjson's deepest
        node["k"] = {}
        node = node["k"]  # type: ignore[assignment]
    frame = {**MESSAGE, "timestamp": "0001-01-01T00:00:00Z", "metadata": deep, "role": "tool"}
    command = parse_frame(json.dumps(frame), replace(LIMITS, max_metadata_bytes=10_000))
    assert isinstance(command, Ingest)
    assert command.items[0].client_ts == datetime(1, 1, 1, tzinfo=UTC)
    assert command.items[0].role == "tool"
    subscribe = parse({"type": "subscribe", "port": 1, "since_seq": 2**63 - 1})
    assert getattr(subscribe, "since_seq", None) == 2**63 - 1
