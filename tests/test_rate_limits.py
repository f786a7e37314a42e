"""Limits: messages per second per connection and per user, connections per user,
subscriptions per connection; and defaults that a flat-out local load test never meets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from gateway.auth import issue_token
from gateway.rate_limits import TokenBucket
from gateway.settings import Settings
from tests.conftest import RunningGateway, receive, request, run_gateway, send

SECRET = "rate-limit-tests-secret-0123456789abcdef"


class Clock:
    """A clock the bucket tests move by hand (the bucket takes any monotonic clock)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_refuses_past_its_capacity_and_says_when_to_retry() -> None:
    """4 a second holding 8: 8 go at once, the 9th waits 250 ms, refills at the rate."""
    clock = Clock()  # steps of 1/8 s: exact in binary, so the milliseconds are too
    bucket = TokenBucket(4, 8, clock)
    assert bucket.take(8) == 0
    assert bucket.take(1) == 250
    clock.now += 0.125
    assert bucket.take(1) == 125  # half a token there: 125 ms to the rest
    clock.now += 0.125
    assert bucket.take(1) == 0
    clock.now += 60
    assert bucket.take(25) == 0  # more than it holds: goes when full, emptying it
    assert bucket.take(1) == 250
    bucket.refund(2)
    assert bucket.take(2) == 0


def extracted(prefix: str, count: int, port: int = 9230) -> dict[str, Any]:
    messages = [{"role": "user", "content": f"{prefix} {i}", "client_id": f"{prefix}-{i}"}
                for i in range(count)]  # fmt: skip
    return {"type": "extracted", "port": port, "messages": messages}


def bearer(user: str) -> dict[str, Any]:
    return {"additional_headers": {"Authorization": f"Bearer {issue_token(SECRET, user, 600)}"}}


@pytest.fixture
async def token_mode(settings: Settings) -> AsyncIterator[RunningGateway]:
    limited = replace(
        settings,
        auth_secret=SECRET,
        rate_limit_connection_msgs_s=0,
        rate_limit_user_msgs_s=5,  # holds 10 (2 s)
        max_connections_per_user=2,
        max_subscriptions_per_connection=2,
    )
    async with run_gateway(limited) as running:
        yield running


async def stored_contents(running: RunningGateway, user: str, session_id: str) -> list[str]:
    headers = {"Authorization": f"Bearer {issue_token(SECRET, user, 600)}"}
    async with httpx.AsyncClient(base_url=running.http_url, headers=headers) as http:
        response = await http.get(f"/api/sessions/{session_id}/messages")
    assert response.status_code == 200, response.text
    return [m["content"] for m in response.json()["messages"]]


async def test_a_connection_past_its_rate_gets_rate_limited_and_nothing_is_stored(
    settings: Settings,
) -> None:
    """Past 5 messages/s (10 held), a frame gets `rate_limited` with `retry_after_ms`, its
    message is not stored, and after that wait the same frame is taken."""
    limited = replace(settings, rate_limit_connection_msgs_s=5, rate_limit_burst_s=2)
    async with run_gateway(limited) as running, running.connect() as ws:
        ack = await request(ws, extracted("burst", 10))
        assert ack["type"] == "ack" and len(ack["results"]) == 10
        refused = await request(ws, {**extracted("over", 1), "ref": "r1"})
        assert refused["type"] == "error" and refused["code"] == "rate_limited", refused
        assert refused["ref"] == "r1"
        assert "GATEWAY_RATE_LIMIT_CONNECTION_MSGS_S" in refused["message"]
        wait_ms = refused["details"]["retry_after_ms"]
        assert 0 < wait_ms <= 200
        # The wait is the limit's own promise: after it, the same frame goes through.
        await asyncio.sleep(wait_ms / 1000)
        taken = await request(ws, extracted("over", 1))
        assert taken["type"] == "ack", taken
        assert taken["results"][0]["duplicate"] is False  # the refused try left nothing
        assert await stored_contents_local(running, ack["session_id"]) == [
            *(f"burst {i}" for i in range(10)), "over 0",
        ]  # fmt: skip


async def stored_contents_local(running: RunningGateway, session_id: str) -> list[str]:
    async with httpx.AsyncClient(base_url=running.http_url) as http:
        response = await http.get(f"/api/sessions/{session_id}/messages")
    return [m["content"] for m in response.json()["messages"]]


