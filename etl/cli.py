"""The `desksync` command: parse, call a job, print. No sync logic lives here."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import sqlalchemy as sa

from etl.cli_pipeline import pipeline
from etl.cli_simulate import simulate
from etl.cli_support import fail, load
from etl.core import log
from etl.core.config import Config
from etl.core.errors import ConfigError, DesksyncError, Stopped
from etl.core.memory import cap_malloc_arenas
from etl.core.pull.context import fork_writer_if_it_pays
from etl.core.run import jobs
from etl.health import problems_of

T = TypeVar("T")


_GLOBAL_FLAGS = ("-v", "--verbose")
_GLOBAL_VALUES = ("--config",)


def hoist_global_options(args: list[str]) -> list[str]:
    """`desksync sync -v --config x.toml` as `desksync -v --config x.toml sync`: the global options
    are taken wherever they stand (no command has options of the same names)."""
    front: list[str] = []
    rest: list[str] = []
    items = iter(args)
    for arg in items:
        if arg == "--":
            rest += [arg, *items]
            break
        if arg in _GLOBAL_FLAGS or any(arg.startswith(f"{name}=") for name in _GLOBAL_VALUES):
            front.append(arg)
        elif arg in _GLOBAL_VALUES:
            front += [arg, next(items, "")]
        else:
            rest.append(arg)
    return front + rest


class _Commands(click.Group):
    """Global options anywhere on the line; a database error of the mirror, in any command, ends
    it with one line naming the file."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_options(args))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except sa.exc.DBAPIError as exc:
            from etl.core.mirror.db import mirror_error

            url = (ctx.obj or {}).get("mirror_url")
            if url is None:
                raise
            fail(mirror_error(sa.engine.make_url(url), exc, "use"))


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="desksync", prog_name="desksync")
@click.option("--config", "config_path", envvar="DESKSYNC_CONFIG", type=click.Path(dir_okay=False),
              help="Configuration file (default: ./desksync.toml or ./config/desksync.toml).")
@click.option("-v", "--verbose", is_flag=True, help="Log every request (debug level).")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, verbose: bool) -> None:
    """desksync: mirror EddyDesk, Udesk ServiceGo and Udesk knowledge into a relational database,
    push local edits back, and move records between them."""
    cap_malloc_arenas()
    ctx.obj = {"config_path": config_path, "verbose": verbose}


@main.command()
@click.pass_context
def init(ctx: click.Context) -> None:
    """Create or upgrade the mirror's schema (Alembic migrations)."""
    config = load(ctx)
    try:
        head = jobs.init(config)
    except DesksyncError as exc:
        fail(exc)
    click.echo(f"mirror schema is at revision {head}")


def run_sync(config: Config, connection: str, streams: tuple[str, ...], full: bool, reconcile: bool,
             allow_mass_delete: bool = False) -> jobs.SyncSummary:
    stop = threading.Event()

    def on_signal(signum: int, _: Any) -> None:
        # finish the page in progress, commit, and stop: nothing is lost
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_signal)
    from etl.progress import progress_display  # rich's display, for a terminal only

    # forked now, while this process has neither the mirror open nor other threads (see etl.core.pull.writer_process)
    forked_writer = fork_writer_if_it_pays(config.connection(connection), config.mirror.writer_process_min_pages)
    display = progress_display()
    try:
        with display or contextlib.nullcontext():
            return jobs.sync(config, connection, streams, full=full, reconcile_deletes=reconcile,
                             progress=display.update if display else None, stop=stop,
                             allow_mass_delete=allow_mass_delete, waiting=display.waiting if display else None,
                             forked_writer=forked_writer)
    finally:
        signal.signal(signal.SIGTERM, previous)


