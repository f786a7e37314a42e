"""The chat file format: one chat as one JSON object, written by the export and read by the import.

This module owns it: `Chat` and `ChatMessage` declare the fields (and so the JSON Schema,
`CHAT_SCHEMA`, and the OpenAPI component of the export), `check` holds a decoded chat to the
gateway's field rules, `json_head`/`json_message` write it, and `read_chats` reads it along
with the two foreign formats the import takes, converted to the same `Chat`:

* **a chat file** (`*.json`): one `Chat` object, or an array of them (what
  `chat-gateway export --port P --format json` writes);
* **a JSON Lines transcript** (`*.jsonl`, `*.ndjson`): one `ChatMessage` per line, in order,
  optionally after a first line `{"type": "chat", ...}` holding the chat's other fields; the
  chat's id is then its `id`, else the file's name without its extension;
* **ChatGPT's export** (`conversations.json`, any `*.json` whose array items have a `mapping`):
  each conversation's shown branch (from `current_node` back to the root), its text parts as
  markdown, code as `code`, the model in the metadata; IDE type `chatgpt`.

The fields follow the WebSocket protocol's rules (gateway/ws/client_frames.py): the same roles,
content types, client id length, title length, content and metadata sizes, no NUL anywhere.
Two differences, both documented in docs/import-export.md: `content_type` defaults to
`markdown` (chats are markdown; the protocol's `text` default is for IDE extraction), and a
time may be an RFC 3339 string without an offset (read as UTC) or a number of Unix seconds,
as legacy files write them. A message whose content is blank carries nothing and is skipped
(counted), not refused: ChatGPT exports hold many.

Pure: no I/O here. Reading files, and writing rows, is gateway/chat_import.py's.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
import orjson

from gateway.validation import schema_of
from gateway.wire import MAX_CLIENT_ID_CHARS, MAX_PORT, MAX_TITLE_CHARS, ContentType, Role
from gateway.ws.client_frames import IDE_TYPE_PATTERN
from gateway.ws.protocol import holds_nul

FORMAT = "chat-gateway.chat/1"
DEFAULT_CONTENT_TYPE: ContentType = "markdown"
CHATGPT_IDE_TYPE = "chatgpt"
MAX_CHAT_ID_CHARS = 1000

# A moment: RFC 3339 (an offset is optional: without one it is UTC), or Unix seconds.
Instant = Annotated[
    datetime | float,
    msgspec.Meta(description="an RFC 3339 date-time (UTC without an offset) or Unix seconds"),
]


class ChatMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One message, in the chat's order (its position is its seq: 1, 2, ...)."""

    role: Role
    content: str
    content_type: ContentType = DEFAULT_CONTENT_TYPE
    # The client's own time of the message (the protocol's `timestamp`).
    timestamp: Instant | None = None
    # When the gateway stored it (the export writes it; default: `timestamp`, else the
    # previous message's, else the chat's `created_at`, else the time of the import).
    created_at: Instant | None = None
    edited_at: Instant | None = None
    # The client's id of the message (the protocol's `id`): dedups a later live resend.
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_CLIENT_ID_CHARS)] | None = None
    metadata: dict[str, Any] = {}


class Chat(msgspec.Struct, kw_only=True):
    """One chat. `messages` comes last: the export streams it (see `json_head`)."""

    format: str | None = None  # FORMAT when written by the gateway; optional on import
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_CHAT_ID_CHARS)] | int
    title: str | None = None
    user: str | None = None
    port: Annotated[int, msgspec.Meta(ge=1, le=MAX_PORT)] | None = None
    ide_type: str | None = None
    created_at: Instant | None = None
    pinned: bool = False
    messages: list[ChatMessage] = []


CHAT_SCHEMA = schema_of(
    Chat,
    title=FORMAT,
    description="One chat of chat-gateway's import and export (docs/import-export.md).",
)


class FormatError(Exception):
    """A file, or one chat of it, that does not follow its format; the message says what."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The protocol's configured sizes (GATEWAY_MAX_CONTENT_BYTES, _METADATA_BYTES)."""

    max_content_bytes: int
    max_metadata_bytes: int


