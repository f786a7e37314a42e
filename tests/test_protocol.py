"""The wire protocol as pure functions: parsing and encoding, no sockets."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from gateway.errors import ErrorCode
from gateway.settings import Settings
from gateway.wire import (
    CLIENT_KINDS,
    CONTENT_TYPES,
    MAX_CLIENT_ID_CHARS,
    MAX_PORT,
    MAX_REF_CHARS,
    MAX_SEQ,
    MAX_TITLE_CHARS,
    ROLES,
    SOURCES,
    ide_type_for_port,
)
from gateway.ws import frames
from gateway.ws.client_frames import CLIENT_FRAME_SCHEMA, IDE_TYPE_PATTERN
from gateway.ws.protocol import (
    FrameError,
    Hello,
    Ingest,
    Limits,
    Ping,
    SessionNew,
    Subscribe,
    Unsubscribe,
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
    frame = orjson.loads(frames.error(caught.value, caught.value.ref).text)
    assert frame == {
        "type": "error",
        "ref": "x",
        "code": "bad_request",
        "message": "messages[1].content must be a non-empty string",
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
                        [2**64 - 1]]]  # fmt: skip
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


# ---- the bad frames a client may send, each with the error reply it gets ----------------
# tests/test_errors.py sends one of each kind of reply over a real socket.

_PORT = 9601
_GOOD = {"type": "message", "port": _PORT, "content": "fine"}
# The limits a gateway runs with by default (the frames below are sized against them).
_DEFAULTS = Settings()
GATEWAY_LIMITS = Limits(
    max_frame_bytes=_DEFAULTS.max_frame_bytes,
    max_content_bytes=_DEFAULTS.max_content_bytes,
    max_metadata_bytes=_DEFAULTS.max_metadata_bytes,
    max_batch_items=_DEFAULTS.max_batch_items,
    max_ports_per_hello=_DEFAULTS.max_ports_per_hello,
)
MAX_PORTS_PER_HELLO = _DEFAULTS.max_ports_per_hello

BAD_FRAMES: list[tuple[str, Any, str, str]] = [
    # (case, frame (dict, or raw text), expected code, a word the message must contain)
    ("invalid json", "{not json", "bad_request", "JSON"),
    ("not an object", "[1, 2]", "bad_request", "object"),
    ("no type", {"port": _PORT, "content": "x"}, "bad_request", "type"),
    ("unknown type", {"type": "explode", "port": _PORT}, "bad_request", "explode"),
    ("missing port", {"type": "message", "content": "x"}, "bad_request", "port"),
    ("port as string", {**_GOOD, "port": "9222"}, "bad_request", "port"),
    ("port as bool", {**_GOOD, "port": True}, "bad_request", "port"),
    ("port zero", {**_GOOD, "port": 0}, "bad_request", "1 to 65535"),
    ("port too high", {**_GOOD, "port": 65536}, "bad_request", "1 to 65535"),
    ("missing content", {"type": "message", "port": _PORT}, "bad_request", "content"),
    ("content not a string", {**_GOOD, "content": 5}, "bad_request", "content"),
    ("empty content", {**_GOOD, "content": ""}, "bad_request", "empty"),
    ("blank content", {**_GOOD, "content": "  \n "}, "bad_request", "empty"),
    ("oversized content", {**_GOOD, "content": "x" * (256 * 1024 + 1)}, "too_large", "limit"),
    ("bad role", {**_GOOD, "role": "robot"}, "bad_request", "role"),
    ("bad content_type", {**_GOOD, "content_type": "html"}, "bad_request", "content_type"),
    ("bad source", {**_GOOD, "source": "magic"}, "bad_request", "source"),
    ("client id too long", {**_GOOD, "id": "x" * 129}, "bad_request", "id"),
    ("client id not a string", {**_GOOD, "id": 7}, "bad_request", "id"),
    ("timestamp not rfc3339", {**_GOOD, "timestamp": "yesterday"}, "bad_request", "RFC 3339"),
    ("timestamp without offset", {**_GOOD, "timestamp": "2026-01-01T00:00:00"}, "bad_request",
     "RFC 3339"),
    ("impossible date", {**_GOOD, "timestamp": "2026-02-30T00:00:00Z"}, "bad_request",
     "timestamp"),
    ("metadata not an object", {**_GOOD, "metadata": [1]}, "bad_request", "metadata"),
    ("NUL in content", {**_GOOD, "content": "a\u0000b"}, "bad_request", "NUL"),
    ("NUL in client id", {**_GOOD, "id": "a\u0000"}, "bad_request", "NUL"),
    ("NUL deep in metadata", {**_GOOD, "metadata": {"k": [{"x": "\u0000"}]}}, "bad_request",
     "NUL"),
    ("lone surrogate", '{"type": "message", "port": 9601, "content": "\\ud800"}',
     "bad_request", "JSON"),
    ("durable not a bool", {**_GOOD, "durable": "yes"}, "bad_request", "durable"),
    ("messages not a list", {"type": "extracted", "port": _PORT, "messages": {}},
     "bad_request", "messages"),
    ("empty batch", {"type": "extracted", "port": _PORT, "messages": []}, "bad_request",
     "empty"),
    ("batch over 500", {"type": "extracted", "port": _PORT,
                        "messages": [{"content": f"m{i}"} for i in range(501)]},
     "too_large", "500"),
    ("bad item in batch", {"type": "extracted", "port": _PORT,
                           "messages": [{"content": "ok"}, {"content": ""}]},
     "bad_request", "messages[1].content"),
    ("item not an object", {"type": "extracted", "port": _PORT, "messages": ["hi"]},
     "bad_request", "messages[0]"),
    ("bad ide_type", {"type": "extracted", "port": _PORT, "ide_type": "Not An IDE!",
                      "messages": [{"content": "x"}]}, "bad_request", "ide_type"),
    ("session.new bad port", {"type": "session.new", "port": -1}, "bad_request", "port"),
    ("hello bad kind", {"type": "hello", "kind": "robot"}, "bad_request", "kind"),
    ("hello bad ports", {"type": "hello", "kind": "ide", "ports": [70000]}, "bad_request",
     "ports"),
    # Each of these once raised past the parser and closed the connection with 1011 (issue 12).
    ("role as a list", {**_GOOD, "role": []}, "bad_request", "role"),
    ("content_type as an object", {**_GOOD, "content_type": {"a": 1}}, "bad_request",
     "content_type"),
    ("source as a list", {**_GOOD, "source": ["user_input"]}, "bad_request", "source"),
    ("item role as an object", {"type": "extracted", "port": _PORT,
                                "messages": [{"content": "x", "role": {}}]},
     "bad_request", "messages[0].role"),
    ("hello kind as a list", {"type": "hello", "kind": ["ide"]}, "bad_request", "kind"),
    ("metadata nested 300 deep", {**_GOOD, "metadata": "DEEP"}, "bad_request", "nested"),
    ("hello client nested 300 deep", {"type": "hello", "client": "DEEP"}, "bad_request",
     "nested"),
    ("timestamp whose UTC instant is before year 1",
     {**_GOOD, "timestamp": "0001-01-01T00:00:00+01:00"}, "bad_request", "timestamp"),
    ("since_seq past the bigint range", {"type": "subscribe", "port": _PORT, "since_seq": 2**63},
     "bad_request", "since_seq"),
]
# Nesting orjson decodes but cannot encode again (it stops at 254 levels).
_DEEP_TEXT = '{"k":' * 300 + "1" + "}" * 300


def frame_text(frame: Any) -> str:
    """A BAD_FRAMES frame as sent: a dict gets ref `bad-1` (and "DEEP" becomes 300 levels of
    nesting); text is sent as it is."""
    if isinstance(frame, dict):
        return orjson.dumps({**frame, "ref": "bad-1"}).decode().replace('"DEEP"', _DEEP_TEXT)
    return str(frame)


@pytest.mark.parametrize(
    ("frame", "code", "word"),
    [case[1:] for case in BAD_FRAMES],
    ids=[case[0] for case in BAD_FRAMES],
)
def test_bad_frame_is_refused_with_its_code_message_and_ref(
    frame: Any, code: str, word: str
) -> None:
    """Each bad frame is refused by the parser with an error frame carrying its code, a
    message naming the problem and the frame's ref (none when the frame is not JSON)."""
    with pytest.raises(FrameError) as caught:
        parse_frame(frame_text(frame), GATEWAY_LIMITS)
    error = orjson.loads(frames.error(caught.value, caught.value.ref).text)
    assert error["type"] == "error"
    assert error["code"] == code
    assert word in error["message"]
    assert error["ref"] == ("bad-1" if isinstance(frame, dict) else None)


