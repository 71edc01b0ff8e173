"""Jobs shared by the command line and the scheduler: init, sync, status."""

from __future__ import annotations

import functools
import gc
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import sqlalchemy as sa

from etl.config import (
    Config,
    Connection,
    EddyDeskConnection,
    ServiceGoConnection,
    ServiceGoObject,
    UdeskKnowledgeConnection,
)
from etl.connectors.eddydesk import client as eddydesk
from etl.connectors.eddydesk.pull_children import run_children
from etl.connectors.eddydesk.pull_full import run_full
from etl.connectors.eddydesk.reconcile import reconcile
from etl.connectors.eddydesk.streams import Stream, select_streams
from etl.connectors.udesk.knowledge import client as udesk_km
from etl.connectors.udesk.knowledge.pull import run_stream as run_knowledge_stream
from etl.connectors.udesk.knowledge.pull import select_streams as select_knowledge_streams
from etl.connectors.udesk.servicego import client as servicego
from etl.connectors.udesk.servicego.deletes import find_deletions
from etl.connectors.udesk.servicego.models import ObjectSchema
from etl.connectors.udesk.servicego.models import table_name as table_name_of
from etl.connectors.udesk.servicego.pull import ObjectSync, search_args, state_key
from etl.connectors.udesk.servicego.related import refresh as refresh_related
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
from etl.core.mirror.base import table_of
from etl.core.mirror.db import ensure_current, open_engine, upgrade
from etl.core.mirror.delete_guard import DeleteGuard
from etl.core.mirror.meta import AccountBlock, SyncRun, SyncState
from etl.core.mirror.normalize import iso_utc
from etl.core.mirror.state import load_state, record_error, record_success, save_state
from etl.core.pipelines.stage import LINKS, IdMap, StepReport, stage
from etl.core.pipelines.targets import target_of
from etl.core.pull.context import Progress, RunContext
from etl.core.pull.windowed import run_windowed
from etl.core.pull.writer_process import WriterProcess
from etl.core.push.conflicts import open_conflicts
from etl.core.push.journal import HELD, release
from etl.core.run.locks import account_lease

_RUNS = table_of(SyncRun)
Client = eddydesk.EddyDeskClient | servicego.ServiceGoClient | udesk_km.KnowledgeClient
_BLOCKS = table_of(AccountBlock)


def _start_run(engine: sa.Engine, connection: str, kind: str, streams: list[str], job: str | None) -> int:
    """A run's sync_runs row, "running" until `_end_run`.

    A run starts only under its account's lease (etl.core.run.locks), so any other run of the account still
    "running" belongs to a process that ended without finishing it (killed, or its machine lost):
    it is marked "abandoned" here, with who ran it. Runs of this very process are left alone.
    """
    host, pid = socket.gethostname(), os.getpid()
    with engine.begin() as conn:
        conn.execute(_RUNS.update().where(
            _RUNS.c.connection == connection, _RUNS.c.status == "running",
            sa.not_(sa.and_(_RUNS.c.host == host, _RUNS.c.pid == pid))).values(
            status="abandoned", finished_at=datetime.now(UTC),
            error=sa.literal("abandoned: its process (") + sa.func.coalesce(_RUNS.c.host, "?") + sa.literal(", pid ")
            + sa.func.coalesce(sa.cast(_RUNS.c.pid, sa.String), "?")
            + sa.literal(") ended without finishing it; the next run resumed from its checkpoint")))
        return int(conn.execute(_RUNS.insert().values(
            connection=connection, kind=kind, started_at=datetime.now(UTC), status="running", streams=streams,
            job=job, host=host, pid=pid,
        )).inserted_primary_key[0])  # type: ignore[index]


@dataclass
class _Ending:
    """How a recorded run ended: "ok" once its work is done, or what `_ending` saw end it."""

    status: str = "failed"
    error: str | None = None


@contextmanager
def _ending(ending: _Ending) -> Iterator[None]:
    try:
        yield
    except (Stopped, KeyboardInterrupt):
        ending.status = "interrupted"
        raise
    except DesksyncError as exc:
        ending.error = str(exc)
        raise


def _end_run(engine: sa.Engine, run_id: int, status: str, error: str | None, **counts: Any) -> None:
    with engine.begin() as conn:
        conn.execute(_RUNS.update().where(_RUNS.c.id == run_id).values(
            finished_at=datetime.now(UTC), status=status, error=error, **counts))


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


def _check_blocks(engine: sa.Engine, connection: str, client: Client) -> None:
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


