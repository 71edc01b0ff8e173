"""sync_pending_children WITHOUT ROWID on SQLite

Its primary key is the whole row: as a rowid table SQLite kept it twice, in the table and in the
key's index. A backfill queues every changed ticket for its posts and for its comments, so that
was four B-tree inserts a ticket where two do (about 4 µs of the writer's CPU a ticket, and half
the queue's pages to commit). Other databases are unchanged.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def _recreate(with_rowid: bool) -> None:
    if op.get_bind().dialect.name != 'sqlite':
        return
    with op.batch_alter_table('sync_pending_children', recreate='always',
                              table_kwargs={'sqlite_with_rowid': with_rowid}):
        pass


def upgrade() -> None:
    _recreate(False)


def downgrade() -> None:
    _recreate(True)
