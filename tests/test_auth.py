"""Tokens: signed, expiring, checked at the WebSocket handshake and on every HTTP call."""

from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from gateway.auth import issue_token, parse_duration, verify_token
from gateway.errors import Unauthorized
from gateway.settings import Settings
from tests.conftest import request, run_gateway

SECRET = "test-secret-please-change-0123456789"


def test_token_round_trip_and_expiry() -> None:
    """A token names its user until it expires; tampering or another secret is refused."""
    token = issue_token(SECRET, "alice", 60, now=1000)
    assert verify_token(SECRET, token, now=1059) == "alice"
    with pytest.raises(Unauthorized, match="expired"):
        verify_token(SECRET, token, now=1060)
    with pytest.raises(Unauthorized, match="signature"):
        verify_token("another-secret-of-thirty-two-bytes!", token, now=1000)
    header, _, signature = token.split(".")
    forged_claims = issue_token(SECRET, "mallory", 60, now=1000).split(".")[1]
    with pytest.raises(Unauthorized, match="signature"):
        verify_token(SECRET, f"{header}.{forged_claims}.{signature}", now=1000)
    with pytest.raises(Unauthorized, match="malformed"):
        verify_token(SECRET, "nonsense", now=1000)


def test_durations() -> None:
    """Durations read like 30s, 15m, 12h, 7d."""
    assert [parse_duration(d) for d in ("30s", "15m", "12h", "7d")] == [30, 900, 43200, 604800]
    with pytest.raises(ValueError, match="duration"):
        parse_duration("1 week")


async def test_websocket_needs_a_valid_token(settings: Settings) -> None:
    """With a secret, no token or a bad one is refused at the handshake with HTTP 401 (and no
    error is logged for it); a good one (header or query) makes the connection that user's."""
    async with run_gateway(replace(settings, auth_secret=SECRET)) as running:
        # Attached once uvicorn configured its loggers (that replaces their handlers).
        errors = _Collect()
        logging.getLogger("uvicorn.error").addHandler(errors)
        try:
            for url in (running.ws_url, running.ws_url + "?token=bad.token"):
                with pytest.raises(InvalidStatus) as refused:
                    async with connect(url, open_timeout=10):
                        pass
                assert refused.value.response.status_code == 401
        finally:
            logging.getLogger("uvicorn.error").removeHandler(errors)
        assert not [r.getMessage() for r in errors.records if r.levelno >= logging.ERROR]
        token = issue_token(SECRET, "alice", 60)
        async with running.connect(additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            welcome = await request(ws, {"type": "hello", "kind": "ui"})
        assert welcome["user_id"] == "alice"
        async with connect(f"{running.ws_url}?token={token}", open_timeout=10) as ws:
            assert (await request(ws, {"type": "hello"}))["user_id"] == "alice"


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_users_never_see_each_others_sessions(settings: Settings) -> None:
    """Another user's session answers 404, exactly like a missing one; no token is 401."""
    async with run_gateway(replace(settings, auth_secret=SECRET)) as running:
        alice, bob = issue_token(SECRET, "alice", 60), issue_token(SECRET, "bob", 60)
        headers = {"Authorization": f"Bearer {alice}"}
        async with running.connect(additional_headers=headers) as ws:
            ack = await request(ws, {"type": "message", "port": 9222, "content": "secret"})
        path = f"/api/sessions/{ack['session_id']}/messages"
        async with httpx.AsyncClient(base_url=running.http_url) as http:
            mine = await http.get(path, headers=headers)
            theirs = await http.get(path, headers={"Authorization": f"Bearer {bob}"})
            missing = await http.get(
                "/api/sessions/00000000-0000-7000-8000-000000000000/messages",
                headers={"Authorization": f"Bearer {bob}"},
            )
            anonymous = await http.get(path)
        assert mine.status_code == 200 and mine.json()["messages"][0]["content"] == "secret"
        assert theirs.status_code == missing.status_code == 404
        assert theirs.json() == missing.json() == {
            "error": {"code": "not_found", "message": "no such session"}
        }
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["code"] == "unauthorized"


async def test_other_users_sessions_cannot_be_changed_or_listed(settings: Settings) -> None:
    """Bob's GET, PATCH and DELETE of Alice's session are 404 and change nothing; his lists,
    ports and stats show none of her data."""
    async with run_gateway(replace(settings, auth_secret=SECRET)) as running:
        alice = {"Authorization": f"Bearer {issue_token(SECRET, 'alice2', 60)}"}
        bob = {"Authorization": f"Bearer {issue_token(SECRET, 'bob2', 60)}"}
        async with running.connect(additional_headers=alice) as ws:
            ack = await request(ws, {"type": "message", "port": 9224, "content": "hers"})
        path = f"/api/sessions/{ack['session_id']}"
        async with httpx.AsyncClient(base_url=running.http_url) as http:
            answers = [
                await http.get(path, headers=bob),
                await http.patch(path, json={"title": "mine now"}, headers=bob),
                await http.delete(path, headers=bob),
            ]
            lists = [
                (await http.get(url, headers=bob)).json()
                for url in ("/api/sessions", "/api/ports", "/api/ports/9224/messages")
            ]
            stats_body = (await http.get("/api/stats", headers=bob)).json()
            still = (await http.get(path, headers=alice)).json()
    assert [a.status_code for a in answers] == [404, 404, 404]
    assert lists == [
        {"sessions": [], "next_cursor": None},
        {"ports": []},
        {"port": 9224, "messages": []},
    ]
    assert stats_body == {"sessions": {"active": 0, "archived": 0, "total": 0}, "messages": 0}
    assert still["title"] is None and still["status"] == "active"


async def test_token_command_prints_a_verifiable_token() -> None:
    """`chat-gateway token --user U --ttl 1h` prints a token the gateway accepts for U."""
    script = Path(sys.executable).parent / "chat-gateway"
    proc = await asyncio.create_subprocess_exec(
        script, "token", "--user", "carol", "--ttl", "1h",
        env={"GATEWAY_AUTH_SECRET": SECRET, "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err
    assert verify_token(SECRET, out.decode().strip()) == "carol"
