"""Small lists without an updated-since filter: fetched whole every run, compared by hash."""

from __future__ import annotations

from typing import Any

from etl.connectors.eddydesk.streams import Stream
from etl.connectors.eddydesk.writers import helpdesk, helpdesk_settings, run_writer
from etl.core.pool import Emit, run_jobs
from etl.core.pull.context import RunContext


def run_full(ctx: RunContext, stream: Stream) -> None:
    first = helpdesk(ctx).list_page(stream.path, {"page": 1})
    records: list[dict[str, Any]] = list(first.records)

    def job_for(page: int) -> Any:
        def job(emit: Emit) -> None:
            emit(helpdesk(ctx).list_page(stream.path, {"page": page}).records)

        return job

    def consume(batch: list[list[dict[str, Any]]]) -> None:
        for page_records in batch:
            records.extend(page_records)

    run_jobs(
        (job_for(p) for p in range(2, first.total_pages + 1)), consume, workers=helpdesk_settings(ctx).concurrency, stop=ctx.stop
    )
    writer = run_writer(ctx, stream)
    with ctx.engine.begin() as conn:
        result = writer.upsert(conn, records, ctx.run_id, scope=stream.scope)
        vanished = writer.live_ids(conn, stream.scope) - set(result.seen_ids)
        deleted = writer.mark_deleted(conn, sorted(vanished), ctx.run_id, stream.scope, guard=ctx.delete_guard)
    ctx.stats.add(result.stats)
    ctx.stats.deleted += deleted
    ctx.report(stream.name, len(records), len(records))