def _reconcile_due(engine: sa.Engine, connection: str, stream: str, every_hours: float) -> bool:
    if every_hours <= 0:
        return False
    key = f"{stream}/reconcile"
    with engine.begin() as conn:
        state = load_state(conn, connection, key)
        last = state.get("last_reconcile_at_utc")
        if last is None:
            # the first backfill sees every id anyway: the cadence starts now
            save_state(conn, connection, key, {**state, "last_reconcile_at_utc": datetime.now(UTC).isoformat()})
            return False
    return datetime.fromisoformat(last) < datetime.now(UTC) - timedelta(hours=every_hours)


def _reconciled(engine: sa.Engine, connection: str, stream: str) -> None:
    key = f"{stream}/reconcile"
    with engine.begin() as conn:
        save_state(conn, connection, key, {"last_reconcile_at_utc": datetime.now(UTC).isoformat()})


def _run_stream(ctx: RunContext, stream: Stream, full: bool, do_reconcile: bool) -> None:
    if stream.kind == "full":
        run_full(ctx, stream)
    elif stream.kind == "child":
        run_children(ctx, stream)
    else:
        run_windowed(ctx, stream, full=full)
        if do_reconcile:
            reconcile(ctx, stream)


@dataclass(frozen=True)
class PlannedStream:
    """One stream of a run: its name, the rate budget it draws on, and how to run it."""

    name: str
    budget: str
    run: Callable[[RunContext], None]
    records_success: bool = True  # False: the stream records success with its own cursor
    state_key: str = ""  # the stream's sync_state row, when not its name

    @property
    def key(self) -> str:
        return self.state_key or self.name


def _eddydesk_plan(settings: EddyDeskConnection, requested: tuple[str, ...], full: bool, reconcile_deletes: bool,
                   engine: sa.Engine, connection: str) -> list[PlannedStream]:
    chosen = select_streams(settings.streams, requested)
    plan = []
    for stream in chosen:
        due = stream.kind == "windowed" and (
            reconcile_deletes or _reconcile_due(engine, connection, stream.name, settings.reconcile_every_hours))
        plan.append(PlannedStream(stream.name, eddydesk.budget_of(stream.path),
                                  functools.partial(_run_stream, stream=stream, full=full, do_reconcile=due),
                                  records_success=stream.kind != "windowed"))
    return plan


def _servicego_plan(settings: ServiceGoConnection, requested: tuple[str, ...], full: bool, reconcile_deletes: bool,
                    engine: sa.Engine, connection: str) -> list[PlannedStream]:
    known = [o.name for o in settings.objects]
    unknown = [n for n in requested if n not in known]
    if unknown:
        raise ValueError(f"unknown object {unknown[0]!r} (configured: {', '.join(known)})")

    def run(ctx: RunContext, obj: ServiceGoObject) -> None:
        assert isinstance(ctx.client, servicego.ServiceGoClient)
        sync_ = ObjectSync(ctx, obj)
        sync_.run(full)
        # Even after a full scan: one that was resumed cannot have seen deletions among the
        # records it read before the interruption. Equal counts cost one request.
        due = reconcile_deletes or _reconcile_due(engine, connection, sync_.key, settings.reconcile_every_hours)
        total = ctx.client.scroll_search(obj.name, 0, page_size=1, **search_args(obj)).total
        ctx.stats.deleted += find_deletions(sync_, total, full_pass=due)
        if due:
            _reconciled(engine, connection, sync_.key)
        refresh_related(ctx, obj)

    return [PlannedStream(o.name, "main", functools.partial(run, obj=o), False, state_key(o.name))
            for o in settings.objects if not requested or o.name in requested]


def _knowledge_plan(settings: UdeskKnowledgeConnection, requested: tuple[str, ...]) -> list[PlannedStream]:
    return [PlannedStream(s.name, "main", functools.partial(run_knowledge_stream, stream=s))
            for s in select_knowledge_streams(requested, settings)]


def _own_account(engine: sa.Engine, connection: str,
                 limiters: dict[str, RateLimiter] | None) -> AbstractContextManager[None]:
    """A run given no limiters holds the account's lease for its length (etl.core.run.locks: refused while
    another process spends the account's budget); one given the scheduler's limiters runs under
    the lease its job holds."""
    return nullcontext() if limiters is not None else account_lease(engine, connection)


def new_limiters(settings: Connection) -> dict[str, RateLimiter]:
    """An account's rate budgets; the scheduler hands one set to every job of the account."""
    if isinstance(settings, ServiceGoConnection):
        return servicego.new_limiters(settings)
    if isinstance(settings, UdeskKnowledgeConnection):
        return udesk_km.new_limiters(settings)
    return eddydesk.new_limiters(settings)


