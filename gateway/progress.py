"""Progress bars for the long maintenance commands, drawn by rich on stderr.

rich rather than a hand-drawn `\\r` line: it knows the terminal's width, shows rate and time
left, and writes plain lines when stderr is not a terminal (a log file, CI), instead of
filling it with carriage returns.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class Done(Protocol):
    def __call__(self, done: int, total: int | None = None) -> None:
        """Set how many are done, and the new total if it changed (the import learns how
        many chats a file holds only once it has read it)."""


@contextlib.contextmanager
def progress_bar(what: str, total: int | None) -> Iterator[Done]:
    """A bar for `total` items (None: a spinner with the count); yields `done(n)`, which
    sets how many are done. The bar is left on screen at its last value."""
    count = TextColumn("{task.description}: {task.completed}")
    columns: list[ProgressColumn] = [SpinnerColumn(), count]
    if total is not None:
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
        columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task(what, total=total)
        yield lambda done, total=None: progress.update(task, completed=done, total=total)
