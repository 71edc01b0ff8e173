"""Find records deleted outright (not soft-deleted): compare every remote id with the mirror.

The children (replies, notes) of every record that is gone are marked deleted with it, whatever
state the record was in: a soft-deleted ticket keeps them until it is deleted outright.

EddyDesk has no deleted-records feed for hard deletes, so the reconciliation pass walks the
whole list (by key, like any scan) and collects ids. A record updated during that walk moves
past the walk's upper bound and looks missing, so candidates are re-checked with a short scan
of [walk end - lookback, now] (repeated while it keeps finding some) before they are marked.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from etl.connectors.eddydesk.pull_windowed import windowed_list
from etl.connectors.eddydesk.streams import BY_NAME, Stream
from etl.connectors.eddydesk.writers import helpdesk_settings, run_writer
from etl.core.mirror.state import load_state, save_state
from etl.core.pull.context import RunContext
from etl.core.pull.window import fmt, local_now, window_start
from etl.core.pull.windowed import WindowScan

_RECHECK_ROUNDS = 3


def _scan_ids(ctx: RunContext, stream: Stream, lo: str | None, hi: str) -> set[Any]:
    seen: set[Any] = set()
    for variant in stream.variants:
        scan = WindowScan(ctx, windowed_list(ctx, stream, variant), persist=False)
        slices, prefetched = scan.plan(lo, hi)
        scan.run(slices, prefetched, hi, {})
        seen |= scan.outcome.seen_ids
    return seen


def reconcile(ctx: RunContext, stream: Stream) -> int:
    hi = fmt(local_now(ctx.tz))
    seen = _scan_ids(ctx, stream, None, hi)
    writer = run_writer(ctx, stream)
    t = writer.table
    with ctx.engine.connect() as conn:
        # every row, soft-deleted ones too: a record deleted outright after it was soft-deleted
        # takes its replies and notes with it, and only its absence from both lists says so
        candidates = set(conn.execute(sa.select(t.c.id).where(t.c.connection == ctx.connection, t.c.id > 0))
                         .scalars()) - seen
    for _ in range(_RECHECK_ROUNDS):
        if not candidates:
            break
        lo, hi = window_start(hi, helpdesk_settings(ctx).lookback_seconds), fmt(local_now(ctx.tz))
        candidates -= _scan_ids(ctx, stream, lo, hi)
    gone = sorted(candidates)
    with ctx.engine.begin() as conn:
        deleted = writer.mark_deleted(conn, gone, ctx.run_id, guard=ctx.delete_guard)
        for child_name in stream.children:
            child = BY_NAME[child_name]
            assert child.parent_column is not None
            child_writer = run_writer(ctx, child)
            for start in range(0, len(gone), 500):
                ids = list(
                    conn.execute(
                        sa.select(child.table.c.id).where(
                            child.table.c.connection == ctx.connection,
                            child.table.c[child.parent_column].in_(gone[start : start + 500]),
                        )
                    ).scalars()
                )
                deleted += child_writer.mark_deleted(conn, ids, ctx.run_id, guard=ctx.delete_guard)
        state = load_state(conn, ctx.connection, f"{stream.name}/reconcile")
        save_state(conn, ctx.connection, f"{stream.name}/reconcile",
                   {**state, "last_reconcile_at_utc": datetime.now(UTC).isoformat()}, success=True)
    ctx.stats.deleted += deleted
    return len(gone)
