"""Bad input: a clear error frame with the frame's ref, nothing stored, the connection open."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from websockets.exceptions import ConnectionClosed

from gateway.settings import Settings
from tests.conftest import RunningGateway, receive, request, run_gateway, send

PORT = 9601
GOOD = {"type": "message", "port": PORT, "content": "fine"}

BAD_FRAMES: list[tuple[str, Any, str, str]] = [
    # (case, frame (dict, or raw text), expected code, a word the message must contain)
    ("invalid json", "{not json", "bad_request", "JSON"),
    ("not an object", "[1, 2]", "bad_request", "object"),
    ("no type", {"port": PORT, "content": "x"}, "bad_request", "type"),
    ("unknown type", {"type": "explode", "port": PORT}, "bad_request", "explode"),
    ("missing port", {"type": "message", "content": "x"}, "bad_request", "port"),
    ("port as string", {**GOOD, "port": "9222"}, "bad_request", "port"),
    ("port as bool", {**GOOD, "port": True}, "bad_request", "port"),
    ("port zero", {**GOOD, "port": 0}, "bad_request", "outside"),
    ("port too high", {**GOOD, "port": 65536}, "bad_request", "outside"),
    ("missing content", {"type": "message", "port": PORT}, "bad_request", "content"),
    ("content not a string", {**GOOD, "content": 5}, "bad_request", "content"),
    ("empty content", {**GOOD, "content": ""}, "bad_request", "empty"),
    ("blank content", {**GOOD, "content": "  \n "}, "bad_request", "empty"),
    ("oversized content", {**GOOD, "content": "x" * (256 * 1024 + 1)}, "too_large", "limit"),
    ("bad role", {**GOOD, "role": "robot"}, "bad_request", "role"),
    ("bad content_type", {**GOOD, "content_type": "html"}, "bad_request", "content_type"),
    ("bad source", {**GOOD, "source": "magic"}, "bad_request", "source"),
    ("client id too long", {**GOOD, "id": "x" * 129}, "bad_request", "id"),
    ("client id not a string", {**GOOD, "id": 7}, "bad_request", "id"),
    ("timestamp not rfc3339", {**GOOD, "timestamp": "yesterday"}, "bad_request", "RFC 3339"),
    ("timestamp without offset", {**GOOD, "timestamp": "2026-01-01T00:00:00"}, "bad_request",
     "RFC 3339"),
    ("impossible date", {**GOOD, "timestamp": "2026-02-30T00:00:00Z"}, "bad_request",
     "timestamp"),
    ("metadata not an object", {**GOOD, "metadata": [1]}, "bad_request", "metadata"),
    ("NUL in content", {**GOOD, "content": "a\u0000b"}, "bad_request", "NUL"),
    ("NUL in client id", {**GOOD, "id": "a\u0000"}, "bad_request", "NUL"),
    ("NUL deep in metadata", {**GOOD, "metadata": {"k": [{"x": "\u0000"}]}}, "bad_request",
     "NUL"),
    ("lone surrogate", '{"type": "message", "port": 9601, "content": "\\ud800"}',
     "bad_request", "JSON"),
    ("durable not a bool", {**GOOD, "durable": "yes"}, "bad_request", "durable"),
    ("messages not a list", {"type": "extracted", "port": PORT, "messages": {}},
     "bad_request", "messages"),
    ("empty batch", {"type": "extracted", "port": PORT, "messages": []}, "bad_request",
     "empty"),
    ("batch over 500", {"type": "extracted", "port": PORT,
                        "messages": [{"content": f"m{i}"} for i in range(501)]},
     "too_large", "500"),
    ("bad item in batch", {"type": "extracted", "port": PORT,
                           "messages": [{"content": "ok"}, {"content": ""}]},
     "bad_request", "messages[1].content"),
    ("item not an object", {"type": "extracted", "port": PORT, "messages": ["hi"]},
     "bad_request", "messages[0]"),
    ("bad ide_type", {"type": "extracted", "port": PORT, "ide_type": "Not An IDE!",
                      "messages": [{"content": "x"}]}, "bad_request", "ide_type"),
    ("session.new bad port", {"type": "session.new", "port": -1}, "bad_request", "port"),
    ("hello bad kind", {"type": "hello", "kind": "robot"}, "bad_request", "kind"),
    ("hello bad ports", {"type": "hello", "kind": "ide", "ports": [70000]}, "bad_request",
     "ports"),
    # Each of these once raised past the parser and closed the connection with 1011 (issue 12).
    ("role as a list", {**GOOD, "role": []}, "bad_request", "role"),
    ("content_type as an object", {**GOOD, "content_type": {"a": 1}}, "bad_request",
     "content_type"),
    ("source as a list", {**GOOD, "source": ["user_input"]}, "bad_request", "source"),
    ("item role as an object", {"type": "extracted", "port": PORT,
                                "messages": [{"content": "x", "role": {}}]},
     "bad_request", "messages[0].role"),
    ("hello kind as a list", {"type": "hello", "kind": ["ide"]}, "bad_request", "kind"),
    ("metadata nested 300 deep", {**GOOD, "metadata": "DEEP"}, "bad_request", "nested"),
    ("hello client nested 300 deep", {"type": "hello", "client": "DEEP"}, "bad_request",
     "nested"),
    ("timestamp whose UTC instant is before year 1",
     {**GOOD, "timestamp": "0001-01-01T00:00:00+01:00"}, "bad_request", "timestamp"),
    ("since_seq past the bigint range", {"type": "subscribe", "port": PORT, "since_seq": 2**63},
     "bad_request", "since_seq"),
]
# Nesting orjson decodes but cannot encode again (it stops at 254 levels).
_DEEP = '{"k":' * 300 + "1" + "}" * 300


@pytest.mark.parametrize(
    ("frame", "code", "word"),
    [case[1:] for case in BAD_FRAMES],
    ids=[case[0] for case in BAD_FRAMES],
)
async def test_bad_frame_gets_error_and_stores_nothing(
    gateway: RunningGateway, db: asyncpg.Pool, frame: Any, code: str, word: str
) -> None:
    """Each bad frame gets an error with its code and ref; nothing is stored; the socket lives."""
    async with gateway.connect() as ws:
        if isinstance(frame, dict):
            text = orjson.dumps({**frame, "ref": "bad-1"}).decode()
            await ws.send(text.replace('"DEEP"', _DEEP))
        else:
            await ws.send(frame)
        error = await receive(ws)
        assert error["type"] == "error"
        assert error["code"] == code
        assert word in error["message"]
        assert error["ref"] == ("bad-1" if isinstance(frame, dict) else None)
        # Still open, and nothing was stored or allocated: the next message gets seq 1.
        ack = await request(ws, {**GOOD, "ref": "good"})
    assert ack["type"] == "ack" and ack["results"][0]["seq"] == 1
    sessions = await db.fetchval(
        "SELECT count(*) FROM sessions WHERE user_id = $1", gateway.settings.local_user
    )
    assert sessions == 1


async def test_ref_over_64_chars_is_an_error_without_ref(gateway: RunningGateway) -> None:
    """A ref longer than 64 characters is refused and not echoed."""
    async with gateway.connect() as ws:
        error = await request(ws, {"type": "ping", "ref": "r" * 65})
        assert error["type"] == "error" and error["code"] == "bad_request"
        assert error["ref"] is None
        assert (await request(ws, {"type": "ping", "ref": "r" * 64}))["type"] == "pong"


async def test_binary_frame_closes_with_1003(gateway: RunningGateway) -> None:
    """A binary frame gets an error frame, then the connection closes with 1003."""
    async with gateway.connect() as ws:
        await ws.send(b'{"type": "ping"}')
        error = await receive(ws)
        assert error["code"] == "bad_request" and "binary" in error["message"]
        with pytest.raises(ConnectionClosed) as closed:
            await receive(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003


async def test_frame_over_the_limit_closes_with_1009(gateway: RunningGateway) -> None:
    """A frame over the 1 MiB limit closes the connection with 1009."""
    async with gateway.connect(max_size=None) as ws:
        await send(ws, {**GOOD, "content": "x" * (1 << 20)})
        with pytest.raises(ConnectionClosed) as closed:
            await receive(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


@pytest.mark.parametrize(
    "url",
    [
        "/api/ports/" + "9" * 5000 + "/messages",  # int() refuses over 4300 digits
        "/api/ports/9222/messages?limit=" + "9" * 5000,
        "/api/sessions?limit=" + "9" * 5000,
        "/api/sessions?port=%EF%BC%91",  # a full-width digit: int() takes it, the API must not
        "/api/search?q=a&limit=1_0",
    ],
)
async def test_huge_or_odd_numbers_in_urls_are_400_not_500(
    http: httpx.AsyncClient, url: str
) -> None:
    """A number of thousands of digits, or one int() accepts but a URL should not, is a 400
    with the contract's error body."""
    response = await http.get(url)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "bad_request"


async def test_leading_zeros_still_name_a_number(http: httpx.AsyncClient) -> None:
    """Leading zeros, even thousands of them, do not change a number: the port is 9222 and
    the limit is accepted."""
    zeros = "0" * 5000
    response = await http.get(f"/api/ports/{zeros}9222/messages?limit={zeros}5")
    assert response.status_code == 200, response.text
    assert response.json()["port"] == 9222


async def test_a_non_ascii_token_is_401_not_500(
    settings: Settings
) -> None:
    """On a gateway that requires tokens, a token with non-ASCII characters is refused with
    401 (hmac.compare_digest raises on non-ASCII str)."""
    async with (
        run_gateway(replace(settings, auth_secret="s" * 32)) as running,
        httpx.AsyncClient(base_url=running.http_url) as http,
    ):
        response = await http.get("/api/stats?token=a.%C3%A9")
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "unauthorized"
