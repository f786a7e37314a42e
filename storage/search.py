"""Full-text search over a user's messages, and the statements that fill its index.

The index is the `message_search` table (sql/0003_search.sql), filled off the ingest hot path by
the indexer (storage/indexer.py), so search may lag ingest by the indexer's backlog (the
contract allows it). What a message's searchable words are, and how a query is read, are the
SQL functions `search_document` and `search_query`: 'simple' configuration, websearch syntax.

Results are ranked with `ts_rank_cd` (cover density, divided by 1 + log(length) so a long code
dump does not outrank the message that is about the words). The snippet is plain text cut
from the message around its best cluster of matches, with the matches as `[start, end)`
offsets in Unicode code points: nothing in it is markup, so no input can inject any, and the
UI highlights by slicing, never by parsing.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from storage.db import Connection
from storage.sessions import COLUMNS as SESSION_COLUMNS
from storage.sessions import Session, session_from

# Ranking looks at the newest this-many matches of a query, not at all of them: ranking a word
# found in 400,000 messages costs about a second, and a phrase of common words must be checked
# against each candidate's positions. Up to this many matches the ranking is exact; beyond
# it, the best of the newest (docs/search.md has the measurements behind the number).
CANDIDATES = 500
SNIPPET_CHARS = 200  # the snippet's length, about; the window around the best matches
_MAX_MATCHES = 200  # matches of a message considered when choosing the snippet's window
# ts_rank_cd normalization: 1 divides by 1 + log(document length), 32 maps to rank / (rank + 1).
_RANK_NORMALIZATION = 1 | 32

# A row (re)indexed from `messages`. Only a newer version replaces an indexed one: indexers may
# commit out of order (two processes, or an edit and its original in different batches).
_UPSERT = """
INSERT INTO message_search AS s (session_id, seq, user_id, port, created_at, edited_at, tsv)
SELECT m.session_id, m.seq, m.user_id, m.port, m.created_at, m.edited_at,
       search_document(m.content)
  FROM {source}
ON CONFLICT (session_id, seq) DO UPDATE
   SET edited_at = excluded.edited_at, tsv = excluded.tsv
 WHERE excluded.edited_at > coalesce(s.edited_at, '-infinity')
"""
_INDEX_KEYS = _UPSERT.format(
    source="unnest($1::uuid[], $2::bigint[]) AS k(session_id, seq)"
    " JOIN messages m ON m.session_id = k.session_id AND m.seq = k.seq"
)
# One keyset step of the catch-up scan: the next `$3` messages in primary-key order, of which
# those missing from the index or indexed at an older version are (re)indexed.
_INDEX_MISSING = f"""
WITH span AS (
    SELECT session_id, seq, edited_at FROM messages
     WHERE (session_id, seq) > ($1, $2) ORDER BY session_id, seq LIMIT $3
), todo AS (
    SELECT span.session_id, span.seq FROM span
      LEFT JOIN message_search s USING (session_id, seq)
     WHERE s.session_id IS NULL OR s.edited_at IS DISTINCT FROM span.edited_at
), written AS (
    {_UPSERT.format(source="todo JOIN messages m USING (session_id, seq)")}
    RETURNING 1
)
SELECT (SELECT count(*) FROM written) AS indexed, last.session_id, last.seq
  FROM (SELECT session_id, seq FROM span ORDER BY session_id DESC, seq DESC LIMIT 1) AS last
"""

_SEARCH = """
SELECT h.session_id, h.seq, h.port, h.created_at, h.rank, m.id, m.role, m.content,
       se.title AS session_title, se.auto_title AS session_auto_title,
       se.created_at AS session_created_at
  FROM (SELECT c.session_id, c.seq, c.port, c.created_at,
               ts_rank_cd(c.tsv, search_query($2), {normalization}) AS rank
          FROM (SELECT s.session_id, s.seq, s.port, s.created_at, s.tsv
                  FROM message_search s
                 WHERE s.user_id = $1 AND s.tsv @@ search_query($2){port}
                   -- A user deletes few sessions: one hashed lookup per match.
                   AND s.session_id NOT IN (SELECT id FROM sessions
                                             WHERE user_id = $1 AND status = 'deleted')
                 ORDER BY s.created_at DESC
                 LIMIT {candidates}) AS c
         ORDER BY rank DESC, c.created_at DESC, c.session_id, c.seq
         LIMIT $3) AS h
  JOIN messages m ON m.session_id = h.session_id AND m.seq = h.seq
  JOIN sessions se ON se.id = h.session_id
 ORDER BY h.rank DESC, h.created_at DESC, h.session_id, h.seq
