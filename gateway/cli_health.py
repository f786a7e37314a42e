"""`chat-gateway db-health`: the database health report (storage/health.py) as tables, or
as the JSON that `GET /api/health/database` answers (without a pool: a command has none
worth reporting; the server's connections are listed instead)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Mapping

import asyncpg
from rich import box
from rich.console import Console
from rich.table import Table

from gateway import wire
from gateway.preflight import check_at_least_one
from gateway.servers import servers_for
from gateway.settings import Settings
from storage import health

Command = Callable[..., argparse.ArgumentParser]


def add_parser(command: Command, epilog: str) -> None:
    """The command's grammar, through cli_parser's `command` (its shared flags)."""
    parser = command(
        "db-health",
        "report the database's size, tables, indexes, cache hits, connections, slow statements",
        "Report the database's size, its largest tables and indexes, how often each index is"
        " scanned and which are never used, the cache hit ratio, the server's connections by"
        " state, and the statements slowest on average (pg_stat_statements, created here if"
        " missing and allowed). The statistics are the server's since their last reset.",
        epilog,
    )
    parser.add_argument(
        "--top", type=int, default=health.TOP,
        help=f"tables, indexes and statements listed (default {health.TOP})",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--reset-statements", action="store_true",
        help="then forget this database's statement statistics, to measure from now on"
        " (default: kept)",
    )  # fmt: skip


def run(settings: Settings, args: argparse.Namespace, given: Mapping[str, str]) -> None:
    check_at_least_one("--top", args.top)
    with servers_for(settings, serve=False, redis=False, labels=given) as settings:
        report, reset = asyncio.run(_read(settings.database_url, args.top, args.reset_statements))
    body = wire.database_health(report, None)
    if args.json:
        print(wire.encode(body).decode())
    else:
        print_report(Console(), body)
    if args.reset_statements:
        print("statement statistics reset" if reset is None else f"not reset: {reset}")


async def _read(dsn: str, top: int, reset: bool) -> tuple[health.DatabaseHealth, str | None]:
    conn = await asyncpg.connect(dsn)
    try:
        report = await health.database_health(conn, top=top)
        return report, (await health.reset_statements(conn)) if reset else None
    finally:
        await conn.close()


def print_report(console: Console, report: wire.DatabaseHealth) -> None:
    """The report as tables."""
    ratio = report.cache_hit_ratio
    console.print(
        f"database [bold]{report.database}[/bold]: {_size(report.bytes)},"
        f" cache hit ratio {'n/a' if ratio is None else f'{ratio:.2%}'}"
    )
    console.print(
        "connections: "
        + (", ".join(f"{state} {n}" for state, n in report.connections.items()) or "none")
    )
    tables = _table("Largest tables", "table", "size", "indexes", "rows (estimate)")
    for t in report.tables:
        tables.add_row(t.name, _size(t.bytes), _size(t.index_bytes), f"{t.rows_estimate:,}")
    console.print(tables)
    indexes = _table("Largest indexes", "index", "table", "size", "scans")
    for i in report.indexes:
        indexes.add_row(i.name, i.table, _size(i.bytes), f"{i.scans:,}")
    console.print(indexes)
    if report.unused_indexes:
        unused = _table(
            "Unused indexes (never scanned, enforcing nothing)", "index", "table", "size"
        )
        for i in report.unused_indexes:
            unused.add_row(i.name, i.table, _size(i.bytes))
        console.print(unused)
    else:
        console.print("unused indexes: none")
    if report.statements_unavailable:
        console.print(f"slowest statements: unavailable ({report.statements_unavailable})")
        return
    statements = _table("Slowest statements (mean)", "mean ms", "max ms", "calls", "rows", "query")
    for s in report.statements:
        statements.add_row(
            f"{s.mean_ms:.2f}", f"{s.max_ms:.2f}", f"{s.calls:,}", f"{s.rows:,}", s.query[:160]
        )
    console.print(statements)


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _size(n: int) -> str:
    """Bytes in the largest unit under 1024 of it (`8.0 kB`, `1.2 MB`)."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
