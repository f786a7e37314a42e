"""`chat-gateway import` (issue 17, point 4): chat files into archived sessions, idempotently,
one transaction a chat, searchable, counters right, and live ingest on top of them afterwards.

The docs' samples (docs/samples/) are the fixtures: a chat file, a JSON Lines transcript and a
ChatGPT export. Most tests call the import in process against the suite's database, each as
its own user (the settings fixture's); a few run the real command.
"""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from gateway.chat_import import Options, Summary, chat_files, import_files, verify_files
from gateway.settings import Settings
from storage import stats
from storage.keys import Keys
from storage.transfer import imported_session_id
from tests.conftest import (
    ROOT,
    RunningGateway,
    drained,
    migrated_database,
    request,
)
from tests.processes import command_env, run_command

SAMPLES = ROOT / "docs" / "samples"
CHAT_FILE = SAMPLES / "chats" / "settings-refactor.json"
TRANSCRIPT = SAMPLES / "transcript.jsonl"
CHATGPT = SAMPLES / "conversations.json"
TIMEOUT = 15.0


@dataclass
class Run:
    summary: Summary
    reports: list[str]


async def run_import(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    settings: Settings,
    path: Path,
    *,
    verify: bool = False,
    **options: Any,
) -> Run:
    """The import (or with `verify`, the comparison) of `path` as the settings' local user,
    in process; its summary and reports."""
    reports: list[str] = []
    files, others = chat_files(path)
    run = verify_files if verify else import_files
    summary = await run(
        pool,
        redis,
        Keys(settings.key_prefix),
        files,
        Options(default_user=settings.local_user, **options),
        reports.append,
        lambda done, total=None: None,
    )
    summary.other_files = others
    return Run(summary, reports)


async def user_sessions(pool: asyncpg.Pool, user: str) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT * FROM sessions WHERE user_id = $1 ORDER BY created_at", user)


async def session_rows(pool: asyncpg.Pool, session_id: uuid.UUID) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT * FROM messages WHERE session_id = $1 ORDER BY seq", session_id)


def samples_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "samples"
    shutil.copytree(SAMPLES, folder)
    return folder


async def test_each_sample_format_imports_as_archived_sessions_in_order(
    db: asyncpg.Pool, redis: aioredis.Redis, settings: Settings
) -> None:
    """The samples' chat file, transcript and ChatGPT export land as archived sessions with
    their messages in order, their times, roles, content types, client ids and metadata."""
    run = await run_import(db, redis, settings, SAMPLES)
    assert run.reports == []
    assert (run.summary.files, run.summary.created, run.summary.messages) == (3, 4, 15)
    assert run.summary.blank == 1  # ChatGPT's hidden, empty system message
    found = {s["title"]: s for s in await user_sessions(db, settings.local_user)}
    assert set(found) == {
        "Split the settings loader",
        "Why is the upload test flaky?",
        "Regex for ISO dates",
        "Plot a histogram",
    }
    assert {s["status"] for s in found.values()} == {"archived"}
    chat = found["Split the settings loader"]
    assert chat["id"] == imported_session_id(settings.local_user, "cursor-2025-11-03-settings")
    assert (chat["port"], chat["ide_type"], chat["message_count"]) == (9222, "cursor", 4)
    assert chat["created_at"].isoformat() == "2025-11-03T09:14:00+00:00"
    assert chat["last_message_at"].isoformat() == "2025-11-03T09:15:09+00:00"
    assert chat["auto_title"].startswith("How do I split `load_settings`")
    assert chat["preview"].startswith("That is it.") and chat["preview_role"] == "assistant"
    rows = await session_rows(db, chat["id"])
    assert [(r["seq"], r["role"], r["client_id"], r["source"]) for r in rows] == [
        (1, "user", "turn-1", "import"),
        (2, "assistant", "turn-2", "import"),
        (3, "user", "turn-3", "import"),
        (4, "assistant", "turn-4", "import"),
    ]
    assert rows[2]["content_type"] == "code" and rows[0]["content_type"] == "markdown"
    assert json.loads(rows[1]["metadata"]) == {"model": "claude-sonnet-4", "tokens": 61}
    assert rows[0]["client_ts"] == rows[0]["created_at"]
    assert rows[0]["created_at"].isoformat() == "2025-11-03T09:14:05+00:00"
    transcript = found["Why is the upload test flaky?"]
    assert (transcript["port"], transcript["ide_type"]) == (9232, "vscode")
    assert transcript["created_at"].isoformat() == "2025-11-04T15:02:00+00:00"
    regex = found["Regex for ISO dates"]
    assert (regex["port"], regex["ide_type"]) == (1, "chatgpt")
    contents = [r["content"] for r in await session_rows(db, regex["id"])]
    assert "A first answer, regenerated away." not in contents  # not the branch shown
    assert contents[2] == "[image]\n\nDoes it match the date in this screenshot?"
    plot = await session_rows(db, found["Plot a histogram"]["id"])
    assert [(r["role"], r["content_type"]) for r in plot] == [
        ("user", "markdown"),
        ("assistant", "code"),
        ("tool", "text"),
        ("assistant", "markdown"),
    ]