def _connect(name: str, settings: Connection, transport: httpx.BaseTransport | None,
             limiters: dict[str, RateLimiter] | None) -> Client:
    if isinstance(settings, ServiceGoConnection):
        return servicego.connect(name, settings, transport, limiters)
    if isinstance(settings, UdeskKnowledgeConnection):
        return udesk_km.connect(name, settings, transport, limiters)
    return eddydesk.connect(name, settings, transport=transport, limiters=limiters)


_frozen_by_runs = 0  # runs of this process inside `long_lived_objects_frozen`
_frozen_lock = threading.Lock()


@contextmanager
def long_lived_objects_frozen() -> Iterator[None]:
    """Keep the cycle collector off what lives for the whole run (modules, settings, engine).

    A scan allocates containers by the million; each young-generation collection that ends in an
    older one walked every imported module's objects again (README, How a sync works). Frozen objects are still freed by reference counting. Where runs share the
    process (the scheduler), the first to start collects and freezes and the last to end
    unfreezes: a full collection at every run's start stopped every other run's threads (with
    many accounts, often), and an unfreeze at one run's end undid the others'.
    """
    global _frozen_by_runs
    with _frozen_lock:
        if _frozen_by_runs == 0:
            gc.collect()
            gc.freeze()
        _frozen_by_runs += 1
    try:
        yield
    finally:
        with _frozen_lock:
            _frozen_by_runs -= 1
            if _frozen_by_runs == 0:
                gc.unfreeze()  # back to the collector, for a long-lived process


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
    budgets between concurrent jobs of that account (see `_own_account`); `allow_mass_delete`
    lifts the mass-delete guard (etl.core.mirror.delete_guard) for this run; `forked_writer` writes the
    run's long scans (forked before this process opened the mirror, see etl.core.pull.writer_process;
    the run closes it).
    """
    settings = config.connection(connection)
    engine = open_engine(config.mirror.resolved_url(config.base_dir))
    try:
        ensure_current(engine)
        with _own_account(engine, connection, limiters):
            return _sync(config, engine, connection, settings, streams, full=full, reconcile_deletes=reconcile_deletes,
                         progress=progress, transport=transport, stop=stop, job=job, limiters=limiters,
                         allow_mass_delete=allow_mass_delete, waiting=waiting, forked_writer=forked_writer)
    finally:
        engine.dispose()
        if forked_writer is not None:
            forked_writer.close()


def _sync(config: Config, engine: sa.Engine, connection: str, settings: Connection, streams: tuple[str, ...], *,
          full: bool, reconcile_deletes: bool, progress: Progress | None, transport: httpx.BaseTransport | None,
          stop: Any, job: str | None, limiters: dict[str, RateLimiter] | None,
          allow_mass_delete: bool = False, waiting: Callable[[float], None] | None = None,
          forked_writer: WriterProcess | None = None) -> SyncSummary:
    try:
        if isinstance(settings, ServiceGoConnection):
            plan = _servicego_plan(settings, streams, full, reconcile_deletes, engine, connection)
        elif isinstance(settings, UdeskKnowledgeConnection):
            plan = _knowledge_plan(settings, streams)
        else:
            plan = _eddydesk_plan(settings, streams, full, reconcile_deletes, engine, connection)
    except ValueError as exc:
        raise DesksyncError(str(exc)) from None
    log = get_logger(connection=connection)
    started = time.perf_counter()
    run_id = _start_run(engine, connection, "sync", [p.name for p in plan], job)
    try:
        client = _connect(connection, settings, transport, limiters)
    except DesksyncError as exc:  # a missing variable, say: a failed run in the history, with why
        _end_run(engine, run_id, "failed", f"run: {exc}")
        raise
    ctx = RunContext(engine, client, connection, settings, run_id, frozenset(p.name for p in plan), progress=progress,
                     base_dir=config.base_dir, mirror_url=config.mirror.resolved_url(config.base_dir),
                     writer_process_min_pages=config.mirror.writer_process_min_pages, forked_writer=forked_writer,
                     delete_guard=DeleteGuard(config.mirror.mass_delete_share, config.mirror.mass_delete_min_rows,
                                              allowed=allow_mass_delete))
    if stop is not None:
        ctx.stop = stop
    for session in _sessions(client):
        session.stop = ctx.stop  # a rate-limit wait or a retry's backoff ends at once when the run stops
        session.on_wait = waiting
    summary = SyncSummary(run_id, connection, "failed")  # until the streams loop completes
    blocked_budgets: set[str] = set()
    try:
        _check_blocks(engine, connection, client)
        with long_lived_objects_frozen():
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
                        _save_block(engine, connection, exc)
                        blocked_budgets.add(exc.budget)
                    _stream_failed(ctx, summary, planned, str(exc))
                except DesksyncError:
                    raise  # the mirror or the configuration: every other stream would fail the same way
                except _DATA_BUGS as exc:  # code meeting data it did not foresee: one stream's trouble
                    log.exception("stream_crashed", stream=planned.name)
                    _stream_failed(ctx, summary, planned, f"internal error: {type(exc).__name__}: {exc}")
                else:
                    if planned.records_success:
                        record_success(engine, connection, planned.key)
                    log.info("stream_finished", stream=planned.name)
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


# What code raises on data it did not foresee (a crash of one stream, which must not stop the
# others); the database's and the machine's errors stop the run, as every stream would meet them.
_DATA_BUGS = (AttributeError, TypeError, LookupError, ValueError, ArithmeticError)


def _sessions(client: Any) -> list[Any]:
    """The client's HTTP sessions (the knowledge client has a second one for KM entities)."""
    km = getattr(client, "km", None)
    return [client.session, *([km] if km is not None else [])]


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
    _end_run(engine, summary.run_id, summary.status, "; ".join(f"{k}: {v}" for k, v in summary.errors.items()) or None,
             requests=summary.requests, rate_limit_wait_seconds=summary.rate_limit_wait_seconds,
             rows_inserted=summary.inserted, rows_updated=summary.updated, rows_deleted=summary.deleted,
             records_read=summary.inserted + summary.updated + summary.unchanged)


