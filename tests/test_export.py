"""Export (issue 17, point 5): `GET /api/sessions/{id}/export` and `chat-gateway export` as a
Markdown transcript, the chat JSON the import reads, and an LLM message list; streamed in
pages; and the round trip: export, import into a fresh database, the same sessions and
messages."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from gateway.chat_import import chat_files
from gateway.settings import Settings
from storage.keys import Keys
from storage.messages import session_pages
from storage.transfer import imported_session_id
from tests.conftest import RunningGateway, drained, migrated_database, request
from tests.processes import run_command
from tests.test_import import command_env_for, run_import

PORT = 9260
TS = "2026-01-31T12:00:00Z"


async def seed(running: RunningGateway) -> tuple[str, str]:
    """Two sessions on PORT, committed: an archived one with every kind of message (client
    ids, timestamps, metadata, each content type, an edit) and a titled active one."""
    async with running.connect() as ws:
        first = await request(
            ws,
            {
                "type": "extracted",
                "port": PORT,
                "messages": [
                    {"id": "q1", "content": "Refactor `load()`?", "timestamp": TS},
                    {
                        "id": "a1",
                        "role": "assistant",
                        "content": "Yes:\n\n- split it\n- test it",
                        "content_type": "markdown",
                        "metadata": {"model": "m", "n": [1, 2.5, None]},
                    },
                    {"role": "tool", "content": "def load():\n    ```x```", "content_type": "code"},
                    {"role": "system", "content": '{"ok": true}', "content_type": "json"},
                    {"content": "plain\ntext"},
                ],
            },
        )
        edit = {"type": "message", "port": PORT, "id": "a1", "role": "assistant"}
        edit["content_type"] = "markdown"
        await request(ws, {**edit, "content": "Yes:\n\n- split it\n- test it\n- ship it"})
        await request(ws, {"type": "session.new", "port": PORT, "title": "Second: the tests"})
        second = await request(ws, {"type": "message", "port": PORT, "content": "And now?"})
    assert first["type"] == second["type"] == "ack", (first, second)
    await drained(running)
    return first["session_id"], second["session_id"]


async def test_markdown_export_is_a_transcript_download(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    """format=markdown (the default) is a text/markdown attachment named after the session:
    its name and facts, then each message under its role and time, code and JSON fenced."""
    archived, _ = await seed(gateway)
    response = await http.get(f"/api/sessions/{archived}/export")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/markdown; charset=utf-8"
    disposition = response.headers["content-disposition"]
    assert disposition == f'attachment; filename="refactor-load-{archived[:8]}.md"'
    text = response.text
    assert text.startswith("# Refactor `load()`?\n\n- Session: `" + archived + "`\n")
    assert f"- Port: {PORT} (unknown)\n" in text
    headings = re.findall(r"^## (\w+) · (.+)$", text, flags=re.MULTILINE)
    assert [role for role, _ in headings] == ["User", "Assistant", "Tool", "System", "User"]
    assert headings[0][1] == "2026-01-31 12:00:00 UTC"
    assert "- test it\n- ship it\n" in text  # the edited version
    assert "````\ndef load():\n    ```x```\n````\n" in text  # a fence longer than the content's
    assert '```json\n{"ok": true}\n```\n' in text
    assert "plain  \ntext\n" in text  # text keeps its line breaks


async def test_openai_export_is_the_role_and_content_list(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    """format=openai is a JSON list of {role, content}, in seq order, nothing else."""
    archived, _ = await seed(gateway)
    response = await http.get(f"/api/sessions/{archived}/export", params={"format": "openai"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-disposition"].endswith(f'-{archived[:8]}.openai.json"')
    assert response.json() == [
        {"role": "user", "content": "Refactor `load()`?"},
        {"role": "assistant", "content": "Yes:\n\n- split it\n- test it\n- ship it"},
        {"role": "tool", "content": "def load():\n    ```x```"},
        {"role": "system", "content": '{"ok": true}'},
        {"role": "user", "content": "plain\ntext"},
    ]


async def test_a_bad_format_is_a_400_naming_the_formats(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    """An unknown format is refused with the three allowed values, before any lookup."""
    response = await http.get(f"/api/sessions/{uuid.uuid4()}/export", params={"format": "pdf"})
    assert response.status_code == 400
    assert response.json() == {
        "error": {"code": "bad_request", "message": "format must be one of markdown, json, openai"}
    }


_SESSION_FIELDS = (
    "title, port, ide_type, pinned, message_count, last_message_at, created_at, auto_title,"
    " preview, preview_role"
)
_MESSAGE_FIELDS = (
    "seq, role, content, content_type, client_id, client_ts, created_at, edited_at,"
    " metadata, dedup_key"
)


async def _contents(pool: asyncpg.Pool, user: str) -> list[tuple[Any, list[Any]]]:
    """A user's sessions (oldest first) and their messages, less ids, status and source."""
    found = []
    for session in await pool.fetch(
        f"SELECT id, {_SESSION_FIELDS} FROM sessions WHERE user_id = $1 ORDER BY created_at",
        user,
    ):
        rows = await pool.fetch(
            f"SELECT {_MESSAGE_FIELDS} FROM messages WHERE session_id = $1 ORDER BY seq",
            session["id"],
        )
        found.append(
            (
                tuple(session.values())[1:],
                [
                    (*tuple(r.values())[:-2], json.loads(r["metadata"]), r["dedup_key"])
                    for r in rows
                ],
            )
        )
    return found