async def test_a_second_run_adds_nothing(
    db: asyncpg.Pool, redis: aioredis.Redis, settings: Settings
) -> None:
    """Importing the same files again creates no session and adds no message."""
    await run_import(db, redis, settings, SAMPLES)
    before = await db.fetchval(
        "SELECT count(*) FROM messages WHERE user_id = $1", settings.local_user
    )
    again = await run_import(db, redis, settings, SAMPLES)
    assert again.reports == []
    assert (again.summary.created, again.summary.appended, again.summary.messages) == (0, 0, 0)
    assert again.summary.unchanged == 4
    after = await db.fetchval(
        "SELECT count(*) FROM messages WHERE user_id = $1", settings.local_user
    )
    assert after == before == 15


async def test_messages_appended_to_a_file_are_added_alone(
    db: asyncpg.Pool, redis: aioredis.Redis, settings: Settings, tmp_path: Path
) -> None:
    """After lines are appended to a transcript, a run adds exactly those, as the next seqs,
    and keeps the session's counters and preview in step."""
    path = tmp_path / "transcript.jsonl"
    shutil.copy(TRANSCRIPT, path)
    await run_import(db, redis, settings, path)
    sid = imported_session_id(settings.local_user, "vscode-flaky-test")
    originals = {r["seq"]: r["id"] for r in await session_rows(db, sid)}
    with path.open("a") as f:
        f.write('{"role": "assistant", "content": "Then wait on the port being open."}\n')
        f.write('{"role": "user", "content": "Done, 200 runs green.", "timestamp": 1762270000}\n')
    run = await run_import(db, redis, settings, path)
    assert (run.summary.appended, run.summary.messages) == (1, 2)
    rows = await session_rows(db, sid)
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5]
    assert {r["seq"]: r["id"] for r in rows[:3]} == originals  # the first three untouched
    assert rows[3]["created_at"] == rows[2]["created_at"]  # no time: the previous message's
    session = await db.fetchrow("SELECT * FROM sessions WHERE id = $1", sid)
    assert session is not None
    assert session["message_count"] == 5 and session["preview"] == "Done, 200 runs green."
    assert session["last_message_at"] == rows[4]["created_at"]
    assert (await run_import(db, redis, settings, path)).summary.messages == 0


