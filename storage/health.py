"""What an operator asks of the database: its size, its largest tables and indexes, which
indexes are used, the cache hit ratio, the server's connections, and the slowest statements.

Read from PostgreSQL's own statistics views (pg_class, pg_stat_user_indexes,
pg_stat_database, pg_stat_activity) and from pg_stat_statements, which needs the library
preloaded (`shared_preload_libraries`: the embedded server and compose.yaml do it) and the
extension created in the database: the first report creates it if it may, and otherwise says
why the statements are missing instead of failing.

Every figure is for the database the connection is on; the statistics are the server's since
its last reset (`reset_statements` for pg_stat_statements).
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from storage.db import Connection

TOP = 10  # tables, indexes and statements listed

_DATABASE = """
SELECT current_database() AS name, pg_database_size(current_database()) AS bytes,
       d.blks_hit, d.blks_read
  FROM pg_stat_database d WHERE d.datname = current_database()
"""
# Tables with everything they hold (TOAST and indexes included), and what of it is indexes.
_TABLES = """
SELECT c.relname AS name, pg_total_relation_size(c.oid) AS bytes,
       pg_indexes_size(c.oid) AS index_bytes, c.reltuples::bigint AS rows_estimate
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname = current_schema()
 ORDER BY bytes DESC, name LIMIT $1
"""
# Every index of the schema with its scans since the statistics were reset; an index that
# enforces a constraint (primary key, unique, exclusion) is needed even if never scanned.
_INDEXES = """
SELECT s.indexrelname AS name, s.relname AS table_name, pg_relation_size(s.indexrelid) AS bytes,
       s.idx_scan AS scans, (i.indisunique OR i.indisprimary OR i.indisexclusion) AS enforces
  FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid
 WHERE s.schemaname = current_schema()
 ORDER BY bytes DESC, name
"""
_CONNECTIONS = """
SELECT coalesce(state, 'background') AS state, count(*) AS connections
  FROM pg_stat_activity WHERE datname = current_database()
 GROUP BY 1 ORDER BY 1
"""
_STATEMENTS = """
SELECT s.query, s.calls, s.total_exec_time AS total_ms, s.mean_exec_time AS mean_ms,
       s.max_exec_time AS max_ms, s.rows
  FROM pg_stat_statements s
 WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
 ORDER BY s.mean_exec_time DESC LIMIT $1
"""


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    bytes: int  # with its TOAST data and indexes
    index_bytes: int
    rows_estimate: int  # the planner's (-1: never analyzed)


@dataclass(frozen=True, slots=True)
class Index:
    name: str
    table: str
    bytes: int
    scans: int  # since the server's statistics were reset
    enforces: bool  # a primary key, unique or exclusion constraint: needed unscanned


@dataclass(frozen=True, slots=True)
class Statement:
    query: str  # normalized by pg_stat_statements: constants are $1, $2, ...
    calls: int
    total_ms: float
    mean_ms: float
    max_ms: float
    rows: int


@dataclass(frozen=True, slots=True)
class DatabaseHealth:
    database: str
    bytes: int
    cache_hit_ratio: float | None  # blocks found in shared buffers; None before any read
    tables: list[Table]  # the largest first
    indexes: list[Index]  # the largest first
    unused_indexes: list[Index]  # never scanned, and enforcing nothing
    connections: dict[str, int]  # the server's connections to this database, by state
    statements: list[Statement]  # the slowest on average first
    statements_unavailable: str | None  # why there are none, when pg_stat_statements is off


async def database_health(conn: Connection, *, top: int = TOP) -> DatabaseHealth:
    """The report; `top` tables, indexes and statements."""
    database = await conn.fetchrow(_DATABASE)
    assert database is not None
    hit, read = database["blks_hit"] or 0, database["blks_read"] or 0
    indexes = [
        Index(r["name"], r["table_name"], r["bytes"], r["scans"], r["enforces"])
        for r in await conn.fetch(_INDEXES)
    ]
    statements, unavailable = await _statements(conn, top)
    return DatabaseHealth(
        database=database["name"],
        bytes=database["bytes"],
        cache_hit_ratio=hit / (hit + read) if hit + read else None,
        tables=[
            Table(r["name"], r["bytes"], r["index_bytes"], r["rows_estimate"])
            for r in await conn.fetch(_TABLES, top)
        ],
        indexes=indexes[:top],
        unused_indexes=[i for i in indexes if i.scans == 0 and not i.enforces],
        connections={r["state"]: r["connections"] for r in await conn.fetch(_CONNECTIONS)},
        statements=statements,
        statements_unavailable=unavailable,
    )


async def _statements(conn: Connection, top: int) -> tuple[list[Statement], str | None]:
    """The slowest statements, or why they cannot be read."""
    problem = await ensure_statements(conn)
    if problem is not None:
        return [], problem
    return [
        Statement(
            " ".join(r["query"].split()),
            r["calls"],
            round(r["total_ms"], 3),
            round(r["mean_ms"], 3),
            round(r["max_ms"], 3),
            r["rows"],
        )
        for r in await conn.fetch(_STATEMENTS, top)
    ], None


async def ensure_statements(conn: Connection) -> str | None:
    """Create the pg_stat_statements extension if it is missing and this role may; None if
    its view can be read, else why not (one line for the report)."""
    installed = await conn.fetchval(
        "SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'"
    )
    try:
        if not installed:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await conn.fetchval("SELECT 1 FROM pg_stat_statements LIMIT 1")
    except asyncpg.ObjectNotInPrerequisiteStateError:
        return "pg_stat_statements is not in the server's shared_preload_libraries"
    except asyncpg.InsufficientPrivilegeError:
        return "this role may not create the pg_stat_statements extension; a superuser can"
    except asyncpg.UndefinedFileError:
        return "the server has no pg_stat_statements extension installed"
    return None


async def reset_statements(conn: Connection) -> str | None:
    """Forget this database's statement statistics (other databases' on the server stay);
    None if done, else why not."""
    problem = await ensure_statements(conn)
    if problem is not None:
        return problem
    try:
        await conn.execute(
            "SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database"
            " WHERE datname = current_database()), 0)"
        )
    except asyncpg.InsufficientPrivilegeError:
        return "this role may not reset pg_stat_statements; a superuser can grant it"
    return None
