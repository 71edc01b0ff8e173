"""sync_pending_children: one entry a parent with a bit per child list, WITHOUT ROWID on SQLite

An entry was a (connection, child stream, parent id) key, so a backfill queued every ticket
twice (posts, comments); as a SQLite rowid table each entry was kept twice more, in the table
and in its key's index. Now an entry is (connection, queue, parent id) with `waiting`, the bits
of the child lists still to fetch: EddyDesk's queue is the parent stream, its bits the parent's
child streams in their declared order; each ServiceGo list is a queue with one bit. One B-tree
insert a ticket where there were four.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

# The child streams of each EddyDesk parent, in bit order (etl.connectors.eddydesk.streams, Stream.children,
# as of this revision). Any other stream name is a ServiceGo list: a queue of its own, bit 1.
CHILDREN = {
    'tickets': ('ticket_posts', 'ticket_comments', 'ticket_audit', 'ticket_billing'),
    'users': ('user_notes',),
    'organizations': ('organization_notes',),
}
BIT = {child: (parent, 1 << i) for parent, children in CHILDREN.items() for i, child in enumerate(children)}


def _table(new: bool) -> None:
    name = 'sync_pending_children'
    key = 'queue' if new else 'stream'
    columns = [sa.Column('connection', sa.String(64), nullable=False), sa.Column(key, sa.String(64), nullable=False),
               sa.Column('parent_id', sa.BigInteger(), nullable=False)]
    if new:
        columns.append(sa.Column('waiting', sa.Integer(), nullable=False))
    op.create_table(name, *columns,
                    sa.PrimaryKeyConstraint('connection', key, 'parent_id', name=op.f(f'pk_{name}')),
                    sqlite_with_rowid=not new)


def upgrade() -> None:
    conn = op.get_bind()
    waiting: dict[tuple[str, str, int], int] = {}
    for connection, stream, parent_id in conn.execute(sa.text('SELECT connection, stream, parent_id FROM sync_pending_children')):
        queue, bit = BIT.get(stream, (stream, 1))
        waiting[(connection, queue, parent_id)] = waiting.get((connection, queue, parent_id), 0) | bit
    op.drop_table('sync_pending_children')
    _table(new=True)
    if waiting:
        conn.execute(sa.text('INSERT INTO sync_pending_children (connection, queue, parent_id, waiting) '
                             'VALUES (:c, :q, :p, :w)'),
                     [{'c': c, 'q': q, 'p': p, 'w': w} for (c, q, p), w in waiting.items()])


def downgrade() -> None:
    conn = op.get_bind()
    entries = []
    for connection, queue, parent_id, waiting in conn.execute(
            sa.text('SELECT connection, queue, parent_id, waiting FROM sync_pending_children')):
        for i, child in enumerate(CHILDREN.get(queue, (queue,))):
            if waiting & (1 << i):
                entries.append({'c': connection, 's': child, 'p': parent_id})
    op.drop_table('sync_pending_children')
    _table(new=False)
    if entries:
        conn.execute(sa.text('INSERT INTO sync_pending_children (connection, stream, parent_id) VALUES (:c, :s, :p)'),
                     entries)
