"""Fuzzing (issue 12, scenario g): hostile WebSocket frames and HTTP inputs, real gateway.

Seeded (`derandomize`) and bounded, so every run sends the same inputs: 120 WebSocket
examples of up to 4 frames and 360 HTTP requests, about ten seconds in all.

The promise under test: a hostile input never crashes anything. A WebSocket frame gets an
`error` (or, when it happens to be valid, its normal reply), never a close and never a 1011;
the same connection answers a ping after every frame; and nothing is stored unless a frame
got an `ack`. An HTTP input gets a 2xx or a 4xx with the contract's error body, never a 5xx.
tests/test_openapi.py fuzzes what the OpenAPI document describes; this file sends what it
does not: wrongly typed JSON bodies, junk ids, huge and negative numbers, repeated
parameters, non-UTF-8 and percent-encoded junk, junk tokens.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from gateway.auth import issue_token
from gateway.errors import ErrorCode
from gateway.settings import Settings
from gateway.wire import CLIENT_KINDS, CONTENT_TYPES, ROLES, SOURCES
from gateway.ws.protocol import (
    BySession,
    FrameError,
    Hello,
    Ingest,
    Ping,
    SessionNew,
    Subscribe,
    parse_frame,
)
from tests.conftest import RECV_TIMEOUT, RunningGateway, drained, receive, run_gateway

# Failing examples hold huge strings: print them anyway (the suite turns warnings to errors).
pytestmark = pytest.mark.filterwarnings(
    "ignore:Generating overly large repr:hypothesis.errors.HypothesisWarning"
)
# Deterministic and bounded; no shrinking, so a failing run is as quick as a passing one
# (the failing example is printed whole). The gateway fixture is built once per test and
# shared by its examples on purpose: one server, one connection, many frames.
FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
    print_blob=False,
)

# ---- values ------------------------------------------------------------------------------

INTS = st.one_of(
    st.integers(-(2**70), 2**70),  # beyond 64 bits orjson decodes integers as floats
    st.sampled_from([0, -1, 1, 65535, 65536, 2**31, 2**63 - 1, 2**63, 2**64 - 1, 2**64]),
)
ODD_STRINGS = st.sampled_from(
    [
        "", " ", "\n", "\x00", "a\x00b", "\ud800", "x\udfff", "\u2028", "é", "😀", "null",
        "true", "[]", "{}", "1", "-1", "9222", "1e9", "user", "USER", "ide", "cursor\n",
        "2026-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
        "2026-02-30T00:00:00Z", "00000000-0000-0000-0000-000000000000", "%00", "%ff",
    ]
)
TEXT = st.text(max_size=12) | ODD_STRINGS
# Huge strings, each well below the 1 MiB frame limit.
HUGE = st.sampled_from([65, 129, 201, 1001, (16 << 10) + 1, (256 << 10) + 1, 300_000]).map(
    lambda n: "x" * n
)
LEAVES = st.one_of(st.none(), st.booleans(), INTS, st.floats(), TEXT)
JSON = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)


def _nested(depth: int) -> Any:
    """`depth` levels of objects and lists: orjson decodes 1024 but encodes only 254."""
    value: Any = "bottom"
    for level in range(depth):
        value = {"k": value} if level % 2 else [value]
    return value


DEEP = st.integers(250, 700).map(_nested)  # the standard library encodes up to ~990 levels
JUNK = st.one_of(JSON, DEEP, HUGE)


def _field(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A field's value: a valid one, or junk of any JSON type, nesting or size."""
    return st.one_of(valid, JUNK)


