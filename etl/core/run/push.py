"""A push: the mirror's local edits of the tables with write-back configured, sent through the
connection's connector (its push tables plan and send them)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from typing import Any

import httpx
import sqlalchemy as sa

from etl.core.config import Config, ConnectionSettings
from etl.core.connector import Client, PushRequest, connector_of
from etl.core.errors import DesksyncError
from etl.core.http.ratelimit import RateLimiter
from etl.core.mirror.db import ensure_current, open_engine
from etl.core.push.journal import release
from etl.core.run.records import (
    AccountUse,
    Ending,
    end_run,
    ensure_own_tables,
    own_account,
    start_run,
    watch_ending,
)
from etl.core.run.sync import connect, pull


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
    ending = Ending()
    try:
        with watch_ending(ending):
            ensure_current(engine)
            ensure_own_tables(engine, settings)
            # a dry run reads only the mirror: it needs no lease
            with nullcontext(limiters) if dry_run else own_account(engine, connection, settings, limiters) as limiters:
                if not dry_run:
                    if settings.pull_before_push:
                        _pull_before_push(config, engine, connection, settings, retry_failed, tables, job, limiters,
                                          transport)
                    summary.run_id = start_run(engine, connection, "push", list(tables), job)

                def connect_() -> Client:
                    return connect(connection, settings, transport, limiters)

                push_into(engine, connection, settings, summary, retry_failed, tables, connect_)
            ending.status = "ok"
            if summary.failed:
                ending.error = f"{summary.failed} rows held with the remote's error (desksync status lists them)"
    finally:
        if summary.run_id is not None:
            end_run(engine, summary.run_id, ending.status, ending.error, requests=summary.requests,
                     rate_limit_wait_seconds=summary.rate_limit_wait_seconds, streams=list(summary.tables),
                     records_read=sum(len(o.planned) for o in summary.tables.values()),
                     rows_inserted=summary.done("create"), rows_updated=summary.done("update"),
                     rows_deleted=summary.done("delete"))
        engine.dispose()
    return summary


def _pull_before_push(config: Config, engine: sa.Engine, connection: str, settings: ConnectionSettings, retry_failed: bool,
                      tables: tuple[str, ...], job: str | None, limiters: dict[str, RateLimiter] | None,
                      transport: httpx.BaseTransport | None) -> None:
    """An incremental pull of the tables a push would update or delete in, first.

    A remote edit made since the last pull is then merged under the table's conflict policy
    (a conflict to resolve, the remote's value, or ours) before anything is sent: a push never
    overwrites what it has not seen. Creates alone need no pull. A pull that fails stops the push.
    """
    planned = PushSummary(connection, dry_run=True)
    push_into(engine, connection, settings, planned, retry_failed, tables, lambda: None)
    touching = [name for name, outcome in planned.tables.items()
                if any(w.operation in ("update", "delete") for w in outcome.planned)]
    if not touching:
        return
    streams = connector_of(settings).pull_streams_for_push(settings, touching)
    pulled = pull(config, engine, connection, settings, streams, full=False, reconcile_deletes=False, progress=None,
                   transport=transport, stop=None, job=job, limiters=limiters)
    if pulled.status != "ok":
        problems = "; ".join(f"{k}: {v}" for k, v in pulled.errors.items())
        raise DesksyncError(f"the pull before the push failed, so nothing was sent (a push must not overwrite remote "
                            f"edits it has not seen): {problems}")


def push_into(engine: sa.Engine, connection: str, settings: ConnectionSettings, summary: PushSummary,
              retry_failed: bool, tables: tuple[str, ...], connect: Callable[[], Any]) -> None:
    """Plan and send each table in turn (a table's new rows exist remotely before the next table,
    which may refer to them, is planned); the client is opened only when something is sent."""
    planned = connector_of(settings).push_tables(PushRequest(engine, connection, settings, retry_failed, tables))
    client = None
    use = ExitStack()  # the account's use, from the first send on
    try:
        for table in planned:
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
                use.enter_context(AccountUse(engine, connection, client))
            table.send(client, outcome)
    finally:
        use.close()
        if client is not None:
            sessions = client.sessions()
            summary.requests = sum(s.metrics.requests for s in sessions)
            summary.rate_limit_wait_seconds = sum(s.rate_limit_wait_seconds for s in sessions)
            client.close()
