"""Read your writes on a port, however many times it rotated: every acked message is served,
from the buffer or from PostgreSQL, and the buffer's index of sessions empties as it drains."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import httpx
import redis.asyncio as aioredis

from storage.keys import WRITER_GROUP
from storage.writer import BatchWriter, WriterConfig
from tests.conftest import RECV_TIMEOUT, RunningGateway, request

ROTATIONS = 5


async def _rotate_with_messages(gateway: RunningGateway, port: int) -> list[dict[str, Any]]:
    """ROTATIONS x (2 messages + `session.new`) on the port; returns the acks in order."""
    acks = []
    async with gateway.connect() as ide:
        for round_ in range(ROTATIONS):
            for i in range(2):
                frame = {"type": "message", "port": port, "content": f"r{round_} m{i}"}
                ack = await request(ide, frame)
                assert ack["type"] == "ack", ack
                acks.append(ack)
            reply = await request(ide, {"type": "session.new", "port": port})
            assert reply["type"] == "session", reply
    return acks


async def _port_messages(gateway: RunningGateway, port: int) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=gateway.http_url, timeout=RECV_TIMEOUT) as http:
        response = await http.get(f"/api/ports/{port}/messages")
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


def _acked(acks: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(session, message id) of the acked messages, sorted."""
    return sorted((a["session_id"], a["results"][0]["id"]) for a in acks)


def _served(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(session, message id) of the served messages, sorted (so duplicates show). Their order
    is checked apart: messages of one millisecond in two sessions may come either way."""
    created = [datetime.fromisoformat(m["created_at"]) for m in messages]
    assert created == sorted(created, reverse=True), "not newest first"
    return sorted((m["session_id"], m["id"]) for m in messages)


async def test_port_messages_serve_buffered_rows_of_every_rotation(
    gateway_no_writer: RunningGateway, redis: aioredis.Redis
) -> None:
    """With no writer, a port rotated five times serves all ten acked messages, newest first."""
    acks = await _rotate_with_messages(gateway_no_writer, 9601)
    assert len({a["session_id"] for a in acks}) == ROTATIONS
    served = await _port_messages(gateway_no_writer, 9601)
    assert _served(served) == _acked(acks)
    keys = gateway_no_writer.gateway.keys
    assert int(await redis.get(keys.buffered) or 0) == 2 * ROTATIONS


async def test_port_messages_exclude_a_deleted_sessions_buffered_rows(
    gateway_no_writer: RunningGateway,
) -> None:
    """A deleted session's messages vanish from the port's messages while still buffered."""
    acks = await _rotate_with_messages(gateway_no_writer, 9602)
    gone = acks[0]["session_id"]
    async with httpx.AsyncClient(base_url=gateway_no_writer.http_url, timeout=RECV_TIMEOUT) as http:
        assert (await http.delete(f"/api/sessions/{gone}")).status_code == 204
    served = await _port_messages(gateway_no_writer, 9602)
    assert _served(served) == [pair for pair in _acked(acks) if pair[0] != gone]


async def test_rows_held_by_a_dead_writer_are_served_while_another_commits(
    gateway_no_writer: RunningGateway, redis: aioredis.Redis
) -> None:
    """The first session's entries stuck with a dead writer while a live one commits the
    four later rotations: the port serves all ten messages, and still does once the live
    writer has claimed and committed the rest, which empties the buffer's bookkeeping."""
    running = gateway_no_writer.gateway
    keys, user, port = running.keys, gateway_no_writer.settings.local_user, 9603
    writer = BatchWriter(running.pool, redis, keys, WriterConfig(claim_idle_ms=0))
    await writer.ensure_group()
    acks: list[dict[str, Any]] = []
    async with gateway_no_writer.connect() as ide:
        for round_ in range(ROTATIONS):
            for i in range(2):
                frame = {"type": "message", "port": port, "content": f"w{round_} m{i}"}
                acks.append(await request(ide, frame))
            if round_ == 0:  # a writer reads the first session's entries, then dies
                await redis.xreadgroup(WRITER_GROUP, "dead", {keys.stream: ">"})
            await request(ide, {"type": "session.new", "port": port})
    while await asyncio.wait_for(writer.step(), RECV_TIMEOUT):
        pass
    assert await writer.backlog() == 2  # the dead writer's two entries
    served = await _port_messages(gateway_no_writer, port)
    assert _served(served) == _acked(acks)
    assert await asyncio.wait_for(writer.claim_stale(), RECV_TIMEOUT) == 2
    assert await writer.backlog() == 0
    assert await redis.smembers(keys.port_buffered(user, port)) == set()  # type: ignore[misc]  # redis-py 7 types sync|async
    assert int(await redis.get(keys.buffered) or 0) == 0
    served = await _port_messages(gateway_no_writer, port)
    assert _served(served) == _acked(acks)


async def test_a_session_leaves_its_ports_set_with_its_last_buffered_row(
    gateway_no_writer: RunningGateway, redis: aioredis.Redis
) -> None:
    """A commit that leaves a row of the session buffered (a new row or an edit) keeps the
    session in its port's set, and counted; the commit of its last row removes it."""
    running = gateway_no_writer.gateway
    keys, user, port = running.keys, gateway_no_writer.settings.local_user, 9604
    writer = BatchWriter(running.pool, redis, keys, consumer="ryw")
    await writer.ensure_group()
    buffered_sessions = keys.port_buffered(user, port)

    async def state() -> tuple[set[Any], int]:
        return await redis.smembers(buffered_sessions), int(await redis.get(keys.buffered) or 0)  # type: ignore[misc]  # redis-py 7 types sync|async

    async with gateway_no_writer.connect() as ide:
        first = await request(ide, {"type": "message", "port": port, "content": "a", "id": "a"})
        sid = first["session_id"].encode()
        response: Any = await redis.xreadgroup(WRITER_GROUP, "ryw", {keys.stream: ">"})
        entries = list(response[0][1])  # the entry of "a", read before "b" is stored
        await request(ide, {"type": "message", "port": port, "content": "b"})
        await writer.write(entries)
        assert await state() == ({sid}, 1)
        assert await asyncio.wait_for(writer.step(), RECV_TIMEOUT) == 1  # "b"
        assert await state() == (set(), 0)
        edit = {"type": "message", "port": port, "content": "a, edited", "id": "a"}
        assert (await request(ide, edit))["results"][0]["updated"] is True
    assert await state() == ({sid}, 1)
    served = await _port_messages(gateway_no_writer, port)
    assert [m["content"] for m in served] == ["b", "a, edited"]
    assert await asyncio.wait_for(writer.step(), RECV_TIMEOUT) == 1  # the edit
    assert await state() == (set(), 0)