def _status_tables(conn: sa.Connection, settings: Connection) -> list[tuple[str, sa.Table]]:
    if isinstance(settings, ServiceGoConnection):
        existing = set(sa.inspect(conn).get_table_names())
        out = []
        for obj in settings.objects:
            schema = ObjectSchema(obj.name)
            if schema.table.name in existing:
                schema.load(conn)
                out.append((obj.name, schema.table))
        return out
    if isinstance(settings, UdeskKnowledgeConnection):
        return [(s.name, table_of(s.model)) for s in select_knowledge_streams((), settings)]
    return [(s.name, s.table) for s in select_streams(settings.streams)]


def _cursor_utc(cursor: Any, timezone: str) -> Any:
    """A cursor as every moment is printed (UTC ISO 8601): cursors are kept as the APIs take them,
    in the account's zone ("2017-01-13 12:36:58", ServiceGo's to the minute)."""
    if not isinstance(cursor, str):
        return cursor
    for form in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"):
        try:
            return iso_utc(datetime.strptime(cursor, form).replace(tzinfo=ZoneInfo(timezone)))
        except ValueError:
            continue
    return iso_utc(cursor)


def _connection_problems(last_run: Any) -> list[str]:
    """Health by the connection's latest run, whoever started it (a job, or a command typed by hand):
    a failed or abandoned last run is a problem until a run succeeds."""
    if last_run is None or last_run["status"] not in ("failed", "abandoned"):
        return []
    started = last_run["started_at"]
    when = iso_utc(started) if started else "?"
    return [f"last {last_run['kind']} run {last_run['status']} (started {when}): {last_run['error'] or 'no error recorded'}"]