# ---- the client frame schema (CLIENT_FRAME_SCHEMA) ---------------------------------------

_UUID = "0190f5a2-3c4d-7e8f-9a0b-1c2d3e4f5a6b"
# One valid frame of every type with every field it has, and extras (unknown fields are allowed).
SAMPLE_FRAMES: list[tuple[dict[str, Any], type]] = [
    ({"type": "message", "ref": "r" * MAX_REF_CHARS, "port": MAX_PORT, "content": "hi",
      "id": "c" * MAX_CLIENT_ID_CHARS, "role": "assistant", "content_type": "markdown",
      "source": "ide_extraction", "timestamp": "2026-01-31T12:00:00+01:00",
      "metadata": {"model": "m", "n": [1, 2.5, None]}, "durable": True, "extra": [1]}, Ingest),
    ({"type": "message", "port": 1, "content": "x"}, Ingest),
    ({"type": "extracted", "ref": "e", "port": 9222, "ide_type": "x.y-z_1", "durable": False,
      "messages": [{"content": "a", "id": "1", "role": "user", "content_type": "code",
                    "source": "user_input", "timestamp": "0001-01-01T00:00:00Z",
                    "metadata": {}, "extra": True}, {"content": "b"}]}, Ingest),
    ({"type": "session.new", "port": 9222, "title": "t" * MAX_TITLE_CHARS}, SessionNew),
    ({"type": "session.new", "port": 9222, "title": None}, SessionNew),
    ({"type": "hello", "client": {"name": "ext", "version": "1"}, "kind": "ide",
      "ports": list(range(9222, 9222 + MAX_PORTS_PER_HELLO))}, Hello),
    ({"type": "hello", "client": "ext/1", "kind": "ui"}, Hello),
    ({"type": "ping", "ref": None, "extra": {"k": "v"}}, Ping),
    ({"type": "subscribe", "session_id": _UUID, "since_seq": MAX_SEQ}, Subscribe),
    ({"type": "subscribe", "port": 9222, "since_seq": 0, "since_session_id": _UUID}, Subscribe),
    ({"type": "subscribe", "sessions": True}, Subscribe),
    ({"type": "unsubscribe", "port": 9222}, Unsubscribe),
    ({"type": "unsubscribe", "session_id": _UUID}, Unsubscribe),
]


