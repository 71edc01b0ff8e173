"""When a job runs first after the scheduler starts: only when its own history says it is overdue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from etl.core.config import JobConfig
from etl.core.run.schedule import first_run_at

NOW = datetime(2026, 12, 4, 18, 42, tzinfo=UTC)
GRACE = 300


def test_a_cron_job_not_due_waits_for_its_time() -> None:
    nightly = JobConfig(connection="kb", cron="30 3 * * *")
    assert first_run_at(nightly, None, NOW, GRACE) == datetime(2026, 12, 5, 3, 30, tzinfo=UTC)
    assert first_run_at(nightly, NOW - timedelta(hours=15), NOW, GRACE) == datetime(2026, 12, 5, 3, 30, tzinfo=UTC)


def test_a_cron_time_missed_within_the_grace_runs_at_start_once() -> None:
    job = JobConfig(connection="kb", cron="40 18 * * *")  # 18:40, two minutes before the start
    assert first_run_at(job, None, NOW, GRACE) == NOW
    assert first_run_at(job, NOW - timedelta(days=1), NOW, GRACE) == NOW
    ran = datetime(2026, 12, 4, 18, 40, 2, tzinfo=UTC)  # it ran at that time, before the restart
    assert first_run_at(job, ran, NOW, GRACE) == datetime(2026, 12, 5, 18, 40, tzinfo=UTC)
    assert first_run_at(job, None, NOW, 60) == datetime(2026, 12, 5, 18, 40, tzinfo=UTC), "missed past the grace"


def test_an_interval_job_runs_at_start_only_when_its_interval_has_passed() -> None:
    job = JobConfig(connection="helpdesk", every_seconds=600)
    assert first_run_at(job, None, NOW, GRACE) == NOW, "never ran"
    assert first_run_at(job, NOW - timedelta(minutes=11), NOW, GRACE) == NOW, "overdue"
    assert first_run_at(job, NOW - timedelta(minutes=4), NOW, GRACE) == NOW + timedelta(minutes=6)
