"""Stats from counters, verify-counts, and archiving inactive sessions."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from asyncpg.connection import LoggedQuery

from storage import search, stats
from storage.ids import new_id
from tests.conftest import RunningGateway, drained, migrated_database, receive, request
from tests.processes import command_env, run_command


async def test_stats_follow_every_change(
    gateway: RunningGateway, http: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    """Messages, rotations, archive, unarchive and delete keep the counters equal to a
    recount of the rows, and the global totals move as the user's do."""
    mine_before = (await http.get("/api/stats")).json()
    global_before = (await http.get("/api/stats/global")).json()
    async with gateway.connect() as ide:
        for port in (9400, 9401):
            for i in range(5):
                await request(ide, {"type": "message", "port": port, "content": f"{port} {i}"})
        rotated = await request(ide, {"type": "session.new", "port": 9400})
        await request(ide, {"type": "message", "port": 9400, "content": "after"})
        await request(ide, {"type": "message", "port": 9400, "content": "after"})  # a resend
        victim = await request(ide, {"type": "message", "port": 9402, "content": "bye"})
    await drained(gateway)
    await http.delete(f"/api/sessions/{victim['session_id']}")
    await http.patch(f"/api/sessions/{rotated['session']['id']}", json={"status": "archived"})
    body = (await http.get("/api/stats")).json()
    user = gateway.settings.local_user
    recount = await db.fetchrow(
        "SELECT count(*) FILTER (WHERE status = 'active') AS active,"
        " count(*) FILTER (WHERE status = 'archived') AS archived FROM sessions"
        " WHERE user_id = $1",
        user,
    )
    messages = await db.fetchval(
        "SELECT count(*) FROM messages m JOIN sessions s ON s.id = m.session_id"
        " WHERE s.user_id = $1 AND s.status <> 'deleted'",
        user,
    )
    assert recount is not None
    assert body == {
        "sessions": {
            "active": recount["active"],
            "archived": recount["archived"],
            "total": recount["active"] + recount["archived"],
        },
        "messages": messages,
    }
    assert body["messages"] == 11 and body["sessions"] == {"active": 1, "archived": 2, "total": 3}
    global_after = (await http.get("/api/stats/global")).json()
    assert global_after["users"] == global_before["users"] + (mine_before["messages"] == 0)
    assert global_after["messages"] - global_before["messages"] == (
        body["messages"] - mine_before["messages"]
    )
    for what in ("active", "archived"):
        assert global_after["sessions"][what] - global_before["sessions"][what] == (
            body["sessions"][what] - mine_before["sessions"][what]
        )


async def test_stats_read_no_table_but_the_counters(db: asyncpg.Pool) -> None:
    """The one query `stats.read` runs is a primary-key lookup on user_stats: its plan
    touches neither sessions nor messages."""
    logged: list[LoggedQuery] = []
    seen = asyncio.Event()

    def record(query: LoggedQuery) -> None:
        logged.append(query)
        seen.set()

    async with db.acquire() as conn:
        # asyncpg's query logger reports each statement the connection really ran.
        conn.add_query_logger(record)
        try:
            await stats.read(conn, "anyone")
            await asyncio.wait_for(seen.wait(), 5)  # loggers are called soon, not at once
        finally:
            conn.remove_query_logger(record)
        [query] = logged
        async with conn.transaction():
            # Without a sequential scan to fall back on, only an index lookup is left.
            await conn.execute("SET LOCAL enable_seqscan = off")
            [plan] = orjson.loads(
                await conn.fetchval("EXPLAIN (FORMAT JSON) " + query.query, *query.args)
            )
    nodes = list(_plan_nodes(plan["Plan"]))
    assert {n["Relation Name"] for n in nodes if "Relation Name" in n} == {"user_stats"}
    assert [n["Node Type"] for n in nodes] in (["Index Scan"], ["Index Only Scan"]), nodes
    assert nodes[0]["Index Name"] == "user_stats_pkey", nodes


