"""Unattended replication: the configured jobs on their cadences (APScheduler 3).

Rules, and where each is kept:
- A job never overlaps itself: APScheduler's max_instances=1 and coalesced missed runs within
  one process; an advisory lock per job across processes (etl.core.run.locks).
- The jobs of one account share its rate budgets: one set of limiters per connection in the
  process, where they run one after another (their streams' scans must not interleave), and
  an account lock across processes, so that two schedulers (or a scheduler and a command typed
  by hand, which takes the same lock: etl.core.run.locks.account_lease) never spend one account's budget
  at the same time.
- A failing job backs off (base × 2^(failures−1), capped) without touching the others; the
  count of consecutive failures comes from the run history, so it survives restarts.
- An account blocked for its rate limit: its jobs wait until the block has ended.
- A stop (SIGINT/SIGTERM) sets the event every running sync watches: the page in progress
  commits, the run is recorded as interrupted, and the next start resumes from the checkpoint.
  A running push finishes (its writes are short, and each answer is written back as it comes).
- A push job and a pull job of one connection take turns like any two jobs of one account: a push
  of a table never runs while a pull of it does. A pipeline job runs on its target's account (its
  connection), taking turns with that account's pulls and pushes. Across processes a job that finds its account
  busy is skipped until its next time, not queued.
- With an `[executor]`, due jobs go to Celery workers instead (etl.core.run.dispatch): the same
  rules hold there, each worker running its jobs through the same JobRunner.
"""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from etl.core.config import Config, JobConfig
from etl.core.log import get_logger
from etl.core.memory import cap_malloc_arenas
from etl.core.mirror.db import ensure_current
from etl.core.run.history import consecutive_failures, failure_backoff, last_started
from etl.core.run.locks import SchedulerFileLock
from etl.core.run.runner import JobRunner

if TYPE_CHECKING:
    from etl.core.run.dispatch import Dispatcher


def default_jobs(config: Config, every_seconds: float) -> dict[str, JobConfig]:
    """Without a [jobs] table: pull every connection every `every_seconds`."""
    return {f"pull_{name}": JobConfig(connection=name, every_seconds=every_seconds) for name in config.connections}


def trigger_of(spec: JobConfig) -> Any:
    if spec.cron is not None:
        return CronTrigger.from_crontab(spec.cron, timezone=UTC)
    return IntervalTrigger(seconds=spec.every_seconds, timezone=UTC)


def first_run_at(spec: JobConfig, last: datetime | None, now: datetime, grace_seconds: float) -> datetime:
    """When a job runs first after the scheduler starts: now only if its own history says it is
    overdue, else at its next time.

    An interval job is overdue when its interval has passed since its last run (or it never ran).
    A cron job is overdue when one of its times passed less than the misfire grace ago and it has
    not run since: a scheduler started at 18:42 does not run a "30 3 * * *" job (it creates
    records remotely, perhaps), but one restarted at 03:32 does.
    """
    if spec.cron is None:
        interval = timedelta(seconds=spec.every_seconds or 0)
        return now if last is None or last + interval <= now else last + interval
    trigger = CronTrigger.from_crontab(spec.cron, timezone=UTC)
    missed = trigger.get_next_fire_time(None, now - timedelta(seconds=grace_seconds))
    if missed is not None and missed <= now and (last is None or last < missed):
        return now
    upcoming = trigger.get_next_fire_time(None, now + timedelta(microseconds=1))
    return upcoming if upcoming is not None else now


