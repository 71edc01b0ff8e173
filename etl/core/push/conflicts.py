"""The conflicts table: fields changed locally and remotely to different values (manual policy).

A row with an open conflict is not pushed; `desksync resolve ID --take local|remote` settles it.
Shared by every system's merge; each system knows how to put a remote value back (`resolve`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from etl.core.mirror.base import table_of
from etl.core.mirror.meta import Conflict
from etl.core.push.fields import FieldConflict

CONFLICTS = table_of(Conflict)


def record_conflicts(conn: sa.Connection, connection: str, table: str, record_id: int,
                     conflicts: list[FieldConflict], now: datetime) -> int:
    """Record a row's conflicts; an older open conflict on the same field is replaced."""
    for c in conflicts:
        conn.execute(CONFLICTS.update().where(
            CONFLICTS.c.connection == connection, CONFLICTS.c.table_name == table, CONFLICTS.c.record_id == record_id,
            CONFLICTS.c.field == c.field, CONFLICTS.c.resolved_at.is_(None)).values(resolved_at=now, resolution="replaced"))
        conn.execute(CONFLICTS.insert().values(connection=connection, table_name=table, record_id=record_id,
                                               field=c.field, base=c.base, local=c.local, remote=c.remote,
                                               detected_at=now))
    return len(conflicts)


def open_conflict_ids(conn: sa.Connection, connection: str, table: str) -> set[int]:
    return set(conn.execute(sa.select(CONFLICTS.c.record_id).where(
        CONFLICTS.c.connection == connection, CONFLICTS.c.table_name == table,
        CONFLICTS.c.resolved_at.is_(None))).scalars())


def open_conflict(conn: sa.Connection, conflict_id: int) -> dict[str, Any]:
    row = conn.execute(sa.select(CONFLICTS).where(CONFLICTS.c.id == conflict_id)).mappings().first()
    if row is None or row["resolved_at"] is not None:
        raise ValueError(f"no open conflict {conflict_id}")
    return dict(row)


def settle(conn: sa.Connection, conflict_id: int, take: str, now: datetime) -> None:
    conn.execute(CONFLICTS.update().where(CONFLICTS.c.id == conflict_id).values(resolved_at=now, resolution=take))


def open_conflicts(conn: sa.Connection, connection: str | None = None) -> list[dict[str, Any]]:
    query = sa.select(CONFLICTS).where(CONFLICTS.c.resolved_at.is_(None)).order_by(CONFLICTS.c.id)
    if connection:
        query = query.where(CONFLICTS.c.connection == connection)
    return [dict(r) for r in conn.execute(query).mappings()]
