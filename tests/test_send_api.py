"""Sending over HTTP (issue 17, point 6): the same validation, dedup, edits, ack levels and
limits as the WebSocket; and the seed's REST aliases."""

from __future__ import annotations

from dataclasses import replace

import asyncpg
import httpx
import pytest

from gateway.settings import Settings
from tests.conftest import RunningGateway, count_messages, request, run_gateway, searchable
from tests.test_live import receive_until


async def test_a_message_is_acked_deduplicated_edited_and_seen_live(
    gateway: RunningGateway, http: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    """A message POSTed to a port is acked with its seq; the same client id again is a
    duplicate, with new content an edit; a batch takes the next seqs; `durable` answers once
    PostgreSQL has it; a tab subscribed to the port sees each live."""
    async with gateway.connect() as tab:
        await request(tab, {"type": "subscribe", "port": 9291})
        first = await http.post("/api/ports/9291/messages", json={"content": "hi", "id": "c1"})
        assert first.status_code == 200, first.text
        ack = first.json()
        assert set(ack) == {"session_id", "port", "durability", "results"}
        assert ack["port"] == 9291 and ack["durability"] == "buffered"
        [result] = ack["results"]
        assert (result["seq"], result["client_id"], result["duplicate"]) == (1, "c1", False)
        again = await http.post("/api/ports/9291/messages", json={"content": "hi", "id": "c1"})
        assert again.json()["results"][0] | {"id": None} == result | {
            "id": None, "duplicate": True,
        }  # fmt: skip
        edited = await http.post("/api/ports/9291/messages", json={"content": "hi!", "id": "c1"})
        assert edited.json()["results"][0]["updated"] is True
        batch = await http.post(
            "/api/ports/9291/messages",
            json={"messages": [{"content": "a", "role": "assistant"}, {"content": "b"}]},
        )
        assert [r["seq"] for r in batch.json()["results"]] == [2, 3]
        durable = await http.post(
            "/api/ports/9291/messages", json={"content": "kept", "durable": True}
        )
        assert durable.json()["durability"] == "persisted"
        frames = await receive_until(
            tab, lambda f: f["type"] == "message" and f["message"]["content"] == "kept"
        )
        seen = [f["message"]["content"] for f in frames if f["type"] == "message"]
        assert seen == ["hi", "hi!", "a", "b", "kept"]
    assert await count_messages(db, ack["session_id"]) >= 4  # "kept" and what came before it


@pytest.mark.parametrize(
    ("body", "status", "code", "words"),
    [
        ({"content": "x", "role": "robot"}, 400, "bad_request", "role"),
        ({"content": 5}, 400, "bad_request", "content"),
        ({"messages": []}, 400, "bad_request", "messages"),
        ({"type": "message", "content": "x"}, 400, "bad_request", "no type"),
        ({"port": 9222, "content": "x"}, 400, "bad_request", "no port"),
        ([1, 2], 400, "bad_request", "JSON object"),
        ({"content": "x" * (300 << 10)}, 413, "too_large", "content"),
        ({"content": "x" * (2 << 20)}, 413, "too_large", "GATEWAY_MAX_FRAME_BYTES"),
    ],
    ids=["role", "content-type", "empty-batch", "type", "port", "array", "content", "body"],
)
async def test_bad_input_is_the_frame_error_and_stores_nothing(
    gateway: RunningGateway,
    http: httpx.AsyncClient,
    body: object,
    status: int,
    code: str,
    words: str,
) -> None:
    """Bad input gets the error a frame would, as an HTTP status, and stores nothing."""
    response = await http.post("/api/ports/9292/messages", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and words in error["message"], error
    ports = (await http.get("/api/ports")).json()["ports"]
    assert 9292 not in [p["port"] for p in ports]


async def test_a_bad_port_in_the_path_is_a_400(http: httpx.AsyncClient) -> None:
    """A port outside 1 to 65535 in the path is a 400 naming the rule."""
    for port in ("0", "65536", "abc"):
        response = await http.post(f"/api/ports/{port}/messages", json={"content": "x"})
        assert response.status_code == 400 and "port" in response.json()["error"]["message"]


async def test_a_session_takes_messages_while_it_is_active(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    """A session's endpoint stores in that session while it is its port's active one; an
    archived session is a 400 saying where messages go, an unknown one a 404."""
    created = (await http.post("/api/sessions", json={"port": 9293})).json()
    path = f"/api/sessions/{created['id']}/messages"
    ack = (await http.post(path, json={"content": "to the session"})).json()
    assert ack["session_id"] == created["id"] and ack["results"][0]["seq"] == 1
    assert (await http.post("/api/sessions", json={"port": 9293})).status_code == 201
    refused = await http.post(path, json={"content": "too late"})
    assert refused.status_code == 400
    assert "/api/ports/9293/messages" in refused.json()["error"]["message"]
    missing = await http.post(
        "/api/sessions/00000000-0000-7000-8000-000000000000/messages", json={"content": "x"}
    )
    assert missing.status_code == 404


async def test_past_the_rate_limit_the_answer_says_when_to_retry(settings: Settings) -> None:
    """HTTP sends share a bucket at the per-connection rate: past it a 429 with
    `retry_after_ms` and `Retry-After`, nothing stored."""
    limited = replace(settings, rate_limit_connection_msgs_s=1.0, rate_limit_burst_s=1.0)
    async with (
        run_gateway(limited) as running,
        httpx.AsyncClient(base_url=running.http_url) as http,
    ):
        first = await http.post("/api/ports/9294/messages", json={"content": "one"})
        assert first.status_code == 200, first.text
        second = await http.post("/api/ports/9294/messages", json={"content": "two"})
        assert second.status_code == 429, second.text
        error = second.json()["error"]
        assert error["code"] == "rate_limited" and error["details"]["retry_after_ms"] > 0
        assert int(second.headers["retry-after"]) >= 1
        page = (await http.get("/api/ports/9294/messages")).json()
    assert [m["content"] for m in page["messages"]] == ["one"]


async def test_the_seed_aliases_do_what_their_originals_do(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    """POST …/archive archives, POST …/pin pins and DELETE …/pin unpins, each answering the
    session; GET /api/sessions/search answers as GET /api/search."""
    ack = (await http.post("/api/ports/9295/messages", json={"content": "a kookaburra"})).json()
    base = f"/api/sessions/{ack['session_id']}"
    pinned = await http.post(f"{base}/pin")
    assert pinned.status_code == 200 and pinned.json()["pinned"] is True
    assert (await http.delete(f"{base}/pin")).json()["pinned"] is False
    archived = await http.post(f"{base}/archive")
    assert archived.status_code == 200 and archived.json()["status"] == "archived"
    missing = await http.post("/api/sessions/00000000-0000-7000-8000-000000000000/pin")
    assert missing.status_code == 404
    await searchable(gateway)
    alias = await http.get("/api/sessions/search", params={"q": "kookaburra"})
    original = await http.get("/api/search", params={"q": "kookaburra"})
    assert alias.status_code == 200 and alias.json() == original.json()
    assert len(alias.json()["results"]) == 1