def status(config: Config) -> dict[str, Any]:
    """{"connections": per connection and stream: last success, cursor, rows, deleted rows, last
    error; "jobs": per scheduled job: last run, failures in a row, next run, health problems}."""
    engine = open_engine(config.mirror.resolved_url(config.base_dir))
    ensure_current(engine)
    out: dict[str, Any] = {}
    connections: dict[str, Any] = {}
    st = table_of(SyncState)
    try:
        with engine.connect() as conn:
            states = {(r.connection, r.stream): r for r in conn.execute(sa.select(st))}
            blocks = conn.execute(sa.select(_BLOCKS)).mappings().all()
            for name, settings in config.connections.items():
                streams_out: dict[str, Any] = {}
                for stream_name, t in _status_tables(conn, settings):
                    counts = conn.execute(
                        sa.select(
                            sa.func.count(),
                            sa.func.sum(sa.case((t.c.is_deleted.is_(True), 1), else_=0)),
                        ).where(t.c.connection == name)
                    ).one()
                    key = f"servicego/{stream_name}" if isinstance(settings, ServiceGoConnection) else stream_name
                    row = states.get((name, key))
                    state = dict(row.state) if row else {}
                    deleted_state = states.get((name, f"{stream_name}/deleted"))
                    streams_out[stream_name] = {
                        "rows": int(counts[0] or 0),
                        "deleted_rows": int(counts[1] or 0),
                        "cursor": _cursor_utc(state.get("cursor"), settings.timezone),
                        "cursor_as_sent": state.get("cursor"),  # the API's own text, in the account's zone
                        "scan_in_progress": bool(state.get("scan")) or bool(deleted_state and deleted_state.state.get("scan")),
                        "last_success_at": iso_utc(row.last_success_at) if row and row.last_success_at else None,
                        "last_error": row.last_error if row else None,
                    }
                last_run = conn.execute(
                    sa.select(_RUNS).where(_RUNS.c.connection == name).order_by(_RUNS.c.id.desc()).limit(1)
                ).mappings().first()
                held = conn.execute(sa.select(HELD.c.table_name, HELD.c.record_id, HELD.c.operation, HELD.c.error)
                                    .where(HELD.c.connection == name).order_by(HELD.c.table_name, HELD.c.record_id)
                                    ).mappings().all()
                by_status = conn.execute(sa.select(_RUNS.c.status, sa.func.count(), sa.func.sum(_RUNS.c.requests)).where(
                    _RUNS.c.connection == name).group_by(_RUNS.c.status)).all()
                connections[name] = {
                    "problems": _connection_problems(last_run),
                    # every run of the connection so far, by outcome: how many, and their requests
                    "runs_by_status": {status: {"runs": int(count), "requests": int(requests or 0)}
                                       for status, count, requests in by_status},
                    "streams": streams_out,
                    "held": [dict(h) for h in held],  # rows a push could not send, with the remote's error
                    "open_conflicts": len(open_conflicts(conn, name)),
                    "last_run": {k: iso_utc(v) if isinstance(v, datetime) else v for k, v in last_run.items()} if last_run else None,
                    "blocks": [
                        {"budget": b["budget"], "blocked_until": iso_utc(b["blocked_until"]), "reason": b["reason"]}
                        for b in blocks if b["connection"] == name
                    ],
                }
            out["connections"] = connections
            if config.jobs:
                from etl.core.run.history import (
                    job_report,  # APScheduler's triggers, where jobs are configured
                )

                out["jobs"] = job_report(conn, config, dict(config.jobs))
    finally:
        engine.dispose()
    return out


@dataclass
class PushSummary:
    connection: str
    dry_run: bool
    tables: dict[str, Any] = field(default_factory=dict)  # table -> PushOutcome
    requests: int = 0
    rate_limit_wait_seconds: float = 0.0
    run_id: int | None = None  # its sync_runs row (kind "push"); none for a dry run

    @property
    def failed(self) -> int:
        return sum(o.failed for o in self.tables.values())

    def done(self, operation: str) -> int:
        return sum(o.done.get(operation, 0) for o in self.tables.values())


def push(config: Config, connection: str, *, dry_run: bool = False, retry_failed: bool = False,
         tables: tuple[str, ...] = (), transport: httpx.BaseTransport | None = None, job: str | None = None,
         limiters: dict[str, RateLimiter] | None = None) -> PushSummary:
    """Send the mirror's local edits of the tables with write-back configured; a run that sends
    (not a dry run) is one sync_runs row of kind "push". `job` and `limiters` as for `sync`."""
    settings = config.connection(connection)
    engine = open_engine(config.mirror.resolved_url(config.base_dir))
    summary = PushSummary(connection, dry_run)
    ending = _Ending()
    try:
        with _ending(ending):
            ensure_current(engine)
            # a dry run reads only the mirror: it needs no lease
            with nullcontext() if dry_run else _own_account(engine, connection, limiters):
                if not dry_run:
                    if settings.pull_before_push:
                        _pull_before_push(config, engine, connection, settings, retry_failed, tables, job, limiters,
                                          transport)
                    summary.run_id = _start_run(engine, connection, "push", list(tables), job)

                def connect() -> Client:
                    return _connect(connection, settings, transport, limiters)

                _push_into(engine, connection, settings, summary, retry_failed, tables, connect)
            ending.status = "ok"
            if summary.failed:
                ending.error = f"{summary.failed} rows held with the remote's error (desksync status lists them)"
    finally:
        if summary.run_id is not None:
            _end_run(engine, summary.run_id, ending.status, ending.error, requests=summary.requests,
                     rate_limit_wait_seconds=summary.rate_limit_wait_seconds, streams=list(summary.tables),
                     records_read=sum(len(o.planned) for o in summary.tables.values()),
                     rows_inserted=summary.done("create"), rows_updated=summary.done("update"),
                     rows_deleted=summary.done("delete"))
        engine.dispose()
    return summary


