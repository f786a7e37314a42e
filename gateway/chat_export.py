"""Sessions as files, for `GET /api/sessions/{id}/export` and `chat-gateway export`.

Three formats:

* `markdown`: a transcript to read: the session's name and facts, then each message under a
  heading with its role and time; code and JSON messages in fenced blocks.
* `json`: the chat format the import reads (gateway/chat_format.py), so an export imported
  into another database gives the same session and messages. Several sessions (a port's) are
  a JSON array of chats.
* `openai`: the LLM message list `[{"role", "content"}, ...]`. Several sessions are JSON
  Lines of `{"messages": [...]}`, one session a line: the chat fine-tuning file format.

Streamed: the messages are read `PAGE` at a time in seq order (keyset on seq, reading the
buffer too, so what was acked is there), each page encoded and handed on before the next is
read, and a pooled connection is held only for the read of a page. However long the session,
the memory held is one page. The price: the pages are read in separate snapshots, so a
message edited while an export runs may come in the version before or after the edit.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Literal, get_args

import asyncpg
import redis.asyncio as aioredis

from gateway.chat_format import (
    DEFAULT_CONTENT_TYPE,
    FORMAT,
    JSON_TAIL,
    Chat,
    ChatMessage,
    json_head,
    json_message,
    openai_message,
)
from storage.keys import Keys
from storage.messages import Message, session_pages
from storage.sessions import Session

Format = Literal["markdown", "json", "openai"]
FORMATS: tuple[str, ...] = get_args(Format)
PAGE = 1000  # messages read (and encoded) at a time

MEDIA_TYPES: dict[str, str] = {
    "markdown": "text/markdown; charset=utf-8",
    "json": "application/json",
    "openai": "application/json",
}


def file_name(session: Session, fmt: Format) -> str:
    """A download's name: the session's name as a slug and the start of its id."""
    name = session.title or session.auto_title or ""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40].rstrip("-") or "session"
    suffix = {"markdown": ".md", "json": ".json", "openai": ".openai.json"}[fmt]
    return f"{slug}-{str(session.id)[:8]}{suffix}"


async def export(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    keys: Keys,
    sessions: Sequence[Session],
    fmt: Format,
    *,
    several: bool = False,
) -> AsyncIterator[bytes]:
    """The sessions in the format, piece by piece. `several`: a collection even of one
    session (a port's export), else exactly one session."""
    assert several or len(sessions) == 1
    head, between, tail = _FRAMES[fmt] if several else (b"", b"", b"")
    yield head
    for index, session in enumerate(sessions):
        if index:
            yield between
        async for piece in _RENDER[fmt](
            session_pages(pool, redis, keys, session.id, PAGE), session, several
        ):
            yield piece
    yield tail


# A collection's opening, separator and end, per format.
_FRAMES: dict[str, tuple[bytes, bytes, bytes]] = {
    "markdown": (b"", b"\n---\n\n", b""),
    "json": (b"[\n", b",\n", b"\n]\n"),
    "openai": (b"", b"", b""),
}


Pages = AsyncIterator[list[Message]]


async def _json(pages: Pages, session: Session, several: bool) -> AsyncIterator[bytes]:
    chat = Chat(
        format=FORMAT,
        id=str(session.id),
        title=session.title,
        user=session.user_id,
        port=session.port,
        ide_type=session.ide_type,
        created_at=session.created_at,
        pinned=session.pinned,
    )
    yield json_head(chat)
    first = True
    async for page in pages:
        pieces = [json_message(_chat_message(m)) for m in page]
        yield (b"" if first else b",\n") + b",\n".join(pieces)
        first = False
    yield JSON_TAIL if several else JSON_TAIL + b"\n"


def _chat_message(m: Message) -> ChatMessage:
    return ChatMessage(
        role=m.role,  # type: ignore[arg-type]  # a stored role is one of Role's
        content=m.content,
        content_type=m.content_type,  # type: ignore[arg-type]  # likewise
        timestamp=m.timestamp,
        created_at=m.created_at,
        edited_at=m.edited_at,
        id=m.client_id,
        metadata=m.metadata if isinstance(m.metadata, dict) else {},
    )


async def _openai(pages: Pages, session: Session, several: bool) -> AsyncIterator[bytes]:
    yield b'{"messages":[' if several else b"[\n"
    separator = b"," if several else b",\n"  # a line per session, or a line per message
    first = True
    async for page in pages:
        pieces = [openai_message(m.role, m.content) for m in page]
        yield (b"" if first else separator) + separator.join(pieces)
        first = False
    yield b"]}\n" if several else b"\n]\n"


async def _markdown(pages: Pages, session: Session, several: bool) -> AsyncIterator[bytes]:
    name = " ".join((session.title or session.auto_title or f"Session {session.id}").split())
    facts = [
        f"# {name}",
        "",
        f"- Session: `{session.id}`",
        f"- Port: {session.port} ({session.ide_type})",
        f"- Started: {_when(session.created_at)}",
        "",
    ]
    yield "\n".join(facts).encode()
    async for page in pages:
        yield "".join(_markdown_message(m) for m in page).encode()


def _markdown_message(m: Message) -> str:
    when = _when(m.timestamp or m.created_at)
    heading = f"\n## {m.role.capitalize()} · {when}\n\n"
    if m.content_type in ("code", "json"):
        fence = "`" * max(3, _longest_backticks(m.content) + 1)
        language = "json" if m.content_type == "json" else ""
        return f"{heading}{fence}{language}\n{m.content}\n{fence}\n"
    if m.content_type != DEFAULT_CONTENT_TYPE:  # text: line breaks kept as written
        return heading + "  \n".join(m.content.split("\n")) + "\n"
    return f"{heading}{m.content}\n"


def _longest_backticks(text: str) -> int:
    return max((len(run) for run in re.findall(r"`+", text)), default=0)


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


_RENDER: dict[str, Callable[[Pages, Session, bool], AsyncIterator[bytes]]] = {
    "markdown": _markdown,
    "json": _json,
    "openai": _openai,
}