@dataclass(frozen=True, slots=True)
class Checked:
    """A chat held to the rules: its messages less the blank ones, each with its metadata
    as compact JSON text and its times in UTC."""

    chat: Chat
    chat_id: str
    created_at: datetime | None
    messages: list[CheckedMessage]
    blank: int  # blank messages skipped


@dataclass(frozen=True, slots=True)
class CheckedMessage:
    role: str
    content: str
    content_type: str
    client_id: str | None
    timestamp: datetime | None
    created_at: datetime | None
    edited_at: datetime | None
    metadata: dict[str, Any]
    metadata_json: str


def check(chat: Chat, limits: Limits) -> Checked:
    """The chat if it follows the rules (see the module docstring), else FormatError naming
    the first field that does not."""
    chat_id = str(chat.id)
    for name, text in (("id", chat_id), ("title", chat.title), ("user", chat.user)):
        if text is not None and "\0" in text:
            raise FormatError(f"{name} must not contain the NUL character")
    if chat.title is not None and len(chat.title) > MAX_TITLE_CHARS:
        raise FormatError(f"title must be at most {MAX_TITLE_CHARS} characters")
    if chat.user is not None and not chat.user.strip():
        raise FormatError("user must not be blank")
    if chat.ide_type is not None and not re.fullmatch(IDE_TYPE_PATTERN, chat.ide_type):
        raise FormatError(
            f"ide_type must be a short lowercase name like 'cursor', not {chat.ide_type!r}"
        )
    messages = []
    blank = 0
    for index, message in enumerate(chat.messages):
        where = f"messages[{index}]"
        if not message.content.strip():
            blank += 1
            continue
        messages.append(_check_message(message, where, limits))
    return Checked(chat, chat_id, _utc(chat.created_at, "created_at"), messages, blank)


def _check_message(message: ChatMessage, where: str, limits: Limits) -> CheckedMessage:
    content = message.content
    if "\0" in content:
        raise FormatError(f"{where}.content must not contain the NUL character")
    if len(content) * 4 > limits.max_content_bytes:
        size = len(content.encode())
        if size > limits.max_content_bytes:
            raise FormatError(
                f"{where}.content is {size} bytes; the limit is {limits.max_content_bytes}"
                " (GATEWAY_MAX_CONTENT_BYTES)"
            )
    if message.id is not None and "\0" in message.id:
        raise FormatError(f"{where}.id must not contain the NUL character")
    try:
        metadata_json = orjson.dumps(message.metadata).decode() if message.metadata else "{}"
    except orjson.JSONEncodeError:
        raise FormatError(f"{where}.metadata is nested too deeply (at most 254 levels)") from None
    if "\\u0000" in metadata_json and holds_nul(message.metadata):
        raise FormatError(f"{where}.metadata must not contain the NUL character")
    if len(metadata_json) > limits.max_metadata_bytes:
        raise FormatError(
            f"{where}.metadata is {len(metadata_json)} bytes encoded; the limit is"
            f" {limits.max_metadata_bytes} (GATEWAY_MAX_METADATA_BYTES)"
        )
    return CheckedMessage(
        message.role,
        content,
        message.content_type,
        message.id,
        _utc(message.timestamp, f"{where}.timestamp"),
        _utc(message.created_at, f"{where}.created_at"),
        _utc(message.edited_at, f"{where}.edited_at"),
        message.metadata,
        metadata_json,
    )


def _utc(value: datetime | float | None, where: str) -> datetime | None:
    """A time in UTC: naive ones are UTC, numbers are Unix seconds."""
    if value is None:
        return None
    try:
        if isinstance(value, datetime):
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return datetime.fromtimestamp(value, UTC)
    except (ValueError, OverflowError, OSError):
        raise FormatError(f"{where} {value!r} is not a time between the years 1 and 9999") from None


# ---- reading ------------------------------------------------------------------------------

JSON_LINES_SUFFIXES = (".jsonl", ".ndjson")
SUFFIXES = (".json", *JSON_LINES_SUFFIXES)