@dataclass
class Runner:
    """The cadence: at each job's time, runs it in this process (`JobRunner`) or, with an
    `[executor]`, sends it to the workers (`dispatch.Dispatcher`)."""

    config: Config
    jobs: dict[str, JobConfig]
    stop: threading.Event = field(default_factory=threading.Event)
    scheduler: BaseScheduler | None = None

    def __post_init__(self) -> None:
        self.runner = JobRunner(self.config, self.jobs, self.stop)
        self.engine = self.runner.engine
        self.file_lock: SchedulerFileLock | None = None
        self.log = get_logger(component="scheduler")
        self.dispatcher: Dispatcher | None = None
        if self.config.executor is not None:
            from etl.core.run.dispatch import Dispatcher

            self.dispatcher = Dispatcher(self.config, self.runner)

    def start_checks(self) -> None:
        """Refuse to start on an old schema, or beside another scheduler on one SQLite file."""
        ensure_current(self.engine)
        if self.dispatcher is not None:
            self.dispatcher.start_checks()
        if self.engine.dialect.name == "sqlite":
            database = self.engine.url.database or ""
            self.file_lock = SchedulerFileLock(database)
            self.file_lock.acquire()

    def build(self, scheduler: BaseScheduler) -> None:
        grace = int(self.config.schedule.misfire_grace_seconds)
        now = datetime.now(UTC)
        with self.engine.connect() as conn:
            first = {name: first_run_at(spec, last_started(conn, name), now, grace) for name, spec in self.jobs.items()}
        for name, spec in self.jobs.items():
            scheduler.add_job(self.run_job, trigger_of(spec), args=[name], id=name, name=name, max_instances=1,
                              coalesce=True, misfire_grace_time=grace, next_run_time=first[name])
            self.log.info("job_scheduled", job=name, first_run_at=first[name].isoformat())
        self.scheduler = scheduler

    def delay(self, name: str, until: datetime, reason: str) -> None:
        if self.scheduler is not None and not self.stop.is_set():
            self.scheduler.modify_job(name, next_run_time=until)
            self.log.info("job_delayed", job=name, until=until.isoformat(), reason=reason)

    def run_job(self, name: str) -> None:
        if self.stop.is_set():
            return
        if self.dispatcher is not None:
            later = self.dispatcher.send(name)
            if later is not None:
                self.delay(name, *later)
            return
        connection = self.jobs[name].connection
        outcome = self.runner.run(name)
        if outcome.status == "busy":
            if outcome.blocked_until is not None:
                self.delay(name, outcome.blocked_until + timedelta(seconds=1), outcome.why)
            elif not self.stop.is_set():
                self.log.info("job_skipped", job=name, connection=connection, reason=outcome.why)
            return
        if outcome.blocked_until is not None:
            for other, other_spec in self.jobs.items():
                if other_spec.connection == connection:
                    self.delay(other, outcome.blocked_until + timedelta(seconds=1),
                               "the account is blocked for its rate limit")
        elif outcome.status == "failed":
            with self.engine.connect() as conn:
                failures = consecutive_failures(conn, name)
            if failures:
                self.delay(name, datetime.now(UTC) + timedelta(seconds=failure_backoff(self.config, failures)),
                           f"{failures} failures in a row")

    def shutdown(self) -> None:
        self.stop.set()
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        if self.file_lock is not None:
            self.file_lock.release()
        if self.dispatcher is not None:
            self.dispatcher.close()
        self.runner.close()


def run_forever(config: Config, job_specs: dict[str, JobConfig], stop: threading.Event) -> None:
    """Block running the jobs until `stop` is set (by a signal handler); running syncs finish their page."""
    runner = Runner(config, job_specs, stop)
    runner.start_checks()
    # a thread per job unless bounded: an account's long backfill then holds no other account's pull back
    workers = config.schedule.max_concurrent_runs or max(4, len(job_specs))
    scheduler = BlockingScheduler(executors={"default": ThreadPoolExecutor(workers)}, timezone=UTC)
    runner.build(scheduler)
    def stop_when_asked() -> None:
        stop.wait()
        runner.shutdown()

    watcher = threading.Thread(target=stop_when_asked, name="scheduler-stop", daemon=True)
    watcher.start()
    runner.log.info("scheduler_started", jobs=sorted(job_specs))
    try:
        scheduler.start()
    finally:
        stop.set()
        watcher.join(timeout=60)
        runner.log.info("scheduler_stopped")


def serve(config: Config, every_seconds: float = 300.0) -> None:
    """`desksync schedule` and scheduler.py: the configured jobs (or a pull of every connection)
    until SIGINT or SIGTERM."""
    cap_malloc_arenas()
    specs = dict(config.jobs) or default_jobs(config, every_seconds)
    stop = threading.Event()

    def on_signal(signum: int, _: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    run_forever(config, specs, stop)