async def test_bad_files_and_chats_are_skipped_with_the_reason_and_nothing_of_them_written(
    db: asyncpg.Pool, redis: aioredis.Redis, settings: Settings, tmp_path: Path
) -> None:
    """A file that is not JSON, one of the wrong shape, and a chat whose third message breaks a
    rule are reported with the reason; nothing of them is written, the good chat goes in."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(CHAT_FILE, folder / "good.json")
    (folder / "broken.json").write_text('{"id": "x", "messages": [')
    (folder / "shape.json").write_text('"just a string"')
    (folder / "notes.txt").write_text("not a chat")
    bad = {
        "id": "half",
        "messages": [
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "two"},
            {"role": "robot", "content": "three"},
        ],
    }
    nul = {"id": "nul", "messages": [{"role": "user", "content": "a\u0000b"}]}
    (folder / "chats.json").write_text(json.dumps([bad, nul]))
    lines = '{"role": "user", "content": "fine"}\n{"role": "user", "content": 5}\n'
    (folder / "broken.jsonl").write_text(lines)
    run = await run_import(db, redis, settings, folder)
    assert run.summary.created == 1 and run.summary.messages == 4
    assert (run.summary.files, run.summary.files_skipped, run.summary.other_files) == (5, 3, 1)
    assert run.summary.chats_skipped == 2
    report = "\n".join(run.reports)
    assert f"skipped {folder / 'broken.json'}: not valid JSON" in report
    assert f"skipped {folder / 'shape.json'}: not a JSON object or array" in report
    assert f"skipped {folder / 'chats.json'}[0]: " in report and "messages[2].role" in report
    assert "[1] (chat nul): messages[0].content must not contain the NUL character" in report
    assert f"skipped {folder / 'broken.jsonl'}: line 2: " in report
    assert not run.summary.clean
    titles = [s["title"] for s in await user_sessions(db, settings.local_user)]
    assert titles == ["Split the settings loader"]
    for chat_id in ("half", "nul", "broken"):
        sid = imported_session_id(settings.local_user, chat_id)
        assert await session_rows(db, sid) == []


async def test_a_chat_whose_history_changed_is_refused_not_appended(
    db: asyncpg.Pool, redis: aioredis.Redis, settings: Settings, tmp_path: Path
) -> None:
    """When a message before the last stored one changed and others were appended, the run
    refuses the chat (naming --verify) and adds nothing of it."""
    path = tmp_path / "chat.json"
    chat = json.loads(CHAT_FILE.read_text())
    path.write_text(json.dumps(chat))
    await run_import(db, redis, settings, path)
    chat["messages"].insert(1, {"role": "user", "content": "an inserted message"})
    path.write_text(json.dumps(chat))
    run = await run_import(db, redis, settings, path)
    assert run.summary.chats_skipped == 1 and run.summary.messages == 0
    assert "message 4 differs from the one stored" in run.reports[0]
    assert "--verify" in run.reports[0]
    sid = imported_session_id(settings.local_user, "cursor-2025-11-03-settings")
    assert len(await session_rows(db, sid)) == 4


async def test_repeated_messages_without_ids_are_all_kept(
    db: asyncpg.Pool, redis: aioredis.Redis, settings: Settings, tmp_path: Path
) -> None:
    """Two identical messages without ids or times are two messages (their dedup keys
    differ), while a client id given twice makes the chat a broken one."""
    path = tmp_path / "ok.jsonl"
    path.write_text('{"role": "user", "content": "ok"}\n' * 3)
    run = await run_import(db, redis, settings, path)
    assert run.summary.messages == 3
    keys = {
        r["dedup_key"]
        for r in await session_rows(db, imported_session_id(settings.local_user, "ok"))
    }
    assert len(keys) == 3
    twice = tmp_path / "twice.jsonl"
    line = '{{"role": "user", "content": "{}", "id": "m1"}}\n'
    twice.write_text(line.format("a") + line.format("b"))
    run = await run_import(db, redis, settings, twice)
    assert run.summary.chats_skipped == 1
    assert "message id 'm1' is given twice (messages 1 and 2)" in run.reports[0]


async def test_dry_run_writes_nothing_and_says_what_it_would_add(
    db: asyncpg.Pool, redis: aioredis.Redis, settings: Settings
) -> None:
    """--dry-run counts the sessions and messages a run would add, and leaves the database
    (sessions, messages, counters) as it was."""
    run = await run_import(db, redis, settings, SAMPLES, dry_run=True)
    assert (run.summary.created, run.summary.messages) == (4, 15)
    assert "would be created" in run.summary.lines(dry_run=True)[1]
    assert await user_sessions(db, settings.local_user) == []
    assert (
        await db.fetchval("SELECT count(*) FROM messages WHERE user_id = $1", settings.local_user)
        == 0
    )
    assert (
        await db.fetchrow("SELECT * FROM user_stats WHERE user_id = $1", settings.local_user)
        is None
    )


async def test_verify_reports_a_change_in_the_database_and_one_in_the_file(
    db: asyncpg.Pool, redis: aioredis.Redis, settings: Settings, tmp_path: Path
) -> None:
    """--verify finds the imported files in agreement, then names the message whose content
    was changed in the database, and the file's edited and added messages."""
    folder = samples_copy(tmp_path)
    await run_import(db, redis, settings, folder)
    clean = await run_import(db, redis, settings, folder, verify=True)
    assert clean.reports == [] and (clean.summary.agreeing, clean.summary.differing) == (4, 0)
    sid = imported_session_id(settings.local_user, "vscode-flaky-test")
    await db.execute(
        "UPDATE messages SET content = 'changed' WHERE session_id = $1 AND seq = 2", sid
    )
    changed = await run_import(db, redis, settings, folder, verify=True)
    assert changed.summary.differing == 1
    assert changed.reports == [
        f"differs {folder / 'transcript.jsonl'} (chat vscode-flaky-test): message 2: content differ"
    ]
    path = folder / "chats" / "settings-refactor.json"
    chat = json.loads(path.read_text())
    chat["messages"][0]["content"] = "edited in the file"
    chat["messages"].append({"role": "user", "content": "one more"})
    path.write_text(json.dumps(chat))
    edited = await run_import(db, redis, settings, folder, verify=True)
    assert edited.summary.differing == 2
    label = f"differs {path} (chat cursor-2025-11-03-settings)"
    assert f"{label}: message 1: content differ" in edited.reports
    assert f"{label}: 1 of the file's messages are not in the database" in edited.reports