async def test_a_user_past_their_rate_is_limited_across_connections(
    token_mode: RunningGateway,
) -> None:
    """The per-user bucket is shared by the user's connections; another user is untouched."""
    async with (
        token_mode.connect(**bearer("alice")) as first,
        token_mode.connect(**bearer("alice")) as second,
        token_mode.connect(**bearer("bob")) as other,
    ):
        assert (await request(first, extracted("a", 10)))["type"] == "ack"
        refused = await request(second, extracted("a2", 1))
        assert refused["code"] == "rate_limited", refused
        assert "for user alice" in refused["message"] and refused["details"]["retry_after_ms"] > 0
        assert (await request(other, extracted("b", 10)))["type"] == "ack"


async def test_local_mode_has_no_per_user_limits(settings: Settings) -> None:
    """Local mode has one user: a per-user rate and connection cap set low change nothing."""
    lax = replace(settings, rate_limit_user_msgs_s=1, max_connections_per_user=1)
    async with run_gateway(lax) as running, running.connect() as one, running.connect() as two:
        for ws in (one, two):
            assert (await request(ws, extracted(f"l{id(ws)}", 20)))["type"] == "ack"


async def test_connections_past_the_users_limit_are_refused_with_1008(
    token_mode: RunningGateway,
) -> None:
    """A third connection of a user limited to two gets `forbidden`, then close 1008; other
    users connect, and once one closes the user may connect again."""
    registry = token_mode.gateway.connections
    async with token_mode.connect(**bearer("alice")) as first:
        alice = bearer("alice")
        async with token_mode.connect(**alice), token_mode.connect(**alice) as third:
            refusal = await receive(third)
            assert refusal["type"] == "error" and refusal["code"] == "forbidden", refusal
            assert "GATEWAY_MAX_CONNECTIONS_PER_USER" in refusal["message"]
            with pytest.raises(ConnectionClosed) as closed:
                await receive(third)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
            async with token_mode.connect(**bearer("bob")) as bob:
                assert (await request(bob, {"type": "ping"}))["type"] == "pong"
        await asyncio.wait_for(registry.wait_for_count(1), 10)
        async with token_mode.connect(**bearer("alice")) as again:
            assert (await request(again, {"type": "ping"}))["type"] == "pong"
        assert (await request(first, {"type": "ping"}))["type"] == "pong"


async def test_subscriptions_past_the_limit_are_forbidden(token_mode: RunningGateway) -> None:
    """With two subscriptions held a third is `forbidden`; renewing a held one is not a new
    one, and after an unsubscribe there is room again."""
    async with token_mode.connect(**bearer("carol")) as ws:
        assert (await request(ws, {"type": "subscribe", "sessions": True}))["type"] == "subscribed"
        assert (await request(ws, {"type": "subscribe", "port": 9231}))["type"] == "subscribed"
        refused = await request(ws, {"type": "subscribe", "port": 9232, "ref": "s3"})
        assert refused["code"] == "forbidden" and refused["ref"] == "s3", refused
        assert "GATEWAY_MAX_SUBSCRIPTIONS_PER_CONNECTION" in refused["message"]
        renewed = await request(ws, {"type": "subscribe", "port": 9231, "since_seq": 0})
        assert renewed["type"] == "subscribed", renewed
        assert (await request(ws, {"type": "unsubscribe", "port": 9231}))["type"] == "unsubscribed"
        assert (await request(ws, {"type": "subscribe", "port": 9232}))["type"] == "subscribed"


async def test_the_defaults_do_not_throttle_a_flat_out_local_load(settings: Settings) -> None:
    """200 connections of the one local user, each with 25 messages in flight at once:
    every message is acked, none is `rate_limited`, with the default limits."""
    defaults = Settings()
    assert (settings.rate_limit_connection_msgs_s, settings.rate_limit_user_msgs_s) == (
        defaults.rate_limit_connection_msgs_s, defaults.rate_limit_user_msgs_s,
    )  # fmt: skip
    async with run_gateway(settings) as running:

        async def flat_out(n: int) -> list[str]:
            async with running.connect() as ws:
                for i in range(25):
                    content, client_id = f"load {n} {i}", f"load-{n}-{i}"
                    frame = {"type": "message", "port": 9240 + n % 10, "content": content}
                    await send(ws, {**frame, "client_id": client_id})
                return [(await receive(ws))["type"] for _ in range(25)]

        replies = await asyncio.gather(*(flat_out(n) for n in range(200)))
    kinds = [kind for connection in replies for kind in connection]
    assert kinds.count("ack") == 200 * 25, {kind: kinds.count(kind) for kind in set(kinds)}
