"""A pull: one connection's streams into the mirror, as its connector plans them."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import sqlalchemy as sa

from etl.core.config import Config, ConnectionSettings
from etl.core.connector import Client, PlannedStream, PullRequest, connector_of
from etl.core.errors import (
    AuthError,
    DesksyncError,
    MassDeleteRefused,
    RateLimitBlocked,
    RemoteError,
    Stopped,
)
from etl.core.http.ratelimit import RateLimiter
from etl.core.log import get_logger
from etl.core.mirror.db import ensure_current, open_engine
from etl.core.mirror.delete_guard import DeleteGuard
from etl.core.mirror.state import record_error, record_success
from etl.core.pull.context import Progress, RunContext
from etl.core.pull.writer_process import WriterProcess
from etl.core.run.records import (
    AccountUse,
    end_run,
    ensure_own_tables,
    long_lived_objects_frozen,
    own_account,
    save_block,
    start_run,
)


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


def connect(name: str, settings: ConnectionSettings, transport: httpx.BaseTransport | None,
            limiters: dict[str, RateLimiter] | None) -> Client:
    """The connection's client (its connector's), on the account's limiters if given."""
    return connector_of(settings).connect(name, settings, transport, limiters)


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
    job: str | None = None,
    limiters: dict[str, RateLimiter] | None = None,
    allow_mass_delete: bool = False,
    waiting: Callable[[float], None] | None = None,
    forked_writer: WriterProcess | None = None,
) -> SyncSummary:
    """Pull one connection's streams into the mirror; one sync_runs row records the run.

    `job` names the scheduled job that asked (run history); `limiters` shares an account's rate
    budgets between concurrent jobs of that account (see `own_account`); `allow_mass_delete`
    lifts the mass-delete guard (etl.core.mirror.delete_guard) for this run; `forked_writer` writes the
    run's long scans (forked before this process opened the mirror, see etl.core.pull.writer_process;
    the run closes it).
    """
    settings = config.connection(connection)
    engine = open_engine(config.mirror.resolved_url(config.base_dir))
    try:
        ensure_current(engine)
        ensure_own_tables(engine, settings)
        with own_account(engine, connection, settings, limiters) as limiters:
            return pull(config, engine, connection, settings, streams, full=full, reconcile_deletes=reconcile_deletes,
                         progress=progress, transport=transport, stop=stop, job=job, limiters=limiters,
                         allow_mass_delete=allow_mass_delete, waiting=waiting, forked_writer=forked_writer)
    finally:
        engine.dispose()
        if forked_writer is not None:
            forked_writer.close()