def _plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A plan node and all the nodes under it."""
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)


@pytest.fixture
async def fresh_database(server_database_url: str) -> AsyncIterator[str]:
    """An empty migrated database of its own (verify-counts looks at every user)."""
    async with migrated_database(server_database_url, "cg_stats") as url:
        yield url


async def _cli(*args: str, database_url: str, **settings: str) -> tuple[int, str]:
    """Run a command on `database_url`; its exit code and its stdout and stderr together."""
    env = command_env(GATEWAY_DATABASE_URL=database_url)
    env |= {f"GATEWAY_{name.upper()}": value for name, value in settings.items()}
    code, out, err = await run_command(*args, env=env)
    return code, out + err


async def test_verify_counts_reports_and_fixes_drift(fresh_database: str) -> None:
    """verify-counts exits 1 naming drifted counters; --fix repairs them; then it is clean."""
    conn = await asyncpg.connect(fresh_database)
    try:
        session_id = new_id()
        await conn.execute(
            "INSERT INTO sessions (id, user_id, port, ide_type) VALUES ($1, 'u1', 9222, 'cursor')",
            session_id,
        )
        for seq in (1, 2, 3):
            await conn.execute(
                "INSERT INTO messages (session_id, seq, id, user_id, port, dedup_key, role,"
                " content, content_type, source, created_at) VALUES ($1, $2, $3, 'u1', 9222,"
                " $4, 'user', 'x', 'text', 'user_input', now())",
                session_id, seq, new_id(), uuid.uuid4(),
            )  # fmt: skip
        # The rows went in behind the writer's back: both counters say 0, the truth is 3.
        code, out = await _cli("verify-counts", database_url=fresh_database)
        assert code == 1, out
        assert f"session {session_id}: message_count 0, real 3" in out
        assert "user u1: messages 0, real 3" in out
        assert "global total messages: 0, real 3" in out  # the totals follow user_stats
        code, out = await _cli("verify-counts", "--fix", database_url=fresh_database)
        assert code == 0 and "(fixed)" in out, out
        assert (
            await conn.fetchval("SELECT message_count FROM sessions WHERE id = $1", session_id) == 3
        )
        assert await conn.fetchval("SELECT messages FROM user_stats WHERE user_id = 'u1'") == 3
        assert await stats.totals(conn) == stats.Totals(1, 1, 0, 3)
        # The totals alone drifted (written behind the trigger's back): reported and fixed.
        await conn.execute("UPDATE global_stats SET users = users + 5 WHERE shard = 3")
        code, out = await _cli("verify-counts", database_url=fresh_database)
        assert code == 1 and "global total users: 6, real 1" in out, out
        code, out = await _cli("verify-counts", "--fix", database_url=fresh_database)
        assert code == 0 and "(fixed)" in out, out
        assert await stats.totals(conn) == stats.Totals(1, 1, 0, 3)
        code, out = await _cli("verify-counts", database_url=fresh_database)
        assert code == 0 and "0 session counters and 0 user counters drifted" in out, out
        assert "global" not in out
    finally:
        await conn.close()


async def test_archive_command_archives_inactive_sessions(
    gateway: RunningGateway, db: asyncpg.Pool, database_url: str, redis_url: str
) -> None:
    """`archive --older-than 30d` archives active, unpinned sessions idle that long, in
    batches, announces them, and the port's next message opens a new session."""
    user = gateway.settings.local_user
    async with gateway.connect() as ide, gateway.connect() as tab:
        old = await request(ide, {"type": "message", "port": 9410, "content": "old"})
        pinned = await request(ide, {"type": "message", "port": 9411, "content": "keep"})
        recent = await request(ide, {"type": "message", "port": 9412, "content": "new"})
        await drained(gateway)
        await db.execute(
            "UPDATE sessions SET pinned = (id = $2), activity_at = now() - interval '40 days'"
            " WHERE id = ANY($1::uuid[])",
            [uuid.UUID(old["session_id"]), uuid.UUID(pinned["session_id"])],
            uuid.UUID(pinned["session_id"]),
        )
        await request(tab, {"type": "subscribe", "sessions": True})
        code, out = await _cli(
            "archive", "--older-than", "30d", "--batch", "1",
            database_url=database_url, redis_url=redis_url,
            key_prefix=gateway.settings.key_prefix,
        )  # fmt: skip
        assert code == 0 and "archived 1 session(s)" in out, out
        event = await receive(tab)
        while event.get("event") != "archived":  # skip any late counter update
            event = await receive(tab)
        assert event["session"]["id"] == old["session_id"]
        # The cached active session was dropped: the port's next message opens a new one.
        after = await request(ide, {"type": "message", "port": 9410, "content": "back"})
        assert after["session_id"] != old["session_id"]
    rows = await db.fetch("SELECT id::text, status FROM sessions WHERE user_id = $1", user)
    statuses = {r["id"]: r["status"] for r in rows}
    assert statuses[old["session_id"]] == "archived"
    assert statuses[pinned["session_id"]] == "active"
    assert statuses[recent["session_id"]] == "active"


