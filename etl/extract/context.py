"""What every stream run needs, passed in explicitly."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from etl.clients.eddydesk import EddyDeskClient
from etl.config import EddyDeskConnection
from etl.mirror.rows import RowBuilder
from etl.mirror.write import TableWriter, WriteStats
from etl.streams.eddydesk import Stream

Progress = Callable[[str, int, int | None], None]  # stream, records done, total if known


@dataclass
class RunContext:
    engine: sa.Engine
    client: EddyDeskClient
    connection: str
    settings: EddyDeskConnection
    run_id: int
    selected: frozenset[str]
    stop: threading.Event = field(default_factory=threading.Event)
    stats: WriteStats = field(default_factory=WriteStats)
    progress: Progress | None = None

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.settings.timezone)

    def writer(self, stream: Stream) -> TableWriter:
        builder = RowBuilder(stream.table, self.tz, self.settings.language)
        secrets = () if self.settings.store_api_keys else stream.secret_keys
        return TableWriter(
            stream.table,
            builder,
            self.connection,
            secret_keys=secrets,
            children=stream.child_rows,
            child_tables=stream.child_tables,
        )

    def report(self, stream: str, done: int, total: int | None = None) -> None:
        if self.progress:
            self.progress(stream, done, total)
