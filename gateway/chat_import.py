"""`chat-gateway import`: chat files into sessions and messages, and `--verify` of them.

The files are read one at a time (gateway/chat_format.py reads every format into `Chat`s),
each chat is held to the gateway's rules, and written in its own transaction
(storage/transfer.py): a file that cannot be read, or a chat that breaks a rule or cannot go
in, is reported with the reason and skipped, and nothing of it is written. Chats are written
by `JOBS` tasks on a connection each, so reading and checking the next chats in Python
overlaps PostgreSQL's work on the last ones.

Which user and port a chat lands on: `--user`, else the file's `user`, else the local user;
the file's `port`, else `--port`. Its IDE type: the file's, else the port's (as for live
messages), else `imported` for chats on the default port. Its times: each message's
`created_at`, else its `timestamp`, else the previous message's; the chat's `created_at`, else
its first message's; the time of the run where a file gives none.

`--verify` reads the same files and compares each chat with its session, message by message
(role, content, content type, client id, timestamp, metadata, and the time stored where the
file gives one), and says what differs: a file whose history changed, a message edited in
the gateway, messages the file has and the database not, or the other way round.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import orjson
import redis.asyncio as aioredis

from gateway.chat_format import (
    SUFFIXES,
    Chat,
    Checked,
    CheckedMessage,
    FormatError,
    Limits,
    check,
    read_chats,
)
from gateway.progress import Done
from gateway.settings import Settings
from gateway.wire import ide_type_for_port
from storage import sessions, transfer
from storage.events import session_event
from storage.keys import Keys
from storage.messages import Message, session_pages
from storage.transfer import ImportedMessage, ImportedSession, Outcome, Refused

DEFAULT_PORT = 1  # where chats that name no port land (`--port` changes it)
DEFAULT_IDE_TYPE = "imported"  # the IDE type of chats on the default port
JOBS = 2  # chats written at once, each on its own connection
VERIFY_PAGE = 1000  # stored messages read per query by --verify
MAX_DIFFERENCES = 10  # lines --verify prints per chat (and how many more there were)


@dataclass(frozen=True, slots=True)
class Options:
    default_user: str  # the local user: chats whose file names none, without --user
    user: str | None = None  # --user: every chat's
    port: int = DEFAULT_PORT
    dry_run: bool = False
    active: bool = False
    limits: Limits = field(
        default_factory=lambda: Limits(Settings.max_content_bytes, Settings.max_metadata_bytes)
    )


@dataclass(slots=True)
class Summary:
    """What a run did (or, dry, would do), and the reports it made."""

    files: int = 0
    files_skipped: int = 0
    other_files: int = 0  # in the folder, but not .json, .jsonl or .ndjson
    created: int = 0
    appended: int = 0
    unchanged: int = 0
    chats_skipped: int = 0
    messages: int = 0
    blank: int = 0  # blank messages, skipped
    activated: int = 0
    differing: int = 0  # --verify: chats that differ from the database
    agreeing: int = 0  # --verify: chats that agree

    @property
    def clean(self) -> bool:
        return not (self.files_skipped or self.chats_skipped or self.differing)

    def lines(self, *, dry_run: bool = False, verify: bool = False) -> list[str]:
        files = f"files: {self.files} read, {self.files_skipped} skipped"
        if self.other_files:
            files += f", {self.other_files} others ignored"
        if verify:
            chats = self.agreeing + self.differing + self.chats_skipped
            return [
                files,
                f"chats: {chats} compared, {self.agreeing} agree with the database,"
                f" {self.differing} differ, {self.chats_skipped} skipped",
            ]
        would = "would be " if dry_run else ""
        session_line = (
            f"sessions: {self.created} {would}created, {self.appended} {would}appended to,"
            f" {self.unchanged} unchanged, {self.chats_skipped} skipped"
        )
        if self.activated:
            session_line += f", {self.activated} made active"
        lines = [
            files,
            session_line,
            f"messages: {self.messages} {would}added, {self.blank} blank ones skipped",
        ]
        if dry_run:
            lines.append("dry run: nothing was written")
        return lines


def chat_files(path: Path) -> tuple[list[Path], int]:
    """The chat files at `path` (itself, or the folder's, recursively, by name; hidden ones
    left out) and how many other files the folder holds."""
    if path.is_file():
        return [path], 0
    found, others = [], 0
    for child in sorted(path.rglob("*")):
        if any(part.startswith(".") for part in child.relative_to(path).parts):
            continue
        if child.is_file():
            if child.name.lower().endswith(SUFFIXES):
                found.append(child)
            else:
                others += 1
    return found, others


@dataclass(frozen=True, slots=True)
class _Chat:
    label: str  # how reports name it: the file, its place in the file, its id
    checked: Checked
    session: ImportedSession
    messages: list[ImportedMessage]


Report = Callable[[str], None]
_ChatKey = tuple[str, str]  # (user, chat id): a chat read twice in a run is read once


class _Reader:
    """The chats of the files, held to the rules; what cannot be read is reported, counted
    and skipped. Keeps the progress bar's count of chats (its total grows as files turn out
    to hold several)."""

    def __init__(
        self, files: list[Path], options: Options, summary: Summary, report: Report, done: Done
    ) -> None:
        self._files = files
        self._options = options
        self._summary = summary
        self._report = report
        self._done = done
        self._total = len(files)
        self.finished = 0
        self._now = datetime.now(UTC)
        self._seen: dict[_ChatKey, str] = {}

    def tick(self) -> None:
        self.finished += 1
        self._done(self.finished)

    def __iter__(self) -> Iterator[_Chat]:
        for path in self._files:
            self._summary.files += 1
            try:
                items = read_chats(path.name, path.read_bytes())
            except (OSError, FormatError) as exc:
                self._summary.files_skipped += 1
                self._report(f"skipped {path}: {exc}")
                self.tick()
                continue
            if len(items) != 1:
                self._total += len(items) - 1
                self._done(self.finished, self._total)
            for item in items:
                label = f"{path}{item.where}"
                chat = self._prepare(label, item.chat, item.error)
                if chat is None:
                    self.tick()
                else:
                    yield chat

    def _prepare(self, label: str, chat: Chat | None, error: str | None) -> _Chat | None:
        if chat is None:
            self.skip(label, error or "unreadable")
            return None
        label = f"{label} (chat {chat.id})"
        try:
            checked = check(chat, self._options.limits)
        except FormatError as exc:
            self.skip(label, str(exc))
            return None
        session, messages = prepared(checked, self._options, self._now)
        key = (session.user_id, checked.chat_id)
        if key in self._seen:
            self.skip(label, f"the same chat as {self._seen[key]}: read once")
            return None
        self._seen[key] = label
        self._summary.blank += checked.blank
        return _Chat(label, checked, session, messages)

    def skip(self, label: str, reason: str) -> None:
        self._summary.chats_skipped += 1
        self._report(f"skipped {label}: {reason}")


def prepared(
    checked: Checked, options: Options, now: datetime
) -> tuple[ImportedSession, list[ImportedMessage]]:
    """The session and messages a checked chat becomes (see the module docstring)."""
    chat = checked.chat
    user = options.user or chat.user or options.default_user
    port = chat.port or options.port
    ide_type = chat.ide_type or (
        ide_type_for_port(port) if chat.port or options.port != DEFAULT_PORT else DEFAULT_IDE_TYPE
    )
    times = (m.created_at or m.timestamp for m in checked.messages)
    first = next((t for t in times if t is not None), None)
    created = checked.created_at or first or now
    messages = []
    previous = created
    for m in checked.messages:
        at = m.created_at or m.timestamp or previous
        previous = at
        messages.append(
            ImportedMessage(
                m.role, m.content, m.content_type, m.client_id, m.timestamp, at, m.edited_at,
                m.metadata_json,
            )
        )  # fmt: skip
    title = chat.title.strip() if chat.title else None
    session = ImportedSession(
        transfer.imported_session_id(user, checked.chat_id),
        user,
        port,
        ide_type,
        title or None,
        chat.pinned,
        created,
    )
    return session, messages


async def import_files(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    keys: Keys,
    files: list[Path],
    options: Options,
    report: Report,
    done: Done,
    *,
    jobs: int = JOBS,
    write_rows: transfer.RowsWriter = transfer.copy_rows,
) -> Summary:
    """Import the files' chats (see the module docstring); `write_rows` is how rows go in
    (bench/ measures one INSERT per row against the COPY)."""
    summary = Summary()
    reader = _Reader(files, options, summary, report, done)
    created: dict[tuple[str, int], tuple[datetime, ImportedSession]] = {}

    async def write(chat: _Chat) -> None:
        try:
            async with pool.acquire() as conn:
                written = await transfer.write_chat(
                    conn, redis, keys, chat.session, chat.messages,
                    dry_run=options.dry_run, write_rows=write_rows,
                )  # fmt: skip
        except Refused as exc:
            reader.skip(chat.label, str(exc))
            return
        except (
            asyncpg.DataError,
            asyncpg.IntegrityConstraintViolationError,
            asyncpg.ProgramLimitExceededError,  # a message too long to index, say
        ) as exc:
            reader.skip(chat.label, f"PostgreSQL refused it: {exc}")
            return
        finally:
            reader.tick()
        summary.messages += written.added
        if written.outcome is Outcome.CREATED:
            summary.created += 1
            last = chat.messages[-1].created_at if chat.messages else chat.session.created_at
            place = (chat.session.user_id, chat.session.port)
            if place not in created or created[place][0] < last:
                created[place] = (last, chat.session)
        elif written.outcome is Outcome.APPENDED:
            summary.appended += 1
        else:
            summary.unchanged += 1

    await _run(reader, write, jobs)
    if options.active and not options.dry_run:
        for (user, port), (_, session) in sorted(created.items()):
            if await _activate(pool, redis, keys, user, port, session):
                summary.activated += 1
    return summary


async def _run(reader: _Reader, work: Callable[[_Chat], Awaitable[None]], jobs: int) -> None:
    """`work` on every chat the reader yields, `jobs` at a time. Bounded: the reader waits
    while `jobs` chats are in flight, so at most that many are held in memory."""
    slots = asyncio.Semaphore(jobs)
    tasks: set[asyncio.Task[None]] = set()

    async def one(chat: _Chat) -> None:
        try:
            await work(chat)
        finally:
            slots.release()

    try:
        for chat in reader:
            await slots.acquire()
            task = asyncio.create_task(one(chat))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            # A failure (PostgreSQL down) stops the run at once instead of reading on.
            for finished in [t for t in tasks if t.done()]:
                finished.result()
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)


async def _activate(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    keys: Keys,
    user: str,
    port: int,
    session: ImportedSession,
) -> bool:
    """`--active`: the port's newest imported chat becomes its active session if the port
    has none; announced to the user's tabs like an unarchive."""
    async with pool.acquire() as conn:
        active = await transfer.activate(conn, user, port, session.id)
    if active is None:
        return False
    await redis.set(keys.active(user, port), str(session.id))
    event = session_event("updated", active, activated=True)
    await redis.publish(keys.user_channel(user), event)
    return True