def _property(frame_type: str, name: str) -> dict[str, Any]:
    """A field's schema in a frame type's Struct, without its `| None`."""
    ref = CLIENT_FRAME_SCHEMA["discriminator"]["mapping"][frame_type]
    struct = CLIENT_FRAME_SCHEMA["$defs"][ref.rsplit("/", 1)[1]]
    node: dict[str, Any] = struct["properties"][name]
    members = [m for m in node.get("anyOf", [node]) if m != {"type": "null"}]
    return {**node, **members[0]} if len(members) == 1 else node


@pytest.mark.parametrize(
    ("frame", "command"), SAMPLE_FRAMES, ids=[f["type"] for f, _ in SAMPLE_FRAMES]
)
def test_sample_frames_are_valid_by_the_schema_and_parse(
    frame: dict[str, Any], command: type
) -> None:
    """A valid frame of every type satisfies the published schema and parses into its command."""
    jsonschema_rs = pytest.importorskip("jsonschema_rs")  # comes with schemathesis (test extra)
    validator = jsonschema_rs.validator_for(CLIENT_FRAME_SCHEMA)
    assert validator.is_valid(frame), [e.message for e in validator.iter_errors(frame)]
    assert isinstance(parse_frame(json.dumps(frame), LIMITS), command)


@pytest.mark.parametrize(
    "frame",
    [{**MESSAGE, "port": 0}, {**MESSAGE, "ref": "r" * (MAX_REF_CHARS + 1)},
     {**MESSAGE, "id": "c" * (MAX_CLIENT_ID_CHARS + 1)}, {**MESSAGE, "role": "robot"},
     {**MESSAGE, "metadata": [1]}, {"type": "extracted", "port": 1, "messages": []},
     {"type": "extracted", "port": 1, "ide_type": "cursor\n", "messages": [{"content": "a"}]},
     {"type": "session.new", "port": 1, "title": "t" * (MAX_TITLE_CHARS + 1)},
     {"type": "subscribe", "port": 1, "since_seq": MAX_SEQ + 1}, {"type": "explode"}],
)  # fmt: skip
def test_frames_out_of_bounds_are_invalid_by_the_schema_too(frame: dict[str, Any]) -> None:
    """A frame the parser refuses for a declared bound is invalid by the schema as well."""
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    assert not jsonschema_rs.validator_for(CLIENT_FRAME_SCHEMA).is_valid(frame)
    with pytest.raises(FrameError):
        parse_frame(json.dumps(frame), LIMITS)


