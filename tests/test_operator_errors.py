"""Mistakes an operator makes, tried as real `chat-gateway` subprocesses: each is one line
naming what was typed, exit status 2, and nothing started or created."""

from __future__ import annotations

import json
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import command_env, run_command
from tests.test_cli import default_data, serving, workdir  # noqa: F401 - the fixture, shared

# Stands in for any password in a URL: it must never reach the terminal.
PASSWORD = "s3cret-pw"


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that nothing listens on: bound, not listening, held for the test."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()[1]


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port on 127.0.0.1 that another program listens on."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def one_error_line(err: str) -> str:
    """The error line of a refused command, checking it is the only error and no traceback."""
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("chat-gateway: error:")]
    assert len(errors) == 1, err
    return errors[0]


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["serve", "--port", "70000"], {}, "--port=70000 is out of range"),
        (["serve", "--port", "-1"], {}, "--port=-1 is out of range"),
        (["serve", "--workers", "0"], {}, "--workers=0 must be greater than 0"),
        (["serve"], {"GATEWAY_PORT": "70000"}, "GATEWAY_PORT=70000 is out of range"),
        (["serve"], {"GATEWAY_PORT": "eighty"}, "GATEWAY_PORT='eighty' is not a valid int"),
        (["serve"], {"GATEWAY_HOST": "300.1.1.1"}, "GATEWAY_HOST='300.1.1.1' is not an IP"),
        (["serve"], {"GATEWAY_LOG_LEVEL": "loud"}, "GATEWAY_LOG_LEVEL='loud' is not one of"),
        (["serve"], {"GATEWAY_MAX_BATCH_ITEMS": "0"}, "GATEWAY_MAX_BATCH_ITEMS=0 must be"),
        (["serve"], {"GATEWAY_METRICS_ADDRESS": "nowhere"}, "GATEWAY_METRICS_ADDRESS='nowhere'"),
        (["serve"], {"GATEWAY_AUTH_SECRET": "short"}, "GATEWAY_AUTH_SECRET must be at least 32"),
        (
            ["serve"],
            {"GATEWAY_DATABASE_POOL_MIN_SIZE": "20"},
            "GATEWAY_DATABASE_POOL_MIN_SIZE=20 is more than GATEWAY_DATABASE_POOL_SIZE=10",
        ),
        (
            ["serve"],
            {"GATEWAY_DATABASE_CONNECT_TIMEOUT_S": "0"},
            "GATEWAY_DATABASE_CONNECT_TIMEOUT_S=0.0 must be greater than 0",
        ),
        (["reindex", "--batch", "0"], {}, "--batch=0 must be at least 1"),
        (["archive", "--older-than", "soon"], {}, "--older-than: 'soon' is not a duration"),
        (["token", "--user", "a"], {}, "set GATEWAY_AUTH_SECRET"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
async def test_a_bad_setting_is_one_line_before_anything_starts(
    workdir: Path,  # noqa: F811 - the fixture imported above
    args: list[str],
    env: dict[str, str],
    expected: str,
) -> None:
    """A bad flag or variable is one line naming it, exit 2, and no data folder made."""
    code, _, err = await run_command(*args, cwd=workdir, env=command_env(**env))
    assert code == 2, err
    assert expected in one_error_line(err), err
    assert not default_data(workdir).exists()


@pytest.mark.parametrize(
    ("flag", "url", "expected"),
    [
        ("--database-url", "garbage", "has no scheme; expected postgresql://"),
        ("--database-url", f"mysql://u:{PASSWORD}@127.0.0.1/db", "has scheme 'mysql'"),
        ("--database-url", f"postgresql://u:{PASSWORD}@127.0.0.1:99999/db", "Port out of range"),
        ("--database-url", f"postgresql://u:{PASSWORD}@127.0.0.1:CLOSED/db", "Connection refused"),
        ("--redis-url", "garbage", "has no scheme; expected redis://"),
        ("--redis-url", f"redis://:{PASSWORD}@127.0.0.1:CLOSED/0", "Connection refused"),
    ],
)
async def test_a_bad_url_names_the_variable_the_target_and_the_cause(
    workdir: Path,  # noqa: F811
    database_url: str,
    closed_port: int,
    flag: str,
    url: str,
    expected: str,
) -> None:
    """A URL that does not parse, has the wrong scheme or does not answer: one line with
    the variable (or flag), the target with its password masked, and the cause; exit 2."""
    url = url.replace("CLOSED", str(closed_port))
    variable = "GATEWAY_" + flag.removeprefix("--").replace("-", "_").upper()
    # Archive needs both servers; the other one is real, so only the bad one can fail.
    env = {"GATEWAY_DATABASE_URL": database_url} if flag == "--redis-url" else {}
    for typed, environment in ((flag, env), (None, env | {variable: url})):
        args = ["archive", "--older-than", "30d"] + ([typed, url] if typed else [])
        code, _, err = await run_command(*args, cwd=workdir, env=command_env(**environment))
        line = one_error_line(err)
        assert code == 2, err
        assert f"{typed or variable}=" in line and expected in line, line
        assert PASSWORD not in err
        if "@" in url:
            assert url.replace(PASSWORD, "***") in line, line
    assert not default_data(workdir).exists()


@pytest.mark.parametrize(
    "args", [["migrate"], ["verify-counts"], ["reindex"], ["archive", "--older-than", "1d"]]
)
async def test_a_maintenance_command_never_creates_a_database(
    workdir: Path,  # noqa: F811
    args: list[str],
) -> None:
    """Run where no serve ever ran, a maintenance command says where it looked and creates
    nothing, instead of starting an empty cluster and failing on a missing table."""
    code, _, err = await run_command(*args, cwd=workdir)
    line = one_error_line(err)
    assert code == 2, err
    data = default_data(workdir)
    assert "no database: GATEWAY_DATABASE_URL is not set" in line, line
    assert f"no serve is running in {data}" in line and f"{data / 'postgres'}" in line, line
    assert not data.exists()


def _dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


async def test_a_stale_servers_file_is_named_and_ignored(
    workdir: Path,  # noqa: F811
    database_url: str,
) -> None:
    """A servers.json left by a killed serve is named in the log, removed, and the command
    goes on with the servers it was given (before: a bare "connection refused")."""
    data = default_data(workdir)
    data.mkdir(parents=True)
    stale = data / "servers.json"
    for _ in range(2):
        gone = _dead_pid()
        urls = {"database_url": "postgresql://gateway:x@127.0.0.1:1/gateway"}
        stale.write_text(json.dumps({"pid": gone, **urls, "redis_url": "redis://127.0.0.1:1"}))
        env = command_env(GATEWAY_DATABASE_URL=database_url)
        code, out, err = await run_command("migrate", "--status", cwd=workdir, env=env)
        assert code == 0, err
        assert f"the serve that wrote it (PID {gone}) is no longer running" in err, err
        assert "0001" in out
        assert not stale.exists()
        # Without a URL, the same stale file leads to the "nothing here" line, not a refusal.
        stale.write_text(json.dumps({"pid": _dead_pid(), **urls}))
        code, _, err = await run_command("verify-counts", cwd=workdir)
        assert code == 2 and "no database:" in one_error_line(err), err


async def test_a_port_in_use_is_named_before_anything_starts(
    workdir: Path,  # noqa: F811
    taken_port: int,
) -> None:
    """serve on a port another program holds: the port and the flag (or variable) named,
    exit 2, before any cluster is created."""
    code, _, err = await run_command("serve", "--port", str(taken_port), cwd=workdir)
    assert code == 2, err
    assert f"port {taken_port} on 127.0.0.1 is in use (--port)" in one_error_line(err)
    env = command_env(GATEWAY_PORT=str(taken_port))
    code, _, err = await run_command("serve", cwd=workdir, env=env)
    assert code == 2, err
    assert f"port {taken_port} on 127.0.0.1 is in use (GATEWAY_PORT)" in one_error_line(err)
    assert not default_data(workdir).exists()


async def test_a_second_serve_on_one_folder_names_the_first_and_the_log_tells_the_truth(
    workdir: Path,  # noqa: F811
    database_url: str,
) -> None:
    """A second serve on the folder of a running one is refused naming its PID; a command
    given its own database beside that serve logs exactly which servers it uses."""
    async with serving(workdir) as first:
        code, _, err = await run_command("serve", "--port", "0", cwd=workdir)
        assert code == 2, err
        assert f"another serve (PID {first.proc.pid}) uses this folder" in one_error_line(err)

        env = command_env(GATEWAY_DATABASE_URL=database_url)
        code, _, err = await run_command("archive", "--older-than", "30d", cwd=workdir, env=env)
        assert code == 0, err
        masked = re.sub(r":[^:@/]*@", ":***@", database_url, count=1)
        assert f"database: GATEWAY_DATABASE_URL={masked}" in err, err
        redis_line = (
            f"redis: the embedded Valkey of the serve running in {default_data(workdir)}"
            f" (PID {first.proc.pid})"
        )
        assert redis_line in err, err
        assert "started for this command" not in err
        assert database_url.split("@")[0].split(":")[-1] not in err  # the password


@pytest.mark.parametrize("before", [True, False], ids=["before", "after"])
async def test_shared_options_go_before_or_after_the_command(
    workdir: Path,  # noqa: F811
    database_url: str,
    before: bool,
) -> None:
    """--log-format (and the other shared options) work on either side of the command."""
    shared = ["--log-format", "json", "--database-url", database_url]
    args = [*shared, "migrate", "--status"] if before else ["migrate", "--status", *shared]
    code, out, err = await run_command(*args, cwd=workdir)
    assert code == 0, err
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    messages = [str(line.get("message", "")) for line in lines]
    assert any(m.startswith("database: --database-url=") for m in messages), err
    assert "0001" in out


@pytest.mark.parametrize(
    "command",
    [
        "serve", "writer", "migrate", "verify-counts", "archive", "reindex", "token", "loadtest",
        "db-health", "backup", "restore", "purge",
    ],
)
async def test_each_command_help_describes_it_and_shows_defaults(
    workdir: Path,  # noqa: F811
    command: str,
) -> None:
    """Every `COMMAND --help` has a description paragraph, and every option says its default."""
    code, out, err = await run_command(command, "--help", cwd=workdir)
    assert code == 0, err
    usage, description = out.split("\n\n")[:2]
    assert usage.startswith(f"usage: chat-gateway {command}")
    assert len(description.split()) >= 10 and not description.startswith(" "), out
    options = re.findall(r"^  (--[a-z-]+)[^\n]*\n((?:^ {6,}[^\n]*\n)*)", out, re.MULTILINE)
    for flag, _ in options:
        entry = out[out.index(f"  {flag}") :].split("\n  -", 1)[0]
        if flag in (
            "--help", "--status", "--fix", "--user", "--older-than", "--json",
            "--deleted-older-than",
        ):  # fmt: skip
            continue  # switches and required values have no default to show
        assert "default" in " ".join(entry.split()), f"{flag} shows no default:\n{out}"


async def test_serve_help_says_who_may_connect(workdir: Path) -> None:  # noqa: F811
    """serve --help names GATEWAY_AUTH_SECRET, says local mode serves every account, and
    offers the local token."""
    code, out, _ = await run_command("serve", "--help", cwd=workdir)
    text = " ".join(out.split())
    assert code == 0
    assert "GATEWAY_AUTH_SECRET" in text
    assert "any local account can then read and write these chats" in text
    assert "--local-token" in text and "local-token (mode 0600)" in text


async def test_the_data_folder_does_not_depend_on_the_working_directory(
    workdir: Path,  # noqa: F811
) -> None:
    """By default serve keeps its data in the user's data folder, so a command run from
    another folder finds the running serve; a `./.gateway-data` of earlier versions is kept."""
    elsewhere = workdir.parent / "elsewhere"
    elsewhere.mkdir()
    async with serving(workdir) as serve:
        code, out, err = await run_command("migrate", "--status", cwd=elsewhere)
        assert code == 0, err
        assert f"serve running in {default_data(workdir)} (PID {serve.proc.pid})" in err, err
        assert "0001" in out
    assert not (workdir / ".gateway-data").exists() and not (elsewhere / ".gateway-data").exists()
    legacy = elsewhere / ".gateway-data"
    legacy.mkdir()
    code, _, err = await run_command("verify-counts", cwd=elsewhere)
    assert code == 2, err
    assert "holds no embedded PostgreSQL data" in err and ".gateway-data/postgres" in err, err
