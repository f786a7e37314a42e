"""Full-text search: ranking, snippets, filters, isolation, edits, hostile input, catch-up."""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import orjson
import redis.asyncio as aioredis

from gateway.auth import issue_token
from gateway.settings import Settings
from storage.indexer import Indexer, IndexerConfig, catch_up
from storage.keys import Keys
from storage.search import SNIPPET_CHARS, positive_terms, search, snippet
from tests.conftest import RunningGateway, request, run_gateway, searchable
from tests.processes import command_env, run_command

SECRET = "search-test-secret-0123456789abcdef"


async def send_all(running: RunningGateway, port: int, contents: list[str]) -> list[Any]:
    """Send each content as a message on the port; the acks' results, in order."""
    async with running.connect() as ws:
        acks = [
            await request(ws, {"type": "message", "port": port, "content": c}) for c in contents
        ]
    return [a["results"][0] | {"session_id": a["session_id"]} for a in acks]


async def found(http: httpx.AsyncClient, q: str, **params: Any) -> list[dict[str, Any]]:
    response = await http.get("/api/search", params={"q": q, **params})
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()["results"]
    return results


def marked(result: dict[str, Any]) -> list[str]:
    """The highlighted parts of a result's snippet."""
    return [result["snippet"][start:end] for start, end in result["highlights"]]


