"""EddyDesk's incremental lists (seed 003: from_/to_date_updated, order_by date_updated{asc}),
scanned by the engine's windowed scan (etl.core.pull.windowed); each variant keeps its own cursor."""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa

from etl.connectors.eddydesk.pull_children import child_streams
from etl.connectors.eddydesk.streams import Stream, Variant, children_queue
from etl.connectors.eddydesk.writers import helpdesk, helpdesk_settings, stream_writer
from etl.core.mirror.pending import Queue, add_pending
from etl.core.pull.context import RunContext
from etl.core.pull.windowed import DatePaging, WindowedList
from etl.core.pull.windowed import run_windowed as scan_windowed

PAGING = DatePaging(since="from_date_updated", until="to_date_updated", updated_field="date_updated",
                    fixed={"order_by": "date_updated{asc}"})


def state_key(stream: Stream, variant: Variant) -> str:
    return f"{stream.name}/{variant.suffix}" if variant.suffix else stream.name


def _queue_children(connection: str, queue: Queue, children: tuple[str, ...], conn: sa.Connection,
                    changed_ids: list[Any]) -> None:
    add_pending(conn, connection, queue, children, changed_ids)


def windowed_list(ctx: RunContext, stream: Stream, variant: Variant) -> WindowedList:
    settings = helpdesk_settings(ctx)
    return WindowedList(
        key=state_key(stream, variant),
        path=stream.path,
        paging=PAGING,
        list_page=helpdesk(ctx).list_page,
        writer=functools.partial(stream_writer, stream.name, settings, ctx.connection),
        concurrency=settings.concurrency,
        lookback_seconds=settings.lookback_seconds,
        filters=variant.params,
        marks_deleted=variant.marks_deleted,
        after_write=functools.partial(_queue_children, ctx.connection, children_queue(stream),
                                      child_streams(ctx, stream)),
    )


def run_windowed(ctx: RunContext, stream: Stream, *, full: bool = False) -> None:
    for variant in stream.variants:
        scan_windowed(ctx, windowed_list(ctx, stream, variant), full=full)
