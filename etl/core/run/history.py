"""The run history read back: what `desksync status`, `runs`, `--check` and the scheduler need
to know of each job (its last runs, failures in a row, its next time, its problems).

Its own module, below both the scheduler and the jobs it reports on: neither imports the other.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from apscheduler.triggers.cron import CronTrigger

from etl.core.config import Config, JobConfig
from etl.core.mirror.base import table_of
from etl.core.mirror.meta import SyncRun
from etl.core.mirror.normalize import iso_utc, stored_utc
from etl.core.run.tasks import open_task

_RUNS = table_of(SyncRun)


def consecutive_failures(conn: sa.Connection, job: str) -> int:
    statuses = conn.execute(
        sa.select(_RUNS.c.status).where(_RUNS.c.job == job, _RUNS.c.status != "running")
        .order_by(_RUNS.c.id.desc()).limit(50)
    ).scalars()
    count = 0
    for status in statuses:
        if status != "failed":
            break
        count += 1
    return count


def failure_backoff(config: Config, failures: int) -> float:
    """Seconds a job waits after `failures` failed runs in a row: base × 2^(failures−1), capped."""
    settings = config.schedule
    return float(min(settings.max_failure_backoff_seconds, settings.failure_backoff_seconds * 2 ** (failures - 1)))


def last_started(conn: sa.Connection, job: str) -> datetime | None:
    """When the job's latest run that finished its work started, by the history: an interrupted,
    failed or abandoned run leaves the job due (a stopped scheduler's pull is resumed at start)."""
    started = conn.execute(sa.select(sa.func.max(_RUNS.c.started_at)).where(
        _RUNS.c.job == job, _RUNS.c.status == "ok")).scalar()
    return stored_utc(started)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else iso_utc(value)


def next_run(spec: JobConfig, last_started: datetime | None, now: datetime) -> datetime:
    """When the job runs next, as far as the history tells (a running scheduler may delay it)."""
    if spec.cron is not None:
        fire = CronTrigger.from_crontab(spec.cron, timezone=UTC).get_next_fire_time(None, now)
        return fire if fire is not None else now
    if last_started is None:
        return now
    return max(now, stored_utc(last_started) + timedelta(seconds=spec.every_seconds or 0))


def _unclaimed_limit(spec: JobConfig) -> timedelta:
    """How long a job's task may wait for a worker before health calls it a problem: two of its
    intervals, at least ten minutes (a busy cluster works through a backlog)."""
    return max(timedelta(minutes=10), timedelta(seconds=2 * (spec.every_seconds or 0)))


def job_report(conn: sa.Connection, config: Config, specs: dict[str, JobConfig]) -> dict[str, Any]:
    now = datetime.now(UTC)
    out: dict[str, Any] = {}
    for name, spec in specs.items():
        last = conn.execute(sa.select(_RUNS).where(_RUNS.c.job == name).order_by(_RUNS.c.id.desc()).limit(1)).mappings().first()
        last_ok = last_started(conn, name)
        failures = consecutive_failures(conn, name)
        lag = None if last_ok is None else now - last_ok
        task = open_task(conn, name)  # sent to the workers ([executor]) and not done yet
        problems = []
        if task is not None and task.status == "queued" and now - task.queued_at > _unclaimed_limit(spec):
            problems.append(f"queued for {(now - task.queued_at).total_seconds() / 60:.0f} minutes and no worker "
                            "took it (are the workers running?)")
        if failures >= config.schedule.max_consecutive_failures:
            problems.append(f"failed {failures} times in a row")
        if spec.max_lag_minutes is not None and (lag is None or lag > timedelta(minutes=spec.max_lag_minutes)):
            age = "never synced" if lag is None else f"data is {lag.total_seconds() / 60:.0f} minutes old"
            problems.append(f"{age} (max_lag_minutes = {spec.max_lag_minutes:g})")
        out[name] = {
            "connection": spec.connection,
            "last_run": None if last is None else {
                "status": last["status"], "started_at": _iso(last["started_at"]), "finished_at": _iso(last["finished_at"]),
                "requests": last["requests"], "error": last["error"]},
            "last_success_started_at": _iso(last_ok),
            "consecutive_failures": failures,
            "next_run_at": iso_utc(next_run(spec, last["started_at"] if last else None, now)),
            "task": None if task is None else {
                "status": task.status, "queued_at": _iso(task.queued_at), "started_at": _iso(task.started_at),
                "worker": f"{task.host} pid {task.pid}" if task.host else None},
            "problems": problems,
        }
    return out


def run_history(conn: sa.Connection, job: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    query = sa.select(_RUNS).order_by(_RUNS.c.id.desc()).limit(limit)
    if job:
        query = query.where(_RUNS.c.job == job)
    return [{k: (_iso(v) if isinstance(v, datetime) else v) for k, v in row.items()}
            for row in conn.execute(query).mappings()]