def _pull_streams_for_push(settings: Connection, pushed: list[str]) -> tuple[str, ...]:
    """The streams whose pull brings the remote's current state of the pushed tables."""
    if not isinstance(settings, EddyDeskConnection):
        return tuple(pushed)  # ServiceGo objects and knowledge streams are named as their push tables
    from etl.connectors.eddydesk.diff import OPTIONS

    streams: list[str] = []
    for name in pushed:
        if name == OPTIONS:
            streams += [f"{scope}_{suffix}" for scope in ("ticket", "user", "organization")
                        for suffix in ("custom_fields", OPTIONS)]
        elif name in ("ticket_posts", "ticket_comments"):
            streams += ["tickets", name]  # a reply's edit moves its ticket: the ticket queues its lists
        else:
            streams.append(name)
    return tuple(dict.fromkeys(streams))


def _pull_before_push(config: Config, engine: sa.Engine, connection: str, settings: Connection, retry_failed: bool,
                      tables: tuple[str, ...], job: str | None, limiters: dict[str, RateLimiter] | None,
                      transport: httpx.BaseTransport | None) -> None:
    """An incremental pull of the tables a push would update or delete in, first.

    A remote edit made since the last pull is then merged under the table's conflict policy
    (a conflict to resolve, the remote's value, or ours) before anything is sent: a push never
    overwrites what it has not seen. Creates alone need no pull. A pull that fails stops the push.
    """
    planned = PushSummary(connection, dry_run=True)
    _push_into(engine, connection, settings, planned, retry_failed, tables, lambda: None)
    touching = [name for name, outcome in planned.tables.items()
                if any(w.operation in ("update", "delete") for w in outcome.planned)]
    if not touching:
        return
    streams = _pull_streams_for_push(settings, touching)
    pulled = _sync(config, engine, connection, settings, streams, full=False, reconcile_deletes=False, progress=None,
                   transport=transport, stop=None, job=job, limiters=limiters)
    if pulled.status != "ok":
        problems = "; ".join(f"{k}: {v}" for k, v in pulled.errors.items())
        raise DesksyncError(f"the pull before the push failed, so nothing was sent (a push must not overwrite remote "
                            f"edits it has not seen): {problems}")


def _push_into(engine: sa.Engine, connection: str, settings: Connection, summary: PushSummary, retry_failed: bool,
               tables: tuple[str, ...], connect: Callable[[], Any]) -> None:
    if isinstance(settings, ServiceGoConnection):
        _push_servicego(engine, connection, settings, summary, retry_failed, tables, connect)
    elif isinstance(settings, EddyDeskConnection):
        _push_eddydesk(engine, connection, settings, summary, retry_failed, tables, connect)
    else:
        _push_knowledge(engine, connection, settings, summary, retry_failed, tables, connect)


@dataclass(frozen=True)
class _PushTable:
    """One table of a push: how it is planned and sent once a client exists."""

    name: str
    table_name: str
    plan: Callable[[sa.Connection], Any]  # -> PushOutcome
    send: Callable[[Any, Any], None]  # (client, outcome)


def _push_tables(engine: sa.Engine, connection: str, summary: PushSummary, tables: list[_PushTable],
                 connect: Callable[[], Any]) -> None:
    """Plan and send each table in turn (a table's new rows exist remotely before the next table,
    which may refer to them, is planned); the client is opened only when something is sent."""
    client = None
    try:
        for table in tables:
            with engine.connect() as conn:
                outcome = table.plan(conn)
            summary.tables[table.name] = outcome
            if not summary.dry_run and outcome.stale_holds:
                with engine.begin() as conn:
                    release(conn, connection, table.table_name, outcome.stale_holds)
            if summary.dry_run or not outcome.planned:
                continue
            if client is None:
                client = connect()
                _check_blocks(engine, connection, client)
            table.send(client, outcome)
    finally:
        if client is not None:
            sessions = _sessions(client)
            summary.requests = sum(s.metrics.requests for s in sessions)
            summary.rate_limit_wait_seconds = sum(s.rate_limit_wait_seconds for s in sessions)
            client.close()


def _push_names(connection: str, order: tuple[str, ...], push: dict[str, Any], tables: tuple[str, ...]) -> list[str]:
    """The tables a push covers, in the order their creates must go (asked ones, or all configured)."""
    names = [n for n in order if n in push and (not tables or n in tables)]
    if not names:
        raise DesksyncError(f"connection {connection!r}: no table has a push section (see config/desksync.example.toml)")
    return names


