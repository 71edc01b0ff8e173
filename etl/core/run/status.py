"""`desksync status`: per connection and stream, what the mirror holds and how the runs went."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from etl.core.config import Config, ConnectionSettings
from etl.core.connector import connector_of
from etl.core.mirror.base import table_of
from etl.core.mirror.db import ensure_current, open_engine
from etl.core.mirror.meta import SyncState
from etl.core.mirror.normalize import iso_utc
from etl.core.push.conflicts import open_conflicts
from etl.core.push.journal import HELD
from etl.core.run.records import BLOCKS, RUNS


def _cursor_utc(cursor: Any, timezone: str) -> Any:
    """A cursor as every moment is printed (UTC ISO 8601): cursors are kept as the APIs take them,
    in the account's zone ("2017-01-13 12:36:58", ServiceGo's to the minute)."""
    if not isinstance(cursor, str):
        return cursor
    for form in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"):
        try:
            return iso_utc(datetime.strptime(cursor, form).replace(tzinfo=ZoneInfo(timezone)))
        except ValueError:
            continue
    return iso_utc(cursor)


def _connection_problems(last_run: Any) -> list[str]:
    """Health by the connection's latest run, whoever started it (a job, or a command typed by hand):
    a failed or abandoned last run is a problem until a run succeeds."""
    if last_run is None or last_run["status"] not in ("failed", "abandoned"):
        return []
    started = last_run["started_at"]
    when = iso_utc(started) if started else "?"
    return [f"last {last_run['kind']} run {last_run['status']} (started {when}): {last_run['error'] or 'no error recorded'}"]


def _streams(conn: sa.Connection, name: str, settings: ConnectionSettings, states: dict[tuple[str, str], Any],
             ) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for found in connector_of(settings).status_tables(conn, settings):
        t = found.table
        counts = conn.execute(sa.select(
            sa.func.count(), sa.func.sum(sa.case((t.c.is_deleted.is_(True), 1), else_=0)),
        ).where(t.c.connection == name)).one()
        row = states.get((name, found.state_key))
        state = dict(row.state) if row else {}
        deleted_state = states.get((name, f"{found.name}/deleted"))
        out[found.name] = {
            "rows": int(counts[0] or 0),
            "deleted_rows": int(counts[1] or 0),
            "cursor": _cursor_utc(state.get("cursor"), settings.timezone),
            "cursor_as_sent": state.get("cursor"),  # the API's own text, in the account's zone
            "scan_in_progress": bool(state.get("scan")) or bool(deleted_state and deleted_state.state.get("scan")),
            "last_success_at": iso_utc(row.last_success_at) if row and row.last_success_at else None,
            "last_error": row.last_error if row else None,
        }
    return out


def _connection(conn: sa.Connection, name: str, settings: ConnectionSettings, states: dict[tuple[str, str], Any],
                blocks: list[Any]) -> dict[str, Any]:
    last_run = conn.execute(
        sa.select(RUNS).where(RUNS.c.connection == name).order_by(RUNS.c.id.desc()).limit(1)
    ).mappings().first()
    held = conn.execute(sa.select(HELD.c.table_name, HELD.c.record_id, HELD.c.operation, HELD.c.error)
                        .where(HELD.c.connection == name).order_by(HELD.c.table_name, HELD.c.record_id)
                        ).mappings().all()
    by_status = conn.execute(sa.select(RUNS.c.status, sa.func.count(), sa.func.sum(RUNS.c.requests)).where(
        RUNS.c.connection == name).group_by(RUNS.c.status)).all()
    return {
        "problems": _connection_problems(last_run),
        # every run of the connection so far, by outcome: how many, and their requests
        "runs_by_status": {status: {"runs": int(count), "requests": int(requests or 0)}
                           for status, count, requests in by_status},
        "streams": _streams(conn, name, settings, states),
        "held": [dict(h) for h in held],  # rows a push could not send, with the remote's error
        "open_conflicts": len(open_conflicts(conn, name)),
        "last_run": {k: iso_utc(v) if isinstance(v, datetime) else v for k, v in last_run.items()} if last_run else None,
        "blocks": [
            {"budget": b["budget"], "blocked_until": iso_utc(b["blocked_until"]), "reason": b["reason"]}
            for b in blocks if b["connection"] == name
        ],
    }


def status(config: Config) -> dict[str, Any]:
    """{"connections": per connection and stream: last success, cursor, rows, deleted rows, last
    error; "jobs": per scheduled job: last run, failures in a row, next run, health problems}."""
    engine = open_engine(config.mirror.resolved_url(config.base_dir))
    ensure_current(engine)
    out: dict[str, Any] = {}
    try:
        with engine.connect() as conn:
            states = {(r.connection, r.stream): r for r in conn.execute(sa.select(table_of(SyncState)))}
            blocks = list(conn.execute(sa.select(BLOCKS)).mappings().all())
            out["connections"] = {name: _connection(conn, name, settings, states, blocks)
                                  for name, settings in config.connections.items()}
            if config.jobs:
                from etl.core.run.history import (
                    job_report,  # APScheduler's triggers, where jobs are configured
                )

                out["jobs"] = job_report(conn, config, dict(config.jobs))
    finally:
        engine.dispose()
    return out