"""
_SEARCH_ALL = _SEARCH.format(normalization=_RANK_NORMALIZATION, candidates=CANDIDATES, port="")
_SEARCH_PORT = _SEARCH.format(
    normalization=_RANK_NORMALIZATION, candidates=CANDIDATES, port=" AND s.port = $4"
)
# Sessions whose shown name (the title, else the automatic one) matches, most recently active
# first: the walk of the user's sessions by activity (sessions_by_activity) tests the words
# kept in `name_words` (sql/0005) and stops at `$3` matches.
_SESSIONS = f"""
SELECT {SESSION_COLUMNS} FROM sessions
 WHERE user_id = $1 AND status <> 'deleted'{{port}}
   AND name_words @@ search_query($2)
 ORDER BY activity_at DESC, id DESC
 LIMIT $3
"""
_SESSIONS_ALL = _SESSIONS.format(port="")
_SESSIONS_PORT = _SESSIONS.format(port=" AND port = $4")
# The query as the index reads it, and for the rest of the transaction: custom plans (a generic
# plan cannot see how common the query's words are, and the best plan for a word in half the
# messages, walk the newest, is the worst for a rare one, ask the GIN index) and room for an
# exact bitmap (with the default 4MB, a word in ~100k of 10M messages made the bitmap lossy:
# every row of its pages rechecked, 80 ms; with 16MB, 59 ms: docs/benchmarks.md).
_PREPARE = (
    "SELECT search_query($1)::text, set_config('plan_cache_mode', 'force_custom_plan', true),"
    " set_config('work_mem', '16MB', true)"
)


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result; gateway/wire.py shapes it for clients."""

    session_id: uuid.UUID
    port: int
    seq: int
    message_id: uuid.UUID
    role: str
    created_at: datetime
    snippet: str
    highlights: list[tuple[int, int]]
    rank: float
    # The session's title (None: untitled), automatic title and start: what clients name it by.
    session_title: str | None = None
    session_created_at: datetime | None = None
    session_auto_title: str | None = None


@dataclass(frozen=True, slots=True)
class SessionHit:
    """A session whose name matches: the name as shown (title, else automatic title) with
    the `[start, end)` code-point offsets of the matches in it."""

    session: Session
    name: str
    highlights: list[tuple[int, int]]


@dataclass(frozen=True, slots=True)
class Found:
    """What a search finds: matching messages, best first, and sessions whose name matches."""

    messages: list[Hit]
    sessions: list[SessionHit]


async def search(
    conn: Connection,
    user_id: str,
    q: str,
    *,
    port: int | None = None,
    limit: int = 20,
    session_limit: int = 0,
) -> Found:
    """The user's best `limit` messages for the query `q` (websearch syntax), best first,
    and up to `session_limit` sessions whose name matches, most recently active first;
    deleted sessions and their messages excluded. A query without a single searchable word
    (only punctuation, say) matches nothing. `q` must not contain NUL (PostgreSQL text cannot)."""
    session_records: list[asyncpg.Record] = []
    async with conn.transaction():
        query_text = await conn.fetchval(_PREPARE, q)
        if not query_text:  # nothing searchable: matching would walk all the user's rows
            return Found([], [])
        args: tuple[object, ...] = () if port is None else (port,)
        records = await conn.fetch(
            _SEARCH_ALL if port is None else _SEARCH_PORT, user_id, q, limit, *args
        )
        if session_limit:
            session_records = await conn.fetch(
                _SESSIONS_ALL if port is None else _SESSIONS_PORT, user_id, q, session_limit, *args
            )
    terms = positive_terms(query_text)
    matcher = _matcher(terms)
    return Found(_hits(records, terms), [_session_hit(r, matcher) for r in session_records])


def _session_hit(record: asyncpg.Record, matcher: re.Pattern[str] | None) -> SessionHit:
    session = session_from(record)
    name = session.title or session.auto_title or ""
    spans = [] if matcher is None else [(m.start(), m.end()) for m in matcher.finditer(name)]
    return SessionHit(session, name, spans)


def _hits(records: list[asyncpg.Record], terms: Sequence[str]) -> list[Hit]:
    hits = []
    for r in records:
        text, spans = snippet(r["content"], terms)
        hits.append(
            Hit(
                r["session_id"],
                r["port"],
                r["seq"],
                r["id"],
                r["role"],
                r["created_at"],
                text,
                spans,
                round(float(r["rank"]), 6),  # a float4: no spurious digits
                r["session_title"],
                r["session_created_at"],
                r["session_auto_title"],
            )
        )
    return hits


