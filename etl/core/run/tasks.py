"""Jobs sent to the workers (the `[executor]`), as the mirror's job_tasks table records them.

A task's row is the one truth about it, whatever the broker does. The scheduler queues it; a
worker takes it (`claim`) only while it holds the job's lock and the account's lease, and only
while the row is still open; the worker marks it done when the job has run. So a message the
broker delivers twice (a worker died after its run but before the acknowledgement, or a message
outlived its visibility timeout) finds its row done and runs nothing.

    queued ──claim──▶ running ──finish──▶ done (or skipped: its account was blocked)
       │                 │ (its worker died: the broker hands the message to another worker,
       │                 │  whose claim takes the row again, one delivery more)
       └──── lost: queued longer than `[executor] requeue_after_seconds` (the broker lost it);
             or running with its job's lock free for that long (nobody redelivered it).
             The scheduler then sends the job anew.
"""

from __future__ import annotations

import os
import socket
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from etl.core.mirror.base import table_of
from etl.core.mirror.meta import JobTask
from etl.core.mirror.normalize import stored_utc

TASKS = table_of(JobTask)
OPEN = ("queued", "running")

# The task a worker thread runs now: every sync_runs row the job starts records it (records.start_run).
current_task: ContextVar[str | None] = ContextVar("current_task", default=None)


@dataclass(frozen=True)
class OpenTask:
    task_id: str
    status: str
    queued_at: datetime
    started_at: datetime | None
    host: str | None
    pid: int | None


def queue(conn: sa.Connection, task_id: str, job: str, connection: str) -> None:
    conn.execute(TASKS.insert().values(task_id=task_id, job=job, connection=connection, status="queued",
                                       queued_at=datetime.now(UTC), deliveries=0))


def open_task(conn: sa.Connection, job: str) -> OpenTask | None:
    """The job's task that is queued or running, if any (the scheduler sends no second one)."""
    row = conn.execute(sa.select(TASKS).where(TASKS.c.job == job, TASKS.c.status.in_(OPEN))
                       .order_by(TASKS.c.queued_at.desc()).limit(1)).mappings().first()
    if row is None:
        return None
    return OpenTask(row["task_id"], row["status"], stored_utc(row["queued_at"]), stored_utc(row["started_at"]),
                    row["host"], row["pid"])


def mark_lost(conn: sa.Connection, task_id: str, note: str) -> None:
    conn.execute(TASKS.update().where(TASKS.c.task_id == task_id, TASKS.c.status.in_(OPEN)).values(
        status="lost", finished_at=datetime.now(UTC), note=note))


def is_stale(task: OpenTask, now: datetime, after_seconds: float) -> bool:
    since = task.started_at if task.status == "running" and task.started_at else task.queued_at
    return now - since > timedelta(seconds=after_seconds)


def claim(engine: sa.Engine, task_id: str) -> bool:
    """Take the task for this worker (the caller holds the job's lock): False when it is no longer
    open (done already, or given up as lost and sent anew)."""
    with engine.begin() as conn:
        taken = conn.execute(TASKS.update().where(TASKS.c.task_id == task_id, TASKS.c.status.in_(OPEN)).values(
            status="running", started_at=datetime.now(UTC), host=socket.gethostname(), pid=os.getpid(),
            deliveries=TASKS.c.deliveries + 1))
        return bool(taken.rowcount)


def finish(engine: sa.Engine, task_id: str, status: str, note: str | None = None) -> None:
    """`done` once the job ran (however its runs ended: the run history says), `skipped` when it
    could not run, or back to `queued` when a stopping worker hands it back to the broker."""
    values: dict[str, object] = {"status": status, "note": note}
    if status != "queued":
        values["finished_at"] = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(TASKS.update().where(TASKS.c.task_id == task_id).values(**values))


def task_report(conn: sa.Connection, jobs: list[str]) -> dict[str, dict[str, object]]:
    """Per job, its open task: for `status`, the console and /metrics (which worker runs it, or
    since when it waits for one)."""
    out: dict[str, dict[str, object]] = {}
    for job in jobs:
        task = open_task(conn, job)
        if task is not None:
            out[job] = {"task_id": task.task_id, "status": task.status, "queued_at": task.queued_at.isoformat(),
                        "worker": f"{task.host} pid {task.pid}" if task.host else None}
    return out
