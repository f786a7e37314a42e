"""The `chat-gateway` console script, run as real subprocesses in empty folders.

The serve tests are the README promise: `chat-gateway serve` in an empty folder starts its own
PostgreSQL and Valkey, a few lines of websockets client code store a message, HTTP reads it
back, Ctrl-C stops everything, and the next start finds the message again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from websockets.asyncio.client import connect

from storage import migrate
from tests.conftest import migrated_database
from tests.processes import (
    CHAT_GATEWAY,
    alive,
    command_env,
    exited,
    run_command,
    start_writer,
    stop_process,
)

# The first start on a machine copies the PostgreSQL binaries and runs initdb: allow for it.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
IO_TIMEOUT = 10.0
_RUNNING = re.compile(r"Uvicorn running on (http://\S+)")


@dataclass
class Serve:
    """A running `chat-gateway serve`, its child processes, and its stderr so far."""

    proc: asyncio.subprocess.Process
    url: str = ""
    # The embedded PostgreSQL and Valkey, found when serve was up (a stopped serve has none).
    children: set[int] = field(default_factory=set)
    lines: list[str] = field(default_factory=list)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    async def stop(self, sig: signal.Signals = signal.SIGINT) -> int:
        """Send `sig` and return the exit code, failing if it does not exit in time."""
        self.proc.send_signal(sig)
        try:
            return await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            pytest.fail(f"serve ignored {sig.name} for {STOP_TIMEOUT:.0f} s:\n{self.log}")


@contextlib.asynccontextmanager
async def serving(cwd: Path, *args: str, env: dict[str, str] | None = None) -> AsyncIterator[Serve]:
    """Start `chat-gateway serve --port 0` in `cwd` with no GATEWAY_* settings; yield it up.

    Ready means uvicorn logged "Uvicorn running on": migrations applied, lifespan done,
    socket bound. stderr is drained for the whole run so a chatty server never blocks on it.
    A server the test did not stop gets SIGINT on the way out, and SIGKILL if it hangs (its
    embedded servers then die with it: parent-death signal). Either way this returns only
    once those servers are gone, so the data folder can be deleted.
    """
    proc = await asyncio.create_subprocess_exec(
        CHAT_GATEWAY, "serve", "--port", "0", *args, cwd=cwd, env=command_env(**(env or {})),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    serve = Serve(proc)
    up = asyncio.get_running_loop().create_future()
    # With --workers N the parent binds the socket, but only the workers listen on it.
    workers = int(args[args.index("--workers") + 1]) if "--workers" in args else 1
    started = 0

    async def drain() -> None:
        nonlocal started
        assert proc.stderr is not None
        while line := (await proc.stderr.readline()).decode(errors="replace"):
            serve.lines.append(line)
            if match := _RUNNING.search(line):
                serve.url = match.group(1)
            started += "Application startup complete" in line
            if serve.url and started == workers and not up.done():
                up.set_result(serve.url)
        if not up.done():
            up.set_exception(AssertionError(f"serve exited while starting:\n{serve.log}"))

    drainer = asyncio.create_task(drain())
    try:
        try:
            serve.url = await asyncio.wait_for(asyncio.shield(up), START_TIMEOUT)
        except TimeoutError:
            pytest.fail(f"serve was not up within {START_TIMEOUT:.0f} s:\n{serve.log}")
        serve.children = _children(proc.pid)
        yield serve
    finally:
        if proc.returncode is None:
            serve.children |= _children(proc.pid)  # also those of a failed start
        await stop_process(proc, STOP_TIMEOUT)
        await asyncio.wait_for(drainer, IO_TIMEOUT)  # EOF once the process is gone
        await asyncio.wait_for(exited(serve.children), STOP_TIMEOUT)
        if up.done() and not up.cancelled():
            up.exception()  # retrieved: no "exception was never retrieved" warning


def _remove_data(data: Path) -> None:
    """Delete a data folder, and the PostgreSQL cluster it links to when relocated (as root)."""
    cluster = data / "postgres"
    if cluster.is_symlink():
        shutil.rmtree(cluster.resolve(), ignore_errors=True)
    shutil.rmtree(data, ignore_errors=True)


def default_data(workdir: Path) -> Path:
    """Where the commands run in `workdir` keep their data by default: the platform's user
    data folder, which the `workdir` fixture points at a folder of the test's own."""
    return workdir.parent / "data-home" / "chat-gateway"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty folder to run the command in, with the user data folder (XDG_DATA_HOME,
    which the commands inherit) in the test's own tree; both are removed afterwards."""
    path = tmp_path / "project"
    path.mkdir()
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data-home"))
    yield path
    _remove_data(default_data(path))
    _remove_data(path / ".gateway-data")