async def index_keys(conn: Connection, keys: Sequence[tuple[str, int]]) -> int:
    """(Re)index these messages, each key at most once, from their committed rows; keys with
    no row are skipped. Returns the number of rows written (new or newer versions)."""
    ordered = sorted(set(keys))  # primary-key order: the join and the upsert walk the index
    status = await conn.execute(_INDEX_KEYS, [k[0] for k in ordered], [k[1] for k in ordered])
    return int(status.rsplit(" ", 1)[1])


async def index_missing(
    conn: Connection, after: tuple[uuid.UUID, int], limit: int
) -> tuple[int, tuple[uuid.UUID, int] | None]:
    """One catch-up step: of the `limit` messages after the key `after` in primary-key order,
    index those missing from the index or indexed at an older version. Returns the count
    indexed and the key to continue after (None at the end of the table)."""
    record = await conn.fetchrow(_INDEX_MISSING, after[0], after[1], limit)
    if record is None:
        return 0, None
    return int(record["indexed"]), (record["session_id"], record["seq"])


# A lexeme in tsquery output: single-quoted, a quote inside doubled.
_QUERY_TOKEN = re.compile(r"'((?:[^']|'')*)'(?::\*?[A-D]*)?|[!()]")


def positive_terms(query_text: str) -> list[str]:
    """The lexemes of a tsquery (as text) that a match contains: all but the negated ones
    (`!'word'`, `!( ... )`), longest first."""
    terms: set[str] = set()
    negated = [False]  # per open parenthesis: whether the group is negated
    pending = False  # a `!` waiting for its operand
    for token in _QUERY_TOKEN.finditer(query_text):
        text = token.group(0)
        if text == "!":
            pending = not pending
        elif text == "(":
            negated.append(negated[-1] ^ pending)
            pending = False
        elif text == ")":
            if len(negated) > 1:
                negated.pop()
        else:
            if not (negated[-1] ^ pending):
                terms.add(token.group(1).replace("''", "'"))
            pending = False
    return sorted(terms, key=lambda t: (-len(t), t))


def snippet(content: str, terms: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """About `SNIPPET_CHARS` characters of `content` around its best cluster of `terms`
    (the most distinct terms, then the earliest), whitespace collapsed, `…` where cut; and
    the `[start, end)` code-point offsets of the terms in it."""
    matcher = _matcher(terms)
    spans = []
    if matcher is not None:
        for match in matcher.finditer(content):
            spans.append((match.start(), match.group(0).lower()))
            if len(spans) == _MAX_MATCHES:
                break
    start = _window_start(spans) if spans else 0
    end = min(len(content), start + SNIPPET_CHARS)
    if start > 0:
        start = _word_start(content, start)
    if end < len(content):
        end = _word_end(content, end)
    text = " ".join(content[start:end].split())
    text = ("…" if start > 0 else "") + text + ("…" if end < len(content) else "")
    if matcher is None:
        return text, []
    return text, [(m.start(), m.end()) for m in matcher.finditer(text)]


def _matcher(terms: Sequence[str]) -> re.Pattern[str] | None:
    """A term as a whole word: not next to a letter or digit (an underscore, dot or slash
    separates words, as in the index)."""
    if not terms:
        return None
    alternatives = "|".join(re.escape(t) for t in sorted(terms, key=len, reverse=True))
    return re.compile(rf"(?<![^\W_])(?:{alternatives})(?![^\W_])", re.IGNORECASE)


def _window_start(spans: list[tuple[int, str]]) -> int:
    """Where the window begins: a quarter of it before the first match of the cluster with
    the most distinct terms within three quarters of the window."""
    reach = SNIPPET_CHARS * 3 // 4
    best, best_count = spans[0][0], 0
    for i, (position, _) in enumerate(spans):
        distinct = {t for p, t in spans[i:] if p < position + reach}
        if len(distinct) > best_count:
            best, best_count = position, len(distinct)
    return max(0, best - SNIPPET_CHARS // 4)


def _word_start(content: str, index: int) -> int:
    """`index` moved forward past a partly cut word (unless it is over 20 characters long)."""
    for i in range(index, min(len(content), index + 20)):
        if content[i - 1].isspace():
            return i
    return index


def _word_end(content: str, index: int) -> int:
    """`index` moved back before a partly cut word (unless it is over 20 characters long)."""
    for i in range(index, max(0, index - 20), -1):
        if content[i].isspace():
            return i
    return index
