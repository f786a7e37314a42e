"""Idempotency: resent messages and re-extracted transcripts store nothing new."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aioredis

from tests.conftest import RunningGateway, count_messages, drained, request


def transcript(n: int, *, with_ids: bool) -> list[dict[str, Any]]:
    items = []
    for i in range(n):
        item: dict[str, Any] = {
            "role": "user" if i % 2 == 0 else "assistant",
            "content": f"message {i}: " + "lorem ipsum " * (i % 7),
            "timestamp": f"2026-11-23T09:{i // 60:02d}:{i % 60:02d}Z",
        }
        if with_ids:
            item["id"] = f"turn-{i}"
        items.append(item)
    return items


async def test_re_extracted_transcript_is_all_duplicates(
    gateway: RunningGateway, db: asyncpg.Pool
) -> None:
    """Re-sending a 100-message transcript (fingerprint dedup) acks every item duplicate with
    its original id and seq, and PostgreSQL holds 100 rows."""
    items = transcript(100, with_ids=False)
    async with gateway.connect() as ws:
        first = await request(ws, {"type": "extracted", "port": 9224, "messages": items})
        again = await request(ws, {"type": "extracted", "port": 9224, "messages": items})
        # A longer transcript: the old prefix is duplicate, the new tail is stored.
        longer = items + transcript(103, with_ids=False)[100:]
        third = await request(ws, {"type": "extracted", "port": 9224, "messages": longer})
    assert [r["seq"] for r in first["results"]] == list(range(1, 101))
    assert not any(r["duplicate"] for r in first["results"])
    assert all(r["duplicate"] and not r["updated"] for r in again["results"])
    assert [(r["id"], r["seq"]) for r in again["results"]] == [
        (r["id"], r["seq"]) for r in first["results"]
    ]
    assert [r["duplicate"] for r in third["results"]] == [True] * 100 + [False] * 3
    assert [r["seq"] for r in third["results"][100:]] == [101, 102, 103]
    await drained(gateway)
    session_id = uuid.UUID(first["session_id"])
    assert await count_messages(db, session_id) == 103
    assert await db.fetchval("SELECT message_count FROM sessions WHERE id = $1", session_id) == 103


async def test_resend_by_client_id_is_a_duplicate(gateway: RunningGateway) -> None:
    """The same client id with the same content is a duplicate, whatever its timestamp."""
    async with gateway.connect() as ws:
        frame = {"type": "message", "port": 9225, "id": "abc", "content": "same"}
        first = await request(ws, frame)
        again = await request(ws, {**frame, "timestamp": "2026-01-01T00:00:00Z"})
    assert again["results"][0] == {**first["results"][0], "duplicate": True}


async def test_identical_text_without_id_or_timestamp_is_one_message(
    gateway: RunningGateway,
) -> None:
    """Without id or timestamp the fingerprint is (port, role, content): the contract's rule."""
    async with gateway.connect() as ws:
        ack = await request(
            ws,
            {"type": "extracted", "port": 9226, "messages": [{"content": "ok"}, {"content": "ok"}]},
        )
    assert [(r["seq"], r["duplicate"]) for r in ack["results"]] == [(1, False), (1, True)]


async def test_same_client_id_with_new_content_is_an_edit(
    gateway: RunningGateway, db: asyncpg.Pool, http: httpx.AsyncClient
) -> None:
    """Streaming growth: the same client id with longer content updates the message in place
    (same id and seq), acked `updated`; one row with the final content."""
    async with gateway.connect() as ws:
        acks = []
        for n in range(1, 11):
            acks.append(
                await request(
                    ws,
                    {
                        "type": "message",
                        "port": 9227,
                        "id": "reply-1",
                        "role": "assistant",
                        "content": "word " * n,
                    },
                )
            )
    ids = {a["results"][0]["id"] for a in acks}
    assert len(ids) == 1
    assert [a["results"][0]["seq"] for a in acks] == [1] * 10
    assert [a["results"][0]["updated"] for a in acks] == [False] + [True] * 9
    await drained(gateway)
    rows = await db.fetch(
        "SELECT content, edited_at FROM messages WHERE session_id = $1",
        uuid.UUID(acks[0]["session_id"]),
    )
    assert len(rows) == 1 and rows[0]["content"] == "word " * 10
    assert rows[0]["edited_at"] is not None
    body = (await http.get(f"/api/sessions/{acks[0]['session_id']}/messages")).json()
    assert [m["content"] for m in body["messages"]] == ["word " * 10]
    count = await db.fetchval(
        "SELECT message_count FROM sessions WHERE id = $1", uuid.UUID(acks[0]["session_id"])
    )
    assert count == 1


async def test_dedup_survives_the_loss_of_redis_state(
    gateway: RunningGateway, redis: aioredis.Redis, db: asyncpg.Pool
) -> None:
    """When a session's dedup state leaves Redis (expiry, or a Redis without its data), it is
    reloaded from PostgreSQL: resends stay duplicates and seqs continue without a gap."""
    items = transcript(20, with_ids=True)
    async with gateway.connect() as ws:
        first = await request(ws, {"type": "extracted", "port": 9228, "messages": items})
        await drained(gateway)
        keys = gateway.gateway.keys
        await redis.delete(
            keys.session_state(first["session_id"]), keys.active(gateway.settings.local_user, 9228)
        )
        again = await request(ws, {"type": "extracted", "port": 9228, "messages": items})
        more = await request(ws, {"type": "message", "port": 9228, "content": "next"})
    assert again["session_id"] == first["session_id"]
    assert all(r["duplicate"] for r in again["results"])
    assert [r["id"] for r in again["results"]] == [r["id"] for r in first["results"]]
    assert more["results"][0]["seq"] == 21
    await drained(gateway)
    n = await db.fetchval(
        "SELECT count(*) FROM messages WHERE session_id = $1", uuid.UUID(first["session_id"])
    )
    assert n == 21
