"""What every stream run needs, passed in explicitly."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from etl.clients.eddydesk import EddyDeskClient
from etl.clients.servicego import ServiceGoClient
from etl.clients.udesk_km import KnowledgeClient
from etl.config import EddyDeskConnection, ServiceGoConnection, UdeskKnowledgeConnection
from etl.log import get_logger
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
        assert isinstance(self.settings, EddyDeskConnection)
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
