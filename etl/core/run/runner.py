"""Run one configured job now, in this process: under the job's lock and its account's lease.

Both the single-process scheduler (etl.core.run.schedule) and a Celery worker (etl.core.run.worker)
run their jobs here; they differ only in what they do with a job that cannot run now (the
scheduler waits for the account or moves the job's next time; a worker hands the task back to
the broker with a delay).

Within the process an account's jobs share one set of limiters and run one after another (their
streams' cursors and scans must not interleave); across processes the account's lease
(etl.core.run.locks) keeps them apart, and its recent requests pass from one holder to the next
(etl.core.run.records.AccountUse).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from etl.core.config import Config, JobConfig
from etl.core.errors import DesksyncError, Stopped
from etl.core.http.ratelimit import RateLimiter
from etl.core.log import get_logger
from etl.core.mirror.base import table_of
from etl.core.mirror.db import open_engine
from etl.core.mirror.meta import AccountBlock
from etl.core.mirror.normalize import stored_utc
from etl.core.run import jobs, records
from etl.core.run.locks import AdvisoryLocks

_BLOCKS = table_of(AccountBlock)


def blocked_until(conn: sa.Connection, connection: str) -> datetime | None:
    until = stored_utc(conn.execute(sa.select(sa.func.max(_BLOCKS.c.blocked_until))
                                    .where(_BLOCKS.c.connection == connection)).scalar())
    if until is None:
        return None
    return until if until > datetime.now(UTC) else None


@dataclass(frozen=True)
class JobOutcome:
    """How a try to run a job ended: `ok`, `failed` or `interrupted` (it ran), `busy` (its job or
    account is held elsewhere, or its account is blocked: try again later), `stale` (the claim
    found its task done already)."""

    status: str
    why: str = ""
    blocked_until: datetime | None = None  # the account is blocked for its rate limit until then

    @property
    def ran(self) -> bool:
        return self.status in ("ok", "failed", "interrupted")


class JobRunner:
    """Runs the configured jobs on request, in this process (see the module's docstring)."""

    def __init__(self, config: Config, specs: dict[str, JobConfig], stop: threading.Event) -> None:
        self.config = config
        self.jobs = specs
        self.stop = stop
        self.engine = open_engine(config.mirror.resolved_url(config.base_dir))
        self.locks = AdvisoryLocks(self.engine, self._lost)
        self.log = get_logger(component="runner")
        self._limiters: dict[str, dict[str, RateLimiter]] = {}
        self._accounts: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def limiters(self, connection: str) -> dict[str, RateLimiter]:
        with self._guard:
            if connection not in self._limiters:
                self._limiters[connection] = jobs.new_limiters(self.config.connection(connection))
                self._accounts[connection] = threading.Lock()
            return self._limiters[connection]

    def _lost(self, kind: str, name: str) -> None:
        """A lock's session dropped (etl.core.run.locks): an account's running jobs send no more."""
        if kind == "account":
            records.revoke(self.limiters(name), name)

    def blocked_until(self, connection: str) -> datetime | None:
        with self.engine.connect() as conn:
            return blocked_until(conn, connection)

    def _take_account(self, connection: str, wait: bool) -> bool:
        self.limiters(connection)
        lock = self._accounts[connection]
        if not wait:
            return lock.acquire(blocking=False)
        while not self.stop.is_set():
            if lock.acquire(timeout=0.5):
                return True
        return False

    def run(self, name: str, *, wait_for_account: bool = True, claim: Callable[[], bool] | None = None) -> JobOutcome:
        """Run job `name` if its job lock and its account are free; `claim`, called once both are
        held, may still decline (a task that another delivery finished)."""
        spec = self.jobs[name]
        until = self.blocked_until(spec.connection)
        if until is not None:
            return JobOutcome("busy", "the account is blocked for its rate limit", until)
        if not self.locks.try_acquire("job", name):
            return JobOutcome("busy", "the job runs in another process")
        try:
            if not self._take_account(spec.connection, wait_for_account):
                return JobOutcome("busy", "another job of this account runs in this process")
            try:
                if not self.locks.try_acquire("account", spec.connection):
                    return JobOutcome("busy", "another process is using this account's budget")
                for limiter in self.limiters(spec.connection).values():
                    limiter.restore()  # a lease lost by an earlier job is held again
                try:
                    if claim is not None and not claim():
                        return JobOutcome("stale", "the task was finished by an earlier delivery")
                    status = self._run(name, spec, get_logger(component="runner", job=name, connection=spec.connection))
                    return JobOutcome(status, blocked_until=self.blocked_until(spec.connection))
                finally:
                    self.locks.release("account", spec.connection)
            finally:
                self._accounts[spec.connection].release()
        finally:
            self.locks.release("job", name)

    def _run(self, name: str, spec: JobConfig, log: Any) -> str:
        try:
            if spec.kind == "push":
                # rows the remote refuses are held (status lists them): the job itself went well
                pushed = jobs.push(self.config, spec.connection, tables=spec.streams, job=name,
                                   limiters=self.limiters(spec.connection))
                log.info("job_finished", kind="push", requests=pushed.requests, created=pushed.done("create"),
                         updated=pushed.done("update"), deleted=pushed.done("delete"), held=pushed.failed)
                return "ok"
            if spec.kind == "pipeline":
                assert spec.pipeline is not None
                ran = jobs.run_pipeline(self.config, spec.pipeline, job=name, limiters=self.limiters(spec.connection))
                log.info("job_finished", kind="pipeline", requests=ran.requests, created=ran.sent("create"),
                         updated=ran.sent("update"), deleted=ran.sent("delete"), held=ran.held)
                return "ok"
            summary = jobs.sync(self.config, spec.connection, spec.streams, reconcile_deletes=spec.reconcile,
                                stop=self.stop, job=name, limiters=self.limiters(spec.connection))
            log.info("job_finished", status=summary.status, requests=summary.requests, inserted=summary.inserted,
                     updated=summary.updated, deleted=summary.deleted, seconds=round(summary.seconds, 2))
            return "ok" if summary.status == "ok" else "failed"
        except (Stopped, KeyboardInterrupt):
            log.info("job_interrupted")
            return "interrupted"
        except DesksyncError as exc:
            log.error("job_failed", error=str(exc))
        except Exception as exc:  # noqa: BLE001 - a job's unforeseen error backs it off, as any failure does
            log.exception("job_failed", error=f"{type(exc).__name__}: {exc}")
        return "failed"

    def close(self) -> None:
        self.locks.close()
        self.engine.dispose()