async def test_counters_stay_right_and_verify_counts_finds_no_drift(
    server_database_url: str, redis: aioredis.Redis, settings: Settings, tmp_path: Path
) -> None:
    """After an import and an appending run, into a database of its own, every session and
    user counter agrees with the rows (verify-counts reports no drift)."""
    async with migrated_database(server_database_url, "cg_import") as url:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=3)
        try:
            path = tmp_path / "transcript.jsonl"
            shutil.copy(TRANSCRIPT, path)
            await run_import(pool, redis, settings, SAMPLES)
            with path.open("a") as f:
                f.write('{"role": "assistant", "content": "appended"}\n')
            await run_import(pool, redis, settings, path)
            async with pool.acquire() as conn:
                drift = await stats.verify(conn, fix=False)
                counted = await stats.read(conn, settings.local_user)
            assert drift.clean, drift
            assert drift.sessions_checked == 4
            assert counted == stats.Stats(sessions_active=0, sessions_archived=4, messages=16)
        finally:
            await pool.close()


async def test_imported_messages_are_found_by_search(
    gateway: RunningGateway, http: httpx.AsyncClient, redis: aioredis.Redis
) -> None:
    """An imported message is found by GET /api/search at once: the import indexes it."""
    running = gateway
    await run_import(running.gateway.pool, redis, running.settings, SAMPLES)
    response = await http.get("/api/search", params={"q": "histogram ages"})
    assert response.status_code == 200, response.text
    hits = response.json()["results"]
    assert [h["session_title"] for h in hits][:1] == ["Plot a histogram"]
    sid = imported_session_id(running.settings.local_user, "6729f1a0-2222-8000-9000-000000000002")
    assert hits[0]["session_id"] == str(sid)


async def test_live_messages_after_an_unarchive_take_the_next_seq(
    gateway: RunningGateway, http: httpx.AsyncClient, redis: aioredis.Redis, tmp_path: Path
) -> None:
    """An imported session, unarchived, takes a live message on its port as seq n + 1, and
    appending to it is refused while it is active."""
    running = gateway
    await run_import(running.gateway.pool, redis, running.settings, CHAT_FILE)
    sid = imported_session_id(running.settings.local_user, "cursor-2025-11-03-settings")
    response = await http.patch(f"/api/sessions/{sid}", json={"status": "active"})
    assert response.status_code == 200 and response.json()["status"] == "active"
    chat = json.loads(CHAT_FILE.read_text())
    chat["messages"] += [{"role": "user", "content": "imported later"}]
    longer = tmp_path / "longer.json"
    longer.write_text(json.dumps(chat))
    pool = running.gateway.pool
    refused = await run_import(pool, redis, running.settings, longer)
    assert refused.summary.chats_skipped == 1
    assert "its session is active: archive it to import more into it" in refused.reports[0]
    async with running.connect() as ws:
        ack = await request(ws, {"type": "message", "port": 9222, "content": "live, after"})
        again = await request(
            ws, {"type": "message", "port": 9222, "id": "turn-2", "content": "resent"}
        )
    assert ack["type"] == "ack" and ack["session_id"] == str(sid), ack
    assert ack["results"][0]["seq"] == 5
    assert again["results"][0]["seq"] == 2 and again["results"][0]["updated"]  # an edit of 2
    await drained(running)
    rows = await session_rows(pool, sid)
    assert [(r["seq"], r["source"]) for r in rows][-2:] == [(4, "import"), (5, "user_input")]
    assert rows[1]["content"] == "resent"
    assert await pool.fetchval("SELECT message_count FROM sessions WHERE id = $1", sid) == 5


