"""The scheduler's side of the `[executor]`: at a job's time, send it to the workers as a Celery
task, recorded as queued in job_tasks (etl.core.run.tasks), instead of running it.

What the scheduler still decides, because a worker cannot (it sees one task at a time):
- a job of a blocked account, or one backing off after failures, moves to its later time;
- a job already queued or running is not sent again: a cluster without workers piles up one task
  a job, not one a cadence (and shows the jobs overdue);
- a task the broker lost (queued, or running on a dead worker nobody redelivered it from, for
  `requeue_after_seconds`) is given up and the job sent anew.
It decides under the job's lock, which a worker holds while it runs the job: a running job is
never taken for lost, and a worker never claims a task while it is being given up.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from etl.core.config import Config
from etl.core.errors import ConfigError
from etl.core.log import get_logger, scrub_text
from etl.core.mirror.base import table_of
from etl.core.mirror.meta import SyncRun
from etl.core.mirror.normalize import stored_utc
from etl.core.run import tasks
from etl.core.run.celery_app import TASK, celery_app, check_broker
from etl.core.run.history import consecutive_failures, failure_backoff
from etl.core.run.runner import JobRunner

_RUNS = table_of(SyncRun)


def require_postgresql(engine: sa.Engine) -> None:
    if engine.dialect.name != "postgresql":
        raise ConfigError("[executor]: workers on several machines share one mirror, so it must be PostgreSQL "
                          f"(mirror.url is {engine.dialect.name})")


def backoff_until(conn: sa.Connection, config: Config, job: str) -> datetime | None:
    """When a job that failed its last runs may run again (None: now)."""
    failures = consecutive_failures(conn, job)
    if not failures:
        return None
    last = stored_utc(conn.execute(sa.select(sa.func.max(_RUNS.c.finished_at)).where(_RUNS.c.job == job)).scalar())
    if last is None:
        return None
    until = last + timedelta(seconds=failure_backoff(config, failures))
    return until if until > datetime.now(UTC) else None


class Dispatcher:
    def __init__(self, config: Config, runner: JobRunner) -> None:
        assert config.executor is not None
        self.config = config
        self.executor = config.executor
        self.runner = runner
        self.app = celery_app(self.executor)
        self.log = get_logger(component="scheduler")

    def start_checks(self) -> None:
        require_postgresql(self.runner.engine)
        check_broker(self.app, self.executor)

    def send(self, name: str) -> tuple[datetime, str] | None:
        """Queue job `name` for the workers; returns when to try again instead, and why."""
        spec = self.runner.jobs[name]
        until = self.runner.blocked_until(spec.connection)
        if until is not None:
            return until + timedelta(seconds=1), "the account is blocked for its rate limit"
        with self.runner.engine.connect() as conn:
            later = backoff_until(conn, self.config, name)
        if later is not None:
            return later, "it failed its last runs"
        if not self.runner.locks.try_acquire("job", name):
            self.log.info("job_skipped", job=name, reason="it runs on a worker")
            return None
        try:
            task_id = self._queue(name, spec.connection)
        finally:
            self.runner.locks.release("job", name)  # before the message goes: its worker needs the lock
        if task_id is not None:
            self._send(name, task_id)
        return None

    def _queue(self, name: str, connection: str) -> str | None:
        """The job's new task row (None: it has an open one); its message is not sent yet."""
        task_id = str(uuid.uuid4())
        with self.runner.engine.begin() as conn:
            task = tasks.open_task(conn, name)
            if task is not None and not tasks.is_stale(task, datetime.now(UTC), self.executor.requeue_after_seconds):
                self.log.info("job_skipped", job=name, reason=f"its task is {task.status} since "
                              f"{(task.started_at or task.queued_at).isoformat()}")
                return None
            if task is not None:
                tasks.mark_lost(conn, task.task_id, f"{task.status} for over {self.executor.requeue_after_seconds:g}s "
                                "with no worker running it: sent anew")
                self.log.warning("task_lost", job=name, task_id=task.task_id, was=task.status)
            tasks.queue(conn, task_id, name, connection)
        return task_id

    def _send(self, name: str, task_id: str) -> None:
        try:
            self.app.send_task(TASK, args=[name, task_id], task_id=task_id, queue=self.executor.queue)
        except Exception as exc:  # noqa: BLE001 - the broker's own error, said; the job goes at its next time
            with self.runner.engine.begin() as conn:
                tasks.mark_lost(conn, task_id, f"not sent: {scrub_text(str(exc))}")
            self.log.error("job_not_sent", job=name, error=scrub_text(str(exc)))
            return
        self.log.info("job_queued", job=name, task_id=task_id)

    def close(self) -> None:
        self.app.close()
