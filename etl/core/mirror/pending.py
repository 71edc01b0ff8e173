"""The durable queue of parents whose child lists must be fetched (`sync_pending_children`).

Filled in the same transaction as the parents' rows; a parent's bit for a child list leaves it
with that list's rows, and the entry leaves with its last bit. EddyDesk queues parents for
their posts, comments and notes (a queue per parent stream, a bit per child stream); ServiceGo
queues records for their related records and relations (a queue per list, with one bit).

One entry per parent, not one per parent and child stream: a backfill queues every ticket for
its posts and its comments, and two entries a ticket were the writer's largest cost after the
ticket rows and their custom-field values (about 6 µs of CPU a ticket).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from etl.core.mirror.base import table_of
from etl.core.mirror.bulk import inserter
from etl.core.mirror.meta import PendingChildren

_PENDING = table_of(PendingChildren)
_COLUMNS = ("connection", "queue", "parent_id", "waiting")


@dataclass(frozen=True)
class Queue:
    """Parents of `name` waiting for child lists; `children[i]` is bit 1 << i of an entry.

    The stored bits keep their meaning, so a queue's children may only grow at the end.
    """

    name: str
    children: tuple[str, ...]

    def bit(self, child: str) -> int:
        return 1 << self.children.index(child)

    def bits(self, children: Iterable[str]) -> int:
        return sum({self.bit(child) for child in children})


def add_pending(conn: sa.Connection, connection: str, queue: Queue, children: Iterable[str],
                parent_ids: list[Any]) -> None:
    """Queue parents for child lists (in the caller's transaction, beside the parents' rows);
    a parent queued already keeps the lists it was waiting for, too.

    In id order: the key's index pages are then met one after another, not all over it."""
    waiting = queue.bits(children)
    if not waiting or not parent_ids:
        return
    # plain text and integers, which every driver takes as they are: no packer needed
    rows = [(connection, queue.name, i, waiting) for i in sorted(int(i) for i in parent_ids)]
    inserter(_PENDING, _COLUMNS, "merge_bits").insert(conn, rows)


def pending(conn: sa.Connection, connection: str, queue: Queue, child: str) -> list[int]:
    """The parents waiting for `child`, in id order."""
    c = _PENDING.c
    return list(conn.execute(
        sa.select(c.parent_id).where(c.connection == connection, c.queue == queue.name,
                                     c.waiting.bitwise_and(queue.bit(child)) != 0)
        .order_by(c.parent_id)
    ).scalars())


def done_pending(conn: sa.Connection, connection: str, queue: Queue, child: str, parent_ids: list[int]) -> None:
    """`child` of these parents is fetched: their entries lose its bit, or go with their last one."""
    c, bit = _PENDING.c, queue.bit(child)
    these = (c.connection == connection, c.queue == queue.name, c.parent_id.in_(parent_ids))
    conn.execute(_PENDING.delete().where(*these, c.waiting == bit))
    conn.execute(_PENDING.update().where(*these, c.waiting.bitwise_and(bit) != 0).values(waiting=c.waiting - bit))
