"""EddyDesk's table writers, and its client and settings as a run holds them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo

from etl.connectors.eddydesk.client import EddyDeskClient
from etl.connectors.eddydesk.diff import OPTIONS, WRITABLE
from etl.connectors.eddydesk.settings import EddyDeskConnection
from etl.connectors.eddydesk.streams import BY_NAME, Stream
from etl.core.mirror.rows import RowBuilder
from etl.core.mirror.write import TableWriter
from etl.core.pull.context import RunContext
from etl.core.push.columns import Texts, merger


def helpdesk(ctx: RunContext) -> EddyDeskClient:
    """The run's client (EddyDesk streams run only with an EddyDesk connection)."""
    assert isinstance(ctx.client, EddyDeskClient)
    return ctx.client


def helpdesk_settings(ctx: RunContext) -> EddyDeskConnection:
    assert isinstance(ctx.settings, EddyDeskConnection)
    return ctx.settings


def run_writer(ctx: RunContext, stream: Stream) -> TableWriter:
    """The writer of a stream's table in a pull."""
    return helpdesk_writer(stream, helpdesk_settings(ctx), ctx.connection)


def stream_writer(stream: str, settings: EddyDeskConnection, connection: str) -> TableWriter:
    """`helpdesk_writer` by stream name: picklable as a partial, for a writer process."""
    return helpdesk_writer(BY_NAME[stream], settings, connection)


def helpdesk_writer(stream: Stream, settings: EddyDeskConnection, connection: str,
                    keep_local_edits: bool = True, sent: Mapping[Any, Texts] | None = None) -> TableWriter:
    """The writer of an EddyDesk table; with write-back configured, a pull keeps local edits. A
    push writing back the remote's answers gives the values it sent (`sent`, see
    etl.core.push.columns.merger), or keeps nothing (`keep_local_edits=False`)."""
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