async def test_active_makes_each_ports_newest_chat_active_where_it_has_none(
    db: asyncpg.Pool, redis: aioredis.Redis, settings: Settings, tmp_path: Path
) -> None:
    """--active makes the newest imported chat of each port its active session; a port that
    already has an active session keeps it."""
    folder = tmp_path / "two"
    folder.mkdir()
    for n, day in ((1, "01"), (2, "02")):
        chat = {
            "id": f"c{n}",
            "port": 9281,
            "messages": [
                {"role": "user", "content": f"chat {n}", "timestamp": f"2025-01-{day}T00:00:00Z"}
            ],
        }
        (folder / f"c{n}.json").write_text(json.dumps(chat))
    (folder / "c3.json").write_text(json.dumps({"id": "c3", "port": 9282, "messages": []}))
    await db.execute(
        "INSERT INTO sessions (id, user_id, port, ide_type) VALUES ($1, $2, 9282, 'x')",
        uuid.uuid4(),
        settings.local_user,
    )
    run = await run_import(db, redis, settings, folder, active=True)
    assert run.summary.activated == 1
    status = {s["id"]: s["status"] for s in await user_sessions(db, settings.local_user)}
    user = settings.local_user
    assert status[imported_session_id(user, "c2")] == "active"
    assert status[imported_session_id(user, "c1")] == "archived"
    assert status[imported_session_id(user, "c3")] == "archived"
    cached = await redis.get(Keys(settings.key_prefix).active(user, 9281))
    assert cached == str(imported_session_id(user, "c2")).encode()


def command_env_for(settings: Settings) -> dict[str, str]:
    """The environment that points `chat-gateway` at the test's servers, prefix and user."""
    return command_env(
        GATEWAY_DATABASE_URL=settings.database_url,
        GATEWAY_REDIS_URL=settings.redis_url,
        GATEWAY_KEY_PREFIX=settings.key_prefix,
        GATEWAY_LOCAL_USER=settings.local_user,
    )


async def test_the_command_prints_a_summary_and_reports_skips_with_exit_1(
    settings: Settings, tmp_path: Path
) -> None:
    """`chat-gateway import` shows the summary on stdout, each skip on stderr, and exits 1
    when something was skipped; --dry-run says it wrote nothing; --verify exits 0 once the
    files agree."""
    folder = samples_copy(tmp_path)
    (folder / "broken.json").write_text("{")
    code, out, err = await run_command(
        "import", "--dry-run", str(folder), env=command_env_for(settings)
    )
    assert code == 1, err
    assert out.splitlines() == [
        "files: 4 read, 1 skipped",
        "sessions: 4 would be created, 0 would be appended to, 0 unchanged, 0 skipped",
        "messages: 15 would be added, 1 blank ones skipped",
        "dry run: nothing was written",
    ]
    assert f"skipped {folder / 'broken.json'}: not valid JSON" in err
    (folder / "broken.json").unlink()
    code, out, err = await run_command("import", str(folder), env=command_env_for(settings))
    assert code == 0, err
    assert "sessions: 4 created, 0 appended to, 0 unchanged, 0 skipped" in out
    code, out, err = await run_command(
        "import", "--verify", str(folder), env=command_env_for(settings)
    )
    assert code == 0, err
    assert "chats: 4 compared, 4 agree with the database, 0 differ, 0 skipped" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "chat-gateway: error: import needs PATH: a chat file or a folder of them"),
        (
            ("/no/such/folder",),
            "chat-gateway: error: PATH /no/such/folder: there is no such file or folder",
        ),
        (("--port", "0", "{samples}"), "chat-gateway: error: --port=0 must be from 1 to 65535"),
        (
            ("--verify", "--dry-run", "{samples}"),
            "chat-gateway: error: --verify only compares: it goes with neither --dry-run nor"
            " --active",
        ),
    ],
    ids=["no-path", "missing-path", "bad-port", "verify-dry-run"],
)
async def test_bad_arguments_are_one_line_and_exit_2(
    settings: Settings, args: tuple[str, ...], message: str
) -> None:
    """A wrong flag or PATH is one line on stderr and exit 2, before any server is used."""
    argv = [a.replace("{samples}", str(SAMPLES)) for a in args]
    code, out, err = await run_command("import", *argv, env=command_env_for(settings))
    assert (code, out, err.strip()) == (2, "", message)
