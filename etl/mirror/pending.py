"""The durable queue of parents whose child lists must be fetched (`sync_pending_children`).

Filled in the same transaction as the parents' rows; an entry leaves it with the children it
stood for. EddyDesk queues parents for their posts, comments and notes; ServiceGo queues
records for their related records and relations.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from etl.mirror.base import table_of
from etl.mirror.bulk import bulk_insert
from etl.mirror.meta import PendingChildren

_PENDING = table_of(PendingChildren)


def add_pending(conn: sa.Connection, connection: str, stream: str, parent_ids: list[Any]) -> None:
    """Queue parents for a child stream (in the caller's transaction, beside the parents' rows).

    In id order: the key's index pages are then met one after another, not all over it."""
    bulk_insert(conn, _PENDING, [{"connection": connection, "stream": stream, "parent_id": i}
                                 for i in sorted(int(i) for i in parent_ids)], skip_existing=True)


def pending(conn: sa.Connection, connection: str, stream: str) -> list[int]:
    return list(conn.execute(
        sa.select(_PENDING.c.parent_id).where(_PENDING.c.connection == connection, _PENDING.c.stream == stream)
        .order_by(_PENDING.c.parent_id)
    ).scalars())


def done_pending(conn: sa.Connection, connection: str, stream: str, parent_ids: list[int]) -> None:
    conn.execute(_PENDING.delete().where(_PENDING.c.connection == connection, _PENDING.c.stream == stream,
                                         _PENDING.c.parent_id.in_(parent_ids)))