def _children(pid: int) -> set[int]:
    """The pids of the live processes whose parent is `pid`, from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            stat = (entry / "stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry.name))
    return found


async def _embedded_pids(data: Path) -> tuple[int, int]:
    """The pids of the running embedded PostgreSQL (postmaster) and Valkey under `data`."""
    postmaster = int((data / "postgres" / "postmaster.pid").read_text().split("\n", 1)[0])
    urls = json.loads((data / "servers.json").read_text())
    client = aioredis.Redis.from_url(urls["redis_url"])
    try:
        info = await client.info("server")
    finally:
        await client.aclose()
    return postmaster, int(info["process_id"])


async def _send_message(url: str, content: str) -> dict[str, object]:
    """Store one message over the WebSocket, the way a client would; return the ack."""
    ws_url = url.replace("http://", "ws://", 1) + "/ws"
    async with connect(ws_url, open_timeout=IO_TIMEOUT) as ws:
        await ws.send(json.dumps({"type": "message", "port": 9222, "content": content}))
        ack: dict[str, object] = json.loads(await asyncio.wait_for(ws.recv(), IO_TIMEOUT))
    return ack


async def _messages(url: str, session_id: object) -> list[dict[str, object]]:
    """The session's messages, read over HTTP."""
    async with httpx.AsyncClient(base_url=url, timeout=IO_TIMEOUT) as http:
        response = await http.get(f"/api/sessions/{session_id}/messages")
    assert response.status_code == 200, response.text
    messages: list[dict[str, object]] = response.json()["messages"]
    return messages


async def test_serve_in_an_empty_folder_stores_and_keeps_a_message(workdir: Path) -> None:
    """serve with no URLs stores a message, stops cleanly on SIGINT, and finds it on restart."""
    data = default_data(workdir)
    async with serving(workdir) as serve:
        assert f"database: embedded PostgreSQL in {data}/postgres, started" in serve.log
        assert f"redis: embedded Valkey in {data}/redis, started" in serve.log
        async with httpx.AsyncClient(timeout=IO_TIMEOUT) as http:
            assert (await http.get(serve.url + "/healthz")).json() == {"status": "ok"}
        ack = await _send_message(serve.url, "hi")
        assert ack["type"] == "ack", ack
        results = ack["results"]
        assert isinstance(results, list) and len(results) == 1
        stored = results[0]
        assert stored["seq"] == 1
        messages = await _messages(serve.url, ack["session_id"])
        assert [(m["id"], m["content"]) for m in messages] == [(stored["id"], "hi")]

        assert (data / "servers.json").exists()
        postmaster, valkey = await _embedded_pids(data)
        assert {postmaster, valkey} <= serve.children, "the servers are not children of serve"

        await serve.stop(signal.SIGINT)  # its exit status: test_serve_exits_0_on_a_stop_signal
        # serve reaps its servers before it exits: no waiting for them here.
        assert not [pid for pid in serve.children if alive(pid)], f"left:\n{serve.log}"
    assert data.is_dir()
    assert not (data / "servers.json").exists()

    async with serving(workdir) as again:
        assert "creating a PostgreSQL cluster" not in again.log  # the same cluster, reused
        assert "applied migration" not in again.log
        messages = await _messages(again.url, ack["session_id"])
        assert [(m["id"], m["content"]) for m in messages] == [(stored["id"], "hi")]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda sig: sig.name)
