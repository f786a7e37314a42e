"""Query plans of the hot reads on a table large enough for the planner to care.

One fresh migrated database gets 200,000 messages COPYed over 2,000 sessions of three users
(ten ports each, one chain of rotated sessions per port, messages interleaved across ports in
time order as the writer commits them), then ANALYZE. Each test runs a storage function with a
query logger on its connection, so the SQL checked is the SQL the function sends, and explains
every statement it ran twice with its arguments: as planned for those values (custom plan)
and as a prepared statement may be planned after five runs (generic plan, which asyncpg's
statement cache makes the usual case). Neither may scan `messages` sequentially; the paged
reads must walk an index in order and read about one page of rows, whatever the table size.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from storage import sessions, stats
from storage.ids import new_id
from storage.keys import Keys
from storage.messages import last_seq, port_messages, session_messages
from tests.conftest import migrated_database

USERS = ["me", "u1", "u2"]
PORTS = list(range(9222, 9232))
MESSAGES = 200_000
SESSIONS = 2_000
CHAINS = len(USERS) * len(PORTS)  # one chain of rotated sessions per (user, port)
PER_CHAIN = SESSIONS // CHAINS  # 66: 1,980 sessions in all
PAGE = 100
# What a paged read may take from `messages` beyond its page: the row that says "there is
# more", and the port query's rows of deleted sessions (none are newest here).
SLACK = 2

Plan = dict[str, Any]


@pytest.fixture(scope="module")
async def big_database(server_database_url: str) -> AsyncIterator[str]:
    """A migrated database of its own with MESSAGES messages, analyzed."""
    async with migrated_database(server_database_url, "cg_plans") as url:
        conn = await asyncpg.connect(url)
        try:
            await _fill(conn)
        finally:
            await conn.close()
        yield url


async def _fill(conn: asyncpg.Connection) -> None:
    epoch = datetime.now(UTC) - timedelta(days=90)
    chains = [(user, port) for user in USERS for port in PORTS]
    # Chain c's session j: archived, the newest active; every 50th older one deleted.
    ids = [[new_id() for _ in range(PER_CHAIN)] for _ in chains]
    session_rows = []
    for c, (user, port) in enumerate(chains):
        for j, session_id in enumerate(ids[c]):
            status = "active" if j == PER_CHAIN - 1 else "archived"
            status = "deleted" if j % 50 == 7 else status
            at = epoch + timedelta(days=90 * j / PER_CHAIN)
            session_rows.append((session_id, user, port, "cursor", status, at, at, at))
    await conn.copy_records_to_table(
        "sessions",
        records=session_rows,
        columns=[
            "id", "user_id", "port", "ide_type", "status", "activity_at", "created_at",
            "updated_at",
        ],
    )  # fmt: skip
    await conn.copy_records_to_table(
        "messages",
        records=_messages(chains, ids, epoch),
        columns=[
            "session_id", "seq", "id", "user_id", "port", "dedup_key", "role", "content",
            "content_type", "source", "created_at",
        ],
    )  # fmt: skip
    # The counters as `verify-counts --fix` sets them; the planner reads activity_at.
    await conn.execute(
        "UPDATE sessions s SET message_count = c.n, last_message_at = c.newest,"
        " activity_at = c.newest FROM (SELECT session_id, count(*) AS n,"
        " max(created_at) AS newest FROM messages GROUP BY session_id) c"
        " WHERE s.id = c.session_id"
    )
    await conn.execute("VACUUM (ANALYZE)")


def _messages(
    chains: list[tuple[str, int]], ids: list[list[uuid.UUID]], epoch: datetime
) -> Iterator[tuple[object, ...]]:
    """Message k goes to chain k % CHAINS, in that chain's session of its time: rows in
    time order, interleaved across ports. A chain's active session has half its messages
    (about 3,300), the archived ones share the other half (about 50 each)."""
    half = MESSAGES // CHAINS // 2
    step = timedelta(days=90) / MESSAGES
    seqs = [0] * (CHAINS * PER_CHAIN)
    text = "the quick brown fox jumps over the lazy dog " * 8
    for k in range(MESSAGES):
        c = k % CHAINS
        j = min(k // CHAINS * (PER_CHAIN - 1) // half, PER_CHAIN - 1)
        index = c * PER_CHAIN + j
        seqs[index] += 1
        user, port = chains[c]
        yield (
            ids[c][j], seqs[index], new_id(), user, port, uuid.uuid4(),
            "user" if k % 2 else "assistant", text[: 40 + k % 300], "text", "ide_extraction",
            epoch + step * k,
        )  # fmt: skip


@pytest.fixture
async def conn(big_database: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(big_database)
    yield connection
    await connection.close()


@pytest.fixture
def keys() -> Keys:
    """A key prefix nobody writes to: the reads find nothing buffered and go to PostgreSQL."""
    return Keys(f"plans{uuid.uuid4().hex[:8]}:")


async def statements_of(
    conn: asyncpg.Connection, call: Awaitable[object]
) -> list[tuple[str, tuple[Any, ...]]]:
    """The SELECTs a storage call sent on `conn`, with their arguments (its query logger)."""
    ran: list[Any] = []
    conn.add_query_logger(ran.append)
    try:
        await call
        await asyncio.sleep(0)  # the logger's callbacks run on the next loop iteration
    finally:
        conn.remove_query_logger(ran.append)
    found = [(r.query, tuple(r.args)) for r in ran if r.query.lstrip().startswith("SELECT")]
    assert found, "the call sent no SELECT"
    return found


async def plans(conn: asyncpg.Connection, query: str, args: tuple[Any, ...]) -> dict[str, Plan]:
    """The statement's custom and generic plans, each executed (EXPLAIN ANALYZE)."""
    async with conn.transaction():
        custom = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {query}", *args)
        await conn.execute(f"PREPARE checked AS {query}")
        await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        # EXECUTE takes no bound parameters: the arguments go in as literals.
        values = ", ".join(_literal(a) for a in args)
        generic = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE checked({values})")
        await conn.execute("DEALLOCATE checked")
    return {"custom": json.loads(custom)[0]["Plan"], "generic": json.loads(generic)[0]["Plan"]}