async def test_results_are_ranked_with_a_highlighted_plain_text_snippet(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    """Best match first, with ids, rank and a plain-text snippet whose offsets slice the matches."""
    filler = " ".join(f"word{i}" for i in range(150))
    acks = await send_all(
        gateway,
        9400,
        [
            "Zebra zebra ZEBRA stripes, and a zebra again",
            f"{filler} a lone zebra in the middle {filler}",
            "nothing to see here",
        ],
    )
    await searchable(gateway)
    results = await found(http, "zebra")
    assert [r["message_id"] for r in results] == [acks[0]["id"], acks[1]["id"]]
    assert results[0]["rank"] > results[1]["rank"] > 0
    best = results[0]
    assert best["session_id"] == acks[0]["session_id"] and best["seq"] == acks[0]["seq"]
    assert best["port"] == 9400 and best["role"] == "user" and best["created_at"].endswith("Z")
    assert marked(best) == ["Zebra", "zebra", "ZEBRA", "zebra"]
    # Each hit names its session: untitled here (null), with when it started.
    assert best["session_title"] is None and best["session_created_at"].endswith("Z")
    assert best["session_auto_title"] == "Zebra zebra ZEBRA stripes, and a zebra again"
    middle = results[1]
    assert middle["snippet"].startswith("…") and middle["snippet"].endswith("…")
    assert len(middle["snippet"]) <= SNIPPET_CHARS + 2 and marked(middle) == ["zebra"]
    assert [r["message_id"] for r in await found(http, '"zebra stripes"')] == [acks[0]["id"]]
    assert await found(http, "zebra -stripes") == [results[1]]
    assert len(await found(http, "zebra", limit=1)) == 1
    renamed = await http.patch(f"/api/sessions/{best['session_id']}", json={"title": "Zoo"})
    assert renamed.status_code == 200, renamed.text
    assert (await found(http, "zebra"))[0]["session_title"] == "Zoo"


async def test_port_filter_and_code_identifiers(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    """`port` keeps one port's matches; identifiers match by their parts and as a whole."""
    await send_all(gateway, 9401, ["call self.load_config(path) first"])
    await send_all(gateway, 9402, ["then load_config again", "see src/app.py"])
    await searchable(gateway)
    assert {r["port"] for r in await found(http, "load_config")} == {9401, 9402}
    only = await found(http, "load_config", port=9401)
    assert [r["port"] for r in only] == [9401] and marked(only[0]) == ["load", "config"]
    assert [r["port"] for r in await found(http, "self.load_config")] == [9401]
    assert [r["port"] for r in await found(http, "config", port=9402)] == [9402]
    assert len(await found(http, "app.py")) == len(await found(http, "app")) == 1
    assert await found(http, "load_config", port=9403) == []


async def test_sessions_are_found_by_their_name(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    """A session whose title, or automatic title when untitled, has the words is listed with
    its matches marked; not a deleted one, nor one on another port than asked."""
    [titled] = await send_all(gateway, 9404, ["the first words of a renamed session"])
    renamed = await http.patch(
        f"/api/sessions/{titled['session_id']}", json={"title": "Platypus migration plan"}
    )
    assert renamed.status_code == 200, renamed.text
    [untitled] = await send_all(gateway, 9405, ["How do platypus eggs hatch?"])
    async with gateway.connect() as ws:
        await request(ws, {"type": "session.new", "port": 9405})
        gone = await request(ws, {"type": "message", "port": 9405, "content": "platypus too"})
    deleted = await http.delete(f"/api/sessions/{gone['session_id']}")
    assert deleted.status_code in (200, 204), deleted.text
    await searchable(gateway)
    response = await http.get("/api/search", params={"q": "platypus"})
    matches = response.json()["sessions"]
    names = {m["session"]["id"]: m["name"] for m in matches}
    assert names == {
        titled["session_id"]: "Platypus migration plan",
        untitled["session_id"]: "How do platypus eggs hatch?",
    }
    for match in matches:
        assert [match["name"][a:b].lower() for a, b in match["highlights"]] == ["platypus"]
    one_port = await http.get("/api/search", params={"q": "platypus", "port": 9404})
    assert [m["session"]["id"] for m in one_port.json()["sessions"]] == [titled["session_id"]]
    nothing = await http.get("/api/search", params={"q": "platypus -migration -eggs"})
    assert nothing.json()["sessions"] == []


async def test_another_users_messages_are_never_returned(settings: Settings) -> None:
    """Two users with the same words each find only their own messages and sessions; no token
    is 401."""
    alice, bob = f"alice-{uuid.uuid4().hex[:6]}", f"bob-{uuid.uuid4().hex[:6]}"
    async with run_gateway(replace(settings, auth_secret=SECRET)) as running:
        ids, sessions = {}, {}
        for user in (alice, bob):
            headers = {"Authorization": f"Bearer {issue_token(SECRET, user, 60)}"}
            async with running.connect(additional_headers=headers) as ws:
                ack = await request(
                    ws, {"type": "message", "port": 9410, "content": f"wombat of {user}"}
                )
            ids[user] = ack["results"][0]["id"]
            sessions[user] = ack["session_id"]
        await searchable(running)
        async with httpx.AsyncClient(base_url=running.http_url) as http:
            for user in (alice, bob):
                headers = {"Authorization": f"Bearer {issue_token(SECRET, user, 60)}"}
                response = await http.get("/api/search", params={"q": "wombat"}, headers=headers)
                assert [r["message_id"] for r in response.json()["results"]] == [ids[user]]
                # Each session is named by its first message: each user finds only their own.
                named = [m["session"]["id"] for m in response.json()["sessions"]]
                assert named == [sessions[user]]
            anonymous = await http.get("/api/search", params={"q": "wombat"})
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "unauthorized"


async def test_deleted_sessions_are_excluded(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    """Once a session is deleted its messages no longer match; other sessions' still do."""
    async with gateway.connect() as ws:
        old = await request(ws, {"type": "message", "port": 9420, "content": "quokka one"})
        await request(ws, {"type": "session.new", "port": 9420})
        new = await request(ws, {"type": "message", "port": 9420, "content": "quokka two"})
    await searchable(gateway)
    assert len(await found(http, "quokka")) == 2
    assert (await http.delete(f"/api/sessions/{old['session_id']}")).status_code == 204
    assert [r["session_id"] for r in await found(http, "quokka")] == [new["session_id"]]


async def test_edits_are_reindexed(gateway: RunningGateway, http: httpx.AsyncClient) -> None:
    """After an edit the old text no longer matches and the new text does, same message."""
    async with gateway.connect() as ws:
        frame = {"type": "message", "port": 9430, "id": "reply-1", "content": "alpaca draft"}
        first = await request(ws, frame)
        await searchable(gateway)
        assert len(await found(http, "alpaca")) == 1
        edited = await request(ws, frame | {"content": "vicuna final answer"})
    assert edited["results"][0]["updated"] is True
    await searchable(gateway)
    assert await found(http, "alpaca") == []
    [hit] = await found(http, "vicuna")
    assert (hit["message_id"], hit["seq"]) == (first["results"][0]["id"], 1)
    assert marked(hit) == ["vicuna"]


async def test_hostile_queries_get_a_clean_answer(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    """Operators, quotes, markup, unicode and huge queries get 200 or a contract 400, never 500."""
    await send_all(
        gateway,
        9440,
        ["<script>alert('x')</script> O'Reilly & co | École naïve 🎉 party 日本語 text"],
    )
    await searchable(gateway)
    clean = [
        "'", '"', "&|!():*", "!!", "(((", "a <-> b", "a:*", "--x", '"unterminated', "or",
        "'; DROP TABLE messages; --", "\\", "%", "_", "\u200b", "\ufffd", "x" * 999,
        "word " * 199, "🎉🎉", "\u0301",
    ]  # fmt: skip
    for q in clean:
        response = await http.get("/api/search", params={"q": q})
        assert response.status_code == 200, (q, response.text)
        assert isinstance(response.json()["results"], list)
    [hit] = await found(http, "<script>")
    assert "<script>alert('x')</script>" in hit["snippet"] and marked(hit) == ["script"] * 2
    assert marked((await found(http, "ÉCOLE"))[0]) == ["École"]
    assert marked((await found(http, "🎉"))[0]) == ["🎉"]
    assert marked((await found(http, "o'reilly"))[0]) == ["O", "Reilly"]
    assert len(await found(http, "日本語")) == 1
    invalid = await http.get("/api/search?q=%ED%A0%80%FF")  # not UTF-8: decoded as U+FFFD
    assert invalid.status_code == 200
    for q in ("x" * 10_240, "a\x00b"):
        response = await http.get("/api/search", params={"q": q})
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "bad_request"


async def test_empty_query_and_bad_parameters_are_bad_requests(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    """A missing or blank `q`, and `limit` or `port` out of range, answer 400 bad_request."""
    for params in (
        {},
        {"q": ""},
        {"q": " \t\n"},
        {"q": "x", "limit": "0"},
        {"q": "x", "limit": "101"},
        {"q": "x", "limit": "ten"},
        {"q": "x", "port": "0"},
        {"q": "x", "port": "65536"},
    ):
        response = await http.get("/api/search", params=params)
        assert response.status_code == 400, params
        body = response.json()
        assert body["error"]["code"] == "bad_request" and body["error"]["message"], params
    assert (await http.get("/api/search", params={"q": "x", "limit": "100"})).status_code == 200


async def insert_unindexed(db: asyncpg.Pool, user: str, content: str) -> uuid.UUID:
    """A session with one message written straight into PostgreSQL: no stream entry."""
    session_id = uuid.uuid4()
    async with db.acquire() as conn:
        await conn.execute(
            "INSERT INTO sessions (id, user_id, port, ide_type, status)"
            " VALUES ($1, $2, 9450, 'unknown', 'archived')",
            session_id,
            user,
        )
        await conn.execute(
            "INSERT INTO messages (session_id, seq, id, user_id, port, dedup_key, role, content,"
            " content_type, source, created_at)"
            " VALUES ($1, 1, $2, $3, 9450, $2, 'user', $4, 'text', 'user_input', $5)",
            session_id,
            uuid.uuid4(),
            user,
            content,
            datetime.now(UTC),
        )
    return session_id


async def test_catch_up_indexes_rows_that_never_went_through_the_stream(
    gateway: RunningGateway, http: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    """`catch_up` indexes rows that never had an index-stream entry, then has nothing left."""
    await searchable(gateway)  # the catch-up of the gateway's first start is over
    session_id = await insert_unindexed(db, gateway.settings.local_user, "platypus egg")
    assert await found(http, "platypus") == []
    indexed = await catch_up(db)
    assert indexed is not None and indexed >= 1
    assert [r["session_id"] for r in await found(http, "platypus")] == [str(session_id)]
    assert await catch_up(db) == 0


async def test_reindex_command_indexes_what_was_never_announced(
    gateway: RunningGateway, http: httpx.AsyncClient, db: asyncpg.Pool, database_url: str
) -> None:
    """`chat-gateway reindex` indexes a row the index stream never named, with a progress
    line; run again, it has nothing left to index."""
    await searchable(gateway)  # no catch-up of the gateway's holds the lock
    session_id = await insert_unindexed(db, gateway.settings.local_user, "quokka grin")
    assert await found(http, "quokka") == []
    env = command_env(GATEWAY_DATABASE_URL=database_url)
    code, out, err = await run_command("reindex", "--batch", "1000", env=env)
    assert code == 0, err
    assert out.startswith("indexed ") and int(out.split()[1]) >= 1, out
    # rich's bar, drawn once at its end when stderr is no terminal: every row counted.
    scanned = re.search(r"messages scanned\D+(\d+)/(\d+)", err)
    assert scanned and scanned.group(1) == scanned.group(2) != "0", err
    assert [r["session_id"] for r in await found(http, "quokka")] == [str(session_id)]
    code, out, err = await run_command("reindex", env=env)
    assert (code, out.strip()) == (0, "indexed 0 message(s) for search"), err


async def test_indexer_catches_up_when_entries_were_trimmed_unread(
    db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    """Entries trimmed before the indexer read them make it catch up on the rows they named."""
    keys = Keys(f"t{uuid.uuid4().hex[:10]}:")
    indexer = Indexer(db, redis, keys, IndexerConfig(block_ms=20))
    assert await indexer.ensure_group() is True
    await redis.delete(f"{keys.index_stream}:catch-up")  # as if the first catch-up completed
    user = f"u{uuid.uuid4().hex[:10]}"
    session_id = await insert_unindexed(db, user, "numbat burrow")
    await redis.xadd(keys.index_stream, {"k": orjson.dumps([[str(session_id), 1]])})
    await redis.xtrim(keys.index_stream, maxlen=0)  # the writer's cap, with nobody reading
    try:
        async with indexer.running():
            assert indexer.catching_up
            await asyncio.wait_for(indexer.wait_idle(), 15)
        async with db.acquire() as conn:
            [hit] = (await search(conn, user, "numbat")).messages
        assert hit.session_id == session_id and hit.snippet == "numbat burrow"
    finally:
        await redis.delete(keys.index_stream)


async def test_indexer_recreates_a_lost_stream_and_catches_up(
    db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    """A vanished index stream is recreated and caught up; a stray entry is skipped."""
    keys = Keys(f"t{uuid.uuid4().hex[:10]}:")
    indexer = Indexer(db, redis, keys, IndexerConfig(block_ms=20))
    user = f"u{uuid.uuid4().hex[:10]}"
    try:
        async with indexer.running():
            await asyncio.wait_for(indexer.wait_idle(), 15)
            # A row whose index entry goes with the stream: in PostgreSQL before the stream
            # vanishes. (Inserted after, it raced the indexer: Redis unblocks its read at the
            # deletion, and a recreate and catch-up done before the insert never saw the row.)
            lost = await insert_unindexed(db, user, "echidna spines")
            await redis.delete(keys.index_stream)
            fresh = await insert_unindexed(db, user, "echidna eggs")
            await redis.xadd(keys.index_stream, {"k": b"not json"})
            await redis.xadd(keys.index_stream, {"k": orjson.dumps([[str(fresh), 1]])})
            await asyncio.wait_for(indexer.wait_idle(), 15)
        async with db.acquire() as conn:
            hits = (await search(conn, user, "echidna")).messages
        assert {hit.session_id for hit in hits} == {lost, fresh}
    finally:
        await redis.delete(keys.index_stream, f"{keys.index_stream}:catch-up")


async def test_indexer_waits_while_the_writer_is_behind(
    db: asyncpg.Pool, redis: aioredis.Redis
) -> None:
    """The indexer yields while the writer is behind and indexes once it has caught up."""
    keys = Keys(f"t{uuid.uuid4().hex[:10]}:")
    indexer = Indexer(db, redis, keys, IndexerConfig(block_ms=20))
    await indexer.ensure_group()
    await redis.delete(f"{keys.index_stream}:catch-up")
    user = f"u{uuid.uuid4().hex[:10]}"
    session_id = await insert_unindexed(db, user, "wallaby hop")
    await redis.xadd(keys.stream, {"r": "stuck"}, id="1-1")  # written in 1970: far behind
    await redis.xadd(keys.index_stream, {"k": orjson.dumps([[str(session_id), 1]])})
    try:
        assert await indexer.writer_behind()
        async with indexer.running():
            await redis.delete(keys.stream)  # the writer caught up
            assert not await indexer.writer_behind()
            await asyncio.wait_for(indexer.wait_idle(), 15)
        async with db.acquire() as conn:
            assert [h.session_id for h in (await search(conn, user, "wallaby")).messages] == [
                session_id
            ]
    finally:
        await redis.delete(keys.stream, keys.index_stream)


def test_positive_terms_leave_out_negated_words() -> None:
    """Highlighting marks a query's words except those under a `!` (alone or grouped)."""
    assert positive_terms("'a' & !'b' & !( 'c' <-> 'd' ) & 'it''s'") == ["it's", "a"]
    assert positive_terms("'a' | 'bb'") == ["bb", "a"]
    assert positive_terms("") == []


def test_snippet_is_a_window_around_the_best_cluster() -> None:
    """The snippet centres on the most distinct terms, collapses spaces, marks whole words."""
    text = "alpha " + "x " * 300 + "alpha\n\nbeta gamma " + "y " * 300 + "betas"
    cut, spans = snippet(text, ["beta", "alpha", "gamma"])
    assert cut.startswith("…") and cut.endswith("…") and "\n" not in cut
    assert [cut[s:e] for s, e in spans] == ["alpha", "beta", "gamma"]
    assert snippet("short text", ["zzz"]) == ("short text", [])