def _push_servicego(engine: sa.Engine, connection: str, settings: ServiceGoConnection, summary: PushSummary,
                    retry_failed: bool, tables: tuple[str, ...], connect: Callable[[], Any]) -> None:
    from zoneinfo import ZoneInfo

    from etl.connectors.udesk.servicego import push as load

    objects = load.push_order([o for o in settings.objects if o.push is not None and (not tables or o.name in tables)])
    if not objects:
        raise DesksyncError(f"connection {connection!r}: no object has a [push] section (see config/desksync.example.toml)")
    tz = ZoneInfo(settings.timezone)

    def table(obj: Any) -> _PushTable:
        return _PushTable(obj.name, table_name_of(obj.name),
                          lambda conn: load.plan(conn, connection, obj, tz, retry_failed),
                          lambda client, outcome: load.send(engine, client, connection, obj, outcome,
                                                            referrers=load.referrers_of(obj.name, settings.objects)))

    _push_tables(engine, connection, summary, [table(o) for o in objects], connect)


def _push_eddydesk(engine: sa.Engine, connection: str, settings: EddyDeskConnection, summary: PushSummary,
                   retry_failed: bool, tables: tuple[str, ...], connect: Callable[[], Any]) -> None:
    from zoneinfo import ZoneInfo

    from etl.connectors.eddydesk import push as load
    from etl.connectors.eddydesk import push_options as options
    from etl.connectors.eddydesk.diff import OPTIONS, WRITABLE

    names = _push_names(connection, load.ORDER, settings.push, tables)
    tz = ZoneInfo(settings.timezone)

    def table(name: str) -> _PushTable:
        spec = WRITABLE[name]
        if name == OPTIONS:
            return _PushTable(name, spec.table.name,
                              lambda conn: options.plan(conn, connection, spec, settings.push[name], settings.language,
                                                        retry_failed),
                              lambda client, outcome: options.send(engine, client, connection, settings, spec, outcome))
        return _PushTable(name, spec.table.name,
                          lambda conn: load.plan(conn, connection, spec, settings.push[name], tz, retry_failed),
                          lambda client, outcome: load.send(engine, client, connection, settings, spec, outcome))

    _push_tables(engine, connection, summary, [table(n) for n in names], connect)


def _push_knowledge(engine: sa.Engine, connection: str, settings: UdeskKnowledgeConnection, summary: PushSummary,
                    retry_failed: bool, tables: tuple[str, ...], connect: Callable[[], Any]) -> None:
    from zoneinfo import ZoneInfo

    from etl.connectors.udesk.knowledge import push as load
    from etl.connectors.udesk.knowledge.diff import WRITABLE

    names = _push_names(connection, load.ORDER, settings.push, tables)
    if "km_entities" in names and not settings.km_base_url:
        raise DesksyncError(f"connection {connection!r}: pushing km_entities needs km_base_url (the KM entity API)")
    tz = ZoneInfo(settings.timezone)
    lookups = load.Lookups()  # the remote lists new rows are matched in, fetched once a push

    def table(name: str) -> _PushTable:
        spec = WRITABLE[name]

        def send(client: udesk_km.KnowledgeClient, outcome: Any) -> None:
            load.send(engine, client, connection, settings, spec, outcome, lookups)

        return _PushTable(name, spec.table.name,
                          lambda conn: load.plan(conn, connection, spec, settings.push[name], tz, retry_failed), send)

    _push_tables(engine, connection, summary, [table(n) for n in names], connect)


@dataclass
class PipelineSummary:
    pipeline: str
    dry_run: bool
    steps: list[StepReport] = field(default_factory=list)  # in step order
    requests: int = 0
    rate_limit_wait_seconds: float = 0.0
    run_id: int | None = None  # its sync_runs row (kind "pipeline"); none for a dry run

    def sent(self, operation: str) -> int:
        return sum(s.push.done.get(operation, 0) for s in self.steps if s.push is not None)

    @property
    def held(self) -> int:
        return sum(len(s.held) + (s.push.failed if s.push is not None else 0) for s in self.steps)


