"""Read and write sync state rows inside the caller's transaction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from etl.core.mirror.base import table_of
from etl.core.mirror.meta import SyncState

_T = table_of(SyncState)


def load_state(conn: sa.Connection, connection: str, stream: str) -> dict[str, Any]:
    row = conn.execute(
        sa.select(_T.c.state).where(_T.c.connection == connection, _T.c.stream == stream)
    ).scalar_one_or_none()
    return dict(row) if row else {}


def save_state(
    conn: sa.Connection,
    connection: str,
    stream: str,
    state: dict[str, Any],
    *,
    success: bool = False,
    error: str | None = None,
) -> None:
    now = datetime.now(UTC)
    values: dict[str, Any] = {"state": state, "updated_at": now}
    if success:
        values.update(last_success_at=now, last_error=None, last_error_at=None)
    if error is not None:
        values.update(last_error=error, last_error_at=now)
    updated = conn.execute(
        _T.update().where(_T.c.connection == connection, _T.c.stream == stream).values(**values)
    ).rowcount
    if not updated:
        conn.execute(_T.insert().values(connection=connection, stream=stream, **values))


def record_success(engine: sa.Engine, connection: str, stream: str) -> None:
    with engine.begin() as conn:
        save_state(conn, connection, stream, load_state(conn, connection, stream), success=True)


def record_error(engine: sa.Engine, connection: str, stream: str, error: str) -> None:
    with engine.begin() as conn:
        save_state(conn, connection, stream, load_state(conn, connection, stream), error=error)


def reconcile_due(engine: sa.Engine, connection: str, stream: str, every_hours: float) -> bool:
    """Whether the stream's look for records deleted outright is due (every `every_hours`; 0: never).
    The first call starts the cadence: a first backfill sees every id anyway."""
    if every_hours <= 0:
        return False
    key = f"{stream}/reconcile"
    with engine.begin() as conn:
        state = load_state(conn, connection, key)
        last = state.get("last_reconcile_at_utc")
        if last is None:
            save_state(conn, connection, key, {**state, "last_reconcile_at_utc": datetime.now(UTC).isoformat()})
            return False
    return datetime.fromisoformat(last) < datetime.now(UTC) - timedelta(hours=every_hours)


def mark_reconciled(engine: sa.Engine, connection: str, stream: str) -> None:
    with engine.begin() as conn:
        save_state(conn, connection, f"{stream}/reconcile", {"last_reconcile_at_utc": datetime.now(UTC).isoformat()})