# Valid values: no NUL (PostgreSQL cannot store it), no NaN, offsets in whole minutes.
SAFE_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
VALID_JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        SAFE_TEXT,
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(SAFE_TEXT, inner, max_size=3),
    max_leaves=8,
)
PORTS = st.sampled_from([9222, 9601, 1, 65535])
OFFSETS = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
TIMESTAMPS = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=OFFSETS
).map(lambda d: d.isoformat())
ITEM_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "content": SAFE_TEXT.filter(str.strip) | HUGE,
    "id": SAFE_TEXT.filter(bool),
    "role": st.sampled_from(sorted(ROLES)),
    "content_type": st.sampled_from(sorted(CONTENT_TYPES)),
    "source": st.sampled_from(sorted(SOURCES)),
    "timestamp": TIMESTAMPS,
    "metadata": st.dictionaries(SAFE_TEXT, VALID_JSON, max_size=3),
}
ITEM = st.fixed_dictionaries(
    {}, optional={name: _field(valid) for name, valid in ITEM_FIELDS.items()}
)
# Every frame type of the contract with its fields: each field absent, valid or junk.
FRAME_FIELDS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "message": {"port": PORTS, **ITEM_FIELDS, "durable": st.booleans()},
    "extracted": {
        "port": PORTS,
        "ide_type": st.sampled_from(["cursor", "vscode", "x.y-z_1"]),
        "messages": st.lists(ITEM | JSON, min_size=1, max_size=4),
        "durable": st.booleans(),
    },
    "session.new": {"port": PORTS, "title": SAFE_TEXT},
    "hello": {
        "client": TEXT | st.dictionaries(TEXT, JSON, max_size=3),
        "kind": st.sampled_from(sorted(CLIENT_KINDS)),
        "ports": st.lists(PORTS, max_size=4),
    },
    "ping": {},
    "subscribe": {
        "session_id": st.uuids().map(str),
        "port": PORTS,
        "sessions": st.just(True),
        "since_seq": st.integers(0, 5) | st.just(2**63 - 1),
        "since_session_id": st.uuids().map(str),
    },
    "unsubscribe": {
        "session_id": st.uuids().map(str),
        "port": PORTS,
        "sessions": st.just(True),
    },
}
REF = st.text(max_size=64) | JUNK
KNOWN_FIELDS = {name for fields in FRAME_FIELDS.values() for name in fields}