_CHAT = msgspec.json.Decoder(Chat)
_MESSAGE = msgspec.json.Decoder(ChatMessage)
_ITEMS = msgspec.json.Decoder(list[msgspec.Raw])


class _Kind(msgspec.Struct):
    """What tells the formats apart: ChatGPT's conversations have a `mapping`, a JSON Lines
    header line has `"type": "chat"`."""

    mapping: dict[str, msgspec.Raw] | None = None  # Raw: its nodes are not decoded here
    type: Any = None


_KIND = msgspec.json.Decoder(_Kind)


@dataclass(frozen=True, slots=True)
class Item:
    """One chat of a file: `where` names it in reports (empty for a file's only chat); `chat`
    is None when it could not be read, and `error` says why."""

    where: str
    chat: Chat | None
    error: str | None = None


def read_chats(name: str, data: bytes) -> list[Item]:
    """The chats in a file named `name` (its suffix picks JSON Lines or JSON) holding `data`.
    Raises FormatError when the file as a whole cannot be read; a chat of an array that
    cannot be read is an `Item` with its error, so the others still go in."""
    if name.lower().endswith(JSON_LINES_SUFFIXES):
        return [Item("", _read_transcript(name, data))]
    start = data.lstrip()[:1]
    if start == b"{":
        return [Item("", _decode(_CHAT, data, ""))]
    if start != b"[":
        raise FormatError("not a JSON object or array")
    try:
        items = _ITEMS.decode(data)
    except msgspec.DecodeError as exc:
        raise FormatError(f"not valid JSON: {exc}") from None
    return [_read_item(f"[{index}]", raw) for index, raw in enumerate(items)]


def _read_item(where: str, raw: msgspec.Raw) -> Item:
    try:
        if bytes(raw)[:1] != b"{":
            raise FormatError("not a JSON object")
        if _KIND.decode(raw).mapping is not None:
            return Item(where, from_chatgpt(_CONVERSATION.decode(raw)))
        return Item(where, _decode(_CHAT, raw, ""))
    except msgspec.DecodeError as exc:
        return Item(where, None, str(exc))
    except FormatError as exc:
        return Item(where, None, str(exc))


def _decode(decoder: msgspec.json.Decoder[Any], data: bytes, where: str) -> Any:
    try:
        return decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise FormatError(f"{where}{exc}") from None
    except msgspec.DecodeError as exc:
        raise FormatError(f"{where}not valid JSON: {exc}") from None


def _read_transcript(name: str, data: bytes) -> Chat:
    """A JSON Lines transcript: an optional chat header line, then one message per line."""
    header: Chat | None = None
    messages: list[ChatMessage] = []
    for number, line in _lines(data):
        where = f"line {number}: "
        if not messages and header is None and _decode(_KIND, line, where).type == "chat":
            header = _decode(_CHAT, line, where)
            if header.messages:
                raise FormatError(f"{where}the chat line holds no messages: one per line after it")
            continue
        messages.append(_decode(_MESSAGE, line, where))
    stem = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    if header is None:
        return Chat(id=stem, messages=messages)
    header.messages = messages
    return header


def _lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    for number, line in enumerate(data.split(b"\n"), start=1):
        if line.strip():
            yield number, line


# ---- ChatGPT's export ----------------------------------------------------------------------


class _GptAuthor(msgspec.Struct):
    role: str
    name: str | None = None


class _GptContent(msgspec.Struct):
    content_type: str = "text"
    parts: list[Any] | None = None
    text: str | None = None
    result: str | None = None


class _GptMessage(msgspec.Struct):
    id: str
    author: _GptAuthor
    content: _GptContent | None = None
    create_time: float | None = None
    update_time: float | None = None
    metadata: dict[str, Any] = {}


class _GptNode(msgspec.Struct):
    message: _GptMessage | None = None
    parent: str | None = None
    children: list[str] = []


class _GptConversation(msgspec.Struct):
    mapping: dict[str, _GptNode]
    id: str | None = None
    conversation_id: str | None = None
    title: str | None = None
    create_time: float | None = None
    current_node: str | None = None


