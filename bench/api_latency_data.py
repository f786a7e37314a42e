"""The data of bench.api_latency, as plain values with no I/O: users, ports, sessions
planned as chains of rotations, a pool of realistic contents with search words of known
frequency, and every message as a COPY row in the order the writer commits them. The same seed
gives the same data (apart from the random message ids and dedup keys, which no query reads)."""

from __future__ import annotations

import collections
import heapq
import itertools
import random
import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bench.harness import content_of_realistic_length
from gateway.wire import ide_type_for_port
from storage.ids import new_id

ME = "me"
USERS = [ME, *(f"u{i:02d}" for i in range(1, 10))]
ME_SHARE = 0.10  # of the messages; the other users share the rest unevenly
PORTS = list(range(9222, 9252))  # 30 ports: cursor, vscode and windsurf ranges
SESSIONS = 2000
DAYS = 90
ARCHIVE_AFTER_DAYS = 30  # a chain idle this long has no active session left
DELETED_SHARE = 0.02
PINNED_SHARE = 0.05
TITLED_SHARE = 0.7
CONTENT_POOL = 100_000
NAMES = 2000  # identifier-like words, Zipf-ranked, in half the contents

MESSAGE_COLUMNS = [
    "session_id", "seq", "id", "user_id", "port", "client_id", "dedup_key", "role", "content",
    "content_type", "source", "client_ts", "created_at",
]  # fmt: skip
SESSION_COLUMNS = [
    "id", "user_id", "port", "ide_type", "title", "status", "pinned", "activity_at",
    "created_at", "updated_at", "archived_at", "deleted_at",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class PlannedSession:
    id: uuid.UUID
    user_id: str
    port: int
    title: str | None
    status: str
    pinned: bool
    start_us: int  # offsets from the data's epoch (90 days before it was generated)
    end_us: int
    messages: int

    def row(self, epoch: datetime) -> tuple[object, ...]:
        start = epoch + timedelta(microseconds=self.start_us)
        end = epoch + timedelta(microseconds=self.end_us)
        deleted = end + timedelta(hours=1) if self.status == "deleted" else None
        archived = end if self.status != "active" else None
        return (
            self.id, self.user_id, self.port, ide_type_for_port(self.port), self.title, self.status,
            self.pinned, start, start, deleted or end, archived, deleted,
        )  # fmt: skip


def plan_sessions(rng: random.Random, total_messages: int) -> list[PlannedSession]:
    """2,000 sessions over 10 users and 30 ports with their message counts (summing to
    `total_messages`; `me` gets ME_SHARE of them)."""
    day = 86_400 * 10**6
    span = DAYS * day
    others = [rng.uniform(0.3, 1.7) for _ in USERS[1:]]
    share = {ME: ME_SHARE} | {
        u: (1 - ME_SHARE) * w / sum(others) for u, w in zip(USERS[1:], others, strict=True)
    }
    # Every port is someone's; each user works on 6 to 12 of them.
    ports_of: dict[str, set[int]] = {u: set() for u in USERS}
    for i, port in enumerate(PORTS):
        ports_of[USERS[i % len(USERS)]].add(port)
    for user in USERS:
        ports_of[user] |= set(rng.sample(PORTS, rng.randint(6, 12) - len(ports_of[user])))
    planned: list[PlannedSession] = []
    per_user = SESSIONS // len(USERS)
    for user in USERS:
        ports = sorted(ports_of[user])
        chains = collections.Counter(
            rng.choices(ports, [rng.random() + 0.2 for _ in ports], k=per_user)
        )
        user_sessions: list[tuple[PlannedSession, float]] = []
        for port, length in sorted(chains.items()):
            first = rng.randrange(0, 20 * day)
            last = span - min(int(rng.expovariate(1 / 4) * day), span - first - day)
            cuts = sorted(rng.randrange(first, last) for _ in range(length - 1))
            bounds = [first, *cuts, last]
            for j in range(length):
                newest = j == length - 1
                active = newest and span - last < ARCHIVE_AFTER_DAYS * day
                status = "active" if active else "archived"
                if rng.random() < DELETED_SHARE:
                    status = "deleted"
                title = None
                if rng.random() < TITLED_SHARE:
                    title = f"{rng.choice(TOPICS)} {rng.randint(1, 99)}"
                session = PlannedSession(
                    new_id(), user, port, title, status,
                    status != "deleted" and rng.random() < PINNED_SHARE,
                    bounds[j], max(bounds[j + 1], bounds[j] + 1), 0,
                )  # fmt: skip
                user_sessions.append((session, rng.lognormvariate(0, 1.2)))
        counts = _apportion(round(total_messages * share[user]), [w for _, w in user_sessions])
        planned += [
            PlannedSession(**{**_fields(s), "messages": n})
            for (s, _), n in zip(user_sessions, counts, strict=True)
        ]
    # Rounding the user shares may leave a few messages over or under: the last session.
    missing = total_messages - sum(s.messages for s in planned)
    planned[-1] = PlannedSession(
        **{**_fields(planned[-1]), "messages": planned[-1].messages + missing}
    )
    return planned


TOPICS = [
    "Refactor", "Fix flaky test", "Add endpoint", "Migrate schema", "Review PR", "Debug crash",
    "Write docs", "Speed up build", "Upgrade deps", "Spike",
]  # fmt: skip


def _fields(session: PlannedSession) -> dict[str, Any]:
    return {name: getattr(session, name) for name in PlannedSession.__slots__}


def _apportion(total: int, weights: Sequence[float]) -> list[int]:
    """`total` split in proportion to `weights`, at least 1 each (largest remainders)."""
    spare = total - len(weights)
    shares = [spare * w / sum(weights) for w in weights]
    counts = [1 + int(s) for s in shares]
    by_remainder = sorted(range(len(weights)), key=lambda i: shares[i] - int(shares[i]))
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


@dataclass(frozen=True, slots=True)
class Contents:
    texts: list[str]
    # Search words by how many messages contain them: rare, medium, common.
    words: dict[str, list[str]]
    share: dict[str, float]  # mean share of the messages a word of the class is in


def content_pool(rng: random.Random) -> Contents:
    """CONTENT_POOL realistic texts; half end with an identifier-like word (Zipf-ranked)."""
    syllables = ["ka", "lo", "mi", "re", "tu", "sen", "dor", "vi", "na", "pel", "qua", "zo"]
    syllables += ["rin", "ul", "bex", "tor"]  # 16 ** 3 = 4,096 names to draw NAMES from
    names: list[str] = []
    while len(names) < NAMES:
        name = "".join(rng.choices(syllables, k=3))
        if name not in names:
            names.append(name)
    cumulative = list(itertools.accumulate(1 / (rank + 1) for rank in range(NAMES)))
    texts, in_texts = [], collections.Counter[str]()
    for _ in range(CONTENT_POOL):
        text = content_of_realistic_length(rng)
        if rng.random() < 0.5:
            name = rng.choices(names, cum_weights=cumulative)[0]
            text += " " + name
            in_texts[name] += 1
        texts.append(text)
    for word in ("function", "return"):
        in_texts[word] = sum(1 for t in texts if re.search(rf"\b{word}\b", t))
    classes = {
        "rare": [n for n in names if 5 <= in_texts[n] <= 20],  # 0.005-0.02 % of messages
        "medium": [n for n in names if 200 <= in_texts[n] <= 1000],  # 0.2-1 %
        "common": ["function", "return"],  # in most messages
    }
    share = {c: sum(in_texts[w] for w in ws) / len(ws) / CONTENT_POOL for c, ws in classes.items()}
    return Contents(texts, classes, share)


def message_rows(
    planned: Sequence[PlannedSession], texts: Sequence[str], rng: random.Random, epoch: datetime
) -> Iterator[tuple[object, ...]]:
    """Every planned message as a row of MESSAGE_COLUMNS, in created_at order across sessions
    (the order the writer commits them in)."""

    def times(index: int) -> Iterator[tuple[int, int, int]]:
        s = planned[index]
        span = s.end_us - s.start_us
        for j in range(s.messages):  # increasing: (j + u) / n with u in [0, 1)
            yield s.start_us + int(span * (j + rng.random()) / s.messages), index, j + 1

    bits, pick = rng.getrandbits, rng.choice
    epoch_ms = int(epoch.timestamp() * 1000)
    for at_us, index, seq in heapq.merge(*(times(i) for i in range(len(planned)))):
        s = planned[index]
        at = epoch + timedelta(microseconds=at_us)
        user_turn = seq % 2 == 1
        yield (
            s.id, seq, new_id(epoch_ms + at_us // 1000), s.user_id, s.port,
            None if user_turn else f"turn-{seq}", uuid.UUID(int=bits(128)),
            "user" if user_turn else "assistant", pick(texts),
            "text" if user_turn else "markdown", "ide_extraction", at, at,
        )  # fmt: skip
