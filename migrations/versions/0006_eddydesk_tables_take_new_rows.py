"""EddyDesk tables that take new rows (write-back creates): server defaults for sync metadata

A user INSERTs a ticket, user, organization, reply or note with a negative placeholder id and
its columns only; `desksync push` creates it remotely and writes the real record in its place.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

TABLES = ('eddydesk_tickets', 'eddydesk_users', 'eddydesk_organizations', 'eddydesk_ticket_posts',
          'eddydesk_ticket_comments')


def _defaults(add: bool) -> None:
    now = sa.func.current_timestamp() if add else None
    for name in TABLES:
        with op.batch_alter_table(name) as batch_op:
            batch_op.alter_column('raw', server_default=sa.text("'{}'") if add else None)
            batch_op.alter_column('content_hash', server_default='' if add else None)
            batch_op.alter_column('first_seen_at', server_default=now)
            batch_op.alter_column('last_seen_at', server_default=now)
            batch_op.alter_column('is_deleted', server_default=sa.false() if add else None)


def upgrade() -> None:
    _defaults(True)


def downgrade() -> None:
    _defaults(False)
