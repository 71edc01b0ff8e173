"""What the console's pages show, read from the mirror (its own tables only: runs, blocks,
conflicts, held rows, the change log)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from etl.core.mirror.base import table_of
from etl.core.mirror.meta import AccountBlock, ChangeLog, PipelineLink, PushHeld, SyncRun
from etl.core.mirror.normalize import iso_utc
from etl.core.push.conflicts import open_conflicts

RUNS = table_of(SyncRun)
BLOCKS = table_of(AccountBlock)
HELD = table_of(PushHeld)
CHANGES = table_of(ChangeLog)
LINKS = table_of(PipelineLink)


def _aware(value: datetime | None) -> datetime | None:
    return None if value is None else value if value.tzinfo else value.replace(tzinfo=UTC)


def runs(conn: sa.Connection, job: str | None = None, kind: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The latest runs, oldest first, with their seconds."""
    query = sa.select(RUNS).order_by(RUNS.c.id.desc()).limit(limit)
    if job:
        query = query.where(RUNS.c.job == job)
    if kind:
        query = query.where(RUNS.c.kind == kind)
    out = []
    for row in reversed(conn.execute(query).mappings().all()):
        run = dict(row)
        started, finished = _aware(run["started_at"]), _aware(run["finished_at"])
        run["seconds"] = (finished - started).total_seconds() if started and finished else None
        run["started_at"], run["finished_at"] = iso_utc(started), iso_utc(finished) if finished else None
        out.append(run)
    return out


def run(conn: sa.Connection, run_id: int) -> dict[str, Any] | None:
    row = conn.execute(sa.select(RUNS).where(RUNS.c.id == run_id)).mappings().first()
    return None if row is None else {k: iso_utc(v) if isinstance(v, datetime) else v for k, v in row.items()}


def requests_per_minute(conn: sa.Connection, connection: str, hours: float, now: datetime) -> list[tuple[str, float]]:
    """Requests a minute over the last `hours`, each run's requests spread evenly over its minutes
    (runs record their count, not each request's time)."""
    since = now - timedelta(hours=hours)
    minutes: dict[datetime, float] = {}
    start = since.replace(second=0, microsecond=0)
    for n in range(int(hours * 60) + 1):
        minutes[start + timedelta(minutes=n)] = 0.0
    rows = conn.execute(sa.select(RUNS.c.started_at, RUNS.c.finished_at, RUNS.c.requests).where(
        RUNS.c.connection == connection, RUNS.c.started_at >= since - timedelta(hours=1))).all()
    for started, finished, requests in rows:
        begin, end = _aware(started), _aware(finished) or now
        if begin is None or not requests:
            continue
        span = max((end - begin).total_seconds(), 1.0)
        moment = begin.replace(second=0, microsecond=0)
        while moment <= end:
            overlap = (min(end, moment + timedelta(minutes=1)) - max(begin, moment)).total_seconds()
            if moment in minutes and overlap > 0:
                minutes[moment] += requests * overlap / span
            moment += timedelta(minutes=1)
    return [(iso_utc(m), v) for m, v in sorted(minutes.items())]


def rate_limit_waits(conn: sa.Connection, connection: str, since: datetime) -> float:
    """Seconds the connection's runs since `since` waited on their rate limits (wall-clock, each run's)."""
    return float(conn.execute(sa.select(sa.func.coalesce(sa.func.sum(RUNS.c.rate_limit_wait_seconds), 0)).where(
        RUNS.c.connection == connection, RUNS.c.started_at >= since)).scalar() or 0)


def blocks(conn: sa.Connection) -> list[dict[str, Any]]:
    return [{**dict(r), "blocked_until": iso_utc(r["blocked_until"])}
            for r in conn.execute(sa.select(BLOCKS).order_by(BLOCKS.c.blocked_until.desc())).mappings()]


def conflicts(conn: sa.Connection) -> list[dict[str, Any]]:
    return [{**c, "detected_at": iso_utc(c["detected_at"])} for c in open_conflicts(conn)]


def held(conn: sa.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(sa.select(HELD).order_by(HELD.c.connection, HELD.c.table_name, HELD.c.record_id)).mappings()
    return [{**dict(r), "held_at": iso_utc(r["held_at"])} for r in rows]


def held_pipeline_records(conn: sa.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(sa.select(LINKS.c.pipeline, LINKS.c.step, LINKS.c.source_id, LINKS.c.error)
                        .where(LINKS.c.error.is_not(None)).order_by(LINKS.c.pipeline, LINKS.c.step)).mappings()
    return [dict(r) for r in rows]


def changes(conn: sa.Connection, limit: int = 200) -> list[dict[str, Any]]:
    rows = conn.execute(sa.select(CHANGES).order_by(CHANGES.c.id.desc()).limit(limit)).mappings()
    return [{k: iso_utc(v) if isinstance(v, datetime) else v for k, v in r.items()} for r in rows]
