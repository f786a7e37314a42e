"""The database health report (issue 17, point 1): GET /api/health/database for operators,
its statement reset, and `chat-gateway db-health`."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import asyncpg
import httpx

from gateway.auth import issue_token
from gateway.settings import Settings
from tests.conftest import RunningGateway, drained, request, run_gateway
from tests.processes import command_env, run_command
from tests.test_cli import workdir  # noqa: F401 - the fixture
from tests.test_operator_errors import one_error_line

SECRET = "db-health-test-secret-0123456789abcdef"
# Slow enough to be among the slowest statements on average.
MARK = "SELECT pg_sleep(0.3), 4242 AS db_health_marker"


def _statement(report: dict[str, object], text: str) -> bool:
    statements = report["statements"]
    assert isinstance(statements, list)
    return any(text in s["query"] for s in statements)


async def test_the_report_names_sizes_indexes_cache_connections_pool_and_statements(
    gateway: RunningGateway, http: httpx.AsyncClient, db: asyncpg.Pool
) -> None:
    """In local mode the local user gets the report: the database's size, its largest tables
    and indexes with their scans, unused indexes (never one enforcing a constraint), the
    cache hit ratio, the server's connections, this process's pool and the slowest
    statements; a reset forgets the statements."""
    async with gateway.connect() as ws:
        assert (await request(ws, {"type": "message", "port": 9290, "content": "x"}))[
            "type"
        ] == "ack"
    await drained(gateway)
    await db.fetchval(MARK)
    response = await http.get("/api/health/database")
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["database"] == await db.fetchval("SELECT current_database()")
    assert report["bytes"] > 0 and 0 <= report["cache_hit_ratio"] <= 1
    tables = {t["name"]: t for t in report["tables"]}
    assert {"messages", "sessions"} <= set(tables)
    assert tables["messages"]["bytes"] >= tables["messages"]["index_bytes"] > 0
    sizes = [t["bytes"] for t in report["tables"]]
    assert sizes == sorted(sizes, reverse=True)
    indexes = {i["name"]: i for i in report["indexes"]}
    assert indexes["messages_pkey"]["enforces"] is True
    assert all(i["scans"] == 0 and not i["enforces"] for i in report["unused_indexes"])
    assert sum(report["connections"].values()) >= 1
    pool = report["pool"]
    assert pool["size"] == pool["in_use"] + pool["idle"] and pool["max_size"] >= pool["size"]
    assert pool["waiting"] == 0
    assert report["statements_unavailable"] is None
    assert _statement(report, "db_health_marker")
    means = [s["mean_ms"] for s in report["statements"]]
    assert means == sorted(means, reverse=True)
    reset = await http.post("/api/health/database/statements/reset")
    assert reset.json() == {"reset": True, "reason": None}
    after = (await http.get("/api/health/database")).json()
    assert not _statement(after, "db_health_marker")


async def test_only_operators_get_the_report_in_token_mode(settings: Settings) -> None:
    """In token mode a user gets 403, a token with the admin claim or a user named in
    GATEWAY_ADMIN_USERS gets the report, and no token gets 401; so for the reset."""
    token_mode = replace(settings, auth_secret=SECRET, admin_users="carol, dave")
    async with (
        run_gateway(token_mode) as running,
        httpx.AsyncClient(base_url=running.http_url) as http,
    ):
        for path, method in [
            ("/api/health/database", "GET"),
            ("/api/health/database/statements/reset", "POST"),
        ]:
            for token, status in [
                (issue_token(SECRET, "bob", 60), 403),
                (issue_token(SECRET, "alice", 60, admin=True), 200),
                (issue_token(SECRET, "dave", 60), 200),
                (None, 401),
            ]:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                response = await http.request(method, path, headers=headers)
                assert response.status_code == status, (path, token, response.text)
            refused = await http.get(
                "/api/health/database",
                headers={"Authorization": f"Bearer {issue_token(SECRET, 'bob', 60)}"},
            )
            assert refused.json()["error"]["code"] == "forbidden"
            assert "GATEWAY_ADMIN_USERS" in refused.json()["error"]["message"]


async def test_the_command_prints_tables_or_json_and_resets(
    workdir: Path,  # noqa: F811 - the fixture imported above
    database_url: str,
    db: asyncpg.Pool,
) -> None:
    """`chat-gateway db-health` prints the report as tables, `--json` as the API's JSON,
    `--reset-statements` forgets the statements; a bad --top is one line, exit 2."""
    env = command_env(GATEWAY_DATABASE_URL=database_url)
    code, out, err = await run_command("db-health", cwd=workdir, env=env)
    assert code == 0, err
    for heading in ("Largest tables", "Largest indexes", "Slowest statements", "messages"):
        assert heading in out, out
    await db.fetchval(MARK)
    code, out, err = await run_command("db-health", "--json", "--top", "50", cwd=workdir, env=env)
    assert code == 0, err
    report = json.loads(out)
    assert report["pool"] is None and _statement(report, "db_health_marker")
    code, out, err = await run_command("db-health", "--reset-statements", cwd=workdir, env=env)
    assert code == 0, err
    assert out.rstrip().endswith("statement statistics reset")
    code, out, err = await run_command("db-health", "--json", "--top", "50", cwd=workdir, env=env)
    assert not _statement(json.loads(out), "db_health_marker")
    code, _, err = await run_command("db-health", "--top", "0", cwd=workdir, env=env)
    assert code == 2 and "--top=0 must be at least 1" in one_error_line(err)
