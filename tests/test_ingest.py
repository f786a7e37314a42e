"""Ingest end to end: WebSocket frames to acks, the buffer, the writer and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

import asyncpg
import httpx
import orjson

from gateway.settings import Settings
from gateway.ws.ingest import buffer_item
from gateway.ws.protocol import Ingest, Limits, parse_frame
from storage.buffer import IngestBuffer
from tests.conftest import RunningGateway, drained, receive, request, run_gateway, send


async def test_hello_gets_welcome_with_user_and_limits(gateway: RunningGateway) -> None:
    """`hello` is answered by `welcome` with the user id, server version and limits."""
    async with gateway.connect() as ws:
        reply = await request(ws, {"type": "hello", "ref": "h1", "kind": "ide", "ports": [9222]})
    assert reply["type"] == "welcome"
    assert reply["ref"] == "h1"
    assert reply["user_id"] == gateway.settings.local_user
    assert reply["server"]["name"] == "chat-gateway"
    assert reply["limits"]["max_batch_items"] == 500
    assert reply["limits"]["max_frame_bytes"] == 1 << 20
    assert reply["limits"]["max_ports_per_hello"] == 64


async def test_the_ports_per_hello_limit_is_the_configured_one(settings: Settings) -> None:
    """GATEWAY_MAX_PORTS_PER_HELLO=2: a hello with 3 ports is `too_large`, the welcome says 2."""
    async with (
        run_gateway(replace(settings, max_ports_per_hello=2)) as running,
        running.connect() as ws,
    ):
        refused = await request(ws, {"type": "hello", "kind": "ide", "ports": [1, 2, 3]})
        assert refused["code"] == "too_large", refused
        welcome = await request(ws, {"type": "hello", "kind": "ide", "ports": [1, 2]})
        assert welcome["limits"]["max_ports_per_hello"] == 2


async def test_ping_gets_pong(gateway: RunningGateway) -> None:
    """`ping` is answered by `pong` carrying the same ref."""
    async with gateway.connect() as ws:
        assert await request(ws, {"type": "ping", "ref": "p"}) == {"type": "pong", "ref": "p"}


async def test_message_is_acked_stored_and_read_back(
    gateway: RunningGateway, http: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    """A message is acked with seq 1 in a new session, written to PostgreSQL, and served."""
    async with gateway.connect() as ws:
        ack = await request(
            ws,
            {
                "type": "message",
                "ref": "m1",
                "port": 9233,
                "content": "hello **world**",
                "id": "c-1",
                "role": "assistant",
                "content_type": "markdown",
                "timestamp": "2026-11-23T10:00:00.5Z",
                "metadata": {"model": "x", "n": [1, 2]},
            },
        )
    assert ack["type"] == "ack" and ack["ref"] == "m1" and ack["port"] == 9233
    assert ack["durability"] == "buffered"
    [result] = ack["results"]
    assert result["seq"] == 1 and result["client_id"] == "c-1"
    assert result["duplicate"] is False and result["updated"] is False
    await drained(gateway)
    row = await db.fetchrow(
        "SELECT m.*, s.ide_type, s.message_count, s.port AS session_port"
        " FROM messages m JOIN sessions s ON s.id = m.session_id WHERE m.id = $1",
        uuid.UUID(result["id"]),
    )
    assert row is not None
    assert str(row["session_id"]) == ack["session_id"]
    assert row["content"] == "hello **world**" and row["role"] == "assistant"
    assert row["content_type"] == "markdown" and row["source"] == "user_input"
    assert row["client_ts"].isoformat() == "2026-11-23T10:00:00.500000+00:00"
    assert row["ide_type"] == "vscode" and row["message_count"] == 1
    response = await http.get(f"/api/sessions/{ack['session_id']}/messages")
    assert response.status_code == 200
    [message] = response.json()["messages"]
    assert message["id"] == result["id"] and message["seq"] == 1
    assert message["metadata"] == {"model": "x", "n": [1, 2]}
    assert message["timestamp"] == "2026-11-23T10:00:00.500000Z"


async def test_acked_messages_are_readable_before_the_writer_runs(
    gateway_no_writer: RunningGateway,
) -> None:
    """Read your writes: acked messages still in the buffer are served over HTTP."""
    async with gateway_no_writer.connect() as ws:
        for i in range(5):
            await send(ws, {"type": "message", "port": 9300, "content": f"m{i}"})
        acks = [await receive(ws) for _ in range(5)]
    session_id = acks[0]["session_id"]
    async with httpx.AsyncClient(base_url=gateway_no_writer.http_url) as http:
        body = (await http.get(f"/api/sessions/{session_id}/messages")).json()
    assert [m["content"] for m in body["messages"]] == [f"m{i}" for i in range(5)]
    assert [m["seq"] for m in body["messages"]] == [1, 2, 3, 4, 5]


async def test_durable_ack_comes_after_the_commit(
    gateway: RunningGateway, db: asyncpg.Pool
) -> None:
    """`durable: true` is acked `persisted`, and the row is in PostgreSQL when the ack lands."""
    async with gateway.connect() as ws:
        ack = await request(
            ws, {"type": "message", "port": 9400, "content": "keep me", "durable": True}
        )
    assert ack["durability"] == "persisted"
    found = await db.fetchval(
        "SELECT content FROM messages WHERE id = $1", uuid.UUID(ack["results"][0]["id"])
    )
    assert found == "keep me"


async def test_pipelined_frames_keep_their_order(gateway: RunningGateway) -> None:
    """A client that does not wait for acks gets seqs in the order it sent, acks in order."""
    async with gateway.connect() as ws:
        for i in range(200):
            await send(ws, {"type": "message", "port": 9500, "content": f"n{i}", "ref": str(i)})
        acks = await asyncio.gather(*[receive(ws) for _ in range(1)])
        acks += [await receive(ws) for _ in range(199)]
    assert [a["ref"] for a in acks] == [str(i) for i in range(200)]
    assert [a["results"][0]["seq"] for a in acks] == list(range(1, 201))


async def test_a_large_tick_is_cut_into_ordered_script_calls(
    gateway: RunningGateway, db: asyncpg.Pool
) -> None:
    """Requests queued in one tick beyond the per-call byte cap go to Redis in several
    script calls, in submit order: seqs follow the order of submission, and all are stored."""
    running = gateway.gateway
    user = f"cap{uuid.uuid4().hex[:8]}"
    limits = Limits(1 << 20, 1 << 19, 1 << 14, 500)
    small = IngestBuffer(
        running.redis, running.pool, running.keys, state_ttl_s=60, max_call_bytes=2_000
    )
    async with small.running():
        futures = []
        for i in range(30):  # one tick: nothing awaits between the submits
            frame = parse_frame(
                orjson.dumps(
                    {"type": "message", "port": 9723, "content": f"{i} " + "x" * 300}
                ).decode(),
                limits,
            )
            assert isinstance(frame, Ingest)
            futures.append(
                small.submit(user, 9723, "cursor", [buffer_item(user, 9723, frame.items[0])])
            )
        outcomes = await asyncio.wait_for(asyncio.gather(*futures), 15)
    assert small.script_calls >= 5  # ~400 bytes a request: at most 5 per call
    assert [o.items[0].seq for o in outcomes] == list(range(1, 31))
    await drained(gateway)
    rows = await db.fetch(
        "SELECT seq, content FROM messages WHERE session_id = $1 ORDER BY seq",
        uuid.UUID(outcomes[0].session_id),
    )
    assert [(r["seq"], r["content"].split()[0]) for r in rows] == [
        (i + 1, str(i)) for i in range(30)
    ]