async def test_purge_removes_only_sessions_deleted_long_enough_ago(fresh_database: str) -> None:
    """`purge --deleted-older-than 30d` removes the sessions deleted more than 30 days ago,
    with their messages and search rows, a batch at a time, and nothing else; a bad age is
    one line, exit 2."""
    conn = await asyncpg.connect(fresh_database)
    try:
        ids = {name: new_id() for name in ("old", "recent", "kept", "older")}
        for name, status, deleted_days in [
            ("old", "deleted", 40), ("older", "deleted", 90), ("recent", "deleted", 1),
            ("kept", "archived", None),
        ]:  # fmt: skip
            await conn.execute(
                "INSERT INTO sessions (id, user_id, port, ide_type, status, deleted_at)"
                " VALUES ($1, 'u1', 9222, 'cursor', $2,"
                " now() - make_interval(days => $3::int))",
                ids[name], status, deleted_days,
            )  # fmt: skip
            for seq in (1, 2):
                await conn.execute(
                    "INSERT INTO messages (session_id, seq, id, user_id, port, dedup_key, role,"
                    " content, content_type, source, created_at) VALUES ($1, $2, $3, 'u1',"
                    " 9222, $4, 'user', 'numbat words', 'text', 'user_input', now())",
                    ids[name], seq, new_id(), uuid.uuid4(),
                )  # fmt: skip
        await search.index_keys(conn, [(str(i), seq) for i in ids.values() for seq in (1, 2)])
        code, out = await _cli(
            "purge", "--deleted-older-than", "30d", "--batch", "1", database_url=fresh_database
        )
        assert code == 0 and "purged 2 session(s) and 4 message(s)" in out, out
        left = {
            r["id"]: (r["messages"], r["search_rows"])
            for r in await conn.fetch(
                "SELECT s.id, (SELECT count(*) FROM messages m WHERE m.session_id = s.id)"
                " AS messages, (SELECT count(*) FROM message_search x"
                " WHERE x.session_id = s.id) AS search_rows FROM sessions s"
            )
        }
        assert left == {ids["recent"]: (2, 2), ids["kept"]: (2, 2)}
        for table in ("messages", "message_search"):
            gone = await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE session_id = ANY($1::uuid[])",
                [ids["old"], ids["older"]],
            )
            assert gone == 0, table
        code, out = await _cli("purge", "--deleted-older-than", "30d", database_url=fresh_database)
        assert code == 0 and "purged 0 session(s)" in out, out
        code, out = await _cli("purge", "--deleted-older-than", "soon", database_url=fresh_database)
        assert code == 2 and "--deleted-older-than: 'soon' is not a duration" in out, out
    finally:
        await conn.close()
