"""Progress on a terminal: bytes, rate and time left for a file; files and bytes for a
directory. Off when standard error is not a terminal, or with ``-q``.

Result lines and errors go to standard error too (standard output may carry the data), above
the bars while they are shown.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Protocol

import click

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.progress import ProgressColumn, Task, TaskID

__all__ = ["Reporter", "make_reporter"]


class Reporter(Protocol):
    """What the commands tell the user while they work."""

    def start(self, description: str, total_bytes: int | None, files: int | None) -> None: ...

    def advance(self, count: int) -> None: ...

    def set_bytes(self, done: int) -> None: ...

    def file_done(self) -> None: ...

    def line(self, text: str, *, success: bool) -> None: ...

    def close(self) -> None: ...


class _Lines:
    """No bars: result lines only (successes unless quiet)."""

    def __init__(self, quiet: bool) -> None:
        self._quiet = quiet

    def start(self, description: str, total_bytes: int | None, files: int | None) -> None:
        return None

    def advance(self, count: int) -> None:
        return None

    def set_bytes(self, done: int) -> None:
        return None

    def file_done(self) -> None:
        return None

    def line(self, text: str, *, success: bool) -> None:
        if not success or not self._quiet:
            click.echo(text, err=True)

    def close(self) -> None:
        return None


class _Bars:
    """rich progress bars on standard error."""

    def __init__(self) -> None:
        from rich.console import Console  # noqa: PLC0415 - rich loads only on a terminal
        from rich.progress import BarColumn, Progress, TextColumn  # noqa: PLC0415

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            *_unit_columns(),
            console=Console(stderr=True),
            transient=True,
            refresh_per_second=8,
        )
        self._bytes: TaskID | None = None
        self._files: TaskID | None = None

    def start(self, description: str, total_bytes: int | None, files: int | None) -> None:
        self._progress.start()
        if files is not None:
            self._files = self._progress.add_task("files", total=files, unit="files")
        self._bytes = self._progress.add_task(description, total=total_bytes, unit="bytes")

    def advance(self, count: int) -> None:
        if self._bytes is not None:
            self._progress.advance(self._bytes, count)

    def set_bytes(self, done: int) -> None:
        if self._bytes is not None:
            self._progress.update(self._bytes, completed=done)

    def file_done(self) -> None:
        if self._files is not None:
            self._progress.advance(self._files, 1)

    def line(self, text: str, *, success: bool) -> None:
        self._progress.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def close(self) -> None:
        self._progress.stop()


def make_reporter(quiet: bool) -> Reporter:
    if quiet or not sys.stderr.isatty():
        return _Lines(quiet)
    return _Bars()


def _unit_columns() -> list[ProgressColumn]:
    """The amount, rate and time-left columns: bytes for a byte task, a count for the files
    task (which has no rate or time of its own)."""
    from rich.progress import (  # noqa: PLC0415
        DownloadColumn,
        ProgressColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    from rich.text import Text  # noqa: PLC0415

    class ByUnit(ProgressColumn):
        def __init__(self, for_bytes: ProgressColumn, count_files: bool) -> None:
            super().__init__()
            self._for_bytes = for_bytes
            self._count_files = count_files

        def render(self, task: Task) -> RenderableType:
            if task.fields.get("unit") != "files":
                return self._for_bytes.render(task)
            if not self._count_files:
                return Text("")
            total = "?" if task.total is None else str(int(task.total))
            return Text(f"{int(task.completed)}/{total} files", style="progress.download")

    return [
        ByUnit(DownloadColumn(), count_files=True),
        ByUnit(TransferSpeedColumn(), count_files=False),
        ByUnit(TimeRemainingColumn(), count_files=False),
    ]