def print_summary(summary: jobs.SyncSummary) -> None:
    click.echo(
        f"{summary.connection}: {summary.status} in {summary.seconds:.1f}s — "
        f"{summary.inserted} inserted, {summary.updated} updated, {summary.deleted} deleted, "
        f"{summary.unchanged} unchanged; {summary.requests} requests, {summary.retries} retries, "
        f"{summary.rate_limit_wait_seconds:.1f}s waiting on rate limits"
    )
    for stream, error in summary.errors.items():
        click.echo(f"  {stream}: {error}", err=True)


@main.command()
@click.argument("connection", required=False)
@click.option("--stream", "streams", multiple=True, help="Only these streams (repeatable).")
@click.option("--full", is_flag=True, help="Ignore cursors: fetch everything again.")
@click.option("--reconcile", is_flag=True, help="Also find records deleted outright (walks every id).")
@click.option("--allow-mass-delete", is_flag=True,
              help="Mark rows deleted even past mirror.mass_delete_share of a table (the deletions are real).")
@click.pass_context
def sync(ctx: click.Context, connection: str | None, streams: tuple[str, ...], full: bool, reconcile: bool,
         allow_mass_delete: bool) -> None:
    """Pull remote changes into the mirror (all connections, or one)."""
    config = load(ctx)
    names = [connection] if connection else list(config.connections)
    failed, config_error = False, False
    for name in names:
        try:
            summary = run_sync(config, name, streams, full, reconcile, allow_mass_delete)
        except DesksyncError as exc:
            # one connection's bad key or missing variable: the others still run
            click.echo(f"error: {exc}" if connection else f"error: {name}: {exc}", err=True)
            failed, config_error = True, config_error or isinstance(exc, ConfigError)
            continue
        except (KeyboardInterrupt, Stopped):
            click.echo("interrupted: committed work is kept; the next sync resumes from it", err=True)
            sys.exit(130)
        print_summary(summary)
        failed = failed or summary.status != "ok"
    sys.exit(2 if config_error else 1 if failed else 0)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; any but loopback needs --token-env.")
@click.option("--port", default=8770, show_default=True, type=int)
@click.option("--token-env", help="Environment variable holding the token requests must carry (Bearer).")
@click.option("--allow-actions", is_flag=True, help="Let the console resolve conflicts and retry held rows.")
@click.pass_context
def ui(ctx: click.Context, host: str, port: int, token_env: str | None, allow_actions: bool) -> None:
    """The console: overview, runs, rate budget, conflicts, held rows, changes; /metrics and /healthz."""
    import uvicorn

    from etl.console.app import build_app, console_token

    config = load(ctx)
    try:
        app = build_app(config, console_token(host, token_env), allow_actions=allow_actions)
    except ConfigError as exc:
        fail(exc)
    click.echo(f"desksync console on http://{host}:{port}/ ({'actions allowed' if allow_actions else 'read-only'}); "
               "/metrics and /healthz for monitoring", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--check", is_flag=True,
              help="Exit 1 when a job failed schedule.max_consecutive_failures times in a row, or its data is "
                   "older than its max_lag_minutes, or a connection's latest run failed (for monitoring).")
@click.option("--prometheus", is_flag=True,
              help="Prometheus text format (for a node-exporter textfile collector; the console serves /metrics).")
@click.pass_context
def status(ctx: click.Context, as_json: bool, check: bool, prometheus: bool) -> None:
    """Per connection and stream: rows, cursor, last success and error; per scheduled job: last and next run."""
    config = load(ctx)
    try:
        report = jobs.status(config)
    except DesksyncError as exc:
        fail(exc)
    problems = problems_of(report)
    if prometheus:
        from etl.metrics import prometheus_text

        click.echo(prometheus_text(report, jobs.pipelines_status(config)).decode(), nl=False)
    elif as_json:
        click.echo(json.dumps({**report, "healthy": not problems}, indent=2, default=str))
    else:
        _print_status(report)
        for problem in problems:
            click.echo(f"UNHEALTHY {problem}", err=True)
    if check and problems:
        sys.exit(1)


