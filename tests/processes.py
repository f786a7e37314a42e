"""Waiting on real processes in tests: liveness from /proc, exits through pidfds."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path


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
