"""`desksync worker`: a Celery worker that runs the jobs the scheduler sends (etl.core.run.dispatch).

One process with a pool of threads (Celery's `threads` pool): the jobs' work is mostly waiting on
the remote APIs and the database, long scans write through their own writer process, and one
process keeps one set of limiters and one cache per account. Run several workers, on one machine
or many, for more.

A task runs its job through `JobRunner` (the job's lock, the account's lease, as the scheduler
does), claiming its job_tasks row first (etl.core.run.tasks):
- its account is busy (another job of it runs here or on another worker): the task goes back to
  the broker with a delay (`busy_retry_seconds`); blocked for its rate limit: the task ends
  `skipped`, and the scheduler sends the job again once the block has ended;
- its row is done already (a second delivery of a task that ran): nothing runs;
- the worker is stopping (SIGTERM, Celery's warm shutdown): the running pulls commit their page
  and end "interrupted", and their tasks go back to the queue for another worker, which resumes
  them from the checkpoint;
- the worker is killed: its tasks stay unacknowledged, and the broker hands them to another
  worker once `visibility_timeout_seconds` have passed; that worker's run marks the dead one's
  run abandoned (etl.core.run.records.start_run) and resumes from its checkpoint.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from etl.core.config import Config, ExecutorConfig
from etl.core.errors import ConfigError
from etl.core.log import get_logger
from etl.core.memory import cap_malloc_arenas
from etl.core.mirror.db import ensure_current
from etl.core.run import tasks
from etl.core.run.celery_app import TASK, celery_app, check_broker
from etl.core.run.dispatch import require_postgresql
from etl.core.run.runner import JobRunner
from etl.core.run.schedule import default_jobs


def run_task(task: Any, runner: JobRunner, executor: ExecutorConfig, job: str, task_id: str) -> str:
    """One delivery of a task: what its job's try came to (see the module's docstring)."""
    log = get_logger(component="worker", job=job, task_id=task_id)
    if job not in runner.jobs:
        tasks.finish(runner.engine, task_id, "done", note=f"job {job!r} is not in this worker's configuration")
        log.error("task_refused", reason="the job is not in this worker's configuration")
        return "refused"
    if runner.stop.is_set():  # a stopping worker may still be handed a task: it goes back, not run
        raise task.retry(countdown=1)
    token = tasks.current_task.set(task_id)
    try:
        outcome = runner.run(job, wait_for_account=False, claim=lambda: tasks.claim(runner.engine, task_id))
    finally:
        tasks.current_task.reset(token)
    if outcome.status == "busy" and outcome.blocked_until is not None:
        # a block lasts 20 minutes or an hour: longer than a message should wait in a worker (an
        # unacknowledged one outliving the visibility timeout is delivered again); the scheduler
        # sends the job again once the block has ended
        tasks.finish(runner.engine, task_id, "skipped", note=f"{outcome.why} until {outcome.blocked_until.isoformat()}")
        log.info("task_skipped", reason=outcome.why, until=outcome.blocked_until.isoformat())
        return "skipped"
    if outcome.status == "busy":
        log.info("task_deferred", reason=outcome.why, seconds=executor.busy_retry_seconds)
        raise task.retry(countdown=executor.busy_retry_seconds)
    if outcome.status == "interrupted":
        tasks.finish(runner.engine, task_id, "queued", note="handed back by a stopping worker")
        log.info("task_handed_back")
        raise task.retry(countdown=0)  # a new message for the queue; this one is acknowledged
    if outcome.status == "stale":
        log.info("task_already_done")
    else:
        tasks.finish(runner.engine, task_id, "done")
    return outcome.status


def serve_worker(config: Config, concurrency: int) -> None:
    """Consume the executor's queue with `concurrency` threads until SIGTERM or SIGINT (a warm
    shutdown: running jobs stop at their next page and hand their tasks back)."""
    from celery.signals import worker_shutting_down

    if config.executor is None:
        raise ConfigError("desksync worker needs an [executor] section (kind = \"celery\", broker_url_env) "
                          "naming the broker the scheduler sends its jobs to")
    executor = config.executor
    cap_malloc_arenas()
    stop = threading.Event()
    # without [jobs], the scheduler's default: a pull of every connection (its cadence is the scheduler's)
    runner = JobRunner(config, dict(config.jobs) or default_jobs(config, 300.0), stop)
    require_postgresql(runner.engine)
    ensure_current(runner.engine)
    app = celery_app(executor)
    check_broker(app, executor)

    @app.task(name=TASK, bind=True, max_retries=None, acks_late=True)  # type: ignore[untyped-decorator]
    def run_job(task: Any, job: str, task_id: str) -> str:
        return run_task(task, runner, executor, job, task_id)

    log = get_logger(component="worker")

    def on_shutdown(**_: Any) -> None:
        stop.set()
        log.info("worker_stopping", reason="running jobs stop at their next page and hand their tasks back")

    worker_shutting_down.connect(on_shutdown, weak=False)
    log.info("worker_started", concurrency=concurrency, queue=executor.queue, pid=os.getpid())
    try:
        app.Worker(pool="threads", concurrency=concurrency, queues=[executor.queue], quiet=True,
                   hostname=f"desksync-{os.getpid()}@%h", without_gossip=True, without_mingle=True,
                   loglevel="WARNING").start()
    finally:
        stop.set()
        runner.close()
        log.info("worker_stopped")