async def verify_files(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    keys: Keys,
    files: list[Path],
    options: Options,
    report: Report,
    done: Done,
) -> Summary:
    """Compare the files' chats with the database; each difference is reported."""
    summary = Summary()
    reader = _Reader(files, options, summary, report, done)

    async def compare(chat: _Chat) -> None:
        try:
            differences = await _differences(pool, redis, keys, chat)
        finally:
            reader.tick()
        if not differences:
            summary.agreeing += 1
            return
        summary.differing += 1
        for line in differences[:MAX_DIFFERENCES]:
            report(f"differs {chat.label}: {line}")
        if len(differences) > MAX_DIFFERENCES:
            report(f"differs {chat.label}: and {len(differences) - MAX_DIFFERENCES} more")

    await _run(reader, compare, JOBS)
    return summary


async def _differences(
    pool: asyncpg.Pool, redis: aioredis.Redis, keys: Keys, chat: _Chat
) -> list[str]:
    session = chat.session
    async with pool.acquire() as conn:
        stored = await sessions.get_session(conn, session.user_id, session.id)
    if stored is None:
        return [f"not in the database (session {session.id} of user {session.user_id})"]
    found = []
    if stored.port != session.port:
        found.append(f"port {stored.port} in the database, {session.port} in the file")
    if stored.title != session.title:
        found.append(f"title {stored.title!r} in the database, {session.title!r} in the file")
    expected = chat.messages
    seen = extra = 0
    async for page in session_pages(pool, redis, keys, session.id, VERIFY_PAGE):
        for message in page:
            if message.seq > len(expected):
                extra += 1
                continue
            seen += 1
            index = message.seq - 1
            if names := _differing(expected[index], chat.checked.messages[index], message):
                found.append(f"message {message.seq}: {', '.join(names)} differ")
    if seen < len(expected):
        found.append(f"{len(expected) - seen} of the file's messages are not in the database")
    if extra:
        found.append(f"{extra} messages in the database come after the file's last")
    return found


def _differing(want: ImportedMessage, given: CheckedMessage, stored: Message) -> list[str]:
    """The fields in which a stored message differs from the file's: its time only where
    the file gives one."""
    names = [
        name
        for name, ours, theirs in (
            ("role", want.role, stored.role),
            ("content", want.content, stored.content),
            ("content_type", want.content_type, stored.content_type),
            ("id", want.client_id, stored.client_id),
            ("timestamp", want.client_ts, stored.timestamp),
            ("metadata", orjson.loads(want.metadata_json), stored.metadata),
        )
        if ours != theirs
    ]
    if (given.created_at or given.timestamp) and want.created_at != stored.created_at:
        names.append("created_at")
    return names