async def test_serve_exits_0_on_a_stop_signal(workdir: Path, sig: signal.Signals) -> None:
    """Ctrl-C, `docker stop` or systemd: serve exits 0, no traceback, nothing left behind."""
    async with serving(workdir) as serve:
        code = await serve.stop(sig)
        assert not [pid for pid in serve.children if alive(pid)], serve.log
    assert not (default_data(workdir) / "servers.json").exists(), serve.log
    assert "Traceback" not in serve.log, serve.log
    assert code == 0, serve.log


async def test_migrate_status_beside_a_running_serve(workdir: Path) -> None:
    """migrate --status next to a running serve reads servers.json and lists all as applied."""
    async with serving(workdir):
        code, out, err = await run_command("migrate", "--status", cwd=workdir)
    assert code == 0, err
    assert "database: the embedded PostgreSQL of the serve running in" in err
    assert "started for this command" not in err  # no second PostgreSQL on the same data
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    expected = migrate.discover()
    assert expected, "no migrations found"
    for migration in expected:
        row = rows.get(f"{migration.version:04d}")
        assert row is not None, f"{migration.path.name} missing from:\n{out}"
        assert row[1] == migration.name and row[-1] != "pending", out


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
async def test_serve_refuses_a_public_interface_without_auth(workdir: Path, host: str) -> None:
    """serve --host on a non-loopback address with no GATEWAY_AUTH_SECRET exits at once."""
    code, _, err = await run_command("serve", "--host", host, "--port", "0", cwd=workdir)
    assert code != 0
    assert f"refusing to bind {host}" in err and "loopback" in err, err
    assert "started for this command" not in err
    assert not default_data(workdir).exists()


_COMMON_FLAGS = ["--database-url", "--redis-url", "--data-dir", "--log-level"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            (),
            [
                "serve", "writer", "migrate", "verify-counts", "archive", "reindex", "token",
                "db-health", "backup", "restore", "purge",
            ],
        ),
        (("serve",), [*_COMMON_FLAGS, "--host", "--port", "--workers", "--no-writer"]),
        (("writer",), _COMMON_FLAGS),
        (("migrate",), [*_COMMON_FLAGS, "--status", "--to", "--allow-data-loss"]),
        (("verify-counts",), [*_COMMON_FLAGS, "--fix"]),
        (("archive",), [*_COMMON_FLAGS, "--older-than", "--batch"]),
        (("reindex",), [*_COMMON_FLAGS, "--batch"]),
        (("token",), ["--user", "--ttl", "--admin"]),
        (("db-health",), [*_COMMON_FLAGS, "--top", "--json", "--reset-statements"]),
        (("backup",), [*_COMMON_FLAGS, "--output"]),
        (("restore",), [*_COMMON_FLAGS, "--yes", "FILE"]),
        (("purge",), [*_COMMON_FLAGS, "--deleted-older-than", "--batch"]),
    ],
    ids=[
        "chat-gateway",
        "serve",
        "writer",
        "migrate",
        "verify-counts",
        "archive",
        "reindex",
        "token",
        "db-health",
        "backup",
        "restore",
        "purge",
    ],
)
async def test_help(workdir: Path, args: tuple[str, ...], expected: list[str]) -> None:
    """--help exits 0 and names every flag of the (sub)command."""
    code, out, err = await run_command(*args, "--help", cwd=workdir)
    assert code == 0, err
    assert out.startswith("usage: chat-gateway")
    missing = [flag for flag in expected if flag not in out]
    assert not missing, out


async def test_migrate_on_a_migrated_database_applies_nothing(
    workdir: Path, database_url: str
) -> None:
    """migrate against GATEWAY_DATABASE_URL, already migrated by the suite, applies nothing."""
    code, out, err = await run_command(
        "migrate", cwd=workdir, env=command_env(GATEWAY_DATABASE_URL=database_url)
    )
    assert code == 0, err
    assert out.strip() == "nothing to apply"
    assert "started for this command" not in err
    assert not default_data(workdir).exists()