def pull(config: Config, engine: sa.Engine, connection: str, settings: ConnectionSettings, streams: tuple[str, ...], *,
          full: bool, reconcile_deletes: bool, progress: Progress | None, transport: httpx.BaseTransport | None,
          stop: Any, job: str | None, limiters: dict[str, RateLimiter] | None,
          allow_mass_delete: bool = False, waiting: Callable[[float], None] | None = None,
          forked_writer: WriterProcess | None = None) -> SyncSummary:
    try:
        plan = connector_of(settings).plan_pull(
            PullRequest(engine, connection, settings, streams, full, reconcile_deletes))
    except ValueError as exc:
        raise DesksyncError(str(exc)) from None
    started = time.perf_counter()
    run_id = start_run(engine, connection, "sync", [p.name for p in plan], job)
    try:
        client = connect(connection, settings, transport, limiters)
    except DesksyncError as exc:  # a missing variable, say: a failed run in the history, with why
        end_run(engine, run_id, "failed", f"run: {exc}")
        raise
    ctx = RunContext(engine, client, connection, settings, run_id, frozenset(p.name for p in plan), progress=progress,
                     base_dir=config.base_dir, mirror_url=config.mirror.resolved_url(config.base_dir),
                     writer_process_min_pages=config.mirror.writer_process_min_pages, forked_writer=forked_writer,
                     delete_guard=DeleteGuard(config.mirror.mass_delete_share, config.mirror.mass_delete_min_rows,
                                              allowed=allow_mass_delete))
    if stop is not None:
        ctx.stop = stop
    for session in client.sessions():
        session.stop = ctx.stop  # a rate-limit wait or a retry's backoff ends at once when the run stops
        session.on_wait = waiting
    summary = SyncSummary(run_id, connection, "failed")  # until the streams loop completes
    try:
        with AccountUse(engine, connection, client), long_lived_objects_frozen():
            _run_streams(ctx, plan, summary)
        summary.status = "failed" if summary.errors else "ok"
    except (Stopped, KeyboardInterrupt):
        summary.status = "interrupted"
        raise
    except DesksyncError as exc:
        summary.status = "failed"
        summary.errors["run"] = str(exc)
        raise
    except Exception as exc:  # a database error, say: the run's row says what ended it
        summary.status = "failed"
        summary.errors["run"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        summary.seconds = time.perf_counter() - started
        _finish_run(engine, summary, client, ctx)
        client.close()
    return summary


def _run_streams(ctx: RunContext, plan: list[PlannedStream], summary: SyncSummary) -> None:
    """Each planned stream in turn; one that fails is recorded and the others go on, unless what
    ended it would end every other stream the same way."""
    log = get_logger(connection=ctx.connection)
    blocked_budgets: set[str] = set()
    for planned in plan:
        if planned.budget in blocked_budgets:
            summary.errors[planned.name] = f"skipped: the {planned.budget} budget is blocked"
            continue
        log.info("stream_started", stream=planned.name)
        try:
            planned.run(ctx)
        except AuthError:
            raise  # every other stream would be refused the same way
        except (Stopped, KeyboardInterrupt):
            raise
        except (RemoteError, MassDeleteRefused) as exc:
            if isinstance(exc, RateLimitBlocked):
                save_block(ctx.engine, ctx.connection, exc)
                blocked_budgets.add(exc.budget)
            _stream_failed(ctx, summary, planned, str(exc))
        except DesksyncError:
            raise  # the mirror or the configuration: every other stream would fail the same way
        except _DATA_BUGS as exc:  # code meeting data it did not foresee: one stream's trouble
            log.exception("stream_crashed", stream=planned.name)
            _stream_failed(ctx, summary, planned, f"internal error: {type(exc).__name__}: {exc}")
        else:
            if planned.records_success:
                record_success(ctx.engine, ctx.connection, planned.key)
            log.info("stream_finished", stream=planned.name)


# What code raises on data it did not foresee (a crash of one stream, which must not stop the
# others); the database's and the machine's errors stop the run, as every stream would meet them.
_DATA_BUGS = (AttributeError, TypeError, LookupError, ValueError, ArithmeticError)


def _stream_failed(ctx: RunContext, summary: SyncSummary, planned: PlannedStream, error: str) -> None:
    """One stream failed: said in the run's summary and the stream's state; the run goes on."""
    ctx.failed_streams.add(planned.name)
    summary.errors[planned.name] = error
    record_error(ctx.engine, ctx.connection, planned.key, error)
    get_logger(connection=ctx.connection).error("stream_failed", stream=planned.name, error=error)


def _finish_run(engine: sa.Engine, summary: SyncSummary, client: Client, ctx: RunContext) -> None:
    """Copy the run's counters into the summary and its sync_runs row."""
    metrics, stats = client.session.metrics, ctx.stats
    summary.requests, summary.retries = metrics.requests, metrics.retries
    summary.rate_limit_rejections = metrics.rate_limit_rejections
    summary.rate_limit_wait_seconds = client.session.rate_limit_wait_seconds
    summary.inserted, summary.updated, summary.deleted = stats.inserted, stats.updated, stats.deleted
    summary.unchanged, summary.problems = stats.unchanged, stats.problems
    end_run(engine, summary.run_id, summary.status, "; ".join(f"{k}: {v}" for k, v in summary.errors.items()) or None,
             requests=summary.requests, rate_limit_wait_seconds=summary.rate_limit_wait_seconds,
             rows_inserted=summary.inserted, rows_updated=summary.updated, rows_deleted=summary.deleted,
             records_read=summary.inserted + summary.updated + summary.unchanged)