def _literal(value: object) -> str:
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def nodes(plan: Plan) -> Iterator[Plan]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def scans_of(plan: Plan, table: str) -> list[Plan]:
    return [n for n in nodes(plan) if n.get("Relation Name") == table]


def assert_paged_by_index(plan: Plan, index: str, limit: int) -> None:
    """`messages` is read only through `index`, in its order, about one page of rows."""
    scans = scans_of(plan, "messages")
    assert scans, plan
    for scan in scans:
        assert scan["Node Type"] in ("Index Scan", "Index Only Scan"), _show(plan)
        assert scan["Index Name"] == index, _show(plan)
        assert scan["Actual Rows"] * scan["Actual Loops"] <= limit + SLACK, _show(plan)
    assert not any(n["Node Type"] == "Sort" for n in nodes(plan)), _show(plan)


def _show(plan: Plan) -> str:
    """The plan's node tree, one line per node, for assertion messages."""

    def lines(node: Plan, depth: int) -> Iterator[str]:
        name = node.get("Index Name") or node.get("Relation Name") or ""
        rows = f"rows={node.get('Actual Rows')} loops={node.get('Actual Loops')}"
        yield f"{'  ' * depth}{node['Node Type']} {name} {rows}"
        for child in node.get("Plans", []):
            yield from lines(child, depth + 1)

    return "\n" + "\n".join(lines(plan, 0))


async def busiest_session(conn: asyncpg.Connection, user: str = "me") -> tuple[uuid.UUID, int]:
    record = await conn.fetchrow(
        "SELECT id, message_count FROM sessions WHERE user_id = $1 AND status <> 'deleted'"
        " ORDER BY message_count DESC LIMIT 1",
        user,
    )
    assert record is not None and record["message_count"] > 3 * PAGE
    return record["id"], record["message_count"]


async def test_port_newest_messages_walk_the_port_index(
    conn: asyncpg.Connection, redis: aioredis.Redis, keys: Keys
) -> None:
    """A port's newest messages read about one page from messages_port_newest, in order."""
    call = port_messages(conn, redis, keys, "me", PORTS[3], PAGE)
    # Nothing buffered: the rows query alone (the buffered sessions come from Redis).
    (newest,) = await statements_of(conn, call)
    for plan in (await plans(conn, *newest)).values():
        assert_paged_by_index(plan, "messages_port_newest", PAGE)


