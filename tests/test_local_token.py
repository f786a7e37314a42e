"""Local mode with a token: only holders of the data folder's token get in, by header,
`?token=` or the UI's cookie; the printed link trades the token for that cookie."""

from __future__ import annotations

import json
import re
import stat
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from gateway.local_token import COOKIE_NAME, FILE_NAME, load_or_create_local_token
from gateway.settings import Settings
from tests.conftest import RECV_TIMEOUT, RunningGateway, request, run_gateway
from tests.test_cli import default_data, serving, workdir  # noqa: F401 - the fixture, shared

TOKEN = "local-token-for-the-tests-0123456789abcdef"


@pytest.fixture
async def guarded(settings: Settings) -> AsyncIterator[RunningGateway]:
    async with run_gateway(replace(settings, local_token=TOKEN)) as running:
        yield running


def test_the_token_file_is_created_once_for_its_owner_only(tmp_path: Path) -> None:
    """The first call makes a 0600 file with a long random token; later calls read the same
    one, and a file others could read is tightened to 0600."""
    path, token = load_or_create_local_token(tmp_path / "data")
    assert path == tmp_path / "data" / FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(token) >= 40
    assert load_or_create_local_token(tmp_path / "data") == (path, token)
    path.chmod(0o644)
    assert load_or_create_local_token(tmp_path / "data")[1] == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_local_token(tmp_path / "other")[1] != token


def test_workers_get_the_token_through_the_environment(settings: Settings) -> None:
    """The token the CLI resolved reaches worker processes through `to_env`."""
    rebuilt = Settings.from_env(replace(settings, local_token=TOKEN).to_env())
    assert rebuilt.local_token == TOKEN and rebuilt.local_mode


@pytest.mark.parametrize(
    ("headers", "params", "cookies", "status"),
    [
        ({}, {}, {}, 401),
        ({"Authorization": f"Bearer {TOKEN}"}, {}, {}, 200),
        ({}, {"token": TOKEN}, {}, 200),
        ({}, {}, {COOKIE_NAME: TOKEN}, 200),
        ({"Authorization": "Bearer wrong"}, {}, {}, 401),
        ({}, {"token": TOKEN[:-1]}, {}, 401),
        ({}, {}, {COOKIE_NAME: "wrong"}, 401),
    ],
    ids=["none", "bearer", "query", "cookie", "wrong-bearer", "wrong-query", "wrong-cookie"],
)
async def test_http_wants_the_token(
    guarded: RunningGateway,
    headers: dict[str, str],
    params: dict[str, str],
    cookies: dict[str, str],
    status: int,
) -> None:
    """Every API call without the local token is 401 saying what is wanted; with it, the
    local user's answer."""
    async with httpx.AsyncClient(base_url=guarded.http_url, cookies=cookies) as http:
        response = await http.get("/api/stats", headers=headers, params=params)
    assert response.status_code == status, response.text
    if status == 401:
        assert "local token" in response.json()["error"]["message"]


async def test_the_websocket_wants_the_token(guarded: RunningGateway) -> None:
    """The handshake without the token is refused with 401; with it, in a header, the
    query or the cookie, the connection is the local user's."""
    with pytest.raises(InvalidStatus) as refused:
        async with guarded.connect():
            pass
    assert refused.value.response.status_code == 401
    ways = [
        {"additional_headers": {"Authorization": f"Bearer {TOKEN}"}},
        {"additional_headers": {"Cookie": f"{COOKIE_NAME}={TOKEN}"}},
    ]
    for way in ways:
        async with guarded.connect(**way) as ws:
            welcome = await request(ws, {"type": "hello", "client": {"name": "t"}, "kind": "tool"})
            assert welcome["user_id"] == guarded.settings.local_user
    async with connect(f"{guarded.ws_url}?token={TOKEN}", open_timeout=RECV_TIMEOUT) as ws:
        welcome = await request(ws, {"type": "hello", "client": {"name": "t"}, "kind": "tool"})
        assert welcome["user_id"] == guarded.settings.local_user


async def test_the_printed_link_trades_the_token_for_a_cookie(guarded: RunningGateway) -> None:
    """`/?token=` redirects to the URL without it and sets an HttpOnly, SameSite=Strict
    cookie that the API then accepts; a wrong token is not traded."""
    async with httpx.AsyncClient(base_url=guarded.http_url) as http:
        wrong = await http.get("/", params={"token": "wrong", "port": "9222"})
        assert wrong.status_code == 200 and "set-cookie" not in wrong.headers
        traded = await http.get("/", params={"token": TOKEN, "port": "9222"})
        assert traded.status_code == 303
        assert traded.headers["location"] == "/?port=9222"
        cookie = traded.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE_NAME}={TOKEN};")
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
        assert traded.headers["cache-control"] == "no-store"
        assert (await http.get("/api/stats")).status_code == 200  # the cookie jar holds it
        page = await http.get("/")
        assert page.status_code == 200 and "<html" in page.text.lower()


async def test_plain_local_mode_wants_nothing(gateway: RunningGateway) -> None:
    """Without a local token (the default), local mode answers without any token."""
    async with httpx.AsyncClient(base_url=gateway.http_url) as http:
        assert (await http.get("/api/stats")).status_code == 200
        assert (await http.get("/", params={"token": TOKEN})).status_code == 200


async def test_serve_local_token_prints_the_link_and_guards_the_api(
    workdir: Path,  # noqa: F811 - the fixture imported above
) -> None:
    """`serve --local-token` creates the 0600 token file, logs the link holding it, and
    answers 401 without it and 200 with it."""
    async with serving(workdir, "--local-token") as serve:
        path = default_data(workdir) / FILE_NAME
        token = path.read_text().strip()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        link = re.search(r"open (http://\S+/\?token=(\S+))", serve.log)
        assert link and link.group(2) == token, serve.log
        assert "local mode with the data folder's token" in serve.log
        async with httpx.AsyncClient(base_url=serve.url) as http:
            assert (await http.get("/api/stats")).status_code == 401
            answered = await http.get("/api/stats", headers={"Authorization": f"Bearer {token}"})
            assert answered.status_code == 200, answered.text
            assert json.loads(answered.text)["messages"] == 0
