"""Real processes in tests: running `chat-gateway` commands, liveness from /proc, exits
through pidfds."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

CHAT_GATEWAY = Path(sys.executable).parent / "chat-gateway"
COMMAND_TIMEOUT = 60.0


def command_env(**extra: str) -> dict[str, str]:
    """This process's environment without any GATEWAY_* setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return env | extra


async def run_command(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run `chat-gateway *args` to completion; return its exit code, stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        CHAT_GATEWAY, *args, cwd=cwd, env=env or command_env(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), COMMAND_TIMEOUT)
    finally:
        if proc.returncode is None:  # timed out: do not leave it running
            proc.kill()
            await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def exited(pids: set[int]) -> None:
    """Return once every process in `pids` has exited; they need not be our children.

    A pidfd turns readable when its process exits, so this waits on an event, not a timer.
    """
    loop = asyncio.get_running_loop()
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        gone: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, _resolve, gone)
        try:
            await gone
        finally:
            loop.remove_reader(fd)
            os.close(fd)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def stop_process(proc: asyncio.subprocess.Process, timeout: float) -> None:
    """Stop our child as Ctrl-C would (SIGINT), SIGKILL it if it is not gone within
    `timeout`, and reap it either way; nothing if it already exited."""
    if proc.returncode is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def start_writer(
    cwd: Path, env: dict[str, str], timeout: float
) -> tuple[asyncio.subprocess.Process, str]:
    """Start `chat-gateway writer` (stderr piped, stdout discarded) and return it with its log
    up to the line saying it runs; fails if it exits or stays silent for `timeout` first."""
    proc = await asyncio.create_subprocess_exec(
        CHAT_GATEWAY, "writer", cwd=cwd, env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    log = ""
    try:
        while " running;" not in log:
            line = await asyncio.wait_for(proc.stderr.readline(), timeout)
            assert line, f"writer exited:\n{log}"
            log += line.decode()
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    return proc, log