def _frame(kind: str, fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    optional = {name: _field(valid) for name, valid in fields.items()}
    return st.fixed_dictionaries(
        {"type": st.just(kind)}, optional={**optional, "ref": REF, "extra": JSON}
    )


FRAMES = st.one_of(
    *(_frame(kind, fields) for kind, fields in FRAME_FIELDS.items()),
    # A junk or unknown type, with any of the known fields.
    st.fixed_dictionaries(
        {}, optional={"type": JUNK, **{name: JUNK for name in sorted(KNOWN_FIELDS)}}
    ),
)

# The fields a frame needs to be valid; a subscription names exactly one target.
REQUIRED = {"message": ["port", "content"], "extracted": ["port", "messages"],
            "session.new": ["port"]}  # fmt: skip
TARGETS = {"session_id": [], "port": ["since_seq", "since_session_id"], "sessions": []}


@st.composite
def _valid_item(draw: st.DrawFn) -> dict[str, Any]:
    item = {"content": draw(ITEM_FIELDS["content"])}
    for name in draw(st.sets(st.sampled_from(sorted(ITEM_FIELDS)))):
        item[name] = draw(ITEM_FIELDS[name])
    return item


@st.composite
def _near_valid(draw: st.DrawFn) -> dict[str, Any]:
    """A valid frame of any type, then up to two fields (of the frame, or of one of its
    items) dropped or replaced by junk: about a third stay valid and get stored."""
    kind = draw(st.sampled_from(sorted(FRAME_FIELDS)))
    fields = FRAME_FIELDS[kind]
    frame: dict[str, Any] = {"type": kind}
    if kind in ("subscribe", "unsubscribe"):
        target = draw(st.sampled_from(sorted(TARGETS)))
        frame[target] = draw(fields[target])
        for extra in TARGETS[target]:
            if extra in fields and draw(st.booleans()):
                frame[extra] = draw(fields[extra])
    else:
        for name, valid in fields.items():
            if name in REQUIRED.get(kind, ()) or draw(st.booleans()):
                frame[name] = draw(valid)
    if kind == "extracted":
        frame["messages"] = draw(st.lists(_valid_item(), min_size=1, max_size=4))
    if draw(st.booleans()):
        frame["ref"] = draw(st.text(max_size=64))
    for _ in range(draw(st.integers(0, 2))):
        holder = frame
        messages = frame.get("messages") if kind == "extracted" else [frame]
        items = [i for i in messages if isinstance(i, dict)] if isinstance(messages, list) else []
        in_item = draw(st.booleans())
        if items and in_item:
            holder = draw(st.sampled_from(items))
            name = draw(st.sampled_from(sorted(ITEM_FIELDS)))
        else:
            name = draw(st.sampled_from(sorted({*fields, "type", "ref", "extra"})))
        if draw(st.booleans()):
            holder.pop(name, None)
        else:
            holder[name] = draw(JUNK)
    return frame


def _encode(frame: Any) -> str:
    """The frame as JSON text; escaped to ASCII when it holds lone surrogates (which cannot
    travel as UTF-8, but can as `\\ud800` escapes)."""
    text = json.dumps(frame, ensure_ascii=False)
    try:
        text.encode()
    except UnicodeEncodeError:
        text = json.dumps(frame)
    return text


RAW_TEXTS = st.one_of(
    st.text(max_size=40),  # mostly not JSON at all
    st.sampled_from(
        [
            "", " ", "{", "}", "{\"type\":", "[", "null", "true", "1", "1e400", "\"ping\"",
            "{\"type\": \"ping\"} trailing", "{\"type\": \"ping\", \"type\": 5}",
            "[" * 1100 + "]" * 1100, "{\"a\":" * 1100 + "1" + "}" * 1100,
            "{\"type\": \"message\", \"port\": 9222, \"content\": \"\\ud800\"}",
            "{\"type\": \"message\", \"port\": 9222, \"content\": \"hi\", \"n\": NaN}",
        ]
    ),
    JSON.map(_encode),  # valid JSON, mostly not an object
)
# Half near-valid frames (so that some are stored), half junk; all below the frame limit
# (a frame over it is closed with 1009 by contract: test_errors.py checks that).
FRAME_LIMIT = Settings().max_frame_bytes
JUNK_TEXTS = st.one_of(FRAMES.map(_encode), RAW_TEXTS)
TEXTS = (
    st.booleans()  # not one_of: it flattens nested one_of, and would pick near-valid 1 in 12
    .flatmap(lambda near: _near_valid().map(_encode) if near else JUNK_TEXTS)
    .filter(lambda text: len(text.encode()) < FRAME_LIMIT)
)


# ---- WebSocket ---------------------------------------------------------------------------

REPLY_FOR: dict[type, set[str]] = {
    Ingest: {"ack"},
    Hello: {"welcome"},
    Ping: {"pong"},
    SessionNew: {"session"},
    Subscribe: {"subscribed"},
}
EVENTS = {"message", "session", "presence", "resync"}  # frames without a `ref` key


@dataclass
class FuzzClient:
    """One WebSocket connection kept across examples, and what it was told was stored."""

    gateway: RunningGateway
    ws: ClientConnection
    acked: set[str] = field(default_factory=set)  # message ids from `ack` results
    pings: int = 0

    async def reopen_if_closed(self) -> None:
        """A new connection if an earlier, failed example got this one closed: hypothesis
        replays the failing example at the end, and it must fail for its own frames."""
        if self.ws.state is State.CLOSED:
            self.ws = await self.gateway.connect(max_size=None)

    async def exchange(self, text: str) -> list[dict[str, Any]]:
        """Send one frame, then a ping; every frame received up to its pong, which proves the
        connection still works. Fails the test if the connection closes."""
        self.pings += 1
        ping_ref = f"fuzz-ping-{self.pings}"
        try:
            await self.ws.send(text)
            await self.ws.send(json.dumps({"type": "ping", "ref": ping_ref}))
            frames: list[dict[str, Any]] = []
            for _ in range(10_000):  # bounded: a catch-up holds at most what this test sent
                frame = await receive(self.ws)
                if frame == {"type": "pong", "ref": ping_ref}:
                    return frames
                frames.append(frame)
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
            pytest.fail(f"the gateway closed the connection ({code}) after {text[:300]!r}")
        pytest.fail("no pong after 10,000 frames")


@pytest.fixture
async def fuzz_client(gateway: RunningGateway) -> AsyncIterator[FuzzClient]:
    client = FuzzClient(gateway, await gateway.connect(max_size=None))
    yield client
    await client.ws.close()


def _expect_reply(text: str, replies: list[dict[str, Any]], client: FuzzClient) -> None:
    """The one reply (a frame with a `ref` key) is what the contract says for this frame."""
    assert len(replies) == 1, (text[:300], replies)
    [reply] = replies
    limits = client.gateway.gateway.limits
    try:
        command = parse_frame(text, limits)
    except FrameError as exc:
        # Invalid: an error with the code the parser gives and the frame's ref if it had one.
        assert reply["type"] == "error", (text[:300], reply)
        assert reply["code"] == exc.code and reply["ref"] == exc.ref, (text[:300], reply)
        assert reply["code"] in {ErrorCode.BAD_REQUEST, ErrorCode.TOO_LARGE}, reply
        return
    if isinstance(command, Subscribe) and isinstance(command.target, BySession):
        # A random uuid names no session of this user: not_found, like another user's.
        assert reply["type"] == "subscribed" or reply.get("code") == "not_found", reply
    elif type(command) in REPLY_FOR:
        assert reply["type"] in REPLY_FOR[type(command)], (text[:300], reply)
    else:
        assert reply["type"] == "unsubscribed", (text[:300], reply)
    if reply["type"] == "ack":
        client.acked.update(result["id"] for result in reply["results"])


async def _stored_ids(db: asyncpg.Pool, client: FuzzClient) -> set[str]:
    """Ids of this test user's rows in PostgreSQL, once the buffer is written out."""
    await drained(client.gateway)  # the writer emptied the buffer: every row is in PostgreSQL
    rows = await db.fetch(
        "SELECT id::text FROM messages WHERE user_id = $1", client.gateway.settings.local_user
    )
    return {row["id"] for row in rows}


@settings(FUZZ, max_examples=120)
@given(texts=st.lists(TEXTS, min_size=1, max_size=4))
@example(texts=['{"type":"message","port":9222,"content":"hi","role":[]}'])
@example(texts=['{"type":"message","port":9222,"content":"hi","content_type":{"a":1}}'])
@example(texts=['{"type":"extracted","port":9222,"messages":[{"content":"a","source":[]}]}'])
@example(texts=['{"type":"hello","kind":["ide"]}', '{"type":"ping"}'])
@example(texts=[_encode({"type": "message", "port": 1, "content": "x", "metadata": _nested(300)})])
@example(texts=['{"type":"message","port":1,"content":"x","timestamp":"0001-01-01T00:00:00+01:00"}'])
@example(texts=['{"type":"subscribe","port":1,"since_seq":9223372036854775808}'])
async def test_hostile_frames_never_close_the_connection_nor_store_anything(
    fuzz_client: FuzzClient, db: asyncpg.Pool, texts: list[str]
) -> None:
    """Hostile frames each get an error (or their valid reply) on one connection, which
    keeps answering pings; rows are stored exactly for the messages an ack confirmed."""
    await fuzz_client.reopen_if_closed()
    for text in texts:
        frames = await fuzz_client.exchange(text)
        events = [frame for frame in frames if "ref" not in frame]
        assert {frame["type"] for frame in events} <= EVENTS, events
        _expect_reply(text, [frame for frame in frames if "ref" in frame], fuzz_client)
    assert await _stored_ids(db, fuzz_client) == fuzz_client.acked


# ---- HTTP --------------------------------------------------------------------------------


def _percent(text: str) -> str:
    """Percent-encoded UTF-8; a lone surrogate becomes its three bytes (not valid UTF-8)."""
    return quote(text, safe="", errors="surrogatepass")


# Values that are not what a parameter wants, given raw: percent-encoding is applied, or not.
NUMBERS = st.one_of(
    INTS.map(str),
    st.sampled_from(
        ["0" * 5000 + "1", "9" * 5000, "-0", "+1", " 1", "1_0", "1e3", "1.5", "١٢", "0x10", "",
         "NaN", "Infinity"]
    ),
)
PERCENT_JUNK = st.sampled_from(
    ["%ff", "%fe%ff", "%c3", "%00", "%", "%zz", "%25", "%ed%a0%80", "a%2fb", "%e2%82", "%0a"]
)
# Long, not huge: URLs stay below httpx's 64 KiB limit.
LONG = st.sampled_from([65, 201, 1001, 5000]).map(lambda n: "x" * n)
QUERY_VALUES = st.one_of(NUMBERS, TEXT.map(_percent), PERCENT_JUNK, LONG)
PARAMS = ["port", "status", "limit", "cursor", "pinned", "q", "after_seq", "before_seq",
          "token", "x"]  # fmt: skip
QUERIES = st.lists(st.tuples(st.sampled_from(PARAMS), QUERY_VALUES), max_size=5).map(
    lambda pairs: "&".join(f"{name}={value}" for name, value in pairs)
)
SESSION_IDS = st.one_of(
    st.just("{real}"),  # the test's own session, filled in when the request is made
    st.uuids().map(str),
    NUMBERS.map(_percent),
    TEXT.filter(bool).map(_percent),
    PERCENT_JUNK,
    st.sampled_from(["{00000000000000000000000000000000}", "urn:uuid:" + "0" * 32, "x" * 5000]),
)
PORT_SEGMENTS = st.one_of(NUMBERS.filter(bool).map(_percent), PERCENT_JUNK, st.just("9222"))
BODY_FIELDS = {
    "port": PORTS,
    "title": st.text(max_size=20),
    "pinned": st.booleans(),
    "status": st.sampled_from(["active", "archived"]),
}
BODIES = st.one_of(
    st.fixed_dictionaries(
        {}, optional={**{k: _field(v) for k, v in BODY_FIELDS.items()}, "extra": JSON}
    ).map(lambda b: _encode(b).encode()),
    JSON.map(lambda b: _encode(b).encode()),  # valid JSON, mostly not an object
    DEEP.map(lambda b: _encode(b).encode()),
    st.binary(max_size=40),  # mostly not UTF-8
    st.sampled_from(
        [b"", b"{", b"\xff\xfe", b'{"title": "\\ud800"}', b'{"port": 1e400}',
         b"[" * 1100 + b"]" * 1100]
    ),
)
REQUESTS = st.one_of(
    st.tuples(st.just("GET"), st.just("/api/sessions"), QUERIES, st.none()),
    st.tuples(st.just("POST"), st.just("/api/sessions"), QUERIES, BODIES),
    st.tuples(st.just("GET"), SESSION_IDS.map("/api/sessions/{}".format), QUERIES, st.none()),
    st.tuples(st.just("PATCH"), SESSION_IDS.map("/api/sessions/{}".format), QUERIES, BODIES),
    st.tuples(st.just("DELETE"), SESSION_IDS.map("/api/sessions/{}".format), QUERIES, st.none()),
    st.tuples(
        st.just("GET"), SESSION_IDS.map("/api/sessions/{}/messages".format), QUERIES, st.none()
    ),
    st.tuples(
        st.just("GET"), PORT_SEGMENTS.map("/api/ports/{}/messages".format), QUERIES, st.none()
    ),
    st.tuples(st.just("GET"), st.just("/api/search"), QUERIES, st.none()),
    st.tuples(st.just("GET"), st.sampled_from(["/api/stats", "/api/ports"]), QUERIES, st.none()),
)
Request = tuple[str, str, str, bytes | None]


@dataclass
class FuzzHttp:
    http: httpx.AsyncClient
    session_id: str  # a real session of the test's user

    async def check(self, request: Request) -> None:
        """Make the request; fail on a 5xx or an error without the contract's body."""
        method, path, query, body = request
        path = path.replace("{real}", self.session_id)
        url = f"{path}?{query}" if query else path
        response = await self.http.request(method, url, content=body)
        where = f"{method} {url[:300]} {body[:300] if body else b''!r}"
        assert response.status_code < 500, (where, response.status_code, response.text[:300])
        if response.status_code >= 400:
            error = response.json()["error"]
            # `details` for some codes: the field at fault, or when to retry.
            assert {"code", "message"} <= set(error) <= {"code", "message", "details"}, (
                where,
                error,
            )
            assert isinstance(error.get("details", {}), dict), (where, error)
            assert error["code"] in set(ErrorCode) and isinstance(error["message"], str), error


async def _fuzz_http(running: RunningGateway) -> AsyncIterator[FuzzHttp]:
    token = None
    if running.settings.auth_secret:
        token = issue_token(running.settings.auth_secret, "fuzzer", 3600)
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(
        base_url=running.http_url, timeout=RECV_TIMEOUT, headers=headers
    ) as http:
        created = await http.post("/api/sessions", json={"port": 9222, "title": "fuzz"})
        assert created.status_code == 201, created.text
        yield FuzzHttp(http, created.json()["id"])


@pytest.fixture
async def fuzz_http(gateway: RunningGateway) -> AsyncIterator[FuzzHttp]:
    async for client in _fuzz_http(gateway):
        yield client


@pytest.fixture
async def fuzz_http_with_tokens(settings: Settings) -> AsyncIterator[FuzzHttp]:
    """The same, on a gateway that requires tokens (so `?token=` junk is checked)."""
    async with run_gateway(replace(settings, auth_secret="s" * 32)) as running:
        async for client in _fuzz_http(running):
            yield client


@settings(FUZZ, max_examples=300)
@given(request=REQUESTS)
@example(request=("GET", "/api/ports/" + "0" * 5000 + "1/messages", "", None))
@example(request=("GET", "/api/sessions", "limit=" + "9" * 5000, None))
@example(request=("PATCH", "/api/sessions/{real}", "", b'{"status": ["active"]}'))
async def test_hostile_http_inputs_never_get_a_server_error(
    fuzz_http: FuzzHttp, request: Request
) -> None:
    """Junk ids, numbers, repeated and non-UTF-8 parameters and wrongly typed bodies on every
    API route get a 2xx or a 4xx with the contract's error body, never a 5xx."""
    await fuzz_http.check(request)


TOKENS = st.one_of(
    TEXT.map(_percent),
    PERCENT_JUNK,
    st.tuples(TEXT, TEXT).map(lambda p: _percent(f"{p[0]}.{p[1]}")),
    st.sampled_from(["a.%C3%A9", "%C3%A9.%C3%A9", "e30.x", "." * 100, "x" * 5000]),
)


@settings(FUZZ, max_examples=60)
@given(token=TOKENS, path=st.sampled_from(["/api/stats", "/api/sessions", "/api/search?q=a"]))
@example(token="a.%C3%A9", path="/api/stats")
async def test_junk_tokens_get_401_not_a_server_error(
    fuzz_http_with_tokens: FuzzHttp, token: str, path: str
) -> None:
    """On a gateway that requires tokens, a junk `?token=` (non-ASCII, malformed, huge) is a
    401 with the contract's error body, never a 5xx."""
    separator = "&" if "?" in path else "?"
    response = await fuzz_http_with_tokens.http.get(
        f"{path}{separator}token={token}", headers={"authorization": ""}
    )
    assert response.status_code == 401, (token, response.status_code, response.text[:300])
    assert response.json()["error"]["code"] == "unauthorized"