_CONVERSATION = msgspec.json.Decoder(_GptConversation)
_ROLES: frozenset[str] = frozenset(("user", "assistant", "system", "tool"))


def from_chatgpt(conversation: _GptConversation) -> Chat:
    """A ChatGPT conversation as a chat: the branch shown last (from `current_node` to the
    root; without one, the first child at every fork), in order."""
    chat_id = conversation.conversation_id or conversation.id
    if not chat_id:
        raise FormatError("the conversation has no id or conversation_id")
    messages = []
    for node in _branch(conversation):
        message = node.message
        if message is None:
            continue
        role = message.author.role
        if role not in _ROLES:
            raise FormatError(f"message {message.id} has the role {role!r}")
        content, content_type = _gpt_content(message.content)
        metadata: dict[str, Any] = {}
        if model := message.metadata.get("model_slug"):
            metadata["model"] = model
        if role == "tool" and message.author.name:
            metadata["tool"] = message.author.name
        messages.append(
            ChatMessage(
                role=role,  # type: ignore[arg-type]  # checked against _ROLES just above
                content=content,
                content_type=content_type,
                timestamp=message.create_time,
                id=message.id[:MAX_CLIENT_ID_CHARS],
                metadata=metadata,
            )
        )
    return Chat(
        id=chat_id,
        title=conversation.title or None,
        ide_type=CHATGPT_IDE_TYPE,
        created_at=conversation.create_time,
        messages=messages,
    )


def _branch(conversation: _GptConversation) -> list[_GptNode]:
    nodes = conversation.mapping
    current = conversation.current_node
    if current is None or current not in nodes:
        roots = [node for node in nodes.values() if node.parent is None or node.parent not in nodes]
        if not roots:
            return []
        node = roots[0]
        path = [node]
        while node.children and node.children[0] in nodes and len(path) <= len(nodes):
            node = nodes[node.children[0]]
            path.append(node)
        return path
    path = []
    seen: set[str] = set()
    while current is not None and current in nodes and current not in seen:
        seen.add(current)
        path.append(nodes[current])
        current = nodes[current].parent
    path.reverse()
    return path


# ChatGPT's content types that are not markdown: its code, and the output of running it.
_GPT_CONTENT_TYPES: dict[str, ContentType] = {"code": "code", "execution_output": "text"}


def _gpt_content(content: _GptContent | None) -> tuple[str, ContentType]:
    """The text of a ChatGPT message's content: its string parts (an image or a file part
    becomes a `[image]` or `[file]` note), else its `text` or `result`."""
    if content is None:
        return "", DEFAULT_CONTENT_TYPE
    kind = _GPT_CONTENT_TYPES.get(content.content_type, DEFAULT_CONTENT_TYPE)
    if content.parts is not None:
        pieces = []
        for part in content.parts:
            if isinstance(part, str):
                pieces.append(part)
            elif isinstance(part, dict):
                kind_of = str(part.get("content_type", ""))
                pieces.append("[image]" if "image" in kind_of else "[file]")
        return "\n\n".join(piece for piece in pieces if piece), kind
    return content.text or content.result or "", kind


# ---- writing ------------------------------------------------------------------------------

_ENCODER = msgspec.json.Encoder()


def json_head(chat: Chat) -> bytes:
    """The chat's JSON up to its first message: `{"format": ..., ..., "messages": [`. Messages
    (`json_message`) follow, separated by `,`, then `]}` (`JSON_TAIL`)."""
    encoded = _ENCODER.encode(msgspec.structs.replace(chat, messages=[]))
    assert encoded.endswith(b"[]}")
    return encoded[:-2] + b"\n"


JSON_TAIL = b"\n]}"


def json_message(message: ChatMessage) -> bytes:
    return _ENCODER.encode(message)


class OpenAIMessage(msgspec.Struct):
    """An item of the LLM message list the `openai` export writes."""

    role: Role
    content: str


def openai_message(role: str, content: str) -> bytes:
    return _ENCODER.encode(OpenAIMessage(role, content))  # type: ignore[arg-type]  # a stored role
