"""Child lists (posts, comments, notes, options, audit, billing): fetched whole per parent.

Parents to visit come from the durable queue `sync_pending_children` (filled in the same
transaction as the parent rows), or, for option lists, from all select/hierarchy fields (the
options of a field gone are marked deleted after them). Each parent's rows and the removal of
its queue entry commit together.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from etl.connectors.eddydesk.client import API_DATE_FORMAT, says_record_missing
from etl.connectors.eddydesk.streams import Stream, parent_queue, select_streams
from etl.connectors.eddydesk.writers import helpdesk, helpdesk_settings, run_writer
from etl.core.errors import ApiError
from etl.core.mirror.pending import done_pending, pending
from etl.core.mirror.write import TableWriter, in_scope
from etl.core.pool import Emit, run_jobs
from etl.core.pull.context import RunContext


def child_streams(ctx: RunContext, parent: Stream) -> tuple[str, ...]:
    """The child streams to queue changed parents of `parent` for.

    Every configured child stream, not only those of this run: a run of `tickets` alone (a
    scheduled job, `--stream tickets`) moves the cursor past these tickets, so their posts must
    wait in the queue for the next run that includes posts.
    """
    configured = {s.name for s in select_streams(helpdesk_settings(ctx).streams)}
    return tuple(name for name in parent.children if name in configured or name in ctx.selected)


def _parents(ctx: RunContext, stream: Stream) -> list[int]:
    with ctx.engine.connect() as conn:
        if stream.parent_query is not None:
            return list(conn.execute(stream.parent_query(ctx.connection)).scalars())
        return pending(conn, ctx.connection, parent_queue(stream), stream.name)


def fetch_all_pages(ctx: RunContext, path: str, parent_id: int,
                    filters: Mapping[str, str] | None = None) -> list[dict[str, Any]] | None:
    """Every record of a child list; None when the API says the parent does not exist (any other
    404, such as a wrong base URL's, fails the stream: it proves nothing about the parent)."""
    try:
        first = helpdesk(ctx).list_page(path, {**(filters or {}), "page": 1})
    except ApiError as exc:
        if says_record_missing(exc, parent_id):
            return None
        raise
    records = list(first.records)
    for page in range(2, first.total_pages + 1):
        records.extend(helpdesk(ctx).list_page(path, {**(filters or {}), "page": page}).records)
    return records


def _newest_mirrored(ctx: RunContext, stream: Stream, parents: list[int]) -> dict[int, str]:
    """A history's newest mirrored entry per parent, as the API's date filter takes it (the
    account's local time, "2017-12-31 00:00:00"; the filter is inclusive, so it is read again)."""
    assert stream.parent_column is not None
    table = stream.table
    column = table.c[stream.parent_column]
    newest: dict[int, str] = {}
    with ctx.engine.connect() as conn:
        for start in range(0, len(parents), 500):
            rows = conn.execute(sa.select(column, sa.func.max(table.c.date_created)).where(
                table.c.connection == ctx.connection, column.in_(parents[start:start + 500])).group_by(column))
            for parent_id, moment in rows:
                if isinstance(moment, str):  # SQLite without the column type's processing (an aggregate)
                    moment = datetime.fromisoformat(moment)
                if moment is not None:
                    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
                    newest[int(parent_id)] = aware.astimezone(ctx.tz).strftime(API_DATE_FORMAT)
    return newest


def run_children(ctx: RunContext, stream: Stream) -> None:
    assert stream.parent_column is not None
    parent_column: str = stream.parent_column
    parents = _parents(ctx, stream)
    writer = run_writer(ctx, stream)
    keyed_by_parent = parent_column in stream.table.primary_key.columns
    queue = None if stream.parent_query is not None else parent_queue(stream)
    # a parent stream that failed in this run (a wrong base URL, an outage) makes every absence
    # suspect: the lists are still read and written, but nothing is marked deleted from them
    parent_ok = stream.parent not in ctx.failed_streams
    trust_absence = parent_ok and stream.history_since is None  # a history's absent entries are older ones
    since = _newest_mirrored(ctx, stream, parents) if stream.history_since is not None else {}
    done = 0

    def job_for(parent_id: int) -> Any:
        filters = {stream.history_since: since[parent_id]} if stream.history_since and parent_id in since else None

        def job(emit: Emit) -> None:
            emit((parent_id, fetch_all_pages(ctx, stream.path.format(parent_id=parent_id), parent_id, filters)))

        return job

    def consume(batch: list[tuple[int, list[dict[str, Any]] | None]]) -> None:
        nonlocal done
        table, column = stream.table, stream.table.c[parent_column]
        parent_ids = [parent_id for parent_id, _ in batch]
        with ctx.engine.begin() as conn:
            if keyed_by_parent:  # option lists: the parent is part of the key
                for parent_id, records in batch:
                    scope = {**stream.scope, parent_column: parent_id}
                    result = writer.upsert(conn, records or [], ctx.run_id, scope=scope)
                    ctx.stats.add(result.stats)
                    vanished = writer.live_ids(conn, scope) - set(result.seen_ids) if trust_absence else set()
                    ctx.stats.deleted += writer.mark_deleted(conn, sorted(vanished), ctx.run_id, scope, guard=ctx.delete_guard)
            else:
                records = [r for _, rs in batch for r in rs or []]
                owners: list[Mapping[str, Any]] = [{parent_column: pid} for pid, rs in batch for _ in rs or []]
                result = writer.upsert(conn, records, ctx.run_id, scope=stream.scope, overrides=owners)
                ctx.stats.add(result.stats)
                known = conn.execute(
                    sa.select(table.c.id).where(
                        table.c.connection == ctx.connection, column.in_(parent_ids), table.c.is_deleted.is_(False)
                    )
                ).scalars()
                vanished = set(known) - set(result.seen_ids) if trust_absence else set()
                ctx.stats.deleted += writer.mark_deleted(conn, sorted(vanished), ctx.run_id, stream.scope,
                                                     guard=ctx.delete_guard)
            if queue is not None and parent_ok:  # option lists are refreshed for all their fields, not queued;
                # untrusted lists stay queued, to be read again (and their absences believed) next run
                done_pending(conn, ctx.connection, queue, stream.name, parent_ids)
        done += len(batch)
        ctx.report(stream.name, done, len(parents))

    run_jobs((job_for(p) for p in parents), consume, workers=helpdesk_settings(ctx).concurrency, stop=ctx.stop)
    if keyed_by_parent and trust_absence:
        _options_of_gone_fields_deleted(ctx, stream, writer, parents)


def _options_of_gone_fields_deleted(ctx: RunContext, stream: Stream, writer: TableWriter, parents: list[int]) -> None:
    """Options of a field that is gone, or no longer a select or hierarchy, are gone with it: its
    list is never read again (the new ones a push would make there stay, as placeholders do)."""
    assert stream.parent_column is not None
    table, column = stream.table, stream.table.c[stream.parent_column]
    with ctx.engine.begin() as conn:
        gone = conn.execute(sa.select(column).distinct().where(
            *in_scope(table, ctx.connection, stream.scope), table.c.is_deleted.is_(False),
            column.not_in(parents))).scalars().all()
        for parent_id in gone:
            scope = {**stream.scope, stream.parent_column: parent_id}
            ctx.stats.deleted += writer.mark_deleted(conn, sorted(writer.live_ids(conn, scope)), ctx.run_id, scope,
                                                 guard=ctx.delete_guard)