async def test_migrate_to_goes_down_and_up(workdir: Path, server_database_url: str) -> None:
    """migrate --to N refuses a data-losing down without --allow-data-loss, goes down with it,
    --status shows the result and the down files, and --to the newest goes back up."""
    newest = migrate.discover()[-1]
    async with migrated_database(server_database_url, "cg_cli_migrate") as url:
        env = command_env(GATEWAY_DATABASE_URL=url)
        code, out, err = await run_command("migrate", "--to", "5", cwd=workdir, env=env)
        assert code == 1, err
        assert "0007_port_labels.down.sql" in err and "--allow-data-loss" in err, err
        assert out == ""
        code, out, err = await run_command(
            "migrate", "--to", "5", "--allow-data-loss", cwd=workdir, env=env
        )
        assert code == 0, err
        assert out.splitlines() == [
            "reverted 0008_global_stats.sql",
            "reverted 0007_port_labels.sql",
            "reverted 0006_session_preview.sql",
            "at version 5: reverted 3, applied 0",
        ]
        code, out, err = await run_command("migrate", "--status", cwd=workdir, env=env)
        assert code == 0, err
        rows = {line.split()[0]: line for line in out.splitlines()}
        assert "down file" in rows["migration"]
        assert rows["0001"].split()[2:4] == ["loses", "data"], out
        assert rows["0005"].split()[2:4] == ["keeps", "data"], out
        assert rows["0005"].split()[-1] != "pending", out
        assert rows["0006"].split()[-1] == rows["0007"].split()[-1] == "pending", out
        code, out, err = await run_command(
            "migrate", "--to", str(newest.version), cwd=workdir, env=env
        )
        assert code == 0, err
        assert out.splitlines()[:2] == [
            "applied 0006_session_preview.sql",
            "applied 0007_port_labels.sql",
        ]
    assert not default_data(workdir).exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--to", "9999"), "--to: cannot migrate to version 9999: the newest migration is"),
        (("--to", "-1"), "--to: cannot migrate to version -1: versions are 0 or more"),
        (("--allow-data-loss",), "--allow-data-loss goes with --to N"),
        (("--to", "1", "--status"), "not allowed with argument"),
    ],
)
async def test_migrate_to_bad_flags_are_refused(
    workdir: Path, database_url: str, args: tuple[str, ...], expected: str
) -> None:
    """A --to outside the versions, --allow-data-loss alone or --to with --status exits 2
    with one line, before any server is used."""
    code, _, err = await run_command(
        "migrate", *args, cwd=workdir, env=command_env(GATEWAY_DATABASE_URL=database_url)
    )
    assert code == 2, err
    assert expected in err, err
    assert "database:" not in err


async def _searched(base_url: str, q: str) -> list[dict[str, object]]:
    """Search results for `q` once there are any: the indexer commits after the writer, and
    another process's progress can only be seen by asking (every 50 ms, for up to 15 s)."""
    async with httpx.AsyncClient(base_url=base_url) as http:
        async with asyncio.timeout(15):
            while True:
                response = await http.get("/api/search", params={"q": q})
                assert response.status_code == 200, response.text
                if hits := response.json()["results"]:
                    return list(hits)
                await asyncio.sleep(0.05)


