"""What every stream run needs, passed in explicitly."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from etl.core.config import ConnectionSettings
from etl.core.connector import Client
from etl.core.log import get_logger
from etl.core.mirror.delete_guard import DeleteGuard
from etl.core.mirror.write import WriteStats
from etl.core.pull.writer_process import WriterProcess
from etl.core.tuning import TUNING

Progress = Callable[[str, int, int | None], None]  # stream, records done, total if known


@dataclass
class RunContext:
    engine: sa.Engine
    client: Client  # the connector's (a connector's own code narrows it)
    connection: str
    settings: ConnectionSettings
    run_id: int
    selected: frozenset[str]
    stop: threading.Event = field(default_factory=threading.Event)
    stats: WriteStats = field(default_factory=WriteStats)
    progress: Progress | None = None
    base_dir: Path = Path(".")
    mirror_url: str = ""  # for a writer process (the engine's own URL hides the password)
    writer_process_min_pages: int | None = None  # scans this long go to `forked_writer`, if there is one
    delete_guard: DeleteGuard = field(default_factory=DeleteGuard)  # refuses mass deletions (etl.core.mirror.delete_guard)
    failed_streams: set[str] = field(default_factory=set)  # streams that failed in this run: their absence proves nothing
    # forked before the mirror opened (etl.core.pull.writer_process); the run closes it
    forked_writer: WriterProcess | None = None

    @property
    def log(self) -> Any:
        return get_logger(connection=self.connection)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.settings.timezone)

    def writer_process(self, pages: int) -> WriterProcess | None:
        """The run's writer process for a scan of `pages` pages, or None: this process writes it.
        One that failed or was stopped is not replaced: the run's next scans are written here."""
        least = self.writer_process_min_pages
        if self.forked_writer is None or least is None or pages < least or not self.forked_writer.usable:
            return None
        return self.forked_writer

    def report(self, stream: str, done: int, total: int | None = None) -> None:
        if self.progress:
            self.progress(stream, done, total)


def writer_process_pays(settings: ConnectionSettings, min_pages: int | None) -> bool:
    """Whether a run of this connection is worth forking a writer process for.

    A second process pays only where fetching outruns writing in one process: long scans
    (`min_pages`, None: never) on a budget of more than `TUNING.in_process_requests_per_second`
    (the documented limits are 5 and 1 a second: one process keeps up with those many times over).
    """
    return min_pages is not None and settings.rate_limit.per_second >= TUNING.in_process_requests_per_second


def fork_writer_if_it_pays(settings: ConnectionSettings, min_pages: int | None) -> WriterProcess | None:
    """A writer process for a run of this connection, where one pays (`writer_process_pays`).
    Call it before this process opens the mirror and starts threads (see etl.core.pull.writer_process)."""
    return WriterProcess() if writer_process_pays(settings, min_pages) else None