async def session_page_plans(
    conn: asyncpg.Connection, redis: aioredis.Redis, keys: Keys, direction: str
) -> dict[str, Plan]:
    """The plans of the messages read of a page from the middle of the busiest session."""
    session_id, count = await busiest_session(conn)
    bound = {direction: count // 2}
    call = session_messages(conn, redis, keys, session_id, limit=PAGE, **bound)
    (query, args) = (await statements_of(conn, call))[0]
    return await plans(conn, query, args)


@pytest.mark.parametrize("direction", ["after_seq", "before_seq"])
async def test_session_page_reads_the_primary_key(
    conn: asyncpg.Connection, redis: aioredis.Redis, keys: Keys, direction: str
) -> None:
    """A session page by seq, forwards or backwards, reads messages through the primary key
    alone, in either plan."""
    for plan in (await session_page_plans(conn, redis, keys, direction)).values():
        scans = scans_of(plan, "messages")
        assert scans, _show(plan)
        for scan in scans:
            assert scan["Node Type"] != "Seq Scan", _show(plan)
            index = scan.get("Index Name") or scan["Plans"][0]["Index Name"]  # bitmap: child
            assert index == "messages_pkey", _show(plan)


@pytest.mark.parametrize(
    ("direction", "kind"),
    [
        ("after_seq", "custom"),
        ("after_seq", "generic"),
        ("before_seq", "custom"),
        ("before_seq", "generic"),
    ],
)
async def test_session_page_reads_one_page(
    conn: asyncpg.Connection, redis: aioredis.Redis, keys: Keys, direction: str, kind: str
) -> None:
    """A page from the middle of a large session walks the primary key in order and reads
    one page of rows, not the rest of the session."""
    plan = (await session_page_plans(conn, redis, keys, direction))[kind]
    assert_paged_by_index(plan, "messages_pkey", PAGE + 1)  # + the has_more row


async def test_session_lookup_is_a_primary_key_lookup(conn: asyncpg.Connection) -> None:
    """The session read before every page is one primary-key lookup on sessions."""
    session_id, _ = await busiest_session(conn)
    (query, args) = (await statements_of(conn, sessions.get_session(conn, "me", session_id)))[0]
    for plan in (await plans(conn, query, args)).values():
        assert [(n["Node Type"], n.get("Index Name")) for n in scans_of(plan, "sessions")] == [
            ("Index Scan", "sessions_pkey")
        ], _show(plan)


@pytest.mark.parametrize("port", [None, PORTS[5]], ids=["all", "one_port"])
async def test_sessions_list_uses_a_sessions_index(
    conn: asyncpg.Connection, port: int | None
) -> None:
    """The sessions list, with or without a port, reads sessions by an index, no message."""
    call = sessions.list_sessions(conn, "me", port=port, status=None, after=None, limit=50)
    (query, args) = (await statements_of(conn, call))[0]
    for plan in (await plans(conn, query, args)).values():
        assert not scans_of(plan, "messages"), _show(plan)
        scans = scans_of(plan, "sessions")
        # A bitmap scan is fine here: a port has tens of sessions, not millions.
        assert scans and all(n["Node Type"] != "Seq Scan" for n in scans), _show(plan)


async def test_last_seq_reads_one_index_entry(
    conn: asyncpg.Connection, redis: aioredis.Redis, keys: Keys
) -> None:
    """last_seq, with nothing in Redis, reads the newest primary-key entry of the session."""
    session_id, count = await busiest_session(conn)
    call = last_seq(conn, redis, keys, str(session_id))
    (query, args) = (await statements_of(conn, call))[0]
    for plan in (await plans(conn, query, args)).values():
        scans = scans_of(plan, "messages")
        assert [n["Node Type"] for n in scans] == ["Index Only Scan"], _show(plan)
        assert scans[0]["Index Name"] == "messages_pkey", _show(plan)
        assert scans[0]["Actual Rows"] == 1, _show(plan)
    assert await last_seq(conn, redis, keys, str(session_id)) == count


async def test_stats_read_only_the_counters(conn: asyncpg.Connection) -> None:
    """The stats read touches user_stats alone, never sessions or messages."""
    (query, args) = (await statements_of(conn, stats.read(conn, "me")))[0]
    for plan in (await plans(conn, query, args)).values():
        tables = {n["Relation Name"] for n in nodes(plan) if "Relation Name" in n}
        assert tables == {"user_stats"}, _show(plan)