def _unused_port() -> int:
    """A loopback port nothing listens on right now (the kernel's pick for a bind to 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_two_workers_and_a_separate_writer(workdir: Path) -> None:
    """`serve --workers 2 --no-writer` plus `chat-gateway writer` beside it: durable messages
    sent over several connections (spread over both workers) are acked only once the separate
    writer has committed them, the writer's own /metrics counts them, and the writer stops
    cleanly on SIGINT."""
    metrics_port = _unused_port()
    async with serving(workdir, "--workers", "2", "--no-writer") as serve:
        env = command_env(GATEWAY_WRITER_METRICS_PORT=str(metrics_port))
        writer, log = await start_writer(workdir, env, START_TIMEOUT)
        try:
            running = f"of the serve running in {default_data(workdir)} (PID {serve.proc.pid})"
            assert f"database: the embedded PostgreSQL {running}" in log
            assert f"redis: the embedded Valkey {running}" in log
            ws_url = serve.url.replace("http://", "ws://") + "/ws"
            acks = []
            for i in range(6):
                async with connect(ws_url, open_timeout=IO_TIMEOUT) as ws:
                    frame = {"type": "message", "port": 9222, "content": f"w{i}", "durable": True}
                    await ws.send(json.dumps(frame))
                    acks.append(json.loads(await asyncio.wait_for(ws.recv(), IO_TIMEOUT)))
            assert [a["durability"] for a in acks] == ["persisted"] * 6
            assert sorted(a["results"][0]["seq"] for a in acks) == [1, 2, 3, 4, 5, 6]
            # The separate writer runs the search indexer too.
            hits = await _searched(serve.url, "w3")
            assert [h["seq"] for h in hits] == [acks[3]["results"][0]["seq"]]
            async with httpx.AsyncClient() as http:
                metrics = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
            assert "gateway_writer_rows_written_total 6.0" in metrics
            assert "gateway_search_rows_indexed_total" in metrics
        finally:
            if writer.returncode is None:
                writer.send_signal(signal.SIGINT)
            assert writer.stderr is not None
            rest = await asyncio.wait_for(writer.stderr.read(), STOP_TIMEOUT)
            code = await asyncio.wait_for(writer.wait(), STOP_TIMEOUT)
        assert code == 0, rest.decode()
        assert "writer stopped after writing 6 rows" in rest.decode()


async def test_two_gateway_processes_share_live_events(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    """Two `serve` processes on one PostgreSQL and Redis: a tab on process B gets, live,
    what an IDE sends through process A (cross-process fan-out through Redis)."""
    env = {
        "GATEWAY_DATABASE_URL": database_url,
        "GATEWAY_REDIS_URL": redis_url,
        "GATEWAY_KEY_PREFIX": f"xproc{os.getpid()}:",
        "GATEWAY_LOCAL_USER": f"xproc{os.getpid()}",
    }
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with serving(tmp_path / "a", env=env) as a, serving(tmp_path / "b", env=env) as b:
        ws_a = a.url.replace("http://", "ws://") + "/ws"
        ws_b = b.url.replace("http://", "ws://") + "/ws"
        async with (
            connect(ws_a, open_timeout=IO_TIMEOUT) as ide,
            connect(ws_b, open_timeout=IO_TIMEOUT) as tab,
        ):
            await tab.send(json.dumps({"type": "subscribe", "port": 9250, "since_seq": 0}))
            subscribed = json.loads(await asyncio.wait_for(tab.recv(), IO_TIMEOUT))
            assert subscribed["type"] == "subscribed" and subscribed["session"] is None
            for text in ("one", "two"):
                await ide.send(json.dumps({"type": "message", "port": 9250, "content": text}))
                assert json.loads(await asyncio.wait_for(ide.recv(), IO_TIMEOUT))["type"] == "ack"
            seen: list[str] = []
            while len(seen) < 2:
                frame = json.loads(await asyncio.wait_for(tab.recv(), IO_TIMEOUT))
                if frame["type"] == "message":
                    seen.append(frame["message"]["content"])
    assert seen == ["one", "two"]


async def test_serve_logs_json_lines(workdir: Path) -> None:
    """`serve --log-format json` writes every log line, uvicorn's included, as one JSON
    object with time, level, logger and message."""
    async with serving(workdir, "--log-format", "json") as serve:
        lines = [line for line in serve.lines if line.strip()]
    assert lines
    records = [json.loads(line) for line in lines]
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any(r["logger"].startswith("uvicorn") for r in records)
    assert any(r["message"].startswith("database: embedded PostgreSQL in") for r in records)