def run_pipeline(config: Config, name: str, *, dry_run: bool = False, retry_failed: bool = False,
                 transport: httpx.BaseTransport | None = None, job: str | None = None,
                 limiters: dict[str, RateLimiter] | None = None) -> PipelineSummary:
    """Stage each step's source records into the target's mirror table, then push that table,
    step by step (a step's records exist on the target before the next step refers to them).
    A dry run stages every step in one transaction it rolls back, and sends nothing. One
    sync_runs row of kind "pipeline" on the target connection records a run."""
    pipeline = config.pipeline(name)
    settings = config.connection(pipeline.target)
    engine = open_engine(config.mirror.resolved_url(config.base_dir))
    summary = PipelineSummary(name, dry_run)
    ending = _Ending()
    lease = _own_account(engine, pipeline.target, limiters)  # for the writes to the target
    limiters = limiters if limiters is not None else new_limiters(settings)
    try:
        with _ending(ending):
            ensure_current(engine)
            with engine.connect() as conn:
                targets = {s.name: target_of(conn, settings, pipeline.target, s.target_object) for s in pipeline.steps}
            idmap = IdMap(pipeline, targets, dry_run)
            if dry_run:
                with engine.connect() as conn, conn.begin() as transaction:
                    summary.steps = [stage(conn, name, pipeline, s, idmap) for s in pipeline.steps]
                    transaction.rollback()
                return summary
            with lease:
                summary.run_id = _start_run(engine, pipeline.target, "pipeline", [s.name for s in pipeline.steps], job)
                log = get_logger(pipeline=name, target=pipeline.target)
                for step in pipeline.steps:
                    idmap.links.clear()  # the push rewrote placeholders: read the map again
                    with engine.begin() as conn:
                        report = stage(conn, name, pipeline, step, idmap)
                    summary.steps.append(report)
                    pushed = PushSummary(pipeline.target, False)
                    _push_into(engine, pipeline.target, settings, pushed, retry_failed, (report.target,),
                               lambda: _connect(pipeline.target, settings, transport, limiters))
                    report.push = pushed.tables.get(report.target)
                    summary.requests += pushed.requests
                    summary.rate_limit_wait_seconds += pushed.rate_limit_wait_seconds
                    log.info("pipeline_step_finished", step=step.name, created=report.created, updated=report.updated,
                             deleted=report.deleted, held=len(report.held), folded=len(report.folded),
                             sent=report.push.ok if report.push else 0)
            ending.status = "ok"
            if summary.held:
                ending.error = f"{summary.held} records held (desksync pipeline status {name} lists them)"
    finally:
        if summary.run_id is not None:
            _end_run(engine, summary.run_id, ending.status, ending.error, requests=summary.requests,
                     rate_limit_wait_seconds=summary.rate_limit_wait_seconds,
                     records_read=sum(s.created + s.updated + s.deleted + s.unchanged for s in summary.steps),
                     rows_inserted=summary.sent("create"), rows_updated=summary.sent("update"),
                     rows_deleted=summary.sent("delete"))
        engine.dispose()
    return summary


def pipeline_status(config: Config, name: str) -> dict[str, Any]:
    """A pipeline's id map per step: records linked, folded, and held with their message."""
    pipeline = config.pipeline(name)
    engine = open_engine(config.mirror.resolved_url(config.base_dir))
    try:
        ensure_current(engine)
        with engine.connect() as conn:
            rows = conn.execute(sa.select(LINKS).where(LINKS.c.pipeline == name)
                                .order_by(LINKS.c.step, LINKS.c.source_id)).mappings().all()
    finally:
        engine.dispose()
    out: dict[str, Any] = {}
    for step in pipeline.steps:
        mine = [r for r in rows if r["step"] == step.name]
        out[step.name] = {
            "linked": sum(1 for r in mine if r["target_id"] is not None and r["target_id"] > 0),
            "waiting_for_push": sum(1 for r in mine if r["target_id"] is not None and r["target_id"] < 0),
            "folded": {r["source_id"]: r["folded_into"] for r in mine if r["folded_into"] is not None},
            "held": {r["source_id"]: r["error"] for r in mine if r["error"] is not None},
        }
    return out


def pipelines_status(config: Config) -> dict[str, dict[str, Any]]:
    """`pipeline_status` of every configured pipeline (for metrics)."""
    return {name: pipeline_status(config, name) for name in config.pipelines}


def resolve(config: Config, conflict_id: int, take: str) -> None:
    """Settle a conflict: `local` keeps the local value (pushed next), `remote` takes the remote one."""
    from zoneinfo import ZoneInfo

    from etl.connectors.eddydesk.diff import WRITABLE
    from etl.connectors.udesk.knowledge.diff import WRITABLE as KNOWLEDGE_WRITABLE
    from etl.connectors.udesk.servicego import diff as servicego_diff
    from etl.core.push import columns as columns_diff
    from etl.core.push.conflicts import open_conflict

    def tz_of(name: str) -> ZoneInfo:
        return ZoneInfo(getattr(config.connection(name), "timezone", "UTC"))

    engine = open_engine(config.mirror.resolved_url(config.base_dir))
    try:
        ensure_current(engine)
        with engine.begin() as conn:
            try:
                table = open_conflict(conn, conflict_id)["table_name"]
                if table.startswith(("eddydesk_", "udesk_")):
                    columns_diff.resolve([*WRITABLE.values(), *KNOWLEDGE_WRITABLE.values()], conn, conflict_id, take, tz_of,
                                         lambda name: getattr(config.connection(name), "language", "en"))
                else:
                    servicego_diff.resolve(conn, conflict_id, take, tz_of)
            except ValueError as exc:
                raise DesksyncError(str(exc)) from None
    finally:
        engine.dispose()
