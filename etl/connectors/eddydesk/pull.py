"""One EddyDesk stream of a pull, by its kind (etl.connectors.eddydesk.streams)."""

from __future__ import annotations

from etl.connectors.eddydesk.pull_children import run_children
from etl.connectors.eddydesk.pull_full import run_full
from etl.connectors.eddydesk.pull_windowed import run_windowed
from etl.connectors.eddydesk.reconcile import reconcile
from etl.connectors.eddydesk.streams import Stream
from etl.core.pull.context import RunContext


def run_stream(ctx: RunContext, stream: Stream, full: bool, do_reconcile: bool) -> None:
    if stream.kind == "full":
        run_full(ctx, stream)
    elif stream.kind == "child":
        run_children(ctx, stream)
    else:
        run_windowed(ctx, stream, full=full)
        if do_reconcile:
            reconcile(ctx, stream)
