"""Jobs shared by the command line and the scheduler: init, sync, status."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa

from etl.clients import eddydesk
from etl.config import Config
from etl.errors import AuthError, DesksyncError, RateLimitBlocked, RemoteError
from etl.extract.children import run_children
from etl.extract.context import Progress, RunContext
from etl.extract.full import run_full
from etl.extract.pool import Stopped
from etl.extract.reconcile import reconcile
from etl.extract.windowed import run_windowed
from etl.log import get_logger
from etl.mirror.base import table_of
from etl.mirror.db import ensure_current, open_engine, upgrade
from etl.mirror.meta import AccountBlock, SyncRun, SyncState
from etl.mirror.state import load_state, record_error, record_success, save_state
from etl.streams.eddydesk import Stream, select_streams

_RUNS = table_of(SyncRun)
_BLOCKS = table_of(AccountBlock)


@dataclass
class SyncSummary:
    run_id: int
    connection: str
    status: str
    requests: int = 0
    retries: int = 0
    rate_limit_rejections: int = 0
    rate_limit_wait_seconds: float = 0.0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    problems: int = 0
    seconds: float = 0.0
    errors: dict[str, str] = field(default_factory=dict)


def init(config: Config) -> str:
    engine = open_engine(config.mirror.resolved_url(config.base_dir))
    try:
        return upgrade(engine)
    finally:
        engine.dispose()


def _check_blocks(engine: sa.Engine, connection: str, client: eddydesk.EddyDeskClient) -> None:
    """Carry blocks recorded by earlier runs into this run's limiters."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(_BLOCKS).where(_BLOCKS.c.connection == connection)).mappings().all()
    for row in rows:
        until = row["blocked_until"]
        if until.tzinfo is None:
            until = until.replace(tzinfo=UTC)
        limiter = client.session.limiters.get(row["budget"])
        if limiter is not None and until > datetime.now(UTC):
            limiter.block_until_wall_time(until.timestamp())


def _save_block(engine: sa.Engine, connection: str, exc: RateLimitBlocked) -> None:
    until = datetime.fromtimestamp(exc.blocked_until, UTC)
    with engine.begin() as conn:
        conn.execute(_BLOCKS.delete().where(_BLOCKS.c.connection == connection, _BLOCKS.c.budget == exc.budget))
        conn.execute(_BLOCKS.insert().values(connection=connection, budget=exc.budget, blocked_until=until, reason=str(exc)))


def _reconcile_due(engine: sa.Engine, connection: str, stream: Stream, every_hours: float) -> bool:
    if every_hours <= 0:
        return False
    key = f"{stream.name}/reconcile"
    with engine.begin() as conn:
        state = load_state(conn, connection, key)
        last = state.get("last_reconcile_at_utc")
        if last is None:
            # the first backfill sees every id anyway: the cadence starts now
            save_state(conn, connection, key, {**state, "last_reconcile_at_utc": datetime.now(UTC).isoformat()})
            return False
    return datetime.fromisoformat(last) < datetime.now(UTC) - timedelta(hours=every_hours)


def _run_stream(ctx: RunContext, stream: Stream, full: bool, do_reconcile: bool) -> None:
    if stream.kind == "full":
        run_full(ctx, stream)
    elif stream.kind == "child":
        run_children(ctx, stream)
    else:
        run_windowed(ctx, stream, full=full)
        if do_reconcile:
            reconcile(ctx, stream)