def _print_status(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    # piped or redirected, a table is never cut to the 80 columns rich assumes off a terminal
    console = Console() if sys.stdout.isatty() else Console(width=1000)
    for name, info in report["connections"].items():
        table = Table(title=f"connection {name}")
        for column in ("stream", "rows", "deleted", "cursor", "last success", "last error"):
            table.add_column(column)
        for stream, s in info["streams"].items():
            table.add_row(stream, str(s["rows"]), str(s["deleted_rows"]), str(s["cursor"] or "-"),
                          str(s["last_success_at"] or "-"), s["last_error"] or "")
        console.print(table)
        for block in info["blocks"]:
            console.print(f"[red]{block['budget']} budget blocked until {block['blocked_until']}[/red]")
        for held in info["held"]:
            console.print(f"[yellow]held {held['operation']} of {held['table_name']} {held['record_id']}: "
                          f"{held['error']}[/yellow] (fix the row, then `desksync push {name} --retry-failed`)")
        if info["open_conflicts"]:
            console.print(f"[yellow]{info['open_conflicts']} open conflicts (`desksync conflicts {name}`)[/yellow]")
    if report.get("jobs"):
        table = Table(title="scheduled jobs")
        for column in ("job", "connection", "last run", "status", "failures in a row", "next run", "on the workers"):
            table.add_column(column)
        for name, job in report["jobs"].items():
            last, task = job["last_run"] or {}, job.get("task")
            on_workers = "-" if task is None else (f"running on {task['worker']}" if task["status"] == "running"
                                                   else f"queued since {task['queued_at']}")
            table.add_row(name, job["connection"], str(last.get("started_at") or "-"), str(last.get("status") or "-"),
                          str(job["consecutive_failures"]), job["next_run_at"], on_workers)
        console.print(table)


def _read_mirror(ctx: click.Context, read: Callable[[Any], T]) -> T:
    """`read(connection)` on the configured mirror (schema checked); a problem ends the command."""
    from etl.core.mirror.db import ensure_current, open_engine

    config = load(ctx)
    engine = open_engine(config.mirror.resolved_url(config.base_dir))
    try:
        ensure_current(engine)
        with engine.connect() as conn:
            return read(conn)
    except DesksyncError as exc:
        fail(exc)
    finally:
        engine.dispose()


@main.command()
@click.option("--job", help="Only this job's runs.")
@click.option("--limit", default=30, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def runs(ctx: click.Context, job: str | None, limit: int, as_json: bool) -> None:
    """The run history, newest first: job, start, end, outcome, records, requests, rate-limit waits, error."""
    from etl.core.run.history import run_history

    history = _read_mirror(ctx, lambda conn: run_history(conn, job, limit))
    if as_json:
        click.echo(json.dumps(history, indent=2, default=str))
        return
    for run in history:
        click.echo(
            f"{run['id']:>6} {run['job'] or '(by hand)':<20} {run['kind']:<8} {run['connection']:<12} "
            f"{run['started_at']} {run['status']:<11} read {run['records_read']}, +{run['rows_inserted']} ~{run['rows_updated']} "
            f"-{run['rows_deleted']}, {run['requests']} requests, {run['rate_limit_wait_seconds']:.1f}s waiting, "
            f"on {run['host']} pid {run['pid']}" + (f"  {run['error']}" if run["error"] else "")
        )


@main.command()
@click.argument("connection")
@click.option("--dry-run", is_flag=True, help="Print what would be sent (per table: creates, updates with their fields, deletes).")
@click.option("--retry-failed", is_flag=True, help="Send held rows again (after fixing them).")
@click.option("--table", "tables", multiple=True, help="Only this object (repeatable).")
@click.pass_context
def push(ctx: click.Context, connection: str, dry_run: bool, retry_failed: bool, tables: tuple[str, ...]) -> None:
    """Send local edits of the mirror to the remote (tables with a [push] section)."""
    config = load(ctx)
    try:
        summary = jobs.push(config, connection, dry_run=dry_run, retry_failed=retry_failed, tables=tables)
    except DesksyncError as exc:
        fail(exc)
    for table, outcome in summary.tables.items():
        count = {op: sum(w.operation == op for w in outcome.planned) for op in ("create", "update", "delete")}
        click.echo(f"{table}: {count['create']} creates, {count['update']} updates, {count['delete']} deletes"
                   + (f"; held: {outcome.skipped_held}" if outcome.skipped_held else "")
                   + (f"; waiting on conflicts: {outcome.skipped_conflicts}" if outcome.skipped_conflicts else "")
                   + (f"; deletions not enabled: {outcome.skipped_deletes}" if outcome.skipped_deletes else ""))
        if dry_run:
            for write in outcome.planned:
                click.echo(f"  {write.operation} {write.record_id}" + (f"  [cannot send: {write.problem}]" if write.problem else ""))
                for name, remote, local in write.changes:
                    click.echo(f"      {name}: {remote!r} -> {local!r}")
        else:
            click.echo(f"  sent {outcome.sent}: {outcome.ok} ok, {outcome.failed} held (see desksync status)")
    sys.exit(1 if summary.failed and not dry_run else 0)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.argument("connection", required=False)
@click.pass_context
def conflicts(ctx: click.Context, as_json: bool, connection: str | None) -> None:
    """Open conflicts: fields changed locally and remotely to different values."""
    from etl.core.push.conflicts import open_conflicts

    rows = _read_mirror(ctx, lambda conn: open_conflicts(conn, connection))
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    for r in rows:
        click.echo(f"{r['id']:>5} {r['connection']} {r['table_name']} {r['record_id']} {r['field']}: "
                   f"base {r['base']!r}, local {r['local']!r}, remote {r['remote']!r}")
    if not rows:
        click.echo("no open conflicts")


@main.command()
@click.argument("conflict_id", type=int)
@click.option("--take", type=click.Choice(["local", "remote"]), required=True)
@click.pass_context
def resolve(ctx: click.Context, conflict_id: int, take: str) -> None:
    """Settle a conflict: keep the local value (pushed next) or take the remote one."""
    config = load(ctx)
    try:
        jobs.resolve(config, conflict_id, take)
    except DesksyncError as exc:
        fail(exc)
    click.echo(f"conflict {conflict_id} settled: {take} value kept")


@main.command()
@click.option("--every", default=300.0, show_default=True, help="Seconds between pulls when no [jobs] are configured.")
@click.pass_context
def schedule(ctx: click.Context, every: float) -> None:
    """Run the configured jobs on their cadences until SIGINT/SIGTERM (same as scheduler.py)."""
    from etl.core.run.schedule import serve

    config = load(ctx)
    try:
        serve(config, every)
    except DesksyncError as exc:
        fail(exc)


@main.command()
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(1, 64),
              help="Jobs this worker runs at once (threads).")
@click.pass_context
def worker(ctx: click.Context, concurrency: int) -> None:
    """Run the jobs the scheduler sends through the [executor]'s broker, until SIGTERM/SIGINT."""
    from etl.core.run.worker import serve_worker

    config = load(ctx)
    try:
        serve_worker(config, concurrency)
    except DesksyncError as exc:
        fail(exc)


@main.command()
@click.option("--database", type=click.Path(dir_okay=False), default="demo-data/desksync-demo.sqlite",
              show_default=True, help="SQLite file to mirror into.")
def demo(database: str) -> None:
    """Start the built-in simulator, mirror it into SQLite, change it, sync again. No account needed."""
    from etl.demo import run_demo

    log.configure("warning")
    try:
        run_demo(Path(database))
    except DesksyncError as exc:
        fail(exc)


main.add_command(pipeline)
main.add_command(simulate)


if __name__ == "__main__":  # pragma: no cover
    main(prog_name=os.path.basename(sys.argv[0]))
