"""The live progress display of `desksync sync` on a terminal: per stream a bar with its total when
the API gives one (EddyDesk's pagination.total, ServiceGo's paging.total, whole lists), records
done, rate and time left; and, while the run waits on its rate budget, a line that says so with
the seconds left (a budget's wait can be most of a minute, and a bar standing still says nothing).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class _Rate(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:,.0f}/s" if task.speed else "", style="progress.data.speed")


class _SyncProgress(Progress):
    """rich's Progress, with the rate-limit line below the bars while a wait lasts."""

    wait_until = 0.0  # monotonic

    def get_renderables(self) -> Iterable[RenderableType]:
        yield from super().get_renderables()
        left = self.wait_until - time.monotonic()
        if left > 0:
            yield Text(f"waiting for the rate limit ({left:.0f} s)", style="yellow")


class ProgressDisplay:
    """`update(stream, done, total)` from the run, `waiting(seconds)` from its HTTP sessions."""

    def __init__(self, console: Console | None = None) -> None:
        self.progress = _SyncProgress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _Rate(),
            TimeRemainingColumn(), TimeElapsedColumn(), console=console or Console(stderr=True), transient=False)
        self._tasks: dict[str, int] = {}
        self._lock = threading.Lock()

    def update(self, stream: str, done: int, total: int | None) -> None:
        with self._lock:
            if stream not in self._tasks:
                self._tasks[stream] = int(self.progress.add_task(stream, total=total))
        self.progress.update(self._tasks[stream], completed=done, total=total)  # type: ignore[arg-type]

    def waiting(self, seconds: float) -> None:
        self.progress.wait_until = max(self.progress.wait_until, time.monotonic() + seconds)

    def __enter__(self) -> ProgressDisplay:
        self.progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.progress.stop()


def progress_display() -> ProgressDisplay | None:
    """A display when stderr is a terminal; none otherwise (logs then speak for the run)."""
    return ProgressDisplay() if sys.stderr.isatty() else None