def sync(
    config: Config,
    connection: str,
    streams: tuple[str, ...] = (),
    *,
    full: bool = False,
    reconcile_deletes: bool = False,
    progress: Progress | None = None,
    transport: httpx.BaseTransport | None = None,
    stop: Any = None,
) -> SyncSummary:
    settings = config.connection(connection)
    try:
        chosen = select_streams(settings.streams, streams)
    except ValueError as exc:
        raise DesksyncError(str(exc)) from None
    engine = open_engine(config.mirror.resolved_url(config.base_dir))
    ensure_current(engine)
    client = eddydesk.connect(connection, settings, transport=transport)
    log = get_logger(connection=connection)
    started = time.perf_counter()
    with engine.begin() as conn:
        run_id = conn.execute(
            _RUNS.insert().values(
                connection=connection, kind="sync", started_at=datetime.now(UTC), status="running",
                streams=[s.name for s in chosen],
            )
        ).inserted_primary_key[0]  # type: ignore[index]
    ctx = RunContext(engine, client, connection, settings, run_id, frozenset(s.name for s in chosen), progress=progress)
    if stop is not None:
        ctx.stop = stop
    summary = SyncSummary(run_id, connection, "failed")  # until the streams loop completes
    blocked_budgets: set[str] = set()
    try:
        _check_blocks(engine, connection, client)
        for stream in chosen:
            budget = eddydesk.budget_of(stream.path)
            if budget in blocked_budgets:
                summary.errors[stream.name] = f"skipped: the {budget} budget is blocked"
                continue
            do_reconcile = reconcile_deletes or _reconcile_due(engine, connection, stream, settings.reconcile_every_hours)
            log.info("stream_started", stream=stream.name, kind=stream.kind)
            try:
                _run_stream(ctx, stream, full, do_reconcile and stream.kind == "windowed")
            except AuthError:
                raise  # every other stream would be refused the same way
            except RemoteError as exc:
                if isinstance(exc, RateLimitBlocked):
                    _save_block(engine, connection, exc)
                    blocked_budgets.add(exc.budget)
                summary.errors[stream.name] = str(exc)
                record_error(engine, connection, stream.name, str(exc))
                log.error("stream_failed", stream=stream.name, error=str(exc))
            else:
                if stream.kind != "windowed":  # windowed streams record success with their cursor
                    record_success(engine, connection, stream.name)
                log.info("stream_finished", stream=stream.name)
        summary.status = "failed" if summary.errors else "ok"
    except (Stopped, KeyboardInterrupt):
        summary.status = "interrupted"
        raise
    except DesksyncError as exc:
        summary.status = "failed"
        summary.errors["run"] = str(exc)
        raise
    finally:
        summary.seconds = time.perf_counter() - started
        _finish_run(engine, summary, client, ctx)
        client.close()
        engine.dispose()
    return summary


def _finish_run(engine: sa.Engine, summary: SyncSummary, client: eddydesk.EddyDeskClient, ctx: RunContext) -> None:
    """Copy the run's counters into the summary and its sync_runs row."""
    metrics, stats = client.session.metrics, ctx.stats
    summary.requests, summary.retries = metrics.requests, metrics.retries
    summary.rate_limit_rejections = metrics.rate_limit_rejections
    summary.rate_limit_wait_seconds = client.session.rate_limit_wait_seconds
    summary.inserted, summary.updated, summary.deleted = stats.inserted, stats.updated, stats.deleted
    summary.unchanged, summary.problems = stats.unchanged, stats.problems
    with engine.begin() as conn:
        conn.execute(
            _RUNS.update().where(_RUNS.c.id == summary.run_id).values(
                finished_at=datetime.now(UTC),
                status=summary.status,
                requests=summary.requests,
                rate_limit_wait_seconds=summary.rate_limit_wait_seconds,
                rows_inserted=summary.inserted,
                rows_updated=summary.updated,
                rows_deleted=summary.deleted,
                error="; ".join(f"{k}: {v}" for k, v in summary.errors.items()) or None,
            )
        )


def status(config: Config) -> dict[str, Any]:
    """Per connection and stream: last success, cursor, rows, deleted rows, last error."""
    engine = open_engine(config.mirror.resolved_url(config.base_dir))
    ensure_current(engine)
    out: dict[str, Any] = {}
    st = table_of(SyncState)
    try:
        with engine.connect() as conn:
            states = {(r.connection, r.stream): r for r in conn.execute(sa.select(st))}
            blocks = conn.execute(sa.select(_BLOCKS)).mappings().all()
            for name, settings in config.connections.items():
                streams_out: dict[str, Any] = {}
                for stream in select_streams(settings.streams):
                    t = stream.table
                    counts = conn.execute(
                        sa.select(
                            sa.func.count(),
                            sa.func.sum(sa.case((t.c.is_deleted.is_(True), 1), else_=0)),
                        ).where(t.c.connection == name)
                    ).one()
                    row = states.get((name, stream.name))
                    state = dict(row.state) if row else {}
                    deleted_state = states.get((name, f"{stream.name}/deleted"))
                    streams_out[stream.name] = {
                        "rows": int(counts[0] or 0),
                        "deleted_rows": int(counts[1] or 0),
                        "cursor": state.get("cursor"),
                        "scan_in_progress": bool(state.get("scan")) or bool(deleted_state and deleted_state.state.get("scan")),
                        "last_success_at": row.last_success_at.isoformat() if row and row.last_success_at else None,
                        "last_error": row.last_error if row else None,
                    }
                last_run = conn.execute(
                    sa.select(_RUNS).where(_RUNS.c.connection == name).order_by(_RUNS.c.id.desc()).limit(1)
                ).mappings().first()
                out[name] = {
                    "streams": streams_out,
                    "last_run": {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in last_run.items()} if last_run else None,
                    "blocks": [
                        {"budget": b["budget"], "blocked_until": b["blocked_until"].isoformat(), "reason": b["reason"]}
                        for b in blocks if b["connection"] == name
                    ],
                }
    finally:
        engine.dispose()
    return out
