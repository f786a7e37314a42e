"""Bad input: a clear error frame with the frame's ref, nothing stored, the connection open."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

import asyncpg
import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from gateway.settings import Settings
from tests.conftest import RunningGateway, receive, request, run_gateway, send
from tests.test_protocol import BAD_FRAMES, frame_text

PORT = 9601
GOOD = {"type": "message", "port": PORT, "content": "fine"}

# One bad frame per kind of error reply (tests/test_protocol.py checks every bad frame against
# the parser): bad JSON (no ref to echo), a bad field (ref echoed), a frame over a limit.
_KINDS = ("invalid json", "port as string", "oversized content")
SOCKET_CASES = [case for case in BAD_FRAMES if case[0] in _KINDS]
assert len(SOCKET_CASES) == 3, "a case named above was renamed in tests/test_protocol.py"


@pytest.mark.parametrize(
    ("frame", "code", "word"), [c[1:] for c in SOCKET_CASES], ids=[c[0] for c in SOCKET_CASES]
)
async def test_bad_frame_gets_error_and_stores_nothing(
    gateway: RunningGateway, db: asyncpg.Pool, frame: Any, code: str, word: str
) -> None:
    """Each bad frame gets an error with its code and ref; nothing is stored; the socket lives."""
    async with gateway.connect() as ws:
        await ws.send(frame_text(frame))
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


async def test_a_client_leaving_after_a_binary_frame_is_no_warning(
    gateway: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that sends a binary frame and drops the connection before the error frame
    comes back (the gateway's send fails, then its close) leaves no warning or traceback in
    the log: it only left."""
    for _ in range(20):
        async with gateway.connect() as ws:
            await ws.send(b'{"type": "ping"}')
            ws.transport.abort()
    # Every teardown has run (and logged, if it would) once no connection is left.
    await asyncio.wait_for(gateway.gateway.connections.wait_for_count(0), 15)
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not noisy, [r.getMessage() for r in noisy]


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