async def test_json_export_imported_into_a_fresh_database_gives_the_same_sessions(
    gateway: RunningGateway,
    http: httpx.AsyncClient,
    server_database_url: str,
    redis: aioredis.Redis,
    tmp_path: Path,
) -> None:
    """Each session exported as JSON and imported into another database has the same name,
    port, times, counters and previews, and the same messages field for field."""
    sessions = await seed(gateway)
    folder = tmp_path / "exported"
    folder.mkdir()
    for sid in sessions:
        response = await http.get(f"/api/sessions/{sid}/export", params={"format": "json"})
        assert response.status_code == 200, response.text
        assert response.json()["format"] == "chat-gateway.chat/1"
        (folder / f"{sid}.json").write_bytes(response.content)
    user = gateway.settings.local_user
    original = await _contents(gateway.gateway.pool, user)
    async with migrated_database(server_database_url, "cg_roundtrip") as url:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=3)
        try:
            # Its own key prefix and default user: the files name the user.
            fresh = Settings(
                database_url=url,
                redis_url=gateway.settings.redis_url,
                key_prefix=f"t{uuid.uuid4().hex[:10]}:",
                local_user="someone",
            )
            run = await run_import(pool, redis, fresh, folder)
            assert run.reports == [] and run.summary.created == 2
            assert await _contents(pool, user) == original
            statuses = await pool.fetch("SELECT status FROM sessions WHERE user_id = $1", user)
            assert {s["status"] for s in statuses} == {"archived"}
        finally:
            await pool.close()


async def test_a_long_session_exports_completely_a_page_at_a_time(
    gateway: RunningGateway, http: httpx.AsyncClient, redis: aioredis.Redis, tmp_path: Path
) -> None:
    """A session of 2,500 messages is read in pages of 1,000 and every message is in each
    format's export, in order."""
    path = tmp_path / "long.jsonl"
    path.write_text("".join(f'{{"role": "user", "content": "message {n}"}}\n' for n in range(2500)))
    await run_import(gateway.gateway.pool, redis, gateway.settings, path)
    sid = imported_session_id(gateway.settings.local_user, "long")
    keys = Keys(gateway.settings.key_prefix)
    sizes = [len(p) async for p in session_pages(gateway.gateway.pool, redis, keys, sid, 1000)]
    assert sizes == [1000, 1000, 500]
    url = f"/api/sessions/{sid}/export"
    chat = (await http.get(url, params={"format": "json"})).json()
    assert [m["content"] for m in chat["messages"]] == [f"message {n}" for n in range(2500)]
    listed = (await http.get(url, params={"format": "openai"})).json()
    assert len(listed) == 2500 and listed[-1] == {"role": "user", "content": "message 2499"}
    markdown = (await http.get(url)).text
    assert markdown.count("\n## User · ") == 2500 and markdown.endswith("message 2499\n")


async def test_the_command_exports_a_session_or_a_port(
    gateway: RunningGateway, db: asyncpg.Pool, redis: aioredis.Redis, tmp_path: Path
) -> None:
    """`chat-gateway export` writes one session to stdout, and a port's sessions, oldest
    first, as a JSON array of chats (which the import reads) or as JSON Lines of
    {"messages"} to --output."""
    archived, active = await seed(gateway)
    env = command_env_for(gateway.settings)
    code, out, err = await run_command("export", "--session", active, env=env)
    assert code == 0, err
    assert out.startswith("# Second: the tests\n") and "And now?" in out
    target = tmp_path / "port.json"
    code, out, err = await run_command(
        "export", "--port", str(PORT), "--format", "json", "--output", str(target), env=env
    )
    assert (code, out) == (0, ""), err
    chats = json.loads(target.read_text())
    assert [c["id"] for c in chats] == [archived, active]
    assert [len(c["messages"]) for c in chats] == [5, 1]
    files, _ = chat_files(target)
    assert files == [target]
    code, out, err = await run_command("export", "--port", str(PORT), "--format", "openai", env=env)
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [len(line["messages"]) for line in lines] == [5, 1]
    assert lines[1] == {"messages": [{"role": "user", "content": "And now?"}]}


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("--port", "1", "--session", "{sid}"), 2, "export needs one of --session ID or --port P"),
        ((), 2, "export needs one of --session ID or --port P"),
        (("--session", "nope"), 2, "--session='nope' is not a session id"),
        (("--session", "{sid}"), 1, "there is no session {sid}"),
    ],
    ids=["both", "neither", "not-an-id", "missing"],
)
async def test_export_errors_are_one_line(
    settings: Settings, args: tuple[str, ...], code: int, message: str
) -> None:
    """Both or neither of --session and --port, or a bad id, is one line and exit 2 before any
    server is used; a session that does not exist is one error line (after the log's lines
    naming the servers) and exit 1."""
    sid = str(uuid.uuid4())
    argv = [a.replace("{sid}", sid) for a in args]
    got, out, err = await run_command("export", *argv, env=command_env_for(settings))
    errors = [line for line in err.splitlines() if " INFO " not in line]
    assert (got, out, errors) == (code, "", [f"chat-gateway: error: {message.format(sid=sid)}"])
    assert code == 1 or err.count("\n") == 1