def test_the_schema_bounds_are_the_constants() -> None:
    """The bounds the schema publishes are the module's constants, field by field."""
    frame_types = {"message", "extracted", "session.new", "hello", "ping", "subscribe",
                   "unsubscribe"}  # fmt: skip
    assert set(CLIENT_FRAME_SCHEMA["discriminator"]["mapping"]) == frame_types
    for frame_type in frame_types:
        assert _property(frame_type, "ref")["maxLength"] == MAX_REF_CHARS
    for frame_type in ("message", "extracted", "session.new", "subscribe", "unsubscribe"):
        port = _property(frame_type, "port")
        assert (port["minimum"], port["maximum"]) == (1, MAX_PORT)
    item = CLIENT_FRAME_SCHEMA["$defs"]["ExtractedItem"]["properties"]
    for fields in (item, CLIENT_FRAME_SCHEMA["$defs"]["MessageFrame"]["properties"]):
        [client_id, _] = fields["id"]["anyOf"]
        assert (client_id["minLength"], client_id["maxLength"]) == (1, MAX_CLIENT_ID_CHARS)
        assert set(fields["role"]["enum"]) == ROLES
        assert set(fields["content_type"]["enum"]) == CONTENT_TYPES
        assert set(fields["source"]["enum"]) == SOURCES
        assert fields["content"]["minLength"] == 1
    assert _property("extracted", "ide_type")["pattern"] == IDE_TYPE_PATTERN
    assert _property("extracted", "messages")["minItems"] == 1
    assert _property("session.new", "title")["maxLength"] == MAX_TITLE_CHARS
    ports = _property("hello", "ports")
    assert "maxItems" not in ports  # the configured limit, checked after decoding
    assert (ports["items"]["minimum"], ports["items"]["maximum"]) == (1, MAX_PORT)
    assert set(_property("hello", "kind")["enum"]) == CLIENT_KINDS
    since_seq = _property("subscribe", "since_seq")
    assert (since_seq["minimum"], since_seq["maximum"]) == (0, MAX_SEQ)
    # Open objects: clients send extra fields and the gateway ignores them.
    assert not any("additionalProperties" in d for d in CLIENT_FRAME_SCHEMA["$defs"].values())


@pytest.mark.parametrize(
    ("frame", "field", "path", "frame_type", "name"),
    [
        ({**MESSAGE, "port": 0}, "port", "port", "message", "port"),
        ({"type": "extracted", "port": 1,
          "messages": [{"content": "a"}] * 3 + [{"content": "a", "role": "robot"}]},
         "messages[3].role", "messages[3].role", "message", "role"),
        ({"type": "hello", "ports": [9222, 70000]}, "ports", "ports[1]", "hello", "ports"),
        ({"type": "subscribe", "port": 1, "since_seq": -1}, "since_seq", "since_seq",
         "subscribe", "since_seq"),
        ({**MESSAGE, "timestamp": "yesterday"}, "timestamp", "timestamp", "message", "timestamp"),
    ],
)  # fmt: skip
def test_error_messages_state_the_schema_description(
    frame: dict[str, Any], field: str, path: str, frame_type: str, name: str
) -> None:
    """An error names the field and states its rule as the schema describes it."""
    with pytest.raises(FrameError) as caught:
        parse(frame)
    rule = _property(frame_type, name)
    if path == "ports[1]":
        rule = rule["items"]
    assert caught.value.message == f"{path} must be {rule['description']}"
    assert caught.value.details == {"field": field}


def test_documented_messages() -> None:
    """The wording clients see for two common mistakes."""
    with pytest.raises(FrameError) as role:
        parse({"type": "extracted", "port": 1,
               "messages": [{"content": "a"}] * 3 + [{"content": "a", "role": "robot"}]})
    assert role.value.message == "messages[3].role must be one of assistant, system, tool, user"
    with pytest.raises(FrameError) as port:
        parse({**MESSAGE, "port": 65536})
    assert port.value.message == "port must be an integer from 1 to 65535"


def test_a_hello_past_the_configured_port_limit_is_too_large() -> None:
    """The ports-per-hello limit is the configured one: one more is `too_large` naming it."""
    for limit in (2, MAX_PORTS_PER_HELLO):
        limits = replace(GATEWAY_LIMITS, max_ports_per_hello=limit)
        ports = list(range(9222, 9222 + limit))
        assert isinstance(parse_frame(json.dumps({"type": "hello", "ports": ports}), limits), Hello)
        with pytest.raises(FrameError) as refused:
            parse_frame(json.dumps({"type": "hello", "ports": [*ports, 1]}), limits)
        assert refused.value.code == "too_large"
        assert "GATEWAY_MAX_PORTS_PER_HELLO" in refused.value.message
        assert refused.value.details == {"field": "ports", "limit": limit}
