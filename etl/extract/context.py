"""What every stream run needs, passed in explicitly."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from etl.clients.eddydesk import EddyDeskClient
from etl.clients.servicego import ServiceGoClient
from etl.clients.udesk_km import KnowledgeClient
from etl.config import EddyDeskConnection, ServiceGoConnection, UdeskKnowledgeConnection
from etl.diff.columns import Texts, merger
from etl.diff.eddydesk import OPTIONS, WRITABLE
from etl.extract.write_process import WriterProcess
from etl.log import get_logger
from etl.mirror.delete_guard import DeleteGuard
from etl.mirror.rows import RowBuilder
from etl.mirror.write import TableWriter, WriteStats
from etl.streams.eddydesk import Stream

Progress = Callable[[str, int, int | None], None]  # stream, records done, total if known


@dataclass
class RunContext:
    engine: sa.Engine
    client: EddyDeskClient | ServiceGoClient | KnowledgeClient
    connection: str
    settings: EddyDeskConnection | ServiceGoConnection | UdeskKnowledgeConnection
    run_id: int
    selected: frozenset[str]
    stop: threading.Event = field(default_factory=threading.Event)
    stats: WriteStats = field(default_factory=WriteStats)
    progress: Progress | None = None
    base_dir: Path = Path(".")
    mirror_url: str = ""  # for a writer process (the engine's own URL hides the password)
    writer_process_min_pages: int | None = None  # scans this long are written by a process of their own
    delete_guard: DeleteGuard = field(default_factory=DeleteGuard)  # refuses mass deletions (etl.mirror.delete_guard)
    failed_streams: set[str] = field(default_factory=set)  # streams that failed in this run: their absence proves nothing
    _writer_process: WriterProcess | None = None

    @property
    def helpdesk(self) -> EddyDeskClient:
        """The client, in EddyDesk streams (the only ones that run with an EddyDesk connection)."""
        assert isinstance(self.client, EddyDeskClient)
        return self.client

    @property
    def helpdesk_settings(self) -> EddyDeskConnection:
        assert isinstance(self.settings, EddyDeskConnection)
        return self.settings

    @property
    def log(self) -> Any:
        return get_logger(connection=self.connection)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.settings.timezone)

    def writer(self, stream: Stream) -> TableWriter:
        return helpdesk_writer(stream, self.helpdesk_settings, self.connection)

    def start_writer_process(self, module: str) -> None:
        """Start the run's writer process ahead of its first long scan (its start takes about a
        second of CPU, better spent while the run plans than when the first pages wait)."""
        if self.writer_process_min_pages is not None:
            self._running_writer(module)

    def writer_process(self, pages: int, module: str) -> WriterProcess | None:
        """The run's writer process for a scan of `pages` pages, or None when the scan is short.

        Started at the first long scan (importing `module` meanwhile), then shared by the
        run's next scans; one that failed or was stopped is replaced.
        """
        least = self.writer_process_min_pages
        if least is None or pages < least:
            return None
        return self._running_writer(module)

    def _running_writer(self, module: str) -> WriterProcess:
        if self._writer_process is None or not self._writer_process.usable:
            self._writer_process = WriterProcess(module)
            self.log.info("writer_process_started")
        return self._writer_process

    def close(self) -> None:
        """Let the writer process (if any) exit."""
        if self._writer_process is not None:
            self._writer_process.close()
            self._writer_process = None

    def report(self, stream: str, done: int, total: int | None = None) -> None:
        if self.progress:
            self.progress(stream, done, total)


def helpdesk_writer(stream: Stream, settings: EddyDeskConnection, connection: str,
                    keep_local_edits: bool = True, sent: Mapping[Any, Texts] | None = None) -> TableWriter:
    """The writer of an EddyDesk table; with write-back configured, a pull keeps local edits. A
    push writing back the remote's answers gives the values it sent (`sent`, see
    etl.diff.columns.merger), or keeps nothing (`keep_local_edits=False`)."""
    tz = ZoneInfo(settings.timezone)
    builder = RowBuilder(stream.table, tz, settings.language)
    # the three scopes' options share one table, and one push section
    name = OPTIONS if stream.name.endswith("_" + OPTIONS) else stream.name
    push = settings.push.get(name)
    merge = None
    if push is not None and keep_local_edits:
        merge = merger(WRITABLE[name], connection, builder, tz, push.conflict_policy, sent)
    return TableWriter(
        stream.table,
        builder,
        connection,
        secret_keys=() if settings.store_api_keys else stream.secret_keys,
        children=stream.child_rows,
        child_tables=stream.child_tables,
        merge=merge,
    )
